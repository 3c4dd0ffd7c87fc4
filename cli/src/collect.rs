//! `vantage collect`: the collector, and its probe tokens.

use crate::args::{run_until_stopped, DbArgs, IdentityArgs};
use clap::Subcommand;
use std::time::Duration;

/// Flags of `vantage collect`.
#[derive(clap::Args, Debug)]
pub(crate) struct CollectArgs {
    #[command(subcommand)]
    command: Option<CollectCommand>,
    /// Address for QUIC (UDP) and HTTPS (TCP); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:4434")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    store: DbArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Keep one-minute series this long (e.g. 14d), then remove them in
    /// small steps; hourly and daily roll-ups are kept for the whole
    /// campaign (default: keep everything).
    #[arg(long, value_parser = parse_keep, value_name = "DURATION")]
    keep_raw: Option<Duration>,
    /// Uploads per second one token may make, with bursts of ten times
    /// that (a probe's backlog after an outage goes up at once); beyond it
    /// an upload is refused as unavailable (`rate_limited` in /metrics)
    /// before its body is read, and the probe keeps it. 0: no limit. A
    /// probe sends one batch a window.
    #[arg(long, default_value_t = 50.0, value_name = "PER_SEC")]
    upload_rate_per_token: f64,
    /// Print only errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
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
        #[command(flatten)]
        store: DbArgs,
    },
    /// Revoke every token of a probe, at once.
    Revoke {
        /// The probe's id.
        #[arg(long)]
        probe: String,
        #[command(flatten)]
        store: DbArgs,
    },
    /// List token hashes and their probes.
    List {
        #[command(flatten)]
        store: DbArgs,
    },
}

/// A retention time: at least an hour, so a typo such as `14m` cannot
/// remove the series of the hour still being rolled up.
fn parse_keep(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(3600) {
        return Err(format!(
            "{s} is shorter than an hour: keep raw series at least 1h (e.g. 14d)"
        ));
    }
    Ok(d)
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Add { probe, store } => {
            let mut db = store.open()?;
            let token = vantage_collector::new_token();
            db.add_token(
                &probe,
                &vantage_collector::hash_token(&token),
                now_unix_ms(),
            )?;
            println!("{token}");
            eprintln!("token for probe `{probe}` (shown once; the collector keeps only its hash): give it to the probe with --token");
        }
        TokenCommand::Revoke { probe, store } => {
            let n = store.open()?.revoke_tokens(&probe, now_unix_ms())?;
            if n == 0 {
                anyhow::bail!("probe `{probe}` has no live token in {}", store.place());
            }
            println!("revoked {n} token(s) of probe `{probe}`");
        }
        TokenCommand::List { store } => {
            for t in store.open()?.tokens()? {
                let state = if t.revoked_unix_ms.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!("{} {} sha256:{}…", t.probe_id, state, &t.hash[..16]);
            }
        }
    }
    Ok(())
}

pub(crate) async fn collect(args: CollectArgs) -> anyhow::Result<()> {
    if let Some(CollectCommand::Token { command }) = args.command {
        return token(command);
    }
    // Opened here first so a store made before roll-ups gains them with a
    // progress bar, before the collector takes its first batch.
    drop(args.store.open()?);
    let identity = args.identity.load("vantage-collector-cert")?;
    let collector = vantage_collector::Collector::start(vantage_collector::CollectorConfig {
        listen: args.listen,
        identity,
        db: args.store.location()?,
        max_connections: 4096,
        keep_raw: args.keep_raw,
        limits: vantage_collector::UploadLimits {
            per_token: per_token(args.upload_rate_per_token)?,
            ..Default::default()
        },
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
        println!("  db     {}", args.store.place());
        println!("  certificate {}", collector.fingerprint());
        println!("probe with: --collector-pin {}", collector.fingerprint());
    }
    run_until_stopped(args.duration).await;
    collector.shutdown().await;
    Ok(())
}

/// `--upload-rate-per-token`: bursts of ten times the rate; 0 is none.
fn per_token(per_second: f64) -> anyhow::Result<Option<vantage_wire::rate::SourceRate>> {
    crate::args::rate_flag("--upload-rate-per-token", per_second, 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_raw_takes_days_and_refuses_less_than_an_hour() {
        assert_eq!(parse_keep("14d").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_keep("1h").unwrap(), Duration::from_secs(3600));
        let err = parse_keep("14m").unwrap_err();
        assert!(err.contains("shorter than an hour"), "{err}");
        assert!(parse_keep("two weeks").is_err());
    }
}
