//! The fleet as the store keeps it: campaigns in numbered versions, which
//! probes each is assigned to, and each probe's last health report. The
//! [`Fleet`] trait is what `vantage campaign`, `vantage fleet`, the
//! collector's campaign poll and reports see; backends implement it beside
//! [`crate::Store`].

use crate::{Selector, StoreError};
pub use vantage_wire::campaign::PhaseSwitch;
use vantage_wire::Labels;

/// One stored version of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignVersion {
    /// The campaign's name.
    pub campaign: String,
    /// Its version, from 1; every change makes the next.
    pub version: u64,
    /// The settings, in the probe configuration file's TOML.
    pub body: String,
    /// The phase switches so far, in order of their instants.
    pub phases: Vec<PhaseSwitch>,
    /// When this version was made, ms since the epoch.
    pub created_unix_ms: u64,
}

/// Who a campaign is assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignee {
    /// One probe, by id.
    Probe(String),
    /// Every probe whose own labels match (`country=IN,network=wifi`).
    Labels(String),
}

impl Assignee {
    fn kind(&self) -> &'static str {
        match self {
            Assignee::Probe(_) => "probe",
            Assignee::Labels(_) => "labels",
        }
    }

    /// The kind and the id or selector, as stored.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Assignee::Probe(p) | Assignee::Labels(p) => (self.kind(), p),
        }
    }

    /// An assignee from its stored parts.
    pub fn from_parts(kind: &str, value: String) -> Option<Self> {
        match kind {
            "probe" => Some(Assignee::Probe(value)),
            "labels" => Some(Assignee::Labels(value)),
            _ => None,
        }
    }
}

/// A campaign's assignment to a probe or a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The campaign.
    pub campaign: String,
    /// Who.
    pub assignee: Assignee,
    /// When it was made, ms since the epoch (the later one wins a tie).
    pub created_unix_ms: u64,
}

/// A probe's last health report, as its last poll gave it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProbeHealth {
    /// The probe.
    pub probe_id: String,
    /// When the collector last heard from it, ms since the epoch.
    pub seen_unix_ms: u64,
    /// Its software version.
    pub software: String,
    /// The campaign it runs, and the version.
    pub applied: Option<(String, u64)>,
    /// Why it could not apply the newest version it received.
    pub campaign_error: Option<String>,
    /// Batches waiting in its spool.
    pub backlog_batches: u64,
    /// Bytes waiting in its spool.
    pub backlog_bytes: u64,
    /// Batches its spool dropped, in all.
    pub dropped_batches: u64,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Its clock minus the collector's and the uncertainty, µs.
    pub clock_offset: Option<(i64, u64)>,
    /// Its own labels, as `key=value;…` (as a stored batch's are).
    pub labels: String,
    /// Its window, ms.
    pub window_ms: u64,
}

