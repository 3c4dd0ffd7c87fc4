//! The IO layer: sockets, handshakes and timers. Each measurement runs on
//! its schedule, sends one [`Event`] per attempt (or more for cold
//! measurements that record two metrics), and leaves all counting to the
//! recorder. Every attempt ends in a sample: measured, lost or failed.

mod http;
mod https;
mod photo;
mod quic;
pub(crate) mod trace;
mod udp;

pub(crate) use http::{alpn_for, http_cold, http_warm, resolver, HttpCtx};
pub(crate) use https::{https_request, tcp_cold};
pub(crate) use photo::photosync_job;
pub(crate) use quic::{quic_client_endpoint, quic_cold, quic_warm};
pub(crate) use trace::{path_trace, path_trace_url};
pub(crate) use udp::udp_rtt_job;

use crate::recorder::{Outcome, Sample};
use crate::schedule::Schedule;
use bytes::Bytes;
use http_body_util::Empty;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use vantage_tls::TlsClient;
use vantage_wire::echo::EchoRequest;
use vantage_wire::{ErrorClass, Metric, PathStats, Reason};

/// What measurement tasks tell the recorder.
#[derive(Debug, Clone)]
pub enum Event {
    /// One attempt's outcome.
    Sample(Sample),
    /// Path statistics for the window of `intended`.
    Path {
        /// Target index.
        target: usize,
        /// Metric.
        metric: Metric,
        /// Intended time of the packet that revealed them.
        intended: Instant,
        /// The statistics.
        delta: PathStats,
    },
    /// An HTTP response's status, counted in the window of `intended`.
    Status {
        /// Target index.
        target: usize,
        /// The metric whose series counts it (the request's total).
        metric: Metric,
        /// Intended time of the request.
        intended: Instant,
        /// The status code.
        status: u16,
    },
    /// A CDN edge a response named, counted in the window of `intended`.
    Edge {
        /// Target index.
        target: usize,
        /// The metric whose series counts it (the request's total).
        metric: Metric,
        /// Intended time of the request.
        intended: Instant,
        /// `provider:POP`.
        edge: String,
    },
    /// A finished `path_trace`'s hops (the attempt itself is a sample).
    Trace {
        /// Target index.
        target: usize,
        /// Intended start of the trace.
        intended: Instant,
        /// What it found.
        trace: vantage_wire::trace::Trace,
    },
    /// A URL's host resolved to a new address; series from now carry it.
    Address {
        /// Target index.
        target: usize,
        /// The URL and the address it resolved to.
        address: String,
    },
}

/// What a scheduled measurement needs of its target: whether to hold off
/// (a photo sync runs) and where its samples go.
pub(crate) trait Scheduled: Send + Sync + 'static {
    /// True while a photo-sync batch runs.
    fn syncing(&self) -> bool;
    /// Sends one sample to the recorder.
    fn emit_sample(
        &self,
        metric: Metric,
        intended: Instant,
        outcome: Outcome,
    ) -> impl Future<Output = ()> + Send;
}

impl Scheduled for TargetCtx {
    fn syncing(&self) -> bool {
        TargetCtx::syncing(self)
    }

    fn emit_sample(
        &self,
        metric: Metric,
        intended: Instant,
        outcome: Outcome,
    ) -> impl Future<Output = ()> + Send {
        self.emit(metric, intended, outcome)
    }
}

/// Everything the measurements of one target share.
pub(crate) struct TargetCtx {
    pub(crate) index: usize,
    pub(crate) quic_addr: SocketAddr,
    pub(crate) https_addr: SocketAddr,
    pub(crate) stamp_addr: SocketAddr,
    /// The reflector keeps this host's clock (see `TargetConfig`).
    pub(crate) shared_clock: bool,
    /// The one-way metrics are asked for: only then are they recorded.
    pub(crate) one_way: bool,
    pub(crate) server_name: String,
    pub(crate) https_tls: TlsClient,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) timeout: Duration,
    pub(crate) request: EchoRequest,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) warm_quic: tokio::sync::Mutex<Option<quinn::Connection>>,
    pub(crate) https_pool: Mutex<Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>,
    /// Photo-sync batches running now, over every target. While one runs,
    /// the idle measurements start no attempt: they would measure the
    /// sync's load, which is `loaded_rtt`'s job, not theirs.
    pub(crate) sync_gate: Arc<AtomicUsize>,
    /// The access token heavy requests show, if the probe has one.
    pub(crate) access: Option<Access>,
    /// Set once a refusal for want of a valid token has been reported.
    pub(crate) access_refusal_reported: AtomicBool,
}

