//! SQLite's side of the shared row layout (`crate::row`): a series'
//! figures as SQLite values, and a result row as [`Columns`].

use crate::row::{sql_int, ColumnError, Columns};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use vantage_wire::Series;

/// A series' figures as both tables store them, `window_start` through
/// `statuses` in column order, with `histogram` the bytes to store.
pub(super) fn figure_values<'a>(s: &Series, histogram: &'a [u8]) -> [ToSqlOutput<'a>; 17] {
    let n = |v: u64| ToSqlOutput::Owned(Value::Integer(sql_int(v)));
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

impl Columns for rusqlite::Row<'_> {
    fn text(&self, col: usize) -> Result<&[u8], ColumnError> {
        match self
            .get_ref(col)
            .map_err(|e| ColumnError::Backend(Box::new(e)))?
        {
            ValueRef::Text(t) => Ok(t),
            other => Err(ColumnError::Corrupt(format!(
                "column {col} holds {:?}, not text",
                other.data_type()
            ))),
        }
    }

    fn int(&self, col: usize) -> Result<i64, ColumnError> {
        self.get::<_, i64>(col)
            .map_err(|e| ColumnError::Backend(Box::new(e)))
    }

    fn blob(&self, col: usize) -> Result<&[u8], ColumnError> {
        match self
            .get_ref(col)
            .map_err(|e| ColumnError::Backend(Box::new(e)))?
        {
            ValueRef::Blob(b) => Ok(b),
            _ => Err(ColumnError::Corrupt(format!("column {col} is not a blob"))),
        }
    }
}
