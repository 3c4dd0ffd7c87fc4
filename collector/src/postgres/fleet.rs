//! [`Fleet`] on PostgreSQL.

use super::{wait, PgStore};
use crate::fleet::{parse_phases, phases_text};
use crate::row::sql_int as i;
use vantage_store::fleet::{Assignee, Assignment, CampaignVersion, Fleet, ProbeHealth};
use vantage_store::StoreError;
use vantage_wire::campaign::PhaseSwitch;

impl PgStore {
    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            place: self.place().to_string(),
            reason,
        }
    }
}

impl Fleet for PgStore {
    fn put_campaign(
        &mut self,
        campaign: &str,
        body: &str,
        phases: &[PhaseSwitch],
        now_unix_ms: u64,
    ) -> Result<u64, StoreError> {
        let conn = self.connected()?;
        let phases = phases_text(phases);
        // Two `campaign set`s at once: the second waits for the first's
        // row and fails on the key, and nothing of it is stored.
        let done = wait(conn.client.query_one(
            "INSERT INTO campaign_versions SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4 \
             FROM campaign_versions WHERE campaign = $1 RETURNING version",
            &[&campaign, &body, &phases, &i(now_unix_ms)],
        ));
        done.map(|r| r.get::<_, i64>(0) as u64)
            .map_err(|e| self.error(e))
    }

    fn campaign_version(
        &mut self,
        campaign: &str,
        version: Option<u64>,
    ) -> Result<Option<CampaignVersion>, StoreError> {
        let conn = self.connected()?;
        let version = version.map(i);
        let found = wait(conn.client.query_opt(
            "SELECT version, body, phases, created_unix_ms FROM campaign_versions \
             WHERE campaign = $1 AND ($2::int8 IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
            &[&campaign, &version],
        ));
        let Some(row) = found.map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let phases = parse_phases(row.get(2))
            .map_err(|line| self.corrupt(format!("campaign `{campaign}` phase line `{line}`")))?;
        Ok(Some(CampaignVersion {
            campaign: campaign.to_string(),
            version: row.get::<_, i64>(0) as u64,
            body: row.get(1),
            phases,
            created_unix_ms: row.get::<_, i64>(3) as u64,
        }))
    }

    fn campaigns(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.connected()?;
        let rows = wait(conn.client.query(
            "SELECT campaign, max(version) FROM campaign_versions GROUP BY campaign ORDER BY campaign COLLATE \"C\"",
            &[],
        ));
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn assign(
        &mut self,
        campaign: &str,
        assignee: &Assignee,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        let (kind, who) = assignee.parts();
        let conn = self.connected()?;
        let done = wait(conn.client.execute(
            "INSERT INTO campaign_assignments VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, assignee) DO UPDATE SET campaign = EXCLUDED.campaign, \
             created_unix_ms = EXCLUDED.created_unix_ms",
            &[&kind, &who, &campaign, &i(now_unix_ms)],
        ));
        done.map(|_| ()).map_err(|e| self.error(e))
    }

    fn assignments(&mut self) -> Result<Vec<Assignment>, StoreError> {
        let conn = self.connected()?;
        let rows = wait(conn.client.query(
            "SELECT kind, assignee, campaign, created_unix_ms FROM campaign_assignments \
             ORDER BY created_unix_ms, kind COLLATE \"C\", assignee COLLATE \"C\"",
            &[],
        ));
        let rows = rows.map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| {
                let kind: String = r.get(0);
                let assignee = Assignee::from_parts(&kind, r.get(1))
                    .ok_or_else(|| self.corrupt(format!("assignment kind `{kind}`")))?;
                Ok(Assignment {
                    campaign: r.get(2),
                    assignee,
                    created_unix_ms: r.get::<_, i64>(3) as u64,
                })
            })
            .collect()
    }

    fn put_health(&mut self, h: &ProbeHealth) -> Result<(), StoreError> {
        let campaign = h.applied.as_ref().map(|(c, _)| c.as_str());
        let version = h.applied.as_ref().map(|(_, v)| i(*v));
        let offset = h.clock_offset.map(|(o, _)| o);
        let uncertainty = h.clock_offset.map(|(_, u)| i(u));
        let conn = self.connected()?;
        let done = wait(conn.client.execute(
            "INSERT INTO probe_health VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (probe_id) DO UPDATE SET seen_unix_ms = EXCLUDED.seen_unix_ms, \
             software = EXCLUDED.software, campaign = EXCLUDED.campaign, \
             campaign_version = EXCLUDED.campaign_version, campaign_error = EXCLUDED.campaign_error, \
             backlog_batches = EXCLUDED.backlog_batches, backlog_bytes = EXCLUDED.backlog_bytes, \
             dropped_batches = EXCLUDED.dropped_batches, uptime_s = EXCLUDED.uptime_s, \
             clock_offset_us = EXCLUDED.clock_offset_us, \
             clock_uncertainty_us = EXCLUDED.clock_uncertainty_us, labels = EXCLUDED.labels, \
             window_ms = EXCLUDED.window_ms",
            &[
                &h.probe_id,
                &i(h.seen_unix_ms),
                &h.software,
                &campaign,
                &version,
                &h.campaign_error,
                &i(h.backlog_batches),
                &i(h.backlog_bytes),
                &i(h.dropped_batches),
                &i(h.uptime_s),
                &offset,
                &uncertainty,
                &h.labels,
                &i(h.window_ms),
            ],
        ));
        done.map(|_| ()).map_err(|e| self.error(e))
    }

    fn fleet_health(&mut self) -> Result<Vec<ProbeHealth>, StoreError> {
        let conn = self.connected()?;
        let rows = wait(conn.client.query(
            "SELECT * FROM probe_health ORDER BY probe_id COLLATE \"C\"",
            &[],
        ));
        let rows = rows.map_err(|e| self.error(e))?;
        let n = |r: &tokio_postgres::Row, c: usize| r.get::<_, i64>(c) as u64;
        Ok(rows
            .iter()
            .map(|r| {
                let campaign: Option<String> = r.get(3);
                let version: Option<i64> = r.get(4);
                let offset: Option<i64> = r.get(10);
                let uncertainty: Option<i64> = r.get(11);
                ProbeHealth {
                    probe_id: r.get(0),
                    seen_unix_ms: n(r, 1),
                    software: r.get(2),
                    applied: campaign.zip(version.map(|v| v as u64)),
                    campaign_error: r.get(5),
                    backlog_batches: n(r, 6),
                    backlog_bytes: n(r, 7),
                    dropped_batches: n(r, 8),
                    uptime_s: n(r, 9),
                    clock_offset: offset.zip(uncertainty.map(|u| u as u64)),
                    labels: r.get(12),
                    window_ms: n(r, 13),
                }
            })
            .collect())
    }

    fn recent_batches(&mut self, probe_id: &str, limit: u32) -> Result<Vec<u64>, StoreError> {
        let conn = self.connected()?;
        let rows = wait(conn.client.query(
            "SELECT created_unix_ms FROM batches WHERE probe_id = $1 \
             ORDER BY sequence DESC LIMIT $2",
            &[&probe_id, &i64::from(limit)],
        ));
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }
}
