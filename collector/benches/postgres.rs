//! PostgreSQL on this machine: collector ingest over QUIC through one and
//! through two collector processes (`vantage collect`) sharing one
//! database, next to the same batches inserted straight through the store
//! (its multi-row INSERTs, with no QUIC, TLS, tokens or probes: the ceiling
//! of the database here); and the time of the same report from PostgreSQL
//! and from SQLite holding the same batches.
//!
//! The three ingest figures are measured in turn, [`ROUNDS`] times, each
//! into a fresh database, and each round's ratios are taken within the
//! round: this VM's disk and CPU move by 2× between minutes.
//!
//! Run: `cargo build --release -p vantage && cargo bench -p
//! vantage-collector --bench postgres` (about two minutes). Starts its own
//! PostgreSQL (Debian's package) in a temporary directory. Loopback only;
//! bounded by batch count.

#[path = "support/batches.rs"]
mod batches;
#[path = "../tests/support/postgres.rs"]
mod pg;

use rand::SeedableRng;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use vantage_collector::{hash_token, new_token, PgStore, SqliteStore, Store, StoreLocation};
use vantage_probe::spool::Spool;
use vantage_probe::upload::{run_uploader, CollectorTarget, Uploader};
use vantage_reports::{build_report_from, Evidence, ReportOptions, ResolutionChoice};

const PROBES: usize = 50;
const PER_PROBE: u64 = 60;
/// Rounds of (direct insert, one collector, two collectors).
const ROUNDS: usize = 3;

/// The release `vantage` binary: `$VANTAGE_BIN`, or the one beside this
/// bench in the target directory.
fn vantage_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("VANTAGE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|release| release.join("vantage"))
        .filter(|b| b.is_file());
    bin.expect("no release `vantage` beside this bench: run `cargo build --release -p vantage` first, or set VANTAGE_BIN")
}

/// A collector process on `db`; its QUIC port and certificate pin.
struct CollectorProcess {
    child: Child,
    port: u16,
    pin: String,
}

impl CollectorProcess {
    fn start(db: &str, cert_dir: &Path) -> Self {
        let mut child = Command::new(vantage_bin())
            .env("PGPASSWORD", pg::PASSWORD)
            .args(["collect", "--listen", "127.0.0.1:0", "--db", db])
            .arg("--cert-dir")
            .arg(cert_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start `vantage collect`");
        let (mut port, mut pin) = (None, String::new());
        let out = child.stdout.take().expect("collector stdout");
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["quic", a, ..] => port = a.rsplit(':').next().and_then(|p| p.parse().ok()),
                ["probe", "with:", _, p] => {
                    pin = p.to_string();
                    break;
                }
                _ => {}
            }
        }
        let port = port.filter(|_| !pin.is_empty());
        CollectorProcess {
            port: port.expect("the collector did not start"),
            pin,
            child,
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `collectors` collector processes on `db`, every probe listing all of
/// them (each starting at a different one), uploading every batch over
/// QUIC; returns the time until the last batch was acknowledged.
fn ingest(
    rt: &tokio::runtime::Runtime,
    db: &str,
    collectors: usize,
    batches: &[Vec<(u64, Vec<u8>)>],
    dir: &Path,
) -> Duration {
    let running: Vec<CollectorProcess> = (0..collectors)
        .map(|k| CollectorProcess::start(db, &dir.join(format!("cert{k}"))))
        .collect();
    let location = StoreLocation::Postgres(Box::new(
        vantage_collector::PgLocation::parse(db, None, Some(pg::PASSWORD.into())).unwrap(),
    ));
    let mut admin = location.open().unwrap();
    let pins: Vec<String> = running.iter().map(|c| c.pin.clone()).collect();
    let spool_root = tempfile::tempdir_in(dir).unwrap();
    rt.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        let mut spools = Vec::new();
        for (p, mine) in batches.iter().enumerate() {
            let token = new_token();
            admin
                .add_token(&format!("probe-{p:03}"), &hash_token(&token), 0)
                .unwrap();
            let mut spool = Spool::open(&spool_root.path().join(format!("s{p}")), 1 << 30).unwrap();
            for (seq, raw) in mine {
                spool.push(*seq, raw, 0).unwrap();
            }
            spools.push((spool, token));
        }
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (p, (spool, token)) in spools.into_iter().enumerate() {
            let uploaders = (0..collectors)
                .map(|k| {
                    Uploader::new(CollectorTarget {
                        host: "127.0.0.1".into(),
                        port: running[(p + k) % collectors].port,
                        server_name: "localhost".into(),
                        trust: vantage_probe::Trust::Pinned(
                            pins.iter().map(|p| p.parse().unwrap()).collect(),
                        ),
                        token: token.clone(),
                    })
                    .unwrap()
                })
                .collect();
            tasks.push(tokio::spawn(run_uploader(
                uploaders,
                Arc::new(Mutex::new(spool)),
                Arc::new(Notify::new()),
                stop.clone(),
                Duration::from_secs(300),
                Duration::from_millis(50),
            )));
        }
        stop_tx.send(true).unwrap();
        let mut stored = 0;
        for t in tasks {
            stored += t.await.unwrap().stored;
        }
        let took = t0.elapsed();
        assert_eq!(
            stored,
            (PROBES as u64) * PER_PROBE,
            "every batch stored once"
        );
        assert_eq!(admin.batch_count().unwrap(), (PROBES as u64) * PER_PROBE);
        took
    })
}

