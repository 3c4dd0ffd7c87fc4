//! `vantage lab demo`: the whole story on one machine. A scenario's two
//! phases run one after the other through one collector into one SQLite
//! store, then the report is built from that store with the story's claims
//! judged. The front end only shows progress: [`run_demo`] tells it what
//! happens through [`DemoEvent`]s.

use crate::fabric::{Emulation, Mode};
use crate::run::{start_lab, LabError, LabOptions};
use crate::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use vantage_collector::StoreLocation;
use vantage_reports::claim::{Claim, ClaimError};
use vantage_reports::{
    Evidence, GatherError, ReportOptions, ResolutionChoice, Role, WriteError, WrittenReport,
};
use vantage_store::{Selector, SelectorError, StoreError};

/// The story's claims, judged by every demo.
pub const DEMO_CLAIMS: [&str; 2] = [
    "IN quic_cold_request p50 decreases by >= 350ms",
    "MY photosync_goodput p50 ratio between 2 and 3",
];

/// The story's data-protection claims, judged when the lab ran in
/// namespaces (where each data centre has an address of its own and
/// paths have routers).
pub const DEMO_SHARE_CLAIMS: [&str; 2] = [
    "IN served_from CN share <= 1%",
    "IN path_crosses CN share decreases to <= 1%",
];

/// What a demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The scenario; its `before` and `after` phases (or its first two).
    pub scenario: Scenario,
    /// How long each phase measures.
    pub duration: Duration,
    /// The probes' aggregation window.
    pub window: Duration,
    /// Rates, `METRIC=RATE`, as the probe takes them.
    pub rates: Vec<String>,
    /// Output directory: `vantage.db`, `phases/PHASE/`, `report/`.
    pub out: PathBuf,
    /// The store instead of `OUT/vantage.db` (a PostgreSQL database, say);
    /// it must hold no batches, since the report reads every one.
    pub db: Option<StoreLocation>,
    /// Relays, namespaces, or namespaces where this process may make them.
    pub emulation: Emulation,
}

/// What the demo is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoEvent {
    /// The lab's paths are up in this mode; with a reason when namespaces
    /// were welcome but could not be made.
    Mode {
        /// The mode.
        mode: Mode,
        /// Why not namespaces, when `Auto` fell back to relays.
        fallback: Option<String>,
    },
    /// Phase number `index` (0 or 1) starts measuring.
    PhaseStarted {
        /// 0 for the baseline, 1 for the candidate.
        index: usize,
        /// Its name.
        phase: String,
    },
    /// A phase ended with this many probes measuring.
    PhaseDone {
        /// Its name.
        phase: String,
        /// Countries that ran a probe.
        probes: usize,
    },
    /// Both phases are stored; the report is being written.
    WritingReport,
}

/// What a demo produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The baseline phase.
    pub baseline: String,
    /// The candidate phase.
    pub candidate: String,
    /// The store both phases went into.
    pub db: StoreLocation,
    /// Where the report went.
    pub report_dir: PathBuf,
    /// The report's files and terminal summary.
    pub written: WrittenReport,
    /// The lab's mode.
    pub mode: Mode,
}

