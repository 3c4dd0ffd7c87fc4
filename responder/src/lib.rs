//! The Vantage responder: what runs in each data centre to answer probes.
//!
//! One [`Responder`] serves, on one address:
//! - QUIC (ALPN `vantage/1`): the echo protocol of [`vantage_wire::echo`];
//! - TCP + TLS 1.3 + HTTP/1.1: `GET /echo?bytes=N` and `GET /health`, with the
//!   responder's own time in a `Server-Timing: app;dur=…` header;
//! - photo sync over both: a sink that receipts a photo only once every
//!   byte arrived and its checksum matched, and a source that generates
//!   photos from a seed ([`vantage_wire::photo`]); over HTTPS also the
//!   responsiveness endpoints of draft-ietf-ippm-responsiveness
//!   (`/.well-known/nq`);
//! - UDP: a stateful STAMP session-reflector (RFC 8762, unauthenticated).
//!
//! Every limit (connections, request and response sizes, STAMP sessions) is
//! enforced and every refusal or malformed input is counted in [`Stats`].
#![warn(missing_docs, unreachable_pub)]

mod body;
mod http3;
mod https;
mod nq;
mod photo;
mod query;
mod quic;
pub(crate) use vantage_wire::rate;
mod stall;
mod stamp;
mod stats;
mod ttl;

pub use photo::PhotoFault;
pub use query::{query_number, QueryError};
pub use rate::{source_key, RateLimiter, SourceRate, Verdict};
pub use stamp::{clock_estimate, ClockEstimate, SessionTable};
pub use stats::{Stats, StatsSnapshot};
pub use vantage_tls::access::{AccessKeys, AccessRefusal};
pub use vantage_tls::{Fingerprint, Identity, IdentityError};

use stall::Stall;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Largest response body a request may ask for by default: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = 1024 * 1024;

/// Limits that keep a responder's memory bounded under hostile clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent QUIC connections, and separately concurrent TCP connections.
    pub max_connections: usize,
    /// Concurrent streams per QUIC connection.
    pub max_streams_per_connection: u32,
    /// Largest response body a request may ask for.
    pub max_response_bytes: u32,
    /// Largest request padding accepted.
    pub max_request_bytes: u32,
    /// TLS handshakes over TCP in progress at once; a new connection beyond
    /// it cuts the oldest (so idle or slowloris connections cannot keep
    /// probes out). They take no connection slot until they finish.
    pub max_handshakes: usize,
    /// Time a client has to finish a TLS handshake or send request headers.
    pub handshake_timeout: Duration,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Duration,
    /// STAMP sessions tracked at once; beyond it packets are reflected statelessly.
    pub max_stamp_sessions: usize,
    /// Largest photo a probe may upload or download.
    pub max_photo_bytes: u64,
    /// Photos uploaded or downloaded at once, over all connections; beyond
    /// it a photo is answered `Busy` (QUIC) or 503 (HTTPS).
    pub max_concurrent_photos: usize,
    /// STAMP datagrams one source (an IPv4 address, an IPv6 /64) may send;
    /// beyond it they are dropped unanswered and counted. `None`: no limit
    /// (the library's default, for the lab and tests, where every probe is
    /// 127.0.0.1; `vantage serve` sets one).
    pub stamp_per_source: Option<SourceRate>,
    /// New connections one source may open, QUIC and TCP each; beyond it a
    /// QUIC attempt is ignored (nothing sent back) and a TCP one closed,
    /// and counted. `None`: no limit.
    pub connections_per_source: Option<SourceRate>,
    /// Heavy requests one source may make, over every transport together:
    /// photo uploads and downloads, echoes of more than
    /// [`HEAVY_ECHO_BYTES`], `/nq/large` and `/nq/upload`. Beyond it they are
    /// answered 429 (HTTP) or `Busy` (QUIC) and counted. `None`: no limit.
    pub heavy_per_source: Option<SourceRate>,
    /// Sources the per-source limits track at once; when all are active, a
    /// new source is refused as if over its rate.
    pub max_rate_sources: usize,
}

