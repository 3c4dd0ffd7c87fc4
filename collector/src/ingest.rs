//! Ingest: authenticate, validate, store once, then acknowledge. The store
//! is written by one thread that commits whatever batches are waiting in
//! one transaction (group commit), and each batch is acknowledged only
//! after the commit that holds it has returned.

use crate::known_tokens::{KnownTokens, TOKENS_REMEMBERED, TOKEN_FRESH};
use crate::metrics::Metrics;
use crate::upkeep::{Step, Upkeep, UpkeepConfig, FOLD_CHUNK, RETAIN_CHUNK, RETAIN_EVERY};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use vantage_store::{FoldPlan, Incoming, Inserted, Store, StoreError};
use vantage_wire::rate::{RateLimiter, SourceRate, Verdict};
use vantage_wire::upload::{Ack, AckStatus};
use vantage_wire::{Batch, MAX_BATCH_BYTES};

/// Most batches committed in one transaction.
const GROUP: usize = 256;
/// How far in the future a timestamp may be before the batch is refused
/// (a probe whose clock is that wrong labels its windows wrongly).
pub const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(600);

/// SHA-256 of a token, hex: what the store keeps instead of the token.
pub fn hash_token(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: `vt_` and 64 hex digits (256 bits).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "vt_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// How long no upload may arrive before the writer counts as idle: the
/// gap between one commit's acknowledgements and the probes' next
/// batches is not idleness.
const QUIET: Duration = Duration::from_millis(100);

/// The writer thread: commit what is waiting (group commit), then at most
/// one bounded upkeep step; steps that wait for a quiet store run only
/// once no upload has come for [`QUIET`]. A fold is read and merged by the
/// [`Planner`] thread meanwhile and written here when it comes back, so
/// ingest waits only for its writing. Ends when every sender is gone.
fn write_loop(
    runtime: &tokio::runtime::Runtime,
    mut rx: mpsc::Receiver<WriteJob>,
    writer: &mut dyn Store,
    mut planner: Planner,
    m: &Metrics,
    writes: &WriteHealth,
    mut upkeep: Upkeep,
) {
    let mut jobs = Vec::with_capacity(GROUP);
    loop {
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let busy = !jobs.is_empty();
        if busy {
            let stored = commit(writer, m, writes, std::mem::take(&mut jobs));
            upkeep.stored(stored);
        }
        if let Some(plan) = planner.ready() {
            write_fold(writer, m, &mut upkeep, plan, now_unix_ms());
        }
        let now = now_unix_ms();
        if let Some(step) = upkeep.due(now, false) {
            run_step(writer, &mut planner, m, &mut upkeep, step, now);
            continue;
        }
        if busy {
            continue;
        }
        let wait = upkeep.wait(now).map(|d| d.max(QUIET));
        let next = runtime.block_on(async {
            let timeout = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                plan = planner.next() => Woken::Plan(plan),
                job = rx.recv() => Woken::Job(job),
                () = timeout => Woken::Quiet,
            }
        });
        match next {
            Woken::Job(Some(job)) => jobs.push(job),
            Woken::Job(None) => return,
            Woken::Plan(Some(plan)) => write_fold(writer, m, &mut upkeep, plan, now_unix_ms()),
            // The planner thread ended (it panicked): fold on the writer.
            Woken::Plan(None) => planner = Planner::Inline,
            Woken::Quiet => {
                let now = now_unix_ms();
                if let Some(step) = upkeep.due(now, true) {
                    run_step(writer, &mut planner, m, &mut upkeep, step, now);
                }
            }
        }
    }
}

/// What woke the idle writer.
enum Woken {
    Job(Option<WriteJob>),
    Plan(Option<Result<FoldPlan, StoreError>>),
    Quiet,
}

/// Where folds are read and merged: a thread with its own handle on the
/// store, or (without one) the writer itself.
enum Planner {
    Thread {
        asks: std::sync::mpsc::Sender<usize>,
        plans: mpsc::UnboundedReceiver<Result<FoldPlan, StoreError>>,
    },
    Inline,
}

