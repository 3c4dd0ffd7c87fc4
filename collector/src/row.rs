//! The stored row layout both backends share, and reading a row (of
//! `series` or `rollups`, through [`select_columns`]) into one reused
//! series. A report reads millions of rows in (probe, sequence) order,
//! where consecutive rows share their probe, labels and often their
//! target: each text column is parsed only when it differs from the row
//! before, and the histogram's sparse counts reuse one buffer, so a scan
//! allocates almost nothing per row.

use std::collections::BTreeMap;
use vantage_store::{StoreError, StoredSeries, StoredTrace};
use vantage_wire::trace::PathTrace;
use vantage_wire::{Labels, Series, SparseCounts, Target, Window};

/// The schema this build writes and reads, in both backends' `schema_version`
/// table: 1 first release, 2 reasons and statuses, 3 roll-ups, 4 the fleet
/// (campaigns, assignments, probe health), 5 losses of unknown direction
/// (`unknown_direction_lost`, last in both tables), 6 path traces (the
/// `traces` table, and CDN edges per series: `edges`, last in `series` and
/// `rollups`).
pub(crate) const SCHEMA_VERSION: i64 = 6;

/// The columns of `traces` a reader reads, in [`read_trace`]'s order.
pub(crate) const TRACE_COLUMNS: &str =
    "probe_id, sequence, campaign, labels, target, target_address, started_unix_ms, trace_end, hops";

/// The values of one trace row after its key, labels and label columns:
/// target, target address, start, end and the hop list.
pub(crate) fn trace_values(t: &PathTrace) -> (String, String, i64, &'static str, String) {
    (
        t.target.name.clone(),
        t.target.address.clone(),
        sql_int(t.started_unix_ms),
        t.trace.end.name(),
        vantage_store::trace::hops_text(&t.trace),
    )
}

/// Reads a row of [`TRACE_COLUMNS`].
pub(crate) fn read_trace(r: &dyn Columns, place: &str) -> Result<StoredTrace, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        place: place.to_string(),
        reason,
    };
    let backend = |e: ColumnError| match e {
        ColumnError::Backend(source) => StoreError::Database {
            place: place.to_string(),
            source,
        },
        ColumnError::Corrupt(reason) => corrupt(reason),
    };
    let text = |col: usize| -> Result<String, StoreError> {
        let bytes = r.text(col).map_err(backend)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(format!("trace column {col} is not UTF-8")))
    };
    let int =
        |col: usize| -> Result<u64, StoreError> { Ok(r.int(col).map_err(backend)?.max(0) as u64) };
    let mut labels = Labels::new();
    for pair in text(3)?.split(';').filter(|p| !p.is_empty()) {
        labels
            .insert_pair(pair)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    let trace = vantage_store::trace::parse_hops(&text(8)?, &text(7)?)
        .map_err(|e| corrupt(format!("stored trace: {e}")))?;
    Ok(StoredTrace {
        probe_id: text(0)?,
        sequence: int(1)?,
        campaign: text(2)?,
        labels,
        trace: PathTrace {
            target: Target {
                name: text(4)?,
                address: text(5)?,
            },
            started_unix_ms: int(6)?,
            trace,
        },
    })
}

/// The columns [`RowReader::read`] reads, in its order; `sequence` is the
/// expression for the sequence column (`block_start` for a roll-up).
pub(crate) fn select_columns(sequence: &str) -> String {
    format!(
        "probe_id, {sequence}, campaign, labels, target, target_address, metric, window_start, window_end, \
         sent, lost, errors, bytes, duplicates, reordered, forward_lost, backward_lost, ipdv_sum_us, ipdv_pairs, \
         server_sum_us, server_count, histogram, reasons, statuses, unknown_direction_lost, edges"
    )
}

/// Column of `series_count` when a roll-up is read with
/// `select_columns(..), series_count`.
pub(crate) const SERIES_COUNT_COLUMN: usize = 26;

/// The labels both tables keep in columns of their own (indexed, so a
/// selector narrows on them in SQL), in column order.
pub(crate) const LABEL_COLUMNS: [&str; 6] =
    ["phase", "country", "region", "network", "asn", "device"];

