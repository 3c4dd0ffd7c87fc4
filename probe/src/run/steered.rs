//! A probe steered by its collector: the campaign kept on disk runs at
//! once (so a probe restarted while the collector is down measures on),
//! else the first the collector gives; each later one takes over at a
//! window boundary, in the same process.

use super::poller::{wait_for_campaign, FleetStatus, PollContext};
use super::{run_with, FleetRun, RunError, RunSummary};
use crate::config::CampaignPlan;
use crate::fleet::load_campaign;
use crate::state::ProbeState;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// Runs what `plan` says: the probe's own configuration, or the campaign
/// its collector gives it.
pub async fn run_plan(
    plan: crate::config::Plan,
    stop: watch::Receiver<bool>,
) -> Result<RunSummary, RunError> {
    match plan {
        crate::config::Plan::Own(config) => super::run(*config, stop).await,
        crate::config::Plan::FromCollector(plan) => run_campaign(*plan, stop).await,
    }
}

/// Runs a probe that takes its campaign from the collector until `stop`
/// turns true or the plan's duration ends; the summary covers every
/// campaign it ran.
pub async fn run_campaign(
    plan: CampaignPlan,
    mut stop: watch::Receiver<bool>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let until = plan.duration().map(|d| started + d);
    let probe_id = ProbeState::open(&plan.state_dir, plan.probe_id())?
        .probe_id()
        .to_string();
    let labels = plan.own_labels()?;
    let mut next = load_campaign(&plan.state_dir)?;
    let fleet = FleetRun {
        plan: Arc::new(plan),
        labels: labels.clone(),
        status: Arc::new(Mutex::new(FleetStatus {
            running: None,
            accepted: None,
            error: None,
            clock_offset: None,
            started,
            last_status: None,
        })),
    };
    let waiting = PollContext {
        plan: fleet.plan.clone(),
        probe_id: probe_id.clone(),
        labels,
        window_ms: 0,
        spool: None,
        reachable: None,
    };
    let mut total = RunSummary {
        probe_id,
        batches: 0,
        totals: Vec::new(),
        csv: None,
        upload: None,
        next_campaign: None,
    };
    loop {
        let doc = match next.take() {
            Some(doc) => doc,
            None => match wait_for_campaign(&waiting, &fleet.status, &mut stop, until).await {
                Some(doc) => doc,
                None => return Ok(total),
            },
        };
        let mut config = match fleet.plan.config(&doc) {
            Ok(c) => c,
            Err(e) => {
                // The kept campaign no longer fits this probe's flags or file.
                let reason = format!(
                    "campaign `{}` version {} cannot run here: {e}",
                    doc.name, doc.version
                );
                tracing::error!(%reason, "waiting for a campaign this probe can run");
                if let Ok(mut s) = fleet.status.lock() {
                    s.error = Some(reason);
                    s.accepted = None;
                }
                continue;
            }
        };
        if let Some(u) = until {
            let left = u.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(total);
            }
            config.duration = Some(left);
        }
        if let Ok(mut s) = fleet.status.lock() {
            s.running = Some((doc.name.clone(), doc.version));
            s.accepted = Some(doc);
        }
        let run = run_with(config, stop.clone(), Some(&fleet)).await?;
        total.batches += run.batches;
        total.totals.extend(run.totals);
        total.csv = run.csv.or(total.csv);
        total.upload = match (total.upload, run.upload) {
            (Some(a), Some(b)) => Some(a.plus(b)),
            (a, b) => a.or(b),
        };
        match run.next_campaign {
            Some(doc) => next = Some(doc),
            None => return Ok(total),
        }
    }
}
