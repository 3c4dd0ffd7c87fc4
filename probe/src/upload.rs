//! Sending spooled batches to a collector: QUIC first, HTTPS when QUIC
//! does not get through (networks that block UDP), retries with
//! exponential backoff and jitter, and deletion from the spool only on
//! acknowledgement; campaign polls go the same way. The loop that drives an [`Uploader`] (clock, sleeps,
//! backoff) is in the driver layer, `run`; it is re-exported here.

pub use crate::run::upload_loop::{run_uploader, UploadStats};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vantage_tls::{TlsClient, Trust, TrustError};
use vantage_wire::campaign::{self, CampaignAnswer, Heartbeat};
use vantage_wire::upload::{self, Ack, AckStatus};

/// How long a probe that failed over stays off its first collector
/// before it tries that one again.
pub const RETURN_AFTER: Duration = Duration::from_secs(300);

/// Which of several collectors the next batch goes to. Plain state, time
/// passed in: the probe stays on a collector while it answers, moves to
/// the next when one is down or refusing (without waiting, while some
/// collector of this round is untried), backs off only once every one has
/// failed in a row, and goes back to the first after [`RETURN_AFTER`].
#[derive(Debug, Clone)]
pub struct Failover {
    count: usize,
    current: usize,
    failed_in_a_row: usize,
    left_first_at: Option<Instant>,
}

impl Failover {
    /// Starts on the first of `count` collectors (at least one).
    pub fn new(count: usize) -> Self {
        Failover {
            count: count.max(1),
            current: 0,
            failed_in_a_row: 0,
            left_first_at: None,
        }
    }

    /// The collector to send to at `now`: the current one, or the first
    /// again once the probe has been away from it for [`RETURN_AFTER`].
    pub fn pick(&mut self, now: Instant) -> usize {
        if let Some(left) = self.left_first_at {
            if now.saturating_duration_since(left) >= RETURN_AFTER {
                self.current = 0;
                self.left_first_at = None;
                self.failed_in_a_row = 0;
            }
        }
        self.current
    }

    /// The current collector took the batch.
    pub fn answered(&mut self) {
        self.failed_in_a_row = 0;
    }

    /// The current collector did not take the batch at `now`; moves to the
    /// next. True when every collector has now failed in a row, so the
    /// caller backs off before the next try.
    pub fn failed(&mut self, now: Instant) -> bool {
        self.failed_in_a_row += 1;
        if self.count > 1 {
            if self.current == 0 {
                self.left_first_at = Some(now);
            }
            self.current = (self.current + 1) % self.count;
            if self.current == 0 {
                self.left_first_at = None;
            }
        }
        if self.failed_in_a_row >= self.count {
            self.failed_in_a_row = 0;
            true
        } else {
            false
        }
    }
}

/// Where batches go, and how the probe proves who it is.
#[derive(Debug, Clone)]
pub struct CollectorTarget {
    /// Host name or address of the collector.
    pub host: String,
    /// Its QUIC and HTTPS port.
    pub port: u16,
    /// TLS server name.
    pub server_name: String,
    /// How to trust its certificate.
    pub trust: Trust,
    /// This probe's token.
    pub token: String,
}

/// Why one batch got no answer from the collector. Every one is retried.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The collector's name did not resolve.
    #[error("resolving {host}: {source} (check --collector)")]
    Resolve {
        /// The name.
        host: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The name resolved to nothing.
    #[error("{host} has no address (check --collector)")]
    NoAddress {
        /// The name.
        host: String,
    },
    /// A step took longer than its limit.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// No QUIC client could be made.
    #[error(transparent)]
    Client(#[from] TrustError),
    /// QUIC failed: connect, handshake or stream (quinn's words).
    #[error("QUIC: {0}")]
    Quic(String),
    /// TCP connect failed.
    #[error("TCP connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake over TCP failed.
    #[error("TLS: {0} (check --collector-pin or --collector-ca-file)")]
    Tls(std::io::Error),
    /// HTTP/1.1 failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The collector answered with a status the protocol does not know.
    #[error("unexpected HTTP status {code}: {reason}")]
    Status {
        /// The status.
        code: u16,
        /// The body the collector sent.
        reason: String,
    },
    /// The QUIC answer did not decode.
    #[error("the collector's answer: {0}")]
    Answer(String),
}

fn quic(e: impl std::fmt::Display) -> UploadError {
    UploadError::Quic(e.to_string())
}

fn http(e: impl std::fmt::Display) -> UploadError {
    UploadError::Http(e.to_string())
}

/// How long QUIC is skipped after it failed, before it is tried again.
const QUIC_RETRY_AFTER: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (from 1): exponential from
/// `base`, capped at `cap`, times a random factor in [0.5, 1] so many
/// probes that lost the collector at once do not come back in step.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(rng.gen_range(0.5..=1.0))
}

