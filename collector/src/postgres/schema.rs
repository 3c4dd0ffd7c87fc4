//! The PostgreSQL schema and its versions. Text columns sort and compare
//! as bytes (`COLLATE "C"`), as SQLite's do, so both backends hand rows in
//! the same order.

/// Serialises schema changes and folds across every collector on one
/// database (`pg_advisory_xact_lock` keys).
pub(super) const MIGRATE_LOCK: i64 = 0x7661_6e74_6167_6501;
pub(super) const FOLD_LOCK: i64 = 0x7661_6e74_6167_6502;

/// Of the given token hashes, those still valid, with their probes; each
/// row share-locked until COMMIT, so a concurrent revoke waits for the
/// batches checked against it.
pub(super) const VALID_TOKENS: &str =
    "SELECT hash, probe_id FROM tokens WHERE hash = ANY($1) AND revoked_unix_ms IS NULL FOR SHARE";

/// Version 3, whole: what a new database gets.
pub(super) const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS batches (
    probe_id TEXT COLLATE "C" NOT NULL,
    sequence BIGINT NOT NULL,
    campaign TEXT COLLATE "C" NOT NULL,
    labels TEXT COLLATE "C" NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    received_unix_ms BIGINT NOT NULL,
    dropped_batches BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (probe_id, sequence)
);
CREATE TABLE IF NOT EXISTS series (
    probe_id TEXT COLLATE "C" NOT NULL,
    sequence BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    campaign TEXT COLLATE "C" NOT NULL,
    phase TEXT COLLATE "C", country TEXT COLLATE "C", region TEXT COLLATE "C",
    network TEXT COLLATE "C", asn TEXT COLLATE "C", device TEXT COLLATE "C",
    labels TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    target_address TEXT COLLATE "C" NOT NULL,
    metric TEXT COLLATE "C" NOT NULL,
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    sent BIGINT NOT NULL, lost BIGINT NOT NULL, errors TEXT NOT NULL, bytes BIGINT NOT NULL,
    duplicates BIGINT NOT NULL, reordered BIGINT NOT NULL,
    forward_lost BIGINT NOT NULL, backward_lost BIGINT NOT NULL,
    ipdv_sum_us BIGINT NOT NULL, ipdv_pairs BIGINT NOT NULL,
    server_sum_us BIGINT NOT NULL, server_count BIGINT NOT NULL,
    histogram BYTEA NOT NULL,
    reasons TEXT NOT NULL, statuses TEXT NOT NULL,
    unknown_direction_lost BIGINT NOT NULL DEFAULT 0,
    edges TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (probe_id, sequence, idx)
);
CREATE INDEX IF NOT EXISTS series_by_labels ON series (country, phase, metric);
CREATE INDEX IF NOT EXISTS batches_raw_by_created ON batches (created_unix_ms) WHERE length(body) > 0;
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    probe_id TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    revoked_unix_ms BIGINT
);
CREATE INDEX IF NOT EXISTS tokens_by_probe ON tokens (probe_id);
CREATE TABLE IF NOT EXISTS rollups (
    resolution TEXT COLLATE "C" NOT NULL,
    probe_id TEXT COLLATE "C" NOT NULL,
    campaign TEXT COLLATE "C" NOT NULL,
    labels TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    target_address TEXT COLLATE "C" NOT NULL,
    metric TEXT COLLATE "C" NOT NULL,
    block_start BIGINT NOT NULL,
    phase TEXT COLLATE "C", country TEXT COLLATE "C", region TEXT COLLATE "C",
    network TEXT COLLATE "C", asn TEXT COLLATE "C", device TEXT COLLATE "C",
    window_start BIGINT NOT NULL,
    window_end BIGINT NOT NULL,
    sent BIGINT NOT NULL, lost BIGINT NOT NULL, errors TEXT NOT NULL, bytes BIGINT NOT NULL,
    duplicates BIGINT NOT NULL, reordered BIGINT NOT NULL,
    forward_lost BIGINT NOT NULL, backward_lost BIGINT NOT NULL,
    ipdv_sum_us BIGINT NOT NULL, ipdv_pairs BIGINT NOT NULL,
    server_sum_us BIGINT NOT NULL, server_count BIGINT NOT NULL,
    histogram BYTEA NOT NULL,
    reasons TEXT NOT NULL, statuses TEXT NOT NULL,
    series_count BIGINT NOT NULL,
    unknown_direction_lost BIGINT NOT NULL DEFAULT 0,
    edges TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (resolution, probe_id, campaign, labels, target, target_address, metric, block_start)
);
CREATE INDEX IF NOT EXISTS rollups_by_labels ON rollups (resolution, country, phase, metric);
CREATE TABLE IF NOT EXISTS rollup_pending (
    probe_id TEXT COLLATE "C" NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (probe_id, sequence)
);
"#;

