//! Crash safety: 20 probes send 5,000 batches while the collector process
//! is killed with SIGKILL several times and restarted. Afterwards the store
//! holds every batch exactly once, byte for byte as its probe spooled it.
//! Once with one collector on SQLite; once with two collectors on one
//! PostgreSQL, each probe listing both, killed at random moments.

#[path = "../../collector/tests/support/postgres.rs"]
mod pg;

use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use vantage_collector::{hash_token, new_token, Store, StoreLocation};
use vantage_probe::spool::Spool;
use vantage_probe::upload::{run_uploader, CollectorTarget, Uploader};
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

const PROBES: usize = 20;
const PER_PROBE: u64 = 250;

/// Where the collectors store, as `--db` and a password for `PGPASSWORD`.
struct Backend {
    db: String,
    password: Option<&'static str>,
}

impl Backend {
    fn open(&self) -> Box<dyn Store> {
        let location = match self.password {
            Some(p) => StoreLocation::Postgres(Box::new(
                vantage_collector::PgLocation::parse(&self.db, None, Some(p.into())).unwrap(),
            )),
            None => StoreLocation::parse(&self.db, None).unwrap(),
        };
        location.open().unwrap()
    }
}

fn start_collector(
    listen: &str,
    backend: &Backend,
    cert: &std::path::Path,
) -> (Child, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vantage"));
    if let Some(p) = backend.password {
        command.env("PGPASSWORD", p);
    }
    let mut child = command
        .args(["collect", "--listen", listen])
        .arg("--db")
        .arg(&backend.db)
        .arg("--cert-dir")
        .arg(cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut addr = String::new();
    let mut pin = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["quic", a, ..] => addr = a.to_string(),
            ["probe", "with:", _, p] => {
                pin = p.to_string();
                break;
            }
            _ => {}
        }
    }
    assert!(!pin.is_empty(), "collector did not start");
    (child, addr, pin)
}

