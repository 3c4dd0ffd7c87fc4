//! Probe configuration in two stages, as ripgrep does: [`ProbeArgs`] are the
//! flags as parsed (and an optional TOML file), [`ProbeConfig`] is what the
//! probe runs on, validated, with units parsed and conflicts resolved.

use crate::schedule::Spacing;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vantage_tls::Fingerprint;
use vantage_tls::Trust;
use vantage_wire::{Labels, Metric};

/// The request-latency metrics, measured while no photo sync runs.
pub const LATENCY_METRICS: [Metric; 7] = [
    Metric::UdpRtt,
    Metric::QuicHandshake,
    Metric::QuicRequest,
    Metric::QuicColdRequest,
    Metric::TcpConnect,
    Metric::TlsHandshake,
    Metric::HttpsRequest,
];

/// The photo-sync metrics, measured in sync batches.
pub const PHOTOSYNC_METRICS: [Metric; 5] = [
    Metric::PhotosyncUpload,
    Metric::PhotosyncDownload,
    Metric::PhotosyncGoodput,
    Metric::LoadedRtt,
    Metric::ResponsivenessRpm,
];

/// The metrics this probe measures against a responder, by default all.
pub const RESPONDER_METRICS: [Metric; 12] = [
    Metric::UdpRtt,
    Metric::QuicHandshake,
    Metric::QuicRequest,
    Metric::QuicColdRequest,
    Metric::TcpConnect,
    Metric::TlsHandshake,
    Metric::HttpsRequest,
    Metric::PhotosyncUpload,
    Metric::PhotosyncDownload,
    Metric::PhotosyncGoodput,
    Metric::LoadedRtt,
    Metric::ResponsivenessRpm,
];

/// The metrics of a real service URL (`--url`): a cold request's six
/// phases (new DNS lookup, new connection), then a warm request's three
/// (reused connection). The order is relied on: cold first.
pub const HTTP_METRICS: [Metric; 9] = [
    Metric::HttpDns,
    Metric::HttpConnect,
    Metric::HttpTls,
    Metric::HttpTtfb,
    Metric::HttpTransfer,
    Metric::HttpTotal,
    Metric::HttpWarmTtfb,
    Metric::HttpWarmTransfer,
    Metric::HttpWarmTotal,
];

/// Which HTTP version to speak to a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
pub enum HttpVersion {
    /// What the server offers in TLS ALPN: HTTP/2 if it agrees, else HTTP/1.1.
    #[default]
    #[value(name = "auto")]
    #[serde(rename = "auto")]
    Auto,
    /// HTTP/1.1 only.
    #[value(name = "1.1")]
    #[serde(rename = "1.1")]
    Http1,
    /// HTTP/2 only (fails if the server does not agree to it).
    #[value(name = "2")]
    #[serde(rename = "2")]
    Http2,
    /// HTTP/3 over QUIC (UDP to the URL's port).
    #[value(name = "3")]
    #[serde(rename = "3")]
    Http3,
}

/// A real service URL to time (`--url NAME=https://…` or `[[url]]`).
#[derive(Debug, Clone)]
pub struct HttpTargetConfig {
    /// Name in reports, like a data centre's (`api`, `cdn-photo`).
    pub name: String,
    /// The URL as given.
    pub url: String,
    /// Host name (resolved with the probe's own resolver) or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query sent.
    pub path_and_query: String,
    /// Method, `GET` by default.
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Request body, if any.
    pub body: Option<String>,
    /// The status that counts as success; any other is counted by class.
    pub expect_status: u16,
    /// HTTP version.
    pub version: HttpVersion,
    /// Response bytes read at most; a longer body is an error.
    pub max_body_bytes: u64,
    /// How to trust the certificate (public roots unless told otherwise).
    pub trust: Trust,
}

/// Parses `https://host[:port]/path?query` into (host, port, path and query).
pub(crate) fn parse_https_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 443,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 443),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) || path.contains(' ') {
        return None;
    }
    Some((host, port, path))
}

/// Which way photos go in a sync batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncDirection {
    /// Phone to data centre (backing up new photos).
    Upload,
    /// Data centre to phone (restoring).
    Download,
    /// Each photo up, then down.
    Both,
}

/// What carries the photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncTransport {
    /// One QUIC connection, one stream per photo.
    Quic,
    /// `concurrency` HTTP/1.1 connections over TLS, one request per photo.
    Https,
}

/// Photo sizes: log-normal around a median, clamped, as phone camera JPEGs
/// are (most a few MB, a long tail of larger ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoSizes {
    /// Median size, bytes.
    pub median_bytes: u64,
    /// Standard deviation of ln(size).
    pub sigma: f64,
    /// Smallest size drawn, bytes.
    pub min_bytes: u64,
    /// Largest size drawn, bytes.
    pub max_bytes: u64,
}

impl PhotoSizes {
    /// Sizes like a 12-megapixel phone camera's JPEGs: median 3 MB, most
    /// between 2 and 4.5 MB, clamped to 256 KiB..16 MiB.
    pub fn phone_camera() -> Self {
        PhotoSizes {
            median_bytes: 3_000_000,
            sigma: 0.3,
            min_bytes: 256 * 1024,
            max_bytes: 16 * 1024 * 1024,
        }
    }

