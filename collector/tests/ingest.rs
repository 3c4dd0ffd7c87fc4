//! The collector on 127.0.0.1 with real probes' uploaders: authentication,
//! exactly-once storage, refusal of bad input, HTTPS fallback, spool replay;
//! the token cases on SQLite and on a real PostgreSQL.

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/collector.rs"]
mod support;

use support::{add_token, setup, setup_on, tcp_only_forwarder, uploader, Setup};

use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use vantage_collector::{Ingest, Metrics, SqliteStore, Store, StoreLocation};
use vantage_probe::spool::Spool;
use vantage_probe::upload::run_uploader;
use vantage_wire::upload::AckStatus;
use vantage_wire::{Batch, ErrorClass, Labels, Metric, Series, Target, Window};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A realistic batch: a few series with a few hundred samples each.
fn batch(probe: &str, seq: u64, rng: &mut impl Rng) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "IN").unwrap();
    labels.insert("phase", "before").unwrap();
    let start = now_ms() / 60_000 * 60_000 - 3_600_000 + seq * 60_000 % 3_000_000;
    let series = [Metric::UdpRtt, Metric::QuicRequest, Metric::HttpsRequest]
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
            for _ in 0..rng.gen_range(50..300) {
                s.histogram.record(rng.gen_range(20_000..400_000)).unwrap();
            }
            s.lost = rng.gen_range(0..3);
            s.errors.insert(ErrorClass::Reset, rng.gen_range(0..2));
            s.sent = s.histogram.len() + s.lost + s.error_total();
            s
        })
        .collect();
    Batch {
        probe_id: probe.into(),
        sequence: seq,
        campaign: "test".into(),
        labels,
        created_unix_ms: start + 61_000,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_enforced_over_quic_and_https() {
    token_cases(setup().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_enforced_over_quic_and_https_on_postgres() {
    let server = pg::TestPostgres::start();
    let db = StoreLocation::Postgres(Box::new(server.location("vantage")));
    token_cases(setup_on(db, tempfile::tempdir().unwrap()).await).await;
}

/// Every token case, over QUIC and over HTTPS: none, wrong, revoked,
/// another probe's, valid, a valid duplicate, and one revoked after the
/// collector has checked it.
async fn token_cases(s: Setup) {
    let t1 = add_token(&s.db, "p1");
    let t2 = add_token(&s.db, "p2");
    let revoked = add_token(&s.db, "p3");
    s.db.open().unwrap().revoke_tokens("p3", 2).unwrap();
    let https_only = tcp_only_forwarder(s.collector.https_addr()).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut seq = 0;
    for port in [s.collector.quic_addr().port(), https_only] {
        let mut cases = vec![
            ("", "p1", AckStatus::Unauthorized),
            ("vt_wrong", "p1", AckStatus::Unauthorized),
            (revoked.as_str(), "p3", AckStatus::Unauthorized),
            (t2.as_str(), "p1", AckStatus::Forbidden),
            (t1.as_str(), "p1", AckStatus::Stored),
        ];
        cases.push((t1.as_str(), "p1", AckStatus::Duplicate));
        let mut last = None;
        for (token, probe, expected) in cases {
            if expected != AckStatus::Duplicate {
                seq += 1;
                last = Some(batch(probe, seq, &mut rng).encode().unwrap());
            }
            let bytes = last.clone().unwrap();
            let ack = uploader(&s, port, token)
                .send(&bytes, std::time::Instant::now())
                .await
                .unwrap();
            assert_eq!(
                ack.status, expected,
                "port {port}, token {token:.8}…, probe {probe}: {}",
                ack.reason
            );
            if !ack.status.is_ack() {
                assert!(!ack.reason.is_empty(), "a refusal says why");
            }
        }
    }
    // p1's token is revoked from another handle (as `vantage collect token
    // revoke` does), seconds after the collector last checked it: the
    // transaction that would store the next batch sees the revoke.
    s.db.open().unwrap().revoke_tokens("p1", 3).unwrap();
    for port in [s.collector.quic_addr().port(), https_only] {
        seq += 1;
        let bytes = batch("p1", seq, &mut rng).encode().unwrap();
        let ack = uploader(&s, port, &t1)
            .send(&bytes, std::time::Instant::now())
            .await
            .unwrap();
        assert_eq!(
            ack.status,
            AckStatus::Unauthorized,
            "port {port}: {}",
            ack.reason
        );
        assert_eq!(ack.reason, "unknown or revoked token");
    }
    let mut store = s.db.open().unwrap();
    assert_eq!(
        store.batch_count().unwrap(),
        2,
        "only the two valid batches, once each"
    );
    let refused = s.collector.metrics().refused();
    assert_eq!(refused.get("unauthorized"), Some(&8));
    assert_eq!(refused.get("forbidden"), Some(&2));
    assert_eq!(s.collector.metrics().duplicates(), 2);
    s.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_input_is_refused_and_never_stored_as_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let ingest = Ingest::start(
        Box::new(SqliteStore::open(&db).unwrap()),
        Box::new(SqliteStore::open(&db).unwrap()),
        Box::new(SqliteStore::open(&db).unwrap()),
        Arc::new(Metrics::default()),
        Default::default(),
    )
    .unwrap();
    let token = add_token(&StoreLocation::Sqlite(db.clone()), "p1");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let valid = batch("p1", 1, &mut rng).encode().unwrap();
    for i in 0..3000u64 {
        let bytes: Vec<u8> = match i % 3 {
            0 => (0..rng.gen_range(0..400)).map(|_| rng.gen()).collect(),
            1 => {
                let mut b = valid.clone();
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(0..b.len());
                    b[at] = rng.gen();
                }
                b
            }
            _ => valid[..rng.gen_range(0..valid.len())].to_vec(),
        };
        let ack = ingest.handle(Some(&token), &bytes).await;
        assert!(
            matches!(
                ack.status,
                AckStatus::Invalid
                    | AckStatus::Forbidden
                    | AckStatus::Stored
                    | AckStatus::Duplicate
            ),
            "{:?}",
            ack
        );
    }
    // Whatever was stored is a valid, consistent batch that decodes to itself.
    let mut store = SqliteStore::open(&db).unwrap();
    for row in store.select(&Default::default()).unwrap() {
        row.series.check().unwrap();
        let raw = store
            .batch_bytes(&row.probe_id, row.sequence)
            .unwrap()
            .unwrap();
        let b = Batch::decode(&raw).unwrap();
        assert_eq!(b.probe_id, "p1");
    }
    // And it still takes a good batch.
    let good = batch("p1", 99, &mut rng).encode().unwrap();
    assert_eq!(
        ingest.handle(Some(&token), &good).await.status,
        AckStatus::Stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_future_batches_are_refused_with_a_reason() {
    let s = setup().await;
    let token = add_token(&s.db, "p1");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut future = batch("p1", 1, &mut rng);
    future.series[0].window.start_unix_ms = now_ms() + 86_400_000;
    future.series[0].window.end_unix_ms = now_ms() + 86_460_000;
    let port = s.collector.quic_addr().port();
    let ack = uploader(&s, port, &token)
        .send(&future.encode().unwrap(), std::time::Instant::now())
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Invalid);
    assert!(ack.reason.contains("clock"), "{}", ack.reason);
    let huge = vec![0u8; vantage_wire::MAX_BATCH_BYTES + 10];
    let https_only = tcp_only_forwarder(s.collector.https_addr()).await;
    for port in [port, https_only] {
        let ack = uploader(&s, port, &token)
            .send(&huge, std::time::Instant::now())
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::TooLarge, "port {port}");
    }
    assert_eq!(s.db.open().unwrap().batch_count().unwrap(), 0);
    s.collector.shutdown().await;
}

/// A probe killed with batches in its spool sends them when it starts
/// again; a batch sent but not yet deleted when the probe died is sent
/// again and acknowledged as a duplicate, not stored twice. With UDP
/// blocked, all of it goes over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_batches_survive_a_restart_and_udp_blocking() {
    let s = setup().await;
    let token = add_token(&s.db, "p1");
    let spool_dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let batches: Vec<Vec<u8>> = (1..=20)
        .map(|seq| batch("p1", seq, &mut rng).encode().unwrap())
        .collect();
    {
        // The "killed" probe: spooled, never sent.
        let mut spool = Spool::open(spool_dir.path(), 1 << 30).unwrap();
        for (i, b) in batches.iter().enumerate() {
            spool.push(i as u64 + 1, b, 0).unwrap();
        }
    }
    let https_only = tcp_only_forwarder(s.collector.https_addr()).await;
    for round in 0..2 {
        let spool = Arc::new(Mutex::new(Spool::open(spool_dir.path(), 1 << 30).unwrap()));
        if round == 1 {
            // Died after sending 5..=9 but before deleting them.
            let mut sp = spool.lock().unwrap();
            for seq in 5..=9u64 {
                sp.push(seq, &batches[seq as usize - 1], 0).unwrap();
            }
        }
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_uploader(
            vec![uploader(&s, https_only, &token)],
            spool.clone(),
            Arc::new(Notify::new()),
            stop,
            Duration::from_secs(20),
            Duration::from_millis(50),
        ));
        stop_tx.send(true).unwrap();
        let stats = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            spool.lock().unwrap().is_empty(),
            "round {round}: spool drained"
        );
        if round == 0 {
            assert_eq!(stats.stored, 20);
        } else {
            assert_eq!((stats.stored, stats.duplicates), (0, 5));
        }
    }
    let mut store = s.db.open().unwrap();
    assert_eq!(store.batch_count().unwrap(), 20);
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(
            store.batch_bytes("p1", i as u64 + 1).unwrap().as_deref(),
            Some(&b[..]),
            "batch {}",
            i + 1
        );
    }
    s.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_over_https() {
    let s = setup().await;
    let token = add_token(&s.db, "p1");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let b = batch("p1", 1, &mut rng).encode().unwrap();
    uploader(&s, s.collector.quic_addr().port(), &token)
        .send(&b, std::time::Instant::now())
        .await
        .unwrap();
    let text = s.collector.metrics().render();
    assert!(
        text.contains("vantage_collector_batches_stored_total 1"),
        "{text}"
    );
    assert!(
        text.contains("vantage_collector_series_stored_total 3"),
        "{text}"
    );
    s.collector.shutdown().await;
}

