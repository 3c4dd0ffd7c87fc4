//! A long campaign in the store: its size on disk, and a report over it
//! at each resolution. Two steps, each its own process so a report's peak
//! RSS is its own:
//!
//! - `campaign make DIR HOURS WINDOW_S`: 100 probes (4 countries) × 3 data
//!   centres × 8 metrics, two phases of HOURS each, one batch per probe
//!   and WINDOW_S-second window (60 samples per series), stored through
//!   `insert_batches` 50 at a time as group commit does, then folded into
//!   the roll-ups. Prints the store's figures.
//! - `campaign report DIR RESOLUTION`: `vantage report`'s path (gather at
//!   1m, 1h or 1d, statistics, charts and HTML) over that store. Prints
//!   time and peak RSS.
//!
//! `benches/run` runs the cases; loopback-free (no network at all),
//! bounded by the case sizes.

use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;
use vantage_collector::{Incoming, SqliteStore, Store};
use vantage_reports::{
    build_report_from, write_report_from, Evidence, ReportOptions, ResolutionChoice,
};
use vantage_store::Selector;
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

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
const SAMPLES: u64 = 60;
const START: u64 = 1_790_000_000_000 / 86_400_000 * 86_400_000;

fn batch(p: usize, seq: u64, phase: usize, window_ms: u64, rng: &mut impl Rng) -> Batch {
    let mut labels = Labels::new();
    labels
        .insert("country", COUNTRIES[p % COUNTRIES.len()])
        .expect("label");
    labels
        .insert("phase", ["before", "after"][phase])
        .expect("label");
    let start = START + seq * window_ms;
    let mut series = Vec::new();
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
                    end_unix_ms: start + window_ms,
                },
            );
            let base =
                20_000 + 40_000 * t as u64 + 5_000 * m as u64 - if phase == 1 { 10_000 } else { 0 };
            for _ in 0..SAMPLES {
                let _ = s.histogram.record(base + rng.gen_range(0..base / 2));
            }
            s.sent = SAMPLES;
            series.push(s);
        }
    }
    Batch {
        probe_id: format!("p{p:03}"),
        sequence: seq,
        campaign: "bench".into(),
        labels,
        created_unix_ms: start + window_ms,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
}

fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
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

fn make(dir: &Path, hours: u64, window_s: u64) {
    std::fs::create_dir_all(dir).expect("bench directory");
    let db = dir.join("campaign.db");
    let _ = std::fs::remove_file(&db);
    let window_ms = window_s * 1000;
    let per_phase = hours * 3_600_000 / window_ms;
    let mut rng = rand::rngs::StdRng::seed_from_u64(hours * 1000 + window_s);
    let mut store = SqliteStore::open(&db).expect("store");
    let (mut batches, mut series) = (0u64, 0u64);
    let t0 = Instant::now();
    let mut insert = std::time::Duration::ZERO;
    for phase in 0..2 {
        for w in 0..per_phase {
            let seq = phase as u64 * per_phase + w;
            let group: Vec<(Batch, Vec<u8>)> = (0..PROBES)
                .map(|p| {
                    let b = batch(p, seq, phase, window_ms, &mut rng);
                    let raw = b.encode().expect("encode");
                    (b, raw)
                })
                .collect();
            for chunk in group.chunks(50) {
                let items: Vec<Incoming<'_>> = chunk
                    .iter()
                    .map(|(batch, raw)| Incoming {
                        batch,
                        raw,
                        plain_histograms: &[],
                        token_hash: None,
                    })
                    .collect();
                let t = Instant::now();
                store.insert_batches(&items, 0).expect("insert");
                insert += t.elapsed();
            }
            batches += PROBES as u64;
            series += (PROBES * TARGETS.len() * METRICS.len()) as u64;
        }
    }
    let made = t0.elapsed();
    let t = Instant::now();
    while store.fold_rollups(2000).expect("fold") > 0 {}
    let fold = t.elapsed();
    drop(store);
    let mib = file_mib(&db) + file_mib(&dir.join("campaign.db-wal"));
    println!(
        "| {hours} h per phase, {window_s} s windows | {batches} | {series} | {:.0} s ({:.0} s in insert_batches) | {:.0} s | {mib:.0} MiB | {:.0} |",
        made.as_secs_f64(),
        insert.as_secs_f64(),
        fold.as_secs_f64(),
        mib * (1 << 20) as f64 / series as f64
    );
}

fn report(dir: &Path, resolution: &str) {
    let db = dir.join("campaign.db");
    let mut store = SqliteStore::open(&db).expect("store");
    let choice: ResolutionChoice = resolution.parse().expect("resolution");
    let (b, c): (Selector, Selector) = (
        "phase=before".parse().expect("selector"),
        "phase=after".parse().expect("selector"),
    );
    let group_by = vec!["country".to_string()];
    let t0 = Instant::now();
    let evidence = Evidence::gather_at(&mut store, &group_by, &b, &c, choice, 20).expect("gather");
    let gathered = t0.elapsed();
    let gather_rss = peak_rss_mib();
    let options = ReportOptions {
        baseline: "phase=before".into(),
        candidate: "phase=after".into(),
        group_by,
        ..ReportOptions::default()
    };
    let report = build_report_from(&evidence, &options);
    let built = t0.elapsed();
    let out = dir.join(format!("report-{resolution}"));
    write_report_from(&report, &evidence, &out).expect("write");
    let total = t0.elapsed();
    println!(
        "| {resolution} | {} + {} | {:.1} | {:.1} | {:.1} | {gather_rss:.0} | {:.0} |",
        evidence.series(vantage_reports::Role::Baseline),
        evidence.series(vantage_reports::Role::Candidate),
        gathered.as_secs_f64(),
        (built - gathered).as_secs_f64(),
        total.as_secs_f64(),
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["make", dir, hours, window] => make(
            Path::new(dir),
            hours.parse().expect("hours"),
            window.parse().expect("window seconds"),
        ),
        ["report", dir, resolution] => report(Path::new(dir), resolution),
        _ => {
            eprintln!(
                "usage: campaign make DIR HOURS WINDOW_S | campaign report DIR 1m|1h|1d|auto"
            );
            std::process::exit(2);
        }
    }
}