/// The campaigns, assignments and health of a fleet.
pub trait Fleet {
    /// Stores a new version of `campaign` with `body` and `phases`, one
    /// higher than the last (1 for a new campaign); returns its number.
    fn put_campaign(
        &mut self,
        campaign: &str,
        body: &str,
        phases: &[PhaseSwitch],
        now_unix_ms: u64,
    ) -> Result<u64, StoreError>;
    /// A version of a campaign, or its latest with `None`.
    fn campaign_version(
        &mut self,
        campaign: &str,
        version: Option<u64>,
    ) -> Result<Option<CampaignVersion>, StoreError>;
    /// Every campaign's name and latest version.
    fn campaigns(&mut self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Assigns `campaign` to `assignee` (again, if it was: the time moves).
    fn assign(
        &mut self,
        campaign: &str,
        assignee: &Assignee,
        now_unix_ms: u64,
    ) -> Result<(), StoreError>;
    /// Every assignment.
    fn assignments(&mut self) -> Result<Vec<Assignment>, StoreError>;
    /// Keeps a probe's health report, replacing its previous one.
    fn put_health(&mut self, health: &ProbeHealth) -> Result<(), StoreError>;
    /// Every probe's last health report, by probe id.
    fn fleet_health(&mut self) -> Result<Vec<ProbeHealth>, StoreError>;
    /// When a probe made its latest `limit` stored batches (their
    /// `created_unix_ms`), newest first: by sequence, on the primary key,
    /// so it costs the same on a month of data as on an hour.
    fn recent_batches(&mut self, probe_id: &str, limit: u32) -> Result<Vec<u64>, StoreError>;
}

/// Why a phase switch was refused.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    /// No such campaign.
    #[error("no campaign `{0}`: store one with `vantage campaign set --campaign {0} --file FILE`")]
    NoCampaign(String),
    /// The instant has passed.
    #[error("{0} is in the past: windows already measured keep the phase they were labelled with; give a later instant or `now`")]
    InPast(String),
    /// A switch at or after the instant exists.
    #[error("campaign `{campaign}` already switches to `{phase}` at {at}: a new switch comes after the last")]
    NotAfterLast {
        /// The campaign.
        campaign: String,
        /// The later switch's phase.
        phase: String,
        /// Its instant, RFC 3339.
        at: String,
    },
    /// Not a label value.
    #[error("phase `{phase}`: {reason}; a phase is one word, such as after")]
    BadPhase {
        /// As given.
        phase: String,
        /// Why not.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An instant as RFC 3339 to the second, as campaign messages give it.
pub fn rfc3339_seconds(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

/// The cut-over: a new version of `campaign` with its body and a switch to
/// `phase` at `at_unix_ms` added (every probe labels its windows starting
/// then or later with it). An instant more than a second before
/// `now_unix_ms`, or not after the last switch, is refused. Returns the
/// new version. `vantage campaign phase` and the lab demo both cut over
/// through this.
pub fn switch_phase(
    store: &mut dyn Fleet,
    campaign: &str,
    phase: &str,
    at_unix_ms: u64,
    now_unix_ms: u64,
) -> Result<u64, PhaseError> {
    if at_unix_ms + 1_000 < now_unix_ms {
        return Err(PhaseError::InPast(rfc3339_seconds(at_unix_ms)));
    }
    if let Err(e) = Labels::new().insert(Labels::PHASE, phase) {
        return Err(PhaseError::BadPhase {
            phase: phase.to_string(),
            reason: e.to_string(),
        });
    }
    let last = store
        .campaign_version(campaign, None)?
        .ok_or_else(|| PhaseError::NoCampaign(campaign.to_string()))?;
    if let Some(p) = last.phases.iter().find(|p| p.at_unix_ms >= at_unix_ms) {
        return Err(PhaseError::NotAfterLast {
            campaign: campaign.to_string(),
            phase: p.phase.clone(),
            at: rfc3339_seconds(p.at_unix_ms),
        });
    }
    let mut phases = last.phases;
    phases.push(PhaseSwitch {
        at_unix_ms,
        phase: phase.to_string(),
    });
    Ok(store.put_campaign(campaign, &last.body, &phases, now_unix_ms)?)
}

/// A new version of `campaign` with `body` (already checked as a probe
/// would run it), keeping the last version's phase switches. Returns it.
pub fn set_campaign(
    store: &mut dyn Fleet,
    campaign: &str,
    body: &str,
    now_unix_ms: u64,
) -> Result<u64, StoreError> {
    let phases = store
        .campaign_version(campaign, None)?
        .map(|v| v.phases)
        .unwrap_or_default();
    store.put_campaign(campaign, body, &phases, now_unix_ms)
}

/// The campaign assigned to a probe with `labels`: an assignment by its id
/// beats one by labels; among those of one kind, the latest wins.
pub fn campaign_for<'a>(
    probe_id: &str,
    labels: &Labels,
    assignments: &'a [Assignment],
) -> Option<&'a Assignment> {
    let by_id = assignments
        .iter()
        .filter(|a| a.assignee == Assignee::Probe(probe_id.to_string()))
        .max_by_key(|a| a.created_unix_ms);
    by_id.or_else(|| {
        assignments
            .iter()
            .filter(|a| match &a.assignee {
                Assignee::Labels(s) => s
                    .parse::<Selector>()
                    .is_ok_and(|sel| labels_match(&sel, labels)),
                Assignee::Probe(_) => false,
            })
            .max_by_key(|a| a.created_unix_ms)
    })
}

/// True when every key of `selector` has one of its values in `labels`.
fn labels_match(selector: &Selector, labels: &Labels) -> bool {
    selector
        .equals
        .iter()
        .all(|(k, vs)| labels.get(k).is_some_and(|v| vs.iter().any(|w| w == v)))
}

/// One probe's row in `vantage fleet`: what it runs against what it is
/// assigned, and whether its batches arrive at the rate its window makes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetRow {
    /// The probe.
    pub probe_id: String,
    /// Its last heartbeat, if it ever polled.
    pub health: Option<ProbeHealth>,
    /// The campaign and latest version assigned to it.
    pub assigned: Option<(String, u64)>,
    /// True when it runs another campaign or version than assigned.
    pub drift: bool,
    /// When it made its latest stored batch.
    pub last_batch_unix_ms: Option<u64>,
    /// Stored batches it made in the hour before now.
    pub batches_last_hour: u64,
    /// Batches an hour its window makes, when its window is known.
    pub expected_per_hour: Option<u64>,
    /// Whole windows since its latest stored batch (or since it was
    /// last seen, if it never sent one).
    pub missed_windows: Option<u64>,
    /// True after `silent_after` missed windows, or when it was never
    /// seen at all.
    pub silent: bool,
}

