//! Report render time from a generated store, and how it grows with the
//! store: 100 probes in 4 countries, 3 data centres, 8 latency metrics,
//! W one-minute windows per phase (W doubles each step). Prints a table
//! of build (statistics, 1000 bootstrap resamples) and write (charts,
//! HTML) times and the process's peak RSS.
//!
//! `cargo bench -p vantage-reports --bench render` (add `-- 60 360 1440`
//! for other window counts; 1440 is the day of 60 s windows). The
//! series are generated and handed to the report's `Evidence` one at a
//! time, as `vantage report` streams them from the store; "gather" is that
//! step (generating and compacting each series), "build" the statistics,
//! "write" the charts and HTML.

use rand::{Rng, SeedableRng};
use std::time::Instant;
use vantage_reports::{build_report_from, write_report_from, Evidence, ReportOptions, Role};
use vantage_store::StoredSeries;
use vantage_wire::{Labels, Metric, Series, SparseCounts, Target, Window};

const PROBES: usize = 100;
const COUNTRIES: [&str; 4] = ["IN", "MY", "ID", "US"];
const TARGETS: [&str; 3] = ["beijing", "singapore", "oregon"];
const METRICS: [Metric; 8] = [
    Metric::UdpRtt,
    Metric::QuicHandshake,
    Metric::QuicRequest,
    Metric::QuicColdRequest,
    Metric::TcpConnect,
    Metric::TlsHandshake,
    Metric::HttpsRequest,
    Metric::LoadedRtt,
];
const SAMPLES_PER_SERIES: usize = 60;

fn gather(windows: u64) -> (Evidence, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(windows);
    let mut evidence = Evidence::new(&["country".to_string()]);
    let mut n = 0;
    for (side, (phase, role)) in [("before", Role::Baseline), ("after", Role::Candidate)]
        .into_iter()
        .enumerate()
    {
        for p in 0..PROBES {
            let country = COUNTRIES[p % COUNTRIES.len()];
            let mut labels = Labels::new();
            labels.insert("country", country).expect("label");
            labels.insert("phase", phase).expect("label");
            for w in 0..windows {
                let start = (side as u64 * windows + w) * 60_000;
                for (t, target) in TARGETS.iter().enumerate() {
                    for (m, metric) in METRICS.iter().enumerate() {
                        let mut s = Series::new(
                            Target {
                                name: target.to_string(),
                                address: "192.0.2.1:4433".into(),
                            },
                            *metric,
                            Window {
                                start_unix_ms: start,
                                end_unix_ms: start + 60_000,
                            },
                        );
                        let base = 20_000 + 40_000 * t as u64 + 5_000 * m as u64
                            - if side == 1 { 10_000 } else { 0 };
                        for _ in 0..SAMPLES_PER_SERIES {
                            let _ = s.histogram.record(base + rng.gen_range(0..base / 2));
                        }
                        s.sent = SAMPLES_PER_SERIES as u64;
                        let row = StoredSeries {
                            probe_id: format!("p{p}"),
                            sequence: w,
                            campaign: "bench".into(),
                            labels: labels.clone(),
                            series: s,
                        };
                        evidence.add(role, &row, &SparseCounts::of(&row.series.histogram));
                        n += 1;
                    }
                }
            }
        }
    }
    (evidence, n)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let steps = if args.is_empty() {
        vec![60, 120, 240]
    } else {
        args
    };
    println!("Generated store: 100 probes in 4 countries, 3 data centres, 8 latency metrics, W one-minute windows per phase, two phases, 60 samples per series; the series reach the report one at a time as `vantage report` streams them from SQLite.\n");
    let mut per_series = Vec::new();
    println!(
        "| windows per phase | series | gather (s) | build (s) | write (s) | total (s) | µs per series | peak RSS (MiB) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for windows in steps {
        let t0 = Instant::now();
        let (evidence, series) = gather(windows);
        let gathered = t0.elapsed();
        let options = ReportOptions {
            baseline: "phase=before".into(),
            candidate: "phase=after".into(),
            ..Default::default()
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let t1 = Instant::now();
        let report = build_report_from(&evidence, &options);
        let built = t1.elapsed();
        let t2 = Instant::now();
        let written = write_report_from(&report, &evidence, dir.path()).expect("report written");
        let wrote = t2.elapsed();
        assert!(!written.charts.is_empty());
        let total = gathered + built + wrote;
        per_series.push((series, total.as_secs_f64() * 1e6 / series as f64));
        println!(
            "| {windows} | {series} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            gathered.as_secs_f64(),
            built.as_secs_f64(),
            wrote.as_secs_f64(),
            total.as_secs_f64(),
            total.as_secs_f64() * 1e6 / series as f64,
            peak_rss_mib()
        );
    }
    if let (Some(first), Some(last)) = (per_series.first(), per_series.last()) {
        let growth = last.1 / first.1;
        println!(
            "\nTime per series at {}× the store: {growth:.2}× that of the smallest (target: no faster than linear, ≤ 1.25 allowing for noise): {}.",
            last.0 / first.0.max(1),
            if growth <= 1.25 { "met" } else { "not met" }
        );
    }
}
