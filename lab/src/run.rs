//! `vantage lab run`: a scenario's responders, paths and probes on
//! loopback, for one phase. Everything it writes is marked simulated.

use crate::delay_line::ReleaseClock;
use crate::link::{EmulatedPath, Upstream};
use crate::scenario::{Phase, Scenario};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use vantage_probe::{ProbeArgs, RunError, RunSummary};
use vantage_responder::{Responder, ResponderConfig, ResponderError};
use vantage_wire::Series;

/// What to run.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// The phase to run.
    pub phase: String,
    /// How long the probes measure.
    pub duration: Duration,
    /// Output directory: one subdirectory per country.
    pub out: PathBuf,
    /// Aggregation window of the probes.
    pub window: Duration,
    /// Extra `--rate METRIC=R` for every probe.
    pub rates: Vec<String>,
    /// Also run a collector on loopback storing into this store, with a
    /// token per country's probe, and have the probes upload to it.
    pub db: Option<vantage_collector::StoreLocation>,
}

/// Why a lab run failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The phase is not in the scenario.
    #[error("phase `{phase}` is not in scenario `{scenario}` (it has: {known})")]
    UnknownPhase {
        /// Asked for.
        phase: String,
        /// Scenario name.
        scenario: String,
        /// Phases it has.
        known: String,
    },
    /// A responder did not start.
    #[error("responder for {datacenter}: {source}")]
    Responder {
        /// Data centre.
        datacenter: String,
        /// Cause.
        source: ResponderError,
    },
    /// A relay did not start.
    #[error("path {country} → {datacenter}: {source}")]
    Relay {
        /// Country.
        country: String,
        /// Data centre.
        datacenter: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Writing the output directory failed.
    #[error("{path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The lab's collector failed.
    #[error("collector: {0}")]
    Collector(String),
    /// A probe's generated configuration was refused.
    #[error("probe configuration for {country}: {source}")]
    ProbeConfig {
        /// Country.
        country: String,
        /// Cause.
        source: vantage_probe::ConfigError,
    },
    /// A probe failed.
    #[error("probe for {country}: {source}")]
    Probe {
        /// Country.
        country: String,
        /// Cause.
        source: Box<RunError>,
    },
}

/// What a lab run measured.
#[derive(Debug)]
pub struct LabSummary {
    /// Each country's probe run.
    pub countries: BTreeMap<String, RunSummary>,
    /// Lateness of the relays' releases: p50, p99, and how many.
    pub relay_lateness: (Duration, Duration, u64),
}

impl LabSummary {
    /// Every (target, metric) total of every country, with its country.
    pub fn totals(&self) -> impl Iterator<Item = (&str, &Series)> {
        self.countries
            .iter()
            .flat_map(|(c, r)| r.totals.iter().map(move |s| (c.as_str(), s)))
    }
}

const SIMULATED_NOTE: &str = "SIMULATED: these measurements come from `vantage lab run`, over emulated \
network paths on one machine (loopback relays adding delay, jitter, loss and bandwidth limits). They \
say nothing about any real network. Every series carries the label simulated=true.\n";

