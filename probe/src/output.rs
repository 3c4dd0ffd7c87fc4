//! Local output: `series.csv`, HdrHistogram interval logs, JSON lines and the
//! summary table. Renderers are functions from data to bytes, so each format
//! is tested without files; [`LocalOutput`] only puts bytes in files.

use serde::Serialize;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use vantage_wire::{
    hlog_header, hlog_interval, rfc3339_ms, Batch, HlogError, Labels, Series, Summary,
};

/// Version of the CSV columns and the JSON object, bumped on any change.
pub const SERIES_SCHEMA: &str = "vantage.series/5";

/// One series as a flat row: the columns of `series.csv` and the fields of
/// each `--json` line. Values are in the metric's `unit`: µs for every
/// latency (hence the `_us` suffix); for `photosync_goodput` (unit `kbps`)
/// the same columns hold kbit/s, so one table holds every metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesRow {
    /// Probe id.
    pub probe_id: String,
    /// Batch sequence number; 0 when the window was written before one
    /// could be stored (a full state directory): the collector gets it
    /// with its number later.
    pub sequence: u64,
    /// Campaign.
    pub campaign: String,
    /// Phase label.
    pub phase: String,
    /// Country label.
    pub country: String,
    /// Region label.
    pub region: String,
    /// Network label.
    pub network: String,
    /// ISP/ASN label.
    pub asn: String,
    /// Device label.
    pub device: String,
    /// Other labels, `k=v;k=v`.
    pub labels: String,
    /// Target (data centre) name.
    pub target: String,
    /// Target address.
    pub target_address: String,
    /// Metric name.
    pub metric: String,
    /// Unit of the value columns: `us`, or `kbps` for throughput metrics.
    pub unit: String,
    /// Window start, RFC 3339 UTC.
    pub window_start: String,
    /// Window end, RFC 3339 UTC.
    pub window_end: String,
    /// Successful samples.
    pub count: u64,
    /// Attempts.
    pub sent: u64,
    /// Attempts without an answer in time.
    pub lost: u64,
    /// Attempts failed otherwise.
    pub errors: u64,
    /// Failures by class, `class=n;class=n`.
    pub error_classes: String,
    /// Minimum, µs.
    pub min_us: Option<u64>,
    /// Median, µs.
    pub p50_us: Option<u64>,
    /// 90th percentile, µs.
    pub p90_us: Option<u64>,
    /// 99th percentile, µs.
    pub p99_us: Option<u64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<u64>,
    /// Maximum, µs.
    pub max_us: Option<u64>,
    /// Mean, µs.
    pub mean_us: Option<f64>,
    /// Mean responder-reported processing time, µs.
    pub server_mean_us: Option<f64>,
    /// Mean delay variation between consecutive packets (udp_rtt), µs.
    pub jitter_us: Option<f64>,
    /// Duplicated replies (udp_rtt).
    pub duplicates: u64,
    /// Reordered replies (udp_rtt).
    pub reordered: u64,
    /// Losses on the way out (udp_rtt).
    pub forward_lost: u64,
    /// Losses on the way back (udp_rtt).
    pub backward_lost: u64,
    /// Losses whose direction cannot be told (udp_rtt against a reflector
    /// whose sequence numbers mirror the probe's, as a stateless one's do).
    pub unknown_direction_lost: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Failures by finer reason, `reason=n;reason=n`; part of `error_classes`.
    pub reasons: String,
    /// HTTP responses by status code, `code=n;code=n`.
    pub statuses: String,
    /// HTTP responses by the CDN edge that named itself, `provider:POP=n;…`.
    pub edges: String,
}

