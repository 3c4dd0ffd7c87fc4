//! The batch encoding: a small, versioned, length-checked binary format.
//!
//! Layout (integers are unsigned LEB128 varints unless noted, strings are a
//! varint length then UTF-8):
//!
//! ```text
//! "VNTB" (4 bytes)  version (1 byte, 1 to 3)
//! probe_id  sequence  campaign  created_unix_ms  dropped_batches
//! label_count  { key value }*
//! series_count {
//!   target_name target_address metric_name window_start_ms window_end_ms
//!   sent lost bytes
//!   error_count { class_name count }*
//!   reason_count { reason_name count }*    (version 2 only)
//!   status_count { http_status count }*    (version 2 only)
//!   duplicates reordered forward_lost backward_lost ipdv_sum_us ipdv_pairs
//!   server_time_sum_us server_time_count
//!   unknown_direction_lost                 (version 3 on)
//!   edge_count { edge_name count }*        (version 4 only)
//!   histogram_len histogram (HdrHistogram V2 + deflate)
//! }*
//! trace_count {                            (version 4 only)
//!   target_name target_address started_unix_ms end_name
//!   hop_count { ttl address ("" when silent) rtt_count { rtt_us + 1, 0 when lost }* }*
//! }*
//! ```
//!
//! Names (metrics, error classes, reasons) travel as strings so a newer
//! probe's unknown name is refused with its name, not misread as another.
//!
//! A batch is written in the oldest version that carries all it holds:
//! version 1 without reasons, statuses or losses of unknown direction,
//! version 2 without the last, version 3 without traces, so a collector
//! that predates a version still takes every batch that does not need it;
//! readers take all four.

use crate::histogram::{decode_histogram_plain, encode_histogram, HistogramError};
use crate::labels::{LabelError, Labels, MAX_LABELS};
use crate::metric::{ErrorClass, Metric, ParseNameError, Reason};
use crate::record::{
    Batch, ErrorCounts, PathStats, ReasonCounts, Series, ServerTime, StatusCounts, Target, Window,
};
use crate::trace::{End, HopRecord, PathTrace, Trace};
use std::time::Duration;

const MAGIC: &[u8; 4] = b"VNTB";
/// The newest format version: adds path traces, and CDN edges per series.
const VERSION: u8 = 4;
/// The version that added losses of unknown direction (a stateless STAMP
/// reflector) per series.
const VERSION_3: u8 = 3;
/// The version that added reasons and HTTP statuses per series.
const VERSION_2: u8 = 2;
/// The first version, still written when a batch needs nothing newer.
const VERSION_1: u8 = 1;
/// Largest encoded batch accepted.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
const MAX_SERIES: u64 = 20_000;
const MAX_STRING: u64 = 256;
const MAX_HISTOGRAM_BYTES: u64 = 256 * 1024;
const MAX_ERROR_CLASSES: u64 = 64;
const MAX_REASONS: u64 = 64;
const MAX_STATUSES: u64 = 900;
const MAX_TRACES: u64 = 4096;
const MAX_TRACE_HOPS: u64 = 64;
const MAX_HOP_PROBES: u64 = 16;