/// Runs one phase of a scenario until `duration` has passed or `stop` turns true.
pub async fn run_lab(
    options: LabOptions,
    stop: watch::Receiver<bool>,
) -> Result<LabSummary, LabError> {
    let scenario = &options.scenario;
    let phase = scenario
        .phases
        .get(&options.phase)
        .ok_or_else(|| LabError::UnknownPhase {
            phase: options.phase.clone(),
            scenario: scenario.name.clone(),
            known: scenario
                .phases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let out_err = |path: PathBuf| move |source| LabError::Output { path, source };
    std::fs::create_dir_all(&options.out).map_err(out_err(options.out.clone()))?;
    let note = options.out.join("SIMULATED.txt");
    std::fs::write(&note, SIMULATED_NOTE).map_err(out_err(note.clone()))?;

    let responders = start_responders(scenario, phase).await?;

    let collector = match &options.db {
        Some(db) => Some(start_collector(db).await?),
        None => None,
    };
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let timing = ReleaseClock::start().map_err(|source| LabError::Relay {
        country: "-".into(),
        datacenter: "-".into(),
        source,
    })?;
    let mut paths = Vec::new();
    let mut probes = Vec::new();
    for (i, (country, region)) in scenario.countries.iter().enumerate() {
        let dir = options.out.join(country);
        std::fs::create_dir_all(&dir).map_err(out_err(dir.clone()))?;
        let mut toml = String::from(
            "# Written by `vantage lab run`: the probe configuration of this simulated country.\n",
        );
        for (j, dc) in phase.targets_of(country, scenario).into_iter().enumerate() {
            let responder = &responders[dc];
            let spec = &scenario.paths[&(country.clone(), dc.to_string())];
            let upstream = Upstream {
                quic: responder.quic_addr(),
                https: responder.https_addr(),
                stamp: responder.stamp_addr(),
            };
            let seed = scenario.seed ^ ((i as u64) << 32) ^ j as u64;
            let path =
                EmulatedPath::start(upstream, spec, seed, timing.clone()).map_err(|source| {
                    LabError::Relay {
                        country: country.clone(),
                        datacenter: dc.to_string(),
                        source,
                    }
                })?;
            toml.push_str(&format!(
                "\n[[target]]\nname = \"{dc}\"\naddress = \"127.0.0.1:{}\"\nstamp_port = {}\nserver_name = \"localhost\"\npin = \"{}\"\n",
                path.port(),
                path.stamp_port(),
                responder.fingerprint()
            ));
            paths.push(path);
        }
        toml.push_str("\n[sync]\n");
        toml.push_str(&toml::to_string(&scenario.sync).unwrap_or_default());
        let config_path = dir.join("probe.toml");
        std::fs::write(&config_path, toml).map_err(out_err(config_path.clone()))?;
        let args = probe_args(
            &options,
            (i, country, region),
            config_path,
            dir,
            &run_id,
            collector.as_ref(),
        )?;
        let config = args.into_config().map_err(|source| LabError::ProbeConfig {
            country: country.clone(),
            source,
        })?;
        let stop = stop.clone();
        let country = country.clone();
        probes.push(tokio::spawn(async move {
            (country, vantage_probe::run(config, stop).await)
        }));
    }

    let mut countries = BTreeMap::new();
    let mut failure = None;
    for p in probes {
        match p.await {
            Ok((country, Ok(summary))) => {
                countries.insert(country, summary);
            }
            Ok((country, Err(source))) => {
                failure = failure.or(Some(LabError::Probe {
                    country,
                    source: Box::new(source),
                }))
            }
            Err(e) => tracing::error!(error = %e, "a probe task failed"),
        }
    }
    drop(paths);
    for (_, r) in responders {
        r.shutdown().await;
    }
    if let Some(c) = collector {
        c.shutdown().await;
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let (p50, n) = timing.lateness(0.5);
    let (p99, _) = timing.lateness(0.99);
    Ok(LabSummary {
        countries,
        relay_lateness: (p50, p99, n),
    })
}

/// One responder per data centre any country of `phase` measures.
async fn start_responders(
    scenario: &Scenario,
    phase: &Phase,
) -> Result<BTreeMap<String, Responder>, LabError> {
    let mut responders = BTreeMap::new();
    for country in scenario.countries.keys() {
        for dc in phase.targets_of(country, scenario) {
            if !responders.contains_key(dc) {
                let config = ResponderConfig::local().map_err(|e| LabError::Responder {
                    datacenter: dc.to_string(),
                    source: e.into(),
                })?;
                let r = Responder::start(config)
                    .await
                    .map_err(|source| LabError::Responder {
                        datacenter: dc.to_string(),
                        source,
                    })?;
                responders.insert(dc.to_string(), r);
            }
        }
    }
    Ok(responders)
}

/// A collector on loopback storing into `db`.
async fn start_collector(
    db: &vantage_collector::StoreLocation,
) -> Result<vantage_collector::Collector, LabError> {
    vantage_collector::Collector::start(vantage_collector::CollectorConfig {
        listen: "127.0.0.1:0"
            .parse()
            .map_err(|_| LabError::Collector("address".into()))?,
        identity: vantage_responder::Identity::generate(&["localhost".into()])
            .map_err(|e| LabError::Collector(e.to_string()))?,
        db: db.clone(),
        max_connections: 256,
        keep_raw: None,
    })
    .await
    .map_err(|e| LabError::Collector(e.to_string()))
}

/// The probe flags of one country: its generated config file, its labels,
/// the lab's rates and, with a store, its token for the lab's collector.
fn probe_args(
    options: &LabOptions,
    (i, country, region): (usize, &String, &String),
    config_path: PathBuf,
    dir: PathBuf,
    run_id: &str,
    collector: Option<&vantage_collector::Collector>,
) -> Result<ProbeArgs, LabError> {
    let scenario = &options.scenario;
    let mut args = ProbeArgs {
        config: Some(config_path),
        labels: vec!["simulated=true".into()],
        phase: Some(options.phase.clone()),
        country: Some(country.clone()),
        region: (!region.is_empty()).then(|| region.clone()),
        network: Some("lab".into()),
        campaign: Some(scenario.name.clone()),
        // Unique per run: a collector drops a (probe, sequence) it
        // already has, and each run starts its probes' sequences anew.
        probe_id: Some(format!(
            "lab-{}-{}-{run_id}",
            country.to_ascii_lowercase(),
            options.phase
        )),
        state_dir: Some(options.out.join("state").join(country)),
        duration: Some(options.duration),
        window: Some(options.window),
        // Cold handshakes at 4/s (a probe's default is 0.5/s) so a
        // short lab run has enough samples for intervals; --rate wins.
        rates: ["quic_handshake=4", "tcp_connect=4"]
            .into_iter()
            .map(String::from)
            .chain(options.rates.iter().cloned())
            .collect(),
        out: Some(dir),
        quiet: true,
        seed: Some(scenario.seed.wrapping_add(i as u64)),
        ..ProbeArgs::default()
    };
    if let (Some(c), Some(db)) = (collector, &options.db) {
        let token = vantage_collector::new_token();
        let probe_id = args.probe_id.clone().unwrap_or_default();
        db.open()
            .and_then(|mut s| s.add_token(&probe_id, &vantage_collector::hash_token(&token), 0))
            .map_err(|e| LabError::Collector(e.to_string()))?;
        args.collector = vec![c.quic_addr().to_string()];
        args.token = Some(token);
        args.collector_pins = vec![c.fingerprint().to_string()];
    }
    Ok(args)
}