/// The probe's access token in the two forms heavy requests carry it
/// ([`vantage_wire::access`]).
pub(crate) struct Access {
    /// The QUIC stream preamble.
    preamble: Vec<u8>,
    /// The `authorization` header value.
    bearer: hyper::header::HeaderValue,
}

impl Access {
    /// Both forms of `token`; `None` if it cannot be carried (the
    /// configuration checks it reads as a token first).
    pub(crate) fn new(token: &str) -> Option<Access> {
        Some(Access {
            preamble: vantage_wire::access::encode_preamble(token)?,
            bearer: hyper::header::HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
        })
    }
}

impl TargetCtx {
    /// The preamble a QUIC request begins with: the token's, for a heavy
    /// request when the probe has one; empty otherwise.
    pub(crate) fn access_preamble(&self, heavy: bool) -> &[u8] {
        match &self.access {
            Some(a) if heavy => &a.preamble,
            _ => &[],
        }
    }

    /// The `authorization` header of a heavy HTTPS request, if any.
    pub(crate) fn access_header(&self) -> Option<&hyper::header::HeaderValue> {
        self.access.as_ref().map(|a| &a.bearer)
    }

    /// Says once, as a warning, that the responder refused a heavy request
    /// for want of a valid access token, and what to do; later refusals
    /// are only counted, as failed samples.
    pub(crate) fn report_access_refused(&self, what: &str) {
        if self.access_refusal_reported.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.access.is_some() {
            tracing::warn!(
                target_index = self.index,
                server = %self.server_name,
                "the responder refused this probe's access token for {what}: it is expired or signed by a key the responder does not trust; issue a new one with `vantage access issue --probe ID`"
            );
        } else {
            tracing::warn!(
                target_index = self.index,
                server = %self.server_name,
                "the responder requires an access token for {what} (vantage serve --require-token); give one with --access-token (from `vantage access issue --probe ID`)"
            );
        }
    }
}

impl TargetCtx {
    /// True while a photo-sync batch runs.
    pub(crate) fn syncing(&self) -> bool {
        self.sync_gate.load(Ordering::SeqCst) > 0
    }
}

impl TargetCtx {
    pub(crate) async fn emit(&self, metric: Metric, intended: Instant, outcome: Outcome) {
        if let Outcome::Failed(class) = outcome {
            tracing::debug!(target_index = self.index, %metric, %class, "attempt failed");
        }
        send_sample(&self.events, self.index, metric, intended, outcome).await;
    }

    pub(crate) async fn emit_error(
        &self,
        metric: Metric,
        intended: Instant,
        class: ErrorClass,
        detail: &(dyn std::fmt::Display + Sync),
    ) {
        tracing::debug!(target_index = self.index, %metric, %class, %detail, "attempt failed");
        self.emit(metric, intended, Outcome::failed(class)).await;
    }
}

/// Most attempts of one measurement in flight at once; beyond it an attempt
/// is counted as `probe_overload` rather than queued, so a dead target
/// cannot make the probe's memory grow.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Measurements that go on while a photo sync runs: a path trace's
/// evidence is the path, which a sync's load does not change, and a probe
/// that syncs for much of a phase (a 4G one) would otherwise trace too
/// little to back a verdict. Its round trips then include the sync's
/// queueing, as a user's would.
const RUN_THROUGH_SYNC: &[Metric] = &[Metric::PathTrace];

