//! The PostgreSQL backend of the [`Store`] trait, for many collectors on
//! one database. Every collector's writer commits its group of batches in
//! one transaction; the batch row goes in with `ON CONFLICT DO NOTHING` on
//! (probe id, sequence), so of two collectors storing the same batch at
//! once, one stores it and the other waits for that commit and answers
//! duplicate. `synchronous_commit` is on for every connection, so a commit
//! that returned is on the database's disk before any acknowledgement.
//!
//! tokio-postgres runs each connection on one small runtime of its own
//! (thread `vantage-pg`); the [`Store`] methods are synchronous, as
//! SQLite's are, and wait for their queries on the calling thread. A
//! store that loses its connection (the database restarted) fails the
//! call in hand and connects again on the next one.

mod fleet;
mod location;
mod schema;

pub use location::{is_postgres, PgLocation, PgLocationError, PgTls};

use crate::rollup::{Folding, Unfolded};
use crate::row::{
    label_values, labels_text, read_trace, select_columns, sql_int, trace_values, ColumnError,
    Columns, Figures, RowReader, FILTER_COLUMNS, SCHEMA_VERSION, SERIES_COUNT_COLUMN,
    TRACE_COLUMNS, TRACE_FILTER_COLUMNS,
};
use schema::{
    ADD_EDGES, ADD_UNKNOWN_DIRECTION, BATCH_INSERT, CREATE, CREATE_TRACES, FOLD_LOCK, MIGRATE_LOCK,
    ROLLUP_UPSERT, SERIES_INSERT, TRACE_INSERT, VALID_TOKENS,
};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use vantage_store::{
    Incoming, Inserted, RawRemoved, Resolution, Selector, Store, StoreError, StoredBatch,
    StoredSeries, StoredTrace, TokenRecord,
};
use vantage_wire::{encode_histogram_plain, CountsScratch, SparseCounts};

/// Rows fetched per round trip while a selection streams.
const FETCH_ROWS: i32 = 4096;

/// A PostgreSQL store: one connection, made again after it breaks.
pub struct PgStore {
    location: PgLocation,
    conn: Option<Connected>,
}

struct Connected {
    client: Client,
    insert_batches: Statement,
    insert_series: Statement,
    insert_pending: Statement,
    token_probe: Statement,
    valid_tokens: Statement,
}