/// How many of a probe's latest batches [`fleet_view`] needs: two hours'
/// worth at its window, so an hour's count is never cut short.
pub fn recent_limit(window_ms: u64) -> u32 {
    (2 * HOUR_MS / window_ms.max(1_000) + 2).min(10_000) as u32
}

const HOUR_MS: u64 = 3_600_000;

/// A probe's latest batches' creation times, newest first, at most
/// `limit` ([`Fleet::recent_batches`], or made up in a test).
pub type RecentBatches<'a> = dyn FnMut(&str, u32) -> Result<Vec<u64>, StoreError> + 'a;

/// The fleet as `vantage fleet` shows it: every probe with a heartbeat, an
/// assignment by id or a valid token (`known`), with `recent` the
/// creation times of its latest batches (newest first).
pub fn fleet_view(
    health: &[ProbeHealth],
    known: &[String],
    assignments: &[Assignment],
    latest: &[(String, u64)],
    recent: &mut RecentBatches<'_>,
    now_unix_ms: u64,
    silent_after: u64,
) -> Result<Vec<FleetRow>, StoreError> {
    let mut ids: Vec<String> = health.iter().map(|h| h.probe_id.clone()).collect();
    ids.extend(known.iter().cloned());
    ids.extend(assignments.iter().filter_map(|a| match &a.assignee {
        Assignee::Probe(p) => Some(p.clone()),
        Assignee::Labels(_) => None,
    }));
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let h = health.iter().find(|h| h.probe_id == id).cloned();
            let labels = h
                .as_ref()
                .map(|h| parse_labels(&h.labels))
                .unwrap_or_default();
            let assigned = campaign_for(&id, &labels, assignments).and_then(|a| {
                latest
                    .iter()
                    .find(|(c, _)| *c == a.campaign)
                    .map(|(c, v)| (c.clone(), *v))
            });
            let applied = h.as_ref().and_then(|h| h.applied.clone());
            let window_ms = h.as_ref().map(|h| h.window_ms).filter(|w| *w > 0);
            let batches = recent(&id, recent_limit(window_ms.unwrap_or(60_000)))?;
            let last_batch = batches.first().copied();
            let since = now_unix_ms.saturating_sub(HOUR_MS);
            let last_sign = last_batch.or(h.as_ref().map(|h| h.seen_unix_ms));
            let missed = window_ms
                .zip(last_sign)
                .map(|(w, t)| now_unix_ms.saturating_sub(t) / w);
            Ok(FleetRow {
                drift: assigned.is_some() && assigned != applied,
                silent: last_sign.is_none() || missed.is_some_and(|m| m >= silent_after),
                batches_last_hour: batches.iter().filter(|t| **t >= since).count() as u64,
                expected_per_hour: window_ms.map(|w| HOUR_MS / w),
                missed_windows: missed,
                last_batch_unix_ms: last_batch,
                probe_id: id,
                health: h,
                assigned,
            })
        })
        .collect()
}

/// The rows as JSON: an array, one object per probe, times in ms since
/// the epoch.
pub fn render_fleet_json(rows: &[FleetRow]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rows).map(|s| s + "\n")
}

