//! Hourly and daily roll-ups: one merged series per (probe, campaign,
//! labels, target, address, metric) and UTC block, kept beside the
//! one-minute series and written in the same transaction as the batch they
//! come from. Merges are exact (histograms add, counts sum), so a report
//! from roll-ups gives the same percentiles as one from the raw series.
//!
//! A transaction never reads a roll-up back: it appends one *part* per
//! roll-up it adds to (keyed by the first batch sequence in it, unique per
//! probe), reusing the histogram bytes as received when the part holds one
//! series. Reads merge a roll-up's parts, which are adjacent in key order.
//!
//! A database made before roll-ups gains them on open: batches are rolled
//! up in (probe, sequence) order, a chunk per transaction, with the cursor
//! in `meta` committed with each chunk, so a migration stopped at any point
//! resumes where it stopped, nothing lost or doubled.

use super::{i, labels_text, select_columns, sqlite_error, RawRow};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;
use std::path::Path;
use vantage_store::StoredSeries;
use vantage_store::{merge_into, Resolution, StoreError};
use vantage_wire::{encode_histogram, Labels, Series};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollups (
    resolution TEXT NOT NULL,
    probe_id TEXT NOT NULL,
    campaign TEXT NOT NULL,
    labels TEXT NOT NULL,
    target TEXT NOT NULL,
    target_address TEXT NOT NULL,
    metric TEXT NOT NULL,
    block_start INTEGER NOT NULL,
    part INTEGER NOT NULL,
    phase TEXT, country TEXT, region TEXT, network TEXT, asn TEXT, device TEXT,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    sent INTEGER NOT NULL, lost INTEGER NOT NULL, errors TEXT NOT NULL, bytes INTEGER NOT NULL,
    duplicates INTEGER NOT NULL, reordered INTEGER NOT NULL,
    forward_lost INTEGER NOT NULL, backward_lost INTEGER NOT NULL,
    ipdv_sum_us INTEGER NOT NULL, ipdv_pairs INTEGER NOT NULL,
    server_sum_us INTEGER NOT NULL, server_count INTEGER NOT NULL,
    histogram BLOB NOT NULL,
    reasons TEXT NOT NULL, statuses TEXT NOT NULL,
    series_count INTEGER NOT NULL,
    PRIMARY KEY (resolution, probe_id, campaign, labels, target, target_address, metric, block_start, part)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_labels ON rollups (resolution, country, phase, metric);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// The `meta` key of the roll-up migration: `done`, or the cursor
/// `PROBE\tSEQUENCE` of the last batch rolled up.
const STATE_KEY: &str = "rollups";
/// Batches rolled up per migration transaction.
pub(super) const MIGRATION_CHUNK: usize = 2000;

/// The identity of one roll-up row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    resolution: Resolution,
    probe_id: String,
    campaign: String,
    labels: String,
    target: String,
    address: String,
    metric: &'static str,
    block_start: u64,
}

/// One roll-up part being made: its labels, the merged series, how many
/// series it holds, the first batch sequence in it, and the histogram
/// bytes as received while it holds exactly one series.
struct Part {
    labels: Labels,
    series: Series,
    count: u64,
    first_sequence: u64,
    bytes: Option<Vec<u8>>,
}

impl Part {
    fn merge(&mut self, other: &Series, count: u64, first_sequence: u64) {
        merge_into(&mut self.series, other);
        self.count += count;
        self.first_sequence = self.first_sequence.min(first_sequence);
        self.bytes = None;
    }
}

/// Series merged by roll-up part, in memory, for one transaction.
#[derive(Default)]
pub(super) struct Pending {
    rows: HashMap<Key, Part>,
}

/// Whether two rows read in key order are parts of one roll-up (the
/// block start rides in `sequence` while they are read).
pub(super) fn same_rollup(a: &StoredSeries, b: &StoredSeries) -> bool {
    a.sequence == b.sequence
        && a.probe_id == b.probe_id
        && a.campaign == b.campaign
        && a.labels == b.labels
        && a.series.target == b.series.target
        && a.series.metric == b.series.metric
}