/// Why bytes are not a valid batch. Each says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("batch truncated while reading {0}")]
    Truncated(&'static str),
    /// Not a Vantage batch at all.
    #[error("not a Vantage batch (bad magic bytes)")]
    BadMagic,
    /// A batch from a newer (or unknown) format version.
    #[error("batch format version {0} is not supported (this build reads versions {VERSION_1} to {VERSION}); upgrade the receiver")]
    UnsupportedVersion(u8),
    /// A length or count above its limit.
    #[error("{what} is {len}, above the limit of {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Declared size.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// A varint longer than 64 bits.
    #[error("malformed integer in {0}")]
    BadVarint(&'static str),
    /// A string that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    BadUtf8(&'static str),
    /// An unknown metric or error class.
    #[error(transparent)]
    UnknownName(#[from] ParseNameError),
    /// A label that fails validation.
    #[error("bad label: {0}")]
    BadLabel(#[from] LabelError),
    /// A histogram that does not decode.
    #[error("bad histogram: {0}")]
    Histogram(#[from] HistogramError),
    /// Fields that decode but contradict each other.
    #[error("inconsistent series {target}/{metric}: {reason}")]
    Inconsistent {
        /// Target name.
        target: String,
        /// Metric name.
        metric: String,
        /// Which invariant failed.
        reason: String,
    },
    /// A trace whose fields decode but cannot be right.
    #[error("bad trace toward {target}: {reason}")]
    BadTrace {
        /// Target name.
        target: String,
        /// What was wrong.
        reason: String,
    },
    /// Bytes after the end of the batch.
    #[error("{0} unexpected bytes after the batch")]
    TrailingBytes(usize),
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }
    fn string(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.take(1, what)?[0];
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(DecodeError::BadVarint(what));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint(what))
    }
    fn bounded(&mut self, what: &'static str, max: u64) -> Result<u64, DecodeError> {
        let len = self.varint(what)?;
        if len > max {
            return Err(DecodeError::TooLarge { what, len, max });
        }
        Ok(len)
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.bounded(what, MAX_STRING)? as usize;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| DecodeError::BadUtf8(what))
    }
}

impl Batch {
    /// Encodes the batch. Fails only if a histogram cannot be serialized.
    pub fn encode(&self) -> Result<Vec<u8>, HistogramError> {
        let mut out = Vec::with_capacity(256 + self.series.len() * 128);
        out.extend_from_slice(MAGIC);
        let version = if !self.traces.is_empty() || self.series.iter().any(|s| !s.edges.is_empty())
        {
            VERSION
        } else if self
            .series
            .iter()
            .any(|s| s.path.unknown_direction_lost > 0)
        {
            VERSION_3
        } else if self
            .series
            .iter()
            .all(|s| s.reasons.is_empty() && s.statuses.is_empty())
        {
            VERSION_1
        } else {
            VERSION_2
        };
        out.push(version);
        let mut w = Writer(&mut out);
        w.string(&self.probe_id);
        w.varint(self.sequence);
        w.string(&self.campaign);
        w.varint(self.created_unix_ms);
        w.varint(self.dropped_batches);
        w.varint(self.labels.len() as u64);
        for (k, v) in self.labels.iter() {
            w.string(k);
            w.string(v);
        }
        w.varint(self.series.len() as u64);
        let mut hist = Vec::new();
        for s in &self.series {
            w.string(&s.target.name);
            w.string(&s.target.address);
            w.string(s.metric.name());
            w.varint(s.window.start_unix_ms);
            w.varint(s.window.end_unix_ms);
            w.varint(s.sent);
            w.varint(s.lost);
            w.varint(s.bytes);
            w.varint(s.errors.len() as u64);
            for (class, n) in &s.errors {
                w.string(class.name());
                w.varint(*n);
            }
            if version >= 2 {
                w.varint(s.reasons.len() as u64);
                for (reason, n) in &s.reasons {
                    w.string(reason.name());
                    w.varint(*n);
                }
                w.varint(s.statuses.len() as u64);
                for (code, n) in &s.statuses {
                    w.varint(u64::from(*code));
                    w.varint(*n);
                }
            }
            let p = &s.path;
            for v in [
                p.duplicates,
                p.reordered,
                p.forward_lost,
                p.backward_lost,
                p.ipdv_sum_us,
                p.ipdv_pairs,
                s.server_time.sum_us,
                s.server_time.count,
            ] {
                w.varint(v);
            }
            if version >= 3 {
                w.varint(p.unknown_direction_lost);
            }
            if version >= VERSION {
                w.varint(s.edges.len() as u64);
                for (edge, n) in &s.edges {
                    w.string(edge);
                    w.varint(*n);
                }
            }
            hist.clear();
            encode_histogram(&s.histogram, &mut hist)?;
            w.varint(hist.len() as u64);
            w.0.extend_from_slice(&hist);
        }
        if version >= VERSION {
            w.varint(self.traces.len() as u64);
            for t in &self.traces {
                encode_trace(&mut w, t);
            }
        }
        Ok(out)
    }

    /// Decodes and validates a batch. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        Self::decode_with_plain_histograms(bytes).map(|(b, _)| b)
    }

    /// Decodes like [`Batch::decode`], and also returns each series'
    /// histogram as plain V2 bytes (what decoding inflated anyway), so a
    /// store keeps them as they are instead of encoding the histograms
    /// again (see [`crate::encode_histogram_plain`]).
    pub fn decode_with_plain_histograms(
        bytes: &[u8],
    ) -> Result<(Batch, Vec<Vec<u8>>), DecodeError> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(DecodeError::TooLarge {
                what: "batch",
                len: bytes.len() as u64,
                max: MAX_BATCH_BYTES as u64,
            });
        }
        let mut r = Reader { rest: bytes };
        if r.take(4, "magic")? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.take(1, "version")?[0];
        if !(VERSION_1..=VERSION).contains(&version) {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let probe_id = r.string("probe id")?;
        let sequence = r.varint("sequence")?;
        let campaign = r.string("campaign")?;
        let created_unix_ms = r.varint("created time")?;
        let dropped_batches = r.varint("dropped batches")?;
        let n_labels = r.bounded("label count", MAX_LABELS as u64)?;
        let mut labels = Labels::new();
        for _ in 0..n_labels {
            let k = r.string("label key")?;
            let v = r.string("label value")?;
            labels.insert(&k, &v)?;
        }
        let n_series = r.bounded("series count", MAX_SERIES)?;
        let mut series = Vec::with_capacity(n_series.min(1024) as usize);
        let mut plain = Vec::with_capacity(n_series.min(1024) as usize);
        for _ in 0..n_series {
            let (s, histogram) = decode_series(&mut r, version)?;
            series.push(s);
            plain.push(histogram);
        }
        let mut traces = Vec::new();
        if version >= VERSION {
            for _ in 0..r.bounded("trace count", MAX_TRACES)? {
                traces.push(decode_trace(&mut r)?);
            }
        }
        if !r.rest.is_empty() {
            return Err(DecodeError::TrailingBytes(r.rest.len()));
        }
        let batch = Batch {
            probe_id,
            sequence,
            campaign,
            labels,
            created_unix_ms,
            dropped_batches,
            series,
            traces,
        };
        Ok((batch, plain))
    }
}

