//! The live view of what the fleet measures, for a dashboard watched during
//! a cut-over: every stored batch's latency goes into Prometheus histograms
//! per (campaign, country, target, metric, phase), and its goodput and
//! responsiveness into gauges per probe. `rate()` over the histograms gives
//! the recent windows' percentiles; the store stays the record.
//!
//! Cardinality is bounded: at most [`MAX_LIVE_SERIES`] label sets per
//! family. A batch that would add more is still stored; its series are
//! counted as left out of `/metrics`, never silently dropped.

use crate::metrics::counter;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use vantage_wire::{Batch, Unit};

/// Classic bucket edges, in seconds: 1 ms to 10 s, with edges at 50, 100,
/// 200 and 350 ms so the story's thresholds (350 ms lower in India) read
/// straight off the buckets.
pub const LATENCY_EDGES_S: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Most label sets each live family holds.
pub const MAX_LIVE_SERIES: usize = 2_000;

/// Native histogram schema 3: eight buckets per doubling (about 9 % wide),
/// so from 10 µs to 60 s at most ~180 buckets a series.
const NATIVE_SCHEMA: i8 = 3;

/// Where a latency series belongs on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveKey {
    /// Campaign.
    pub campaign: String,
    /// The probe's `country` label, or empty.
    pub country: String,
    /// The data centre measured.
    pub target: String,
    /// The metric's name.
    pub metric: &'static str,
    /// The probe's `phase` label, or empty.
    pub phase: String,
}

impl LiveKey {
    fn labels(&self) -> [(&'static str, &str); 5] {
        [
            ("campaign", &self.campaign),
            ("country", &self.country),
            ("target", &self.target),
            ("metric", self.metric),
            ("phase", &self.phase),
        ]
    }
}

/// Where a gauge belongs: a latency key's place, for one probe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GaugeKey {
    campaign: String,
    country: String,
    target: String,
    phase: String,
    probe: String,
}

impl GaugeKey {
    fn labels(&self) -> [(&'static str, &str); 5] {
        [
            ("campaign", &self.campaign),
            ("country", &self.country),
            ("target", &self.target),
            ("phase", &self.phase),
            ("probe", &self.probe),
        ]
    }
}

/// One series of a batch as the dashboard takes it, made before the batch
/// goes to the store and applied once it is stored.
#[derive(Debug, Clone)]
pub struct LiveSeries {
    key: LiveKey,
    probe: String,
    unit: Unit,
    /// Distinct values (seconds, kbit/s or RPM) and how often each was seen.
    values: Vec<(f64, u64)>,
    sent: u64,
    lost: u64,
    failed: u64,
}

/// A batch's series for the dashboard.
pub fn live_series(batch: &Batch) -> Vec<LiveSeries> {
    let label = |k: &str| batch.labels.get(k).unwrap_or_default().to_string();
    batch
        .series
        .iter()
        .map(|s| {
            let unit = s.metric.unit();
            let scale = match unit {
                Unit::Microseconds => 1e-6,
                Unit::KilobitsPerSecond | Unit::RoundTripsPerMinute => 1.0,
            };
            // Each HdrHistogram bucket as its middle value (within 0.1 %).
            let h = &s.histogram;
            let values = h
                .iter_recorded()
                .map(|v| {
                    let middle = h.median_equivalent(v.value_iterated_to());
                    (middle as f64 * scale, v.count_at_value())
                })
                .collect();
            LiveSeries {
                key: LiveKey {
                    campaign: batch.campaign.clone(),
                    country: label("country"),
                    target: s.target.name.clone(),
                    metric: s.metric.name(),
                    phase: label("phase"),
                },
                probe: batch.probe_id.clone(),
                unit,
                values,
                sent: s.sent,
                lost: s.lost,
                failed: s.errors.values().sum(),
            }
        })
        .collect()
}

/// Attempts, losses and failures of one latency key.
#[derive(Debug, Default, Clone, Copy)]
struct Attempts {
    sent: u64,
    lost: u64,
    failed: u64,
}

/// One of a latency key's attempt counts.
type AttemptCount = fn(&Attempts) -> u64;

/// The live families.
#[derive(Debug, Default)]
pub struct Live {
    latency: Mutex<BTreeMap<LiveKey, (Histogram, Attempts)>>,
    goodput: Mutex<BTreeMap<GaugeKey, f64>>,
    rpm: Mutex<BTreeMap<GaugeKey, f64>>,
    /// When each campaign's phases begin, Unix ms: the cut-over.
    phase_starts: Mutex<BTreeMap<(String, String), u64>>,
    left_out: AtomicU64,
}

impl Live {
    /// Takes a stored batch's series.
    pub fn record(&self, series: Vec<LiveSeries>) {
        for s in series {
            match s.unit {
                Unit::Microseconds => self.record_latency(s),
                Unit::KilobitsPerSecond => {
                    self.set_gauge(&self.goodput, &s, |kbps| kbps * 1e3 / 8.0)
                }
                Unit::RoundTripsPerMinute => self.set_gauge(&self.rpm, &s, |rpm| rpm),
            }
        }
    }

