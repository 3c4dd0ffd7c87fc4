//! `vantage lab`: a scenario's phase on emulated paths, the whole demo, or
//! the default scenario printed. The orchestration is the lab crate's; this
//! module shows progress and prints results.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vantage_lab::{DemoEvent, DemoOptions, Emulation, LabOptions, Mode, Scenario};

#[derive(Subcommand, Debug)]
pub(crate) enum LabCommand {
    /// The whole story on one machine: both phases of a scenario through a collector, then the report with its claims checked.
    #[command(
        after_help = "Examples:\n  vantage lab demo --out vantage-demo\n  vantage lab demo --out vantage-demo --duration 20s\n\nIt runs the scenario's `before` and `after` phases (each for --duration) with every probe\nuploading to a collector that stores into DIR/vantage.db, then writes DIR/report/report.html\nwith the story's two claims judged:\n  IN quic_cold_request p50 decreases by >= 350ms\n  MY photosync_goodput p50 ratio between 2 and 3\nEverything is simulated and labelled so. A new demo replaces an earlier one in DIR."
    )]
    Demo(LabDemoArgs),
    /// Start a scenario's responders, emulated paths and one probe per country, for one phase.
    #[command(
        after_help = "Examples:\n  vantage lab run --phase before --duration 30s --out lab-out\n  vantage lab run --scenario my.toml --phase after --duration 2m --out lab-out\n\nEverything it writes is labelled simulated=true."
    )]
    Run(LabRunArgs),
    /// Print the built-in default scenario (a starting point for your own).
    Scenario,
}

impl LabCommand {
    pub(crate) fn quiet(&self) -> bool {
        match self {
            LabCommand::Demo(a) => a.quiet,
            LabCommand::Run(a) => a.quiet,
            LabCommand::Scenario => false,
        }
    }
}

/// Flags of `vantage lab demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct LabDemoArgs {
    /// Output directory: the store, each phase's probe output, and report/.
    #[arg(long, value_name = "DIR", default_value = "vantage-demo")]
    out: PathBuf,
    /// How long each of the two phases measures.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50s")]
    duration: Duration,
    /// Scenario file (default: the built-in Beijing → Singapore/Oregon move).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Aggregation window of the probes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    window: Duration,
    /// Attempts per second of a measurement, METRIC=RATE; repeat for more.
    #[arg(long = "rate", value_name = "METRIC=RATE")]
    rates: Vec<String>,
    /// Store into this empty SQLite file or PostgreSQL database instead of DIR/vantage.db (see `vantage collect --help` for the forms).
    #[arg(long, value_name = "FILE|URL")]
    db: Option<String>,
    /// File whose first line is the PostgreSQL password (else the URL's, else $PGPASSWORD).
    #[arg(long, value_name = "FILE", requires = "db")]
    db_password_file: Option<PathBuf>,
    /// How the paths are emulated (see `vantage lab run --help`).
    #[arg(long, value_enum, default_value = "auto")]
    emulation: EmulationArg,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

/// `--emulation`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum EmulationArg {
    /// netns when this process may make namespaces (root), else relay.
    Auto,
    /// Each probe and responder in a network namespace, every IP packet
    /// (TCP included) through the emulated path. Needs root.
    Netns,
    /// Loopback relays: UDP packet by packet, TCP as a split proxy, so
    /// tcp_connect is not emulated (and is marked so).
    Relay,
}

impl From<EmulationArg> for Emulation {
    fn from(e: EmulationArg) -> Self {
        match e {
            EmulationArg::Auto => Emulation::Auto,
            EmulationArg::Netns => Emulation::Netns,
            EmulationArg::Relay => Emulation::Relay,
        }
    }
}

/// The line that says which mode a lab runs in, and why not namespaces
/// when they were welcome.
fn mode_line(mode: Mode, fallback: Option<&str>) -> String {
    match fallback {
        Some(why) => format!("lab: {} ({why})", mode.describe()),
        None => format!("lab: {}", mode.describe()),
    }
}