impl Pending {
    /// Adds one stored series (of batch `sequence`) to its hourly roll-up;
    /// `bytes` are its histogram as stored. The daily roll-ups are made
    /// from the hours in [`Pending::apply`]: one merge per hour, not per series.
    pub(super) fn add(
        &mut self,
        probe_id: &str,
        sequence: u64,
        campaign: &str,
        labels: &Labels,
        s: &Series,
        bytes: Option<&[u8]>,
    ) {
        let key = Key {
            resolution: Resolution::Hour,
            probe_id: probe_id.to_string(),
            campaign: campaign.to_string(),
            labels: labels_text(labels),
            target: s.target.name.clone(),
            address: s.target.address.clone(),
            metric: s.metric.name(),
            block_start: Resolution::Hour.block_start(s.window.start_unix_ms),
        };
        match self.rows.get_mut(&key) {
            Some(part) => part.merge(s, 1, sequence),
            None => {
                self.rows.insert(
                    key,
                    Part {
                        labels: labels.clone(),
                        series: s.clone(),
                        count: 1,
                        first_sequence: sequence,
                        bytes: bytes.map(<[u8]>::to_vec),
                    },
                );
            }
        }
    }

    /// The daily parts of the pending hours, added beside them.
    fn add_days(&mut self) {
        let mut days: HashMap<Key, Part> = HashMap::new();
        for (key, hour) in &self.rows {
            let day = Key {
                resolution: Resolution::Day,
                block_start: Resolution::Day.block_start(key.block_start),
                ..key.clone()
            };
            match days.get_mut(&day) {
                Some(part) => part.merge(&hour.series, hour.count, hour.first_sequence),
                None => {
                    days.insert(
                        day,
                        Part {
                            labels: hour.labels.clone(),
                            series: hour.series.clone(),
                            count: hour.count,
                            first_sequence: hour.first_sequence,
                            bytes: hour.bytes.clone(),
                        },
                    );
                }
            }
        }
        self.rows.extend(days);
    }

    /// Appends every pending part to the roll-ups, inside `tx`.
    pub(super) fn apply(mut self, tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
        self.add_days();
        let err = |source| sqlite_error(path, source);
        let mut write = tx
            .prepare_cached(
                "INSERT INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
                 ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)",
            )
            .map_err(err)?;
        let mut encoded = Vec::new();
        for (key, part) in self.rows {
            let hist: &[u8] = match &part.bytes {
                Some(b) => b,
                None => {
                    encoded.clear();
                    encode_histogram(&part.series.histogram, &mut encoded).map_err(|e| {
                        StoreError::Corrupt {
                            place: path.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                    &encoded
                }
            };
            let l = |k| part.labels.get(k);
            let s = &part.series;
            write
                .execute(params![
                    key.resolution.name(),
                    key.probe_id,
                    key.campaign,
                    key.labels,
                    key.target,
                    key.address,
                    key.metric,
                    i(key.block_start),
                    i(part.first_sequence),
                    l("phase"),
                    l("country"),
                    l("region"),
                    l("network"),
                    l("asn"),
                    l("device"),
                    i(s.window.start_unix_ms),
                    i(s.window.end_unix_ms),
                    i(s.sent),
                    i(s.lost),
                    vantage_wire::counts_text(&s.errors),
                    i(s.bytes),
                    i(s.path.duplicates),
                    i(s.path.reordered),
                    i(s.path.forward_lost),
                    i(s.path.backward_lost),
                    i(s.path.ipdv_sum_us),
                    i(s.path.ipdv_pairs),
                    i(s.server_time.sum_us),
                    i(s.server_time.count),
                    hist,
                    vantage_wire::counts_text(&s.reasons),
                    vantage_wire::counts_text(&s.statuses),
                    i(part.count),
                ])
                .map_err(err)?;
        }
        Ok(())
    }
}

/// Where the roll-up migration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MigrationState {
    /// Every stored batch is rolled up; new ones are as they come.
    Done,
    /// Batches after this (probe, sequence) are still to be rolled up
    /// (`None`: from the first).
    After(Option<(String, u64)>),
}

/// Reads the migration state; a database without one is new (nothing to
/// roll up) or made before roll-ups (everything to roll up).
pub(super) fn state(tx: &Transaction<'_>, path: &Path) -> Result<MigrationState, StoreError> {
    let err = |source| sqlite_error(path, source);
    let value: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [STATE_KEY], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)?;
    Ok(match value.as_deref() {
        Some("done") => MigrationState::Done,
        Some(cursor) => {
            let parsed = cursor
                .split_once('\t')
                .and_then(|(p, s)| Some((p.to_string(), s.parse().ok()?)));
            MigrationState::After(parsed)
        }
        None => {
            let batches: i64 = tx
                .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))
                .map_err(err)?;
            if batches == 0 {
                set_state(tx, path, &MigrationState::Done)?;
                MigrationState::Done
            } else {
                MigrationState::After(None)
            }
        }
    })
}

