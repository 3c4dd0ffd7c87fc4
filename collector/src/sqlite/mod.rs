//! The embedded backend of the [`Store`] trait: SQLite. Ingest and queries
//! see only the trait, so a second backend (PostgreSQL, for many collectors
//! sharing one database) can be added without touching them.

mod fleet;
mod rollup;
mod row;

use crate::row::{
    label_values, labels_text, read_trace, select_columns, sql_int as i, trace_values, RowReader,
    FILTER_COLUMNS, SCHEMA_VERSION, TRACE_COLUMNS, TRACE_FILTER_COLUMNS,
};
use row::figure_values;

use rusqlite::{params, Connection, OptionalExtension, ToSql, TransactionBehavior};
use std::path::{Path, PathBuf};
use vantage_store::{
    FoldPlan, Incoming, Inserted, RawRemoved, Resolution, Selector, Store, StoreError, StoredBatch,
    StoredSeries, StoredTrace, TokenRecord,
};
use vantage_wire::{encode_histogram_plain, SparseCounts};

/// SQLite in WAL mode with `synchronous=FULL`: a commit returns only after
/// the WAL is fsynced, so a batch acknowledged after its commit survives a
/// crash *and* a power loss (with the default `NORMAL`, WAL mode can lose
/// the last commits on power loss, which would break "never lose an
/// acknowledged batch").
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
    probe_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    campaign TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    received_unix_ms INTEGER NOT NULL,
    dropped_batches INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (probe_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    probe_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    campaign TEXT NOT NULL,
    phase TEXT, country TEXT, region TEXT, network TEXT, asn TEXT, device TEXT,
    labels TEXT NOT NULL,
    target TEXT NOT NULL,
    target_address TEXT NOT NULL,
    metric TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    sent INTEGER NOT NULL, lost INTEGER NOT NULL, errors TEXT NOT NULL, bytes INTEGER NOT NULL,
    duplicates INTEGER NOT NULL, reordered INTEGER NOT NULL,
    forward_lost INTEGER NOT NULL, backward_lost INTEGER NOT NULL,
    ipdv_sum_us INTEGER NOT NULL, ipdv_pairs INTEGER NOT NULL,
    server_sum_us INTEGER NOT NULL, server_count INTEGER NOT NULL,
    histogram BLOB NOT NULL,
    reasons TEXT NOT NULL DEFAULT '', statuses TEXT NOT NULL DEFAULT '',
    unknown_direction_lost INTEGER NOT NULL DEFAULT 0,
    edges TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (probe_id, sequence, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_by_labels ON series (country, phase, metric);
CREATE INDEX IF NOT EXISTS batches_raw_by_created ON batches (created_unix_ms) WHERE length(body) > 0;
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    probe_id TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    revoked_unix_ms INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_by_probe ON tokens (probe_id);
CREATE TABLE IF NOT EXISTS traces (
    probe_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    campaign TEXT NOT NULL,
    phase TEXT, country TEXT, region TEXT, network TEXT, asn TEXT, device TEXT,
    labels TEXT NOT NULL,
    target TEXT NOT NULL,
    target_address TEXT NOT NULL,
    started_unix_ms INTEGER NOT NULL,
    trace_end TEXT NOT NULL,
    hops TEXT NOT NULL,
    PRIMARY KEY (probe_id, sequence, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_by_labels ON traces (country, phase);
";

/// A selector's equalities on `columns` as SQL (`AND col IN (?, …)`) and
/// its arguments, to narrow a read on indexed columns.
fn filter_sql(selector: &Selector, columns: &[&str]) -> (String, Vec<String>) {
    let mut filter = String::new();
    let mut args = Vec::new();
    for col in columns {
        if let Some(vs) = selector.equals.get(*col) {
            let marks = vec!["?"; vs.len()].join(",");
            filter.push_str(&format!(" AND {col} IN ({marks})"));
            args.extend(vs.iter().cloned());
        }
    }
    (filter, args)
}

/// A SQLite failure, naming the database file.
fn sqlite_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let place = path.display().to_string();
    if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return StoreError::Full {
            place,
            source: Box::new(source),
        };
    }
    StoreError::Database {
        place,
        source: Box::new(source),
    }
}

/// Columns added after the first release, with their tables and
/// definitions: a database made before them gains them on open (old rows
/// read as empty or zero), at the end of the table, where new tables have
/// them too.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("series", "reasons", "TEXT NOT NULL DEFAULT ''"),
    ("series", "statuses", "TEXT NOT NULL DEFAULT ''"),
    (
        "series",
        "unknown_direction_lost",
        "INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "rollups",
        "unknown_direction_lost",
        "INTEGER NOT NULL DEFAULT 0",
    ),
    ("series", "edges", "TEXT NOT NULL DEFAULT ''"),
    ("rollups", "edges", "TEXT NOT NULL DEFAULT ''"),
];

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. A database made
    /// before roll-ups gains them first; see [`SqliteStore::open_with_progress`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_progress(path, &mut |_, _| {})
    }

    /// [`SqliteStore::open`], telling `progress` (batches folded into the
    /// roll-ups, of how many) while stored batches wait to be folded: all
    /// of them in a database made before roll-ups, or those a collector
    /// left unfolded. Folding commits a chunk at a time: stopped at any
    /// point, it resumes at the next open, nothing lost or doubled.
    pub fn open_with_progress(
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, StoreError> {
        let mut store = Self::open_schema(path)?;
        let err = |source| sqlite_error(path, source);
        let tx = store
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        rollup::upgrade(&tx, path)?;
        tx.commit().map_err(err)?;
        store.fold_chunks(crate::rollup::OPEN_FOLD_CHUNK, usize::MAX, progress)?;
        Ok(store)
    }

    /// Folds at most `chunks` chunks of `chunk` pending batches.
    fn fold_chunks(
        &mut self,
        chunk: usize,
        chunks: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), StoreError> {
        let total = rollup::pending_count(&self.conn, &self.path)?;
        let mut done = 0;
        for _ in 0..chunks {
            let n = self.fold_rollups(chunk)?;
            if n == 0 {
                break;
            }
            done += n;
            progress(done, total);
        }
        Ok(())
    }

    fn open_schema(path: &Path) -> Result<Self, StoreError> {
        let err = |source| sqlite_error(path, source);
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        // The version first: a database a newer release made is left as it is.
        conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            .map_err(err)?;
        let found: Option<i64> = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .map_err(err)?;
        if let Some(v) = found.filter(|v| *v > SCHEMA_VERSION) {
            return Err(StoreError::SchemaTooNew {
                place: path.display().to_string(),
                found: v,
                known: SCHEMA_VERSION,
            });
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(rollup::SCHEMA).map_err(err)?;
        conn.execute_batch(crate::fleet::FLEET_SCHEMA)
            .map_err(err)?;
        for (table, column, definition) in ADDED_COLUMNS {
            let present: bool = conn
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )
                .map_err(err)?;
            if !present {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                ))
                .map_err(err)?;
            }
        }
        // Versions 1 to 4 are brought to 5 by the steps above and the
        // roll-up upgrade at open; the version says what the tables are.
        conn.execute_batch(&format!(
            "DELETE FROM schema_version; INSERT INTO schema_version VALUES ({SCHEMA_VERSION})"
        ))
        .map_err(err)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| sqlite_error(&self.path, source)
    }
}