    /// Every photo the same size.
    pub fn fixed(bytes: u64) -> Self {
        PhotoSizes {
            median_bytes: bytes,
            sigma: 0.0,
            min_bytes: bytes,
            max_bytes: bytes,
        }
    }
}

/// Photo-sync batches: their schedule and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoSyncConfig {
    /// One batch every this long, the first at the start of the run.
    pub every: Duration,
    /// Photos per batch.
    pub photos: u32,
    /// Photos in flight at once.
    pub concurrency: u32,
    /// Photo sizes.
    pub sizes: PhotoSizes,
    /// Which way.
    pub direction: SyncDirection,
    /// Over what.
    pub transport: SyncTransport,
    /// A batch still running this long after its start is ended: photos in
    /// flight are lost, the batch is counted lost with the bytes that arrived.
    pub timeout: Duration,
    /// `loaded_rtt` attempts per second while a batch runs.
    pub loaded_rtt_rate: f64,
}

impl Default for PhotoSyncConfig {
    fn default() -> Self {
        PhotoSyncConfig {
            every: Duration::from_secs(300),
            photos: 10,
            concurrency: 3,
            sizes: PhotoSizes::phone_camera(),
            direction: SyncDirection::Upload,
            transport: SyncTransport::Quic,
            timeout: Duration::from_secs(120),
            loaded_rtt_rate: 10.0,
        }
    }
}

/// A measurement that runs on its own schedule. Cold measurements record
/// two metrics from one attempt (the handshake and what follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measurement {
    /// STAMP test packets: `udp_rtt`.
    UdpRtt,
    /// A fresh QUIC connection and one request: `quic_handshake`, `quic_cold_request`.
    QuicCold,
    /// A request on a warm QUIC connection: `quic_request`.
    QuicRequest,
    /// A fresh TCP connection and TLS handshake: `tcp_connect`, `tls_handshake`.
    TcpCold,
    /// A request on a warm HTTPS connection: `https_request`.
    HttpsRequest,
    /// A real URL on a new connection, after a new DNS lookup: `http_dns`,
    /// `http_connect`, `http_tls`, `http_ttfb`, `http_transfer`, `http_total`.
    HttpCold,
    /// A real URL on a reused connection: `http_warm_ttfb`,
    /// `http_warm_transfer`, `http_warm_total`.
    HttpWarm,
    /// Photo-sync batches on their own schedule: `photosync_upload`,
    /// `photosync_download`, `photosync_goodput` and `loaded_rtt`.
    PhotoSync,
}

impl Measurement {
    /// The measurement that records `metric`, if this probe measures it.
    pub fn of(metric: Metric) -> Option<Self> {
        Some(match metric {
            Metric::UdpRtt => Measurement::UdpRtt,
            Metric::QuicHandshake | Metric::QuicColdRequest => Measurement::QuicCold,
            Metric::QuicRequest => Measurement::QuicRequest,
            Metric::TcpConnect | Metric::TlsHandshake => Measurement::TcpCold,
            Metric::HttpsRequest => Measurement::HttpsRequest,
            Metric::HttpDns
            | Metric::HttpConnect
            | Metric::HttpTls
            | Metric::HttpTtfb
            | Metric::HttpTransfer
            | Metric::HttpTotal => Measurement::HttpCold,
            Metric::HttpWarmTtfb | Metric::HttpWarmTransfer | Metric::HttpWarmTotal => {
                Measurement::HttpWarm
            }
            Metric::PhotosyncUpload
            | Metric::PhotosyncDownload
            | Metric::PhotosyncGoodput
            | Metric::LoadedRtt
            | Metric::ResponsivenessRpm => Measurement::PhotoSync,
        })
    }

    /// Default attempts per second: light enough for a phone, enough
    /// samples per 60 s window for a p99.
    pub fn default_rate(self) -> f64 {
        match self {
            Measurement::UdpRtt => 5.0,
            Measurement::QuicRequest | Measurement::HttpsRequest => 2.0,
            Measurement::QuicCold | Measurement::TcpCold => 0.5,
            Measurement::PhotoSync => 1.0 / 300.0,
            // A cold request costs the service a TLS handshake: one per 5 s.
            Measurement::HttpCold => 0.2,
            Measurement::HttpWarm => 1.0,
        }
    }
}

/// One data centre to measure.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Data-centre name (`singapore`).
    pub name: String,
    /// Host name or address, as given.
    pub host: String,
    /// QUIC (UDP) and HTTPS (TCP) port.
    pub port: u16,
    /// STAMP (UDP) port.
    pub stamp_port: u16,
    /// Name to send in TLS SNI and check against a CA-issued certificate.
    pub server_name: String,
    /// How to trust its certificate.
    pub trust: Trust,
}

/// What the terminal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A live summary table.
    Table,
    /// One JSON object per series per line on stdout.
    Json,
    /// Nothing but errors.
    Quiet,
}