impl Planner {
    /// Starts the planner thread on `store`.
    fn start(mut store: Box<dyn Store>) -> std::io::Result<Self> {
        let (asks, asked) = std::sync::mpsc::channel::<usize>();
        let (planned, plans) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("collector-folds".into())
            .spawn(move || {
                for max in asked {
                    if planned.send(store.plan_fold(max)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Planner::Thread { asks, plans })
    }

    /// A plan that has come back, if one has.
    fn ready(&mut self) -> Option<Result<FoldPlan, StoreError>> {
        match self {
            Planner::Thread { plans, .. } => plans.try_recv().ok(),
            Planner::Inline => None,
        }
    }

    /// The next plan to come back; `None` when the thread has ended.
    async fn next(&mut self) -> Option<Result<FoldPlan, StoreError>> {
        match self {
            Planner::Thread { plans, .. } => plans.recv().await,
            Planner::Inline => std::future::pending().await,
        }
    }
}
/// Whether the writer's last commit went through: what `/health` says
/// besides whether the store answers, since a store on a full disk still
/// answers reads.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    last_failure: Mutex<Option<CommitFailed>>,
}

impl WriteHealth {
    fn succeeded(&self) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = None;
        }
    }

    fn failed(&self, failed: &CommitFailed) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = Some(failed.clone());
        }
    }

    /// Why the last commit failed, if it did.
    fn failure(&self) -> Option<String> {
        let f = self.last_failure.lock().ok()?.clone()?;
        let kind = if f.full {
            "storage_full"
        } else {
            "storage_unavailable"
        };
        Some(format!(
            "{kind}: the last commit failed, uploads are refused until one succeeds: {}",
            f.message
        ))
    }
}

/// Commits one group; returns how many batches were new.
fn commit(writer: &mut dyn Store, m: &Metrics, writes: &WriteHealth, jobs: Vec<WriteJob>) -> u64 {
    let started = Instant::now();
    let result = {
        let items: Vec<Incoming<'_>> = jobs
            .iter()
            .map(|j| Incoming {
                batch: &j.batch,
                raw: &j.raw,
                plain_histograms: &j.plain_histograms,
                token_hash: Some(&j.token_hash),
            })
            .collect();
        writer.insert_batches(&items, now_unix_ms())
    };
    m.commit(started.elapsed());
    match result {
        Ok(outcomes) => {
            writes.succeeded();
            let stored = outcomes.iter().filter(|o| **o == Inserted::Stored).count();
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
            stored as u64
        }
        Err(e) => {
            tracing::error!(error = %e, "store commit failed; {} batches answered unavailable", jobs.len());
            let failed = CommitFailed {
                message: e.to_string(),
                full: matches!(e, StoreError::Full { .. }),
            };
            writes.failed(&failed);
            for job in jobs {
                let _ = job.reply.send(Err(failed.clone()));
            }
            0
        }
    }
}

/// Runs one upkeep step, or starts it on the planner, and counts what it did.
fn run_step(
    writer: &mut dyn Store,
    planner: &mut Planner,
    m: &Metrics,
    upkeep: &mut Upkeep,
    step: Step,
    now: u64,
) {
    let result = match step {
        Step::Fold => {
            upkeep.planning();
            let plan = match planner {
                Planner::Thread { asks, .. } => match asks.send(FOLD_CHUNK) {
                    Ok(()) => return,
                    Err(_) => {
                        *planner = Planner::Inline;
                        writer.plan_fold(FOLD_CHUNK)
                    }
                },
                Planner::Inline => writer.plan_fold(FOLD_CHUNK),
            };
            return write_fold(writer, m, upkeep, plan, now);
        }
        Step::Retain { before_unix_ms } => writer
            .remove_raw_before(before_unix_ms, RETAIN_CHUNK)
            .map(|removed| {
                upkeep.retained(now, RETAIN_CHUNK, removed);
                m.removed_raw(removed);
            }),
    };
    if let Err(e) = result {
        upkeep_failed(m, upkeep, &e, "retention", now);
    }
}