/// PostgreSQL stopped with `pg_ctl stop -m immediate` while probes upload:
/// the collector refuses with `storage_unavailable` (the probe keeps the
/// batch and sends it again), connects again by itself once the database
/// is back, and in the end every batch is stored once, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_is_refused_through_then_reconnected_without_a_restart() {
    let server = pg::TestPostgres::start();
    let db = StoreLocation::Postgres(Box::new(server.location("vantage")));
    let s = setup_on(db, tempfile::tempdir().unwrap()).await;
    let token = add_token(&s.db, "p1");
    let port = s.collector.quic_addr().port();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let batches: Vec<Vec<u8>> = (1..=30)
        .map(|seq| batch("p1", seq, &mut rng).encode().unwrap())
        .collect();
    let mut up = uploader(&s, port, &token);
    for b in &batches[..10] {
        assert_eq!(
            up.send(b, std::time::Instant::now()).await.unwrap().status,
            AckStatus::Stored
        );
    }
    server.stop_immediate();
    for b in &batches[10..20] {
        let ack = up.send(b, std::time::Instant::now()).await.unwrap();
        assert_eq!(ack.status, AckStatus::Unavailable, "{}", ack.reason);
        assert!(ack.reason.contains("storage_unavailable"), "{}", ack.reason);
    }
    let health = s.collector.health();
    assert!(
        health
            .as_ref()
            .is_err_and(|why| why.contains("storage_unavailable")),
        "health says the store is down: {health:?}"
    );
    server.start_again();
    // The refused ten again, then the rest, then all thirty once more.
    for b in &batches[10..] {
        let ack = up.send(b, std::time::Instant::now()).await.unwrap();
        assert_eq!(ack.status, AckStatus::Stored, "{}", ack.reason);
    }
    assert_eq!(
        s.collector.health(),
        Ok(()),
        "healthy once a commit went through"
    );
    for b in &batches {
        assert_eq!(
            up.send(b, std::time::Instant::now()).await.unwrap().status,
            AckStatus::Duplicate
        );
    }
    let mut store = s.db.open().unwrap();
    assert_eq!(store.batch_count().unwrap(), 30);
    for (n, b) in batches.iter().enumerate() {
        let stored = store.batch_bytes("p1", n as u64 + 1).unwrap();
        assert_eq!(stored.as_deref(), Some(&b[..]), "batch {}", n + 1);
    }
    assert_eq!(
        store.select(&Default::default()).unwrap().len(),
        30 * 3,
        "every series once"
    );
    s.collector.shutdown().await;
}
