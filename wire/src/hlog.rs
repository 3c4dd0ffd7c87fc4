//! HdrHistogram interval logs, as bytes: the one writer behind the probe's
//! per-(target, metric) logs and the collector's export. Timestamps are
//! absolute (`BaseTime` 0, seconds since the Unix epoch), values in µs,
//! `Interval_Max` in ms (`MaxValueDivisor` 1000), so other HdrHistogram
//! tools read the files as they are.

use crate::{LatencyHistogram, Window};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use std::time::{Duration, UNIX_EPOCH};

/// The column legend HdrHistogram's own writers put after the header.
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

/// A log that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// The histogram could not be serialized (it holds counts beyond what
    /// the V2 format encodes); nothing of the interval was written.
    #[error("HdrHistogram log: {0}")]
    Write(String),
}

/// The header of a log: `comment` (one line), its start time, the base
/// time, the value divisor and the column legend.
pub fn hlog_header(comment: &str, start_unix_ms: u64) -> Result<Vec<u8>, HlogError> {
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .with_start_time(UNIX_EPOCH + Duration::from_millis(start_unix_ms))
        .with_base_time(UNIX_EPOCH)
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut ser)
        .map_err(|e| HlogError::Write(e.to_string()))?;
    out.extend_from_slice(LEGEND.as_bytes());
    Ok(out)
}

/// One interval line: `histogram` over `window`, tagged with `tag` (made
/// safe for the format: commas and white space become `_`).
pub fn hlog_interval(
    histogram: &LatencyHistogram,
    window: Window,
    tag: &str,
) -> Result<Vec<u8>, HlogError> {
    let tag = hlog_tag(tag);
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_max_value_divisor(1000.0);
    {
        let mut w = builder
            .begin_log_with(&mut out, &mut ser)
            .map_err(|e| HlogError::Write(e.to_string()))?;
        w.write_histogram(
            histogram,
            Duration::from_millis(window.start_unix_ms),
            Duration::from_millis(window.end_unix_ms.saturating_sub(window.start_unix_ms)),
            Tag::new(&tag),
        )
        .map_err(|e| HlogError::Write(format!("{e:?}")))?;
    }
    // The builder writes its divisor comment first: keep only the interval.
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes())
}

/// A tag the log format carries unchanged: no commas, no white space.
pub fn hlog_tag(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ',' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn a_header_and_intervals_read_back_with_the_hdrhistogram_reader() {
        let mut h = crate::new_latency_histogram();
        for v in [100, 2000, 30_000] {
            h.record(v).unwrap();
        }
        let window = Window {
            start_unix_ms: 1_700_000_000_000,
            end_unix_ms: 1_700_000_060_000,
        };
        let mut log = hlog_header("a test, values in µs", window.start_unix_ms).unwrap();
        log.extend(hlog_interval(&h, window, "country=IN, phase=before").unwrap());
        let entries: Vec<_> = IntervalLogIterator::new(&log)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let intervals: Vec<_> = entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Interval(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 1);
        let i = intervals[0];
        assert_eq!(
            i.tag().map(|t| t.as_str()),
            Some("country=IN__phase=before")
        );
        assert_eq!(i.duration(), Duration::from_secs(60));
        assert_eq!(
            i.start_timestamp(),
            Duration::from_millis(window.start_unix_ms)
        );
        assert!((i.max() - 30.0).abs() < 0.1, "max in ms: {}", i.max());
    }
}