/// Why a demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The scenario does not have two phases to compare.
    #[error("scenario `{scenario}` has {phases} phase(s); the demo compares two (ideally named before and after)")]
    Phases {
        /// The scenario's name.
        scenario: String,
        /// How many phases it has.
        phases: usize,
    },
    /// The output directory could not be prepared.
    #[error("{path}: {source}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A phase failed.
    #[error(transparent)]
    Lab(Box<LabError>),
    /// A signal stopped the demo.
    #[error("stopped by a signal during phase {phase}")]
    Stopped {
        /// The phase that was running.
        phase: String,
    },
    /// A demo claim or selector does not parse (a bug in the demo itself).
    #[error("demo claim or selector: {0}")]
    Grammar(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lab's own site map or hop countries do not load (a bug in the lab).
    #[error("the lab's site map: {0}")]
    Sites(#[from] vantage_geo::GeoError),
    /// The store given with `--db` already holds batches.
    #[error("{place} already holds {batches} batches; the demo's report reads every batch in its store, so give it an empty database (or leave out --db to use OUT/vantage.db)")]
    StoreNotEmpty {
        /// The store.
        place: String,
        /// Batches it holds.
        batches: u64,
    },
    /// The evidence could not be gathered.
    #[error(transparent)]
    Gather(#[from] GatherError),
    /// Nothing reached the store.
    #[error("the collector stored {baseline} baseline and {candidate} candidate series; nothing to compare (see the probes' output in {})", phases_dir.display())]
    Empty {
        /// Baseline series stored.
        baseline: usize,
        /// Candidate series stored.
        candidate: usize,
        /// Where the probes wrote their own output.
        phases_dir: PathBuf,
    },
    /// The phase switch was refused.
    #[error("cut-over: {0}")]
    CutOver(String),
    /// The report could not be written.
    #[error("writing the report: {0}")]
    Report(#[from] WriteError),
}

impl From<LabError> for DemoError {
    fn from(e: LabError) -> Self {
        DemoError::Lab(Box::new(e))
    }
}

impl From<ClaimError> for DemoError {
    fn from(e: ClaimError) -> Self {
        DemoError::Grammar(e.to_string())
    }
}

impl From<SelectorError> for DemoError {
    fn from(e: SelectorError) -> Self {
        DemoError::Grammar(e.to_string())
    }
}

/// The two phases a demo compares: `before` and `after` when the scenario
/// has both, else its first two.
pub fn demo_phases(scenario: &Scenario) -> Result<(String, String), DemoError> {
    let phases: Vec<String> =
        if scenario.phases.contains_key("before") && scenario.phases.contains_key("after") {
            vec!["before".into(), "after".into()]
        } else {
            scenario.phases.keys().take(2).cloned().collect()
        };
    match <[String; 2]>::try_from(phases) {
        Ok([baseline, candidate]) => Ok((baseline, candidate)),
        Err(phases) => Err(DemoError::Phases {
            scenario: scenario.name.clone(),
            phases: phases.len(),
        }),
    }
}

/// The cut-over: every campaign switches to `phase` now, through the
/// code `vantage campaign phase` runs.
fn cut_over(db: &StoreLocation, campaigns: &[String], phase: &str) -> Result<(), DemoError> {
    let mut store = db.open()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for campaign in campaigns {
        vantage_store::fleet::switch_phase(store.as_mut(), campaign, phase, now, now)
            .map_err(|e| DemoError::CutOver(format!("campaign {campaign}: {e}")))?;
    }
    Ok(())
}

/// Removes an earlier demo's store, so a new demo starts empty.
fn fresh_store(out: &Path) -> Result<PathBuf, DemoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Output { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    for stale in ["vantage.db", "vantage.db-wal", "vantage.db-shm"] {
        let path = out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(out.join("vantage.db"))
}

/// Runs both phases into one store, then writes the report into
/// `OUT/report`, telling `on_event` what it is doing.
pub async fn run_demo(
    options: DemoOptions,
    stop: watch::Receiver<bool>,
    on_event: &mut (dyn FnMut(DemoEvent) + Send),
) -> Result<DemoOutcome, DemoError> {
    let (baseline, candidate) = demo_phases(&options.scenario)?;
    let db = match &options.db {
        None => StoreLocation::Sqlite(fresh_store(&options.out)?),
        Some(db) => {
            let batches = db.open()?.batch_count()?;
            if batches > 0 {
                return Err(DemoError::StoreNotEmpty {
                    place: db.place(),
                    batches,
                });
            }
            db.clone()
        }
    };
    // Every probe measures both phases' data centres all along and takes
    // its country's campaign from the lab's collector, as a fleet's probes
    // do; the cut-over is `vantage campaign phase`'s switch, which moves
    // the phase label at a window boundary, not the probes.
    let probes_dir = options.out.join("probes");
    // An earlier demo's probes' state would hold its campaigns' later
    // versions, and a probe refuses to go back to version 1.
    if probes_dir.exists() {
        std::fs::remove_dir_all(&probes_dir).map_err(|source| DemoError::Output {
            path: probes_dir.clone(),
            source,
        })?;
    }
    let lab = start_lab(
        LabOptions {
            scenario: options.scenario.clone(),
            phase: baseline.clone(),
            also_measure: vec![candidate.clone()],
            duration: options.duration * 2,
            out: probes_dir.clone(),
            window: options.window,
            rates: options.rates.clone(),
            db: Some(db.clone()),
            fleet: true,
            outside_collector: None,
            emulation: options.emulation,
        },
        stop.clone(),
    )
    .await?;
    let mode = lab.mode();
    on_event(DemoEvent::Mode {
        mode,
        fallback: lab.fallback_reason().map(String::from),
    });
    on_event(DemoEvent::PhaseStarted {
        index: 0,
        phase: baseline.clone(),
    });
    let mut watch_stop = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(options.duration) => {}
        _ = watch_stop.wait_for(|s| *s) => {}
    }
    let probes = lab.campaigns().len();
    if !*stop.borrow() {
        cut_over(&db, lab.campaigns(), &candidate)?;
        on_event(DemoEvent::PhaseDone {
            phase: baseline.clone(),
            probes,
        });
        on_event(DemoEvent::PhaseStarted {
            index: 1,
            phase: candidate.clone(),
        });
    }
    let lab_timing = lab.finish().await?.timing;
    if lab_timing.degraded {
        tracing::warn!("{}", lab_timing.sentence());
    }
    if *stop.borrow() {
        return Err(DemoError::Stopped {
            phase: baseline.clone(),
        });
    }
    on_event(DemoEvent::PhaseDone {
        phase: candidate.clone(),
        probes,
    });
    on_event(DemoEvent::WritingReport);
    let claims = DEMO_CLAIMS
        .iter()
        .map(|t| t.parse::<Claim>())
        .collect::<Result<Vec<_>, _>>()?;
    // Each side is the data centres that served in its phase.
    let serving = |phase: &str| {
        let mut dcs: Vec<&str> = options
            .scenario
            .phases
            .get(phase)
            .map(|p| {
                options
                    .scenario
                    .countries
                    .keys()
                    .flat_map(|c| p.targets_of(c, &options.scenario))
                    .collect()
            })
            .unwrap_or_default();
        dcs.sort();
        dcs.dedup();
        dcs.join("|")
    };
    let report_options = ReportOptions {
        baseline: format!("phase={baseline},target={}", serving(&baseline)),
        candidate: format!("phase={candidate},target={}", serving(&candidate)),
        claims,
        lab_timing: Some(lab_timing),
        ..Default::default()
    };
    let mut store = db.open()?;
    let evidence = Evidence::gather_at(
        store.as_mut(),
        &report_options.group_by,
        &report_options.baseline.parse::<Selector>()?,
        &report_options.candidate.parse::<Selector>()?,
        ResolutionChoice::Auto,
        report_options.min_series,
    )?;
    let (nb, nc) = (
        evidence.series(Role::Baseline),
        evidence.series(Role::Candidate),
    );
    if nb == 0 || nc == 0 {
        return Err(DemoError::Empty {
            baseline: nb,
            candidate: nc,
            phases_dir: probes_dir,
        });
    }
    let mut report = vantage_reports::build_report_from(&evidence, &report_options);
    if mode == Mode::Netns {
        report.where_served = Some(where_served(store.as_mut(), &probes_dir, &report_options)?);
    }
    let report_dir = options.out.join("report");
    let written = vantage_reports::write_report_from(&report, &evidence, &report_dir)?;
    Ok(DemoOutcome {
        baseline,
        candidate,
        db,
        report_dir,
        written,
        mode,
    })
}

/// Where the story's users were served and which countries their paths
/// crossed, by the lab's own site map and router countries.
fn where_served(
    store: &mut dyn vantage_store::Store,
    lab_out: &Path,
    options: &ReportOptions,
) -> Result<vantage_reports::serving::WhereServed, DemoError> {
    use vantage_reports::serving::{gather_where, ShareClaim};
    let sites = vantage_geo::SiteMap::load(&[lab_out.join("sites.csv")])?;
    let hops = vantage_geo::HopDatasets::load(&[lab_out.join("hop-countries.csv")])?;
    let claims = DEMO_SHARE_CLAIMS
        .iter()
        .map(|t| t.parse::<ShareClaim>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DemoError::Grammar(e.to_string()))?;
    Ok(gather_where(
        store,
        [
            &options.baseline.parse::<Selector>()?,
            &options.candidate.parse::<Selector>()?,
        ],
        &sites,
        &hops,
        &claims,
        options.confidence,
        options.min_probes,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_compares_before_with_after_or_the_first_two_phases() {
        let default = Scenario::default_scenario();
        assert_eq!(
            demo_phases(&default).unwrap(),
            ("before".into(), "after".into())
        );
        let mut one = default.clone();
        let first = one.phases.keys().next().cloned().unwrap();
        one.phases.retain(|k, _| *k == first);
        assert!(matches!(
            demo_phases(&one),
            Err(DemoError::Phases { phases: 1, .. })
        ));
    }
}