/// A connection to one collector.
pub struct Uploader {
    target: CollectorTarget,
    endpoint: Option<quinn::Endpoint>,
    quic_tls: TlsClient,
    https_tls: TlsClient,
    conn: Option<quinn::Connection>,
    avoid_quic_until: Option<Instant>,
    quic_timeout: Duration,
}

impl Uploader {
    /// How long a QUIC handshake may take before HTTPS is tried (default 5 s).
    pub fn with_quic_timeout(mut self, timeout: Duration) -> Self {
        self.quic_timeout = timeout;
        self
    }

    /// Prepares TLS for both transports; connects lazily.
    pub fn new(target: CollectorTarget) -> Result<Self, TrustError> {
        Ok(Uploader {
            quic_tls: TlsClient::new(&target.trust, &[upload::ALPN])?,
            https_tls: TlsClient::new(&target.trust, &[b"http/1.1"])?,
            target,
            endpoint: None,
            conn: None,
            avoid_quic_until: None,
            quic_timeout: CONNECT_TIMEOUT,
        })
    }

    async fn addr(&self) -> Result<SocketAddr, UploadError> {
        let host = || self.target.host.clone();
        tokio::net::lookup_host((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|source| UploadError::Resolve {
                host: host(),
                source,
            })?
            .next()
            .ok_or_else(|| UploadError::NoAddress { host: host() })
    }

    /// Sends one batch at `now` and returns the collector's answer, or why
    /// no answer came. QUIC is skipped for a while after it failed.
    pub async fn send(&mut self, batch: &[u8], now: Instant) -> Result<Ack, UploadError> {
        let request = Request {
            quic: upload::encode_request(&self.target.token, batch),
            path: upload::HTTP_PATH,
            content_type: "application/vnd.vantage.batch",
            body: batch,
            what: "upload",
        };
        match self.exchange(request, now).await? {
            Answer::Quic(bytes) => {
                Ack::decode(&bytes).map_err(|e| UploadError::Answer(e.to_string()))
            }
            Answer::Https { code, body } => {
                let reason = String::from_utf8_lossy(&body).trim().to_string();
                let Some(status) = AckStatus::from_http_status(code) else {
                    return Err(UploadError::Status { code, reason });
                };
                Ok(Ack { status, reason })
            }
        }
    }

    /// Polls for this probe's campaign at `now`, with its heartbeat, on
    /// the same transports as batches.
    pub async fn poll(
        &mut self,
        heartbeat: &Heartbeat,
        now: Instant,
    ) -> Result<CampaignAnswer, UploadError> {
        let text = heartbeat.encode();
        let request = Request {
            quic: campaign::encode_poll(&self.target.token, heartbeat),
            path: campaign::HTTP_PATH,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes(),
            what: "campaign poll",
        };
        let (code, bytes) = match self.exchange(request, now).await? {
            Answer::Quic(bytes) => (None, bytes),
            Answer::Https { code, body } => (Some(code), body.to_vec()),
        };
        CampaignAnswer::decode(&bytes).map_err(|e| match code {
            // A collector from before campaigns answers 404 in words.
            Some(code) if code != 200 => UploadError::Status {
                code,
                reason: String::from_utf8_lossy(&bytes).trim().to_string(),
            },
            _ => UploadError::Answer(e.to_string()),
        })
    }

    /// One request and its answer: QUIC first, HTTPS when QUIC fails
    /// (QUIC is then skipped for [`QUIC_RETRY_AFTER`]).
    async fn exchange(
        &mut self,
        request: Request<'_>,
        now: Instant,
    ) -> Result<Answer, UploadError> {
        let addr = self.addr().await?;
        if self.avoid_quic_until.is_none_or(|t| now >= t) {
            match tokio::time::timeout(EXCHANGE_TIMEOUT, self.quic_exchange(addr, &request.quic))
                .await
            {
                Ok(Ok(answer)) => {
                    self.avoid_quic_until = None;
                    return Ok(Answer::Quic(answer));
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "QUIC {} failed; falling back to HTTPS", request.what)
                }
                Err(_) => tracing::info!("QUIC {} timed out; falling back to HTTPS", request.what),
            }
            self.conn = None;
            self.avoid_quic_until = Some(now + QUIC_RETRY_AFTER);
        }
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.https_exchange(addr, &request))
            .await
            .map_err(|_| UploadError::Timeout("HTTPS exchange"))?
    }

    async fn quic_exchange(
        &mut self,
        addr: SocketAddr,
        request: &[u8],
    ) -> Result<Vec<u8>, UploadError> {
        if self.endpoint.is_none() {
            // A collector that died mid-exchange is noticed within seconds,
            // and the batch is retried, instead of waiting out a long idle timeout.
            let endpoint = self.quic_tls.quic_endpoint(
                addr,
                Duration::from_secs(5),
                Duration::from_secs(2),
            )?;
            self.endpoint = Some(endpoint);
        }
        let conn = match self.conn.as_ref().filter(|c| c.close_reason().is_none()) {
            Some(c) => c.clone(),
            None => {
                let endpoint = self.endpoint.as_ref().ok_or_else(|| quic("no endpoint"))?;
                let connecting = endpoint
                    .connect(addr, &self.target.server_name)
                    .map_err(quic)?;
                let c = tokio::time::timeout(self.quic_timeout, connecting)
                    .await
                    .map_err(|_| UploadError::Timeout("QUIC handshake"))?
                    .map_err(quic)?;
                self.conn = Some(c.clone());
                c
            }
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(quic)?;
        send.write_all(request).await.map_err(quic)?;
        send.finish().map_err(quic)?;
        recv.read_to_end(campaign::MAX_ANSWER_BYTES)
            .await
            .map_err(quic)
    }

    async fn https_exchange(
        &mut self,
        addr: SocketAddr,
        request: &Request<'_>,
    ) -> Result<Answer, UploadError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| UploadError::Timeout("TCP connect"))?
            .map_err(UploadError::Connect)?;
        let name = rustls::pki_types::ServerName::try_from(self.target.server_name.clone())
            .map_err(|e| UploadError::Tls(std::io::Error::other(e)))?;
        let tls = tokio_rustls::TlsConnector::from(self.https_tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(UploadError::Tls)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let http_request = hyper::Request::post(request.path)
            .header(hyper::header::HOST, self.target.server_name.as_str())
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.target.token),
            )
            .header(hyper::header::CONTENT_TYPE, request.content_type)
            .body(Full::new(Bytes::copy_from_slice(request.body)))
            .map_err(http)?;
        let response = sender.send_request(http_request).await.map_err(http)?;
        let code = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), campaign::MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        Ok(Answer::Https { code, body })
    }
}

