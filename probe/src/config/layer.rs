//! One source of probe settings, in the same shape for every source: the
//! flags, the TOML file, and a campaign pulled from the collector. Nothing
//! is defaulted or validated here; [`super::resolve`] does both, once.

use super::{Display, HttpVersion, SyncDirection, SyncTransport};
use std::path::PathBuf;
use std::time::Duration;
use vantage_tls::Trust;

/// Settings as one source gives them. Unset is `None` (or empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// Probe id.
    pub probe_id: Option<String>,
    /// Campaign name.
    pub campaign: Option<String>,
    /// Labels, in order (a later pair of one layer replaces an earlier).
    pub labels: Vec<(String, String)>,
    /// The trust decision for every target and URL of any layer, unless
    /// a higher layer decides otherwise.
    pub trust: Option<Trust>,
    /// STAMP port of every target that does not name its own.
    pub stamp_port: Option<u16>,
    /// Data centres.
    pub targets: Vec<TargetSpec>,
    /// Service URLs.
    pub urls: Vec<UrlSpec>,
    /// Request settings for every URL of any layer.
    pub http: HttpSpec,
    /// DNS server for the URLs' lookups.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Measure an in-process responder.
    pub local: Option<bool>,
    /// Metric names to measure.
    pub metrics: Option<Vec<String>>,
    /// Rates, (metric name, rate text, the text to quote in an error).
    pub rates: Vec<(String, String, String)>,
    /// Equal spacing instead of Poisson.
    pub fixed_spacing: Option<bool>,
    /// Attempt timeout.
    pub timeout: Option<Duration>,
    /// Aggregation window.
    pub window: Option<Duration>,
    /// Run time.
    pub duration: Option<Duration>,
    /// Echo response size.
    pub response_bytes: Option<u32>,
    /// Echo request padding.
    pub request_bytes: Option<u32>,
    /// The token for responders' heavy endpoints.
    pub access_token: Option<String>,
    /// Schedule seed.
    pub seed: Option<u64>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// Local output directory.
    pub out: Option<PathBuf>,
    /// Terminal output.
    pub display: Option<Display>,
    /// The collector.
    pub upload: UploadSpec,
    /// Photo-sync batches.
    pub sync: SyncSpec,
}

/// A data centre as a source names it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// Data-centre name.
    pub name: String,
    /// Host and port of the QUIC and HTTPS services.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Its own STAMP port.
    pub stamp_port: Option<u16>,
    /// TLS server name, when it is not the host.
    pub server_name: Option<String>,
    /// Its own trust decision.
    pub trust: Option<Trust>,
    /// Its reflector keeps this host's clock (see [`super::TargetConfig`]).
    pub shared_clock: bool,
}

/// A service URL as a source names it.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlSpec {
    /// Name in reports.
    pub name: String,
    /// The URL.
    pub url: String,
    /// The text to quote in an error.
    pub spec: String,
    /// Its own request settings.
    pub http: HttpSpec,
    /// Request body.
    pub body: Option<String>,
    /// Its own trust decision.
    pub trust: Option<Trust>,
}

/// How URLs are requested.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpSpec {
    /// HTTP version.
    pub version: Option<HttpVersion>,
    /// Method.
    pub method: Option<String>,
    /// Request headers, in order.
    pub headers: Vec<(String, String)>,
    /// The status that counts as success.
    pub expect_status: Option<u16>,
    /// Body cap, bytes.
    pub max_body_bytes: Option<u64>,
}

/// The collector and the spool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UploadSpec {
    /// `HOST:PORT` of each collector, in the order they are tried.
    pub collector: Option<Vec<String>>,
    /// This probe's token.
    pub token: Option<String>,
    /// How to trust the collector.
    pub trust: Option<Trust>,
    /// Spool directory.
    pub spool_dir: Option<PathBuf>,
    /// Spool cap, bytes.
    pub spool_max_bytes: Option<u64>,
}

/// Photo-sync batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncSpec {
    /// One batch every this long.
    pub every: Option<Duration>,
    /// Photos per batch.
    pub photos: Option<u32>,
    /// Photos in flight.
    pub concurrency: Option<u32>,
    /// Median photo size.
    pub photo_bytes: Option<u64>,
    /// Spread of ln(size).
    pub size_sigma: Option<f64>,
    /// Direction.
    pub direction: Option<SyncDirection>,
    /// Transport.
    pub transport: Option<SyncTransport>,
    /// Batch timeout.
    pub timeout: Option<Duration>,
}