/// Writes a fold the planner read and merged, and counts it.
fn write_fold(
    writer: &mut dyn Store,
    m: &Metrics,
    upkeep: &mut Upkeep,
    plan: Result<FoldPlan, StoreError>,
    now: u64,
) {
    match plan.and_then(|plan| writer.apply_fold(plan)) {
        Ok(Some(n)) => {
            upkeep.folded(now, FOLD_CHUNK, n);
            m.count_folded(n);
        }
        Ok(None) => upkeep.plan_dropped(),
        Err(e) => {
            upkeep.plan_dropped();
            upkeep_failed(m, upkeep, &e, "fold", now);
        }
    }
}

fn upkeep_failed(m: &Metrics, upkeep: &mut Upkeep, e: &StoreError, step: &str, now: u64) {
    upkeep.failed(now);
    m.upkeep_failed();
    tracing::error!(error = %e, step, "store upkeep failed; ingest goes on, upkeep retries in {} s", RETAIN_EVERY.as_secs());
}

struct WriteJob {
    batch: Batch,
    raw: Vec<u8>,
    plain_histograms: Vec<Vec<u8>>,
    token_hash: String,
    reply: oneshot::Sender<Result<Inserted, CommitFailed>>,
}

/// The ingest path, shared by the QUIC and HTTPS listeners.
pub struct Ingest {
    writer: mpsc::Sender<WriteJob>,
    auth: Mutex<Box<dyn Store>>,
    known: Mutex<KnownTokens>,
    writes: Arc<WriteHealth>,
    metrics: Arc<Metrics>,
    refusals: Mutex<crate::refusal_log::RefusalLog>,
    /// Uploads per token, when limited (see [`Ingest::with_upload_rate`]).
    upload_rate: Option<Mutex<RateLimiter<String>>>,
}

