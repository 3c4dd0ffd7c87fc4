//! HdrHistogram interval logs, as bytes: the one writer behind the probe's
//! per-(target, metric) logs and the collector's export. Timestamps are
//! absolute (`BaseTime` 0, seconds since the Unix epoch). A log holds
//! values of one [`Unit`], named in its header comment with the divisor
//! that fits it ([`hlog_divisor`]): latencies in µs with `Interval_Max` in
//! ms (`MaxValueDivisor` 1000); goodput in kbit/s and responsiveness in
//! round trips per minute as they are (divisor 1). Other HdrHistogram tools
//! read the files as they are, and show each in its own unit.

use crate::{LatencyHistogram, Unit, Window};
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

/// The `MaxValueDivisor` of a log of `unit`, and the unit its
/// `Interval_Max` (and an HdrHistogram tool's output) is then in: µs are
/// shown as ms; kbit/s and round trips per minute as they are.
pub fn hlog_divisor(unit: Unit) -> (f64, &'static str) {
    match unit {
        Unit::Microseconds => (1000.0, "milliseconds"),
        Unit::KilobitsPerSecond => (1.0, "kbit/s"),
        Unit::RoundTripsPerMinute => (1.0, "round trips per minute"),
    }
}

/// The words for the values of `unit` in a log's header comment.
fn unit_words(unit: Unit) -> &'static str {
    match unit {
        Unit::Microseconds => "microseconds",
        Unit::KilobitsPerSecond => "kbit/s",
        Unit::RoundTripsPerMinute => "round trips per minute",
    }
}

/// The header of a log of values in `unit`: `comment` (one line, to which
/// the unit and divisor are added), its start time, the base time, the
/// value divisor and the column legend.
pub fn hlog_header(comment: &str, unit: Unit, start_unix_ms: u64) -> Result<Vec<u8>, HlogError> {
    let (divisor, shown_in) = hlog_divisor(unit);
    let comment = format!(
        "{comment}; values in {}, Interval_Max in {shown_in} (MaxValueDivisor {divisor})",
        unit_words(unit)
    );
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    IntervalLogWriterBuilder::new()
        .add_comment(&comment)
        .with_start_time(UNIX_EPOCH + Duration::from_millis(start_unix_ms))
        .with_base_time(UNIX_EPOCH)
        .with_max_value_divisor(divisor)
        .begin_log_with(&mut out, &mut ser)
        .map_err(|e| HlogError::Write(e.to_string()))?;
    out.extend_from_slice(LEGEND.as_bytes());
    Ok(out)
}

/// One interval line of a log of `unit`: `histogram` over `window`, tagged
/// with `tag` (made safe for the format: commas and white space become `_`).
pub fn hlog_interval(
    histogram: &LatencyHistogram,
    unit: Unit,
    window: Window,
    tag: &str,
) -> Result<Vec<u8>, HlogError> {
    let tag = hlog_tag(tag);
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_max_value_divisor(hlog_divisor(unit).0);
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
        let mut log = hlog_header("a test", Unit::Microseconds, window.start_unix_ms).unwrap();
        assert!(String::from_utf8_lossy(&log).contains(
            "values in microseconds, Interval_Max in milliseconds (MaxValueDivisor 1000)"
        ));
        log.extend(
            hlog_interval(&h, Unit::Microseconds, window, "country=IN, phase=before").unwrap(),
        );
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

    #[test]
    fn goodput_and_responsiveness_keep_their_own_unit() {
        // 3,129 kbit/s must read as 3,129 (kbit/s), never as 3.129 (ms).
        let mut h = crate::new_latency_histogram();
        h.record(3129).unwrap();
        let window = Window {
            start_unix_ms: 1_700_000_000_000,
            end_unix_ms: 1_700_000_060_000,
        };
        for (unit, words) in [
            (Unit::KilobitsPerSecond, "values in kbit/s, Interval_Max in kbit/s (MaxValueDivisor 1)"),
            (
                Unit::RoundTripsPerMinute,
                "values in round trips per minute, Interval_Max in round trips per minute (MaxValueDivisor 1)",
            ),
        ] {
            let mut log = hlog_header("goodput", unit, window.start_unix_ms).unwrap();
            assert!(String::from_utf8_lossy(&log).contains(words), "{unit:?}");
            log.extend(hlog_interval(&h, unit, window, "m").unwrap());
            let max = IntervalLogIterator::new(&log)
                .filter_map(|e| match e {
                    Ok(LogEntry::Interval(i)) => Some(i.max()),
                    _ => None,
                })
                .next()
                .unwrap();
            assert!((max - 3129.0).abs() < 4.0, "{unit:?}: Interval_Max {max}");
        }
    }
}
