//! The collector's listeners: QUIC (ALPN `vantage-collect/1`) and HTTPS on
//! the same port number, plus `/metrics` and `/health` over HTTPS.

use crate::ingest::Ingest;
use crate::location::StoreLocation;
use crate::metrics::Metrics;
use crate::upload_body::{BodyError, InFlight, UploadLimits};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use vantage_store::StoreError;
use vantage_tls::{Fingerprint, Identity, IdentityError};
use vantage_wire::campaign::{self, CampaignAnswer, PollStatus};
use vantage_wire::upload::{self, Ack, AckStatus};
use vantage_wire::MAX_BATCH_BYTES;

/// Where and how a collector listens.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// QUIC (UDP) and HTTPS (TCP) address; port 0 picks a free port for both.
    pub listen: SocketAddr,
    /// Certificate and key.
    pub identity: Identity,
    /// The store: a SQLite file, or a PostgreSQL database other
    /// collectors may share.
    pub db: StoreLocation,
    /// Most concurrent connections per protocol.
    pub max_connections: usize,
    /// How long one-minute series are kept (`None`: forever); the hourly
    /// and daily roll-ups are kept whatever this is.
    pub keep_raw: Option<std::time::Duration>,
    /// Bounds on reading uploads: time per body, memory of all together.
    pub limits: UploadLimits,
}

/// Why a collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A port could not be bound.
    #[error("cannot listen on {proto} {addr}: {source}")]
    Bind {
        /// Protocol.
        proto: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificate problems.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The writer thread did not start.
    #[error("starting the store writer: {0}")]
    Writer(std::io::Error),
}

/// A running collector.
pub struct Collector {
    quic_addr: SocketAddr,
    https_addr: SocketAddr,
    fingerprint: Fingerprint,
    ingest: Arc<Ingest>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: quinn::Endpoint,
}

impl Collector {
    /// Opens the store, binds both listeners and starts serving.
    pub async fn start(config: CollectorConfig) -> Result<Self, CollectorError> {
        let writer = config.db.open()?;
        let auth = config.db.open()?;
        let folds = config.db.open()?;
        let ingest = Arc::new(
            Ingest::start(
                writer,
                auth,
                folds,
                Arc::new(Metrics::default()),
                crate::upkeep::UpkeepConfig {
                    keep_raw: config.keep_raw,
                    ..Default::default()
                },
            )
            .map_err(CollectorError::Writer)?
            .with_upload_rate(config.limits.per_token),
        );
        let fingerprint = config.identity.fingerprint();

        let server =
            config
                .identity
                .quic_server_config(upload::ALPN, 64, Duration::from_secs(60))?;
        // QUIC and HTTPS share one port number. With port 0 the system
        // picks the UDP port; the same TCP port may be taken by someone
        // else, so then try another pair (bounded) rather than fail.
        let tries = if config.listen.port() == 0 { 20 } else { 1 };
        let mut bound = None;
        let mut last_err = None;
        for _ in 0..tries {
            let endpoint =
                quinn::Endpoint::server(server.clone(), config.listen).map_err(|source| {
                    CollectorError::Bind {
                        proto: "QUIC (UDP)",
                        addr: config.listen,
                        source,
                    }
                })?;
            let quic_addr = endpoint
                .local_addr()
                .map_err(|source| CollectorError::Bind {
                    proto: "QUIC (UDP)",
                    addr: config.listen,
                    source,
                })?;
            let tcp_addr = SocketAddr::new(config.listen.ip(), quic_addr.port());
            match tokio::net::TcpListener::bind(tcp_addr).await {
                Ok(listener) => {
                    bound = Some((endpoint, quic_addr, tcp_addr, listener));
                    break;
                }
                Err(source) => {
                    endpoint.close(0u32.into(), b"");
                    last_err = Some(CollectorError::Bind {
                        proto: "HTTPS (TCP)",
                        addr: tcp_addr,
                        source,
                    });
                }
            }
        }
        let Some((endpoint, quic_addr, tcp_addr, listener)) = bound else {
            return Err(last_err.unwrap_or(CollectorError::Bind {
                proto: "HTTPS (TCP)",
                addr: config.listen,
                source: std::io::Error::other("no free port pair"),
            }));
        };
        let https_addr = listener
            .local_addr()
            .map_err(|source| CollectorError::Bind {
                proto: "HTTPS (TCP)",
                addr: tcp_addr,
                source,
            })?;
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let uploads = Uploads {
            ingest: ingest.clone(),
            in_flight: Arc::new(InFlight::new(config.limits)),
            limits: config.limits,
        };
        tasks.spawn(serve_quic(
            endpoint.clone(),
            uploads.clone(),
            config.max_connections,
            rx.clone(),
        ));
        let tls = Arc::new(config.identity.server_config(&[b"http/1.1"])?);
        tasks.spawn(serve_https(
            listener,
            tls,
            uploads,
            config.max_connections,
            rx,
        ));
        tracing::info!(%quic_addr, %https_addr, %fingerprint, db = %config.db.place(), "collector listening");
        Ok(Collector {
            quic_addr,
            https_addr,
            fingerprint,
            ingest,
            shutdown,
            tasks,
            endpoint,
        })
    }

