//! The batches both ingest benches send: a probe's realistic minute, 3
//! data centres × the responder metrics, a few hundred samples each.
#![allow(dead_code)]

use rand::Rng;
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

/// 3 data centres × 7 latency metrics per window: a probe's realistic batch.
pub const TARGETS: [&str; 3] = ["beijing", "singapore", "oregon"];

pub fn batch(probe: &str, seq: u64, rng: &mut impl Rng) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "IN").unwrap();
    labels.insert("phase", "after").unwrap();
    labels.insert("region", "Mumbai").unwrap();
    let start = 1_790_000_000_000 + seq * 60_000;
    let mut series = Vec::new();
    for t in TARGETS {
        for m in vantage_probe::RESPONDER_METRICS {
            let mut s = Series::new(
                Target {
                    name: t.into(),
                    address: format!("{t}.example:4433"),
                },
                m,
                Window {
                    start_unix_ms: start,
                    end_unix_ms: start + 60_000,
                },
            );
            let n = if m == Metric::UdpRtt { 300 } else { 60 };
            for _ in 0..n {
                s.histogram.record(rng.gen_range(20_000..400_000)).unwrap();
            }
            s.sent = s.histogram.len();
            series.push(s);
        }
    }
    Batch {
        probe_id: probe.into(),
        sequence: seq,
        campaign: "bench".into(),
        labels,
        created_unix_ms: start + 60_500,
        dropped_batches: 0,
        series,
    }
}