/// Tokens the per-token upload limit tracks at once.
const RATE_TOKENS: usize = 65_536;

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ingest {
    /// Starts the writer thread on `writer` (the store batches go to) and
    /// answers token look-ups from `auth` (a second handle on the same
    /// store, so look-ups do not wait for commits). Between commits the
    /// writer folds batches into the roll-ups, read and merged on `folds`
    /// (a third handle) by a thread of their own, and removes raw series
    /// past `upkeep`'s retention.
    pub fn start(
        mut writer: Box<dyn Store>,
        auth: Box<dyn Store>,
        folds: Box<dyn Store>,
        metrics: Arc<Metrics>,
        upkeep: UpkeepConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<WriteJob>(4 * GROUP);
        let m = metrics.clone();
        let unfolded = writer.unfolded_batches().unwrap_or(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let planner = Planner::start(folds)?;
        let writes = Arc::new(WriteHealth::default());
        let health = writes.clone();
        std::thread::Builder::new()
            .name("collector-writer".into())
            .spawn(move || {
                let upkeep = Upkeep::new(upkeep, unfolded);
                write_loop(&runtime, rx, writer.as_mut(), planner, &m, &writes, upkeep)
            })?;
        Ok(Ingest {
            writer: tx,
            auth: Mutex::new(auth),
            known: Mutex::new(KnownTokens::new(TOKEN_FRESH, TOKENS_REMEMBERED)),
            writes: health,
            metrics,
            refusals: Mutex::new(Default::default()),
            upload_rate: None,
        })
    }

    /// Limits the uploads one token may make: beyond `rate` they are
    /// refused as unavailable with `rate_limited` (the probe keeps them
    /// and sends them again), before any body is read. `None`: no limit.
    pub fn with_upload_rate(mut self, rate: Option<SourceRate>) -> Self {
        self.upload_rate = rate.map(|r| Mutex::new(RateLimiter::new(r, RATE_TOKENS)));
        self
    }

    /// Whether the token of `hash` may upload once more now.
    fn within_upload_rate(&self, hash: &str) -> bool {
        let Some(limiter) = &self.upload_rate else {
            return true;
        };
        match limiter.lock() {
            Ok(mut l) => l.check(&hash.to_string(), Instant::now()) == Verdict::Allowed,
            // Poisoned by a panic elsewhere: no limit rather than no uploads.
            Err(_) => true,
        }
    }

    /// The collector's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `Ok` when the store answers and the last commit went through, else
    /// what is wrong, in words for an operator.
    pub fn health(&self) -> Result<(), String> {
        if let Some(failure) = self.writes.failure() {
            return Err(failure);
        }
        match self.with_auth(|s| s.ping()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "storage_unavailable: the store does not answer: {e}"
            )),
            Err(()) => Err("storage_unavailable: the store handle was poisoned by a panic".into()),
        }
    }

    /// Handles one upload: `token` as presented, `body` the batch bytes.
    pub async fn handle(&self, token: Option<&str>, body: &[u8]) -> Ack {
        match self.admit(token) {
            Ok(admitted) => self.store(admitted, body).await,
            Err(ack) => ack,
        }
    }

    /// The first check of an upload, on its token alone, before any of its
    /// body is read: the refusal (counted and logged) if it fails.
    pub fn admit(&self, token: Option<&str>) -> Result<Admitted, Ack> {
        let refuse = |status, reason: String| {
            let ack = Ack { status, reason };
            self.refused(&ack, ack.status.name());
            Err(ack)
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return refuse(
                AckStatus::Unauthorized,
                "no token: start the probe with --token (from `vantage collect token add`)".into(),
            );
        };
        let hash = hash_token(token);
        match self.token_owner(&hash) {
            Ok(Some(_)) if !self.within_upload_rate(&hash) => {
                let ack = Ack {
                    status: AckStatus::Unavailable,
                    reason: "rate_limited: this token sent more uploads a second than the collector takes from one probe; not stored, send it again later".into(),
                };
                self.refused(&ack, "rate_limited");
                Err(ack)
            }
            Ok(Some(owner)) => Ok(Admitted { hash, owner }),
            Ok(None) => refuse(AckStatus::Unauthorized, "unknown or revoked token".into()),
            Err(reason) => refuse(AckStatus::Unavailable, reason),
        }
    }

    /// Stores the batch of an admitted upload, once, and says how it went.
    pub async fn store(&self, admitted: Admitted, body: &[u8]) -> Ack {
        let owner = admitted.owner.clone();
        match self.decide(admitted, body).await {
            Ok((ack, series)) => {
                self.metrics.count(ack.status, series);
                self.metrics
                    .seen(&owner, now_unix_ms(), ack.status == AckStatus::Stored);
                ack
            }
            Err(refusal) => {
                self.refused(&refusal.ack, refusal.counted_as);
                refusal.ack
            }
        }
    }

    /// Counts and logs a refused upload under `counted_as`.
    pub(crate) fn refused(&self, ack: &Ack, counted_as: &'static str) {
        self.metrics.count_refused(counted_as);
        self.log_refusal(counted_as, &ack.reason, "batch");
    }

    /// Logs a refusal, at most once a minute per reason (the rest are
    /// counted in `/metrics` and in the next line).
    pub(crate) fn log_refusal(&self, status: &'static str, reason: &str, what: &str) {
        let admitted = self
            .refusals
            .lock()
            .ok()
            .and_then(|mut log| log.admit(status, Instant::now()));
        if let Some(unlogged) = admitted {
            tracing::warn!(status, %reason, unlogged_since_last = unlogged, "{what} refused");
        }
    }

    /// The probe `hash` belongs to, if it is valid: from the tokens checked
    /// in the last [`TOKEN_FRESH`], else from the store. `Err` is the
    /// reason when the store could not answer.
    pub(crate) fn token_owner(&self, hash: &str) -> Result<Option<String>, String> {
        let now = Instant::now();
        let known = self.known.lock().ok();
        if let Some(owner) = known.as_ref().and_then(|k| k.probe(hash, now)) {
            return Ok(Some(owner.to_string()));
        }
        drop(known);
        match self.with_auth(|s| s.token_probe(hash)) {
            Ok(Ok(owner)) => {
                if let (Some(owner), Ok(mut known)) = (&owner, self.known.lock()) {
                    known.remember(hash, owner, now);
                }
                Ok(owner)
            }
            Ok(Err(e)) => Err(format!(
                "storage_unavailable: the token could not be checked: {e}"
            )),
            Err(_) => Err("token check failed".into()),
        }
    }

    /// Runs `f` on the look-up handle (not the writer's). It blocks (a
    /// PostgreSQL round trip, or SQLite's lock): on a multi-threaded
    /// runtime the runtime is told so, and this worker's other connections
    /// move to another thread meanwhile. `Err` when a panic poisoned it.
    pub(crate) fn with_auth<R>(&self, f: impl FnOnce(&mut dyn Store) -> R) -> Result<R, ()> {
        let run = || self.auth.lock().map(|mut s| f(s.as_mut())).map_err(|_| ());
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(run)
        } else {
            run()
        }
    }

    async fn decide(&self, admitted: Admitted, body: &[u8]) -> Result<(Ack, usize), Refusal> {
        let refuse = |status, reason: String| Err(Refusal::new(status, reason));
        let Admitted { hash, owner } = admitted;
        if body.len() > MAX_BATCH_BYTES {
            return refuse(
                AckStatus::TooLarge,
                format!(
                    "batch of {} bytes, the limit is {MAX_BATCH_BYTES}",
                    body.len()
                ),
            );
        }
        let (batch, plain_histograms) = match Batch::decode_with_plain_histograms(body) {
            Ok(b) => b,
            Err(e) => return refuse(AckStatus::Invalid, e.to_string()),
        };
        if batch.probe_id != owner {
            return refuse(
                AckStatus::Forbidden,
                format!(
                    "this token belongs to probe `{owner}`, not `{}`",
                    batch.probe_id
                ),
            );
        }
        let limit = now_unix_ms() + MAX_CLOCK_AHEAD.as_millis() as u64;
        let latest = batch
            .series
            .iter()
            .map(|s| s.window.end_unix_ms)
            .chain([batch.created_unix_ms])
            .max()
            .unwrap_or(0);
        if latest > limit {
            return refuse(
                AckStatus::Invalid,
                format!(
                    "timestamp {} is more than {} s in the future: check the probe's clock",
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(latest)),
                    MAX_CLOCK_AHEAD.as_secs()
                ),
            );
        }
        let series = batch.series.len();
        let live = crate::live::live_series(&batch);
        let (reply, answer) = oneshot::channel();
        if self
            .writer
            .send(WriteJob {
                batch,
                raw: body.to_vec(),
                plain_histograms,
                token_hash: hash.clone(),
                reply,
            })
            .await
            .is_err()
        {
            return refuse(AckStatus::Unavailable, "store writer stopped".into());
        }
        match answer.await {
            Ok(Ok(Inserted::Stored)) => {
                self.metrics.live().record(live);
                Ok((
                Ack {
                    status: AckStatus::Stored,
                    reason: String::new(),
                },
                series,
            ))
            }
            Ok(Ok(Inserted::TokenRevoked)) => {
                if let Ok(mut known) = self.known.lock() {
                    known.forget(&hash);
                }
                refuse(AckStatus::Unauthorized, "unknown or revoked token".into())
            }
            Ok(Ok(Inserted::Duplicate)) => Ok((
                Ack {
                    status: AckStatus::Duplicate,
                    reason: "already stored".into(),
                },
                series,
            )),
            Ok(Err(failed)) if failed.full => Err(Refusal {
                ack: Ack {
                    status: AckStatus::Unavailable,
                    reason: format!(
                        "storage_full: the collector's disk is full; not stored, send it again later: {}",
                        failed.message
                    ),
                },
                counted_as: "storage_full",
            }),
            Ok(Err(failed)) => refuse(
                AckStatus::Unavailable,
                format!(
                    "storage_unavailable: not stored, send it again later: {}",
                    failed.message
                ),
            ),
            Err(_) => refuse(AckStatus::Unavailable, "store writer stopped".into()),
        }
    }
}

/// An upload whose token was found valid: what storing it needs.
#[derive(Debug)]
pub struct Admitted {
    hash: String,
    owner: String,
}

/// A refused upload: the answer, and the reason `/metrics` counts it under.
struct Refusal {
    ack: Ack,
    counted_as: &'static str,
}

impl Refusal {
    fn new(status: AckStatus, reason: String) -> Self {
        Refusal {
            ack: Ack { status, reason },
            counted_as: status.name(),
        }
    }
}

/// A commit that failed, as its batches' senders learn of it.
#[derive(Debug, Clone)]
struct CommitFailed {
    message: String,
    /// The store's disk is full.
    full: bool,
}
