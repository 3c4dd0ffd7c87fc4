//! The Vantage collector: receives batches from many probes, authenticates
//! them, stores each exactly once and durably before acknowledging it, and
//! merges stored histograms on query.
#![warn(missing_docs, unreachable_pub)]

pub mod select;
pub mod store;

pub use select::{merge_groups, merge_into, Group, Selector, SelectorError, StoredSeries};
pub use store::{Inserted, SqliteStore, Store, StoreError, TokenRecord};