/// The values of [`LABEL_COLUMNS`] for `labels`.
pub(crate) fn label_values(labels: &Labels) -> [Option<&str>; 6] {
    LABEL_COLUMNS.map(|k| labels.get(k))
}

/// The well-known columns a selector's equalities narrow on in SQL, in
/// both tables; the selector itself decides in the end.
pub(crate) const FILTER_COLUMNS: [&str; 5] = ["country", "phase", "metric", "target", "campaign"];

/// [`FILTER_COLUMNS`] that `traces` has too (a trace's metric is always
/// `path_trace`, which the selector checks).
pub(crate) const TRACE_FILTER_COLUMNS: [&str; 4] = ["country", "phase", "target", "campaign"];

/// Labels as one stored text column: `k=v;k=v`, in key order.
pub(crate) fn labels_text(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Reads a column written by [`vantage_wire::counts_text`].
pub(crate) fn parse_counts<K: Ord + std::str::FromStr>(
    column: &str,
    text: &str,
) -> Result<BTreeMap<K, u64>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let (k, n) = pair
            .split_once('=')
            .ok_or_else(|| format!("{column} `{text}`"))?;
        let key: K = k.parse().map_err(|_| format!("{column}: unknown `{k}`"))?;
        let n: u64 = n.parse().map_err(|_| format!("{column}: count `{n}`"))?;
        out.insert(key, n);
    }
    Ok(out)
}

