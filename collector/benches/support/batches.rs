//! The batches both ingest benches send: a probe's realistic minute, 3
//! data centres × the responder metrics, a few hundred samples each.
#![allow(dead_code)]

use rand::Rng;
use std::time::{Duration, Instant};
use vantage_collector::{Incoming, Store};
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
        traces: Vec::new(),
        series,
    }
}

/// The batches straight through `store`, 50 per transaction (what group
/// commit achieves at best), each decoded as ingest has it from
/// validation; returns the time in the store alone.
pub fn insert_direct(store: &mut dyn Store, flat: &[&(u64, Vec<u8>)]) -> Duration {
    let mut took = Duration::ZERO;
    for chunk in flat.chunks(50) {
        let decoded: Vec<_> = chunk
            .iter()
            .map(|(_, r)| Batch::decode_with_plain_histograms(r).unwrap())
            .collect();
        let items: Vec<Incoming<'_>> = chunk
            .iter()
            .zip(&decoded)
            .map(|((_, r), (b, h))| Incoming {
                batch: b,
                raw: r,
                plain_histograms: h,
                token_hash: None,
            })
            .collect();
        let t = Instant::now();
        store.insert_batches(&items, 0).unwrap();
        took += t.elapsed();
    }
    took
}
