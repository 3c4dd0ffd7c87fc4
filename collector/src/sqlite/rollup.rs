//! SQLite's roll-up tables and their SQL; the merging is `crate::rollup`'s.
//!
//! A database made before roll-ups gains them on open: every batch is
//! entered as pending (one statement), then folded a chunk per transaction;
//! a fold stopped at any point resumes at the next open, nothing lost or
//! doubled.

use super::row::figure_values;
use super::sqlite_error;
use crate::rollup::{Folding, Unfolded};
use crate::row::{label_values, select_columns, sql_int as i, RowReader, SERIES_COUNT_COLUMN};
use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{params, Connection, OptionalExtension, ToSql, Transaction};
use std::path::Path;
use vantage_store::{Resolution, StoreError};
use vantage_wire::CountsScratch;

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
    unknown_direction_lost INTEGER NOT NULL DEFAULT 0,
    edges TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (resolution, probe_id, campaign, labels, target, target_address, metric, block_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_by_labels ON rollups (resolution, country, phase, metric);
CREATE TABLE IF NOT EXISTS rollup_pending (
    probe_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    PRIMARY KEY (probe_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// The `meta` key saying every batch stored before roll-ups existed has
/// been entered as pending.
const STATE_KEY: &str = "rollups";
/// The `meta` key counting the folds written: a prepared fold is written
/// only if no other fold came between its reading and its writing.
const GENERATION_KEY: &str = "fold_generation";

/// One roll-up row as `rollups` takes it, column by column.
type RollupRow = Vec<Value>;

/// A fold read and merged on a handle of its own ([`plan`]), written later
/// by the writer ([`apply_planned`]): the rows, the pending batches they
/// fold, and the fold generation they were read at.
pub(super) struct Planned {
    generation: i64,
    batches: Vec<(String, i64)>,
    rows: Vec<RollupRow>,
}

/// Every roll-up of `folding` merged with its stored row (read through
/// `conn`), as the rows to write.
fn merged_rows(
    folding: Folding,
    conn: &Connection,
    path: &Path,
) -> Result<Vec<RollupRow>, StoreError> {
    let err = |source| sqlite_error(path, source);
    let place = path.display().to_string();
    let mut read = conn
        .prepare_cached(&format!(
            "SELECT {}, series_count FROM rollups WHERE resolution = ?1 AND probe_id = ?2 \
             AND campaign = ?3 AND labels = ?4 AND target = ?5 AND target_address = ?6 \
             AND metric = ?7 AND block_start = ?8",
            select_columns("block_start")
        ))
        .map_err(err)?;
    let mut hist = Vec::new();
    let mut scratch = CountsScratch::default();
    let mut reader = RowReader::default();
    let mut out = Vec::with_capacity(folding.rows.len());
    for (key, mut part) in folding.rows {
        let (name, block_start) = (key.resolution.name(), i(key.block_start));
        let id: [&dyn ToSql; 8] = [
            &name,
            &key.probe_id,
            &key.campaign,
            &key.labels,
            &key.target,
            &key.address,
            &key.metric,
            &block_start,
        ];
        let mut rows = read.query(&id[..]).map_err(err)?;
        if let Some(r) = rows.next().map_err(err)? {
            reader.read(r, &place)?;
            let count: i64 = r.get(SERIES_COUNT_COLUMN).map_err(err)?;
            let counts = std::mem::take(&mut reader.counts);
            part.absorb(&reader.row.series, counts, count.max(0) as u64);
        }
        drop(rows);
        part.histogram(&mut scratch, &mut hist);
        let indexed = label_values(&part.labels);
        let mut row: RollupRow = Vec::with_capacity(33);
        row.extend([
            Value::Text(name.to_string()),
            Value::Text(key.probe_id),
            Value::Text(key.campaign),
            Value::Text(key.labels),
            Value::Text(key.target),
            Value::Text(key.address),
            Value::Text(key.metric.to_string()),
            Value::Integer(block_start),
        ]);
        row.extend(
            indexed
                .iter()
                .map(|v| v.map_or(Value::Null, |t| Value::Text(t.to_string()))),
        );
        row.extend(
            figure_values(&part.series, &hist)
                .into_iter()
                .map(|v| match v {
                    ToSqlOutput::Owned(v) => v,
                    ToSqlOutput::Borrowed(r) => Value::from(r),
                    _ => Value::Null,
                }),
        );
        // `series_count` comes before `unknown_direction_lost` and
        // `edges`, the last columns (added in schemas 5 and 6).
        let edges = row.pop().unwrap_or(Value::Text(String::new()));
        let unknown_direction_lost = row.pop().unwrap_or(Value::Integer(0));
        row.push(Value::Integer(i(part.count)));
        row.push(unknown_direction_lost);
        row.push(edges);
        out.push(row);
    }
    Ok(out)
}

/// Writes merged roll-up rows in place of the stored ones, inside `tx`,
/// and counts one more fold written.
fn write_rows(rows: Vec<RollupRow>, tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    let err = |source| sqlite_error(path, source);
    let mut write = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
             ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34)",
        )
        .map_err(err)?;
    for row in rows {
        write
            .execute(rusqlite::params_from_iter(row))
            .map_err(err)?;
    }
    tx.execute(
        "INSERT INTO meta VALUES (?1, '1') ON CONFLICT (key) \
         DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [GENERATION_KEY],
    )
    .map_err(err)?;
    Ok(())
}

/// How many folds this store has written.
fn generation(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
        [GENERATION_KEY],
        |r| r.get(0),
    )
    .optional()
    .map(|g| g.unwrap_or(0))
    .map_err(|source| sqlite_error(path, source))
}

