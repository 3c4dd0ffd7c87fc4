//! Vantage's record model and wire formats, shared by every side.
//!
//! This crate has no IO: no sockets, no files, no async runtime. It defines
//! what a probe measures ([`Metric`], [`ErrorClass`]), what it ships
//! ([`Batch`] of [`Series`] with HDR histograms), how a batch is encoded on
//! the wire ([`Batch::encode`], [`Batch::decode`]), the QUIC echo messages
//! ([`echo`]), the path traces batches carry ([`trace`]), the STAMP packets of RFC 8762 ([`stamp`]) and the batch
//! upload protocol between probes and collectors ([`upload`]), with the
//! campaign pull and health beside it ([`campaign`]), and the framing of
//! a probe's access token on heavy requests ([`access`]). Every decoder
//! returns a typed error on malformed, truncated or oversized input and never
//! panics.
#![warn(missing_docs, unreachable_pub)]

pub mod access;
pub mod campaign;
mod codec;
pub mod echo;
mod histogram;
mod hlog;
mod labels;
mod metric;
pub mod photo;
pub mod rate;
mod record;
pub mod stamp;
mod time;
pub mod trace;
pub mod upload;

pub use codec::{DecodeError, MAX_BATCH_BYTES};
pub use histogram::{
    decode_histogram, decode_histogram_plain, encode_histogram, encode_histogram_plain,
    new_latency_histogram, record_clamped, same_counts, CountsScratch, HistogramError,
    LatencyHistogram, SparseCounts, Summary, HISTOGRAM_HIGHEST, HISTOGRAM_LOWEST, HISTOGRAM_SIGFIG,
};
pub use hlog::{hlog_divisor, hlog_header, hlog_interval, hlog_tag, HlogError};
pub use labels::{LabelError, Labels, MAX_LABELS};
pub use metric::{ErrorClass, Metric, ParseNameError, Reason, Unit};
pub use record::{
    counts_text, edge_name_ok, host_port, Batch, EdgeCounts, ErrorCounts, PathStats, ReasonCounts,
    Series, ServerTime, StatusCounts, Target, Window, EDGE_OTHER, MAX_EDGES,
};
pub use time::rfc3339_ms;
