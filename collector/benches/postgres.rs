//! PostgreSQL on this machine: collector ingest over QUIC through one and
//! through two collectors sharing one database, next to the same batches
//! inserted straight through the store (its multi-row INSERTs, with no QUIC,
//! TLS or probes: the ceiling of the database here); and the time of the
//! same report from PostgreSQL and from SQLite holding the same batches.
//!
//! Run: `cargo bench -p vantage-collector --bench postgres` (about a
//! minute). Starts its own PostgreSQL (Debian's package) in a temporary
//! directory. Loopback only; bounded by batch count.

#[path = "support/batches.rs"]
mod batches;
#[path = "../tests/support/postgres.rs"]
mod pg;

use rand::SeedableRng;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use vantage_collector::{
    hash_token, new_token, Collector, CollectorConfig, PgStore, SqliteStore, Store, StoreLocation,
};
use vantage_probe::spool::Spool;
use vantage_probe::upload::{run_uploader, CollectorTarget, Uploader};
use vantage_reports::{build_report_from, Evidence, ReportOptions, ResolutionChoice};

const PROBES: usize = 50;
const PER_PROBE: u64 = 60;

/// `collectors` collectors on `db`, every probe listing all of them (each
/// starting at a different one), uploading every batch over QUIC; returns
/// the time until the last batch was acknowledged.
fn ingest(
    rt: &tokio::runtime::Runtime,
    db: &StoreLocation,
    collectors: usize,
    batches: &[Vec<(u64, Vec<u8>)>],
    dir: &std::path::Path,
) -> Duration {
    rt.block_on(async {
        let mut running = Vec::new();
        for _ in 0..collectors {
            running.push(
                Collector::start(CollectorConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    identity: vantage_tls::Identity::generate(&["localhost".into()]).unwrap(),
                    db: db.clone(),
                    max_connections: 1024,
                    keep_raw: None,
                })
                .await
                .unwrap(),
            );
        }
        let mut admin = db.open().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut spools = Vec::new();
        for (p, mine) in batches.iter().enumerate() {
            let token = new_token();
            admin
                .add_token(&format!("probe-{p:03}"), &hash_token(&token), 0)
                .unwrap();
            let spool_dir = dir.join(format!("c{collectors}-s{p}"));
            let mut spool = Spool::open(&spool_dir, 1 << 30).unwrap();
            for (seq, raw) in mine {
                spool.push(*seq, raw, 0).unwrap();
            }
            spools.push((spool, token));
        }
        let t0 = Instant::now();
        for (p, (spool, token)) in spools.into_iter().enumerate() {
            let uploaders = (0..collectors)
                .map(|k| {
                    let c = &running[(p + k) % collectors];
                    Uploader::new(CollectorTarget {
                        host: "127.0.0.1".into(),
                        port: c.quic_addr().port(),
                        server_name: "localhost".into(),
                        trust: vantage_probe::Trust::Pinned(
                            running.iter().map(|c| c.fingerprint()).collect(),
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
        for c in running {
            c.shutdown().await;
        }
        assert_eq!(
            stored,
            (PROBES as u64) * PER_PROBE,
            "every batch stored once"
        );
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

    let direct_db = server.create_database("direct");
    let direct_location =
        vantage_collector::PgLocation::parse(&direct_db, None, Some(pg::PASSWORD.into())).unwrap();
    let mut direct = PgStore::open(&direct_location).unwrap();
    let direct_rate = total / batches::insert_direct(&mut direct, &flat).as_secs_f64();
    let lite_path = dir.path().join("same.db");
    let mut lite = SqliteStore::open(&lite_path).unwrap();
    let lite_rate = total / batches::insert_direct(&mut lite, &flat).as_secs_f64();

    let mut rates = Vec::new();
    for collectors in [1usize, 2] {
        let db = server.create_database(&format!("ingest{collectors}"));
        let location = StoreLocation::Postgres(Box::new(
            vantage_collector::PgLocation::parse(&db, None, Some(pg::PASSWORD.into())).unwrap(),
        ));
        let took = ingest(&rt, &location, collectors, &batches, dir.path());
        rates.push((collectors, total / took.as_secs_f64()));
    }

    // The same report from both stores (the direct inserts above), the
    // best of three each.
    let best = |store: &mut dyn Store| (0..3).map(|_| report_time(store)).min().unwrap();
    let (pg_report, lite_report) = (best(&mut direct), best(&mut lite));

    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| batches | {} from {PROBES} concurrent probes, {series} series each |",
        total as u64
    );
    for (collectors, rate) in &rates {
        let ratio = rate / direct_rate;
        println!(
            "| ingest over QUIC through {collectors} collector{} into PostgreSQL | {rate:.0} batches/s, {:.0} series/s; {ratio:.2} of the direct insert (target ≥ 0.5): {} |",
            if *collectors == 1 { "" } else { "s" },
            rate * series as f64,
            if ratio >= 0.5 { "met" } else { "not met" }
        );
    }
    println!("| the same batches straight through the PostgreSQL store (multi-row INSERTs, 50 batches a transaction, synchronous_commit on) | {direct_rate:.0} batches/s |");
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