    fn record_latency(&self, s: LiveSeries) {
        let Ok(mut families) = self.latency.lock() else {
            return;
        };
        if !families.contains_key(&s.key) && families.len() >= MAX_LIVE_SERIES {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (histogram, attempts) = families.entry(s.key).or_insert_with(|| {
            let native = NativeHistogramConfig::with_schema(NATIVE_SCHEMA);
            (
                Histogram::new_classic_and_native(LATENCY_EDGES_S, native),
                Attempts::default(),
            )
        });
        for (v, n) in s.values {
            for _ in 0..n {
                histogram.observe(v);
            }
        }
        attempts.sent += s.sent;
        attempts.lost += s.lost;
        attempts.failed += s.failed;
    }

    /// Sets a gauge to the batch's median, in base units.
    fn set_gauge(
        &self,
        gauges: &Mutex<BTreeMap<GaugeKey, f64>>,
        s: &LiveSeries,
        base: fn(f64) -> f64,
    ) {
        let Some(median) = median(&s.values) else {
            return;
        };
        let Ok(mut gauges) = gauges.lock() else {
            return;
        };
        let key = GaugeKey {
            campaign: s.key.campaign.clone(),
            country: s.key.country.clone(),
            target: s.key.target.clone(),
            phase: s.key.phase.clone(),
            probe: s.probe.clone(),
        };
        if !gauges.contains_key(&key) && gauges.len() >= MAX_LIVE_SERIES {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        gauges.insert(key, base(median));
    }

    /// Keeps when a campaign's phases begin (from a campaign a poll
    /// answered with), for the dashboard's cut-over annotation.
    pub fn phases(&self, campaign: &str, phases: &[vantage_wire::campaign::PhaseSwitch]) {
        let Ok(mut starts) = self.phase_starts.lock() else {
            return;
        };
        for p in phases {
            let key = (campaign.to_string(), p.phase.clone());
            if starts.contains_key(&key) || starts.len() < MAX_LIVE_SERIES {
                starts.insert(key, p.at_unix_ms);
            }
        }
    }

    /// Series left out of `/metrics` by the cardinality bound.
    pub fn left_out(&self) -> u64 {
        self.left_out.load(Ordering::Relaxed)
    }

    /// Writes the live families.
    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Ok(families) = self.latency.lock() {
            let mut family = encoder.encode_descriptor(
                "vantage_latency_seconds",
                "Latency of every stored batch's successful attempts, by campaign, country, target, metric and phase (rate() over it: the recent windows)",
                None,
                MetricType::Histogram,
            )?;
            for (key, (histogram, _)) in families.iter() {
                histogram.encode(family.encode_family(&key.labels())?)?;
            }
            let attempts: [(&str, &str, AttemptCount); 3] = [
                ("vantage_attempts", "Attempts in stored batches", |a| a.sent),
                ("vantage_attempts_lost", "Attempts in stored batches that got no answer before their timeout", |a| a.lost),
                ("vantage_attempts_failed", "Attempts in stored batches that failed otherwise (refused, reset, TLS, HTTP status…)", |a| a.failed),
            ];
            for (name, help, count) in attempts {
                let mut family =
                    encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (key, (_, a)) in families.iter() {
                    counter(family.encode_family(&key.labels())?, count(a))?;
                }
            }
        }
        let gauges = [
            (
                "vantage_goodput_bytes_per_second",
                "Photo-sync goodput of a probe's last stored batch (its median)",
                &self.goodput,
            ),
            (
                "vantage_responsiveness_rpm",
                "Responsiveness (round trips a minute under load) of a probe's last stored batch (its median)",
                &self.rpm,
            ),
        ];
        for (name, help, values) in gauges {
            let Ok(values) = values.lock() else { continue };
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (key, v) in values.iter() {
                family.encode_family(&key.labels())?.encode_gauge(v)?;
            }
        }
        if let Ok(starts) = self.phase_starts.lock() {
            let mut family = encoder.encode_descriptor(
                "vantage_campaign_phase_start_seconds",
                "When a campaign's phase begins, Unix time, as its latest version says (the cut-over, for a dashboard annotation)",
                None,
                MetricType::Gauge,
            )?;
            for ((campaign, phase), at_ms) in starts.iter() {
                family
                    .encode_family(&[("campaign", campaign.as_str()), ("phase", phase.as_str())])?
                    .encode_gauge(&(*at_ms as f64 / 1e3))?;
            }
        }
        let family = encoder.encode_descriptor(
            "vantage_collector_live_series_left_out",
            "Series of stored batches left out of the live families by their bound on label sets",
            None,
            MetricType::Counter,
        )?;
        counter(family, self.left_out())?;
        Ok(())
    }
}

/// The median of values with counts, the lower one at an even split.
fn median(values: &[(f64, u64)]) -> Option<f64> {
    let total: u64 = values.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (v, n) in values {
        seen += n;
        if seen * 2 >= total {
            return Some(*v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::Arc;
    use vantage_wire::{Labels, Metric, Series, Target, Window};

    fn batch(probe: &str, phase: &str, metric: Metric, values_us: &[u64]) -> Batch {
        let mut labels = Labels::new();
        labels.insert("country", "IN").unwrap();
        labels.insert("phase", phase).unwrap();
        let mut s = Series::new(
            Target {
                name: "singapore".into(),
                address: "127.0.0.1:4433".into(),
            },
            metric,
            Window {
                start_unix_ms: 0,
                end_unix_ms: 60_000,
            },
        );
        for v in values_us {
            s.histogram.record(*v).unwrap();
        }
        s.sent = values_us.len() as u64 + 2;
        s.lost = 1;
        s.errors.insert(vantage_wire::ErrorClass::Refused, 1);
        Batch {
            probe_id: probe.into(),
            sequence: 1,
            campaign: "move".into(),
            labels,
            created_unix_ms: 60_500,
            dropped_batches: 0,
            traces: Vec::new(),
            series: vec![s],
        }
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting `{start}` in\n{text}"))
    }

    #[test]
    fn latency_lands_in_buckets_at_the_story_thresholds() {
        let m = Arc::new(Metrics::default());
        // 40 ms, 150 ms, 300 ms and 400 ms.
        let b = batch(
            "p1",
            "after",
            Metric::QuicColdRequest,
            &[40_000, 150_000, 300_000, 400_000],
        );
        m.live().record(live_series(&b));
        let text = m.render();
        let labels = r#"campaign="move",country="IN",target="singapore",metric="quic_cold_request",phase="after""#;
        for (le, n) in [
            ("0.05", 1),
            ("0.1", 1),
            ("0.2", 2),
            ("0.35", 3),
            ("0.5", 4),
            ("+Inf", 4),
        ] {
            let start = format!("vantage_latency_seconds_bucket{{{labels},le=\"{le}\"}} ");
            assert_eq!(line(&text, &start), format!("{start}{n}"), "le={le}");
        }
        let sum: f64 = line(&text, "vantage_latency_seconds_sum{")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.89).abs() < 0.002, "sum {sum}");
        assert!(
            text.contains(&format!("vantage_attempts_total{{{labels}}} 6")),
            "{text}"
        );
        assert!(text.contains(&format!("vantage_attempts_lost_total{{{labels}}} 1")));
        assert!(text.contains(&format!("vantage_attempts_failed_total{{{labels}}} 1")));
        // The protobuf exposition carries the same families.
        let proto = m.render_protobuf();
        assert!(proto.windows(23).any(|w| w == b"vantage_latency_seconds"));
    }

    #[test]
    fn goodput_and_rpm_are_gauges_per_probe_in_base_units() {
        let m = Arc::new(Metrics::default());
        m.live().record(live_series(&batch(
            "p1",
            "before",
            Metric::PhotosyncGoodput,
            &[20_000, 30_000, 40_000],
        )));
        m.live().record(live_series(&batch(
            "p1",
            "before",
            Metric::PhotosyncGoodput,
            &[50_000],
        )));
        m.live().record(live_series(&batch(
            "p2",
            "before",
            Metric::ResponsivenessRpm,
            &[900, 1_000, 1_100],
        )));
        let text = m.render();
        let goodput = line(&text, "vantage_goodput_bytes_per_second{");
        assert!(goodput.contains(r#"probe="p1""#), "{goodput}");
        let bytes_s: f64 = goodput.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            (bytes_s - 50e6 / 8.0).abs() < 50e6 / 8.0 * 0.002,
            "the last batch's median, in bytes/s: {bytes_s}"
        );
        let rpm: f64 = line(&text, "vantage_responsiveness_rpm{")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((rpm - 1_000.0).abs() < 2.0, "{rpm}");
        assert!(
            !text.contains("metric=\"photosync_goodput\""),
            "goodput is no latency"
        );
    }

    #[test]
    fn label_sets_beyond_the_bound_are_counted_not_exposed() {
        let live = Live::default();
        for i in 0..MAX_LIVE_SERIES + 5 {
            let mut b = batch("p1", "after", Metric::UdpRtt, &[1_000]);
            b.campaign = format!("c{i}");
            live.record(live_series(&b));
        }
        assert_eq!(live.latency.lock().unwrap().len(), MAX_LIVE_SERIES);
        assert_eq!(live.left_out(), 5);
        // A known label set still takes new batches.
        let mut b = batch("p1", "after", Metric::UdpRtt, &[2_000]);
        b.campaign = "c0".into();
        live.record(live_series(&b));
        assert_eq!(live.left_out(), 5);
    }

    #[test]
    fn median_of_counted_values() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[(1.0, 1), (2.0, 1)]), Some(1.0));
        assert_eq!(median(&[(1.0, 1), (2.0, 5)]), Some(2.0));
    }
}
