//! The Vantage probe: schedules, measures and records request latency
//! against responders, one HDR histogram per (target, metric, window).
//!
//! The logic is plain code that takes time as an argument — the open-loop
//! [`Schedule`], the [`Recorder`] of windows, the STAMP sender's
//! bookkeeping ([`StampSender`]) — and is tested with a fake clock. The
//! `measure` module is the thin IO layer that drives sockets and timers;
//! [`run`] wires it all together.
#![warn(missing_docs, unreachable_pub)]

mod batch;
pub mod config;
pub mod fleet;
mod measure;
pub mod output;
pub mod photosync;
mod recorder;
mod run;
mod schedule;
pub mod spool;
mod stamp_session;
mod state;
pub mod trace;
pub mod upload;

pub use config::{
    ConfigError, Display, HttpTargetConfig, HttpVersion, Measurement, PhotoSizes, PhotoSyncConfig,
    ProbeArgs, ProbeConfig, SyncDirection, SyncTransport, TargetConfig, HTTP_METRICS,
    LATENCY_METRICS, ONE_WAY_METRICS, PATH_METRICS, PHOTOSYNC_METRICS, RESPONDER_METRICS,
};
pub use measure::Event;
pub use recorder::{Outcome, Recorder, Sample, WallAnchor};
pub use run::{run, run_campaign, run_plan, stop_on_signal, RunError, RunSummary};
pub use schedule::{latency_from, Schedule, Spacing, TIMER_SLACK};
pub use stamp_session::{Reply, StampSender};
pub use state::{ProbeState, StateError};
pub use vantage_tls::{TlsClient, Trust, TrustError};

/// Sets up logging to stderr: `RUST_LOG` if set, else warnings (errors only with `quiet`).
pub fn init_logging(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}
