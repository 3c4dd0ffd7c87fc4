//! The flags as parsed, shared by `vantage probe` and `vantage-probe`, and
//! the [`Layer`] they give.

use super::layer::{HttpSpec, Layer, SyncSpec, TargetSpec, UploadSpec, UrlSpec};
use super::{
    split_host_port, ConfigError, Display, HttpVersion, ProbeConfig, SyncDirection, SyncTransport,
};
use std::path::PathBuf;
use std::time::Duration;
use vantage_tls::{Fingerprint, Trust};

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
    /// TOML file with targets, labels and schedules. A flag beats the file, even the file's value for one [[target]] or [[url]]; labels, rates and headers merge key by key.
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
    /// Send batches to this collector, HOST:PORT (QUIC, HTTPS where UDP is blocked); repeat for more: the probe fails over to the next when one is down or refusing, and goes back to the first every few minutes.
    #[arg(long, value_name = "HOST:PORT", requires = "token")]
    pub collector: Vec<String>,
    /// This probe's collector token (from `vantage collect token add --probe ID`).
    #[arg(long, requires = "collector")]
    pub token: Option<String>,
    /// The token responders that require one (`vantage serve --require-token`) want for photos and large echoes (from `vantage access issue --probe ID`).
    #[arg(long, value_name = "TOKEN")]
    pub access_token: Option<String>,
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
    /// With --collector and --token but no target: how often to ask the collector for this probe's campaign, with a heartbeat [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub poll_every: Option<Duration>,
}

/// The trust decision of `--insecure`, `--ca-file` or `--pin` (clap lets
/// only one of them through).
pub(super) fn trust_of(
    insecure: bool,
    ca_file: Option<&PathBuf>,
    pins: &[String],
) -> Result<Option<Trust>, ConfigError> {
    let pins = pins
        .iter()
        .map(|p| p.parse::<Fingerprint>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if insecure {
        Some(Trust::Insecure)
    } else if let Some(ca) = ca_file {
        Some(Trust::CaFile(ca.clone()))
    } else if !pins.is_empty() {
        Some(Trust::Pinned(pins))
    } else {
        None
    })
}

/// `KEY=VALUE`, or the label error that says what is wrong with it.
fn label_pair(pair: &str) -> Result<(String, String), ConfigError> {
    match pair.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => {
            vantage_wire::Labels::new().insert_pair(pair)?;
            Err(ConfigError::BadLabel(pair.to_string()))
        }
    }
}

impl ProbeArgs {
    /// Validates the flags (and the file they name) into a configuration,
    /// flags first: see [`super::resolve`] for the rule.
    pub fn into_config(self) -> Result<ProbeConfig, ConfigError> {
        let file = self.file_layer()?;
        super::resolve(&[&self.layer()?, &file])
    }

    /// What the probe runs on: its own configuration, or, when its flags
    /// and file give no target but a collector and a token, the campaign
    /// its collector assigns it (see [`super::CampaignPlan`]).
    pub fn into_plan(self) -> Result<super::Plan, ConfigError> {
        let (flags, file) = (self.layer()?, self.file_layer()?);
        match super::resolve(&[&flags, &file]) {
            Err(ConfigError::NoTarget) => {
                let every = self.poll_every.unwrap_or(super::campaign::POLL_EVERY);
                match super::CampaignPlan::new(flags, file, every)? {
                    Some(plan) => Ok(super::Plan::FromCollector(Box::new(plan))),
                    None => Err(ConfigError::NoTarget),
                }
            }
            other => other.map(|c| super::Plan::Own(Box::new(c))),
        }
    }

    fn file_layer(&self) -> Result<Layer, ConfigError> {
        match &self.config {
            Some(p) => super::ConfigFile::load(p)?.layer(),
            None => Ok(Layer::default()),
        }
    }

    /// The settings these flags give, unset where no flag was given.
    pub fn layer(&self) -> Result<Layer, ConfigError> {
        let mut labels = self
            .labels
            .iter()
            .map(|p| label_pair(p))
            .collect::<Result<Vec<_>, _>>()?;
        for (key, v) in [
            (vantage_wire::Labels::PHASE, &self.phase),
            (vantage_wire::Labels::COUNTRY, &self.country),
            (vantage_wire::Labels::REGION, &self.region),
            (vantage_wire::Labels::NETWORK, &self.network),
            (vantage_wire::Labels::ASN, &self.asn),
            (vantage_wire::Labels::DEVICE, &self.device),
        ] {
            if let Some(v) = v {
                labels.push((key.to_string(), v.clone()));
            }
        }
        let mut targets = Vec::new();
        for spec in &self.targets {
            let bad = || ConfigError::BadTarget(spec.clone());
            let (name, addr) = spec.split_once('=').ok_or_else(bad)?;
            let (host, port) = split_host_port(addr).ok_or_else(bad)?;
            if name.is_empty() {
                return Err(bad());
            }
            targets.push(TargetSpec {
                name: name.to_string(),
                host,
                port,
                stamp_port: None,
                server_name: None,
                trust: None,
                shared_clock: false,
            });
        }
        let mut urls = Vec::new();
        for spec in &self.urls {
            let (name, url) = spec
                .split_once('=')
                .ok_or_else(|| ConfigError::BadUrl(spec.clone()))?;
            urls.push(UrlSpec {
                name: name.to_string(),
                url: url.to_string(),
                spec: spec.clone(),
                http: HttpSpec::default(),
                body: None,
                trust: None,
            });
        }
        let mut headers = Vec::new();
        for h in &self.http_headers {
            let (k, v) = h
                .split_once(':')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| ConfigError::BadHeader(h.clone()))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let rates = self
            .rates
            .iter()
            .map(|s| {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string(), s.clone())
            })
            .collect();
        let collector_trust =
            trust_of(false, self.collector_ca_file.as_ref(), &self.collector_pins)?;
        Ok(Layer {
            probe_id: self.probe_id.clone(),
            campaign: self.campaign.clone(),
            labels,
            trust: trust_of(self.insecure, self.ca_file.as_ref(), &self.pins)?,
            stamp_port: self.stamp_port,
            targets,
            urls,
            http: HttpSpec {
                version: self.http_version,
                method: self.http_method.clone(),
                headers,
                expect_status: self.expect_status,
                max_body_bytes: self.max_body_bytes,
            },
            dns_server: self.dns_server,
            local: self.local.then_some(true),
            metrics: (!self.metrics.is_empty()).then(|| self.metrics.clone()),
            rates,
            fixed_spacing: self.fixed_spacing.then_some(true),
            timeout: self.timeout,
            window: self.window,
            duration: self.duration,
            response_bytes: self.response_bytes,
            request_bytes: self.request_bytes,
            access_token: self.access_token.clone(),
            seed: self.seed,
            state_dir: self.state_dir.clone(),
            out: self.out.clone(),
            display: if self.quiet {
                Some(Display::Quiet)
            } else if self.json {
                Some(Display::Json)
            } else {
                None
            },
            upload: UploadSpec {
                collector: (!self.collector.is_empty()).then(|| self.collector.clone()),
                token: self.token.clone(),
                trust: collector_trust,
                spool_dir: self.spool_dir.clone(),
                spool_max_bytes: self.spool_max_bytes,
            },
            sync: SyncSpec {
                every: self.sync_every,
                photos: self.sync_photos,
                concurrency: self.sync_concurrency,
                photo_bytes: self.sync_photo_bytes,
                size_sigma: self.sync_size_sigma,
                direction: self.sync_direction,
                transport: self.sync_transport,
                timeout: self.sync_timeout,
            },
        })
    }
}
