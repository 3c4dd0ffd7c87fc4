//! `vantage lab run`: a scenario's responders, paths and probes on
//! loopback, for one phase. Everything it writes is marked simulated.

use crate::delay_line::ReleaseClock;
use crate::fabric::{Emulation, Fabric, Mode, Route};
use crate::scenario::{Phase, Scenario};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use vantage_probe::{ProbeArgs, RunError, RunSummary};
use vantage_reports::LabTiming;
use vantage_responder::ResponderError;
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
    /// Phases whose data centres every probe measures too (the demo
    /// measures both phases' all along, and the cut-over moves the label).
    pub also_measure: Vec<String>,
    /// The probes have no configuration of their own: each takes its
    /// country's campaign (targets, rates, window, sync) from the lab's
    /// collector, as a fleet's probes do. Needs `db`.
    pub fleet: bool,
    /// Upload to this collector, already running apart from the lab,
    /// instead of starting one: its address and certificate fingerprint.
    /// The probes' tokens still go into `db`, which must be its store. So
    /// the collector can be killed and restarted while the lab runs (the
    /// soak does).
    pub outside_collector: Option<(String, String)>,
    /// Relays, namespaces, or namespaces where this process may make them.
    pub emulation: Emulation,
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
    /// A phase names a data centre the country has no path to.
    #[error("no path {country} → {datacenter} in the scenario")]
    NoPath {
        /// Country.
        country: String,
        /// Data centre.
        datacenter: String,
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
    /// Namespace mode could not be set up.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
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
    /// Each probe's run, by its name: the country, or `IN-wifi` when the
    /// country has probes of its own.
    pub probes: BTreeMap<String, RunSummary>,
    /// Lateness of the relays' releases: p50, p99, and how many.
    pub relay_lateness: (Duration, Duration, u64),
    /// The same, judged against the run's bound: when degraded, every
    /// output of the run says its figures are not accurate.
    pub timing: LabTiming,
    /// The mode it ran in.
    pub mode: Mode,
}

impl LabSummary {
    /// Every (target, metric) total of every probe, with its name.
    pub fn totals(&self) -> impl Iterator<Item = (&str, &Series)> {
        self.probes
            .iter()
            .flat_map(|(c, r)| r.totals.iter().map(move |s| (c.as_str(), s)))
    }
}

const SIMULATED_NOTE: &str =
    "SIMULATED: these measurements come from `vantage lab run`, over emulated \
network paths on one machine (delay, jitter, loss and bandwidth limits added by the lab). They say \
nothing about any real network. Every series carries the label simulated=true, and emulation=relay \
or emulation=netns for the lab's mode.\n";

/// Added to SIMULATED.txt in relay mode.
const RELAY_NOTE: &str = "RELAY MODE: loopback relays carried UDP packet by packet and TCP as a split \
proxy, so TCP's handshake never crossed the emulated path, and no router stood on it. tcp_connect and \
path_trace are NOT EMULATED in this mode and were not measured. Run as root (vantage lab run --emulation netns) for every packet, TCP \
included, through the path.\n";

/// Runs one phase of a scenario until `duration` has passed or `stop` turns true.
pub async fn run_lab(
    options: LabOptions,
    stop: watch::Receiver<bool>,
) -> Result<LabSummary, LabError> {
    start_lab(options, stop).await?.finish().await
}

/// A lab whose probes are measuring.
pub struct RunningLab {
    probes: Vec<tokio::task::JoinHandle<(String, Result<RunSummary, RunError>)>>,
    fabric: Fabric,
    /// Why `Auto` fell back to relays.
    fallback: Option<String>,
    collector: Option<vantage_collector::Collector>,
    timing: std::sync::Arc<ReleaseClock>,
    /// The smallest one-way delay of any path started, which sets the
    /// bound its release lateness is held to.
    smallest_delay: Option<Duration>,
    campaigns: Vec<String>,
}

impl RunningLab {
    /// The campaigns the probes take from the lab's collector, one per
    /// country (none unless [`LabOptions::fleet`]).
    pub fn campaigns(&self) -> &[String] {
        &self.campaigns
    }

