//! The Vantage collector: receives batches from many probes, authenticates
//! them, stores each exactly once and durably before acknowledging it, and
//! merges stored histograms on query.
//!
//! Ingest ([`Ingest`]) sees only the [`Store`] trait; [`SqliteStore`] is
//! the embedded default. [`Collector`] runs the QUIC and HTTPS listeners.
//! [`select`] and [`export`] are the query side that `vantage export` and
//! the reports use.
#![warn(missing_docs, unreachable_pub)]

pub mod export;
mod ingest;
mod metrics;
pub mod select;
mod server;
pub mod store;

pub use ingest::{hash_token, new_token, Ingest, MAX_CLOCK_AHEAD};
pub use metrics::Metrics;
pub use select::{merge_groups, merge_into, Group, Selector, SelectorError, StoredSeries};
pub use server::{Collector, CollectorConfig, CollectorError};
pub use store::{Incoming, Inserted, SqliteStore, Store, StoreError, TokenRecord};
