//! [`Fleet`] on SQLite.

use super::{sqlite_error, SqliteStore};
use crate::fleet::{parse_phases, phases_text};
use crate::row::sql_int as i;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use vantage_store::fleet::{Assignee, Assignment, CampaignVersion, Fleet, ProbeHealth};
use vantage_store::StoreError;
use vantage_wire::campaign::PhaseSwitch;

impl SqliteStore {
    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            place: self.path.display().to_string(),
            reason,
        }
    }
}

impl Fleet for SqliteStore {
    fn put_campaign(
        &mut self,
        campaign: &str,
        body: &str,
        phases: &[PhaseSwitch],
        now_unix_ms: u64,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let last: i64 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM campaign_versions WHERE campaign = ?1",
                [campaign],
                |r| r.get(0),
            )
            .map_err(err)?;
        let version = last + 1;
        tx.execute(
            "INSERT INTO campaign_versions VALUES (?1, ?2, ?3, ?4, ?5)",
            params![campaign, version, body, phases_text(phases), i(now_unix_ms)],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(version as u64)
    }

    fn campaign_version(
        &mut self,
        campaign: &str,
        version: Option<u64>,
    ) -> Result<Option<CampaignVersion>, StoreError> {
        let found: Option<(i64, String, String, i64)> = self
            .conn
            .query_row(
                "SELECT version, body, phases, created_unix_ms FROM campaign_versions \
                 WHERE campaign = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version DESC LIMIT 1",
                params![campaign, version.map(i)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((version, body, phases, created)) = found else {
            return Ok(None);
        };
        let phases = parse_phases(&phases)
            .map_err(|line| self.corrupt(format!("campaign `{campaign}` phase line `{line}`")))?;
        Ok(Some(CampaignVersion {
            campaign: campaign.to_string(),
            version: version as u64,
            body,
            phases,
            created_unix_ms: created as u64,
        }))
    }

    fn campaigns(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT campaign, max(version) FROM campaign_versions GROUP BY campaign ORDER BY campaign")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn assign(
        &mut self,
        campaign: &str,
        assignee: &Assignee,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        let (kind, who) = assignee.parts();
        self.conn
            .execute(
                "INSERT INTO campaign_assignments VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (kind, assignee) DO UPDATE SET campaign = excluded.campaign, \
                 created_unix_ms = excluded.created_unix_ms",
                params![kind, who, campaign, i(now_unix_ms)],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn assignments(&mut self) -> Result<Vec<Assignment>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT kind, assignee, campaign, created_unix_ms FROM campaign_assignments ORDER BY created_unix_ms, kind, assignee")
            .map_err(self.err())?;
        let rows: Vec<(String, String, String, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        drop(st);
        rows.into_iter()
            .map(|(kind, who, campaign, at)| {
                let assignee = Assignee::from_parts(&kind, who)
                    .ok_or_else(|| self.corrupt(format!("assignment kind `{kind}`")))?;
                Ok(Assignment {
                    campaign,
                    assignee,
                    created_unix_ms: at as u64,
                })
            })
            .collect()
    }

    fn put_health(&mut self, h: &ProbeHealth) -> Result<(), StoreError> {
        let (campaign, version) = match &h.applied {
            Some((c, v)) => (Some(c.as_str()), Some(i(*v))),
            None => (None, None),
        };
        let (offset, uncertainty) = match h.clock_offset {
            Some((o, u)) => (Some(o), Some(i(u))),
            None => (None, None),
        };
        self.conn
            .execute(
                "INSERT OR REPLACE INTO probe_health VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    h.probe_id,
                    i(h.seen_unix_ms),
                    h.software,
                    campaign,
                    version,
                    h.campaign_error,
                    i(h.backlog_batches),
                    i(h.backlog_bytes),
                    i(h.dropped_batches),
                    i(h.uptime_s),
                    offset,
                    uncertainty,
                    h.labels,
                    i(h.window_ms)
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn fleet_health(&mut self) -> Result<Vec<ProbeHealth>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT * FROM probe_health ORDER BY probe_id")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                let campaign: Option<String> = r.get(3)?;
                let version: Option<i64> = r.get(4)?;
                let offset: Option<i64> = r.get(10)?;
                let uncertainty: Option<i64> = r.get(11)?;
                Ok(ProbeHealth {
                    probe_id: r.get(0)?,
                    seen_unix_ms: r.get::<_, i64>(1)? as u64,
                    software: r.get(2)?,
                    applied: campaign.zip(version.map(|v| v as u64)),
                    campaign_error: r.get(5)?,
                    backlog_batches: r.get::<_, i64>(6)? as u64,
                    backlog_bytes: r.get::<_, i64>(7)? as u64,
                    dropped_batches: r.get::<_, i64>(8)? as u64,
                    uptime_s: r.get::<_, i64>(9)? as u64,
                    clock_offset: offset.zip(uncertainty.map(|u| u as u64)),
                    labels: r.get(12)?,
                    window_ms: r.get::<_, i64>(13)? as u64,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn recent_batches(&mut self, probe_id: &str, limit: u32) -> Result<Vec<u64>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT created_unix_ms FROM batches WHERE probe_id = ?1 \
                 ORDER BY sequence DESC LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![probe_id, limit], |r| {
                r.get::<_, i64>(0).map(|v| v as u64)
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}