    /// The mode the lab runs in.
    pub fn mode(&self) -> Mode {
        self.fabric.mode()
    }

    /// Why the lab runs relays though namespaces were welcome (`Auto`
    /// without the rights), in words for the user.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The namespaces of namespace mode (`ip netns list` shows them).
    pub fn namespaces(&self) -> Vec<String> {
        self.fabric.namespaces()
    }

    /// Waits for every probe to end, then stops the paths, responders and
    /// collector.
    pub async fn finish(self) -> Result<LabSummary, LabError> {
        let mut probes = BTreeMap::new();
        let mut failure = None;
        for p in self.probes {
            match p.await {
                Ok((name, Ok(summary))) => {
                    probes.insert(name, summary);
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
        let mode = self.fabric.mode();
        self.fabric.stop().await;
        if let Some(c) = self.collector {
            c.shutdown().await;
        }
        if let Some(f) = failure {
            return Err(f);
        }
        let (p50, n) = self.timing.lateness(0.5);
        let (p99, _) = self.timing.lateness(0.99);
        Ok(LabSummary {
            probes,
            relay_lateness: (p50, p99, n),
            timing: LabTiming::judge(p50, p99, n, self.smallest_delay),
            mode,
        })
    }
}

fn phase_of<'s>(scenario: &'s Scenario, name: &str) -> Result<&'s Phase, LabError> {
    scenario
        .phases
        .get(name)
        .ok_or_else(|| LabError::UnknownPhase {
            phase: name.to_string(),
            scenario: scenario.name.clone(),
            known: scenario
                .phases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Starts a scenario's responders, paths, collector and probes; the
/// probes measure until `duration` has passed or `stop` turns true.
pub async fn start_lab(
    options: LabOptions,
    stop: watch::Receiver<bool>,
) -> Result<RunningLab, LabError> {
    let scenario = &options.scenario;
    let mut phases = vec![phase_of(scenario, &options.phase)?];
    for name in &options.also_measure {
        phases.push(phase_of(scenario, name)?);
    }
    let out_err = |path: PathBuf| move |source| LabError::Output { path, source };
    std::fs::create_dir_all(&options.out).map_err(out_err(options.out.clone()))?;
    let (mode, fallback) = crate::fabric::resolve(options.emulation)?;
    let note = options.out.join("SIMULATED.txt");
    let text = match mode {
        Mode::Relay => format!("{SIMULATED_NOTE}{RELAY_NOTE}"),
        Mode::Netns => SIMULATED_NOTE.to_string(),
    };
    std::fs::write(&note, text).map_err(out_err(note.clone()))?;

    let routes = routes_of(scenario, &phases)?;
    let timing = ReleaseClock::start().map_err(|source| LabError::Relay {
        country: "-".into(),
        datacenter: "-".into(),
        source,
    })?;
    let mut fabric = Fabric::start(mode, &routes, timing.clone()).await?;
    write_hops(&options.out, &fabric)?;
    write_sites(&options.out, scenario, &routes, &fabric)?;
    let smallest_delay = routes
        .iter()
        .map(|r| r.spec.up.delay.min(r.spec.down.delay))
        .min();
    let collector = match (&options.db, &options.outside_collector) {
        (Some(db), None) => Some(start_collector(db).await?),
        _ => None,
    };
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let mut probes = Vec::new();
    let mut campaigns = Vec::new();
    for (i, (country, region, probe)) in scenario.all_probes().enumerate() {
        let country = &country.to_string();
        let dir = dir_of(&options, &probe.name);
        std::fs::create_dir_all(&dir).map_err(out_err(dir.clone()))?;
        let toml = probe_toml(&fabric, &routes, scenario, &probe.name);
        let mut args = probe_args(
            &options,
            (i, country, region, probe),
            dir,
            (&run_id, mode),
            collector.as_ref(),
        )?;
        if let Some(addr) = args.collector.first_mut() {
            *addr = fabric.collector_addr(&probe.name, addr)?;
        }
        if options.fleet {
            let campaign = format!("{}-{}", scenario.name, probe.name.to_ascii_lowercase());
            let probe_id = args.probe_id.clone().unwrap_or_default();
            let body = campaign_body(&options, mode, &toml);
            offer_campaign(
                options.db.as_ref(),
                &campaign,
                &body,
                &probe_id,
                &options.phase,
            )
            .map_err(LabError::Collector)?;
            campaigns.push(campaign);
            args.poll_every = Some(FLEET_POLL);
        } else {
            let config_path = dir_of(&options, &probe.name).join("probe.toml");
            std::fs::write(&config_path, &toml).map_err(out_err(config_path.clone()))?;
            args.config = Some(config_path);
            args.phase = Some(options.phase.clone());
            args.campaign = Some(scenario.name.clone());
            args.rates = lab_rates(&options);
            args.metrics = lab_metrics(mode);
            args.window = Some(options.window);
        }
        let plan = args.into_plan().map_err(|source| LabError::ProbeConfig {
            country: probe.name.clone(),
            source,
        })?;
        let stop = stop.clone();
        let name = probe.name.clone();
        probes.push(fabric.spawn_probe(&probe.name, async move {
            (name, vantage_probe::run_plan(plan, stop).await)
        }));
    }
    Ok(RunningLab {
        probes,
        fabric,
        fallback,
        collector,
        timing,
        smallest_delay,
        campaigns,
    })
}

/// `OUT/hops.csv`: every router the lab made, with its address, name and
/// country, so a traceroute's hops can be told apart (written only when
/// there are routers: relay mode has none).
fn write_hops(out: &std::path::Path, fabric: &Fabric) -> Result<(), LabError> {
    if fabric.routers().is_empty() {
        return Ok(());
    }
    let mut csv = String::from("address,name,country,silent\n");
    for r in fabric.routers() {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            r.addr, r.hop.name, r.hop.country, r.hop.silent
        ));
    }
    let path = out.join("hops.csv");
    std::fs::write(&path, csv).map_err(|source| LabError::Output { path, source })
}

/// `OUT/sites.csv`, the lab's site map (each responder's address as a
/// /32 or /128, with its data centre's country and place), and
/// `OUT/hop-countries.csv`, each router's address and country as an
/// IP-to-country dataset: what `vantage report --sites OUT/sites.csv
/// --hop-data OUT/hop-countries.csv` reads. Namespace mode only: in relay
/// mode every data centre answers on 127.0.0.1, so no address tells them
/// apart, and there are no routers.
fn write_sites(
    out: &std::path::Path,
    scenario: &Scenario,
    routes: &[Route],
    fabric: &Fabric,
) -> Result<(), LabError> {
    if fabric.mode() != Mode::Netns {
        return Ok(());
    }
    let mut rows = BTreeSet::new();
    for r in routes {
        let (Some(site), Some(target)) =
            (scenario.sites.get(&r.dc), fabric.target(&r.probe, &r.dc))
        else {
            continue;
        };
        let ip = target.addr.ip();
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let (lat, lon) = site
            .coords
            .map_or((String::new(), String::new()), |(a, o)| {
                (a.to_string(), o.to_string())
            });
        rows.insert(format!(
            "{ip}/{prefix},{},lab,{},{},{lat},{lon}\n",
            r.dc, r.dc, site.country
        ));
    }
    let mut csv = String::from("cidr,site,provider,region,country,latitude,longitude\n");
    csv.extend(rows);
    let path = out.join("sites.csv");
    std::fs::write(&path, csv).map_err(|source| LabError::Output {
        path: path.clone(),
        source,
    })?;
    let mut hops = String::from("start,end,country\n");
    for r in fabric.routers() {
        hops.push_str(&format!("{},{},{}\n", r.addr, r.addr, r.hop.country));
    }
    let path = out.join("hop-countries.csv");
    std::fs::write(&path, hops).map_err(|source| LabError::Output { path, source })
}

/// Every path the run needs, probe by probe, each probe's data centres
/// in name order (which fixes each path's seed).
fn routes_of(scenario: &Scenario, phases: &[&Phase]) -> Result<Vec<Route>, LabError> {
    let mut routes = Vec::new();
    for (i, (country, _, probe)) in scenario.all_probes().enumerate() {
        let mut dcs: Vec<&str> = phases
            .iter()
            .flat_map(|p| p.targets_of(country, scenario))
            .collect();
        dcs.sort();
        dcs.dedup();
        for (j, dc) in dcs.into_iter().enumerate() {
            let no_path = || LabError::NoPath {
                country: country.to_string(),
                datacenter: dc.to_string(),
            };
            let spec = scenario.path_of(country, probe, dc).ok_or_else(no_path)?;
            let segments = scenario
                .segments_of(country, probe, dc)
                .ok_or_else(no_path)?;
            routes.push(Route {
                probe: probe.name.clone(),
                dc: dc.to_string(),
                spec,
                hops: scenario.hops_of(country, dc).to_vec(),
                segments,
                seed: scenario.seed ^ ((i as u64) << 32) ^ j as u64,
            });
        }
    }
    Ok(routes)
}

/// A probe's targets (where the fabric lets it reach each data centre)
/// and the scenario's sync, as probe configuration.
fn probe_toml(fabric: &Fabric, routes: &[Route], scenario: &Scenario, probe: &str) -> String {
    let mut toml =
        String::from("# Written by `vantage lab`: what this simulated country's probe measures.\n");
    for r in routes.iter().filter(|r| r.probe == probe) {
        let (Some(target), Some(responder)) =
            (fabric.target(probe, &r.dc), fabric.responder(&r.dc))
        else {
            continue;
        };
        toml.push_str(&format!(
            "\n[[target]]\nname = \"{}\"\naddress = \"{}\"\nstamp_port = {}\nserver_name = \"localhost\"\npin = \"{}\"\n# One kernel, one clock: one-way delays need no sync.\nshared_clock = true\n",
            r.dc,
            target.addr,
            target.stamp_port,
            responder.fingerprint()
        ));
    }
    toml.push_str("\n[sync]\n");
    toml.push_str(&toml::to_string(&scenario.sync).unwrap_or_default());
    toml
}

/// How often the lab's probes poll for their campaign: a phase switch
/// reaches them well within one window.
const FLEET_POLL: Duration = Duration::from_secs(1);

/// A lab probe's output directory: under its name (the country, or
/// `IN-wifi` when the country has probes of its own).
fn dir_of(options: &LabOptions, probe: &str) -> PathBuf {
    options.out.join(probe)
}

/// The rates every lab probe measures at: cold handshakes at 4/s (a
/// probe's default is 0.5/s) so a short run has enough samples for
/// intervals, and a path trace every 2 s on average (a probe's default
/// is every 10 minutes; a trace through a silent router takes seconds)
/// so a short run has traces in most windows; the
/// lab's `--rate` wins.
fn lab_rates(options: &LabOptions) -> Vec<String> {
    ["quic_handshake=4", "tcp_connect=4", "path_trace=0.5"]
        .into_iter()
        .map(String::from)
        .chain(options.rates.iter().cloned())
        .collect()
}

/// What the lab's probes measure: every responder metric and the
/// one-way delays (the lab's ends share one clock), but in relay mode
/// none it cannot emulate (`tcp_connect`: the kernel's handshake would
/// end at the relay). Those are not measured at all, so no output of the
/// run (series.csv, batches, the collector's /metrics) can show them as
/// figures.
fn lab_metrics(mode: Mode) -> Vec<String> {
    vantage_probe::RESPONDER_METRICS
        .iter()
        .chain(&vantage_probe::ONE_WAY_METRICS)
        .chain(&vantage_probe::PATH_METRICS)
        .filter(|m| mode == Mode::Netns || !vantage_reports::RELAY_NOT_EMULATED.contains(m))
        .map(|m| m.name().to_string())
        .collect()
}

/// A country's campaign: its targets and sync, the lab's window and rates.
fn campaign_body(options: &LabOptions, mode: Mode, targets_and_sync: &str) -> String {
    // A later --rate of one metric replaces an earlier: TOML keeps one.
    let by_metric: BTreeMap<String, String> = lab_rates(options)
        .iter()
        .filter_map(|r| r.split_once('='))
        .map(|(m, r)| (m.to_string(), r.to_string()))
        .collect();
    let mut rates = String::from("[rates]\n");
    for (metric, rate) in by_metric {
        rates.push_str(&format!("{metric} = {rate}\n"));
    }
    let metrics = format!("metrics = {:?}\n", lab_metrics(mode));
    format!(
        "window = \"{}ms\"\n{metrics}{rates}{targets_and_sync}",
        options.window.as_millis()
    )
}

/// Stores `campaign` (checked as a probe would run it) and assigns it to
/// `probe_id`, as `vantage campaign set` and `assign` do. A new campaign
/// starts in `phase`, from now: its probes label every window with it
/// until a cut-over.
fn offer_campaign(
    db: Option<&vantage_collector::StoreLocation>,
    campaign: &str,
    body: &str,
    probe_id: &str,
    phase: &str,
) -> Result<(), String> {
    let db = db.ok_or("a lab whose probes take campaigns needs a store (--db)")?;
    vantage_probe::config::check_campaign(campaign, body)
        .map_err(|e| format!("campaign {campaign}: {e}"))?;
    let mut store = db.open().map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let phases = match store.campaign_version(campaign, None) {
        Ok(Some(v)) => v.phases,
        Ok(None) => vec![vantage_store::fleet::PhaseSwitch {
            at_unix_ms: now,
            phase: phase.to_string(),
        }],
        Err(e) => return Err(e.to_string()),
    };
    store
        .put_campaign(campaign, body, &phases, now)
        .and_then(|_| {
            store.assign(
                campaign,
                &vantage_store::fleet::Assignee::Probe(probe_id.to_string()),
                now,
            )
        })
        .map_err(|e| e.to_string())
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
        limits: Default::default(),
    })
    .await
    .map_err(|e| LabError::Collector(e.to_string()))
}