/// A rendering that failed: a row that did not serialize, or a histogram
/// the log format cannot carry.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// CSV.
    #[error("series CSV: {0}")]
    Csv(#[from] csv::Error),
    /// JSON.
    #[error("series JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// HdrHistogram log.
    #[error(transparent)]
    Hlog(#[from] HlogError),
}

impl SeriesRow {
    /// The row of one series of a batch.
    pub fn new(batch: &Batch, s: &Series) -> Self {
        let label = |k| batch.labels.get(k).unwrap_or("").to_string();
        let sum = Summary::of(&s.histogram);
        SeriesRow {
            probe_id: batch.probe_id.clone(),
            sequence: batch.sequence,
            campaign: batch.campaign.clone(),
            phase: label(Labels::PHASE),
            country: label(Labels::COUNTRY),
            region: label(Labels::REGION),
            network: label(Labels::NETWORK),
            asn: label(Labels::ASN),
            device: label(Labels::DEVICE),
            labels: batch.labels.extra_joined(),
            target: s.target.name.clone(),
            target_address: s.target.address.clone(),
            metric: s.metric.name().to_string(),
            unit: s.metric.unit().suffix().to_string(),
            window_start: rfc3339_ms(s.window.start_unix_ms),
            window_end: rfc3339_ms(s.window.end_unix_ms),
            count: sum.count,
            sent: s.sent,
            lost: s.lost,
            errors: s.error_total(),
            error_classes: vantage_wire::counts_text(&s.errors),
            min_us: sum.min,
            p50_us: sum.p50,
            p90_us: sum.p90,
            p99_us: sum.p99,
            p999_us: sum.p999,
            max_us: sum.max,
            mean_us: sum.mean,
            server_mean_us: s.server_time.mean_us().map(|v| (v * 10.0).round() / 10.0),
            jitter_us: s.path.jitter_us().map(|v| (v * 10.0).round() / 10.0),
            duplicates: s.path.duplicates,
            reordered: s.path.reordered,
            forward_lost: s.path.forward_lost,
            backward_lost: s.path.backward_lost,
            unknown_direction_lost: s.path.unknown_direction_lost,
            bytes: s.bytes,
            reasons: vantage_wire::counts_text(&s.reasons),
            statuses: vantage_wire::counts_text(&s.statuses),
            edges: vantage_wire::counts_text(&s.edges),
        }
    }
}

/// Renders rows as CSV, with the header row when `header` is set.
pub fn render_csv(rows: &[SeriesRow], header: bool) -> Result<Vec<u8>, RenderError> {
    render_rows(rows, header)
}

/// Any rows as CSV, a column per field, the header row if `header`.
fn render_rows<T: Serialize>(rows: &[T], header: bool) -> Result<Vec<u8>, RenderError> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(header)
        .from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner()
        .map_err(|e| RenderError::Csv(e.into_error().into()))
}

/// One hop of a batch's trace as a row of `traces.csv`: a trace is as
/// many rows as hops it probed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HopRow {
    /// Probe id.
    pub probe_id: String,
    /// Batch sequence number (0 as in [`SeriesRow`]).
    pub sequence: u64,
    /// Phase label.
    pub phase: String,
    /// Country label.
    pub country: String,
    /// Data-centre name.
    pub target: String,
    /// The address traced.
    pub target_address: String,
    /// When the trace was meant to start, RFC 3339 UTC.
    pub started: String,
    /// How it ended: `reached`, `unreachable`, `silent` or `max_hops`.
    pub end: String,
    /// The hop's TTL.
    pub ttl: u8,
    /// Who answered; empty for a hop that answered nothing.
    pub address: String,
    /// Each probe's round trip in µs, space-separated, `*` if unanswered.
    pub rtts_us: String,
}

/// Every hop of every trace `batch` carries, as rows.
pub fn hop_rows(batch: &Batch) -> Vec<HopRow> {
    trace_hop_rows(
        &batch.probe_id,
        batch.sequence,
        &batch.labels,
        &batch.traces,
    )
}

