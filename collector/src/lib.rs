//! The Vantage collector: receives batches from many probes, authenticates
//! them, stores each exactly once and durably before acknowledging it.
//!
//! Ingest ([`Ingest`]) sees only the [`Store`] trait of `vantage-store`;
//! [`SqliteStore`] is the embedded backend, [`PgStore`] the one many
//! collectors share; [`StoreLocation`] is `--db`, parsed. [`Collector`] runs the QUIC and
//! HTTPS listeners. The query side (selectors, merges, export renderings)
//! lives in `vantage-store`, so readers of a store link no collector.
#![warn(missing_docs, unreachable_pub)]

pub mod copy;
mod fleet;
mod ingest;
mod known_tokens;
pub mod live;
mod location;
mod metrics;
mod poll;
pub mod postgres;
mod refusal_log;
mod rollup;
mod row;
mod server;
mod sqlite;
pub mod upkeep;
mod upload_body;

pub use ingest::{hash_token, new_token, Admitted, Ingest, MAX_CLOCK_AHEAD};
pub use location::StoreLocation;
pub use metrics::Metrics;
pub use postgres::{PgLocation, PgLocationError, PgStore};
pub use server::{Collector, CollectorConfig, CollectorError};
pub use sqlite::SqliteStore;
pub use upload_body::UploadLimits;
pub use vantage_store::{
    export, merge_groups, merge_into, select, Group, Incoming, Inserted, Selector, SelectorError,
    Store, StoreError, StoredSeries, TokenRecord,
};