/// The rows as an aligned text table, ages counted back from `now_unix_ms`.
pub fn render_fleet_table(rows: &[FleetRow], now_unix_ms: u64) -> String {
    let age = |t: Option<u64>| match t {
        None => "never".to_string(),
        Some(t) => {
            let s = now_unix_ms.saturating_sub(t) / 1_000;
            match s {
                0..=119 => format!("{s}s ago"),
                120..=7_199 => format!("{}m ago", s / 60),
                _ => format!("{}h ago", s / 3_600),
            }
        }
    };
    let version = |v: &Option<(String, u64)>| match v {
        Some((c, n)) => format!("{c} v{n}"),
        None => "-".into(),
    };
    let mut table = vec![[
        "PROBE",
        "LAST SEEN",
        "LAST BATCH",
        "ASSIGNED",
        "APPLIED",
        "BACKLOG",
        "CLOCK",
        "BATCHES/H",
        "STATE",
    ]
    .map(String::from)];
    for r in rows {
        let h = r.health.as_ref();
        let mut state = Vec::new();
        if r.silent {
            state.push(match r.missed_windows {
                Some(m) => format!("silent ({m} windows)"),
                None => "silent (never seen)".into(),
            });
        }
        if r.drift {
            state.push("drift".into());
        }
        if let Some(e) = h.and_then(|h| h.campaign_error.as_ref()) {
            state.push(format!("campaign refused: {e}"));
        }
        if state.is_empty() {
            state.push("ok".into());
        }
        table.push([
            r.probe_id.clone(),
            age(h.map(|h| h.seen_unix_ms)),
            age(r.last_batch_unix_ms),
            version(&r.assigned),
            version(&h.and_then(|h| h.applied.clone())),
            h.map_or("-".into(), |h| {
                format!("{} ({} kB)", h.backlog_batches, h.backlog_bytes / 1_000)
            }),
            h.and_then(|h| h.clock_offset).map_or("-".into(), |(o, u)| {
                format!("{:+.1}±{:.1} ms", o as f64 / 1e3, u as f64 / 1e3)
            }),
            match r.expected_per_hour {
                Some(e) => format!("{}/{e}", r.batches_last_hour),
                None => r.batches_last_hour.to_string(),
            },
            state.join("; "),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `key=value;…` as kept in [`ProbeHealth::labels`].
fn parse_labels(text: &str) -> Labels {
    let mut labels = Labels::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let _ = labels.insert_pair(pair);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(campaign: &str, assignee: Assignee, at: u64) -> Assignment {
        Assignment {
            campaign: campaign.into(),
            assignee,
            created_unix_ms: at,
        }
    }

    #[test]
    fn an_id_beats_labels_and_the_latest_of_a_kind_wins() {
        let mut india = Labels::new();
        india.insert("country", "IN").unwrap();
        let all = [
            assignment("by-label", Assignee::Labels("country=IN".into()), 1),
            assignment("later-label", Assignee::Labels("country=IN|MY".into()), 2),
            assignment("other", Assignee::Labels("country=US".into()), 3),
        ];
        let pick = |probe: &str, a: &[Assignment]| {
            campaign_for(probe, &india, a).map(|a| a.campaign.clone())
        };
        assert_eq!(pick("in-1", &all).as_deref(), Some("later-label"));
        let mut with_id = all.to_vec();
        with_id.push(assignment("mine", Assignee::Probe("in-1".into()), 0));
        assert_eq!(pick("in-1", &with_id).as_deref(), Some("mine"));
        assert_eq!(pick("in-2", &with_id).as_deref(), Some("later-label"));
        assert_eq!(campaign_for("us-1", &Labels::new(), &all), None);
    }

    #[test]
    fn the_fleet_view_shows_drift_run_rate_and_silence() {
        let now = 100 * HOUR_MS;
        let health = |id: &str, applied: Option<(&str, u64)>, seen: u64| ProbeHealth {
            probe_id: id.into(),
            seen_unix_ms: seen,
            applied: applied.map(|(c, v)| (c.to_string(), v)),
            labels: "country=IN".into(),
            window_ms: 60_000,
            ..ProbeHealth::default()
        };
        let fleet = [
            health("ok", Some(("move", 3)), now - 10_000),
            health("behind", Some(("move", 2)), now - 10_000),
            health("quiet", Some(("move", 3)), now - 10 * 60_000),
        ];
        let assignments = [assignment("move", Assignee::Labels("country=IN".into()), 1)];
        let latest = [("move".to_string(), 3)];
        // "ok" made a batch every minute for the last two hours; "quiet"
        // stopped five minutes ago; "lost" has a token and nothing else.
        let mut recent = |id: &str, limit: u32| -> Result<Vec<u64>, StoreError> {
            let n = match id {
                "ok" | "behind" => 0,
                "quiet" => 5,
                _ => return Ok(vec![]),
            };
            Ok((n..n + limit as u64)
                .map(|k| now - k * 60_000 - 1)
                .collect())
        };
        let rows = fleet_view(
            &fleet,
            &["lost".to_string()],
            &assignments,
            &latest,
            &mut recent,
            now,
            3,
        )
        .unwrap();
        let row = |id: &str| rows.iter().find(|r| r.probe_id == id).unwrap();
        assert_eq!(rows.len(), 4);
        assert!(!row("ok").drift && !row("ok").silent);
        assert_eq!(row("ok").batches_last_hour, 60);
        assert_eq!(row("ok").expected_per_hour, Some(60));
        assert!(row("behind").drift, "v2 applied, v3 assigned");
        assert_eq!(row("quiet").missed_windows, Some(5));
        assert!(row("quiet").silent);
        assert_eq!(row("quiet").batches_last_hour, 55);
        assert!(row("lost").silent && row("lost").health.is_none());
        assert_eq!(row("lost").assigned, None);
        let table = render_fleet_table(&rows, now);
        let line = |id: &str| {
            table
                .lines()
                .find(|l| l.starts_with(id))
                .unwrap()
                .to_string()
        };
        assert!(
            line("ok ").contains("60/60") && line("ok ").ends_with("ok"),
            "{table}"
        );
        assert!(
            line("behind").contains("move v3   move v2") && line("behind").ends_with("drift"),
            "{table}"
        );
        assert!(line("quiet").contains("silent (5 windows)"), "{table}");
        assert!(line("lost").contains("silent (never seen)"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render_fleet_json(&rows).unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 4);
        assert_eq!(json[1]["probe_id"], "lost");
        assert_eq!(json[0]["drift"], true);
    }
}