/// Every hop of `traces`, of batch `sequence` of `probe_id` labelled
/// `labels`, as rows (what `vantage export --format traces` writes too).
pub fn trace_hop_rows(
    probe_id: &str,
    sequence: u64,
    labels: &Labels,
    traces: &[vantage_wire::trace::PathTrace],
) -> Vec<HopRow> {
    let label = |k: &str| labels.get(k).unwrap_or("").to_string();
    traces
        .iter()
        .flat_map(|t| t.trace.hops.iter().map(move |h| (t, h)))
        .map(|(t, h)| HopRow {
            probe_id: probe_id.to_string(),
            sequence,
            phase: label(Labels::PHASE),
            country: label(Labels::COUNTRY),
            target: t.target.name.clone(),
            target_address: t.target.address.clone(),
            started: rfc3339_ms(t.started_unix_ms),
            end: t.trace.end.name().to_string(),
            ttl: h.ttl,
            address: h.address.map(|a| a.to_string()).unwrap_or_default(),
            rtts_us: h
                .rtts
                .iter()
                .map(|r| r.map_or("*".to_string(), |d| d.as_micros().to_string()))
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect()
}

/// Renders hop rows as CSV, with the header row if `header`.
pub fn render_hops_csv(rows: &[HopRow], header: bool) -> Result<Vec<u8>, RenderError> {
    render_rows(rows, header)
}

/// Renders one row as a JSON line with its schema.
pub fn render_json_line(row: &SeriesRow) -> Result<String, RenderError> {
    #[derive(Serialize)]
    struct Line<'a> {
        schema: &'static str,
        #[serde(flatten)]
        row: &'a SeriesRow,
    }
    let mut s = serde_json::to_string(&Line {
        schema: SERIES_SCHEMA,
        row,
    })?;
    s.push('\n');
    Ok(s)
}

/// The header of a series' HdrHistogram interval log: timestamps are
/// absolute (BaseTime 0), values in the metric's unit (µs with
/// `Interval_Max` in ms for latencies; kbit/s and round trips per minute
/// as they are).
pub fn render_hlog_header(series: &Series) -> Result<Vec<u8>, RenderError> {
    let comment = format!(
        "Vantage {} to {} ({})",
        series.metric, series.target.name, series.target.address
    );
    Ok(hlog_header(
        &comment,
        series.metric.unit(),
        series.window.start_unix_ms,
    )?)
}

/// One interval line of an HdrHistogram log for a series.
pub fn render_hlog_interval(series: &Series) -> Result<Vec<u8>, RenderError> {
    Ok(hlog_interval(
        &series.histogram,
        series.metric.unit(),
        series.window,
        series.metric.name(),
    )?)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The summary table: one line per (target, metric), latencies in ms,
/// throughput in Mbit/s (marked in each cell).
pub fn render_table<'a>(
    series: impl IntoIterator<Item = &'a Series>,
    note: Option<&str>,
) -> String {
    let mut out = String::new();
    if let Some(note) = note {
        out.push_str(note);
        out.push('\n');
    }
    out.push_str(&format!(
        "{:<12} {:<18} {:>7} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
        "target",
        "metric",
        "count",
        "lost",
        "errors",
        "loss%",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    ));
    for s in series {
        let h = &s.histogram;
        // Throughput cells carry their unit: the columns are ms otherwise.
        let value = |v: u64| match s.metric.unit() {
            vantage_wire::Unit::Microseconds => ms(v),
            vantage_wire::Unit::KilobitsPerSecond => format!("{:.1}Mb/s", v as f64 / 1000.0),
            vantage_wire::Unit::RoundTripsPerMinute => format!("{v}RPM"),
        };
        let pct = |q: f64| {
            if h.is_empty() {
                "-".to_string()
            } else {
                value(h.value_at_quantile(q))
            }
        };
        let loss = if s.sent == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1}",
                100.0 * (s.lost + s.error_total()) as f64 / s.sent as f64
            )
        };
        out.push_str(&format!(
            "{:<12} {:<18} {:>7} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
            s.target.name,
            s.metric.name(),
            h.len(),
            s.lost,
            s.error_total(),
            loss,
            pct(0.5),
            pct(0.9),
            pct(0.99),
            if h.is_empty() {
                "-".to_string()
            } else {
                value(h.max())
            },
        ));
    }
    out
}

/// Why local output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file could not be written.
    #[error("writing {path}: {source} (check free space and permissions; earlier windows are already on disk)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// A batch did not render.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// Files under `--out DIR`: `series.csv` (appended to, header once),
/// `hlog/TARGET.METRIC.hlog` per (target, metric) and, once a trace is
/// made, `traces.csv` (a row per hop).
#[derive(Debug)]
pub struct LocalOutput {
    dir: PathBuf,
    csv: File,
    hlogs_started: HashSet<PathBuf>,
}