/// The time of gathering and building the before/after report.
fn report_time(store: &mut dyn Store) -> Duration {
    let options = ReportOptions {
        baseline: "target=beijing".into(),
        candidate: "target=singapore".into(),
        resamples: 200,
        ..ReportOptions::default()
    };
    let t = Instant::now();
    let evidence = Evidence::gather_at(
        store,
        &["country".to_string()],
        &options.baseline.parse().unwrap(),
        &options.candidate.parse().unwrap(),
        ResolutionChoice::Fixed(vantage_store::Resolution::Window),
        3,
    )
    .unwrap();
    let report = build_report_from(&evidence, &options);
    assert!(!report.groups.is_empty());
    t.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = pg::TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let batches: Vec<Vec<(u64, Vec<u8>)>> = (0..PROBES)
        .map(|p| {
            (1..=PER_PROBE)
                .map(|seq| {
                    let b = batches::batch(&format!("probe-{p:03}"), seq, &mut rng);
                    (seq, b.encode().unwrap())
                })
                .collect()
        })
        .collect();
    let total = (PROBES as u64 * PER_PROBE) as f64;
    let flat: Vec<&(u64, Vec<u8>)> = batches.iter().flatten().collect();
    let series = batches::TARGETS.len() * vantage_probe::RESPONDER_METRICS.len();

    let lite_path = dir.path().join("same.db");
    let mut lite = SqliteStore::open(&lite_path).unwrap();
    let lite_rate = total / batches::insert_direct(&mut lite, &flat).as_secs_f64();

    // Each round: the direct insert, then one collector, then two, each
    // into a database of its own; ratios within the round.
    let mut rounds = Vec::new();
    let mut direct = None;
    for round in 0..ROUNDS {
        let direct_db = server.create_database(&format!("direct{round}"));
        let location =
            vantage_collector::PgLocation::parse(&direct_db, None, Some(pg::PASSWORD.into()))
                .unwrap();
        let mut store = PgStore::open(&location).unwrap();
        let direct_rate = total / batches::insert_direct(&mut store, &flat).as_secs_f64();
        direct = Some(store);
        let mut rates = [0.0; 2];
        for (k, collectors) in [1usize, 2].into_iter().enumerate() {
            let db = server.create_database(&format!("ingest{collectors}r{round}"));
            let took = ingest(&rt, &db, collectors, &batches, dir.path());
            rates[k] = total / took.as_secs_f64();
        }
        eprintln!(
            "round {round}: direct {direct_rate:.0}/s, one collector {:.0}/s, two {:.0}/s",
            rates[0], rates[1]
        );
        rounds.push((direct_rate, rates));
    }
    let mut direct = direct.expect("at least one round");

    // The same report from both stores (the last direct insert and the
    // SQLite one), in turn, the best of five each.
    let (mut pg_report, mut lite_report) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        pg_report = pg_report.min(report_time(&mut direct));
        lite_report = lite_report.min(report_time(&mut lite));
    }

    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| batches | {} from {PROBES} concurrent probes, {series} series each, {ROUNDS} rounds |",
        total as u64
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (k, collectors) in [1usize, 2].into_iter().enumerate() {
        let rates: Vec<f64> = rounds.iter().map(|r| r.1[k]).collect();
        let ratio = median(rounds.iter().map(|r| r.1[k] / r.0).collect());
        println!(
            "| ingest over QUIC through {collectors} collector process{} into PostgreSQL | {} batches/s (each round); median {:.0} series/s; median {ratio:.2} of the direct insert in the same round (target ≥ 0.5): {} |",
            if collectors == 1 { "" } else { "es" },
            show(&rates),
            median(rates.clone()) * series as f64,
            if ratio >= 0.5 { "met" } else { "not met" }
        );
    }
    let direct_rates: Vec<f64> = rounds.iter().map(|r| r.0).collect();
    println!("| the same batches straight through the PostgreSQL store (multi-row INSERTs, 50 batches a transaction, synchronous_commit on) | {} batches/s (each round) |", show(&direct_rates));
    println!("| the same straight through the SQLite store (50 a transaction, WAL, synchronous=FULL) | {lite_rate:.0} batches/s |");
    let ratio = pg_report.as_secs_f64() / lite_report.as_secs_f64();
    println!(
        "| report over every one-minute series ({} series): PostgreSQL / SQLite | {:.2} s / {:.2} s = {ratio:.2} (target ≤ 1.5): {} |",
        total as u64 * series as u64,
        pg_report.as_secs_f64(),
        lite_report.as_secs_f64(),
        if ratio <= 1.5 { "met" } else { "not met" }
    );
}