/// The runtime every connection's IO runs on.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static MAKING: Mutex<()> = Mutex::new(());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _making = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vantage-pg")
        .enable_all()
        .build()
        .map_err(|e| StoreError::Database {
            place: "PostgreSQL client".into(),
            source: Box::new(e),
        })?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Waits for `f` on the calling thread (the connection's IO goes on on
/// [`runtime`]), from async code or not.
fn wait<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// A deadlock or serialization failure: PostgreSQL rolled the transaction
/// back and asks the client to run it again.
fn worth_retrying(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// A PostgreSQL error in words: the server's message and code when it
/// sent one.
#[derive(Debug)]
struct PgError(String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

impl PgStore {
    /// Connects to the database `location` names, creating the schema on
    /// a new database and migrating an older one; refuses a database whose
    /// schema is newer than this build.
    pub fn open(location: &PgLocation) -> Result<Self, StoreError> {
        let mut store = PgStore {
            location: location.clone(),
            conn: None,
        };
        store.connected()?;
        Ok(store)
    }

    /// The database, for messages (never the password).
    pub fn place(&self) -> &str {
        self.location.place()
    }

    /// A server setting as this store's connection has it, such as
    /// `synchronous_commit` (which every connection sets `on`, whatever the
    /// server's or the role's default).
    pub fn setting(&mut self, name: &str) -> Result<String, StoreError> {
        let conn = self.connected()?;
        let found = wait(
            conn.client
                .query_one("SELECT current_setting($1)", &[&name]),
        );
        found.map(|r| r.get(0)).map_err(|e| self.error(e))
    }

    fn error(&mut self, e: tokio_postgres::Error) -> StoreError {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
        }
        let place = self.location.place().to_string();
        let source = Box::new(PgError(describe(&e)));
        if e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) {
            return StoreError::Full { place, source };
        }
        StoreError::Database { place, source }
    }

    /// The live connection, connecting (and checking the schema) first if
    /// there is none or it broke.
    fn connected(&mut self) -> Result<&mut Connected, StoreError> {
        let conn = match self.conn.take() {
            Some(live) if !live.client.is_closed() => live,
            _ => connect(&self.location)?,
        };
        Ok(self.conn.insert(conn))
    }
}

/// Opens one connection: TLS as the location says, `synchronous_commit`
/// on, the schema made or checked, the ingest statements prepared.
fn connect(location: &PgLocation) -> Result<Connected, StoreError> {
    let place = location.place().to_string();
    let db = |e: tokio_postgres::Error| StoreError::Database {
        place: location.place().to_string(),
        source: Box::new(PgError(describe(&e))),
    };
    let tls = location.rustls().map_err(|e| StoreError::Database {
        place: place.clone(),
        source: Box::new(e),
    })?;
    let config = location.config.clone();
    let spawned = runtime()?.spawn(async move {
        let (client, connection) = match tls {
            None => {
                let (client, connection) = config.connect(NoTls).await?;
                (client, tokio::spawn(connection))
            }
            Some(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, connection) = config.connect(make).await?;
                (client, tokio::spawn(connection))
            }
        };
        tokio::spawn(async move {
            if let Ok(Err(e)) = connection.await {
                tracing::warn!(database = %place, error = %describe(&e), "database connection closed");
            }
        });
        Ok::<_, tokio_postgres::Error>(client)
    });
    let mut client = wait(spawned)
        .map_err(|e| StoreError::Database {
            place: location.place().to_string(),
            source: Box::new(e),
        })?
        .map_err(db)?;
    wait(client.batch_execute("SET synchronous_commit = on")).map_err(db)?;
    migrate(&mut client, location.place())?;
    let prepare = |sql: &str| wait(client.prepare(sql)).map_err(db);
    Ok(Connected {
        insert_batches: prepare(BATCH_INSERT)?,
        insert_series: prepare(SERIES_INSERT)?,
        insert_pending: prepare(
            "INSERT INTO rollup_pending SELECT * FROM unnest($1::text[], $2::int8[])",
        )?,
        token_probe: prepare(
            "SELECT probe_id FROM tokens WHERE hash = $1 AND revoked_unix_ms IS NULL",
        )?,
        valid_tokens: prepare(VALID_TOKENS)?,
        client,
    })
}

/// Makes the schema on a new database, and refuses one newer than this
/// build, under a lock so collectors starting together do it once.
fn migrate(client: &mut Client, place: &str) -> Result<(), StoreError> {
    let db = |e: tokio_postgres::Error| StoreError::Database {
        place: place.to_string(),
        source: Box::new(PgError(describe(&e))),
    };
    let found = wait(async {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let found: Option<i64> = tx
            .query_one("SELECT max(version) FROM schema_version", &[])
            .await?
            .get(0);
        match found {
            None => {
                tx.batch_execute(CREATE).await?;
                tx.batch_execute(CREATE_TRACES).await?;
                tx.batch_execute(crate::fleet::FLEET_SCHEMA).await?;
                tx.execute("INSERT INTO schema_version VALUES ($1)", &[&SCHEMA_VERSION])
                    .await?;
            }
            // Version 3 gains the fleet's tables (new tables only), 3 and
            // 4 the column of losses of unknown direction, last in both
            // tables as a new database has it, and 3 to 5 the traces.
            Some(v @ 3..=5) => {
                if v == 3 {
                    tx.batch_execute(crate::fleet::FLEET_SCHEMA).await?;
                }
                if v <= 4 {
                    tx.batch_execute(ADD_UNKNOWN_DIRECTION).await?;
                }
                tx.batch_execute(CREATE_TRACES).await?;
                tx.batch_execute(ADD_EDGES).await?;
                tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])
                    .await?;
            }
            Some(_) => {}
        }
        tx.commit().await?;
        Ok(found)
    })
    .map_err(db)?;
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            place: place.to_string(),
            found: v,
            known: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}