/// A validated probe configuration.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Probe id, or `None` to use the one kept in the state directory.
    pub probe_id: Option<String>,
    /// Campaign name.
    pub campaign: String,
    /// Labels for every batch.
    pub labels: Labels,
    /// Targets measured.
    pub targets: Vec<TargetConfig>,
    /// Real service URLs measured.
    pub urls: Vec<HttpTargetConfig>,
    /// DNS server for the URLs' lookups (default: the system's, from
    /// /etc/resolv.conf).
    pub dns_server: Option<std::net::SocketAddr>,
    /// Measure against an in-process responder on loopback.
    pub local: bool,
    /// Measurements and their spacing.
    pub schedules: BTreeMap<Measurement, Spacing>,
    /// Metrics recorded (a cold measurement may record only one of its two).
    pub metrics: Vec<Metric>,
    /// An attempt not answered in this time is lost.
    pub timeout: Duration,
    /// Aggregation window.
    pub window: Duration,
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Echo response size, bytes.
    pub response_bytes: u32,
    /// Echo request padding, bytes.
    pub request_bytes: u32,
    /// Seed of the schedules' randomness.
    pub seed: u64,
    /// Where the probe id and sequence number are kept.
    pub state_dir: PathBuf,
    /// Local output directory.
    pub out: Option<PathBuf>,
    /// Terminal output.
    pub display: Display,
    /// Send batches to a collector.
    pub upload: Option<UploadConfig>,
    /// Photo-sync batches (run when a photo-sync metric is measured).
    pub sync: PhotoSyncConfig,
}

/// Where batches go, and where they wait until the collector has them.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The collector.
    pub target: crate::upload::CollectorTarget,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool size cap, bytes.
    pub spool_max_bytes: u64,
}

/// Flags shared by `vantage probe` and `vantage-probe`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProbeArgs {
    /// A data centre to measure, NAME=HOST:PORT (QUIC and HTTPS port); repeat for more.
    #[arg(long = "target", value_name = "NAME=HOST:PORT")]
    pub targets: Vec<String>,
    /// A service URL to time, NAME=https://HOST[:PORT]/PATH; repeat for more.
    /// Measured cold (new DNS lookup and connection) and warm.
    #[arg(long = "url", value_name = "NAME=URL")]
    pub urls: Vec<String>,
    /// HTTP version for every --url: auto (HTTP/2 if the server agrees in ALPN, else 1.1), 1.1, 2 or 3 [default: auto].
    #[arg(long, value_enum)]
    pub http_version: Option<HttpVersion>,
    /// HTTP method for every --url [default: GET].
    #[arg(long, value_name = "METHOD")]
    pub http_method: Option<String>,
    /// A request header for every --url, "NAME: VALUE"; repeat for more.
    #[arg(long = "http-header", value_name = "NAME: VALUE")]
    pub http_headers: Vec<String>,
    /// The status that counts as success for every --url [default: 200].
    #[arg(long, value_name = "CODE")]
    pub expect_status: Option<u16>,
    /// Largest response body read, bytes; a longer one is an error [default: 16 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,
    /// DNS server for the --url lookups, IP:PORT [default: the system's].
    #[arg(long, value_name = "IP:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// TOML file with targets, labels and schedules (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start a responder in this process on loopback and measure it: checks
    /// that this machine can run the probe and shows its measurement floor.
    #[arg(long)]
    pub local: bool,
    /// STAMP port of every --target [default: 4862].
    #[arg(long, value_name = "PORT")]
    pub stamp_port: Option<u16>,
    /// Accept only a certificate with this SHA-256 fingerprint (as `vantage serve` prints); repeat to accept several.
    #[arg(long = "pin", value_name = "sha256:HEX")]
    pub pins: Vec<String>,
    /// Verify certificates against the CAs in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "pins")]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (no authentication; outputs are marked insecure).
    #[arg(long, conflicts_with_all = ["pins", "ca_file"])]
    pub insecure: bool,
    /// A label for every batch, KEY=VALUE; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Phase label, such as before or after.
    #[arg(long)]
    pub phase: Option<String>,
    /// Country label, ISO 3166-1 alpha-2 (IN, MY, US…).
    #[arg(long)]
    pub country: Option<String>,
    /// Region or city label.
    #[arg(long)]
    pub region: Option<String>,
    /// Network type label (wifi, lte, 5g, wired…).
    #[arg(long)]
    pub network: Option<String>,
    /// ISP or ASN label.
    #[arg(long)]
    pub asn: Option<String>,
    /// Device label.
    #[arg(long)]
    pub device: Option<String>,
    /// Campaign name.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Probe id (default: generated once, kept in the state directory).
    #[arg(long)]
    pub probe_id: Option<String>,
    /// Where the probe keeps its id and sequence number [default: ~/.local/state/vantage].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Metrics to measure, comma separated [default: all twelve].
    #[arg(long, value_delimiter = ',', value_name = "METRIC,...")]
    pub metrics: Vec<String>,
    /// Attempts per second of a measurement, METRIC=RATE; repeat for more.
    #[arg(long = "rate", value_name = "METRIC=RATE")]
    pub rates: Vec<String>,
    /// Space attempts equally instead of at random (Poisson).
    #[arg(long)]
    pub fixed_spacing: bool,
    /// An attempt not answered in this time is lost [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Aggregation window, aligned to UTC [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Echo response size in bytes [default: 64].
    #[arg(long)]
    pub response_bytes: Option<u32>,
    /// Echo request padding in bytes [default: 0].
    #[arg(long)]
    pub request_bytes: Option<u32>,
    /// Seed of the random schedule (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write series.csv and HdrHistogram logs to this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON object per series per line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Send batches to this collector, HOST:PORT (QUIC, HTTPS where UDP is blocked).
    #[arg(long, value_name = "HOST:PORT", requires = "token")]
    pub collector: Option<String>,
    /// This probe's collector token (from `vantage collect token add --probe ID`).
    #[arg(long, requires = "collector")]
    pub token: Option<String>,
    /// Accept only a collector certificate with this fingerprint (as `vantage collect` prints).
    #[arg(long = "collector-pin", value_name = "sha256:HEX")]
    pub collector_pins: Vec<String>,
    /// Verify the collector's certificate against the CAs in this PEM file.
    #[arg(long, value_name = "FILE", conflicts_with = "collector_pins")]
    pub collector_ca_file: Option<PathBuf>,
    /// Where batches wait for the collector [default: STATE_DIR/spool].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Spool size cap in bytes; beyond it the oldest batches are dropped and counted [default: 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,
    /// One photo-sync batch every this long, the first at start [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sync_every: Option<Duration>,
    /// Photos per sync batch [default: 10].
    #[arg(long, value_name = "N")]
    pub sync_photos: Option<u32>,
    /// Photos in flight at once [default: 3].
    #[arg(long, value_name = "N")]
    pub sync_concurrency: Option<u32>,
    /// Median photo size in bytes; sizes are log-normal around it [default: 3000000].
    #[arg(long, value_name = "BYTES")]
    pub sync_photo_bytes: Option<u64>,
    /// Spread of photo sizes, the standard deviation of ln(size); 0 for equal sizes [default: 0.3].
    #[arg(long, value_name = "SIGMA")]
    pub sync_size_sigma: Option<f64>,
    /// Which way photos go [default: upload].
    #[arg(long, value_enum)]
    pub sync_direction: Option<SyncDirection>,
    /// What carries them [default: quic].
    #[arg(long, value_enum)]
    pub sync_transport: Option<SyncTransport>,
    /// A batch running this long is ended and counted lost [default: the smaller of 2m and --sync-every].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sync_timeout: Option<Duration>,
}