pub use vantage_wire::access::HEAVY_ECHO_BYTES;

/// The body of a heavy request refused over its source's rate (HTTP 429).
const HEAVY_REFUSED: &str = "too many heavy requests from your address; try again in a second\n";

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_streams_per_connection: 256,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_request_bytes: 64 * 1024,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_stamp_sessions: 4096,
            max_photo_bytes: 256 * 1024 * 1024,
            max_concurrent_photos: 64,
            stamp_per_source: None,
            connections_per_source: None,
            heavy_per_source: None,
            max_rate_sources: 65_536,
        }
    }
}

/// Where and how a responder listens.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// The one address all services bind to.
    pub bind: IpAddr,
    /// UDP port of the QUIC echo (0: any free port).
    pub quic_port: u16,
    /// TCP port of the HTTPS echo (0: any free port).
    pub https_port: u16,
    /// UDP port of the STAMP reflector (0: any free port).
    pub stamp_port: u16,
    /// Certificate and key.
    pub identity: Identity,
    /// Resource limits.
    pub limits: Limits,
    /// With keys, heavy requests need an access token signed by one of
    /// them (`vantage serve --require-token`); without, none is asked for.
    pub access: Option<Arc<AccessKeys>>,
}

/// Default QUIC (UDP) and HTTPS (TCP) port.
pub const DEFAULT_PORT: u16 = 4433;
/// Default STAMP port: unprivileged, since 862 needs root.
pub const DEFAULT_STAMP_PORT: u16 = 4862;

impl ResponderConfig {
    /// Loopback on ephemeral ports with a fresh in-memory certificate: what
    /// `probe --local` and the tests use.
    pub fn local() -> Result<Self, IdentityError> {
        Ok(ResponderConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            quic_port: 0,
            https_port: 0,
            stamp_port: 0,
            identity: Identity::generate(&["localhost".into(), "127.0.0.1".into(), "::1".into()])?,
            limits: Limits::default(),
            access: None,
        })
    }
}

