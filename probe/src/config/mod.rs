//! Probe configuration in layers, as ripgrep does in stages: each source
//! of settings gives a [`Layer`] of the same shape ([`ProbeArgs`], the flags
//! as parsed; [`ConfigFile`], the `--config` TOML; soon a campaign from the
//! collector), and one pure function, [`resolve`], turns them into the
//! [`ProbeConfig`] the probe runs on, validated, under one precedence rule
//! (its doc says it; `--help` and the README repeat it).

mod args;
mod campaign;
mod file;
mod layer;
mod resolve;

pub use args::ProbeArgs;
pub use campaign::{campaign_layer, check_campaign, CampaignError, CampaignPlan, Plan, POLL_EVERY};
pub use file::{ConfigFile, FileSync, FileTarget, FileUrl};
pub use layer::{HttpSpec, Layer, SyncSpec, TargetSpec, UploadSpec, UrlSpec};
pub use resolve::resolve;

use crate::schedule::Spacing;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
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

/// The metrics this probe measures against a responder by default.
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

/// The path metrics measured by default toward every target, responder
/// or URL (toward the address its host resolves to): `path_trace`, every
/// 10 minutes on average.
pub const PATH_METRICS: [Metric; 1] = [Metric::PathTrace];

/// One-way delays, from the same STAMP attempts as `udp_rtt`: measured
/// only when asked for (`--metrics`), since without synchronised clocks
/// at both ends (or `shared_clock`) every attempt counts as
/// `unsynchronized`.
pub const ONE_WAY_METRICS: [Metric; 3] = [
    Metric::UdpOwdForward,
    Metric::UdpOwdBackward,
    Metric::UdpOwdError,
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
    /// A traceroute toward the target's host: `path_trace`.
    PathTrace,
}

