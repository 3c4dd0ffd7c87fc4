//! The TOML configuration file (`--config FILE`) and the [`Layer`] it gives.

use super::layer::{HttpSpec, Layer, SyncSpec, TargetSpec, UploadSpec, UrlSpec};
use super::{split_host_port, ConfigError, HttpVersion, SyncDirection, SyncTransport};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vantage_tls::Trust;

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
    /// The token for responders that require one for heavy requests.
    pub access_token: Option<String>,
    /// Targets.
    #[serde(default, rename = "target")]
    pub targets: Vec<FileTarget>,
    /// Service URLs.
    #[serde(default, rename = "url")]
    pub urls: Vec<FileUrl>,
    /// Photo-sync batches.
    pub sync: Option<FileSync>,
    /// Where batches go.
    pub collector: Option<FileCollector>,
}

/// The `[collector]` table: where batches go, so a probe run as a service
/// (`vantage-probe@NAME` reads `/etc/vantage/probe/NAME.toml`) needs no
/// flags. Flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCollector {
    /// `HOST:PORT` of each collector, in the order they are tried.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// This probe's token (`vantage collect token add`).
    pub token: Option<String>,
    /// Pinned fingerprints of the collectors' certificates.
    #[serde(default)]
    pub pins: Vec<String>,
    /// CA file for the collectors' certificates.
    pub ca_file: Option<PathBuf>,
    /// Where batches wait.
    pub spool_dir: Option<PathBuf>,
    /// Spool cap, bytes.
    pub spool_max_bytes: Option<u64>,
}

impl FileCollector {
    fn spec(&self) -> Result<UploadSpec, ConfigError> {
        // As the flags: a CA file, else the pins.
        let trust = super::args::trust_of(false, self.ca_file.as_ref(), &self.pins)?;
        Ok(UploadSpec {
            collector: (!self.addresses.is_empty()).then(|| self.addresses.clone()),
            token: self.token.clone(),
            trust,
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
        })
    }
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
    /// "auto", "1.1", "2" or "3".
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
    /// Its STAMP reflector keeps this host's own clock (the lab writes
    /// this for its namespaces): one-way delays need no synchronisation.
    #[serde(default)]
    pub shared_clock: bool,
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

    /// The settings this file gives, unset where it says nothing.
    pub fn layer(&self) -> Result<Layer, ConfigError> {
        let targets = self
            .targets
            .iter()
            .map(FileTarget::spec)
            .collect::<Result<Vec<_>, _>>()?;
        let urls = self
            .urls
            .iter()
            .map(FileUrl::spec)
            .collect::<Result<Vec<_>, _>>()?;
        let fixed_spacing = match self.spacing.as_deref() {
            None => None,
            Some("poisson") => Some(false),
            Some("fixed") => Some(true),
            Some(other) => return Err(ConfigError::BadSpacing(other.to_string())),
        };
        let sync = self.sync.as_ref().map(FileSync::spec).transpose()?;
        Ok(Layer {
            probe_id: self.probe_id.clone(),
            campaign: self.campaign.clone(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            targets,
            urls,
            metrics: self.metrics.clone(),
            rates: self
                .rates
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string(), format!("{k}={v}")))
                .collect(),
            fixed_spacing,
            timeout: file_duration("timeout", &self.timeout)?,
            window: file_duration("window", &self.window)?,
            response_bytes: self.response_bytes,
            access_token: self.access_token.clone(),
            sync: sync.unwrap_or_default(),
            upload: match &self.collector {
                Some(c) => c.spec()?,
                None => UploadSpec::default(),
            },
            ..Layer::default()
        })
    }
}

/// A duration the file gives as text, such as "60s".
fn file_duration(field: &'static str, v: &Option<String>) -> Result<Option<Duration>, ConfigError> {
    v.as_deref()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| ConfigError::FileDuration {
                field,
                value: s.to_string(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// A pin or a CA file, as a file's table gives them.
fn file_trust(
    pin: &Option<String>,
    ca_file: &Option<PathBuf>,
) -> Result<Option<Trust>, ConfigError> {
    Ok(match (pin, ca_file) {
        (Some(pin), _) => Some(Trust::Pinned(vec![pin.parse()?])),
        (None, Some(ca)) => Some(Trust::CaFile(ca.clone())),
        (None, None) => None,
    })
}

impl FileTarget {
    fn spec(&self) -> Result<TargetSpec, ConfigError> {
        let (host, port) = split_host_port(&self.address)
            .ok_or_else(|| ConfigError::BadTarget(self.address.clone()))?;
        Ok(TargetSpec {
            name: self.name.clone(),
            host,
            port,
            stamp_port: self.stamp_port,
            server_name: self.server_name.clone(),
            trust: file_trust(&self.pin, &self.ca_file)?,
            shared_clock: self.shared_clock,
        })
    }
}

impl FileUrl {
    fn spec(&self) -> Result<UrlSpec, ConfigError> {
        Ok(UrlSpec {
            name: self.name.clone(),
            url: self.url.clone(),
            spec: self.url.clone(),
            http: HttpSpec {
                version: self.version,
                method: self.method.clone(),
                headers: self
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                expect_status: self.expect_status,
                max_body_bytes: self.max_body_bytes,
            },
            body: self.body.clone(),
            trust: file_trust(&self.pin, &self.ca_file)?,
        })
    }
}

impl FileSync {
    fn spec(&self) -> Result<SyncSpec, ConfigError> {
        Ok(SyncSpec {
            every: file_duration("sync.every", &self.every)?,
            photos: self.photos,
            concurrency: self.concurrency,
            photo_bytes: self.photo_bytes,
            size_sigma: self.size_sigma,
            direction: self.direction,
            transport: self.transport,
            timeout: file_duration("sync.timeout", &self.timeout)?,
        })
    }
}