/// Why a responder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// A port could not be bound (in use, or privileged).
    #[error(
        "cannot listen on {proto} {addr}: {source} (choose another port, or stop what holds it)"
    )]
    Bind {
        /// "QUIC (UDP)", "HTTPS (TCP)" or "STAMP (UDP)".
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A running responder. Dropping it without [`Responder::shutdown`] aborts its tasks.
pub struct Responder {
    quic_addr: SocketAddr,
    https_addr: SocketAddr,
    stamp_addr: SocketAddr,
    fingerprint: Fingerprint,
    stats: Arc<Stats>,
    stall: Arc<Stall>,
    photo_fault: Arc<photo::FaultSwitch>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    quic_endpoint: quinn::Endpoint,
}

impl Responder {
    /// Binds every service and starts serving. Needs a tokio runtime.
    pub async fn start(config: ResponderConfig) -> Result<Self, ResponderError> {
        let stats = Arc::new(Stats::default());
        let stall = Arc::new(Stall::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let fingerprint = config.identity.fingerprint();
        let mut tasks = JoinSet::new();

        let mut quic_endpoint = quic::bind(&config)?;
        // With both ports left to the system, another socket may already
        // hold the QUIC port's number on TCP: draw a new pair a few times
        // before settling for two numbers.
        if (config.quic_port, config.https_port) == (0, 0) {
            for _ in 0..8 {
                let port = quic_endpoint.local_addr().map(|a| a.port()).unwrap_or(0);
                if std::net::TcpListener::bind((config.bind, port)).is_ok() {
                    break;
                }
                quic_endpoint = quic::bind(&config)?;
            }
        }
        let quic_addr = quic_endpoint
            .local_addr()
            .map_err(|source| ResponderError::Bind {
                proto: "QUIC (UDP)",
                addr: SocketAddr::new(config.bind, config.quic_port),
                source,
            })?;
        // With both ports left to the system, serve HTTPS on the QUIC port
        // number when it is free, so one HOST:PORT names the whole responder.
        let https_listener = match (config.quic_port, config.https_port) {
            (0, 0) => {
                let same = ResponderConfig {
                    https_port: quic_addr.port(),
                    ..config.clone()
                };
                match https::bind(&same).await {
                    Ok(l) => l,
                    Err(_) => https::bind(&config).await?,
                }
            }
            _ => https::bind(&config).await?,
        };
        let https_addr = https_listener
            .local_addr()
            .map_err(|source| ResponderError::Bind {
                proto: "HTTPS (TCP)",
                addr: SocketAddr::new(config.bind, config.https_port),
                source,
            })?;
        let stamp_socket = stamp::bind(&config)?;
        let stamp_addr = stamp_socket
            .local_addr()
            .map_err(|source| ResponderError::Bind {
                proto: "STAMP (UDP)",
                addr: SocketAddr::new(config.bind, config.stamp_port),
                source,
            })?;

        let photo_fault = Arc::new(photo::FaultSwitch::default());
        let shared = Shared {
            stats: stats.clone(),
            stall: stall.clone(),
            photo_slots: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_concurrent_photos,
            )),
            photo_fault: photo_fault.clone(),
            heavy: config.limits.heavy_per_source.map(|rate| {
                Arc::new(std::sync::Mutex::new(RateLimiter::new(
                    rate,
                    config.limits.max_rate_sources,
                )))
            }),
            limits: config.limits.clone(),
            access: config.access.clone(),
        };
        tasks.spawn(quic::serve(
            quic_endpoint.clone(),
            shared.clone(),
            shutdown_rx.clone(),
        ));
        // h2 for responsiveness clients; Vantage probes ask for http/1.1.
        let tls = Arc::new(config.identity.server_config(&[b"h2", b"http/1.1"])?);
        tasks.spawn(https::serve(
            https_listener,
            tls,
            shared.clone(),
            shutdown_rx.clone(),
        ));
        let stamp_shutdown = shutdown_rx.clone();
        tasks.spawn_blocking(move || stamp::serve(stamp_socket, shared, stamp_shutdown));
        tasks.spawn(report_refusals(stats.clone(), shutdown_rx));
        tracing::info!(%quic_addr, %https_addr, %stamp_addr, %fingerprint, "responder listening");
        Ok(Responder {
            quic_addr,
            https_addr,
            stamp_addr,
            fingerprint,
            stats,
            stall,
            photo_fault,
            shutdown,
            tasks,
            quic_endpoint,
        })
    }

    /// Address of the QUIC echo.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }
    /// Address of the HTTPS echo.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }
    /// Address of the STAMP reflector.
    pub fn stamp_addr(&self) -> SocketAddr {
        self.stamp_addr
    }
    /// Fingerprint of the certificate served, for probes to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// Counters of what was served and refused.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Holds every answer (QUIC, HTTPS and STAMP) until `duration` from now
    /// has passed, as a responder stalled by a pause (GC, swap, a busy core)
    /// would. The lab and the coordinated-omission tests use it.
    pub fn inject_stall(&self, duration: Duration) {
        self.stall.hold_for(duration);
    }

    /// Damages every photo served from now on as `fault` says (`None`
    /// heals), as a broken middlebox or a buggy storage backend would. The
    /// integrity tests use it.
    pub fn inject_photo_fault(&self, fault: Option<PhotoFault>) {
        self.photo_fault.set(fault);
    }

    /// Stops accepting, closes connections and waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.quic_endpoint
            .close(0u32.into(), b"responder shutting down");
        // Bounded: every task watches the shutdown signal.
        let wait = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        // Lets the CONNECTION_CLOSE frames go out. Bounded: a peer that
        // vanished mid-handshake would otherwise hold this until its idle
        // timeout.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.quic_endpoint.wait_idle()).await;
    }
}