/// Runs `attempt` at every intended time of `schedule` until `stop`, each
/// attempt in its own task (open loop: a slow answer delays nothing), then
/// waits for the attempts in flight, each bounded by its timeout.
pub(crate) async fn run_scheduled<C, F, Fut>(
    ctx: Arc<C>,
    mut schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    metrics: &'static [Metric],
    mut attempt: F,
) where
    C: Scheduled,
    F: FnMut(Arc<C>, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut in_flight = JoinSet::new();
    while !*stop.borrow() {
        let due = schedule.next_due();
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.changed() => break,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
        }
        let now = Instant::now();
        while let Some(intended) = schedule.poll_due(now) {
            if ctx.syncing() && !metrics.iter().all(|m| RUN_THROUGH_SYNC.contains(m)) {
                continue;
            }
            if in_flight.len() >= MAX_IN_FLIGHT {
                for m in metrics {
                    ctx.emit_sample(*m, intended, Outcome::Failed(ErrorClass::ProbeOverload))
                        .await;
                }
                continue;
            }
            in_flight.spawn(attempt(ctx.clone(), intended));
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// Hands one attempt's outcome to the recorder. A closed channel means the
/// run is ending: the sample has nowhere to go and is not an error.
pub(crate) async fn send_sample(
    events: &mpsc::Sender<Event>,
    target: usize,
    metric: Metric,
    intended: Instant,
    outcome: Outcome,
) {
    let _ = events
        .send(Event::Sample(Sample {
            target,
            metric,
            intended,
            outcome,
        }))
        .await;
}

/// A failed attempt: its class, and what went wrong in words.
pub(crate) type Failure = (ErrorClass, String);

/// The class of a socket error.
pub(crate) fn classify_io(e: &std::io::Error) -> ErrorClass {
    use std::io::ErrorKind as K;
    if let Some(inner) = e.get_ref() {
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return ErrorClass::Tls;
        }
    }
    match e.kind() {
        K::ConnectionRefused => ErrorClass::Refused,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected => ErrorClass::Reset,
        K::TimedOut | K::WouldBlock => ErrorClass::Timeout,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => ErrorClass::Unreachable,
        K::InvalidData => ErrorClass::Tls,
        _ => ErrorClass::Io,
    }
}

/// Why a TLS handshake failed, from rustls' own error: what a user fixes
/// differs for an expired certificate, a wrong name and an unknown CA.
pub(crate) fn tls_reason(e: &rustls::Error) -> Reason {
    use rustls::CertificateError as C;
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => Reason::TlsExpired,
            C::NotValidYet | C::NotValidYetContext { .. } => Reason::TlsNotYetValid,
            C::NotValidForName | C::NotValidForNameContext { .. } => Reason::TlsNameMismatch,
            C::UnknownIssuer => Reason::TlsUnknownIssuer,
            C::Revoked => Reason::TlsRevoked,
            C::BadSignature
            | C::UnsupportedSignatureAlgorithmContext { .. }
            | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Reason::TlsBadSignature,
            _ => Reason::TlsBadCertificate,
        },
        E::Other(_) if vantage_tls::PinMismatch::in_rustls(e).is_some() => Reason::TlsPinMismatch,
        E::NoCertificatesPresented | E::UnsupportedNameType => Reason::TlsBadCertificate,
        E::AlertReceived(_) => Reason::TlsAlertReceived,
        E::PeerIncompatible(_) | E::NoApplicationProtocol => Reason::TlsIncompatible,
        _ => Reason::TlsOther,
    }
}

/// The TLS reason inside a socket error from tokio-rustls, if it holds one.
pub(crate) fn tls_reason_io(e: &std::io::Error) -> Option<Reason> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(tls_reason)
}

/// Remaining time until `deadline`.
pub(crate) fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Spacing;

    /// A measurement context that is always mid-sync and counts what it is sent.
    struct AlwaysSyncing {
        samples: Mutex<Vec<Metric>>,
    }

    impl Scheduled for AlwaysSyncing {
        fn syncing(&self) -> bool {
            true
        }

        fn emit_sample(
            &self,
            metric: Metric,
            _intended: Instant,
            _outcome: Outcome,
        ) -> impl Future<Output = ()> + Send {
            self.samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(metric);
            async {}
        }
    }

    /// While a sync runs, an idle measurement starts nothing and
    /// `path_trace` goes on.
    #[tokio::test]
    async fn only_path_trace_runs_through_a_sync() {
        const IDLE: &[Metric] = &[Metric::QuicRequest];
        const TRACE: &[Metric] = &[Metric::PathTrace];
        for (metrics, goes_on) in [(IDLE, false), (TRACE, true)] {
            let ctx = Arc::new(AlwaysSyncing {
                samples: Mutex::new(Vec::new()),
            });
            let (stop_tx, stop) = watch::channel(false);
            let start = Instant::now();
            let schedule = Schedule::new(
                Spacing::Fixed {
                    interval: Duration::from_millis(10),
                },
                start,
                1,
            );
            let run = tokio::spawn(run_scheduled(
                ctx.clone(),
                schedule,
                stop,
                metrics,
                move |ctx: Arc<AlwaysSyncing>, intended| async move {
                    ctx.emit_sample(metrics[0], intended, Outcome::Lost).await;
                },
            ));
            tokio::time::sleep(Duration::from_millis(45)).await;
            let _ = stop_tx.send(true);
            run.await.unwrap();
            let n = ctx.samples.lock().unwrap().len();
            if goes_on {
                assert!(
                    n >= 3,
                    "{metrics:?} went on: {n} attempts in 45 ms at 10 ms"
                );
            } else {
                assert_eq!(n, 0, "{metrics:?} paused for the sync");
            }
        }
    }
}
