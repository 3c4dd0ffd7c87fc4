//! The fleet's tables (campaign versions, assignments, probe health), the
//! same in both backends, and the text forms of their list columns.

use vantage_wire::campaign::PhaseSwitch;

/// The fleet's tables (schema version 4). Plain types both backends take.
pub(crate) const FLEET_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS campaign_versions (
    campaign TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    phases TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (campaign, version)
);
CREATE TABLE IF NOT EXISTS campaign_assignments (
    kind TEXT NOT NULL,
    assignee TEXT NOT NULL,
    campaign TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, assignee)
);
CREATE TABLE IF NOT EXISTS probe_health (
    probe_id TEXT PRIMARY KEY,
    seen_unix_ms BIGINT NOT NULL,
    software TEXT NOT NULL,
    campaign TEXT,
    campaign_version BIGINT,
    campaign_error TEXT,
    backlog_batches BIGINT NOT NULL,
    backlog_bytes BIGINT NOT NULL,
    dropped_batches BIGINT NOT NULL,
    uptime_s BIGINT NOT NULL,
    clock_offset_us BIGINT,
    clock_uncertainty_us BIGINT,
    labels TEXT NOT NULL,
    window_ms BIGINT NOT NULL
);
";

/// Phase switches as stored: one `AT_MS PHASE` line each.
pub(crate) fn phases_text(phases: &[PhaseSwitch]) -> String {
    phases
        .iter()
        .map(|p| format!("{} {}\n", p.at_unix_ms, p.phase))
        .collect()
}

/// Phase switches from their stored text; `Err` is the bad line.
pub(crate) fn parse_phases(text: &str) -> Result<Vec<PhaseSwitch>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (at, phase) = l.split_once(' ').ok_or_else(|| l.to_string())?;
            Ok(PhaseSwitch {
                at_unix_ms: at.parse().map_err(|_| l.to_string())?,
                phase: phase.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_their_text() {
        let phases = vec![
            PhaseSwitch {
                at_unix_ms: 5,
                phase: "before".into(),
            },
            PhaseSwitch {
                at_unix_ms: 9,
                phase: "after".into(),
            },
        ];
        assert_eq!(parse_phases(&phases_text(&phases)).unwrap(), phases);
        assert_eq!(parse_phases("x"), Err("x".to_string()));
    }
}