impl LocalOutput {
    /// Opens (creating if needed) the output directory and `series.csv`.
    /// `now` names a `series.csv` of another version's columns when it is
    /// kept aside.
    pub fn open(dir: &Path, now: SystemTime) -> Result<Self, OutputError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutputError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join("hlog")).map_err(err(dir))?;
        let csv_path = dir.join("series.csv");
        let mut csv = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&csv_path)
            .map_err(err(&csv_path))?;
        let header = header_line();
        let mut head = Vec::with_capacity(header.len());
        Read::by_ref(&mut csv)
            .take(header.len() as u64)
            .read_to_end(&mut head)
            .map_err(err(&csv_path))?;
        if !head.is_empty() && head != header.as_bytes() {
            // Another version's columns: appending would mix two layouts in
            // one file. Keep that file whole under a new name and start anew.
            let kept = dir.join(format!(
                "series.{}.csv",
                now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
            ));
            std::fs::rename(&csv_path, &kept).map_err(err(&csv_path))?;
            tracing::warn!(kept = %kept.display(), "series.csv had other columns (an earlier version's); it was kept under a new name and a new series.csv begun");
            csv = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&csv_path)
                .map_err(err(&csv_path))?;
        }
        if csv.metadata().map_err(err(&csv_path))?.len() == 0 {
            // csv writes a header only with a first row: render it from an empty one.
            csv.write_all(header.as_bytes()).map_err(err(&csv_path))?;
        }
        Ok(LocalOutput {
            dir: dir.to_path_buf(),
            csv,
            hlogs_started: HashSet::new(),
        })
    }

    /// Path of `series.csv`.
    pub fn csv_path(&self) -> PathBuf {
        self.dir.join("series.csv")
    }

    /// Appends a batch's rows and histogram intervals, flushed to disk.
    pub fn write_batch(&mut self, batch: &Batch) -> Result<(), OutputError> {
        let rows: Vec<_> = batch
            .series
            .iter()
            .map(|s| SeriesRow::new(batch, s))
            .collect();
        let csv_path = self.csv_path();
        let bytes = render_csv(&rows, false)?;
        self.csv
            .write_all(&bytes)
            .and_then(|_| self.csv.sync_data())
            .map_err(|source| OutputError::Io {
                path: csv_path,
                source,
            })?;
        self.write_traces(batch)?;
        for s in &batch.series {
            let name = format!("{}.{}.hlog", sanitize(&s.target.name), s.metric.name());
            let path = self.dir.join("hlog").join(name);
            let fresh = !self.hlogs_started.contains(&path) && !path.exists();
            let mut bytes = Vec::new();
            if fresh {
                bytes.extend_from_slice(&render_hlog_header(s)?);
            }
            bytes.extend_from_slice(&render_hlog_interval(s)?);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&bytes))
                .map_err(|source| OutputError::Io {
                    path: path.clone(),
                    source,
                })?;
            self.hlogs_started.insert(path);
        }
        Ok(())
    }
}

impl LocalOutput {
    /// Appends the batch's hops to `traces.csv`, its header first when the
    /// file is new.
    fn write_traces(&mut self, batch: &Batch) -> Result<(), OutputError> {
        let rows = hop_rows(batch);
        if rows.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("traces.csv");
        let fresh = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let bytes = render_hops_csv(&rows, fresh)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_data()))
            .map_err(|source| OutputError::Io { path, source })
    }
}