/// The pending batches a fold takes: the first `max` in (probe, sequence)
/// order, so one probe's consecutive windows fold together.
const NEXT_PENDING: &str =
    "SELECT probe_id, sequence FROM rollup_pending ORDER BY probe_id, sequence LIMIT ?1";

/// The series of the next `max` pending batches, merged, read through `conn`.
fn read_pending(conn: &Connection, path: &Path, max: usize) -> Result<Folding, StoreError> {
    let err = |source| sqlite_error(path, source);
    let mut folding = Folding::default();
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {} FROM series WHERE (probe_id, sequence) IN ({NEXT_PENDING})",
            select_columns("sequence")
        ))
        .map_err(err)?;
    let mut rows = st.query([max as i64]).map_err(err)?;
    let mut reader = RowReader::default();
    let place = path.display().to_string();
    while let Some(r) = rows.next().map_err(err)? {
        reader.read(r, &place)?;
        folding.add(&reader.row, &reader.counts);
    }
    Ok(folding)
}

/// Folds up to `max` pending batches into the roll-ups, inside `tx`, and
/// deletes their pending entries; returns how many were folded.
pub(super) fn fold(tx: &Transaction<'_>, path: &Path, max: usize) -> Result<u64, StoreError> {
    let folding = read_pending(tx, path, max)?;
    let rows = merged_rows(folding, tx, path)?;
    write_rows(rows, tx, path)?;
    let folded = tx
        .execute(
            &format!("DELETE FROM rollup_pending WHERE (probe_id, sequence) IN ({NEXT_PENDING})"),
            [max as i64],
        )
        .map_err(|source| sqlite_error(path, source))?;
    Ok(folded as u64)
}

