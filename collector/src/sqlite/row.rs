//! Reading stored rows (of `series` or `rollups`, through
//! [`select_columns`]) into one reused series. A report reads millions of
//! rows in (probe, sequence) order, where consecutive rows share their
//! probe, labels and often their target: each text column is parsed only
//! when it differs from the row before, and the histogram's sparse counts
//! reuse one buffer, so a scan allocates almost nothing per row.

use super::sqlite_error;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use std::path::Path;
use vantage_store::{StoreError, StoredSeries};
use vantage_wire::{Labels, Series, SparseCounts, Target, Window};

/// The columns [`RowReader::read`] reads, in its order; `sequence` is the
/// expression for the sequence column (`block_start` for a roll-up).
pub(super) fn select_columns(sequence: &str) -> String {
    format!(
        "probe_id, {sequence}, campaign, labels, target, target_address, metric, window_start, window_end, \
         sent, lost, errors, bytes, duplicates, reordered, forward_lost, backward_lost, ipdv_sum_us, ipdv_pairs, \
         server_sum_us, server_count, histogram, reasons, statuses"
    )
}

/// The labels both tables keep in columns of their own (indexed, so a
/// selector narrows on them in SQL), in column order.
pub(super) const LABEL_COLUMNS: [&str; 6] =
    ["phase", "country", "region", "network", "asn", "device"];

/// The values of [`LABEL_COLUMNS`] for `labels`.
pub(super) fn label_values(labels: &Labels) -> [Option<&str>; 6] {
    LABEL_COLUMNS.map(|k| labels.get(k))
}

/// A series' figures as both tables store them, `window_start` through
/// `statuses` in column order, with `histogram` the bytes to store.
pub(super) fn figure_values<'a>(s: &Series, histogram: &'a [u8]) -> [ToSqlOutput<'a>; 17] {
    let n = |v: u64| ToSqlOutput::Owned(Value::Integer(super::i(v)));
    let text = |t: String| ToSqlOutput::Owned(Value::Text(t));
    [
        n(s.window.start_unix_ms),
        n(s.window.end_unix_ms),
        n(s.sent),
        n(s.lost),
        text(vantage_wire::counts_text(&s.errors)),
        n(s.bytes),
        n(s.path.duplicates),
        n(s.path.reordered),
        n(s.path.forward_lost),
        n(s.path.backward_lost),
        n(s.path.ipdv_sum_us),
        n(s.path.ipdv_pairs),
        n(s.server_time.sum_us),
        n(s.server_time.count),
        ToSqlOutput::Borrowed(ValueRef::Blob(histogram)),
        text(vantage_wire::counts_text(&s.reasons)),
        text(vantage_wire::counts_text(&s.statuses)),
    ]
}

/// Column of `series_count` when a roll-up is read with
/// `select_columns(..), series_count`.
pub(super) const SERIES_COUNT_COLUMN: usize = 24;

/// One row as last read, and the text it was parsed from.
pub(super) struct RowReader {
    /// The row; its `series.histogram` stays empty.
    pub(super) row: StoredSeries,
    /// The row's histogram.
    pub(super) counts: SparseCounts,
    labels: String,
    errors: String,
    reasons: String,
    statuses: String,
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
        }
    }
}

/// Whether `dst` was changed to the text `src`: compared as bytes first,
/// so an unchanged column (most, in (probe, sequence) order) is not even
/// checked for UTF-8 again.
fn set(dst: &mut String, src: &[u8]) -> Result<bool, ReadError> {
    if dst.as_bytes() == src {
        return Ok(false);
    }
    let text = std::str::from_utf8(src).map_err(|_| {
        ReadError::Corrupt(format!(
            "text `{}` is not UTF-8",
            String::from_utf8_lossy(src)
        ))
    })?;
    dst.clear();
    dst.push_str(text);
    Ok(true)
}

impl RowReader {
    /// Reads `r` into the reused row, naming the database at `path` when
    /// a column is missing or does not decode.
    pub(super) fn read(&mut self, r: &rusqlite::Row<'_>, path: &Path) -> Result<(), StoreError> {
        self.read_columns(r).map_err(|e| match e {
            ReadError::Sqlite(source) => sqlite_error(path, source),
            ReadError::Corrupt(reason) => StoreError::Corrupt {
                place: path.display().to_string(),
                reason,
            },
        })
    }

    fn read_columns(&mut self, r: &rusqlite::Row<'_>) -> Result<(), ReadError> {
        let text = |col: usize| -> Result<&[u8], ReadError> {
            match r.get_ref(col)? {
                ValueRef::Text(t) => Ok(t),
                other => Err(ReadError::Corrupt(format!(
                    "column {col} holds {:?}, not text",
                    other.data_type()
                ))),
            }
        };
        let n = |col: usize| -> Result<u64, ReadError> { Ok(r.get::<_, i64>(col)?.max(0) as u64) };
        let row = &mut self.row;
        set(&mut row.probe_id, text(0)?)?;
        row.sequence = n(1)?;
        set(&mut row.campaign, text(2)?)?;
        if set(&mut self.labels, text(3)?)? {
            let mut labels = Labels::new();
            for pair in self.labels.split(';').filter(|p| !p.is_empty()) {
                labels
                    .insert_pair(pair)
                    .map_err(|e| ReadError::Corrupt(e.to_string()))?;
            }
            row.labels = labels;
        }
        let s = &mut row.series;
        set(&mut s.target.name, text(4)?)?;
        set(&mut s.target.address, text(5)?)?;
        s.metric = std::str::from_utf8(text(6)?)
            .unwrap_or("")
            .parse()
            .map_err(|e: vantage_wire::ParseNameError| ReadError::Corrupt(e.to_string()))?;
        s.window = Window {
            start_unix_ms: n(7)?,
            end_unix_ms: n(8)?,
        };
        s.sent = n(9)?;
        s.lost = n(10)?;
        if set(&mut self.errors, text(11)?)? {
            s.errors =
                super::parse_counts("error counts", &self.errors).map_err(ReadError::Corrupt)?;
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
        let histogram = match r.get_ref(21)? {
            ValueRef::Blob(b) => b,
            _ => return Err(ReadError::Corrupt("histogram is not a blob".into())),
        };
        self.counts
            .decode_into(histogram)
            .map_err(|e| ReadError::Corrupt(e.to_string()))?;
        if set(&mut self.reasons, text(22)?)? {
            s.reasons =
                super::parse_counts("reason counts", &self.reasons).map_err(ReadError::Corrupt)?;
        }
        if set(&mut self.statuses, text(23)?)? {
            s.statuses =
                super::parse_counts("status counts", &self.statuses).map_err(ReadError::Corrupt)?;
        }
        Ok(())
    }
}

enum ReadError {
    Sqlite(rusqlite::Error),
    Corrupt(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sqlite(e)
    }
}