fn header_line() -> String {
    let batch = Batch {
        probe_id: String::new(),
        sequence: 0,
        campaign: String::new(),
        labels: Labels::new(),
        created_unix_ms: 0,
        dropped_batches: 0,
        traces: Vec::new(),
        series: Vec::new(),
    };
    let s = Series::new(
        vantage_wire::Target {
            name: String::new(),
            address: String::new(),
        },
        vantage_wire::Metric::UdpRtt,
        vantage_wire::Window {
            start_unix_ms: 0,
            end_unix_ms: 1,
        },
    );
    // Plain strings and numbers into a Vec: this rendering cannot fail.
    let bytes = render_csv(&[SeriesRow::new(&batch, &s)], true).unwrap_or_default();
    let text = String::from_utf8(bytes).unwrap_or_default();
    text.lines()
        .next()
        .map(|l| format!("{l}\n"))
        .unwrap_or_default()
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use std::time::Duration;
    use vantage_wire::{ErrorClass, Metric, Target, Window};

    fn batch() -> Batch {
        let mut labels = Labels::new();
        labels.insert("phase", "before").unwrap();
        labels.insert("country", "MY").unwrap();
        labels.insert("rack", "r7").unwrap();
        let mut s = Series::new(
            Target {
                name: "singapore".into(),
                address: "127.0.0.1:4433".into(),
            },
            Metric::QuicRequest,
            Window {
                start_unix_ms: 1_700_000_040_000,
                end_unix_ms: 1_700_000_100_000,
            },
        );
        for v in [1000, 2000, 3000, 40_000] {
            s.histogram.record(v).unwrap();
        }
        s.errors.insert(ErrorClass::Reset, 1);
        s.errors.insert(ErrorClass::Tls, 1);
        s.reasons.insert(vantage_wire::Reason::TlsExpired, 1);
        s.statuses.insert(200, 4);
        s.lost = 1;
        s.sent = 7;
        Batch {
            probe_id: "p-1".into(),
            sequence: 3,
            campaign: "c".into(),
            labels,
            created_unix_ms: 0,
            dropped_batches: 0,
            traces: Vec::new(),
            series: vec![s],
        }
    }

    #[test]
    fn csv_has_units_in_duration_columns_and_one_row_per_series() {
        let b = batch();
        let rows = vec![SeriesRow::new(&b, &b.series[0])];
        let text = String::from_utf8(render_csv(&rows, true).unwrap()).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        for col in [
            "probe_id",
            "country",
            "target",
            "metric",
            "window_start",
            "count",
            "lost",
            "errors",
            "min_us",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "mean_us",
        ] {
            assert!(
                header.split(',').any(|c| c == col),
                "no column {col} in {header}"
            );
        }
        assert_eq!(header, header_line().trim_end());
        let row = lines.next().unwrap();
        assert!(row.contains("2023-11-14T22:14:00.000Z"), "{row}");
        assert!(row.contains(",reset=1;tls=1,"), "{row}");
        assert!(row.ends_with(",tls_expired=1,200=4,"), "{row}");
        assert!(row.contains(",rack=r7,"), "{row}");
        assert_eq!(rows[0].p50_us, Some(2000));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn json_lines_carry_the_schema() {
        let b = batch();
        let line = render_json_line(&SeriesRow::new(&b, &b.series[0])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["schema"], SERIES_SCHEMA);
        assert_eq!(v["metric"], "quic_request");
        assert_eq!(v["count"], 4);
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn hlog_reads_back_with_the_hdrhistogram_log_reader() {
        let b = batch();
        let mut log = render_hlog_header(&b.series[0]).unwrap();
        log.extend(render_hlog_interval(&b.series[0]).unwrap());
        log.extend(render_hlog_interval(&b.series[0]).unwrap());
        let mut intervals = 0;
        for entry in IntervalLogIterator::new(&log) {
            match entry.expect("log parses") {
                LogEntry::Interval(h) => {
                    intervals += 1;
                    assert_eq!(h.start_timestamp(), Duration::from_secs(1_700_000_040));
                    assert_eq!(h.duration(), Duration::from_secs(60));
                    assert_eq!(
                        h.tag().map(|t| t.as_str().to_string()),
                        Some("quic_request".into())
                    );
                    let bytes = base64_decode(h.encoded_histogram());
                    let back: hdrhistogram::Histogram<u64> =
                        Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                    assert_eq!(back, b.series[0].histogram);
                }
                LogEntry::StartTime(t) => assert_eq!(t, Duration::from_secs(1_700_000_040)),
                LogEntry::BaseTime(t) => assert_eq!(t, Duration::ZERO),
            }
        }
        assert_eq!(intervals, 2);
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|c| *c != b'=') {
            acc = (acc << 6) | A.iter().position(|a| *a == c).unwrap() as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn json_lines_match_the_checked_in_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/series.schema.json")).unwrap();
        let b = batch();
        let line: serde_json::Value =
            serde_json::from_str(&render_json_line(&SeriesRow::new(&b, &b.series[0])).unwrap())
                .unwrap();
        let mut keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        let mut props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        keys.sort();
        props.sort();
        assert_eq!(keys, props, "docs/series.schema.json and SeriesRow differ");
        assert_eq!(schema["properties"]["schema"]["const"], SERIES_SCHEMA);
        // Every metric the probe can write, and no other.
        let listed: Vec<&str> = schema["properties"]["metric"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let known: Vec<&str> = vantage_wire::Metric::all().map(|m| m.name()).collect();
        assert_eq!(listed, known, "docs/series.schema.json's metric enum");
    }

    #[test]
    fn table_shows_loss_and_percentiles_in_ms() {
        let b = batch();
        let t = render_table(&b.series, Some("note"));
        assert!(t.starts_with("note\n"));
        let line = t.lines().nth(2).unwrap();
        assert!(
            line.contains("singapore") && line.contains("quic_request"),
            "{line}"
        );
        assert!(line.contains("42.9"), "3 of 7 failed: {line}");
        assert!(line.contains("2.000"), "p50 in ms: {line}");
    }

    #[test]
    fn local_output_appends_without_repeating_the_header() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let mut out = LocalOutput::open(dir.path(), SystemTime::now()).unwrap();
            out.write_batch(&batch()).unwrap();
        }
        let csv = std::fs::read_to_string(dir.path().join("series.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        let hlog =
            std::fs::read_to_string(dir.path().join("hlog/singapore.quic_request.hlog")).unwrap();
        assert_eq!(hlog.matches("StartTime:").count(), 1, "{hlog}");
    }

    #[test]
    fn a_series_csv_with_other_columns_is_kept_aside_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let old = "probe_id,sequence,count\np1,1,3\n";
        std::fs::write(dir.path().join("series.csv"), old).unwrap();
        let mut out = LocalOutput::open(dir.path(), SystemTime::now()).unwrap();
        out.write_batch(&batch()).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("series.csv")).unwrap();
        assert!(csv.starts_with(&header_line()), "{csv}");
        assert_eq!(csv.lines().count(), 2, "{csv}");
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "series.csv" && e.path().is_file())
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::read_to_string(kept[0].path()).unwrap(), old);
    }
}
