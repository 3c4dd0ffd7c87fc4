//! `vantage`: the command-line front end. It only composes the library
//! crates: `serve` runs a responder, `probe` runs the probe.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use vantage_responder::{Identity, Limits, Responder, ResponderConfig};

/// Vantage: measure what moving a service between data centres did to its users.
#[derive(Parser, Debug)]
#[command(name = "vantage", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a responder: QUIC echo, HTTPS echo and STAMP reflector on one address.
    #[command(
        after_help = "Example:\n  vantage serve --bind 0.0.0.0 --cert-dir /var/lib/vantage/cert --name dc1.example.net\n\nIt prints the certificate fingerprint; give it to probes with --pin."
    )]
    Serve(ServeArgs),
    /// Measure request latency against data centres.
    #[command(
        after_help = "Examples:\n  vantage probe --local --duration 10s --out ./probe-out\n  vantage probe --target singapore=sg.example.net:4433 --pin sha256:… --country MY --phase after --out ./out\n  vantage probe --url api=https://api.example.com/v1/ping --url cdn=https://cdn.example.com/p.jpg --country IN"
    )]
    Probe(Box<vantage_probe::ProbeArgs>),
    /// Run a collector: receive batches from probes (QUIC, HTTPS fallback) into a database.
    #[command(
        after_help = "Examples:\n  vantage collect --listen 0.0.0.0:4434 --db vantage.db --cert-dir /var/lib/vantage/collector-cert\n  vantage collect token add --db vantage.db --probe vm-mumbai-1\n  vantage collect token revoke --db vantage.db --probe vm-mumbai-1"
    )]
    Collect(CollectArgs),
    /// Select stored series, merge them by group, and write CSV, JSON lines or an HdrHistogram log.
    #[command(
        after_help = "Examples:\n  vantage export --db vantage.db --select country=IN,phase=before --format csv\n  vantage export --db vantage.db --select metric=udp_rtt --group-by country,target --format hlog > udp.hlog"
    )]
    Export(ExportArgs),
    /// Compare a baseline with a candidate, with confidence intervals, and judge claims.
    #[command(
        after_help = "Examples:\n  vantage report --db vantage.db --baseline phase=before --candidate phase=after --out report \\\n      --claim 'IN quic_cold_request p50 decreases by >= 350ms'\n  vantage report --db vantage.db --baseline target=beijing --candidate target=singapore --group-by country --out report\n\nClaim grammar: SUBJECT METRIC pNN (decreases|increases) by OP NUMBER(us|ms|s|%), or SUBJECT METRIC pNN ratio OP NUMBER, or ... ratio between A and B."
    )]
    Report(ReportArgs),
    /// Emulated network paths on this machine: run a scenario's phase end to end.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(clap::Args, Debug)]
