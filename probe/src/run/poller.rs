//! The campaign poller: every poll interval a heartbeat to the collector,
//! the campaign assigned to this probe back; a newer good version is kept
//! on disk and handed to the run loop, a bad or older one refused and the
//! reason sent with the next heartbeat. It reads clocks and sleeps, so it
//! lives in the driver layer.

use crate::config::CampaignPlan;
use crate::fleet::{judge, save_campaign, Judgement};
use crate::spool::Spool;
use crate::upload::Uploader;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use vantage_wire::campaign::{clock_offset, CampaignDoc, Heartbeat, PhaseSwitch, PollStatus};
use vantage_wire::Labels;

/// What the probe runs and what went wrong, shared by the run loop and
/// the poller, and kept across the runs of successive campaigns.
#[derive(Debug)]
pub(crate) struct FleetStatus {
    /// The campaign and version running now.
    pub(crate) running: Option<(String, u64)>,
    /// The newest good campaign taken (running, or due at the next
    /// window boundary): what an offer is judged against.
    pub(crate) accepted: Option<CampaignDoc>,
    /// Why the newest campaign offered was refused.
    pub(crate) error: Option<String>,
    /// The last clock-offset estimate, µs, and its uncertainty.
    pub(crate) clock_offset: Option<(i64, u64)>,
    /// When the probe process started.
    pub(crate) started: Instant,
    /// The last poll's answer, so a refusal is logged once, not each poll.
    pub(crate) last_status: Option<PollStatus>,
}

/// Shared [`FleetStatus`].
pub(crate) type SharedFleet = Arc<Mutex<FleetStatus>>;

/// What the poller hands the run loop.
#[derive(Debug)]
pub(crate) enum Offer {
    /// New phase switches for the running campaign (its version moved,
    /// nothing else): they apply from now on.
    Phases(Vec<PhaseSwitch>, (String, u64)),
    /// Another campaign, or a new version of this one: it takes over at
    /// the next window boundary.
    Apply(CampaignDoc),
}

/// Everything a poll needs besides the collector.
#[derive(Clone)]
pub(crate) struct PollContext {
    pub(crate) plan: Arc<CampaignPlan>,
    pub(crate) probe_id: String,
    pub(crate) labels: Labels,
    pub(crate) window_ms: u64,
    pub(crate) spool: Option<Arc<Mutex<Spool>>>,
    /// Told when a collector answers, so the uploader stops backing off.
    pub(crate) reachable: Option<Arc<tokio::sync::Notify>>,
}

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl PollContext {
    fn heartbeat(&self, fleet: &FleetStatus) -> Heartbeat {
        let (backlog_batches, backlog_bytes, dropped) = self
            .spool
            .as_ref()
            .and_then(|s| {
                s.lock()
                    .ok()
                    .map(|s| (s.len() as u64, s.bytes(), s.pending_drops()))
            })
            .unwrap_or((0, 0, 0));
        Heartbeat {
            probe_id: self.probe_id.clone(),
            software: format!("vantage-probe {}", env!("CARGO_PKG_VERSION")),
            applied: fleet.running.clone(),
            campaign_error: fleet.error.clone(),
            backlog_batches,
            backlog_bytes,
            dropped_batches: dropped,
            uptime_s: fleet.started.elapsed().as_secs(),
            clock_offset: fleet.clock_offset,
            labels: self.labels.clone(),
            window_ms: self.window_ms,
        }
    }
}

/// One poll of the first collector that answers. Returns the offer to
/// hand on, if any; a refusal or an unreachable collector is logged and
/// leaves the running campaign alone.
pub(crate) async fn poll_once(
    uploaders: &mut [Uploader],
    ctx: &PollContext,
    fleet: &SharedFleet,
) -> Option<Offer> {
    let heartbeat = match fleet.lock() {
        Ok(f) => ctx.heartbeat(&f),
        Err(_) => return None,
    };
    let mut answered = None;
    for (i, uploader) in uploaders.iter_mut().enumerate() {
        let sent = now_unix_us();
        match uploader.poll(&heartbeat, Instant::now()).await {
            Ok(a) if a.status != PollStatus::Unavailable => {
                answered = Some((a, sent, now_unix_us()));
                break;
            }
            Ok(a) => {
                tracing::warn!(collector = i, reason = %a.reason, "collector could not answer the campaign poll")
            }
            Err(e) => tracing::warn!(collector = i, error = %e, "campaign poll failed"),
        }
    }
    let (answer, sent, received) = answered?;
    if let Some(r) = &ctx.reachable {
        r.notify_waiters();
    }
    let mut f = fleet.lock().ok()?;
    if answer.collector_unix_us != 0 {
        f.clock_offset = Some(clock_offset(sent, received, answer.collector_unix_us));
    }
    match answer.status {
        PollStatus::Campaign => f.last_status = Some(PollStatus::Campaign),
        PollStatus::Current => {
            f.last_status = Some(PollStatus::Current);
            f.error = None;
            return None;
        }
        // Said once when the answer changes, not at every poll.
        PollStatus::Unassigned if f.last_status != Some(answer.status) => {
            f.last_status = Some(answer.status);
            tracing::warn!(
                "no campaign is assigned to this probe; it keeps running the one it has, if any"
            );
            return None;
        }
        refused if f.last_status != Some(refused) && refused != PollStatus::Unassigned => {
            f.last_status = Some(refused);
            tracing::error!(status = refused.name(), reason = %answer.reason, "the collector refused the campaign poll");
            return None;
        }
        _ => return None,
    }
    let offered = answer.campaign?;
    let plan = ctx.plan.clone();
    // Resolved once: the check and, for a phases-only version, its phases.
    let config = plan.config(&offered);
    let judged = judge(f.accepted.as_ref(), &offered, |_| {
        config.as_ref().map(|_| ()).map_err(|e| e.to_string())
    });
    let offer = match judged {
        Judgement::Same => return None,
        Judgement::Rollback(reason) | Judgement::Invalid(reason) => {
            tracing::error!(%reason, "campaign refused; the one before keeps running");
            f.error = Some(reason);
            return None;
        }
        Judgement::PhasesOnly => {
            let phases = config.map(|c| c.phases).unwrap_or_default();
            Offer::Phases(phases, (offered.name.clone(), offered.version))
        }
        Judgement::Apply => Offer::Apply(offered.clone()),
    };
    if let Err(e) = save_campaign(&plan.state_dir, &offered) {
        let reason = format!(
            "campaign `{}` version {} not kept: {e}",
            offered.name, offered.version
        );
        tracing::error!(%reason, "campaign refused; the one before keeps running");
        f.error = Some(reason);
        return None;
    }
    f.error = None;
    f.accepted = Some(offered);
    Some(offer)
}