/// A configuration mistake, in words that say what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Nothing to measure.
    #[error(
        "no target: give --target NAME=HOST:PORT, --url NAME=https://…, a --config file with [[target]] or [[url]], or --local"
    )]
    NoTarget,
    /// A bad `--url`.
    #[error("--url `{0}`: expected NAME=https://HOST[:PORT]/PATH, such as api=https://api.example.com/v1/ping")]
    BadUrl(String),
    /// A bad `--target`.
    #[error("--target `{0}`: expected NAME=HOST:PORT, such as singapore=sg.example.net:4433")]
    BadTarget(String),
    /// Two targets with one name.
    #[error("target name `{0}` is used twice; names identify data centres in reports")]
    DuplicateTarget(String),
    /// A target without a way to trust its certificate.
    #[error("target `{0}`: no certificate trust given; add --pin sha256:… (printed by `vantage serve`), --ca-file FILE, or --insecure")]
    NoTrust(String),
    /// A bad fingerprint.
    #[error(transparent)]
    Pin(#[from] vantage_tls::FingerprintError),
    /// A bad label.
    #[error(transparent)]
    Label(#[from] vantage_wire::LabelError),
    /// A bad metric name.
    #[error("{0} (a probe measures {list}, and for --url {http})", list = RESPONDER_METRICS.map(|m| m.name()).join(", "), http = HTTP_METRICS.map(|m| m.name()).join(", "))]
    Metric(String),
    /// A bad `--rate`.
    #[error("--rate `{0}`: expected METRIC=RATE with RATE a positive number of attempts per second, at most 1000")]
    BadRate(String),
    /// Out-of-range durations.
    #[error("{0}")]
    Range(String),
    /// A collector without a way to trust it.
    #[error("--collector needs --collector-pin sha256:… (printed by `vantage collect`) or --collector-ca-file FILE")]
    NoCollectorTrust,
    /// The TOML file is unreadable or invalid.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The TOML configuration file. Every field is optional; flags override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Probe id.
    pub probe_id: Option<String>,
    /// Campaign.
    pub campaign: Option<String>,
    /// Window, such as "60s".
    pub window: Option<String>,
    /// Timeout, such as "2s".
    pub timeout: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Attempts per second by metric.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    /// Metrics to measure.
    pub metrics: Option<Vec<String>>,
    /// `"poisson"` (default) or `"fixed"`.
    pub spacing: Option<String>,
    /// Echo response size in bytes.
    pub response_bytes: Option<u32>,
    /// Targets.
    #[serde(default, rename = "target")]
    pub targets: Vec<FileTarget>,
    /// Service URLs.
    #[serde(default, rename = "url")]
    pub urls: Vec<FileUrl>,
    /// Photo-sync batches.
    pub sync: Option<FileSync>,
}

/// The `[sync]` table of the configuration file; flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Such as "5m".
    pub every: Option<String>,
    /// Photos per batch.
    pub photos: Option<u32>,
    /// Photos in flight.
    pub concurrency: Option<u32>,
    /// Median photo size, bytes.
    pub photo_bytes: Option<u64>,
    /// Spread of ln(size).
    pub size_sigma: Option<f64>,
    /// "upload", "download" or "both".
    pub direction: Option<SyncDirection>,
    /// "quic" or "https".
    pub transport: Option<SyncTransport>,
    /// Such as "2m".
    pub timeout: Option<String>,
}