/// The probe flags every lab probe has: its labels (no phase: a fleet
/// probe takes it from its campaign), id, state, run time and output,
/// and, with a store, its token for the lab's collector.
fn probe_args(
    options: &LabOptions,
    (i, country, region, probe): (usize, &String, &str, &crate::scenario::LabProbe),
    dir: PathBuf,
    (run_id, mode): (&str, Mode),
    collector: Option<&vantage_collector::Collector>,
) -> Result<ProbeArgs, LabError> {
    let scenario = &options.scenario;
    let mut labels = vec![
        "simulated=true".into(),
        format!("emulation={}", mode.label()),
    ];
    if let Some((lat, lon)) = scenario.country_coords.get(country) {
        labels.push(format!("latitude={lat}"));
        labels.push(format!("longitude={lon}"));
    }
    let mut args = ProbeArgs {
        // `emulation=relay`: TCP ends at the relay, so the kernel's
        // handshake never meets the path; reports withhold `tcp_connect`.
        labels,
        country: Some(country.clone()),
        region: (!region.is_empty()).then(|| region.to_string()),
        network: Some(probe.network.clone()),
        // Unique per run: a collector drops a (probe, sequence) it
        // already has, and each run starts its probes' sequences anew.
        probe_id: Some(if options.fleet {
            format!("lab-{}-{run_id}", probe.name.to_ascii_lowercase())
        } else {
            format!(
                "lab-{}-{}-{run_id}",
                probe.name.to_ascii_lowercase(),
                options.phase
            )
        }),
        state_dir: Some(options.out.join("state").join(&probe.name)),
        duration: Some(options.duration),
        out: Some(dir),
        quiet: true,
        seed: Some(scenario.seed.wrapping_add(i as u64)),
        ..ProbeArgs::default()
    };
    let upload_to = match (collector, &options.outside_collector) {
        (Some(c), _) => Some((c.quic_addr().to_string(), c.fingerprint().to_string())),
        (None, outside) => outside.clone(),
    };
    if let (Some((addr, pin)), Some(db)) = (upload_to, &options.db) {
        let token = vantage_collector::new_token();
        let probe_id = args.probe_id.clone().unwrap_or_default();
        db.open()
            .and_then(|mut s| s.add_token(&probe_id, &vantage_collector::hash_token(&token), 0))
            .map_err(|e| LabError::Collector(e.to_string()))?;
        args.collector = vec![addr];
        args.token = Some(token);
        args.collector_pins = vec![pin];
    }
    Ok(args)
}