/// Uploaders for polls: one per collector, in order.
pub(crate) fn poll_uploaders(plan: &CampaignPlan) -> Vec<Uploader> {
    plan.upload
        .targets
        .iter()
        .filter_map(|t| match Uploader::new(t.clone()) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::error!(error = %e, collector = %t.host, "cannot poll this collector");
                None
            }
        })
        .collect()
}

/// Polls every `ctx.plan.poll_every` (the first at once) until `stop`
/// turns true, handing offers to the run loop.
pub(crate) async fn poll_loop(
    ctx: PollContext,
    fleet: SharedFleet,
    offers: mpsc::Sender<Offer>,
    mut stop: watch::Receiver<bool>,
) {
    let mut uploaders = poll_uploaders(&ctx.plan);
    let every = ctx.plan.poll_every.max(Duration::from_millis(100));
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(offer) = poll_once(&mut uploaders, &ctx, &fleet).await {
            if offers.send(offer).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Polls until the collector gives a campaign this probe can run, or
/// `stop` turns true or `until` passes (then `None`): a probe with no
/// campaign it can run.
pub(crate) async fn wait_for_campaign(
    ctx: &PollContext,
    fleet: &SharedFleet,
    stop: &mut watch::Receiver<bool>,
    until: Option<Instant>,
) -> Option<CampaignDoc> {
    let mut uploaders = poll_uploaders(&ctx.plan);
    let every = ctx.plan.poll_every.max(Duration::from_millis(100));
    loop {
        if *stop.borrow() || until.is_some_and(|u| Instant::now() >= u) {
            return None;
        }
        if let Some(Offer::Apply(doc)) = poll_once(&mut uploaders, ctx, fleet).await {
            return Some(doc);
        }
        let wait = until.map_or(every, |u| {
            every.min(u.saturating_duration_since(Instant::now()))
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
}

/// A run's side of the poller: the offers it hands over, and the campaign
/// due to take over at a window boundary.
pub(crate) struct Steering {
    offers: mpsc::Receiver<Offer>,
    open: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    status: SharedFleet,
    takeover: Option<(Instant, CampaignDoc)>,
}

impl Steering {
    /// Starts the poller for one run.
    pub(crate) fn start(ctx: PollContext, status: SharedFleet) -> Self {
        let (tx, offers) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(poll_loop(ctx, status.clone(), tx, stop_rx));
        Steering {
            offers,
            open: true,
            stop,
            task,
            status,
            takeover: None,
        }
    }

    /// Takes an offer: phase switches into `maker` at once; another
    /// campaign due at the next window boundary after `anchor`'s now.
    pub(crate) fn take(
        &mut self,
        offer: Option<Offer>,
        maker: &mut crate::batch::BatchMaker,
        anchor: crate::recorder::WallAnchor,
        window_ms: u64,
    ) {
        match offer {
            Some(Offer::Phases(phases, running)) => {
                maker.set_phases(phases);
                if let Ok(mut status) = self.status.lock() {
                    status.running = Some(running);
                }
            }
            Some(Offer::Apply(doc)) => {
                let now = Instant::now();
                let now_ms = anchor.unix_ms(now);
                let wait = crate::fleet::next_boundary(now_ms, window_ms) - now_ms;
                let at = now + Duration::from_millis(wait);
                tracing::info!(campaign = %doc.name, version = doc.version, "new campaign; it takes over at the next window boundary");
                // A second offer before the boundary replaces the first.
                self.takeover = Some((self.takeover.as_ref().map_or(at, |(t, _)| *t), doc));
            }
            None => self.open = false,
        }
    }

    /// The window boundary a new campaign takes over at, if one is due.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.takeover.as_ref().map(|(at, _)| *at)
    }

    /// Stops the poller; the campaign that was due to take over, if any.
    pub(crate) fn finish(self) -> Option<CampaignDoc> {
        let _ = self.stop.send(true);
        self.task.abort();
        self.takeover.map(|(_, doc)| doc)
    }
}

/// The next offer, or never (no poller, or it has ended).
pub(crate) async fn next_offer(steering: &mut Option<Steering>) -> Option<Offer> {
    match steering {
        Some(s) if s.open => s.offers.recv().await,
        _ => std::future::pending().await,
    }
}

/// Resolves at `at`; never without one.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