    /// QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }
    /// HTTPS address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }
    /// Certificate fingerprint for probes to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// Counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.ingest.metrics()
    }

    /// What `/health` says: `Ok` when the store answers and the last
    /// commit went through, else what is wrong.
    pub fn health(&self) -> Result<(), String> {
        self.ingest.health()
    }

    /// Stops accepting and waits (bounded) for the listeners to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint.close(0u32.into(), b"collector shutting down");
        let wait = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// What both listeners share: the ingest path, and the room and time
/// uploads are read in.
#[derive(Clone)]
struct Uploads {
    ingest: Arc<Ingest>,
    in_flight: Arc<InFlight>,
    limits: UploadLimits,
}

impl Uploads {
    /// Counts and logs a body that was not read whole; the answer to it.
    fn refuse_body(&self, e: BodyError) -> Ack {
        let ack = e.ack();
        self.ingest.refused(&ack, e.counted_as());
        ack
    }
}

/// How long a client may take to send a message's head and token.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_quic(
    endpoint: quinn::Endpoint,
    uploads: Uploads,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let uploads = uploads.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(10), incoming).await else {
                return;
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                let uploads = uploads.clone();
                tokio::spawn(async move { serve_stream(send, recv, &uploads).await });
            }
        });
    }
}

/// One QUIC stream: a campaign poll or an upload, told apart by the head.
async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, uploads: &Uploads) {
    let mut head = [0u8; upload::HEAD_LEN];
    match tokio::time::timeout(HEAD_TIMEOUT, recv.read_exact(&mut head)).await {
        Ok(Ok(())) => {}
        Ok(Err(quinn::ReadExactError::FinishedEarly(_))) => {
            let ack = Ack {
                status: AckStatus::Invalid,
                reason: upload::UploadError::Truncated.to_string(),
            };
            uploads.ingest.refused(&ack, ack.status.name());
            let _ = send.write_all(&ack.encode()).await;
            let _ = send.finish();
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "upload stream failed");
            return;
        }
        Err(_) => return,
    }
    if campaign::is_poll(&head) {
        let answer = poll_over_quic(&head, &mut recv, uploads).await;
        let _ = send.write_all(answer.encode().as_bytes()).await;
        let _ = send.finish();
        return;
    }
    let Some(ack) = upload_over_quic(&head, &mut recv, uploads).await else {
        return;
    };
    if !ack.status.is_ack() {
        // Whatever else the client sends is not wanted.
        let _ = recv.stop(0u32.into());
    }
    let _ = send.write_all(&ack.encode()).await;
    let _ = send.finish();
}