impl Columns for tokio_postgres::Row {
    fn text(&self, col: usize) -> Result<&[u8], ColumnError> {
        self.try_get::<_, &str>(col)
            .map(str::as_bytes)
            .map_err(|e| ColumnError::Corrupt(format!("column {col}: {e}")))
    }

    fn int(&self, col: usize) -> Result<i64, ColumnError> {
        self.try_get::<_, i64>(col)
            .map_err(|e| ColumnError::Corrupt(format!("column {col}: {e}")))
    }

    fn blob(&self, col: usize) -> Result<&[u8], ColumnError> {
        self.try_get::<_, &[u8]>(col)
            .map_err(|e| ColumnError::Corrupt(format!("column {col}: {e}")))
    }
}

/// A series' 17 stored figures up to `statuses` as PostgreSQL parameters,
/// in column order, with `histogram` the bytes to store (the caller adds
/// `unknown_direction_lost` and `edges`, which come last in each table).
fn figure_params<'a>(f: &'a Figures, histogram: &'a Vec<u8>) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut out: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(17);
    out.extend(f.ints_before.iter().map(|v| v as &(dyn ToSql + Sync)));
    out.push(&f.errors);
    out.extend(f.ints_after.iter().map(|v| v as &(dyn ToSql + Sync)));
    out.push(histogram);
    out.push(&f.reasons);
    out.push(&f.statuses);
    out
}

/// The series of one commit, column by column, for [`SERIES_INSERT`].
#[derive(Default)]
struct SeriesColumns {
    probe_id: Vec<String>,
    sequence: Vec<i64>,
    idx: Vec<i32>,
    campaign: Vec<String>,
    indexed: [Vec<Option<String>>; 6],
    labels: Vec<String>,
    target: Vec<String>,
    address: Vec<String>,
    metric: Vec<&'static str>,
    ints_before: [Vec<i64>; 4],
    errors: Vec<String>,
    ints_after: [Vec<i64>; 9],
    histogram: Vec<Vec<u8>>,
    reasons: Vec<String>,
    statuses: Vec<String>,
    unknown_direction_lost: Vec<i64>,
    edges: Vec<String>,
}

impl SeriesColumns {
    fn push(&mut self, item: &Incoming<'_>, labels: &str, idx: usize, histogram: Vec<u8>) {
        let (b, s) = (item.batch, &item.batch.series[idx]);
        self.probe_id.push(b.probe_id.clone());
        self.sequence.push(sql_int(b.sequence));
        self.idx.push(idx as i32);
        self.campaign.push(b.campaign.clone());
        for (column, value) in self.indexed.iter_mut().zip(label_values(&b.labels)) {
            column.push(value.map(str::to_string));
        }
        self.labels.push(labels.to_string());
        self.target.push(s.target.name.clone());
        self.address.push(s.target.address.clone());
        self.metric.push(s.metric.name());
        let f = Figures::of(s);
        for (column, v) in self.ints_before.iter_mut().zip(f.ints_before) {
            column.push(v);
        }
        self.errors.push(f.errors);
        for (column, v) in self.ints_after.iter_mut().zip(f.ints_after) {
            column.push(v);
        }
        self.histogram.push(histogram);
        self.reasons.push(f.reasons);
        self.statuses.push(f.statuses);
        self.unknown_direction_lost.push(f.unknown_direction_lost);
        self.edges.push(f.edges);
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut out: Vec<&(dyn ToSql + Sync)> =
            vec![&self.probe_id, &self.sequence, &self.idx, &self.campaign];
        out.extend(self.indexed.iter().map(|c| c as &(dyn ToSql + Sync)));
        out.extend([
            &self.labels as &(dyn ToSql + Sync),
            &self.target,
            &self.address,
            &self.metric,
        ]);
        out.extend(self.ints_before.iter().map(|c| c as &(dyn ToSql + Sync)));
        out.push(&self.errors);
        out.extend(self.ints_after.iter().map(|c| c as &(dyn ToSql + Sync)));
        out.extend([
            &self.histogram as &(dyn ToSql + Sync),
            &self.reasons,
            &self.statuses,
            &self.unknown_direction_lost,
            &self.edges,
        ]);
        out
    }
}