/// Reads and merges the next fold of up to `max` pending batches through
/// `conn`, in one read snapshot, writing nothing.
pub(super) fn plan(conn: &mut Connection, path: &Path, max: usize) -> Result<Planned, StoreError> {
    let err = |source| sqlite_error(path, source);
    let tx = conn.transaction().map_err(err)?;
    let generation = generation(&tx, path)?;
    let batches = {
        let mut st = tx.prepare_cached(NEXT_PENDING).map_err(err)?;
        let keys = st
            .query_map([max as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        keys.collect::<Result<Vec<(String, i64)>, _>>()
            .map_err(err)?
    };
    let folding = read_pending(&tx, path, max)?;
    let rows = merged_rows(folding, &tx, path)?;
    tx.rollback().map_err(err)?;
    Ok(Planned {
        generation,
        batches,
        rows,
    })
}

/// Writes a planned fold inside `tx` if no other fold was written since
/// it was read; returns how many batches it folded (`None`: another fold
/// came first, nothing written).
pub(super) fn apply_planned(
    planned: Planned,
    tx: &Transaction<'_>,
    path: &Path,
) -> Result<Option<u64>, StoreError> {
    let err = |source| sqlite_error(path, source);
    if generation(tx, path)? != planned.generation {
        return Ok(None);
    }
    let mut delete = tx
        .prepare_cached("DELETE FROM rollup_pending WHERE probe_id = ?1 AND sequence = ?2")
        .map_err(err)?;
    for (probe, sequence) in &planned.batches {
        if delete.execute(params![probe, sequence]).map_err(err)? != 1 {
            // Folded by a writer that does not count folds: the caller
            // rolls back.
            return Ok(None);
        }
    }
    let folded = planned.batches.len() as u64;
    write_rows(planned.rows, tx, path)?;
    Ok(Some(folded))
}

/// Enters one stored batch as pending, inside the transaction storing it.
pub(super) fn enter_pending(
    tx: &Transaction<'_>,
    path: &Path,
    probe_id: &str,
    sequence: u64,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO rollup_pending VALUES (?1, ?2)")
        .and_then(|mut st| st.execute(params![probe_id, i(sequence)]))
        .map(|_| ())
        .map_err(|source| sqlite_error(path, source))
}

/// Batches stored but not yet folded.
pub(super) fn pending_count(tx: &rusqlite::Connection, path: &Path) -> Result<u64, StoreError> {
    tx.query_row("SELECT COUNT(*) FROM rollup_pending", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n.max(0) as u64)
    .map_err(|source| sqlite_error(path, source))
}

/// Brings a database made before roll-ups (or with the first, part-wise
/// roll-up layout) to this one: drops derived rows of an old layout, and
/// enters every batch not yet accounted for as pending, in `tx`.
pub(super) fn upgrade(tx: &Transaction<'_>, path: &Path) -> Result<(), StoreError> {
    let err = |source| sqlite_error(path, source);
    let parts_layout: bool = tx
        .query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('rollups') WHERE name = 'part'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if parts_layout {
        // Roll-ups are derived from the series: rebuilt from them.
        tx.execute_batch(&format!(
            "DROP TABLE rollups; DELETE FROM meta WHERE key = '{STATE_KEY}'; {SCHEMA}"
        ))
        .map_err(err)?;
    }
    let state: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [STATE_KEY], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)?;
    if state.as_deref() != Some("done") {
        tx.execute_batch(&format!(
            "INSERT OR IGNORE INTO rollup_pending SELECT probe_id, sequence FROM batches; \
             INSERT OR REPLACE INTO meta VALUES ('{STATE_KEY}', 'done');"
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// The pending batches' series that `where_sql` (over the series columns,
/// with `args`) selects, merged by roll-up at `resolution`.
pub(super) fn unfolded(
    conn: &rusqlite::Connection,
    path: &Path,
    resolution: Resolution,
    where_sql: &str,
    args: &[String],
) -> Result<Unfolded, StoreError> {
    let err = |source| sqlite_error(path, source);
    let mut st = conn
        .prepare(&format!(
            "SELECT {} FROM series WHERE (probe_id, sequence) IN (SELECT probe_id, sequence FROM rollup_pending){where_sql}",
            select_columns("sequence")
        ))
        .map_err(err)?;
    let mut rows = st
        .query(rusqlite::params_from_iter(args.iter()))
        .map_err(err)?;
    let mut out = Unfolded::new(resolution);
    let mut reader = RowReader::default();
    let place = path.display().to_string();
    while let Some(r) = rows.next().map_err(err)? {
        reader.read(r, &place)?;
        out.add(&reader.row, &reader.counts);
    }
    Ok(out)
}
