//! The collector's listeners: QUIC (ALPN `vantage-collect/1`) and HTTPS on
//! the same port number, plus `/metrics` and `/health` over HTTPS.

use crate::ingest::Ingest;
use crate::location::StoreLocation;
use crate::metrics::Metrics;
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
            .map_err(CollectorError::Writer)?,
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
        tasks.spawn(serve_quic(
            endpoint.clone(),
            ingest.clone(),
            config.max_connections,
            rx.clone(),
        ));
        let tls = Arc::new(config.identity.server_config(&[b"http/1.1"])?);
        tasks.spawn(serve_https(
            listener,
            tls,
            ingest.clone(),
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

    /// Whether the store answers now (what `/health` says).
    pub fn healthy(&self) -> bool {
        self.ingest.healthy()
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

async fn serve_quic(
    endpoint: quinn::Endpoint,
    ingest: Arc<Ingest>,
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
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(10), incoming).await else {
                return;
            };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let ingest = ingest.clone();
                tokio::spawn(async move {
                    let limit = MAX_BATCH_BYTES + 6 + upload::MAX_TOKEN_LEN;
                    let ack = match tokio::time::timeout(
                        Duration::from_secs(60),
                        recv.read_to_end(limit),
                    )
                    .await
                    {
                        Ok(Ok(bytes)) if campaign::is_poll(&bytes) => {
                            let answer = match campaign::decode_poll(&bytes) {
                                Ok((token, heartbeat)) => ingest.poll(Some(token), heartbeat).await,
                                Err(e) => {
                                    CampaignAnswer::status(PollStatus::Invalid, e.to_string(), 0)
                                }
                            };
                            let _ = send.write_all(answer.encode().as_bytes()).await;
                            let _ = send.finish();
                            return;
                        }
                        Ok(Ok(bytes)) => match upload::decode_request(&bytes) {
                            Ok((token, batch)) => ingest.handle(Some(token), batch).await,
                            Err(e) => Ack {
                                status: AckStatus::Invalid,
                                reason: e.to_string(),
                            },
                        },
                        Ok(Err(quinn::ReadToEndError::TooLong)) => Ack {
                            status: AckStatus::TooLarge,
                            reason: format!("more than {MAX_BATCH_BYTES} bytes"),
                        },
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "upload stream failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let _ = send.write_all(&ack.encode()).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

async fn serve_https(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ingest: Arc<Ingest>,
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
        let (acceptor, ingest) = (acceptor.clone(), ingest.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let ingest = ingest.clone();
                async move { Ok::<_, Infallible>(route(req, &ingest).await) }
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

async fn route(req: Request<Incoming>, ingest: &Ingest) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => {
            if ingest.healthy() {
                text(200, "ok\n")
            } else {
                text(503, "store not answering\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = text(200, ingest.metrics().render());
            if let Ok(v) = "text/plain; version=0.0.4".parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        (&Method::POST, upload::HTTP_PATH) => {
            let token = bearer(&req);
            let body = match Limited::new(req.into_body(), MAX_BATCH_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    let ack = Ack {
                        status: AckStatus::TooLarge,
                        reason: format!(
                            "more than {MAX_BATCH_BYTES} bytes, or the upload broke off"
                        ),
                    };
                    ingest.metrics().count(ack.status, 0);
                    return text(ack.status.http_status(), ack.reason);
                }
            };
            let ack = ingest.handle(token.as_deref(), &body).await;
            text(
                ack.status.http_status(),
                format!(
                    "{}\n",
                    if ack.reason.is_empty() {
                        ack.status.name()
                    } else {
                        &ack.reason
                    }
                ),
            )
        }
        (&Method::POST, campaign::HTTP_PATH) => {
            let token = bearer(&req);
            let answer = match Limited::new(req.into_body(), campaign::MAX_HEARTBEAT_BYTES)
                .collect()
                .await
            {
                Ok(b) => ingest.poll(token.as_deref(), &b.to_bytes()).await,
                Err(_) => CampaignAnswer::status(
                    PollStatus::Invalid,
                    format!(
                        "heartbeat of more than {} bytes, or it broke off",
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

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}