/// A stored integer as SQL keeps it (both backends have signed 64 bits).
pub(crate) fn sql_int(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// A series' stored figures but its histogram, as both backends write
/// them: `window_start` through `lost`, `errors`, `bytes` through
/// `server_count`, then `reasons` and `statuses` (the histogram's column
/// sits between `server_count` and `reasons`), and `unknown_direction_lost`,
/// the last column of `series` and of `rollups` (after `series_count`).
pub(crate) struct Figures {
    pub(crate) ints_before: [i64; 4],
    pub(crate) errors: String,
    pub(crate) ints_after: [i64; 9],
    pub(crate) reasons: String,
    pub(crate) statuses: String,
    pub(crate) unknown_direction_lost: i64,
    pub(crate) edges: String,
}

impl Figures {
    pub(crate) fn of(s: &Series) -> Self {
        let n = sql_int;
        Figures {
            ints_before: [
                n(s.window.start_unix_ms),
                n(s.window.end_unix_ms),
                n(s.sent),
                n(s.lost),
            ],
            errors: vantage_wire::counts_text(&s.errors),
            ints_after: [
                n(s.bytes),
                n(s.path.duplicates),
                n(s.path.reordered),
                n(s.path.forward_lost),
                n(s.path.backward_lost),
                n(s.path.ipdv_sum_us),
                n(s.path.ipdv_pairs),
                n(s.server_time.sum_us),
                n(s.server_time.count),
            ],
            reasons: vantage_wire::counts_text(&s.reasons),
            statuses: vantage_wire::counts_text(&s.statuses),
            unknown_direction_lost: n(s.path.unknown_direction_lost),
            edges: vantage_wire::counts_text(&s.edges),
        }
    }
}

/// Why a column could not be read.
pub(crate) enum ColumnError {
    /// The backend failed (a missing column, a dropped connection).
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// The column holds what no Vantage wrote.
    Corrupt(String),
}

/// One result row of a backend, column by column.
pub(crate) trait Columns {
    /// A text column's bytes.
    fn text(&self, col: usize) -> Result<&[u8], ColumnError>;
    /// An integer column.
    fn int(&self, col: usize) -> Result<i64, ColumnError>;
    /// A blob (bytea) column.
    fn blob(&self, col: usize) -> Result<&[u8], ColumnError>;
}

/// One row as last read, and the text it was parsed from.
pub(crate) struct RowReader {
    /// The row; its `series.histogram` stays empty.
    pub(crate) row: StoredSeries,
    /// The row's histogram.
    pub(crate) counts: SparseCounts,
    labels: String,
    errors: String,
    reasons: String,
    statuses: String,
    edges: String,
}

impl Default for RowReader {
    fn default() -> Self {
        RowReader {
            row: StoredSeries {
                probe_id: String::new(),
                sequence: 0,
                campaign: String::new(),
                labels: Labels::new(),
                series: Series::new(
                    Target {
                        name: String::new(),
                        address: String::new(),
                    },
                    vantage_wire::Metric::UdpRtt,
                    Window {
                        start_unix_ms: 0,
                        end_unix_ms: 0,
                    },
                ),
            },
            counts: SparseCounts::default(),
            labels: String::new(),
            errors: String::new(),
            reasons: String::new(),
            statuses: String::new(),
            edges: String::new(),
        }
    }
}

/// Whether `dst` was changed to the text `src`: compared as bytes first,
/// so an unchanged column (most, in (probe, sequence) order) is not even
/// checked for UTF-8 again.
fn set(dst: &mut String, src: &[u8]) -> Result<bool, ColumnError> {
    if dst.as_bytes() == src {
        return Ok(false);
    }
    let text = std::str::from_utf8(src).map_err(|_| {
        ColumnError::Corrupt(format!(
            "text `{}` is not UTF-8",
            String::from_utf8_lossy(src)
        ))
    })?;
    dst.clear();
    dst.push_str(text);
    Ok(true)
}

impl RowReader {
    /// Reads `r` into the reused row, naming the database `place` when a
    /// column is missing or does not decode.
    pub(crate) fn read(&mut self, r: &dyn Columns, place: &str) -> Result<(), StoreError> {
        self.read_columns(r).map_err(|e| match e {
            ColumnError::Backend(source) => StoreError::Database {
                place: place.to_string(),
                source,
            },
            ColumnError::Corrupt(reason) => StoreError::Corrupt {
                place: place.to_string(),
                reason,
            },
        })
    }

    fn read_columns(&mut self, r: &dyn Columns) -> Result<(), ColumnError> {
        let n = |col: usize| -> Result<u64, ColumnError> { Ok(r.int(col)?.max(0) as u64) };
        let row = &mut self.row;
        set(&mut row.probe_id, r.text(0)?)?;
        row.sequence = n(1)?;
        set(&mut row.campaign, r.text(2)?)?;
        if set(&mut self.labels, r.text(3)?)? {
            let mut labels = Labels::new();
            for pair in self.labels.split(';').filter(|p| !p.is_empty()) {
                labels
                    .insert_pair(pair)
                    .map_err(|e| ColumnError::Corrupt(e.to_string()))?;
            }
            row.labels = labels;
        }
        let s = &mut row.series;
        set(&mut s.target.name, r.text(4)?)?;
        set(&mut s.target.address, r.text(5)?)?;
        s.metric = std::str::from_utf8(r.text(6)?)
            .unwrap_or("")
            .parse()
            .map_err(|e: vantage_wire::ParseNameError| ColumnError::Corrupt(e.to_string()))?;
        s.window = Window {
            start_unix_ms: n(7)?,
            end_unix_ms: n(8)?,
        };
        s.sent = n(9)?;
        s.lost = n(10)?;
        if set(&mut self.errors, r.text(11)?)? {
            s.errors = parse_counts("error counts", &self.errors).map_err(ColumnError::Corrupt)?;
        }
        s.bytes = n(12)?;
        s.path.duplicates = n(13)?;
        s.path.reordered = n(14)?;
        s.path.forward_lost = n(15)?;
        s.path.backward_lost = n(16)?;
        s.path.ipdv_sum_us = n(17)?;
        s.path.ipdv_pairs = n(18)?;
        s.server_time.sum_us = n(19)?;
        s.server_time.count = n(20)?;
        self.counts
            .decode_into(r.blob(21)?)
            .map_err(|e| ColumnError::Corrupt(e.to_string()))?;
        if set(&mut self.reasons, r.text(22)?)? {
            s.reasons =
                parse_counts("reason counts", &self.reasons).map_err(ColumnError::Corrupt)?;
        }
        if set(&mut self.statuses, r.text(23)?)? {
            s.statuses =
                parse_counts("status counts", &self.statuses).map_err(ColumnError::Corrupt)?;
        }
        s.path.unknown_direction_lost = n(24)?;
        if set(&mut self.edges, r.text(25)?)? {
            s.edges = parse_counts("CDN edge counts", &self.edges).map_err(ColumnError::Corrupt)?;
        }
        Ok(())
    }
}
