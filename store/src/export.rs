//! Renderings of merged groups: CSV and JSON lines (one row per group with
//! count, loss and percentiles) and an HdrHistogram interval log of the
//! merged histograms. Functions from data to bytes.

use crate::select::Group;
use serde::Serialize;
use vantage_wire::{hlog_header, hlog_interval, rfc3339_ms, HlogError, Summary, Unit};

/// Version of the export columns.
pub const EXPORT_SCHEMA: &str = "vantage.group/2";

/// One merged group as a row. Durations in µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupRow {
    /// `key=value;…` of the grouping.
    pub group: String,
    /// Metric of the group (when grouped by metric, else of its first series).
    pub metric: String,
    /// Unit of the value columns: `us`, or `kbps` for throughput metrics.
    pub unit: String,
    /// Probes that contributed.
    pub probes: usize,
    /// Series merged.
    pub series: usize,
    /// Earliest window start, RFC 3339.
    pub window_start: String,
    /// Latest window end, RFC 3339.
    pub window_end: String,
    /// Samples.
    pub count: u64,
    /// Attempts.
    pub sent: u64,
    /// Lost attempts.
    pub lost: u64,
    /// Failed attempts.
    pub errors: u64,
    /// (lost + errors) / sent.
    pub loss_rate: Option<f64>,
    /// Percentiles and extremes, in `unit` (µs for latencies).
    pub min_us: Option<u64>,
    /// Median.
    pub p50_us: Option<u64>,
    /// 90th percentile.
    pub p90_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// 99.9th percentile.
    pub p999_us: Option<u64>,
    /// Maximum.
    pub max_us: Option<u64>,
    /// Mean.
    pub mean_us: Option<f64>,
    /// Failures by class, `class=n;class=n`.
    pub error_classes: String,
    /// Failures by finer reason, `reason=n;reason=n`; part of `error_classes`.
    pub reasons: String,
    /// HTTP responses by status code, `code=n;code=n`.
    pub statuses: String,
    /// HTTP responses by the CDN edge that named itself, `provider:POP=n;…`.
    pub edges: String,
}

