//! Micro-benchmarks of the record model's hot paths (issue "Benches"):
//! recording a sample, encoding and decoding a probe's batch, and merging
//! histograms as the collector and the reports do.
//!
//! `cargo bench -p vantage-wire --bench micro`; CI runs it with `--test`
//! (each once, no timing) to keep it compiling and correct.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vantage_wire::{
    decode_histogram, encode_histogram, new_latency_histogram, record_clamped, Batch, Labels,
    LatencyHistogram, Metric, Series, Target, Window,
};

/// Latency-like values in µs: 80 ms ± a skewed spread, from a fixed
/// xorshift so every run records the same stream.
fn latencies(n: usize) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (80_000.0 * (1.0 + 2.0 * u * u * u)) as u64
        })
        .collect()
}

/// A probe's one-minute batch: 3 data centres × every metric, each series
/// holding `samples` values.
fn minute_batch(samples: usize) -> Batch {
    let mut labels = Labels::new();
    for (k, v) in [("phase", "after"), ("country", "IN"), ("network", "wifi")] {
        labels.insert(k, v).expect("valid label");
    }
    let values = latencies(samples);
    let mut series = Vec::new();
    for dc in ["beijing", "oregon", "singapore"] {
        for metric in Metric::all() {
            let mut s = Series::new(
                Target {
                    name: dc.into(),
                    address: "192.0.2.1:4433".into(),
                },
                metric,
                Window {
                    start_unix_ms: 1_700_000_040_000,
                    end_unix_ms: 1_700_000_100_000,
                },
            );
            for v in &values {
                record_clamped(&mut s.histogram, *v);
            }
            s.sent = s.histogram.len();
            series.push(s);
        }
    }
    Batch {
        probe_id: "p-0123456789abcdef".into(),
        sequence: 7,
        campaign: "move-2026".into(),
        labels,
        created_unix_ms: 1_700_000_101_000,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
}

fn histogram(c: &mut Criterion) {
    let values = latencies(10_000);
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("record_clamped 10k samples", |b| {
        b.iter_batched_ref(
            new_latency_histogram,
            |h| {
                for v in &values {
                    record_clamped(h, black_box(*v));
                }
            },
            BatchSize::SmallInput,
        )
    });
    // What the collector and the reports do per stored series: decode it and
    // add it into a running merge.
    g.throughput(Throughput::Elements(1));
    let mut decoded = new_latency_histogram();
    for samples in [60, 3000] {
        let mut one = new_latency_histogram();
        for v in latencies(samples) {
            record_clamped(&mut one, v);
        }
        let mut bytes = Vec::new();
        encode_histogram(&one, &mut bytes).expect("encodes");
        decoded = decode_histogram(&bytes).expect("decodes");
        g.bench_function(format!("decode one {samples}-sample histogram"), |b| {
            b.iter(|| decode_histogram(black_box(&bytes)).expect("decodes"))
        });
    }
    g.bench_function("merge one 3000-sample histogram", |b| {
        let mut acc: LatencyHistogram = new_latency_histogram();
        b.iter(|| acc.add(black_box(&decoded)).expect("in range"))
    });
    g.finish();
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    for samples in [60usize, 3000] {
        let batch = minute_batch(samples);
        let bytes = batch.encode().expect("encodes");
        g.throughput(Throughput::Elements(batch.series.len() as u64));
        g.bench_function(
            format!(
                "encode {} series of {samples} samples ({} B)",
                batch.series.len(),
                bytes.len()
            ),
            |b| b.iter(|| black_box(&batch).encode().expect("encodes")),
        );
        g.bench_function(
            format!(
                "decode {} series of {samples} samples ({} B)",
                batch.series.len(),
                bytes.len()
            ),
            |b| b.iter(|| Batch::decode(black_box(&bytes)).expect("decodes")),
        );
        assert_eq!(Batch::decode(&bytes).expect("decodes"), batch);
    }
    g.finish();
}

criterion_group!(benches, histogram, batch);
criterion_main!(benches);