/// Schema 6: path traces, a table of their own (a new database gets it
/// with [`CREATE`]; an older one at open).
pub(super) const CREATE_TRACES: &str = r#"
CREATE TABLE IF NOT EXISTS traces (
    probe_id TEXT COLLATE "C" NOT NULL,
    sequence BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    campaign TEXT COLLATE "C" NOT NULL,
    phase TEXT COLLATE "C", country TEXT COLLATE "C", region TEXT COLLATE "C",
    network TEXT COLLATE "C", asn TEXT COLLATE "C", device TEXT COLLATE "C",
    labels TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    target_address TEXT COLLATE "C" NOT NULL,
    started_unix_ms BIGINT NOT NULL,
    trace_end TEXT NOT NULL,
    hops TEXT NOT NULL,
    PRIMARY KEY (probe_id, sequence, idx)
);
CREATE INDEX IF NOT EXISTS traces_by_labels ON traces (country, phase);
"#;

/// Schema 6 also: CDN edges per series, last in both tables (old rows
/// read as none).
pub(super) const ADD_EDGES: &str = "\
    ALTER TABLE series ADD COLUMN IF NOT EXISTS edges TEXT NOT NULL DEFAULT ''; \
    ALTER TABLE rollups ADD COLUMN IF NOT EXISTS edges TEXT NOT NULL DEFAULT '';";

/// One trace row.
pub(super) const TRACE_INSERT: &str = "INSERT INTO traces VALUES (\
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

/// The series columns in table order, for the multi-row insert.
pub(super) const SERIES_INSERT: &str = "INSERT INTO series SELECT * FROM unnest(\
    $1::text[], $2::int8[], $3::int4[], $4::text[], \
    $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
    $11::text[], $12::text[], $13::text[], $14::text[], \
    $15::int8[], $16::int8[], $17::int8[], $18::int8[], $19::text[], $20::int8[], \
    $21::int8[], $22::int8[], $23::int8[], $24::int8[], $25::int8[], $26::int8[], \
    $27::int8[], $28::int8[], $29::bytea[], $30::text[], $31::text[], $32::int8[], $33::text[])";

/// Schema 5: the losses of unknown direction, added to a schema 3 or 4
/// database at the end of both tables (old rows read as zero).
pub(super) const ADD_UNKNOWN_DIRECTION: &str = "\
    ALTER TABLE series ADD COLUMN IF NOT EXISTS unknown_direction_lost BIGINT NOT NULL DEFAULT 0; \
    ALTER TABLE rollups ADD COLUMN IF NOT EXISTS unknown_direction_lost BIGINT NOT NULL DEFAULT 0;";

/// The batch rows of one commit; the keys it returns are the new ones.
pub(super) const BATCH_INSERT: &str = "INSERT INTO batches SELECT * FROM unnest(\
    $1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::bytea[]) \
    ON CONFLICT DO NOTHING RETURNING probe_id, sequence";

/// One roll-up row, replacing the stored one (under the fold lock).
pub(super) const ROLLUP_UPSERT: &str = "INSERT INTO rollups VALUES (\
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
    $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34) \
    ON CONFLICT (resolution, probe_id, campaign, labels, target, target_address, metric, block_start) \
    DO UPDATE SET window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end, \
    sent = EXCLUDED.sent, lost = EXCLUDED.lost, errors = EXCLUDED.errors, bytes = EXCLUDED.bytes, \
    duplicates = EXCLUDED.duplicates, reordered = EXCLUDED.reordered, \
    forward_lost = EXCLUDED.forward_lost, backward_lost = EXCLUDED.backward_lost, \
    ipdv_sum_us = EXCLUDED.ipdv_sum_us, ipdv_pairs = EXCLUDED.ipdv_pairs, \
    server_sum_us = EXCLUDED.server_sum_us, server_count = EXCLUDED.server_count, \
    histogram = EXCLUDED.histogram, reasons = EXCLUDED.reasons, statuses = EXCLUDED.statuses, \
    series_count = EXCLUDED.series_count, unknown_direction_lost = EXCLUDED.unknown_direction_lost, \
    edges = EXCLUDED.edges";