impl Store for SqliteStore {
    fn insert_batches(
        &mut self,
        batches: &[Incoming<'_>],
        received_unix_ms: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut out = Vec::with_capacity(batches.len());
        {
            let mut insert_batch = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO batches VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(&err)?;
            let mut insert_series = tx
                .prepare_cached(
                    "INSERT INTO series VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                     ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)",
                )
                .map_err(&err)?;
            let mut insert_trace = tx
                .prepare_cached(
                    "INSERT INTO traces VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .map_err(&err)?;
            let mut token_valid = tx
                .prepare_cached(
                    "SELECT 1 FROM tokens WHERE hash = ?1 AND probe_id = ?2 AND revoked_unix_ms IS NULL",
                )
                .map_err(&err)?;
            let mut hist = Vec::new();
            for item in batches {
                let (b, raw) = (item.batch, item.raw);
                if let Some(hash) = item.token_hash {
                    if !token_valid
                        .exists(params![hash, b.probe_id])
                        .map_err(&err)?
                    {
                        out.push(Inserted::TokenRevoked);
                        continue;
                    }
                }
                let labels = labels_text(&b.labels);
                let changed = insert_batch
                    .execute(params![
                        b.probe_id,
                        i(b.sequence),
                        b.campaign,
                        labels,
                        i(b.created_unix_ms),
                        i(received_unix_ms),
                        i(b.dropped_batches),
                        raw
                    ])
                    .map_err(&err)?;
                if changed == 0 {
                    out.push(Inserted::Duplicate);
                    continue;
                }
                let (indexed, seq) = (label_values(&b.labels), i(b.sequence));
                for (idx, s) in b.series.iter().enumerate() {
                    let stored_hist: &[u8] = match item.plain_histograms.get(idx) {
                        Some(bytes) => bytes,
                        None => {
                            hist.clear();
                            encode_histogram_plain(&s.histogram, &mut hist).map_err(|e| {
                                StoreError::Corrupt {
                                    place: path.display().to_string(),
                                    reason: e.to_string(),
                                }
                            })?;
                            &hist
                        }
                    };
                    let key: [&dyn ToSql; 4] = [&b.probe_id, &seq, &(idx as i64), &b.campaign];
                    let tail: [&dyn ToSql; 4] =
                        [&labels, &s.target.name, &s.target.address, &s.metric.name()];
                    let figures = figure_values(s, stored_hist);
                    let columns = key
                        .into_iter()
                        .chain(indexed.iter().map(|v| v as &dyn ToSql))
                        .chain(tail)
                        .chain(figures.iter().map(|v| v as &dyn ToSql));
                    insert_series
                        .execute(rusqlite::params_from_iter(columns))
                        .map_err(&err)?;
                }
                for (idx, t) in b.traces.iter().enumerate() {
                    let (target, address, started, end, hops) = trace_values(t);
                    let key: [&dyn ToSql; 4] = [&b.probe_id, &seq, &(idx as i64), &b.campaign];
                    let tail: [&dyn ToSql; 6] = [&labels, &target, &address, &started, &end, &hops];
                    let columns = key
                        .into_iter()
                        .chain(indexed.iter().map(|v| v as &dyn ToSql))
                        .chain(tail);
                    insert_trace
                        .execute(rusqlite::params_from_iter(columns))
                        .map_err(&err)?;
                }
                rollup::enter_pending(&tx, &path, &b.probe_id, b.sequence)?;
                out.push(Inserted::Stored);
            }
        }
        tx.commit().map_err(&err)?;
        Ok(out)
    }

    fn token_probe(&mut self, hash: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT probe_id FROM tokens WHERE hash = ?1 AND revoked_unix_ms IS NULL",
            )
            .and_then(|mut st| st.query_row([hash], |r| r.get(0)).optional())
            .map_err(self.err())
    }

    fn add_token(
        &mut self,
        probe_id: &str,
        hash: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens VALUES (?1, ?2, ?3, NULL)",
                params![hash, probe_id, i(now_unix_ms)],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn import_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens VALUES (?1, ?2, 0, ?3)",
                params![token.hash, token.probe_id, token.revoked_unix_ms.map(i)],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    fn revoke_tokens(&mut self, probe_id: &str, now_unix_ms: u64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE tokens SET revoked_unix_ms = ?2 WHERE probe_id = ?1 AND revoked_unix_ms IS NULL",
                params![probe_id, i(now_unix_ms)],
            )
            .map_err(self.err())
    }

    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT hash, probe_id, revoked_unix_ms FROM tokens ORDER BY probe_id, created_unix_ms")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(TokenRecord {
                    hash: r.get(0)?,
                    probe_id: r.get(1)?,
                    revoked_unix_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|source| sqlite_error(&self.path, source))
    }

    fn select_traces(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(StoredTrace) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let (filter, args) = filter_sql(selector, &TRACE_FILTER_COLUMNS);
        let path = self.path.clone();
        let sqlite = |source| sqlite_error(&path, source);
        let place = path.display().to_string();
        let sql = format!(
            "SELECT {TRACE_COLUMNS} FROM traces WHERE 1=1{filter} ORDER BY probe_id, sequence, idx"
        );
        let mut st = self.conn.prepare(&sql).map_err(sqlite)?;
        let mut rows = st
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(sqlite)?;
        let mut matched = 0;
        while let Some(r) = rows.next().map_err(sqlite)? {
            let t = read_trace(r, &place)?;
            if selector.matches_trace(&t) {
                matched += 1;
                each(t)?;
            }
        }
        Ok(matched)
    }

    fn select_sparse(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(&StoredSeries, &SparseCounts) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        // Narrow in SQL on the indexed, well-known columns (both tables
        // have them); the selector itself decides in the end (other
        // labels, alternatives, time).
        let (filter, args) = filter_sql(selector, &FILTER_COLUMNS);
        let path = self.path.clone();
        let sqlite = |source| sqlite_error(&path, source);
        let mut matched = 0u64;
        let mut emit = |row: &StoredSeries, counts: &SparseCounts| -> Result<(), StoreError> {
            if selector.matches(row) {
                matched += 1;
                each(row, counts)?;
            }
            Ok(())
        };
        let mut reader = RowReader::default();
        let place = path.display().to_string();
        let resolution = selector.resolution;
        if resolution == Resolution::Window {
            let sql = format!(
                "SELECT {} FROM series WHERE 1=1{filter} ORDER BY probe_id, sequence, idx",
                select_columns("sequence")
            );
            let mut st = self.conn.prepare(&sql).map_err(sqlite)?;
            let mut rows = st
                .query(rusqlite::params_from_iter(args.iter()))
                .map_err(sqlite)?;
            while let Some(r) = rows.next().map_err(sqlite)? {
                reader.read(r, &place)?;
                emit(&reader.row, &reader.counts)?;
            }
            return Ok(matched);
        }
        // Folded roll-ups, each merged with what its unfolded batches add
        // (read in one transaction, so a fold in between cannot count a
        // batch twice or not at all). A roll-up's sequence reads as 0.
        let tx = self.conn.transaction().map_err(sqlite)?;
        let mut unfolded = rollup::unfolded(&tx, &path, resolution, &filter, &args)?;
        {
            let sql = format!(
                "SELECT {} FROM rollups WHERE resolution = ?{filter} \
                 ORDER BY probe_id, campaign, labels, target, target_address, metric, block_start",
                select_columns("block_start")
            );
            let mut st = tx.prepare(&sql).map_err(sqlite)?;
            let mut rows = st
                .query(rusqlite::params_from_iter(
                    std::iter::once(resolution.name().to_string()).chain(args.iter().cloned()),
                ))
                .map_err(sqlite)?;
            while let Some(r) = rows.next().map_err(sqlite)? {
                reader.read(r, &place)?;
                unfolded.emit_folded(&mut reader.row, &reader.counts, &mut emit)?;
            }
        }
        unfolded.emit_rest(&mut emit)?;
        tx.commit().map_err(sqlite)?;
        Ok(matched)
    }

    fn batch_count(&mut self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err())
    }

    fn batch_bytes(
        &mut self,
        probe_id: &str,
        sequence: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT body FROM batches WHERE probe_id = ?1 AND sequence = ?2 AND length(body) > 0",
                params![probe_id, i(sequence)],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    fn batches_after(
        &mut self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, StoreError> {
        let (probe, sequence) = after.map_or(("", -1), |(p, s)| (p, i(s)));
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT probe_id, sequence, received_unix_ms, body FROM batches \
                 WHERE (probe_id, sequence) > (?1, ?2) ORDER BY probe_id, sequence LIMIT ?3",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map(params![probe, sequence, limit as i64], |r| {
                Ok(StoredBatch {
                    probe_id: r.get(0)?,
                    sequence: r.get::<_, i64>(1)?.max(0) as u64,
                    received_unix_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    body: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|source| sqlite_error(&self.path, source))
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(self.err())
    }

    fn fold_rollups(&mut self, max_batches: usize) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite_error(&path, e))?;
        let folded = rollup::fold(&tx, &path, max_batches)?;
        tx.commit().map_err(|e| sqlite_error(&path, e))?;
        Ok(folded)
    }

    fn plan_fold(&mut self, max_batches: usize) -> Result<FoldPlan, StoreError> {
        let planned = rollup::plan(&mut self.conn, &self.path, max_batches)?;
        Ok(FoldPlan::prepared(Box::new(planned)))
    }

    fn apply_fold(&mut self, plan: FoldPlan) -> Result<Option<u64>, StoreError> {
        let planned = match plan.into_prepared() {
            Err(max) => return self.fold_rollups(max).map(Some),
            Ok(rows) => match rows.downcast::<rollup::Planned>() {
                Ok(planned) => *planned,
                // Another backend's plan: not this one's to write.
                Err(_) => return Ok(None),
            },
        };
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite_error(&path, e))?;
        let folded = rollup::apply_planned(planned, &tx, &path)?;
        if folded.is_some() {
            tx.commit().map_err(|e| sqlite_error(&path, e))?;
        }
        Ok(folded)
    }

    fn unfolded_batches(&mut self) -> Result<u64, StoreError> {
        rollup::pending_count(&self.conn, &self.path)
    }

    fn remove_raw_before(
        &mut self,
        before_unix_ms: u64,
        max_batches: usize,
    ) -> Result<RawRemoved, StoreError> {
        let path = self.path.clone();
        let err = |source| sqlite_error(&path, source);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut removed = RawRemoved::default();
        {
            // Only folded batches: their series are in the roll-ups.
            let mut doomed = tx
                .prepare_cached(
                    "SELECT probe_id, sequence FROM batches \
                     WHERE length(body) > 0 AND created_unix_ms < ?1 \
                     AND (probe_id, sequence) NOT IN (SELECT probe_id, sequence FROM rollup_pending) \
                     ORDER BY created_unix_ms LIMIT ?2",
                )
                .map_err(err)?;
            let keys = doomed
                .query_map(params![i(before_unix_ms), max_batches as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            let mut series = tx
                .prepare_cached("DELETE FROM series WHERE probe_id = ?1 AND sequence = ?2")
                .map_err(err)?;
            let mut body = tx
                .prepare_cached(
                    "UPDATE batches SET body = X'' WHERE probe_id = ?1 AND sequence = ?2",
                )
                .map_err(err)?;
            for (probe, sequence) in &keys {
                removed.series += series.execute(params![probe, sequence]).map_err(err)? as u64;
                removed.batches += body.execute(params![probe, sequence]).map_err(err)? as u64;
            }
        }
        tx.commit().map_err(err)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_wire::{Batch, ErrorClass, Labels, Metric, Reason, Series, Target, Window};

    pub(crate) fn batch(probe: &str, seq: u64, country: &str, values: &[u64]) -> Batch {
        let mut labels = Labels::new();
        labels.insert("country", country).unwrap();
        labels.insert("phase", "before").unwrap();
        labels.insert("rack", "r1").unwrap();
        let mut s = Series::new(
            Target {
                name: "sg".into(),
                address: "127.0.0.1:1".into(),
            },
            Metric::QuicRequest,
            Window {
                start_unix_ms: 60_000 * seq,
                end_unix_ms: 60_000 * (seq + 1),
            },
        );
        for v in values {
            s.histogram.record(*v).unwrap();
        }
        s.errors.insert(ErrorClass::Reset, 1);
        s.sent = values.len() as u64 + 1;
        s.path.ipdv_pairs = 2;
        Batch {
            probe_id: probe.into(),
            sequence: seq,
            campaign: "c".into(),
            labels,
            created_unix_ms: 1,
            dropped_batches: 0,
            traces: Vec::new(),
            series: vec![s],
        }
    }

    fn insert_all(store: &mut SqliteStore, batches: &[Batch]) -> Vec<Inserted> {
        let raws: Vec<Vec<u8>> = batches.iter().map(|b| b.encode().unwrap()).collect();
        let items: Vec<Incoming<'_>> = batches
            .iter()
            .zip(&raws)
            .map(|(batch, raw)| Incoming {
                batch,
                raw,
                plain_histograms: &[],
                token_hash: None,
            })
            .collect();
        store.insert_batches(&items, 1).unwrap()
    }

    fn at(resolution: Resolution) -> Selector {
        Selector {
            resolution,
            ..Selector::default()
        }
    }

    /// The roll-up `resolution` should hold: the raw series merged by
    /// (probe, target, metric, block), from the raw rows themselves.
    fn expected(store: &mut SqliteStore, resolution: Resolution) -> Vec<(String, Series)> {
        let mut by: std::collections::BTreeMap<(String, u64), Series> = Default::default();
        for row in store.select(&at(Resolution::Window)).unwrap() {
            let block = resolution.block_start(row.series.window.start_unix_ms);
            match by.entry((row.probe_id.clone(), block)) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    vantage_store::merge_into(e.get_mut(), &row.series)
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(row.series.clone());
                }
            }
        }
        by.into_iter().map(|((p, _), s)| (p, s)).collect()
    }

    fn rolled(store: &mut SqliteStore, resolution: Resolution) -> Vec<(String, Series)> {
        store
            .select(&at(resolution))
            .unwrap()
            .into_iter()
            .map(|r| (r.probe_id, r.series))
            .collect()
    }

    #[test]
    fn rollups_merge_each_hour_and_day_exactly_and_a_duplicate_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        // 150 one-minute windows: two whole hours and part of a third, two
        // probes, with a reason and a status so every field is summed.
        let mut batches = Vec::new();
        for seq in 1..=150 {
            for probe in ["p1", "p2"] {
                let mut b = batch(probe, seq, "IN", &[100 + seq, 2000 + 7 * seq]);
                b.series[0].statuses.insert(200, 1);
                b.series[0].bytes = seq;
                b.series[0].path.ipdv_sum_us = 3 * seq;
                b.series[0].server_time.sum_us = seq;
                b.series[0].server_time.count = 1;
                batches.push(b);
            }
        }
        let (first, rest) = batches.split_at(100);
        insert_all(&mut store, first);
        // The rest in one transaction together with duplicates of the first.
        let mut again: Vec<Batch> = rest.to_vec();
        again.extend(first[..10].iter().cloned());
        let out = insert_all(&mut store, &again);
        assert_eq!(
            out.iter().filter(|o| **o == Inserted::Duplicate).count(),
            10
        );
        // Whole before any fold (the pending batches merged in as read),
        // part-way through folding, and once everything is folded.
        for fold in [0, 7, usize::MAX] {
            if fold > 0 {
                store.fold_rollups(fold).unwrap();
            }
            for resolution in [Resolution::Hour, Resolution::Day] {
                let want = expected(&mut store, resolution);
                let got = rolled(&mut store, resolution);
                assert_eq!(got.len(), want.len(), "{resolution} after folding {fold}");
                assert_eq!(
                    got, want,
                    "{resolution} after folding {fold}: merged exactly"
                );
            }
        }
        assert_eq!(store.unfolded_batches().unwrap(), 0);
        assert_eq!(
            rolled(&mut store, Resolution::Hour).len(),
            2 * 3,
            "3 hours, 2 probes"
        );
        assert_eq!(rolled(&mut store, Resolution::Day).len(), 2);
        let sel: Selector = "country=IN".parse().unwrap();
        let day = store
            .select(&Selector {
                resolution: Resolution::Day,
                ..sel
            })
            .unwrap();
        assert_eq!(day[0].labels.get("rack"), Some("r1"), "labels kept");
        assert_eq!(
            day[0].series.histogram.len(),
            300,
            "150 windows × 2 samples"
        );
    }

    #[test]
    fn two_processes_folding_and_storing_at_once_count_every_batch_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut writer = SqliteStore::open(&path).unwrap();
        // A second handle (as `vantage report` opening the store while the
        // collector runs) folds while the first stores and folds too.
        let mut other = SqliteStore::open(&path).unwrap();
        let folder = std::thread::spawn(move || {
            let mut folded = 0;
            for _ in 0..200 {
                folded += other.fold_rollups(7).unwrap();
                std::thread::yield_now();
            }
            folded
        });
        let mut folded = 0;
        for seq in 1..=120 {
            insert_all(&mut writer, &[batch("p1", seq, "IN", &[seq, 3 * seq])]);
            if seq % 10 == 0 {
                folded += writer.fold_rollups(5).unwrap();
            }
        }
        folded += folder.join().unwrap();
        folded += writer.fold_rollups(usize::MAX).unwrap();
        assert_eq!(writer.unfolded_batches().unwrap(), 0);
        for resolution in [Resolution::Hour, Resolution::Day] {
            assert_eq!(
                rolled(&mut writer, resolution),
                expected(&mut writer, resolution),
                "{resolution}"
            );
        }
        assert_eq!(folded, 120, "each batch folded once");
    }

    #[test]
    fn a_fold_planned_on_another_handle_is_written_once_and_a_stale_plan_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut writer = SqliteStore::open(&path).unwrap();
        let mut planner = SqliteStore::open(&path).unwrap();
        let batches: Vec<Batch> = (1..=90)
            .map(|seq| batch("p1", seq, "IN", &[seq, 5 * seq]))
            .collect();
        insert_all(&mut writer, &batches[..60]);
        // Planned from a snapshot; batches stored meanwhile are not in it.
        let plan = planner.plan_fold(40).unwrap();
        insert_all(&mut writer, &batches[60..]);
        assert_eq!(
            writer.unfolded_batches().unwrap(),
            90,
            "planning writes nothing"
        );
        assert_eq!(writer.apply_fold(plan).unwrap(), Some(40));
        assert_eq!(writer.unfolded_batches().unwrap(), 50);
        for resolution in [Resolution::Hour, Resolution::Day] {
            assert_eq!(
                rolled(&mut writer, resolution),
                expected(&mut writer, resolution),
                "{resolution} after the planned fold"
            );
        }
        // A plan overtaken by another fold (a report opening the store
        // folds too) would count its batches twice or overwrite the other
        // fold's rows: it is dropped, and its batches stay pending.
        let stale = planner.plan_fold(30).unwrap();
        assert_eq!(writer.fold_rollups(10).unwrap(), 10);
        assert_eq!(writer.apply_fold(stale).unwrap(), None);
        assert_eq!(writer.unfolded_batches().unwrap(), 40);
        let fresh = planner.plan_fold(usize::MAX).unwrap();
        assert_eq!(writer.apply_fold(fresh).unwrap(), Some(40));
        assert_eq!(writer.unfolded_batches().unwrap(), 0);
        for resolution in [Resolution::Hour, Resolution::Day] {
            assert_eq!(
                rolled(&mut writer, resolution),
                expected(&mut writer, resolution),
                "{resolution}: every batch once"
            );
        }
        assert_eq!(
            rolled(&mut writer, Resolution::Day)[0].1.histogram.len(),
            180,
            "90 windows × 2 samples"
        );
    }

    #[test]
    fn a_resolution_the_store_no_longer_has_says_which_it_has() {
        use vantage_reports::{Evidence, GatherError, ResolutionChoice};
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        insert_all(
            &mut store,
            &[batch("p1", 1, "IN", &[5]), batch("p1", 2, "IN", &[6])],
        );
        // Retention takes only folded batches.
        assert_eq!(
            store.remove_raw_before(u64::MAX, 100).unwrap(),
            RawRemoved::default()
        );
        assert_eq!(store.fold_rollups(100).unwrap(), 2);
        assert_eq!(
            store.remove_raw_before(1, 100).unwrap(),
            RawRemoved::default(),
            "created at 1: not before 1"
        );
        // The raw series gone, roll-ups and batch keys kept.
        let removed = store.remove_raw_before(u64::MAX, 100).unwrap();
        assert_eq!((removed.batches, removed.series), (2, 2));
        assert_eq!(store.batch_bytes("p1", 1).unwrap(), None);
        assert_eq!(store.batch_count().unwrap(), 2);
        assert_eq!(
            insert_all(&mut store, &[batch("p1", 1, "IN", &[5])]),
            [Inserted::Duplicate],
            "a late duplicate is still known"
        );
        let sel: Selector = "country=IN".parse().unwrap();
        assert!(!store.any(&sel).unwrap());
        assert!(store.any(&at(Resolution::Hour)).unwrap());
        let err = Evidence::gather_at(
            &mut store,
            &[],
            &sel,
            &sel,
            ResolutionChoice::Fixed(Resolution::Window),
            3,
        )
        .unwrap_err();
        assert!(
            matches!(&err, GatherError::NoSuchResolution { available, .. } if available == &[Resolution::Hour, Resolution::Day]),
            "{err}"
        );
        assert!(err.to_string().contains("1h, 1d"), "{err}");
    }

    #[test]
    fn a_database_from_before_rollups_gains_them_and_a_stopped_migration_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let batches: Vec<Batch> = (1..=130)
            .flat_map(|seq| ["p1", "p2", "p3"].map(|p| batch(p, seq, "MY", &[seq * 11])))
            .collect();
        let (hours, days) = {
            let mut store = SqliteStore::open(&path).unwrap();
            insert_all(&mut store, &batches);
            let kept = (
                rolled(&mut store, Resolution::Hour),
                rolled(&mut store, Resolution::Day),
            );
            // Back to a database from before roll-ups.
            store
                .conn
                .execute_batch("DROP TABLE rollups; DROP TABLE rollup_pending; DROP TABLE meta;")
                .unwrap();
            kept
        };
        {
            // Stopped after two chunks of 50 batches.
            let mut store = SqliteStore::open_schema(&path).unwrap();
            let tx = store.conn.transaction().unwrap();
            rollup::upgrade(&tx, &path).unwrap();
            tx.commit().unwrap();
            let mut seen = Vec::new();
            store
                .fold_chunks(50, 2, &mut |done, total| seen.push((done, total)))
                .unwrap();
            assert_eq!(seen, [(50, 390), (100, 390)]);
        }
        let mut seen = Vec::new();
        let mut store =
            SqliteStore::open_with_progress(&path, &mut |done, total| seen.push((done, total)))
                .unwrap();
        assert_eq!(seen, [(290, 290)], "resumed after the 100 done");
        assert_eq!(store.unfolded_batches().unwrap(), 0);
        assert_eq!(rolled(&mut store, Resolution::Hour), hours);
        assert_eq!(rolled(&mut store, Resolution::Day), days);
        // Done: a new batch is rolled up as it comes, once.
        insert_all(&mut store, &[batch("p1", 131, "MY", &[5])]);
        assert_eq!(
            rolled(&mut store, Resolution::Day)[0].1.histogram.len(),
            131
        );
    }

    #[test]
    fn histograms_stored_deflated_by_earlier_versions_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let a = batch("p1", 1, "IN", &[100, 200, 200, 90_000]);
        insert_all(&mut store, std::slice::from_ref(&a));
        let plain: Vec<u8> = store
            .conn
            .query_row("SELECT histogram FROM series", [], |r| r.get(0))
            .unwrap();
        let mut want = Vec::new();
        encode_histogram_plain(&a.series[0].histogram, &mut want).unwrap();
        assert_eq!(plain, want, "new rows are kept plain");
        let mut deflated = Vec::new();
        vantage_wire::encode_histogram(&a.series[0].histogram, &mut deflated).unwrap();
        store
            .conn
            .execute("UPDATE series SET histogram = ?1", [&deflated])
            .unwrap();
        let rows = store.select(&"country=IN".parse().unwrap()).unwrap();
        assert_eq!(rows[0].series, a.series[0]);
        while store.fold_rollups(10).unwrap() > 0 {}
        let hour = store.select(&at(Resolution::Hour)).unwrap();
        assert_eq!(hour[0].series.histogram, a.series[0].histogram);
    }

    #[test]
    fn stores_once_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let a = batch("p1", 1, "IN", &[100, 200]);
        let mut b = batch("p1", 2, "MY", &[300]);
        b.series[0].errors.insert(ErrorClass::Tls, 2);
        b.series[0].sent += 2;
        b.series[0].reasons.insert(Reason::TlsExpired, 2);
        b.series[0].statuses.insert(200, 1);
        let (ra, rb) = (a.encode().unwrap(), b.encode().unwrap());
        let (_, plain) = Batch::decode_with_plain_histograms(&ra).unwrap();
        let item = |batch, raw, plain_histograms| Incoming {
            batch,
            raw,
            plain_histograms,
            token_hash: None,
        };
        let out = store
            .insert_batches(
                &[
                    item(&a, &ra, &plain),
                    item(&b, &rb, &[]),
                    item(&a, &ra, &plain),
                ],
                5,
            )
            .unwrap();
        assert_eq!(
            out,
            [Inserted::Stored, Inserted::Stored, Inserted::Duplicate]
        );
        assert_eq!(
            store.insert_batches(&[item(&a, &ra, &[])], 6).unwrap(),
            [Inserted::Duplicate]
        );
        assert_eq!(store.batch_count().unwrap(), 2);
        let rows = store.select(&"country=IN".parse().unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].series, a.series[0]);
        assert_eq!(rows[0].labels, a.labels);
        let rows = store.select(&"rack=r1".parse().unwrap()).unwrap();
        assert_eq!(rows.len(), 2, "non-indexed labels select too");
        assert_eq!(rows[1].series, b.series[0], "reasons and statuses kept");
        assert_eq!(
            store.batch_bytes("p1", 2).unwrap().as_deref(),
            Some(&rb[..])
        );
    }

    #[test]
    fn the_schema_version_is_kept_and_a_newer_one_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let version = |c: &Connection| -> i64 {
            c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&conn), SCHEMA_VERSION);
        conn.execute_batch("UPDATE schema_version SET version = 99")
            .unwrap();
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 99,
                    known: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade vantage"), "{err}");
        assert_eq!(version(&conn), 99);
    }

    #[test]
    fn a_database_from_before_reasons_and_statuses_gains_them_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let a = batch("p1", 1, "IN", &[100, 200]);
        let ra = a.encode().unwrap();
        {
            let mut store = SqliteStore::open(&path).unwrap();
            let item = Incoming {
                batch: &a,
                raw: &ra,
                plain_histograms: &[],
                token_hash: None,
            };
            store.insert_batches(&[item], 5).unwrap();
            // Back to the first release's layout, its row in place.
            store
                .conn
                .execute_batch(
                    "ALTER TABLE series DROP COLUMN reasons; ALTER TABLE series DROP COLUMN statuses; \
                     ALTER TABLE series DROP COLUMN unknown_direction_lost; \
                     ALTER TABLE rollups DROP COLUMN unknown_direction_lost; \
                     ALTER TABLE series DROP COLUMN edges; ALTER TABLE rollups DROP COLUMN edges; \
                     UPDATE schema_version SET version = 1;",
                )
                .unwrap();
        }
        let mut store = SqliteStore::open(&path).unwrap();
        let mut b = batch("p1", 2, "IN", &[300]);
        b.series[0].statuses.insert(503, 1);
        b.series[0].path.unknown_direction_lost = 3;
        b.series[0].count_edge("fastly:SIN");
        let rb = b.encode().unwrap();
        let item = Incoming {
            batch: &b,
            raw: &rb,
            plain_histograms: &[],
            token_hash: None,
        };
        assert_eq!(
            store.insert_batches(&[item], 6).unwrap(),
            [Inserted::Stored]
        );
        let rows = store.select(&"country=IN".parse().unwrap()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].series, a.series[0]);
        assert_eq!(rows[1].series, b.series[0]);
        // The roll-ups keep the losses of unknown direction too.
        store.fold_rollups(usize::MAX).unwrap();
        let hour = store
            .select(&Selector {
                resolution: Resolution::Hour,
                ..Selector::default()
            })
            .unwrap();
        let unknown: u64 = hour
            .iter()
            .map(|r| r.series.path.unknown_direction_lost)
            .sum();
        assert_eq!(unknown, 3);
        // And the CDN edges (schema 6).
        let edges: Vec<_> = hour.iter().flat_map(|r| r.series.edges.clone()).collect();
        assert_eq!(edges, [("fastly:SIN".to_string(), 1)]);
        let version: i64 = store
            .conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn tokens_are_kept_as_hashes_and_revoked_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        store.add_token("p1", "h1", 1).unwrap();
        assert_eq!(store.token_probe("h1").unwrap().as_deref(), Some("p1"));
        assert_eq!(store.token_probe("h2").unwrap(), None);
        assert_eq!(store.revoke_tokens("p1", 2).unwrap(), 1);
        assert_eq!(store.token_probe("h1").unwrap(), None);
        assert_eq!(store.tokens().unwrap()[0].revoked_unix_ms, Some(2));
    }

    #[test]
    fn the_database_runs_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "FULL");
    }
}
