//! `vantage store copy` as a user runs it: a SQLite store moved into a real
//! PostgreSQL (password from `PGPASSWORD`), the first copy SIGKILLed while
//! it runs, the second finishing the job: every batch once, byte for byte.

#[path = "../../collector/tests/support/postgres.rs"]
mod pg;

use rand::{Rng, SeedableRng};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vantage_collector::{Incoming, PgLocation, PgStore, SqliteStore, Store};
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

fn batch(probe: &str, seq: u64, rng: &mut impl Rng) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "IN").unwrap();
    let start = 1_796_256_000_000 + seq * 60_000;
    let mut s = Series::new(
        Target {
            name: "singapore".into(),
            address: "127.0.0.1:4433".into(),
        },
        Metric::QuicRequest,
        Window {
            start_unix_ms: start,
            end_unix_ms: start + 60_000,
        },
    );
    for _ in 0..rng.gen_range(20..100) {
        s.histogram.record(rng.gen_range(1_000..300_000)).unwrap();
    }
    s.sent = s.histogram.len();
    Batch {
        probe_id: probe.into(),
        sequence: seq,
        campaign: "copy".into(),
        labels,
        created_unix_ms: start + 60_500,
        dropped_batches: 0,
        traces: Vec::new(),
        series: vec![s],
    }
}

#[test]
fn a_killed_copy_run_again_copies_every_batch_once() {
    let server = pg::TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("v.db");
    let mut lite = SqliteStore::open(&source).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let batches: Vec<Batch> = (0..10)
        .flat_map(|p| (1..=400).map(move |s| (p, s)))
        .map(|(p, s)| batch(&format!("probe-{p}"), s, &mut rng))
        .collect();
    // One batch per transaction: each keeps its own receive time.
    for (n, b) in batches.iter().enumerate() {
        let raw = b.encode().unwrap();
        lite.insert_batches(
            &[Incoming {
                batch: b,
                raw: &raw,
                plain_histograms: &[],
                token_hash: None,
            }],
            1_796_300_000_000 + n as u64,
        )
        .unwrap();
    }
    lite.add_token("probe-1", "hash-1", 1).unwrap();
    let total = batches.len() as u64;
    let location = PgLocation::parse(&server.url(), None, Some(pg::PASSWORD.into())).unwrap();
    let copy = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vantage"));
        c.args(["store", "copy", "--from"])
            .arg(&source)
            .args(["--to", &server.url()])
            .env("PGPASSWORD", pg::PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    // SIGKILL the first copy as soon as part of it is committed.
    let mut first = copy().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let seen = PgStore::open(&location)
            .map(|mut s| s.batch_count().unwrap_or(0))
            .unwrap_or(0);
        if seen > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let mut pg = PgStore::open(&location).unwrap();
    let stored_after_kill = pg.batch_count().unwrap();
    assert!(
        stored_after_kill > 0 && stored_after_kill < total,
        "the kill must land mid-copy: {stored_after_kill} of {total}"
    );
    let second = copy().output().unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let copied = total - stored_after_kill;
    assert!(
        out.contains(&format!("copied {copied} batches"))
            && out.contains(&format!("({stored_after_kill} were already there")),
        "{out}"
    );
    assert!(!out.contains(pg::PASSWORD), "{out}");
    assert_eq!(pg.batch_count().unwrap(), total, "every batch once");
    for b in &batches {
        assert_eq!(
            pg.batch_bytes(&b.probe_id, b.sequence).unwrap(),
            Some(b.encode().unwrap()),
            "{} {}",
            b.probe_id,
            b.sequence
        );
    }
    assert_eq!(
        pg.token_probe("hash-1").unwrap().as_deref(),
        Some("probe-1")
    );
    // A third run copies nothing and doubles nothing.
    let third = copy().output().unwrap();
    assert!(String::from_utf8_lossy(&third.stdout).contains("copied 0 batches"));
    assert_eq!(pg.batch_count().unwrap(), total);
}
