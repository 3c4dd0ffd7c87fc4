//! The loop that drives an [`Uploader`]: the spool's batches oldest first,
//! backoff with jitter between failures, a bounded drain on stop. It reads
//! the clock and sleeps, so it lives in the driver layer.

use crate::spool::Spool;
use crate::upload::{backoff, Failover, Uploader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use vantage_wire::upload::AckStatus;

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

impl UploadStats {
    /// Both runs' counts together.
    pub fn plus(self, other: UploadStats) -> UploadStats {
        UploadStats {
            stored: self.stored + other.stored,
            duplicates: self.duplicates + other.duplicates,
            rejected: self.rejected + other.rejected,
            retries: self.retries + other.retries,
        }
    }
}

/// Sends the spool's batches, oldest first, to the first of `uploaders`
/// that takes them (see [`Failover`]), until `stop` turns true; then keeps
/// trying for at most `drain` before returning (what is left stays in the
/// spool for the next start). `notify` wakes it when a batch is added.
pub async fn run_uploader(
    uploaders: Vec<Uploader>,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    stop: watch::Receiver<bool>,
    drain: Duration,
    base_backoff: Duration,
) -> UploadStats {
    let never = Arc::new(Notify::new());
    run_uploader_woken(uploaders, spool, notify, never, stop, drain, base_backoff).await
}

/// [`run_uploader`], which also ends a backoff early when `reachable` is
/// notified (a campaign poll got an answer: the collector is back), so a
/// fleet's backlog goes up within a poll interval of the collector's
/// return rather than after the backoff (up to 5 minutes).
pub(crate) async fn run_uploader_woken(
    mut uploaders: Vec<Uploader>,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    reachable: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    base_backoff: Duration,
) -> UploadStats {
    let mut stats = UploadStats::default();
    let mut attempt = 0u32;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    let mut deadline: Option<Instant> = None;
    let mut failover = Failover::new(uploaders.len());
    if uploaders.is_empty() {
        tracing::error!("no collector to upload to; batches stay in the spool");
        return stats;
    }
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
        let now = Instant::now();
        let which = failover.pick(now);
        let Some(uploader) = uploaders.get_mut(which) else {
            return stats;
        };
        let outcome = uploader.send(&bytes, now).await;
        let with_spool = |f: &mut dyn FnMut(&mut Spool) -> Result<(), crate::spool::SpoolError>| {
            if let Ok(mut s) = spool.lock() {
                if let Err(e) = f(&mut s) {
                    tracing::error!(error = %e, "spool update failed");
                }
            }
        };
        match outcome {
            Ok(ack) if ack.status.is_ack() => {
                failover.answered();
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
                failover.answered();
                tracing::error!(sequence = seq, status = ack.status.name(), reason = %ack.reason, "collector refused a batch for good; kept in the spool's rejected/ directory");
                with_spool(&mut |s| s.reject(seq));
                stats.rejected += 1;
                continue;
            }
            Ok(ack) => {
                tracing::warn!(sequence = seq, collector = which, status = ack.status.name(), reason = %ack.reason, "collector did not take the batch; will retry")
            }
            Err(e) => {
                tracing::warn!(sequence = seq, collector = which, error = %e, "collector not reachable; will retry")
            }
        }
        stats.retries += 1;
        if !failover.failed(Instant::now()) {
            // Another collector has not failed this round: try it now.
            continue;
        }
        attempt += 1;
        let wait = backoff(attempt, base_backoff, Duration::from_secs(300), &mut rng);
        let wait = match deadline {
            Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
            None => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = reachable.notified() => {}
            _ = stop.changed(), if deadline.is_none() => {}
        }
    }
}