fn batch(probe: &str, seq: u64, rng: &mut impl Rng) -> Vec<u8> {
    let mut labels = Labels::new();
    labels
        .insert("country", ["IN", "MY", "ID", "US"][seq as usize % 4])
        .unwrap();
    let start = 1_790_000_000_000 + seq * 60_000;
    let series = [Metric::UdpRtt, Metric::QuicRequest]
        .into_iter()
        .map(|m| {
            let mut s = Series::new(
                Target {
                    name: "singapore".into(),
                    address: "127.0.0.1:4433".into(),
                },
                m,
                Window {
                    start_unix_ms: start,
                    end_unix_ms: start + 60_000,
                },
            );
            for _ in 0..rng.gen_range(20..200) {
                s.histogram.record(rng.gen_range(1_000..300_000)).unwrap();
            }
            s.sent = s.histogram.len();
            s
        })
        .collect();
    Batch {
        probe_id: probe.into(),
        sequence: seq,
        campaign: "crash".into(),
        labels,
        created_unix_ms: start + 60_500,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
    .encode()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_collector_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend {
        db: dir.path().join("c.db").display().to_string(),
        password: None,
    };
    crash_run(&backend, 1, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sigkilled_collectors_on_one_postgres_lose_and_double_nothing() {
    let server = pg::TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend {
        db: server.url(),
        password: Some(pg::PASSWORD),
    };
    crash_run(&backend, 2, dir.path()).await;
}

/// `collectors` collector processes on `backend`; every probe lists all of
/// them, each probe starting at a different one; three SIGKILLs, the
/// victims and moments drawn at random (every collector killed at least
/// once), each restarted on its port.
async fn crash_run(backend: &Backend, collectors: usize, dir: &std::path::Path) {
    let cert = dir.join("cert");
    let mut running = Vec::new();
    for _ in 0..collectors {
        let (child, addr, pin) = start_collector("127.0.0.1:0", backend, &cert);
        let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
        running.push((child, port, pin));
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut sent: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut tasks = Vec::new();
    let (stop_tx, stop) = watch::channel(false);
    let mut spools = Vec::new();
    let mut admin = backend.open();
    for p in 0..PROBES {
        let probe = format!("probe-{p:02}");
        let token = new_token();
        admin.add_token(&probe, &hash_token(&token), 1).unwrap();
        let spool_dir = dir.join(format!("spool-{p}"));
        let mut spool = Spool::open(&spool_dir, 1 << 30).unwrap();
        let mut mine = Vec::new();
        for seq in 1..=PER_PROBE {
            let bytes = batch(&probe, seq, &mut rng);
            spool.push(seq, &bytes, 0).unwrap();
            mine.push(bytes);
        }
        sent.push(mine);
        spools.push((spool, token));
    }
    drop(admin);
    // All spools are written before any probe starts sending.
    for (p, (spool, token)) in spools.into_iter().enumerate() {
        let uploaders = (0..collectors)
            .map(|k| {
                let (_, port, pin) = &running[(p + k) % collectors];
                Uploader::new(CollectorTarget {
                    host: "127.0.0.1".into(),
                    port: *port,
                    server_name: "localhost".into(),
                    trust: vantage_probe::Trust::Pinned(vec![pin.parse().unwrap()]),
                    token: token.clone(),
                })
                .unwrap()
                .with_quic_timeout(Duration::from_millis(500))
            })
            .collect();
        tasks.push(tokio::spawn(run_uploader(
            uploaders,
            Arc::new(Mutex::new(spool)),
            Arc::new(Notify::new()),
            stop.clone(),
            Duration::from_secs(240),
            Duration::from_millis(100),
        )));
    }
    // Every uploader drains its spool and returns; stop only bounds the drain.
    stop_tx.send(true).unwrap();

    // Three kills while they send, at random moments between 5 % and 70 %
    // of the batches stored.
    let started = Instant::now();
    let mut kills = 0;
    let mut stored_at_kill = Vec::new();
    let mut watcher = backend.open();
    let total = PROBES as u64 * PER_PROBE;
    let mut thresholds: Vec<u64> = (0..3)
        .map(|_| rng.gen_range(total / 20..total * 7 / 10))
        .collect();
    thresholds.sort();
    let victims: Vec<usize> = (0..3)
        .map(|k| {
            if k < collectors {
                k
            } else {
                rng.gen_range(0..collectors)
            }
        })
        .collect();
    for (threshold, victim) in thresholds.into_iter().zip(victims) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = watcher.batch_count().unwrap();
            if n >= threshold || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (child, port, _) = &mut running[victim];
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stored_at_kill.push(watcher.batch_count().unwrap());
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (c, _, _) = start_collector(&format!("127.0.0.1:{port}"), backend, &cert);
        *child = c;
    }
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(
            tokio::time::timeout(Duration::from_secs(300), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for (mut child, _, _) in running {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    println!(
        "{kills} SIGKILLs (stored at each: {stored_at_kill:?}); all sent in {:?}; retries {}; duplicates acknowledged {}",
        started.elapsed(),
        stats.iter().map(|s| s.retries).sum::<u64>(),
        stats.iter().map(|s| s.duplicates).sum::<u64>()
    );
    assert!(
        stored_at_kill.iter().all(|n| *n < total),
        "every kill must land during ingest: {stored_at_kill:?}"
    );
    assert!(stats.iter().all(|s| s.rejected == 0));

    let mut store = backend.open();
    assert_eq!(
        store.batch_count().unwrap(),
        PROBES as u64 * PER_PROBE,
        "exactly 5,000 batches"
    );
    for (p, mine) in sent.iter().enumerate() {
        let probe = format!("probe-{p:02}");
        for (i, bytes) in mine.iter().enumerate() {
            let stored = store.batch_bytes(&probe, i as u64 + 1).unwrap();
            assert_eq!(
                stored.as_deref(),
                Some(&bytes[..]),
                "{probe} batch {}",
                i + 1
            );
        }
    }
    // Every histogram reads back equal to what its probe recorded.
    let rows = store.select(&"country=IN".parse().unwrap()).unwrap();
    for row in &rows {
        let original = Batch::decode(
            &sent[row.probe_id[6..].parse::<usize>().unwrap()][row.sequence as usize - 1],
        )
        .unwrap();
        assert!(original.series.contains(&row.series));
    }
    let in_batches = (1..=PER_PROBE).filter(|seq| seq % 4 == 0).count() as u64 * PROBES as u64;
    assert_eq!(rows.len() as u64, in_batches * 2, "two series per IN batch");
}