/// A selector's equalities on `columns` (such as [`FILTER_COLUMNS`]) as SQL (`AND col = ANY($n)`,
/// numbered from `first`) and its arguments.
fn filter_sql(selector: &Selector, columns: &[&str], first: usize) -> (String, Vec<Vec<String>>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    for col in columns {
        if let Some(vs) = selector.equals.get(*col) {
            sql.push_str(&format!(
                " AND {col} = ANY(${}::text[])",
                first + args.len()
            ));
            args.push(vs.to_vec());
        }
    }
    (sql, args)
}

impl PgStore {
    /// Streams the rows of `sql` (with `params`) to `each`, [`FETCH_ROWS`]
    /// at a time through a portal, inside `tx`.
    async fn stream(
        tx: &tokio_postgres::Transaction<'_>,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        each: &mut dyn FnMut(&tokio_postgres::Row) -> Result<(), StoreError>,
    ) -> Result<Result<(), StoreError>, tokio_postgres::Error> {
        let statement = tx.prepare(sql).await?;
        let portal = tx.bind(&statement, params).await?;
        loop {
            let rows = tx.query_portal(&portal, FETCH_ROWS).await?;
            for r in &rows {
                if let Err(e) = each(r) {
                    return Ok(Err(e));
                }
            }
            if rows.len() < FETCH_ROWS as usize {
                return Ok(Ok(()));
            }
        }
    }
}