fn encode_trace(w: &mut Writer<'_>, t: &PathTrace) {
    w.string(&t.target.name);
    w.string(&t.target.address);
    w.varint(t.started_unix_ms);
    w.string(t.trace.end.name());
    w.varint(t.trace.hops.len() as u64);
    for hop in &t.trace.hops {
        w.varint(u64::from(hop.ttl));
        w.string(&hop.address.map(|a| a.to_string()).unwrap_or_default());
        w.varint(hop.rtts.len() as u64);
        for rtt in &hop.rtts {
            w.varint(rtt.map_or(0, |d| (d.as_micros() as u64).saturating_add(1)));
        }
    }
}

fn decode_trace(r: &mut Reader<'_>) -> Result<PathTrace, DecodeError> {
    let target = Target {
        name: r.string("trace target name")?,
        address: r.string("trace target address")?,
    };
    let bad = |reason: String| DecodeError::BadTrace {
        target: target.name.clone(),
        reason,
    };
    let started_unix_ms = r.varint("trace start")?;
    let end_name = r.string("trace end")?;
    let end = End::from_name(&end_name).ok_or_else(|| bad(format!("unknown end `{end_name}`")))?;
    let n_hops = r.bounded("trace hop count", MAX_TRACE_HOPS)?;
    let mut hops: Vec<HopRecord> = Vec::with_capacity(n_hops as usize);
    for _ in 0..n_hops {
        let ttl = r.varint("hop TTL")?;
        let ttl = u8::try_from(ttl)
            .ok()
            .filter(|t| *t > hops.last().map_or(0, |h| h.ttl))
            .ok_or_else(|| bad(format!("hop TTL {ttl} does not follow the one before")))?;
        let address = r.string("hop address")?;
        let address = if address.is_empty() {
            None
        } else {
            Some(
                address
                    .parse()
                    .map_err(|_| bad(format!("hop address `{address}` is not an IP address")))?,
            )
        };
        let mut rtts = Vec::new();
        for _ in 0..r.bounded("hop probe count", MAX_HOP_PROBES)? {
            let v = r.varint("hop round trip")?;
            rtts.push(v.checked_sub(1).map(Duration::from_micros));
        }
        if address.is_none() && rtts.iter().any(Option::is_some) {
            return Err(bad(format!("hop {ttl} has a round trip but no address")));
        }
        hops.push(HopRecord { ttl, address, rtts });
    }
    Ok(PathTrace {
        target,
        started_unix_ms,
        trace: Trace { hops, end },
    })
}