struct CollectArgs {
    #[command(subcommand)]
    command: Option<CollectCommand>,
    /// Address for QUIC (UDP) and HTTPS (TCP); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:4434")]
    listen: std::net::SocketAddr,
    /// SQLite database file (created if missing).
    #[arg(long, value_name = "FILE", default_value = "vantage.db")]
    db: PathBuf,
    /// Directory where a generated certificate is kept.
    #[arg(long, value_name = "DIR", default_value = "vantage-collector-cert")]
    cert_dir: PathBuf,
    /// Certificate chain PEM file (instead of a generated one); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key PEM file for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// DNS names and IP addresses for a generated certificate; repeat for more.
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
    names: Vec<String>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print only errors.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum CollectCommand {
    /// Probe tokens: each probe has its own; the collector keeps only hashes.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a token for a probe and print it (once: only its hash is kept).
    Add {
        /// The probe's id (its --probe-id).
        #[arg(long)]
        probe: String,
        /// Database file.
        #[arg(long, value_name = "FILE", default_value = "vantage.db")]
        db: PathBuf,
    },
    /// Revoke every token of a probe, at once.
    Revoke {
        /// The probe's id.
        #[arg(long)]
        probe: String,
        /// Database file.
        #[arg(long, value_name = "FILE", default_value = "vantage.db")]
        db: PathBuf,
    },
    /// List token hashes and their probes.
    List {
        /// Database file.
        #[arg(long, value_name = "FILE", default_value = "vantage.db")]
        db: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    /// Database file.
    #[arg(long, value_name = "FILE", default_value = "vantage.db")]
    db: PathBuf,
    /// Which series: key=value[,key=value…] over labels and probe, campaign, target, metric.
    #[arg(long, default_value = "")]
    select: String,
    /// Grouping keys, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["country".to_string(), "target".to_string(), "metric".to_string()])]
    group_by: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: ExportFormat,
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    /// Database file.
    #[arg(long, value_name = "FILE", default_value = "vantage.db")]
    db: PathBuf,
    /// Baseline selector, such as phase=before or target=beijing.
    #[arg(long)]
    baseline: String,
    /// Candidate selector, such as phase=after or target=singapore.
    #[arg(long)]
    candidate: String,
    /// Grouping keys besides the metric, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["country".to_string()])]
    group_by: Vec<String>,
    /// A claim to judge; repeat for more.
    #[arg(long = "claim", value_name = "CLAIM")]
    claims: Vec<String>,
    /// A file of claims, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    claims_file: Option<PathBuf>,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Seed of the resampling (reports are reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory: report.html (self-contained), report.json, comparison.csv, summary.txt, charts/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    /// One row per group with count, loss and percentiles.
    Csv,
    /// The same rows as JSON lines.
    Json,
    /// The merged histograms as an HdrHistogram interval log.
    Hlog,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
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

#[derive(clap::Args, Debug)]
struct LabDemoArgs {
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
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

/// The story's claims, checked by `vantage lab demo`.
const DEMO_CLAIMS: [&str; 2] = [
    "IN quic_cold_request p50 decreases by >= 350ms",
    "MY photosync_goodput p50 ratio between 2 and 3",
];

#[derive(clap::Args, Debug)]
struct LabRunArgs {
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
    /// Also run a collector storing into this SQLite file; the probes upload to it (then `vantage report`).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// QUIC (UDP) and HTTPS (TCP) port.
    #[arg(long, default_value_t = vantage_responder::DEFAULT_PORT)]
    port: u16,
    /// HTTPS (TCP) port, when it differs from --port.
    #[arg(long)]
    https_port: Option<u16>,
    /// STAMP (UDP) port; the IANA port 862 needs privileges.
    #[arg(long, default_value_t = vantage_responder::DEFAULT_STAMP_PORT)]
    stamp_port: u16,
    /// Directory where a generated certificate is kept (made on first start).
    #[arg(long, value_name = "DIR", default_value = "vantage-cert")]
    cert_dir: PathBuf,
    /// Certificate chain PEM file (instead of a generated one); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key PEM file for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// DNS names and IP addresses for a generated certificate; repeat for more.
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
    names: Vec<String>,
    /// Largest response a request may ask for, bytes.
    #[arg(long, default_value_t = vantage_responder::DEFAULT_MAX_RESPONSE_BYTES)]
    max_response_bytes: u32,
    /// Most concurrent connections per protocol.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print only errors.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::Serve(a) => a.quiet,
        Command::Probe(a) => a.quiet,
        Command::Lab {
            command: LabCommand::Run(a),
        } => a.quiet,
        Command::Lab {
            command: LabCommand::Demo(a),
        } => a.quiet,
        Command::Lab { .. } => false,
        Command::Collect(a) => a.quiet,
        Command::Export(_) => true,
        Command::Report(a) => a.quiet,
    };
    vantage_probe::init_logging(quiet);
    // The probe runs on one thread, as `vantage-probe` does: fewer
    // cross-core wake-ups in every measured latency. The responder uses two.
    let runtime = match &cli.command {
        Command::Probe(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Command::Serve(_)
        | Command::Lab { .. }
        | Command::Collect(_)
        | Command::Export(_)
        | Command::Report(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let result = runtime
        .context("starting the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    Command::Serve(args) => serve(args).await,
                    Command::Probe(args) => probe(*args).await,
                    Command::Collect(args) => collect(args).await,
                    Command::Export(args) => export(args),
                    Command::Report(args) => report(args),
                    Command::Lab {
                        command: LabCommand::Run(args),
                    } => lab_run(args).await,
                    Command::Lab {
                        command: LabCommand::Demo(args),
                    } => lab_demo(args).await,
                    Command::Lab {
                        command: LabCommand::Scenario,
                    } => {
                        print!("{}", vantage_lab::scenario::DEFAULT_SCENARIO);
                        Ok(())
                    }
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if matches!(
                e.downcast_ref::<vantage_probe::RunError>(),
                Some(vantage_probe::RunError::BrokenPipe)
            ) {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let identity = load_identity(
        args.cert.as_deref(),
        args.key.as_deref(),
        &args.cert_dir,
        &args.names,
    )?;
    let max_response_bytes = args
        .max_response_bytes
        .min(vantage_responder::DEFAULT_MAX_RESPONSE_BYTES);
    let config = ResponderConfig {
        bind: args.bind,
        quic_port: args.port,
        https_port: args.https_port.unwrap_or(args.port),
        stamp_port: args.stamp_port,
        identity,
        limits: Limits {
            max_response_bytes,
            max_connections: args.max_connections,
            ..Limits::default()
        },
    };
    let responder = Responder::start(config).await?;
    if !args.quiet {
        println!("vantage responder");
        println!(
            "  quic   {} (ALPN vantage/1; h3: HTTP/3 GET /echo?bytes=N, /health)",
            responder.quic_addr()
        );
        println!(
            "  https  {} (GET /echo?bytes=N, /health)",
            responder.https_addr()
        );
        println!("  stamp  {} (RFC 8762 reflector)", responder.stamp_addr());
        println!("  certificate {}", responder.fingerprint());
        println!("probe with: --pin {}", responder.fingerprint());
    }
    run_until_stopped(args.duration).await;
    let stats = responder.stats();
    responder.shutdown().await;
    if !args.quiet {
        let line: Vec<String> = stats
            .pairs()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("served: {}", line.join(" "));
    }
    Ok(())
}

async fn probe(args: vantage_probe::ProbeArgs) -> anyhow::Result<()> {
    let config = args.into_config().context("invalid probe configuration")?;
    let stop = vantage_probe::stop_on_signal();
    vantage_probe::run(config, stop).await?;
    Ok(())
}

async fn lab_run(args: LabRunArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => vantage_lab::Scenario::load(path)?,
        None => vantage_lab::Scenario::default_scenario(),
    };
    let options = vantage_lab::LabOptions {
        scenario,
        phase: args.phase.clone(),
        duration: args.duration,
        out: args.out.clone(),
        window: args.window,
        rates: args.rates.clone(),
        db: args.db.clone(),
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
    let summary = vantage_lab::run_lab(options, stop).await?;
    if !args.quiet {
        println!("SIMULATED (vantage lab): phase {}", args.phase);
        for (country, run) in &summary.countries {
            println!("\ncountry {country}");
            print!("{}", vantage_probe::output::render_table(&run.totals, None));
        }
        let (p50, p99, n) = summary.relay_lateness;
        println!(
            "\nrelay release lateness: p50 {:.1} µs, p99 {:.1} µs over {n} packets",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
        println!(
            "output: {}/<country>/series.csv (labelled simulated=true)",
            args.out.display()
        );
    }
    Ok(())
}

async fn lab_demo(args: LabDemoArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => vantage_lab::Scenario::load(path)?,
        None => vantage_lab::Scenario::default_scenario(),
    };
    let phases: Vec<String> =
        if scenario.phases.contains_key("before") && scenario.phases.contains_key("after") {
            vec!["before".into(), "after".into()]
        } else {
            scenario.phases.keys().take(2).cloned().collect()
        };
    let [baseline, candidate] = phases.as_slice() else {
        anyhow::bail!(
            "scenario `{}` has {} phase(s); the demo compares two (ideally named before and after)",
            scenario.name,
            phases.len()
        );
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let db = args.out.join("vantage.db");
    for stale in ["vantage.db", "vantage.db-wal", "vantage.db-shm"] {
        let path = args.out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the earlier demo's {}", path.display()))?;
        }
    }
    let total = args.duration * 2;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        eprintln!(
            "SIMULATED: Vantage lab demo, scenario `{}`: phase `{baseline}` then `{candidate}`, {} each, on emulated paths",
            scenario.name,
            humantime::format_duration(args.duration)
        );
        indicatif::ProgressBar::new(total.as_secs().max(1))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} s  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let stop = vantage_probe::stop_on_signal();
    for (i, phase) in [baseline, candidate].into_iter().enumerate() {
        bar.set_message(format!("phase {phase}: measuring"));
        let options = vantage_lab::LabOptions {
            scenario: scenario.clone(),
            phase: phase.clone(),
            duration: args.duration,
            out: args.out.join("phases").join(phase),
            window: args.window,
            rates: args.rates.clone(),
            db: Some(db.clone()),
        };
        let run = vantage_lab::run_lab(options, stop.clone());
        let offset = args.duration.as_secs() * i as u64;
        let started = std::time::Instant::now();
        let ticker = {
            let bar = bar.clone();
            let secs = args.duration.as_secs();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    bar.set_position(offset + started.elapsed().as_secs().min(secs));
                }
            }
        };
        let summary = tokio::select! {
            s = run => s?,
            _ = ticker => unreachable!("the ticker never ends"),
        };
        if *stop.borrow() {
            bar.abandon_with_message("stopped");
            anyhow::bail!("stopped by a signal during phase {phase}");
        }
        bar.set_message(format!(
            "phase {phase}: done ({} countries)",
            summary.countries.len()
        ));
    }
    bar.set_message("writing the report");
    let claims = DEMO_CLAIMS
        .iter()
        .map(|t| t.parse::<vantage_reports::claim::Claim>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut store = vantage_collector::SqliteStore::open(&db)?;
    let options = vantage_reports::ReportOptions {
        baseline: format!("phase={baseline}"),
        candidate: format!("phase={candidate}"),
        claims,
        ..Default::default()
    };
    let (evidence, nb, nc) = gather_evidence(
        &mut store,
        &options.group_by,
        &options.baseline.parse()?,
        &options.candidate.parse()?,
    )?;
    if nb == 0 || nc == 0 {
        anyhow::bail!(
            "the collector stored {nb} baseline and {nc} candidate series; nothing to compare (see the probes' output in {})",
            args.out.join("phases").display()
        );
    }
    let report = vantage_reports::build_report_from(&evidence, &options);
    let written = vantage_reports::write_report_from(&report, &evidence, &args.out.join("report"))?;
    bar.finish_and_clear();
    if !args.quiet {
        print!("{}", written.summary);
        println!(
            "\nSIMULATED demo report: {}\n(also report.json, comparison.csv, summary.txt and charts/ in {}; the store is {})",
            written.html.display(),
            args.out.join("report").display(),
            db.display()
        );
    }
    Ok(())
}

/// Both sides of a comparison, streamed from the store: each series is
/// compacted as it is read, so a large store is never held decoded in
/// memory. Returns the evidence and each side's series count.
fn gather_evidence(
    store: &mut vantage_collector::SqliteStore,
    group_by: &[String],
    baseline: &vantage_collector::Selector,
    candidate: &vantage_collector::Selector,
) -> anyhow::Result<(vantage_reports::Evidence, usize, usize)> {
    use vantage_collector::Store;
    use vantage_reports::Role;
    let mut evidence = vantage_reports::Evidence::new(group_by);
    for (role, selector) in [(Role::Baseline, baseline), (Role::Candidate, candidate)] {
        store.select_each(selector, &mut |row| {
            evidence.add(role, &row);
            Ok(())
        })?;
    }
    let (nb, nc) = (
        evidence.series(Role::Baseline),
        evidence.series(Role::Candidate),
    );
    Ok((evidence, nb, nc))
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn collect(args: CollectArgs) -> anyhow::Result<()> {
    use vantage_collector::Store;
    if let Some(CollectCommand::Token { command }) = args.command {
        match command {
            TokenCommand::Add { probe, db } => {
                let mut store = vantage_collector::SqliteStore::open(&db)?;
                let token = vantage_collector::new_token();
                store.add_token(
                    &probe,
                    &vantage_collector::hash_token(&token),
                    now_unix_ms(),
                )?;
                println!("{token}");
                eprintln!("token for probe `{probe}` (shown once; the collector keeps only its hash): give it to the probe with --token");
            }
            TokenCommand::Revoke { probe, db } => {
                let mut store = vantage_collector::SqliteStore::open(&db)?;
                let n = store.revoke_tokens(&probe, now_unix_ms())?;
                if n == 0 {
                    anyhow::bail!("probe `{probe}` has no live token in {}", db.display());
                }
                println!("revoked {n} token(s) of probe `{probe}`");
            }
            TokenCommand::List { db } => {
                let mut store = vantage_collector::SqliteStore::open(&db)?;
                for t in store.tokens()? {
                    let state = if t.revoked_unix_ms.is_some() {
                        "revoked"
                    } else {
                        "live"
                    };
                    println!("{} {} sha256:{}…", t.probe_id, state, &t.hash[..16]);
                }
            }
        }
        return Ok(());
    }
    let identity = load_identity(
        args.cert.as_deref(),
        args.key.as_deref(),
        &args.cert_dir,
        &args.names,
    )?;
    let collector = vantage_collector::Collector::start(vantage_collector::CollectorConfig {
        listen: args.listen,
        identity,
        db: args.db.clone(),
        max_connections: 4096,
    })
    .await?;
    if !args.quiet {
        println!("vantage collector");
        println!(
            "  quic   {} (ALPN vantage-collect/1)",
            collector.quic_addr()
        );
        println!(
            "  https  {} (POST /v1/batches, GET /metrics, GET /health)",
            collector.https_addr()
        );
        println!("  db     {}", args.db.display());
        println!("  certificate {}", collector.fingerprint());
        println!("probe with: --collector-pin {}", collector.fingerprint());
    }
    run_until_stopped(args.duration).await;
    collector.shutdown().await;
    Ok(())
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use vantage_collector::Store;
    if !args.db.exists() {
        anyhow::bail!(
            "database {} does not exist (run `vantage collect --db …` first)",
            args.db.display()
        );
    }
    let selector: vantage_collector::Selector = args.select.parse()?;
    let mut store = vantage_collector::SqliteStore::open(&args.db)?;
    let rows = store.select(&selector)?;
    let groups = vantage_collector::merge_groups(&rows, &args.group_by);
    let bytes = match args.format {
        ExportFormat::Csv | ExportFormat::Json => {
            let rows: Vec<_> = groups
                .iter()
                .map(|g| vantage_collector::export::GroupRow::new(&args.group_by, g))
                .collect();
            if matches!(args.format, ExportFormat::Csv) {
                vantage_collector::export::render_csv(&rows)
            } else {
                vantage_collector::export::render_json(&rows)
            }
        }
        ExportFormat::Hlog => vantage_collector::export::render_hlog(&args.group_by, &groups),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the export"),
    }
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    if !args.db.exists() {
        anyhow::bail!(
            "database {} does not exist (run `vantage collect --db …` first)",
            args.db.display()
        );
    }
    let mut texts = args.claims.clone();
    if let Some(f) = &args.claims_file {
        let body = std::fs::read_to_string(f)
            .with_context(|| format!("reading claims from {}", f.display()))?;
        texts.extend(
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    let claims = texts
        .iter()
        .map(|t| t.parse::<vantage_reports::claim::Claim>())
        .collect::<Result<Vec<_>, _>>()?;
    let baseline: vantage_collector::Selector = args.baseline.parse()?;
    let candidate: vantage_collector::Selector = args.candidate.parse()?;
    let mut store = vantage_collector::SqliteStore::open(&args.db)?;
    let (evidence, nb, nc) = gather_evidence(&mut store, &args.group_by, &baseline, &candidate)?;
    if nb == 0 || nc == 0 {
        anyhow::bail!(
            "nothing to compare: {nb} series match --baseline {}, {nc} match --candidate {}",
            args.baseline,
            args.candidate
        );
    }
    let options = vantage_reports::ReportOptions {
        baseline: args.baseline.clone(),
        candidate: args.candidate.clone(),
        group_by: args.group_by.clone(),
        resamples: args.resamples,
        seed: args.seed,
        claims,
        ..Default::default()
    };
    let r = vantage_reports::build_report_from(&evidence, &options);
    let written = vantage_reports::write_report_from(&r, &evidence, &args.out)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    if !args.quiet {
        print!("{}", written.summary);
        println!(
            "written: {} (self-contained), report.json, comparison.csv, summary.txt, charts/ in {}",
            written.html.display(),
            args.out.display()
        );
    }
    Ok(())
}

/// Runs until Ctrl-C / SIGTERM, or until `duration` has passed.
async fn run_until_stopped(duration: Option<Duration>) {
    let mut stop = vantage_probe::stop_on_signal();
    match duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.changed() => {}
            }
        }
        None => {
            let _ = stop.changed().await;
        }
    }
}

/// The certificate from `--cert`/`--key`, or the one kept in `dir`
/// (generated there on first use for `names`).
fn load_identity(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    dir: &std::path::Path,
    names: &[String],
) -> anyhow::Result<Identity> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            Identity::from_pem_files(cert, key).context("loading the certificate")
        }
        _ => Identity::load_or_generate(dir, names)
            .with_context(|| format!("certificate in {}", dir.display())),
    }
}