/// One request, as each transport sends it.
struct Request<'a> {
    /// The QUIC stream's bytes.
    quic: Vec<u8>,
    /// The HTTPS route.
    path: &'static str,
    content_type: &'static str,
    /// The HTTPS body.
    body: &'a [u8],
    /// For logs: "upload", "campaign poll".
    what: &'static str,
}

/// The collector's answer, as it came.
enum Answer {
    Quic(Vec<u8>),
    Https { code: u16, body: Bytes },
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        for attempt in 1..30 {
            let d = backoff(attempt, base, cap, &mut rng);
            let full = base.saturating_mul(1 << (attempt - 1).min(20)).min(cap);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        let samples: Vec<_> = (0..20).map(|_| backoff(3, base, cap, &mut rng)).collect();
        assert!(samples.windows(2).any(|w| w[0] != w[1]), "jitter");
    }

    #[test]
    fn fails_over_in_order_backs_off_after_a_full_round_and_returns_to_the_first() {
        let t0 = Instant::now();
        let mut f = Failover::new(3);
        assert_eq!(f.pick(t0), 0);
        assert!(!f.failed(t0), "two more to try");
        assert_eq!(f.pick(t0), 1);
        assert!(!f.failed(t0));
        assert_eq!(f.pick(t0), 2);
        assert!(f.failed(t0), "all three failed in a row: back off");
        assert_eq!(f.pick(t0), 0, "the next round starts at the first");
        // The first is down, the second answers: the probe stays there...
        assert!(!f.failed(t0));
        assert_eq!(f.pick(t0), 1);
        f.answered();
        let later = t0 + RETURN_AFTER - Duration::from_secs(1);
        assert_eq!(f.pick(later), 1);
        f.answered();
        // ...until it has been away from the first for RETURN_AFTER.
        assert_eq!(f.pick(t0 + RETURN_AFTER), 0);
        assert_eq!(f.pick(t0 + RETURN_AFTER), 0);
    }

    #[test]
    fn one_collector_backs_off_after_every_failure() {
        let t0 = Instant::now();
        let mut f = Failover::new(1);
        assert!(f.failed(t0));
        assert_eq!(f.pick(t0 + RETURN_AFTER * 2), 0);
        assert!(f.failed(t0));
    }
}
