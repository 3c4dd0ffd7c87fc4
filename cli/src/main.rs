//! `vantage`: the command-line front end. It only composes the library
//! crates; each subcommand's flags and body live in a module of its own.

mod access;
mod args;
mod campaign;
mod collect;
mod export;
mod fleet;
mod lab;
mod report;
mod serve;
mod store;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
        after_help = "Examples:\n  vantage serve --bind 0.0.0.0 --cert-dir /var/lib/vantage/cert --name dc1.example.net\n  vantage serve --bind 0.0.0.0 --require-token /etc/vantage/access/access.pub   (photos and large echoes need a token)\n\nIt prints the certificate fingerprint; give it to probes with --pin."
    )]
    Serve(serve::ServeArgs),
    /// Measure request latency against data centres.
    #[command(
        after_help = "Examples:\n  vantage probe --local --duration 10s --out ./probe-out\n  vantage probe --target singapore=sg.example.net:4433 --pin sha256:… --country MY --phase after --out ./out\n  vantage probe --url api=https://api.example.com/v1/ping --url cdn=https://cdn.example.com/p.jpg --country IN\n  vantage probe --collector collector.example.net:4434 --token vt_… --collector-pin sha256:… --country IN --device pixel-8\n\nPrecedence: a flag beats the --config file, whether the file sets a value for all or for one [[target]] or [[url]];\nthe file beats a campaign from the collector, which beats the built-in defaults. Labels, rates and request headers\nmerge key by key under the same rule. With --collector and --token but no target the probe takes its campaign from\nthe collector (polled every --poll-every, kept on disk, applied at a window boundary); its own flags still add labels\nsuch as --device or --network, and a --phase flag or file phase pins the phase, so the campaign's cut-over no longer moves it."
    )]
    Probe(Box<vantage_probe::ProbeArgs>),
    /// Run a collector: receive batches from probes (QUIC, HTTPS fallback) into a database.
    #[command(
        after_help = "Examples:\n  vantage collect --listen 0.0.0.0:4434 --db vantage.db --cert-dir /var/lib/vantage/collector-cert\n  vantage collect --db vantage.db --keep-raw 14d   (one-minute series for 14 days; hourly and daily roll-ups for good)\n  vantage collect token add --db vantage.db --probe vm-mumbai-1\n  vantage collect token revoke --db vantage.db --probe vm-mumbai-1"
    )]
    Collect(collect::CollectArgs),
    /// Select stored series, merge them by group, and write CSV, JSON lines or an HdrHistogram log.
    #[command(
        after_help = "Examples:\n  vantage export --db vantage.db --select country=IN,phase=before --format csv\n  vantage export --db vantage.db --select metric=udp_rtt --group-by country,target --format hlog > udp.hlog"
    )]
    Export(export::ExportArgs),
    /// Compare a baseline with a candidate, with confidence intervals, and judge claims.
    #[command(
        after_help = "Examples:\n  vantage report --db vantage.db --baseline phase=before --candidate phase=after --out report \\\n      --claim 'IN quic_cold_request p50 decreases by >= 350ms'\n  vantage report --db vantage.db --baseline target=beijing --candidate target=singapore --group-by country --out report\n\nClaim grammar: SUBJECT METRIC pNN (decreases|increases) by OP NUMBER(us|ms|s|%), or SUBJECT METRIC pNN ratio OP NUMBER, or ... ratio between A and B."
    )]
    Report(report::ReportArgs),
    /// Campaigns for probes to pull from their collector, and the cut-over as one command.
    Campaign {
        #[command(subcommand)]
        command: campaign::CampaignCommand,
    },
    /// One row per probe: last seen, campaign drift, backlog, clock offset, run rate, silence.
    Fleet(fleet::FleetArgs),
    /// Manage stores: copy one into another (SQLite to PostgreSQL, say).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Access tokens for responders that require one for heavy requests (--require-token).
    Access {
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// Emulated network paths on this machine: run a scenario's phase end to end.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
}

impl Command {
    /// Whether only errors are to be logged.
    fn quiet(&self) -> bool {
        match self {
            Command::Serve(a) => a.quiet,
            Command::Probe(a) => a.quiet,
            Command::Collect(a) => a.quiet,
            Command::Export(_)
            | Command::Campaign { .. }
            | Command::Fleet(_)
            | Command::Access { .. } => true,
            Command::Report(a) => a.quiet,
            Command::Store {
                command: store::StoreCommand::Copy(a),
            } => a.quiet,
            Command::Lab { command } => command.quiet(),
        }
    }

    /// The probe runs on one thread, as `vantage-probe` does: fewer
    /// cross-core wake-ups in every measured latency. The rest use two.
    fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Command::Probe(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            _ => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Probe(args) => probe(*args).await,
        Command::Collect(args) => collect::collect(args).await,
        Command::Export(args) => export::export(args),
        Command::Report(args) => report::report(args),
        Command::Campaign { command } => campaign::campaign(command),
        Command::Fleet(args) => fleet::fleet(args),
        Command::Store { command } => store::store(command),
        Command::Access { command } => access::access(command),
        Command::Lab { command } => lab::lab(command).await,
    }
}

async fn probe(args: vantage_probe::ProbeArgs) -> anyhow::Result<()> {
    let plan = args.into_plan().context("invalid probe configuration")?;
    let stop = vantage_probe::stop_on_signal();
    vantage_probe::run_plan(plan, stop).await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vantage_probe::init_logging(cli.command.quiet());
    let result = cli
        .command
        .runtime()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli.command)));
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

#[cfg(test)]
mod tests {
    /// Every subcommand's flags are consistent (clap checks names, groups
    /// and conflicts only when a command is built, so one used rarely
    /// would otherwise fail in a user's hands).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
