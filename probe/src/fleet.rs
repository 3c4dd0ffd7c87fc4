//! A probe's side of the fleet, as plain logic: the last good campaign it
//! keeps on disk, how it judges a campaign the collector offers, and when
//! a new one takes over. The poller that reads clocks and talks to the
//! collector is in the driver layer (`run::poller`).

use crate::state::write_durably;
use std::path::{Path, PathBuf};
use vantage_wire::campaign::{CampaignAnswer, CampaignDoc, PollStatus};

/// The file in the state directory that holds the last good campaign.
pub const CAMPAIGN_FILE: &str = "campaign";

/// Why the stored campaign could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CampaignStoreError {
    /// Reading or writing failed.
    #[error("stored campaign {path}: {source} (use --state-dir to choose a writable directory)")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file holds something else (it is written whole or not at all,
    /// so this is damage from outside).
    #[error("stored campaign {path} is corrupt ({reason}): remove it and the probe takes its campaign from the collector again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The last good campaign kept in `state_dir`, if any.
pub fn load_campaign(state_dir: &Path) -> Result<Option<CampaignDoc>, CampaignStoreError> {
    let path = state_dir.join(CAMPAIGN_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CampaignStoreError::Io { path, source }),
    };
    let corrupt = |reason: String| CampaignStoreError::Corrupt {
        path: path.clone(),
        reason,
    };
    let answer = CampaignAnswer::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
    answer
        .campaign
        .map(Some)
        .ok_or_else(|| corrupt("no campaign in it".into()))
}

/// Keeps `doc` as the last good campaign: after a crash the file holds
/// this one or the one before, whole.
pub fn save_campaign(state_dir: &Path, doc: &CampaignDoc) -> Result<(), CampaignStoreError> {
    let path = state_dir.join(CAMPAIGN_FILE);
    let io = |source| CampaignStoreError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let answer = CampaignAnswer {
        status: PollStatus::Campaign,
        reason: String::new(),
        collector_unix_us: 0,
        campaign: Some(doc.clone()),
    };
    write_durably(&path, answer.encode().as_bytes()).map_err(io)
}

/// What a probe does with a campaign the collector offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The version it runs: nothing to do.
    Same,
    /// A newer version that changes only the phase switches: applied at
    /// once, since each window takes its phase from its own start.
    PhasesOnly,
    /// A newer version (or another campaign): taken over at the next
    /// window boundary.
    Apply,
    /// An older version of the campaign it runs: refused, with the reason.
    Rollback(String),
    /// A version it cannot run: refused, with the reason; the one before
    /// keeps running.
    Invalid(String),
}

/// Judges `offered` against the campaign `applied`; `check` says whether
/// the probe could run it (its flags and file over it).
pub fn judge(
    applied: Option<&CampaignDoc>,
    offered: &CampaignDoc,
    check: impl FnOnce(&CampaignDoc) -> Result<(), String>,
) -> Judgement {
    if let Some(a) = applied.filter(|a| a.name == offered.name) {
        if offered.version == a.version {
            return Judgement::Same;
        }
        if offered.version < a.version {
            return Judgement::Rollback(format!(
                "campaign `{}` version {} is older than version {} which this probe runs: a rollback is refused (store the old settings again with `vantage campaign set`, which makes a newer version)",
                offered.name, offered.version, a.version
            ));
        }
    }
    if let Err(reason) = check(offered) {
        return Judgement::Invalid(format!(
            "campaign `{}` version {} cannot run here: {reason}",
            offered.name, offered.version
        ));
    }
    match applied {
        Some(a) if a.name == offered.name && a.body == offered.body => Judgement::PhasesOnly,
        _ => Judgement::Apply,
    }
}

/// The first window boundary strictly after `now_unix_ms` (windows are
/// aligned to the epoch, so every probe of one window length shares them).
pub fn next_boundary(now_unix_ms: u64, window_ms: u64) -> u64 {
    let w = window_ms.max(1);
    (now_unix_ms / w + 1) * w
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_wire::campaign::PhaseSwitch;

    fn doc(version: u64, body: &str) -> CampaignDoc {
        CampaignDoc {
            name: "move".into(),
            version,
            phases: vec![],
            body: body.into(),
        }
    }

    #[test]
    fn a_campaign_is_judged_by_version_then_by_what_changed() {
        let ok = |_: &CampaignDoc| Ok(());
        let v2 = doc(2, "window = \"60s\"\n");
        assert_eq!(judge(None, &v2, ok), Judgement::Apply);
        assert_eq!(judge(Some(&v2), &v2, ok), Judgement::Same);
        let e = judge(Some(&v2), &doc(1, "x"), ok);
        assert!(
            matches!(&e, Judgement::Rollback(r) if r.contains("version 1 is older than version 2")),
            "{e:?}"
        );
        let mut v3 = v2.clone();
        v3.version = 3;
        v3.phases.push(PhaseSwitch {
            at_unix_ms: 5,
            phase: "after".into(),
        });
        assert_eq!(judge(Some(&v2), &v3, ok), Judgement::PhasesOnly);
        assert_eq!(
            judge(Some(&v2), &doc(4, "window = \"30s\"\n"), ok),
            Judgement::Apply
        );
        let bad = judge(Some(&v2), &doc(4, "y"), |_| Err("no target".into()));
        assert!(
            matches!(&bad, Judgement::Invalid(r) if r.contains("version 4") && r.contains("no target")),
            "{bad:?}"
        );
        // Another campaign is not a rollback, whatever its number.
        let mut other = doc(1, "z");
        other.name = "other".into();
        assert_eq!(judge(Some(&v2), &other, ok), Judgement::Apply);
    }

    #[test]
    fn the_last_good_campaign_survives_on_disk_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_campaign(dir.path()).unwrap().is_none());
        let mut d = doc(7, "window = \"60s\"\n[labels]\nstudy = \"move\"\n");
        d.phases.push(PhaseSwitch {
            at_unix_ms: 1_796_256_000_000,
            phase: "after".into(),
        });
        save_campaign(dir.path(), &d).unwrap();
        assert_eq!(load_campaign(dir.path()).unwrap(), Some(d));
        std::fs::write(dir.path().join(CAMPAIGN_FILE), "garbage").unwrap();
        let e = load_campaign(dir.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("remove it"), "{e}");
    }

    #[test]
    fn boundaries_are_the_epoch_aligned_window_starts() {
        assert_eq!(next_boundary(0, 60_000), 60_000);
        assert_eq!(next_boundary(59_999, 60_000), 60_000);
        assert_eq!(next_boundary(60_000, 60_000), 120_000);
        assert_eq!(next_boundary(61_000, 0), 61_001);
    }
}
