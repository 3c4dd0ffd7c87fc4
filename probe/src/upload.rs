//! Sending spooled batches to a collector: QUIC first, HTTPS when QUIC
//! does not get through (networks that block UDP), retries with
//! exponential backoff and jitter, and deletion from the spool only on
//! acknowledgement.

use crate::spool::Spool;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use vantage_tls::{TlsClient, Trust, TrustError};
use vantage_wire::upload::{self, Ack, AckStatus};

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

    async fn addr(&self) -> Result<SocketAddr, String> {
        tokio::net::lookup_host((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| format!("resolving {}: {e}", self.target.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.target.host))
    }

    /// Sends one batch and returns the collector's answer, or why no answer came.
    pub async fn send(&mut self, batch: &[u8]) -> Result<Ack, String> {
        let addr = self.addr().await?;
        if self.avoid_quic_until.is_none_or(|t| Instant::now() >= t) {
            match tokio::time::timeout(EXCHANGE_TIMEOUT, self.send_quic(addr, batch)).await {
                Ok(Ok(ack)) => {
                    self.avoid_quic_until = None;
                    return Ok(ack);
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "QUIC upload failed; falling back to HTTPS")
                }
                Err(_) => tracing::info!("QUIC upload timed out; falling back to HTTPS"),
            }
            self.conn = None;
            self.avoid_quic_until = Some(Instant::now() + QUIC_RETRY_AFTER);
        }
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.send_https(addr, batch))
            .await
            .map_err(|_| "HTTPS upload timed out".to_string())?
    }

    async fn send_quic(&mut self, addr: SocketAddr, batch: &[u8]) -> Result<Ack, String> {
        if self.endpoint.is_none() {
            // A collector that died mid-exchange is noticed within seconds,
            // and the batch is retried, instead of waiting out a long idle timeout.
            let endpoint = self
                .quic_tls
                .quic_endpoint(addr, Duration::from_secs(5), Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            self.endpoint = Some(endpoint);
        }
        let conn = match self.conn.as_ref().filter(|c| c.close_reason().is_none()) {
            Some(c) => c.clone(),
            None => {
                let endpoint = self.endpoint.as_ref().ok_or("no QUIC endpoint")?;
                let connecting = endpoint
                    .connect(addr, &self.target.server_name)
                    .map_err(|e| e.to_string())?;
                let c = tokio::time::timeout(self.quic_timeout, connecting)
                    .await
                    .map_err(|_| "QUIC handshake timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                self.conn = Some(c.clone());
                c
            }
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&upload::encode_request(&self.target.token, batch))
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let answer = recv
            .read_to_end(64 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        Ack::decode(&answer).map_err(|e| e.to_string())
    }

    async fn send_https(&mut self, addr: SocketAddr, batch: &[u8]) -> Result<Ack, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| "TCP connect timed out".to_string())?
            .map_err(|e| format!("TCP connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(self.target.server_name.clone())
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.https_tls.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::post(upload::HTTP_PATH)
            .header(hyper::header::HOST, self.target.server_name.as_str())
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.target.token),
            )
            .header(hyper::header::CONTENT_TYPE, "application/vnd.vantage.batch")
            .body(Full::new(Bytes::copy_from_slice(batch)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let reason = String::from_utf8_lossy(&body).trim().to_string();
        let status = AckStatus::from_http_status(code)
            .ok_or_else(|| format!("unexpected HTTP status {code}: {reason}"))?;
        Ok(Ack { status, reason })
    }
}

/// What an uploader did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadStats {
    /// Batches acknowledged as stored.
    pub stored: u64,
    /// Batches acknowledged as already stored.
    pub duplicates: u64,
    /// Batches the collector refused for good (kept in the spool's `rejected/`).
    pub rejected: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
}

/// Sends the spool's batches, oldest first, until `stop` turns true; then
/// keeps trying for at most `drain` before returning (what is left stays in
/// the spool for the next start). `notify` wakes it when a batch is added.
pub async fn run_uploader(
    mut uploader: Uploader,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    base_backoff: Duration,
) -> UploadStats {
    let mut stats = UploadStats::default();
    let mut attempt = 0u32;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none() && *stop.borrow() {
            deadline = Some(Instant::now() + drain);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return stats;
        }
        let next = spool.lock().map_err(|_| ()).and_then(|s| {
            s.oldest()
                .map_err(|e| tracing::error!(error = %e, "spool read failed"))
        });
        let next = next.unwrap_or_default();
        let Some((seq, bytes)) = next else {
            if deadline.is_some() {
                return stats;
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        let outcome = uploader.send(&bytes).await;
        let with_spool = |f: &mut dyn FnMut(&mut Spool) -> Result<(), crate::spool::SpoolError>| {
            if let Ok(mut s) = spool.lock() {
                if let Err(e) = f(&mut s) {
                    tracing::error!(error = %e, "spool update failed");
                }
            }
        };
        match outcome {
            Ok(ack) if ack.status.is_ack() => {
                with_spool(&mut |s| s.remove(seq));
                if ack.status == AckStatus::Stored {
                    stats.stored += 1;
                } else {
                    stats.duplicates += 1;
                }
                attempt = 0;
                continue;
            }
            Ok(ack) if !ack.status.is_retryable() => {
                tracing::error!(sequence = seq, status = ack.status.name(), reason = %ack.reason, "collector refused a batch for good; kept in the spool's rejected/ directory");
                with_spool(&mut |s| s.reject(seq));
                stats.rejected += 1;
                continue;
            }
            Ok(ack) => {
                tracing::warn!(sequence = seq, status = ack.status.name(), reason = %ack.reason, "collector did not take the batch; will retry")
            }
            Err(e) => {
                tracing::warn!(sequence = seq, error = %e, "collector not reachable; will retry")
            }
        }
        stats.retries += 1;
        attempt += 1;
        let wait = backoff(attempt, base_backoff, Duration::from_secs(300), &mut rng);
        let wait = match deadline {
            Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
            None => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed(), if deadline.is_none() => {}
        }
    }
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
}
