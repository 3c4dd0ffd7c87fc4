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
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// Its own labels, as `key=value,…`.
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
}