fn set_state(tx: &Transaction<'_>, path: &Path, state: &MigrationState) -> Result<(), StoreError> {
    let value = match state {
        MigrationState::Done => "done".to_string(),
        MigrationState::After(None) => String::new(),
        MigrationState::After(Some((p, s))) => format!("{p}\t{s}"),
    };
    tx.execute(
        "INSERT OR REPLACE INTO meta VALUES (?1, ?2)",
        params![STATE_KEY, value],
    )
    .map(|_| ())
    .map_err(|source| sqlite_error(path, source))
}

/// Rolls up the next chunk of at most `chunk` batches after `after`, in
/// `tx`, and moves the cursor past them; `Done` when none were left.
pub(super) fn migrate_chunk(
    tx: &Transaction<'_>,
    path: &Path,
    after: Option<(String, u64)>,
    chunk: usize,
) -> Result<(MigrationState, u64), StoreError> {
    let err = |source| sqlite_error(path, source);
    let (p, s) = after
        .clone()
        .map(|(p, s)| (p, i(s)))
        .unwrap_or((String::new(), -1));
    let last: Option<(String, i64)> = tx
        .query_row(
            "SELECT probe_id, sequence FROM (SELECT probe_id, sequence FROM batches \
             WHERE (probe_id, sequence) > (?1, ?2) ORDER BY probe_id, sequence LIMIT ?3) \
             ORDER BY probe_id DESC, sequence DESC LIMIT 1",
            params![p, s, chunk as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(err)?;
    let Some((lp, ls)) = last else {
        set_state(tx, path, &MigrationState::Done)?;
        return Ok((MigrationState::Done, 0));
    };
    let batches: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM batches WHERE (probe_id, sequence) > (?1, ?2) \
             AND (probe_id, sequence) <= (?3, ?4)",
            params![p, s, lp, ls],
            |r| r.get(0),
        )
        .map_err(err)?;
    let mut pending = Pending::default();
    {
        let mut st = tx
            .prepare(&format!(
                "SELECT {} FROM series WHERE (probe_id, sequence) > (?1, ?2) \
                 AND (probe_id, sequence) <= (?3, ?4) ORDER BY probe_id, sequence, idx",
                select_columns("sequence")
            ))
            .map_err(err)?;
        let mut rows = st.query(params![p, s, lp, ls]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let row = RawRow::read(r)
                .map_err(err)?
                .into_series()
                .map_err(|reason| StoreError::Corrupt {
                    place: path.display().to_string(),
                    reason,
                })?;
            pending.add(
                &row.probe_id,
                row.sequence,
                &row.campaign,
                &row.labels,
                &row.series,
                None,
            );
        }
    }
    pending.apply(tx, path)?;
    let next = MigrationState::After(Some((lp, ls.max(0) as u64)));
    set_state(tx, path, &next)?;
    Ok((next, batches.max(0) as u64))
}
