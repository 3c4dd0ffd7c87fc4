//! `vantage-probe`: the lean probe binary for test devices and VMs. Same
//! probe as `vantage probe`, without the collector, chart or database code.

use anyhow::Context;
use clap::Parser;

/// Measure request latency (UDP/STAMP, QUIC, TCP + TLS, HTTPS) against data centres.
#[derive(Parser, Debug)]
#[command(
    name = "vantage-probe",
    version,
    after_help = "Examples:\n  vantage-probe --local --duration 10s --out ./probe-out\n  vantage-probe --target singapore=sg.example.net:4433 --pin sha256:… --country MY --phase after\n  vantage-probe --url api=https://api.example.com/v1/ping --http-version auto --country IN --out ./out\n  vantage-probe --collector collector.example.net:4434 --token vt_… --collector-pin sha256:… --country IN --device pixel-8\n\nPrecedence: a flag beats the --config file, whether the file sets a value for all or for one [[target]] or [[url]];\nthe file beats a campaign from the collector, which beats the built-in defaults. Labels, rates and request headers\nmerge key by key under the same rule. With --collector and --token but no target the probe takes its campaign from\nthe collector (polled every --poll-every, kept on disk, applied at a window boundary); its own flags still add labels\nsuch as --device or --network, and a --phase flag or file phase pins the phase, so the campaign's cut-over no longer moves it."
)]
struct Cli {
    #[command(flatten)]
    probe: vantage_probe::ProbeArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    vantage_probe::init_logging(cli.probe.quiet);
    match run(cli) {
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

fn run(cli: Cli) -> anyhow::Result<()> {
    let plan = cli
        .probe
        .into_plan()
        .context("invalid probe configuration")?;
    // One thread: the probe does little work per attempt, and a single
    // thread saves the cross-core wake-ups that would add to every
    // measured latency (and memory on small devices).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = vantage_probe::stop_on_signal();
        vantage_probe::run_plan(plan, stop).await?;
        Ok(())
    })
}