async fn poll_over_quic(
    head: &[u8],
    recv: &mut quinn::RecvStream,
    uploads: &Uploads,
) -> CampaignAnswer {
    let limit = 255 + campaign::MAX_HEARTBEAT_BYTES;
    let rest = match tokio::time::timeout(uploads.limits.body_timeout, recv.read_to_end(limit))
        .await
    {
        Ok(Ok(rest)) => rest,
        Ok(Err(e)) => {
            return CampaignAnswer::status(PollStatus::Invalid, format!("campaign poll: {e}"), 0)
        }
        Err(_) => {
            return CampaignAnswer::status(
                PollStatus::Invalid,
                "campaign poll did not arrive in time",
                0,
            )
        }
    };
    let bytes = [head, &rest].concat();
    match campaign::decode_poll(&bytes) {
        Ok((token, heartbeat)) => uploads.ingest.poll(Some(token), heartbeat).await,
        Err(e) => CampaignAnswer::status(PollStatus::Invalid, e.to_string(), 0),
    }
}

/// Reads an upload's token, checks it, and only then reads and stores its
/// batch. `None` when the stream broke and nobody is left to answer.
async fn upload_over_quic(
    head: &[u8],
    recv: &mut quinn::RecvStream,
    uploads: &Uploads,
) -> Option<Ack> {
    let invalid = |e: upload::UploadError| {
        let ack = Ack {
            status: AckStatus::Invalid,
            reason: e.to_string(),
        };
        uploads.ingest.refused(&ack, ack.status.name());
        ack
    };
    let n = match upload::token_len(head) {
        Ok(n) => n,
        Err(e) => return Some(invalid(e)),
    };
    let mut token = vec![0u8; n];
    match tokio::time::timeout(HEAD_TIMEOUT, recv.read_exact(&mut token)).await {
        Ok(Ok(())) => {}
        Ok(Err(quinn::ReadExactError::FinishedEarly(_))) => {
            return Some(invalid(upload::UploadError::Truncated))
        }
        _ => return None,
    }
    let Ok(token) = std::str::from_utf8(&token) else {
        return Some(invalid(upload::UploadError::BadToken));
    };
    let admitted = match uploads.ingest.admit(Some(token)) {
        Ok(admitted) => admitted,
        Err(ack) => return Some(ack),
    };
    let mut body = match uploads.in_flight.body(MAX_BATCH_BYTES, None).await {
        Ok(body) => body,
        Err(e) => return Some(uploads.refuse_body(e)),
    };
    loop {
        match tokio::time::timeout_at(body.deadline(), recv.read_chunk(64 << 10, true)).await {
            Err(_) => return Some(uploads.refuse_body(body.timed_out())),
            Ok(Ok(Some(chunk))) => {
                if let Err(e) = body.push(&chunk.bytes).await {
                    return Some(uploads.refuse_body(e));
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                uploads.refuse_body(BodyError::Broken(e.to_string()));
                return None;
            }
        }
    }
    let (bytes, _room) = body.finish();
    Some(uploads.ingest.store(admitted, &bytes).await)
}

async fn serve_https(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    uploads: Uploads,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (acceptor, uploads) = (acceptor.clone(), uploads.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let uploads = uploads.clone();
                async move { Ok::<_, Infallible>(route(req, &uploads).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn text(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// `/metrics` in the format asked for: Prometheus protobuf (with native
/// histograms) when the scraper's Accept header names it first among what
/// it takes, else the text format.
fn metrics_answer(req: &Request<Incoming>, metrics: &Arc<Metrics>) -> Response<Full<Bytes>> {
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, content_type) = if wants_protobuf(accept) {
        (
            Bytes::from(metrics.render_protobuf()),
            PROTOBUF_CONTENT_TYPE,
        )
    } else {
        (Bytes::from(metrics.render()), TEXT_CONTENT_TYPE)
    };
    let mut r = text(200, body);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether an Accept header prefers the delimited protobuf format: it is
/// listed, and no text type has a higher quality. Prometheus asks for it
/// first when native histograms are on.
fn wants_protobuf(accept: &str) -> bool {
    let quality = |part: &str| {
        part.split(';')
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0)
    };
    let mut best_protobuf: Option<f32> = None;
    let mut best_other: Option<f32> = None;
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim();
        let slot = if media == "application/vnd.google.protobuf"
            && part.contains("io.prometheus.client.MetricFamily")
            && part.contains("encoding=delimited")
        {
            &mut best_protobuf
        } else {
            &mut best_other
        };
        let q = quality(part);
        *slot = Some(slot.map_or(q, |b: f32| b.max(q)));
    }
    match (best_protobuf, best_other) {
        (Some(p), Some(o)) => p > 0.0 && p >= o,
        (Some(p), None) => p > 0.0,
        _ => false,
    }
}

async fn route(req: Request<Incoming>, uploads: &Uploads) -> Response<Full<Bytes>> {
    let ingest = &uploads.ingest;
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => match ingest.health() {
            Ok(()) => text(200, "ok\n"),
            Err(why) => text(503, format!("{why}\n")),
        },
        (&Method::GET, "/metrics") => metrics_answer(&req, ingest.metrics()),
        (&Method::POST, upload::HTTP_PATH) => upload_over_https(req, uploads).await,
        (&Method::POST, campaign::HTTP_PATH) => {
            let token = bearer(&req);
            let body = Limited::new(req.into_body(), campaign::MAX_HEARTBEAT_BYTES).collect();
            let answer = match tokio::time::timeout(uploads.limits.body_timeout, body).await {
                Ok(Ok(b)) => ingest.poll(token.as_deref(), &b.to_bytes()).await,
                _ => CampaignAnswer::status(
                    PollStatus::Invalid,
                    format!(
                        "heartbeat of more than {} bytes, or it broke off or did not arrive in time",
                        campaign::MAX_HEARTBEAT_BYTES
                    ),
                    0,
                ),
            };
            text(answer.status.http_status(), answer.encode())
        }
        _ => text(
            404,
            "try POST /v1/batches, POST /v1/campaign, GET /metrics or GET /health\n",
        ),
    }
}

/// `POST /v1/batches`: the token is checked from the request's head, and
/// a refused upload is answered (and the connection closed) before any of
/// its body is read; then the body is read under the upload limits.
async fn upload_over_https(req: Request<Incoming>, uploads: &Uploads) -> Response<Full<Bytes>> {
    let answer = |ack: Ack| {
        let reason = if ack.reason.is_empty() {
            ack.status.name().to_string()
        } else {
            ack.reason
        };
        let mut r = text(ack.status.http_status(), format!("{reason}\n"));
        if !ack.status.is_ack() {
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        r
    };
    let admitted = match uploads.ingest.admit(bearer(&req).as_deref()) {
        Ok(admitted) => admitted,
        Err(ack) => {
            linger(req.into_body());
            return answer(ack);
        }
    };
    let expected = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut incoming = req.into_body();
    let mut body = match uploads.in_flight.body(MAX_BATCH_BYTES, expected).await {
        Ok(body) => body,
        Err(e) => {
            linger(incoming);
            return answer(uploads.refuse_body(e));
        }
    };
    loop {
        match tokio::time::timeout_at(body.deadline(), incoming.frame()).await {
            Err(_) => return answer(uploads.refuse_body(body.timed_out())),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(e) = body.push(data).await {
                        linger(incoming);
                        return answer(uploads.refuse_body(e));
                    }
                }
            }
            Ok(Some(Err(e))) => {
                return answer(uploads.refuse_body(BodyError::Broken(e.to_string())))
            }
        }
    }
    let (bytes, _room) = body.finish();
    answer(uploads.ingest.store(admitted, &bytes).await)
}

/// How long, and how much, of a refused upload's body is read and thrown
/// away after the refusal is sent. Closing at once, with the client still
/// sending, would reset the connection and the client could lose the
/// answer; this keeps nothing in memory and holds the slot for a bounded
/// time (as web servers' lingering close does).
const LINGER: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = MAX_BATCH_BYTES + (1 << 20);

/// Reads and drops what is left of `body`, within [`LINGER`] and
/// [`LINGER_BYTES`], on a task of its own (the answer goes out meanwhile).
fn linger(mut body: Incoming) {
    tokio::spawn(async move {
        let drain = async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::wants_protobuf;

    #[test]
    fn protobuf_only_when_the_scraper_prefers_it() {
        // Prometheus with native histograms on, and without.
        assert!(wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(!wants_protobuf("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
        assert!(!wants_protobuf(""), "curl sends none");
        assert!(!wants_protobuf("*/*"));
        assert!(!wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.2,text/plain;q=0.9"));
        assert!(!wants_protobuf("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"), "only the delimited encoding is written");
    }
}