impl Store for PgStore {
    fn insert_batches(
        &mut self,
        batches: &[Incoming<'_>],
        received_unix_ms: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let place = self.place().to_string();
        let hashes: Vec<&str> = batches.iter().filter_map(|i| i.token_hash).collect();
        let labels: Vec<String> = batches
            .iter()
            .map(|i| labels_text(&i.batch.labels))
            .collect();
        let seq: Vec<i64> = batches.iter().map(|i| sql_int(i.batch.sequence)).collect();
        let conn = self.connected()?;
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let result = wait(async {
                let tx = conn.client.transaction().await?;
                // The tokens still valid, share-locked until COMMIT: a revoke
                // committed before this is seen, one after it waits for it.
                let valid: HashSet<(String, String)> = if hashes.is_empty() {
                    HashSet::new()
                } else {
                    let rows = tx.query(&conn.valid_tokens, &[&hashes]).await?;
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
                };
                let allowed: Vec<bool> = batches
                    .iter()
                    .map(|i| {
                        i.token_hash.is_none_or(|h| {
                            valid.contains(&(h.to_string(), i.batch.probe_id.clone()))
                        })
                    })
                    .collect();
                let (mut probe, mut seqs, mut campaign, mut label_col) =
                    (vec![], vec![], vec![], vec![]);
                let (mut created, mut received, mut dropped, mut body) =
                    (vec![], vec![], vec![], vec![]);
                // Every transaction takes the batch keys in one order, so two
                // collectors storing the same batches wait on each other, never
                // deadlock.
                let mut order: Vec<usize> = (0..batches.len()).filter(|n| allowed[*n]).collect();
                order.sort_by(|a, b| {
                    (batches[*a].batch.probe_id.as_str(), seq[*a])
                        .cmp(&(batches[*b].batch.probe_id.as_str(), seq[*b]))
                });
                for n in order {
                    let item = &batches[n];
                    let b = item.batch;
                    probe.push(b.probe_id.as_str());
                    seqs.push(seq[n]);
                    campaign.push(b.campaign.as_str());
                    label_col.push(labels[n].as_str());
                    created.push(sql_int(b.created_unix_ms));
                    received.push(sql_int(received_unix_ms));
                    dropped.push(sql_int(b.dropped_batches));
                    body.push(item.raw);
                }
                let params: [&(dyn ToSql + Sync); 8] = [
                    &probe, &seqs, &campaign, &label_col, &created, &received, &dropped, &body,
                ];
                let new: HashSet<(String, i64)> = tx
                    .query(&conn.insert_batches, &params)
                    .await?
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .collect();
                let mut claimed = HashSet::new();
                let mut out = Vec::with_capacity(batches.len());
                let mut columns = SeriesColumns::default();
                let (mut pending_probe, mut pending_seq) = (Vec::new(), Vec::new());
                for (n, item) in batches.iter().enumerate() {
                    if !allowed[n] {
                        out.push(Inserted::TokenRevoked);
                        continue;
                    }
                    let key = (item.batch.probe_id.clone(), seq[n]);
                    // A key twice in one group: the first is the stored one.
                    if !new.contains(&key) || !claimed.insert(key) {
                        out.push(Inserted::Duplicate);
                        continue;
                    }
                    for (idx, s) in item.batch.series.iter().enumerate() {
                        let histogram = match item.plain_histograms.get(idx) {
                            Some(bytes) => bytes.clone(),
                            None => {
                                let mut bytes = Vec::new();
                                if let Err(e) = encode_histogram_plain(&s.histogram, &mut bytes) {
                                    return Ok(Err(e.to_string()));
                                }
                                bytes
                            }
                        };
                        columns.push(item, &labels[n], idx, histogram);
                    }
                    let indexed = label_values(&item.batch.labels);
                    for (idx, t) in item.batch.traces.iter().enumerate() {
                        let (target, address, started, end, hops) = trace_values(t);
                        let key: [&(dyn ToSql + Sync); 4] = [
                            &item.batch.probe_id,
                            &seq[n],
                            &(idx as i32),
                            &item.batch.campaign,
                        ];
                        let tail: [&(dyn ToSql + Sync); 6] =
                            [&labels[n], &target, &address, &started, &end, &hops];
                        let params: Vec<&(dyn ToSql + Sync)> = key
                            .into_iter()
                            .chain(indexed.iter().map(|v| v as &(dyn ToSql + Sync)))
                            .chain(tail)
                            .collect();
                        tx.execute(TRACE_INSERT, &params).await?;
                    }
                    pending_probe.push(item.batch.probe_id.as_str());
                    pending_seq.push(seq[n]);
                    out.push(Inserted::Stored);
                }
                if !columns.probe_id.is_empty() {
                    tx.execute(&conn.insert_series, &columns.params()).await?;
                    tx.execute(&conn.insert_pending, &[&pending_probe, &pending_seq])
                        .await?;
                }
                tx.commit().await?;
                Ok::<_, tokio_postgres::Error>(Ok(out))
            });
            // Nothing of a rolled-back attempt is kept, so trying again is safe.
            match &result {
                Err(e) if attempts < 3 && worth_retrying(e) => continue,
                _ => break result,
            }
        };
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(reason)) => Err(StoreError::Corrupt { place, reason }),
            Err(e) => Err(self.error(e)),
        }
    }

    fn token_probe(&mut self, hash: &str) -> Result<Option<String>, StoreError> {
        let conn = self.connected()?;
        let found = wait(conn.client.query_opt(&conn.token_probe, &[&hash]));
        match found {
            Ok(row) => Ok(row.map(|r| r.get(0))),
            Err(e) => Err(self.error(e)),
        }
    }

    fn add_token(
        &mut self,
        probe_id: &str,
        hash: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        let conn = self.connected()?;
        let done = wait(conn.client.execute(
            "INSERT INTO tokens VALUES ($1, $2, $3, NULL)",
            &[&hash, &probe_id, &sql_int(now_unix_ms)],
        ));
        done.map(|_| ()).map_err(|e| self.error(e))
    }

    fn import_token(&mut self, token: &TokenRecord) -> Result<(), StoreError> {
        let conn = self.connected()?;
        let revoked = token.revoked_unix_ms.map(sql_int);
        let done = wait(conn.client.execute(
            "INSERT INTO tokens VALUES ($1, $2, 0, $3)",
            &[&token.hash, &token.probe_id, &revoked],
        ));
        done.map(|_| ()).map_err(|e| self.error(e))
    }

    fn revoke_tokens(&mut self, probe_id: &str, now_unix_ms: u64) -> Result<usize, StoreError> {
        let conn = self.connected()?;
        let done = wait(conn.client.execute(
            "UPDATE tokens SET revoked_unix_ms = $2 WHERE probe_id = $1 AND revoked_unix_ms IS NULL",
            &[&probe_id, &sql_int(now_unix_ms)],
        ));
        done.map(|n| n as usize).map_err(|e| self.error(e))
    }

    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.connected()?;
        let rows = wait(conn.client.query(
            "SELECT hash, probe_id, revoked_unix_ms FROM tokens ORDER BY probe_id, created_unix_ms",
            &[],
        ));
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .map(|r| TokenRecord {
                hash: r.get(0),
                probe_id: r.get(1),
                revoked_unix_ms: r.get::<_, Option<i64>>(2).map(|v| v.max(0) as u64),
            })
            .collect())
    }

    fn select_traces(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(StoredTrace) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let place = self.place().to_string();
        let (filter, args) = filter_sql(selector, &TRACE_FILTER_COLUMNS, 1);
        let sql = format!(
            "SELECT {TRACE_COLUMNS} FROM traces WHERE true{filter} ORDER BY probe_id, sequence, idx"
        );
        let mut matched = 0u64;
        let conn = self.connected()?;
        let result = wait(async {
            let tx = conn
                .client
                .build_transaction()
                .read_only(true)
                .start()
                .await?;
            let params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let streamed = Self::stream(&tx, &sql, &params, &mut |r| {
                let t = read_trace(r, &place)?;
                if selector.matches_trace(&t) {
                    matched += 1;
                    each(t)?;
                }
                Ok(())
            })
            .await?;
            tx.commit().await?;
            Ok(streamed)
        });
        match result {
            Ok(Ok(())) => Ok(matched),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(self.error(e)),
        }
    }

    fn select_sparse(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(&StoredSeries, &SparseCounts) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let place = self.place().to_string();
        let resolution = selector.resolution;
        let mut matched = 0u64;
        let mut emit = |row: &StoredSeries, counts: &SparseCounts| -> Result<(), StoreError> {
            if selector.matches(row) {
                matched += 1;
                each(row, counts)?;
            }
            Ok(())
        };
        let mut reader = RowReader::default();
        let conn = self.connected()?;
        let result = wait(async {
            // One snapshot for the whole read: a fold committing meanwhile
            // cannot count a batch twice or not at all.
            let tx = conn
                .client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            if resolution == Resolution::Window {
                let (filter, args) = filter_sql(selector, &FILTER_COLUMNS, 1);
                let sql = format!(
                    "SELECT {} FROM series WHERE true{filter} ORDER BY probe_id, sequence, idx",
                    select_columns("sequence")
                );
                let params: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                let streamed = Self::stream(&tx, &sql, &params, &mut |r| {
                    reader.read(r, &place)?;
                    emit(&reader.row, &reader.counts)
                })
                .await?;
                tx.commit().await?;
                return Ok(streamed);
            }
            let (filter, args) = filter_sql(selector, &FILTER_COLUMNS, 1);
            let params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let mut unfolded = Unfolded::new(resolution);
            let sql = format!(
                "SELECT {} FROM series WHERE (probe_id, sequence) IN (SELECT probe_id, sequence FROM rollup_pending){filter}",
                select_columns("sequence")
            );
            let streamed = Self::stream(&tx, &sql, &params, &mut |r| {
                reader.read(r, &place)?;
                unfolded.add(&reader.row, &reader.counts);
                Ok(())
            })
            .await?;
            if streamed.is_err() {
                return Ok(streamed);
            }
            let (filter, args) = filter_sql(selector, &FILTER_COLUMNS, 2);
            let name = resolution.name();
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&name];
            params.extend(args.iter().map(|a| a as &(dyn ToSql + Sync)));
            let sql = format!(
                "SELECT {} FROM rollups WHERE resolution = $1{filter} \
                 ORDER BY probe_id, campaign, labels, target, target_address, metric, block_start",
                select_columns("block_start")
            );
            let streamed = Self::stream(&tx, &sql, &params, &mut |r| {
                reader.read(r, &place)?;
                unfolded.emit_folded(&mut reader.row, &reader.counts, &mut emit)
            })
            .await?;
            tx.commit().await?;
            Ok(streamed.and_then(|()| unfolded.emit_rest(&mut emit)))
        });
        match result {
            Ok(Ok(())) => Ok(matched),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(self.error(e)),
        }
    }

    fn batch_count(&mut self) -> Result<u64, StoreError> {
        let conn = self.connected()?;
        let n = wait(conn.client.query_one("SELECT count(*) FROM batches", &[]));
        n.map(|r| r.get::<_, i64>(0).max(0) as u64)
            .map_err(|e| self.error(e))
    }

    fn batch_bytes(
        &mut self,
        probe_id: &str,
        sequence: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.connected()?;
        let row = wait(conn.client.query_opt(
            "SELECT body FROM batches WHERE probe_id = $1 AND sequence = $2 AND length(body) > 0",
            &[&probe_id, &sql_int(sequence)],
        ));
        row.map(|r| r.map(|r| r.get(0))).map_err(|e| self.error(e))
    }

    fn batches_after(
        &mut self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, StoreError> {
        let (probe, sequence) = after.map_or(("", -1), |(p, s)| (p, sql_int(s)));
        let conn = self.connected()?;
        let rows = wait(conn.client.query(
            "SELECT probe_id, sequence, received_unix_ms, body FROM batches \
             WHERE (probe_id, sequence) > ($1, $2) ORDER BY probe_id, sequence LIMIT $3",
            &[&probe, &sequence, &sql_int(limit as u64)],
        ));
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .map(|r| StoredBatch {
                probe_id: r.get(0),
                sequence: r.get::<_, i64>(1).max(0) as u64,
                received_unix_ms: r.get::<_, i64>(2).max(0) as u64,
                body: r.get(3),
            })
            .collect())
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        let conn = self.connected()?;
        let done = wait(conn.client.simple_query("SELECT 1"));
        done.map(|_| ()).map_err(|e| self.error(e))
    }

    fn fold_rollups(&mut self, max_batches: usize) -> Result<u64, StoreError> {
        let place = self.place().to_string();
        let conn = self.connected()?;
        let result = wait(fold(&mut conn.client, &place, max_batches));
        match result {
            Ok(r) => r,
            Err(e) => Err(self.error(e)),
        }
    }

    fn unfolded_batches(&mut self) -> Result<u64, StoreError> {
        let conn = self.connected()?;
        let n = wait(
            conn.client
                .query_one("SELECT count(*) FROM rollup_pending", &[]),
        );
        n.map(|r| r.get::<_, i64>(0).max(0) as u64)
            .map_err(|e| self.error(e))
    }

    fn remove_raw_before(
        &mut self,
        before_unix_ms: u64,
        max_batches: usize,
    ) -> Result<RawRemoved, StoreError> {
        let conn = self.connected()?;
        let result = wait(async {
            let tx = conn.client.transaction().await?;
            // Only folded batches: their series are in the roll-ups. Locked,
            // so two collectors' retention passes take disjoint batches.
            let keys = tx
                .query(
                    "SELECT probe_id, sequence FROM batches \
                     WHERE length(body) > 0 AND created_unix_ms < $1 \
                     AND (probe_id, sequence) NOT IN (SELECT probe_id, sequence FROM rollup_pending) \
                     ORDER BY created_unix_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&sql_int(before_unix_ms), &sql_int(max_batches as u64)],
                )
                .await?;
            let probe: Vec<String> = keys.iter().map(|r| r.get(0)).collect();
            let seq: Vec<i64> = keys.iter().map(|r| r.get(1)).collect();
            let series = tx
                .execute(
                    "DELETE FROM series WHERE (probe_id, sequence) IN (SELECT * FROM unnest($1::text[], $2::int8[]))",
                    &[&probe, &seq],
                )
                .await?;
            let batches = tx
                .execute(
                    "UPDATE batches SET body = ''::bytea WHERE (probe_id, sequence) IN (SELECT * FROM unnest($1::text[], $2::int8[]))",
                    &[&probe, &seq],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(RawRemoved { batches, series })
        });
        result.map_err(|e| self.error(e))
    }
}