fn decode_series(r: &mut Reader<'_>, version: u8) -> Result<(Series, Vec<u8>), DecodeError> {
    let target = Target {
        name: r.string("target name")?,
        address: r.string("target address")?,
    };
    let metric: Metric = r.string("metric")?.parse()?;
    let window = Window {
        start_unix_ms: r.varint("window start")?,
        end_unix_ms: r.varint("window end")?,
    };
    let sent = r.varint("sent")?;
    let lost = r.varint("lost")?;
    let bytes = r.varint("bytes")?;
    let n_errors = r.bounded("error class count", MAX_ERROR_CLASSES)?;
    let mut errors = ErrorCounts::new();
    for _ in 0..n_errors {
        let class: ErrorClass = r.string("error class")?.parse()?;
        let n = r.varint("error count")?;
        let slot = errors.entry(class).or_insert(0);
        *slot = slot.saturating_add(n);
    }
    let mut reasons = ReasonCounts::new();
    let mut statuses = StatusCounts::new();
    if version >= 2 {
        for _ in 0..r.bounded("reason count", MAX_REASONS)? {
            let reason: Reason = r.string("error reason")?.parse()?;
            let n = r.varint("reason count")?;
            let slot = reasons.entry(reason).or_insert(0);
            *slot = slot.saturating_add(n);
        }
        for _ in 0..r.bounded("status count", MAX_STATUSES)? {
            let code = r.varint("HTTP status")?;
            let n = r.varint("status count")?;
            let code = u16::try_from(code).unwrap_or(u16::MAX);
            let slot = statuses.entry(code).or_insert(0);
            *slot = slot.saturating_add(n);
        }
    }
    let mut f = [0u64; 8];
    for v in &mut f {
        *v = r.varint("path statistics")?;
    }
    let unknown_direction_lost = if version >= 3 {
        r.varint("losses of unknown direction")?
    } else {
        0
    };
    let mut edges = crate::record::EdgeCounts::new();
    if version >= VERSION {
        for _ in 0..r.bounded("CDN edge count", crate::record::MAX_EDGES as u64 + 1)? {
            let edge = r.string("CDN edge")?;
            let n = r.varint("CDN edge count")?;
            let slot = edges.entry(edge).or_insert(0);
            *slot = slot.saturating_add(n);
        }
    }
    let hist_len = r.bounded("histogram length", MAX_HISTOGRAM_BYTES)? as usize;
    let (histogram, plain) = decode_histogram_plain(r.take(hist_len, "histogram")?)?;
    let series = Series {
        target,
        metric,
        window,
        histogram,
        sent,
        lost,
        errors,
        reasons,
        statuses,
        edges,
        bytes,
        path: PathStats {
            duplicates: f[0],
            reordered: f[1],
            forward_lost: f[2],
            backward_lost: f[3],
            unknown_direction_lost,
            ipdv_sum_us: f[4],
            ipdv_pairs: f[5],
        },
        server_time: ServerTime {
            sum_us: f[6],
            count: f[7],
        },
    };
    series.check().map_err(|reason| DecodeError::Inconsistent {
        target: series.target.name.clone(),
        metric: series.metric.name().to_string(),
        reason,
    })?;
    Ok((series, plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_batch(n_series: usize, values: &[u64]) -> Batch {
        let mut labels = Labels::new();
        labels.insert("phase", "before").unwrap();
        labels.insert("country", "IN").unwrap();
        labels.insert("region", "Mumbai").unwrap();
        let series = (0..n_series)
            .map(|i| {
                let mut s = Series::new(
                    Target {
                        name: format!("dc{i}"),
                        address: "127.0.0.1:4433".into(),
                    },
                    Metric::all().nth(i % 7).unwrap(),
                    Window {
                        start_unix_ms: 1_700_000_000_000,
                        end_unix_ms: 1_700_000_060_000,
                    },
                );
                for v in values {
                    crate::record_clamped(&mut s.histogram, *v);
                }
                s.lost = 2;
                s.errors.insert(ErrorClass::Refused, 3);
                s.sent = s.histogram.len() + 5;
                s.path.duplicates = 1;
                s.path.ipdv_sum_us = 99;
                s.path.ipdv_pairs = 4;
                s.server_time = ServerTime {
                    sum_us: 12,
                    count: 3,
                };
                s.bytes = 1234;
                s
            })
            .collect();
        Batch {
            probe_id: "p-0123456789abcdef".into(),
            sequence: 42,
            campaign: "move-2026".into(),
            labels,
            created_unix_ms: 1_700_000_061_000,
            dropped_batches: 0,
            traces: Vec::new(),
            series,
        }
    }

    #[test]
    fn batch_round_trips() {
        let b = sample_batch(3, &[10, 200, 3000, 3000]);
        let bytes = b.encode().unwrap();
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
    }

    #[test]
    fn decoding_for_a_store_gives_each_histogram_plain() {
        let b = sample_batch(3, &[10, 200, 3000]);
        let bytes = b.encode().unwrap();
        let (back, plain) = Batch::decode_with_plain_histograms(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(plain.len(), 3);
        for (s, p) in b.series.iter().zip(plain) {
            let mut want = Vec::new();
            crate::encode_histogram_plain(&s.histogram, &mut want).unwrap();
            assert_eq!(p, want);
        }
    }

    #[test]
    fn reasons_and_statuses_round_trip_in_version_2() {
        let mut b = sample_batch(2, &[10, 200]);
        // Plain series are written as version 1, which older collectors read.
        assert_eq!(b.encode().unwrap()[4], 1);
        let s = &mut b.series[0];
        s.errors.insert(ErrorClass::Tls, 2);
        s.sent += 2;
        s.reasons.insert(Reason::TlsExpired, 1);
        s.reasons.insert(Reason::TlsNameMismatch, 1);
        s.statuses.insert(200, 2);
        s.statuses.insert(503, 1);
        let bytes = b.encode().unwrap();
        assert_eq!(bytes[4], 2);
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
        for n in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn losses_of_unknown_direction_round_trip_in_version_3() {
        let mut b = sample_batch(2, &[10, 200]);
        b.series[0].path.forward_lost = 1;
        // Without them the batch stays at version 1 for older collectors.
        assert_eq!(b.encode().unwrap()[4], 1);
        b.series[1].path.unknown_direction_lost = 40;
        let bytes = b.encode().unwrap();
        assert_eq!(bytes[4], 3);
        let back = Batch::decode(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.series[1].path.unknown_direction_lost, 40);
        assert_eq!(back.series[1].path.backward_lost, 0);
        for n in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    fn sample_trace() -> PathTrace {
        let hop = |ttl, address: Option<&str>, rtts: &[Option<u64>]| HopRecord {
            ttl,
            address: address.map(|a| a.parse().unwrap()),
            rtts: rtts.iter().map(|r| r.map(Duration::from_micros)).collect(),
        };
        PathTrace {
            target: Target {
                name: "sin".into(),
                address: "[2001:db8::9]:4433".into(),
            },
            started_unix_ms: 1_700_000_001_234,
            trace: Trace {
                hops: vec![
                    hop(1, Some("198.18.0.1"), &[Some(0), Some(5_000), None]),
                    hop(2, None, &[None, None, None]),
                    hop(3, Some("2001:db8::9"), &[Some(35_123)]),
                ],
                end: End::Reached,
            },
        }
    }

    #[test]
    fn traces_round_trip_in_version_4_and_only_there() {
        let mut b = sample_batch(2, &[10, 200]);
        b.series[1].path.unknown_direction_lost = 1;
        assert_eq!(b.encode().unwrap()[4], 3, "no traces: version 3 still");
        b.traces.push(sample_trace());
        let bytes = b.encode().unwrap();
        assert_eq!(bytes[4], 4);
        let back = Batch::decode(&bytes).unwrap();
        assert_eq!(back, b);
        let t = &back.traces[0].trace;
        assert_eq!(t.fingerprint(), "198.18.0.1 * 2001:db8::9");
        assert_eq!(
            t.hops[0].rtts[0],
            Some(Duration::ZERO),
            "0 µs is a round trip"
        );
        assert_eq!(t.target_rtt(), Some(Duration::from_micros(35_123)));
        for n in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn cdn_edges_round_trip_in_version_4_bounded() {
        let mut b = sample_batch(1, &[10, 20, 30]);
        b.series[0].statuses.insert(200, 3);
        assert_eq!(b.encode().unwrap()[4], 2);
        for edge in ["cloudfront:BOM78-P1", "cloudfront:BOM78-P1", "fastly:SIN"] {
            b.series[0].count_edge(edge);
        }
        let bytes = b.encode().unwrap();
        assert_eq!(bytes[4], 4);
        let back = Batch::decode(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.series[0].edges["cloudfront:BOM78-P1"], 2);
        // Past MAX_EDGES names, and a name that is no bounded label,
        // count as `other`.
        let mut s = b.series[0].clone();
        s.edges.clear();
        for i in 0..12 {
            s.count_edge(&format!("cloudflare:P{i}"));
        }
        s.count_edge("bad name, with <html>");
        assert_eq!(s.edges.len(), crate::record::MAX_EDGES + 1);
        assert_eq!(s.edges[crate::record::EDGE_OTHER], 5);
        // A decoder refuses a name no probe would send, and more edges
        // than responses.
        let mut b2 = b.clone();
        b2.series[0].edges.insert("<script>".into(), 1);
        let err = Batch::decode(&b2.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a bounded label"), "{err}");
        let mut b3 = b.clone();
        b3.series[0].edges.insert("fastly:LHR".into(), 100);
        let err = Batch::decode(&b3.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("more CDN edges"), "{err}");
    }

    #[test]
    fn a_trace_that_cannot_be_right_is_refused_with_why() {
        for (edit, want) in [
            (
                (|t: &mut PathTrace| t.trace.hops[2].ttl = 2) as fn(&mut PathTrace),
                "hop TTL 2 does not follow",
            ),
            (
                |t: &mut PathTrace| t.trace.hops[1].rtts[0] = Some(Duration::from_millis(1)),
                "round trip but no address",
            ),
        ] {
            let mut b = sample_batch(1, &[10]);
            let mut t = sample_trace();
            edit(&mut t);
            b.traces.push(t);
            let err = Batch::decode(&b.encode().unwrap()).unwrap_err();
            assert!(
                matches!(&err, DecodeError::BadTrace { target, .. } if target == "sin"),
                "{err}"
            );
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn a_reason_beyond_its_class_count_is_refused() {
        let mut b = sample_batch(1, &[10]);
        b.series[0].reasons.insert(Reason::DnsNoSuchName, 1);
        let bytes = b.encode().unwrap();
        let err = Batch::decode(&bytes).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Inconsistent { reason, .. } if reason.contains("`dns`")),
            "{err}"
        );
    }

    #[test]
    fn statuses_must_be_http_codes_and_no_more_than_attempts() {
        let mut b = sample_batch(1, &[10]);
        b.series[0].statuses.insert(42, 1);
        let err = Batch::decode(&b.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("HTTP status 42"), "{err}");
        let mut b = sample_batch(1, &[10]);
        let sent = b.series[0].sent;
        b.series[0].statuses.insert(200, sent + 1);
        let err = Batch::decode(&b.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("more HTTP statuses"), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample_batch(2, &[10, 20]).encode().unwrap();
        for n in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn trailing_bytes_and_wrong_version_are_refused() {
        let mut bytes = sample_batch(1, &[10]).encode().unwrap();
        bytes.push(0);
        assert_eq!(Batch::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
        bytes.pop();
        bytes[4] = 9;
        assert_eq!(
            Batch::decode(&bytes),
            Err(DecodeError::UnsupportedVersion(9))
        );
        bytes[4] = 0;
        assert_eq!(
            Batch::decode(&bytes),
            Err(DecodeError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn inconsistent_counts_are_refused() {
        let mut b = sample_batch(1, &[10]);
        b.series[0].sent += 1;
        let err = Batch::decode(&b.encode().unwrap()).unwrap_err();
        assert!(matches!(err, DecodeError::Inconsistent { .. }), "{err}");
        let mut b = sample_batch(1, &[10]);
        b.series[0].window.end_unix_ms = b.series[0].window.start_unix_ms;
        assert!(Batch::decode(&b.encode().unwrap()).is_err());
    }

    #[test]
    fn huge_declared_counts_are_refused_without_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        let mut w = Writer(&mut bytes);
        w.string("p");
        w.varint(1);
        w.string("c");
        w.varint(0);
        w.varint(0);
        w.varint(0);
        w.varint(u64::MAX);
        assert!(matches!(
            Batch::decode(&bytes),
            Err(DecodeError::TooLarge {
                what: "series count",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Batch::decode(&bytes);
        }

        #[test]
        fn mutated_batches_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
        ) {
            let mut bytes = sample_batch(2, &[5, 50, 500]).encode().unwrap();
            for (i, b) in flips {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            let _ = Batch::decode(&bytes);
        }

        #[test]
        fn any_values_round_trip(values in proptest::collection::vec(1u64..4_000_000_000, 0..64), n in 0usize..4) {
            let b = sample_batch(n, &values);
            prop_assert_eq!(Batch::decode(&b.encode().unwrap()).unwrap(), b);
        }
    }
}
