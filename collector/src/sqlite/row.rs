//! SQLite's side of the shared row layout (`crate::row`): a series'
//! figures as SQLite values, and a result row as [`Columns`].

use crate::row::{ColumnError, Columns, Figures};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use vantage_wire::Series;

/// A series' figures as both tables store them, `window_start` through
/// `statuses` in column order, then `unknown_direction_lost` and `edges`
/// (the last columns of either table), with `histogram` the bytes to store.
pub(super) fn figure_values<'a>(s: &Series, histogram: &'a [u8]) -> [ToSqlOutput<'a>; 19] {
    let Figures {
        ints_before: [a, b, c, d],
        errors,
        ints_after: [e, f, g, h, i, j, k, l, m],
        reasons,
        statuses,
        unknown_direction_lost,
        edges,
    } = Figures::of(s);
    let n = |v: i64| ToSqlOutput::Owned(Value::Integer(v));
    let text = |t: String| ToSqlOutput::Owned(Value::Text(t));
    [
        n(a),
        n(b),
        n(c),
        n(d),
        text(errors),
        n(e),
        n(f),
        n(g),
        n(h),
        n(i),
        n(j),
        n(k),
        n(l),
        n(m),
        ToSqlOutput::Borrowed(ValueRef::Blob(histogram)),
        text(reasons),
        text(statuses),
        n(unknown_direction_lost),
        text(edges),
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
