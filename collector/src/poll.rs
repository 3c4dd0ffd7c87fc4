//! The campaign poll: a probe's heartbeat in, its campaign out. The token
//! is checked as for a batch; the heartbeat is kept as the probe's health;
//! the answer is the version assigned to it, or that it has it already.

use crate::ingest::{hash_token, Ingest};
use vantage_store::fleet::{campaign_for, ProbeHealth};
use vantage_store::Store;
use vantage_wire::campaign::{CampaignAnswer, CampaignDoc, Heartbeat, PollStatus};

impl Ingest {
    /// Answers one poll: `token` as presented, `heartbeat` the probe's
    /// heartbeat text. Every answer carries the collector's clock.
    pub async fn poll(&self, token: Option<&str>, heartbeat: &[u8]) -> CampaignAnswer {
        let answer = self.decide_poll(token, heartbeat);
        self.metrics().count_poll(answer.status);
        if answer.status.http_status() != 200 {
            self.log_refusal(answer.status.name(), &answer.reason, "campaign poll");
        }
        answer
    }

    fn decide_poll(&self, token: Option<&str>, heartbeat: &[u8]) -> CampaignAnswer {
        let now_us = now_unix_us();
        let refuse = |status, reason: &str| CampaignAnswer::status(status, reason, now_us);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return refuse(
                PollStatus::Unauthorized,
                "no token: start the probe with --token (from `vantage collect token add`)",
            );
        };
        let owner = match self.token_owner(&hash_token(token)) {
            Ok(Some(owner)) => owner,
            Ok(None) => return refuse(PollStatus::Unauthorized, "unknown or revoked token"),
            Err(reason) => return refuse(PollStatus::Unavailable, &reason),
        };
        let heartbeat = match Heartbeat::decode(heartbeat) {
            Ok(h) => h,
            Err(e) => return refuse(PollStatus::Invalid, &e.to_string()),
        };
        if heartbeat.probe_id != owner {
            let reason = format!(
                "this token belongs to probe `{owner}`, not `{}`",
                heartbeat.probe_id
            );
            return refuse(PollStatus::Forbidden, &reason);
        }
        let health = health(&heartbeat, now_us / 1_000);
        let found = self.with_auth(|store| assigned(store, &heartbeat, &health));
        let assigned_version = match &found {
            Ok(Ok(Some(doc))) => Some((doc.name.clone(), doc.version)),
            _ => None,
        };
        self.metrics().polled(&health, assigned_version);
        if let Ok(Ok(Some(doc))) = &found {
            self.metrics().live().phases(&doc.name, &doc.phases);
        }
        match found {
            Ok(Ok(Some(doc))) if heartbeat.applied == Some((doc.name.clone(), doc.version)) => {
                refuse(PollStatus::Current, "")
            }
            Ok(Ok(Some(doc))) => CampaignAnswer {
                campaign: Some(doc),
                ..refuse(PollStatus::Campaign, "")
            },
            Ok(Ok(None)) => refuse(
                PollStatus::Unassigned,
                "no campaign is assigned to this probe: `vantage campaign assign`",
            ),
            Ok(Err(e)) => refuse(
                PollStatus::Unavailable,
                &format!("storage_unavailable: poll again later: {e}"),
            ),
            Err(()) => refuse(PollStatus::Unavailable, "store handle failed"),
        }
    }
}

/// Keeps the probe's health, then finds the latest version of the
/// campaign assigned to it.
fn assigned(
    store: &mut dyn Store,
    heartbeat: &Heartbeat,
    health: &ProbeHealth,
) -> Result<Option<CampaignDoc>, vantage_store::StoreError> {
    store.put_health(health)?;
    let assignments = store.assignments()?;
    let Some(a) = campaign_for(&heartbeat.probe_id, &heartbeat.labels, &assignments) else {
        return Ok(None);
    };
    Ok(store
        .campaign_version(&a.campaign, None)?
        .map(|v| CampaignDoc {
            name: v.campaign,
            version: v.version,
            phases: v.phases,
            body: v.body,
        }))
}

fn health(h: &Heartbeat, seen_unix_ms: u64) -> ProbeHealth {
    ProbeHealth {
        probe_id: h.probe_id.clone(),
        seen_unix_ms,
        software: h.software.clone(),
        applied: h.applied.clone(),
        campaign_error: h.campaign_error.clone(),
        backlog_batches: h.backlog_batches,
        backlog_bytes: h.backlog_bytes,
        dropped_batches: h.dropped_batches,
        uptime_s: h.uptime_s,
        clock_offset: h.clock_offset,
        labels: crate::row::labels_text(&h.labels),
        window_ms: h.window_ms,
    }
}

fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
