//! Vantage geo: where an answering address is served from, and which
//! country and network a router's address belongs to, for the evidence a
//! report gives next to its latencies ("do requests from India still
//! reach Beijing? does the path still cross China?").
//!
//! Plain code over files the user supplies: a site map (their own CSV,
//! or the IP-range files cloud providers publish) and IP-to-country and
//! IP-to-ASN datasets. Nothing is fetched; nothing ships but test
//! fixtures. What no file says is unknown, never guessed.
#![warn(missing_docs, unreachable_pub)]

mod dataset;
pub mod distance;
mod error;
pub mod range;
mod sites;

pub use dataset::{HopDatasets, Network};
pub use error::GeoError;
pub use range::{IpRange, Overlap, RangeMap};
pub use sites::{region_country, Site, SiteMap};