impl Measurement {
    /// The measurement that records `metric`, if this probe measures it.
    pub fn of(metric: Metric) -> Option<Self> {
        Some(match metric {
            Metric::UdpRtt
            | Metric::UdpOwdForward
            | Metric::UdpOwdBackward
            | Metric::UdpOwdError => Measurement::UdpRtt,
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
            Metric::PathTrace => Measurement::PathTrace,
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
            // A path changes over minutes, and each trace sends up to 90
            // probes: one per 10 minutes.
            Measurement::PathTrace => 1.0 / 600.0,
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
    /// How to trust its certificate; `None` when no metric measured uses
    /// TLS (a STAMP-only probe), so none is asked for and none is labelled.
    pub trust: Option<Trust>,
    /// Its STAMP reflector keeps this host's own clock (an in-process
    /// responder, or the lab's namespaces on one kernel): one-way delays
    /// need no synchronisation and carry no clock error.
    pub shared_clock: bool,
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
    /// The token shown on heavy requests (photos, echoes over
    /// [`vantage_wire::access::HEAVY_ECHO_BYTES`]) to responders that
    /// require one; checked to be a token, not its signature.
    pub access_token: Option<String>,
    /// Seed of the schedules' randomness; `None` takes one from the clock
    /// when the run starts.
    pub seed: Option<u64>,
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
    /// The campaign's phase switches: each window is labelled with the
    /// phase of the last switch at or before its start. Empty when the
    /// flags or the file set `phase` (a flag beats the campaign).
    pub phases: Vec<vantage_wire::campaign::PhaseSwitch>,
}

/// Where batches go, and where they wait until the collector has them.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The collectors, in the order they are tried (the first is the
    /// one the probe returns to); never empty.
    pub targets: Vec<crate::upload::CollectorTarget>,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool size cap, bytes.
    pub spool_max_bytes: u64,
}

/// A configuration mistake, in words that say what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Nothing to measure.
    #[error(
        "no target: give --target NAME=HOST:PORT, --url NAME=https://…, a --config file with [[target]] or [[url]], or --local; or --collector with --token (and its pin) to take this probe's campaign from the collector"
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
    #[error("target `{0}`: no certificate trust given; add --pin sha256:… (printed by `vantage serve`), --ca-file FILE, or --insecure (only udp_rtt, which is plain STAMP, needs none)")]
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
    /// An `--access-token` that does not read as a token.
    #[error("--access-token: {0}; give the whole line `vantage access issue` prints")]
    AccessToken(vantage_tls::access::AccessRefusal),
    /// A bad `--rate`.
    #[error("--rate `{0}`: expected METRIC=RATE with RATE a positive number of attempts per second, at most 1000")]
    BadRate(String),
    /// A value outside what the probe or the responder allows.
    #[error("{field} {value} is out of range: {allowed}")]
    OutOfRange {
        /// The flag (or the file's field of the same name).
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A bad `--http-header`.
    #[error("--http-header `{0}`: expected \"NAME: VALUE\"")]
    BadHeader(String),
    /// A URL's method is not an HTTP method.
    #[error("url `{url}`: `{method}` is not an HTTP method")]
    BadMethod {
        /// The URL's name.
        url: String,
        /// The method given.
        method: String,
    },
    /// A URL's expected status is not an HTTP status.
    #[error("url `{url}`: expected status {status} is not an HTTP status (100 to 599)")]
    BadStatus {
        /// The URL's name.
        url: String,
        /// The status given.
        status: u16,
    },
    /// A duration in the file does not parse.
    #[error("{field} `{value}` in the config file: {reason} (write it as 500ms, 60s, 5m…)")]
    FileDuration {
        /// The file's field.
        field: &'static str,
        /// The text given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The file's `spacing` is neither of its two values.
    #[error("spacing `{0}` in the config file: use \"poisson\" or \"fixed\"")]
    BadSpacing(String),
    /// A `--label` without `=`.
    #[error("--label `{0}`: expected KEY=VALUE")]
    BadLabel(String),
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

pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

pub(crate) fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("vantage");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/vantage"),
        None => PathBuf::from(".vantage-state"),
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
        assert_eq!(c.targets[0].trust, Some(Trust::Insecure));
    }

    #[test]
    fn a_stamp_only_probe_needs_no_trust_and_carries_none() {
        // udp_rtt is plain STAMP: no certificate is ever checked.
        let c = args(|a| {
            a.targets = vec!["sg=[::1]:4433".into()];
            a.metrics = vec!["udp_rtt".into()];
        })
        .unwrap();
        assert_eq!(c.targets[0].trust, None);
        // An --insecure given anyway is not carried: nothing is unverified.
        let c = args(|a| {
            a.targets = vec!["sg=[::1]:4433".into()];
            a.metrics = vec!["udp_rtt".into()];
            a.insecure = true;
        })
        .unwrap();
        assert_eq!(c.targets[0].trust, None);
        // One metric over TLS, and the trust is required again.
        let err = args(|a| {
            a.targets = vec!["sg=[::1]:4433".into()];
            a.metrics = vec!["udp_rtt".into(), "tcp_connect".into()];
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::NoTrust(_)), "{err}");
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
        assert!(matches!(c.targets[0].trust, Some(Trust::Pinned(_))));
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

    #[test]
    fn config_file_collector_table_sends_batches_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mumbai.toml");
        let pin = format!("sha256:{}", "ab".repeat(32));
        std::fs::write(
            &path,
            format!(
                r#"
[labels]
country = "IN"
[[target]]
name = "oregon"
address = "127.0.0.1:4433"
pin = "{pin}"
[collector]
addresses = ["127.0.0.1:4434", "127.0.0.2:4434"]
token = "vt_file"
pins = ["{pin}"]
spool_max_bytes = 1000000
"#
            ),
        )
        .unwrap();
        let c = args(|a| a.config = Some(path.clone())).unwrap();
        let up = c.upload.expect("the file's collector table is used");
        assert_eq!(up.targets.len(), 2);
        assert_eq!(up.targets[1].host, "127.0.0.2");
        assert_eq!(up.targets[0].token, "vt_file");
        assert!(matches!(up.targets[0].trust, Trust::Pinned(_)));
        assert_eq!(up.spool_max_bytes, 1_000_000);
        let c = args(|a| {
            a.config = Some(path.clone());
            a.collector = vec!["127.0.0.9:9".into()];
        })
        .unwrap();
        let up = c.upload.unwrap();
        assert_eq!(up.targets.len(), 1, "a flag beats the file");
        assert_eq!(
            up.targets[0].token, "vt_file",
            "the rest still comes from the file"
        );
        std::fs::write(
            &path,
            "[collector]\naddresses = [\"h:1\"]\npins = [\"sha256:zz\"]\n",
        )
        .unwrap();
        let err = args(|a| a.config = Some(path.clone())).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }

    #[test]
    fn the_packaged_example_probe_file_reads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/probe-example.toml");
        let c = args(|a| a.config = Some(path)).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.labels.get("country"), Some("IN"));
        assert_eq!(c.upload.map(|u| u.targets.len()), Some(1));
    }
}