/// An export that could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A row did not serialize as CSV.
    #[error("CSV export: {0}")]
    Csv(#[from] csv::Error),
    /// A row did not serialize as JSON.
    #[error("JSON export: {0}")]
    Json(#[from] serde_json::Error),
    /// A histogram did not serialize into the log.
    #[error(transparent)]
    Hlog(#[from] HlogError),
    /// The groups hold metrics in different units; an HdrHistogram log has
    /// one.
    #[error("the groups hold metrics in different units ({0}), and an HdrHistogram log holds one: narrow --select to metrics of one unit (latencies, photosync_goodput or responsiveness_rpm)")]
    MixedUnits(String),
}

fn group_text(keys: &[String], g: &Group) -> String {
    keys.iter()
        .zip(&g.key)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

impl GroupRow {
    /// The row of a group, named by its grouping keys.
    pub fn new(keys: &[String], g: &Group) -> Self {
        let s = &g.merged;
        let sum = Summary::of(&s.histogram);
        GroupRow {
            group: group_text(keys, g),
            metric: s.metric.name().to_string(),
            unit: s.metric.unit().suffix().to_string(),
            probes: g.probes.len(),
            series: g.series,
            window_start: rfc3339_ms(s.window.start_unix_ms),
            window_end: rfc3339_ms(s.window.end_unix_ms),
            count: sum.count,
            sent: s.sent,
            lost: s.lost,
            errors: s.error_total(),
            loss_rate: (s.sent > 0).then(|| (s.lost + s.error_total()) as f64 / s.sent as f64),
            min_us: sum.min,
            p50_us: sum.p50,
            p90_us: sum.p90,
            p99_us: sum.p99,
            p999_us: sum.p999,
            max_us: sum.max,
            mean_us: sum.mean,
            error_classes: vantage_wire::counts_text(&s.errors),
            reasons: vantage_wire::counts_text(&s.reasons),
            statuses: vantage_wire::counts_text(&s.statuses),
            edges: vantage_wire::counts_text(&s.edges),
        }
    }
}

/// CSV with a header row.
pub fn render_csv(rows: &[GroupRow]) -> Result<Vec<u8>, ExportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner()
        .map_err(|e| ExportError::Csv(e.into_error().into()))
}

/// One JSON object per line, with the schema.
pub fn render_json(rows: &[GroupRow]) -> Result<Vec<u8>, ExportError> {
    #[derive(Serialize)]
    struct Line<'a> {
        schema: &'static str,
        #[serde(flatten)]
        row: &'a GroupRow,
    }
    let mut out = Vec::new();
    for row in rows {
        serde_json::to_writer(
            &mut out,
            &Line {
                schema: EXPORT_SCHEMA,
                row,
            },
        )?;
        out.push(b'\n');
    }
    Ok(out)
}

/// An HdrHistogram interval log: one interval per group, tagged with the
/// group, timestamps absolute, values in the groups' one unit (a log has
/// one divisor, so groups of metrics in different units are refused).
pub fn render_hlog(keys: &[String], groups: &[Group]) -> Result<Vec<u8>, ExportError> {
    let start = groups
        .iter()
        .map(|g| g.merged.window.start_unix_ms)
        .min()
        .unwrap_or(0);
    let units: std::collections::BTreeSet<&str> = groups
        .iter()
        .map(|g| g.merged.metric.unit().suffix())
        .collect();
    if units.len() > 1 {
        return Err(ExportError::MixedUnits(
            units.into_iter().collect::<Vec<_>>().join(", "),
        ));
    }
    let unit = groups
        .first()
        .map_or(Unit::Microseconds, |g| g.merged.metric.unit());
    let mut out = hlog_header("Vantage export: merged histograms", unit, start)?;
    for g in groups {
        let s = &g.merged;
        out.extend(hlog_interval(
            &s.histogram,
            unit,
            s.window,
            &group_text(keys, g),
        )?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_wire::{ErrorClass, Metric, Reason, Series, Target, Window};

    #[test]
    fn rows_carry_failures_by_class_and_reason_and_statuses_by_code() {
        let mut s = Series::new(
            Target {
                name: "sg".into(),
                address: "a".into(),
            },
            Metric::HttpTotal,
            Window {
                start_unix_ms: 0,
                end_unix_ms: 60_000,
            },
        );
        s.histogram.record(1500).unwrap();
        s.errors.insert(ErrorClass::Tls, 2);
        s.errors.insert(ErrorClass::ServerError, 1);
        s.reasons.insert(Reason::TlsNameMismatch, 2);
        s.statuses.insert(200, 1);
        s.statuses.insert(503, 1);
        s.count_edge("cloudflare:SIN");
        s.count_edge("cloudflare:SIN");
        s.sent = 4;
        let group = Group {
            key: vec!["IN".into()],
            merged: s,
            probes: ["p1".to_string()].into(),
            series: 1,
        };
        let row = GroupRow::new(&["country".into()], &group);
        assert_eq!(row.errors, 3);
        assert_eq!(row.error_classes, "tls=2;server_error=1");
        assert_eq!(row.reasons, "tls_name_mismatch=2");
        assert_eq!(row.statuses, "200=1;503=1");
        assert_eq!(row.edges, "cloudflare:SIN=2");
        let csv = String::from_utf8(render_csv(&[row]).unwrap()).unwrap();
        let header = csv.lines().next().unwrap();
        assert!(
            header.ends_with(",error_classes,reasons,statuses,edges"),
            "{header}"
        );
        let json =
            String::from_utf8(render_json(&[GroupRow::new(&["country".into()], &group)]).unwrap())
                .unwrap();
        assert!(json.contains("\"schema\":\"vantage.group/2\""), "{json}");
    }

    fn group_of(metric: Metric, value: u64) -> Group {
        let mut s = Series::new(
            Target {
                name: "sg".into(),
                address: "a".into(),
            },
            metric,
            Window {
                start_unix_ms: 0,
                end_unix_ms: 60_000,
            },
        );
        s.histogram.record(value).unwrap();
        s.sent = 1;
        Group {
            key: vec![metric.name().into()],
            merged: s,
            probes: ["p1".to_string()].into(),
            series: 1,
        }
    }

    #[test]
    fn the_hlog_names_its_unit_and_refuses_to_mix_units() {
        let keys = ["metric".to_string()];
        let goodput = render_hlog(&keys, &[group_of(Metric::PhotosyncGoodput, 3129)]).unwrap();
        let text = String::from_utf8_lossy(&goodput);
        assert!(text.contains("values in kbit/s"), "{text}");
        assert!(text.contains("MaxValueDivisor 1)"), "{text}");
        assert!(!text.contains("microseconds"), "{text}");
        let latency = render_hlog(&keys, &[group_of(Metric::QuicRequest, 3129)]).unwrap();
        assert!(String::from_utf8_lossy(&latency).contains("values in microseconds"));
        let mixed = render_hlog(
            &keys,
            &[
                group_of(Metric::QuicRequest, 3129),
                group_of(Metric::PhotosyncGoodput, 3129),
            ],
        );
        assert!(
            matches!(&mixed, Err(ExportError::MixedUnits(u)) if u == "kbps, us"),
            "{mixed:?}"
        );
    }
}
