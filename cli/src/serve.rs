//! `vantage serve`: a responder in a data centre.

use crate::args::{run_until_stopped, IdentityArgs};
use std::net::IpAddr;
use std::time::Duration;
use vantage_responder::{AccessKeys, Limits, Responder, ResponderConfig, SourceRate};

/// Flags of `vantage serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
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
    #[command(flatten)]
    identity: IdentityArgs,
    /// Largest response a request may ask for, bytes.
    #[arg(long, default_value_t = vantage_responder::DEFAULT_MAX_RESPONSE_BYTES)]
    max_response_bytes: u32,
    /// Most concurrent connections per protocol.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// STAMP datagrams per second one source (an IPv4 address, an IPv6 /64)
    /// may send, with bursts of twice that; beyond it they are dropped
    /// unanswered and counted (`stamp_rate_limited`). 0: no limit. A probe
    /// sends 5 a second by default.
    #[arg(long, default_value_t = 200.0, value_name = "PER_SEC")]
    stamp_rate_per_source: f64,
    /// New connections per second one source may open, QUIC and TCP each,
    /// with bursts of twice that; beyond it a QUIC attempt gets no answer
    /// and a TCP one is closed, counted (`quic_rate_limited`,
    /// `tcp_rate_limited`). 0: no limit. A probe opens about 1 a second by
    /// default.
    #[arg(long, default_value_t = 50.0, value_name = "PER_SEC")]
    connection_rate_per_source: f64,
    /// Heavy requests per second one source may make over every transport
    /// together (photo uploads and downloads, echoes over 64 KiB,
    /// /nq/large, /nq/upload), with bursts of twice that; beyond it they are
    /// answered 429 (HTTP) or Busy (QUIC) and counted
    /// (`heavy_rate_limited`). 0: no limit. A probe's photo sync makes a
    /// few a minute.
    #[arg(long, default_value_t = 5.0, value_name = "PER_SEC")]
    heavy_rate_per_source: f64,
    /// Require an access token for heavy requests (photos, echoes over 64
    /// KiB, /nq/large, /nq/upload), signed by a key in FILE (access.pub
    /// from `vantage access keygen`; several keys, one per line, during a
    /// rotation). Without one: 401 (HTTP) or Forbidden (QUIC), counted.
    /// Light echoes and STAMP stay open to all.
    #[arg(long, value_name = "FILE")]
    require_token: Option<std::path::PathBuf>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print only errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// A per-source rate from its flag: bursts of twice the rate; 0 is none.
fn per_source(flag: &str, per_second: f64) -> anyhow::Result<Option<SourceRate>> {
    crate::args::rate_flag(flag, per_second, 2.0)
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let identity = args.identity.load("vantage-cert")?;
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
            stamp_per_source: per_source("--stamp-rate-per-source", args.stamp_rate_per_source)?,
            connections_per_source: per_source(
                "--connection-rate-per-source",
                args.connection_rate_per_source,
            )?,
            heavy_per_source: per_source("--heavy-rate-per-source", args.heavy_rate_per_source)?,
            ..Limits::default()
        },
        access: match &args.require_token {
            Some(path) => Some(std::sync::Arc::new(AccessKeys::load(path)?)),
            None => None,
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
        if let Some(path) = &args.require_token {
            println!(
                "  heavy requests need an access token signed by a key in {}",
                path.display()
            );
        }
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