/// Folds up to `max` pending batches into the roll-ups in one transaction,
/// under the fold lock (so two collectors never read-modify-write one
/// roll-up row at once); returns how many were folded.
async fn fold(
    client: &mut Client,
    place: &str,
    max: usize,
) -> Result<Result<u64, StoreError>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await?;
    let keys = tx
        .query(
            "SELECT probe_id, sequence FROM rollup_pending ORDER BY probe_id, sequence LIMIT $1",
            &[&sql_int(max as u64)],
        )
        .await?;
    if keys.is_empty() {
        tx.commit().await?;
        return Ok(Ok(0));
    }
    let probe: Vec<String> = keys.iter().map(|r| r.get(0)).collect();
    let seq: Vec<i64> = keys.iter().map(|r| r.get(1)).collect();
    let mut folding = Folding::default();
    let mut reader = RowReader::default();
    let rows = tx
        .query(
            &format!(
                "SELECT {} FROM series WHERE (probe_id, sequence) IN (SELECT * FROM unnest($1::text[], $2::int8[]))",
                select_columns("sequence")
            ),
            &[&probe, &seq],
        )
        .await?;
    for r in &rows {
        if let Err(e) = reader.read(r, place) {
            return Ok(Err(e));
        }
        folding.add(&reader.row, &reader.counts);
    }
    drop(rows);
    let read = tx
        .prepare(&format!(
            "SELECT {}, series_count FROM rollups WHERE resolution = $1 AND probe_id = $2 \
             AND campaign = $3 AND labels = $4 AND target = $5 AND target_address = $6 \
             AND metric = $7 AND block_start = $8",
            select_columns("block_start")
        ))
        .await?;
    let write = tx.prepare(ROLLUP_UPSERT).await?;
    let mut scratch = CountsScratch::default();
    for (key, mut part) in folding.rows {
        let (name, block_start) = (key.resolution.name(), sql_int(key.block_start));
        let id: [&(dyn ToSql + Sync); 8] = [
            &name,
            &key.probe_id,
            &key.campaign,
            &key.labels,
            &key.target,
            &key.address,
            &key.metric,
            &block_start,
        ];
        if let Some(r) = tx.query_opt(&read, &id).await? {
            if let Err(e) = reader.read(&r, place) {
                return Ok(Err(e));
            }
            let count: i64 = r.get(SERIES_COUNT_COLUMN);
            let counts = std::mem::take(&mut reader.counts);
            part.absorb(&reader.row.series, counts, count.max(0) as u64);
        }
        let mut histogram = Vec::new();
        part.histogram(&mut scratch, &mut histogram);
        let indexed: Vec<Option<&str>> = label_values(&part.labels).to_vec();
        let figures = Figures::of(&part.series);
        let count = sql_int(part.count);
        let mut params: Vec<&(dyn ToSql + Sync)> = id.to_vec();
        params.extend(indexed.iter().map(|v| v as &(dyn ToSql + Sync)));
        params.extend(figure_params(&figures, &histogram));
        params.push(&count);
        params.push(&figures.unknown_direction_lost);
        params.push(&figures.edges);
        tx.execute(&write, &params).await?;
    }
    let folded = tx
        .execute(
            "DELETE FROM rollup_pending WHERE (probe_id, sequence) IN (SELECT * FROM unnest($1::text[], $2::int8[]))",
            &[&probe, &seq],
        )
        .await?;
    tx.commit().await?;
    Ok(Ok(folded))
}