/// Logs, once a minute, what the responder refused or could not parse, so
/// an operator sees bad clients without a log line per packet.
async fn report_refusals(stats: Arc<Stats>, mut shutdown: watch::Receiver<bool>) {
    let mut last = stats.snapshot();
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = stats.snapshot();
        let grown: Vec<String> = now
            .refusals()
            .iter()
            .zip(last.refusals())
            .filter(|((_, n), (_, l))| n > l)
            .map(|((name, n), (_, l))| format!("{name}+{}", n - l))
            .collect();
        if !grown.is_empty() {
            tracing::warn!(counts = %grown.join(" "), "refused or malformed in the last minute");
        }
        last = now;
    }
}

/// What every service task shares.
#[derive(Clone)]
struct Shared {
    stats: Arc<Stats>,
    stall: Arc<Stall>,
    photo_slots: Arc<tokio::sync::Semaphore>,
    photo_fault: Arc<photo::FaultSwitch>,
    /// The heavy requests' per-source buckets, shared by every transport.
    heavy: Option<Arc<std::sync::Mutex<RateLimiter<IpAddr>>>>,
    limits: Limits,
    /// The keys heavy requests' tokens must be signed by, if required.
    access: Option<Arc<AccessKeys>>,
}

/// Why a heavy request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeavyRefusal {
    /// Over its source's rate: try again later.
    OverRate,
    /// No valid access token.
    Access(AccessRefusal),
}

impl Shared {
    /// Whether `remote` may make one more heavy request now, showing
    /// `token`. A missing token is refused first (it costs nothing), then
    /// the source's rate is checked, and only then the token's signature,
    /// so strangers cannot make the responder verify signatures faster
    /// than their rate. Every refusal is counted.
    fn admit_heavy(&self, remote: IpAddr, token: Option<&str>) -> Result<(), HeavyRefusal> {
        if self.access.is_some() && token.is_none() {
            Stats::bump(&self.stats.access_missing);
            return Err(HeavyRefusal::Access(AccessRefusal::Missing));
        }
        if !self.heavy_allowed(remote) {
            return Err(HeavyRefusal::OverRate);
        }
        let (Some(keys), Some(token)) = (&self.access, token) else {
            return Ok(());
        };
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match keys.check(token, now_unix) {
            Ok(_) => {
                Stats::bump(&self.stats.access_granted);
                Ok(())
            }
            Err(refusal) => {
                let counter = match refusal {
                    AccessRefusal::Expired { .. } => &self.stats.access_expired,
                    _ => &self.stats.access_invalid,
                };
                Stats::bump(counter);
                Err(HeavyRefusal::Access(refusal))
            }
        }
    }

    /// Whether `remote` is under its heavy-request rate; a refusal is
    /// counted in `heavy_rate_limited`.
    fn heavy_allowed(&self, remote: IpAddr) -> bool {
        let Some(heavy) = &self.heavy else {
            return true;
        };
        let verdict = match heavy.lock() {
            Ok(mut limiter) => limiter.check(&source_key(remote), std::time::Instant::now()),
            // A panic elsewhere while holding it: fail open, as without a limit.
            Err(_) => Verdict::Allowed,
        };
        let allowed = verdict == Verdict::Allowed;
        if !allowed {
            Stats::bump(&self.stats.heavy_rate_limited);
        }
        allowed
    }
}

/// A static buffer of zeros response bodies are sliced from, so a response
/// costs no allocation however large.
static ZEROS: [u8; DEFAULT_MAX_RESPONSE_BYTES as usize] = [0; DEFAULT_MAX_RESPONSE_BYTES as usize];

/// Writes `n` zero bytes via `write`, in slices of [`ZEROS`].
fn zero_chunks(mut n: usize) -> impl Iterator<Item = &'static [u8]> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let take = n.min(ZEROS.len());
        n -= take;
        Some(&ZEROS[..take])
    })
}