/// A `[[url]]` of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUrl {
    /// Name in reports.
    pub name: String,
    /// `https://host[:port]/path`.
    pub url: String,
    /// Method [GET].
    pub method: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Expected status [200].
    pub expect_status: Option<u16>,
    /// "auto", "1.1" or "2".
    pub version: Option<HttpVersion>,
    /// Body cap, bytes.
    pub max_body_bytes: Option<u64>,
    /// Pinned fingerprint.
    pub pin: Option<String>,
    /// CA file.
    pub ca_file: Option<PathBuf>,
}

/// A `[[target]]` of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTarget {
    /// Data-centre name.
    pub name: String,
    /// HOST:PORT of the QUIC and HTTPS services.
    pub address: String,
    /// STAMP port.
    pub stamp_port: Option<u16>,
    /// Pinned fingerprint.
    pub pin: Option<String>,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// TLS server name, when it differs from the host.
    pub server_name: Option<String>,
}

impl ConfigFile {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("vantage");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/vantage"),
        None => PathBuf::from(".vantage-state"),
    }
}

impl ProbeArgs {
    /// Validates the flags (and the file they name) into a configuration.
    pub fn into_config(self) -> Result<ProbeConfig, ConfigError> {
        let file = match &self.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let file_duration =
            |what: &str, v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
                v.as_deref()
                    .map(|s| {
                        humantime::parse_duration(s).map_err(|e| {
                            ConfigError::Range(format!("{what} `{s}` in the config file: {e}"))
                        })
                    })
                    .transpose()
            };

        let mut labels = Labels::new();
        for (k, v) in &file.labels {
            labels.insert(k, v)?;
        }
        for pair in &self.labels {
            labels.insert_pair(pair)?;
        }
        for (key, v) in [
            (Labels::PHASE, &self.phase),
            (Labels::COUNTRY, &self.country),
            (Labels::REGION, &self.region),
            (Labels::NETWORK, &self.network),
            (Labels::ASN, &self.asn),
            (Labels::DEVICE, &self.device),
        ] {
            if let Some(v) = v {
                labels.insert(key, v)?;
            }
        }