/// `--db` and `--db-password-file` as a store location, when given.
fn location(
    db: Option<&str>,
    password_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<vantage_collector::StoreLocation>> {
    db.map(|db| vantage_collector::StoreLocation::parse(db, password_file))
        .transpose()
        .map_err(Into::into)
}

/// Flags of `vantage lab run`.
#[derive(clap::Args, Debug)]
pub(crate) struct LabRunArgs {
    /// Scenario file (default: the built-in Beijing → Singapore/Oregon move).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Phase to run, as named in the scenario (the default has before and after).
    #[arg(long)]
    phase: String,
    /// How long the probes measure.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Output directory: one subdirectory per country.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Aggregation window of the probes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    window: Duration,
    /// Attempts per second of a measurement, METRIC=RATE; repeat for more.
    #[arg(long = "rate", value_name = "METRIC=RATE")]
    rates: Vec<String>,
    /// Also run a collector storing into this SQLite file or PostgreSQL database; the probes upload to it (then `vantage report`).
    #[arg(long, value_name = "FILE|URL")]
    db: Option<String>,
    /// File whose first line is the PostgreSQL password (else the URL's, else $PGPASSWORD).
    #[arg(long, value_name = "FILE", requires = "db")]
    db_password_file: Option<PathBuf>,
    /// How the paths are emulated: netns (every probe and responder in a
    /// network namespace, every IP packet through the path; needs root),
    /// relay (loopback relays; TCP is not emulated) or auto (netns when
    /// permitted).
    #[arg(long, value_enum, default_value = "auto")]
    emulation: EmulationArg,
    /// Upload to this collector, running apart from the lab, instead of
    /// starting one; --db is its store, where the probes' tokens go.
    #[arg(long, value_name = "HOST:PORT", requires_all = ["db", "collector_pin"])]
    collector: Option<String>,
    /// The outside collector's certificate fingerprint, as `vantage collect` prints.
    #[arg(long, value_name = "sha256:HEX", requires = "collector")]
    collector_pin: Option<String>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

pub(crate) async fn lab(command: LabCommand) -> anyhow::Result<()> {
    match command {
        LabCommand::Run(args) => lab_run(args).await,
        LabCommand::Demo(args) => lab_demo(args).await,
        LabCommand::Scenario => {
            print!("{}", vantage_lab::scenario::DEFAULT_SCENARIO);
            Ok(())
        }
    }
}

fn scenario(path: Option<&PathBuf>) -> anyhow::Result<Scenario> {
    Ok(match path {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default_scenario(),
    })
}

async fn lab_run(args: LabRunArgs) -> anyhow::Result<()> {
    let options = LabOptions {
        scenario: scenario(args.scenario.as_ref())?,
        phase: args.phase.clone(),
        duration: args.duration,
        out: args.out.clone(),
        window: args.window,
        rates: args.rates.clone(),
        db: location(args.db.as_deref(), args.db_password_file.as_deref())?,
        also_measure: Vec::new(),
        fleet: false,
        outside_collector: args.collector.clone().zip(args.collector_pin.clone()),
        emulation: args.emulation.into(),
    };
    if !args.quiet {
        eprintln!(
            "SIMULATED: lab scenario `{}`, phase `{}`, {} on emulated paths…",
            options.scenario.name,
            args.phase,
            humantime::format_duration(args.duration)
        );
    }
    let stop = vantage_probe::stop_on_signal();
    let lab = vantage_lab::start_lab(options, stop).await?;
    if !args.quiet {
        eprintln!("{}", mode_line(lab.mode(), lab.fallback_reason()));
        let namespaces = lab.namespaces();
        if !namespaces.is_empty() {
            eprintln!(
                "lab: {} namespaces (ip netns list), removed when the lab stops",
                namespaces.len()
            );
        }
    }
    let summary = lab.finish().await?;
    // The run's own timing, beside its series: a degraded run says so in
    // its output whatever the terminal showed.
    let timing_file = args.out.join("lab-timing.json");
    std::fs::write(&timing_file, serde_json::to_vec_pretty(&summary.timing)?)
        .with_context(|| format!("writing {}", timing_file.display()))?;
    if summary.timing.degraded {
        eprintln!("{}", summary.timing.sentence());
    }
    if !args.quiet {
        println!(
            "SIMULATED (vantage lab, {} mode): phase {}",
            summary.mode.label(),
            args.phase
        );
        // The relay mode cannot emulate these: marked, never shown.
        let not_emulated: &[vantage_wire::Metric] = match summary.mode {
            Mode::Relay => &vantage_reports::RELAY_NOT_EMULATED,
            Mode::Netns => &[],
        };
        for (probe, run) in &summary.probes {
            println!("\nprobe {probe}");
            let shown: Vec<_> = run
                .totals
                .iter()
                .filter(|s| !not_emulated.contains(&s.metric))
                .cloned()
                .collect();
            print!("{}", vantage_probe::output::render_table(&shown, None));
        }
        if !not_emulated.is_empty() {
            println!(
                "\nNOT EMULATED in the lab's relay mode (TCP ends at the relay, so the handshake never crosses the path; no router stands on it), not measured: {}",
                not_emulated.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
            );
        }
        println!("\n{}", summary.timing.sentence());
        println!(
            "output: {}/<country>/series.csv (labelled simulated=true)",
            args.out.display()
        );
    }
    Ok(())
}

fn progress_bar(quiet: bool, total: Duration) -> indicatif::ProgressBar {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total.as_secs().max(1))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} s  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

async fn lab_demo(args: LabDemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        scenario: scenario(args.scenario.as_ref())?,
        duration: args.duration,
        window: args.window,
        rates: args.rates.clone(),
        out: args.out.clone(),
        db: location(args.db.as_deref(), args.db_password_file.as_deref())?,
        emulation: args.emulation.into(),
    };
    let (baseline, candidate) = vantage_lab::demo::demo_phases(&options.scenario)?;
    if !args.quiet {
        eprintln!(
            "SIMULATED: Vantage lab demo, scenario `{}`: phase `{baseline}` then `{candidate}`, {} each, on emulated paths",
            options.scenario.name,
            humantime::format_duration(args.duration)
        );
    }
    let bar = progress_bar(args.quiet, args.duration * 2);
    // The phase running and when it began, for the ticker below.
    let phase_clock: Arc<Mutex<Option<(u64, Instant)>>> = Arc::new(Mutex::new(None));
    let mut on_event = {
        let (bar, phase_clock) = (bar.clone(), phase_clock.clone());
        let secs = args.duration.as_secs();
        let quiet = args.quiet;
        move |event: DemoEvent| match event {
            DemoEvent::Mode { mode, fallback } => {
                if !quiet {
                    // Not bar.println: a bar drawn nowhere (output not a
                    // terminal) prints nothing.
                    bar.suspend(|| eprintln!("{}", mode_line(mode, fallback.as_deref())));
                }
            }
            DemoEvent::PhaseStarted { index, phase } => {
                bar.set_message(format!("phase {phase}: measuring"));
                if let Ok(mut c) = phase_clock.lock() {
                    *c = Some((secs * index as u64, Instant::now()));
                }
            }
            DemoEvent::PhaseDone { phase, probes } => {
                bar.set_message(format!("phase {phase}: done ({probes} probes)"));
            }
            DemoEvent::WritingReport => {
                if let Ok(mut c) = phase_clock.lock() {
                    *c = None;
                }
                bar.set_message("writing the report");
            }
        }
    };
    let ticker = {
        let bar = bar.clone();
        let secs = args.duration.as_secs();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some((offset, started)) = phase_clock.lock().ok().and_then(|c| *c) {
                    bar.set_position(offset + started.elapsed().as_secs().min(secs));
                }
            }
        }
    };
    let stop = vantage_probe::stop_on_signal();
    let outcome = tokio::select! {
        o = vantage_lab::run_demo(options, stop, &mut on_event) => o,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            bar.abandon_with_message("stopped");
            return Err(e.into());
        }
    };
    bar.finish_and_clear();
    let printed = vantage_reports::print::print_report(&outcome.written.html);
    if !args.quiet {
        print!("{}", outcome.written.summary);
        println!(
            "\nSIMULATED demo report: {}\n(also report.json, comparison.csv, summary.txt and charts/ in {}; the store is {})",
            outcome.written.html.display(),
            outcome.report_dir.display(),
            outcome.db.place()
        );
        crate::report::say_printed(&printed);
    }
    Ok(())
}