        let pins = self
            .pins
            .iter()
            .map(|p| p.parse::<Fingerprint>())
            .collect::<Result<Vec<_>, _>>()?;
        let cli_trust = if self.insecure {
            Some(Trust::Insecure)
        } else if let Some(ca) = &self.ca_file {
            Some(Trust::CaFile(ca.clone()))
        } else if !pins.is_empty() {
            Some(Trust::Pinned(pins))
        } else {
            None
        };
        let stamp_port = self
            .stamp_port
            .unwrap_or(vantage_responder::DEFAULT_STAMP_PORT);
        let mut targets = Vec::new();
        for t in &file.targets {
            let (host, port) = split_host_port(&t.address)
                .ok_or_else(|| ConfigError::BadTarget(t.address.clone()))?;
            let trust = match (&cli_trust, &t.pin, &t.ca_file) {
                (Some(trust), _, _) => trust.clone(),
                (None, Some(pin), _) => Trust::Pinned(vec![pin.parse()?]),
                (None, None, Some(ca)) => Trust::CaFile(ca.clone()),
                (None, None, None) => return Err(ConfigError::NoTrust(t.name.clone())),
            };
            targets.push(TargetConfig {
                name: t.name.clone(),
                server_name: t.server_name.clone().unwrap_or_else(|| host.clone()),
                host,
                port,
                stamp_port: t.stamp_port.or(self.stamp_port).unwrap_or(stamp_port),
                trust,
            });
        }
        for spec in &self.targets {
            let (name, addr) = spec
                .split_once('=')
                .ok_or_else(|| ConfigError::BadTarget(spec.clone()))?;
            let (host, port) =
                split_host_port(addr).ok_or_else(|| ConfigError::BadTarget(spec.clone()))?;
            if name.is_empty() {
                return Err(ConfigError::BadTarget(spec.clone()));
            }
            let trust = cli_trust
                .clone()
                .ok_or_else(|| ConfigError::NoTrust(name.to_string()))?;
            targets.push(TargetConfig {
                name: name.to_string(),
                server_name: host.clone(),
                host,
                port,
                stamp_port,
                trust,
            });
        }
        let mut headers = Vec::new();
        for h in &self.http_headers {
            let (k, v) = h
                .split_once(':')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError::Range(format!("--http-header `{h}`: expected \"NAME: VALUE\""))
                })?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let url_trust = cli_trust.clone().unwrap_or(Trust::PublicRoots);
        let url_target = |name: &str, url: &str, spec: &str| {
            let (host, port, path_and_query) =
                parse_https_url(url).ok_or_else(|| ConfigError::BadUrl(spec.to_string()))?;
            if name.is_empty() {
                return Err(ConfigError::BadUrl(spec.to_string()));
            }
            Ok(HttpTargetConfig {
                name: name.to_string(),
                url: url.to_string(),
                host,
                port,
                path_and_query,
                method: self.http_method.clone().unwrap_or_else(|| "GET".into()),
                headers: headers.clone(),
                body: None,
                expect_status: self.expect_status.unwrap_or(200),
                version: self.http_version.unwrap_or_default(),
                max_body_bytes: self.max_body_bytes.unwrap_or(16 << 20),
                trust: url_trust.clone(),
            })
        };
        let mut urls = Vec::new();
        for u in &file.urls {
            let mut t = url_target(&u.name, &u.url, &u.url)?;
            if let Some(m) = &u.method {
                t.method = m.clone();
            }
            t.headers
                .extend(u.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            t.body = u.body.clone();
            t.expect_status = self.expect_status.or(u.expect_status).unwrap_or(200);
            t.version = self.http_version.or(u.version).unwrap_or_default();
            t.max_body_bytes = self
                .max_body_bytes
                .or(u.max_body_bytes)
                .unwrap_or(t.max_body_bytes);
            if cli_trust.is_none() {
                if let Some(pin) = &u.pin {
                    t.trust = Trust::Pinned(vec![pin.parse()?]);
                } else if let Some(ca) = &u.ca_file {
                    t.trust = Trust::CaFile(ca.clone());
                }
            }
            urls.push(t);
        }
        for spec in &self.urls {
            let (name, url) = spec
                .split_once('=')
                .ok_or_else(|| ConfigError::BadUrl(spec.clone()))?;
            urls.push(url_target(name, url, spec)?);
        }
        for t in &urls {
            if hyper::Method::from_bytes(t.method.as_bytes()).is_err() {
                return Err(ConfigError::Range(format!(
                    "url `{}`: `{}` is not an HTTP method",
                    t.name, t.method
                )));
            }
            if !(100..=599).contains(&t.expect_status) {
                return Err(ConfigError::Range(format!(
                    "url `{}`: expected status {} is not an HTTP status",
                    t.name, t.expect_status
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for name in targets
            .iter()
            .map(|t| &t.name)
            .chain(urls.iter().map(|u| &u.name))
        {
            if !names.insert(name.clone()) {
                return Err(ConfigError::DuplicateTarget(name.clone()));
            }
        }
        if targets.is_empty() && urls.is_empty() && !self.local {
            return Err(ConfigError::NoTarget);
        }

        let metric_names: Vec<String> = if !self.metrics.is_empty() {
            self.metrics.clone()
        } else {
            file.metrics.clone().unwrap_or_default()
        };
        let metrics: Vec<Metric> = if metric_names.is_empty() {
            let mut m = Vec::new();
            if !targets.is_empty() || self.local {
                m.extend(RESPONDER_METRICS);
            }
            if !urls.is_empty() {
                m.extend(HTTP_METRICS);
            }
            m
        } else {
            let mut out = Vec::new();
            for n in &metric_names {
                let m: Metric = n
                    .trim()
                    .parse()
                    .map_err(|e: vantage_wire::ParseNameError| {
                        ConfigError::Metric(e.to_string())
                    })?;
                if Measurement::of(m).is_none() {
                    return Err(ConfigError::Metric(format!(
                        "metric `{m}` is not measured by this probe yet"
                    )));
                }
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            out
        };

        let mut rates: BTreeMap<Measurement, f64> = BTreeMap::new();
        let rate_pairs = file
            .rates
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string(), format!("{k}={v}")))
            .chain(self.rates.iter().map(|s| {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string(), s.clone())
            }));
        for (k, v, spec) in rate_pairs {
            let m: Metric = k
                .trim()
                .parse()
                .map_err(|_| ConfigError::BadRate(spec.clone()))?;
            let meas = Measurement::of(m).ok_or_else(|| ConfigError::BadRate(spec.clone()))?;
            let rate: f64 = v
                .trim()
                .parse()
                .map_err(|_| ConfigError::BadRate(spec.clone()))?;
            if !(rate > 0.0 && rate <= 1000.0) {
                return Err(ConfigError::BadRate(spec));
            }
            rates.insert(meas, rate);
        }
        let fixed = match file.spacing.as_deref() {
            None | Some("poisson") => self.fixed_spacing,
            Some("fixed") => true,
            Some(other) => {
                return Err(ConfigError::Range(format!(
                    "spacing `{other}` in the config file: use \"poisson\" or \"fixed\""
                )))
            }
        };
        let schedules = metrics
            .iter()
            .filter_map(|m| Measurement::of(*m))
            .map(|meas| {
                let rate = rates.get(&meas).copied().unwrap_or(meas.default_rate());
                let spacing = if fixed {
                    Spacing::Fixed {
                        interval: Duration::from_secs_f64(1.0 / rate),
                    }
                } else {
                    Spacing::Poisson { rate_per_sec: rate }
                };
                (meas, spacing)
            })
            .collect();

        let timeout = self
            .timeout
            .or(file_duration("timeout", &file.timeout)?)
            .unwrap_or(Duration::from_secs(2));
        let window = self
            .window
            .or(file_duration("window", &file.window)?)
            .unwrap_or(Duration::from_secs(60));
        if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(600) {
            return Err(ConfigError::Range(format!(
                "--timeout {timeout:?} is out of range: use 10ms to 10min"
            )));
        }
        if window < Duration::from_secs(1) || window > Duration::from_secs(86_400) {
            return Err(ConfigError::Range(format!(
                "--window {window:?} is out of range: use 1s to 24h"
            )));
        }
        let response_bytes = self.response_bytes.or(file.response_bytes).unwrap_or(64);
        if response_bytes > vantage_responder::DEFAULT_MAX_RESPONSE_BYTES {
            return Err(ConfigError::Range(format!(
                "--response-bytes {response_bytes} is above the responder's limit of {}",
                vantage_responder::DEFAULT_MAX_RESPONSE_BYTES
            )));
        }
        let request_bytes = self.request_bytes.unwrap_or(0);
        if request_bytes > 64 * 1024 {
            return Err(ConfigError::Range(format!(
                "--request-bytes {request_bytes} is above the responder's limit of 65536"
            )));
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        let upload = match (&self.collector, &self.token) {
            (Some(addr), Some(token)) => {
                let (host, port) = split_host_port(addr)
                    .ok_or_else(|| ConfigError::BadTarget(format!("collector={addr}")))?;
                let trust = if let Some(ca) = &self.collector_ca_file {
                    Trust::CaFile(ca.clone())
                } else if !self.collector_pins.is_empty() {
                    Trust::Pinned(
                        self.collector_pins
                            .iter()
                            .map(|p| p.parse())
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                } else {
                    return Err(ConfigError::NoCollectorTrust);
                };
                Some(UploadConfig {
                    target: crate::upload::CollectorTarget {
                        server_name: host.clone(),
                        host,
                        port,
                        trust,
                        token: token.clone(),
                    },
                    spool_dir: self
                        .spool_dir
                        .clone()
                        .unwrap_or_else(|| state_dir.join("spool")),
                    spool_max_bytes: self.spool_max_bytes.unwrap_or(64 << 20),
                })
            }
            _ => None,
        };
        let sync = {
            let f = file.sync.unwrap_or_default();
            let d = PhotoSyncConfig::default();
            let every = self
                .sync_every
                .or(file_duration("sync.every", &f.every)?)
                .unwrap_or(d.every);
            let photos = self.sync_photos.or(f.photos).unwrap_or(d.photos);
            let concurrency = self
                .sync_concurrency
                .or(f.concurrency)
                .unwrap_or(d.concurrency);
            let median = self.sync_photo_bytes.or(f.photo_bytes);
            let sigma = self.sync_size_sigma.or(f.size_sigma);
            let sizes = match (median, sigma) {
                (None, None) => d.sizes,
                (m, s) => {
                    let m = m.unwrap_or(d.sizes.median_bytes);
                    let s = s.unwrap_or(d.sizes.sigma);
                    PhotoSizes {
                        median_bytes: m,
                        sigma: s,
                        min_bytes: if s == 0.0 { m } else { (m / 8).max(1) },
                        max_bytes: if s == 0.0 { m } else { m.saturating_mul(5) },
                    }
                }
            };
            let timeout = self
                .sync_timeout
                .or(file_duration("sync.timeout", &f.timeout)?)
                .unwrap_or(d.timeout.min(every));
            if every < Duration::from_secs(1) {
                return Err(ConfigError::Range(format!(
                    "--sync-every {every:?} is too short: use 1s or more"
                )));
            }
            if timeout > every || timeout < Duration::from_millis(100) {
                return Err(ConfigError::Range(format!(
                    "--sync-timeout {timeout:?} must be between 100ms and --sync-every ({every:?}), so one batch ends before the next is due"
                )));
            }
            if !(1..=1000).contains(&photos) || !(1..=64).contains(&concurrency) {
                return Err(ConfigError::Range(format!(
                    "--sync-photos {photos} and --sync-concurrency {concurrency}: use 1..=1000 photos and 1..=64 in flight"
                )));
            }
            if sizes.median_bytes == 0 || sizes.max_bytes > 256 * 1024 * 1024 {
                return Err(ConfigError::Range(format!(
                    "--sync-photo-bytes {}: photos must be 1 byte to 256 MiB (the responder's limit)",
                    sizes.median_bytes
                )));
            }
            if !(0.0..=3.0).contains(&sizes.sigma) {
                return Err(ConfigError::Range(format!(
                    "--sync-size-sigma {}: use 0 to 3",
                    sizes.sigma
                )));
            }
            PhotoSyncConfig {
                every,
                photos,
                concurrency,
                sizes,
                direction: self.sync_direction.or(f.direction).unwrap_or(d.direction),
                transport: self.sync_transport.or(f.transport).unwrap_or(d.transport),
                timeout,
                loaded_rtt_rate: rates
                    .get(&Measurement::PhotoSync)
                    .copied()
                    .unwrap_or(d.loaded_rtt_rate),
            }
        };
        Ok(ProbeConfig {
            sync,
            upload,
            urls,
            dns_server: self.dns_server,
            probe_id: self.probe_id.or(file.probe_id),
            campaign: self
                .campaign
                .or(file.campaign)
                .unwrap_or_else(|| "default".into()),
            labels,
            targets,
            local: self.local,
            schedules,
            metrics,
            timeout,
            window,
            duration: self.duration,
            response_bytes,
            request_bytes,
            seed,
            state_dir,
            out: self.out,
            display: if self.quiet {
                Display::Quiet
            } else if self.json {
                Display::Json
            } else {
                Display::Table
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut ProbeArgs)) -> Result<ProbeConfig, ConfigError> {
        let mut a = ProbeArgs::default();
        f(&mut a);
        a.into_config()
    }

    #[test]
    fn http_metrics_list_the_cold_phases_first() {
        let (cold, warm) = HTTP_METRICS.split_at(6);
        assert!(cold
            .iter()
            .all(|m| Measurement::of(*m) == Some(Measurement::HttpCold)));
        assert!(warm
            .iter()
            .all(|m| Measurement::of(*m) == Some(Measurement::HttpWarm)));
    }

    #[test]
    fn urls_parse_into_host_port_and_path() {
        assert_eq!(
            parse_https_url("https://api.example.com/v1/ping?x=1"),
            Some(("api.example.com".into(), 443, "/v1/ping?x=1".into()))
        );
        assert_eq!(
            parse_https_url("https://[::1]:8443"),
            Some(("::1".into(), 8443, "/".into()))
        );
        assert_eq!(
            parse_https_url("https://h:99?q"),
            Some(("h".into(), 99, "/?q".into()))
        );
        for bad in [
            "http://plain.example",
            "https://",
            "https://user@h/",
            "https://h:x/",
        ] {
            assert_eq!(parse_https_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_target_needs_a_trust_decision() {
        let err = args(|a| a.targets = vec!["sg=127.0.0.1:4433".into()]).unwrap_err();
        assert!(err.to_string().contains("--pin"), "{err}");
        let c = args(|a| {
            a.targets = vec!["sg=127.0.0.1:4433".into(), "or=[::1]:5000".into()];
            a.insecure = true;
        })
        .unwrap();
        assert_eq!(c.targets[1].host, "::1");
        assert_eq!(c.targets[1].port, 5000);
        assert_eq!(c.targets[0].stamp_port, 4862);
    }

    #[test]
    fn bad_flags_say_what_to_change() {
        for (f, needle) in [
            (
                Box::new(|a: &mut ProbeArgs| a.targets = vec!["sg127.0.0.1:1".into()])
                    as Box<dyn FnOnce(&mut ProbeArgs)>,
                "NAME=HOST:PORT",
            ),
            (
                Box::new(|a: &mut ProbeArgs| {
                    a.local = true;
                    a.metrics = vec!["udp_rt".into()]
                }),
                "udp_rtt",
            ),
            (
                Box::new(|a: &mut ProbeArgs| {
                    a.local = true;
                    a.rates = vec!["udp_rtt=0".into()]
                }),
                "METRIC=RATE",
            ),
            (
                Box::new(|a: &mut ProbeArgs| {
                    a.local = true;
                    a.country = Some("India".into())
                }),
                "alpha-2",
            ),
            (
                Box::new(|a: &mut ProbeArgs| {
                    a.local = true;
                    a.pins = vec!["sha256:12".into()]
                }),
                "64 hex",
            ),
            (
                Box::new(|a: &mut ProbeArgs| {
                    a.local = true;
                    a.window = Some(Duration::from_millis(5))
                }),
                "--window",
            ),
            (Box::new(|_: &mut ProbeArgs| {}), "no target"),
        ] {
            let err = args(f).unwrap_err().to_string();
            assert!(err.contains(needle), "`{err}` lacks `{needle}`");
        }
    }

    #[test]
    fn rates_and_metrics_choose_the_schedules() {
        let c = args(|a| {
            a.local = true;
            a.metrics = vec!["udp_rtt".into(), "tls_handshake".into()];
            a.rates = vec!["tcp_connect=4".into()];
        })
        .unwrap();
        assert_eq!(c.schedules.len(), 2);
        assert_eq!(
            c.schedules[&Measurement::TcpCold],
            Spacing::Poisson { rate_per_sec: 4.0 }
        );
        assert_eq!(c.schedules[&Measurement::UdpRtt].rate_per_sec(), 5.0);
    }

    #[test]
    fn config_file_targets_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.toml");
        std::fs::write(
            &path,
            r#"
campaign = "move"
window = "30s"
spacing = "fixed"
[labels]
phase = "before"
country = "in"
[rates]
udp_rtt = 20.0
[[target]]
name = "beijing"
address = "127.0.0.1:4433"
pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
stamp_port = 9000
"#,
        )
        .unwrap();
        let c = args(|a| {
            a.config = Some(path.clone());
            a.phase = Some("after".into());
        })
        .unwrap();
        assert_eq!(c.labels.get("country"), Some("IN"));
        assert_eq!(
            c.labels.get("phase"),
            Some("after"),
            "flags override the file"
        );
        assert_eq!(c.window, Duration::from_secs(30));
        assert_eq!(c.targets[0].stamp_port, 9000);
        assert!(matches!(c.targets[0].trust, Trust::Pinned(_)));
        assert_eq!(
            c.schedules[&Measurement::UdpRtt],
            Spacing::Fixed {
                interval: Duration::from_millis(50)
            }
        );
        std::fs::write(&path, "bogus_key = 1").unwrap();
        let err = args(|a| a.config = Some(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus_key"), "{err}");
    }
}
