//! Retention end to end: a collector told to keep one-minute series for a
//! day removes older ones, in bounded steps between commits, only once
//! they are folded into the roll-ups; counts it in /metrics; the roll-ups
//! still cover the whole campaign, a late duplicate is still known, and a
//! report asking for one-minute data it no longer has says what it has.

use std::sync::Arc;
use std::time::{Duration, Instant};
use vantage_collector::upkeep::UpkeepConfig;
use vantage_collector::{hash_token, new_token, Ingest, Metrics, SqliteStore, Store};
use vantage_reports::{Evidence, GatherError, ResolutionChoice};
use vantage_store::{Resolution, Selector};
use vantage_wire::upload::AckStatus;
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

const DAY: u64 = 86_400_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One series of `samples` values, in the window starting at `start`.
fn batch(seq: u64, phase: &str, start: u64, samples: u64) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "MY").unwrap();
    labels.insert("phase", phase).unwrap();
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
    for v in 0..samples {
        s.histogram.record(10_000 + 97 * v + seq).unwrap();
    }
    s.sent = samples;
    Batch {
        probe_id: "p1".into(),
        sequence: seq,
        campaign: "move".into(),
        labels,
        created_unix_ms: start + 60_500,
        dropped_batches: 0,
        traces: Vec::new(),
        series: vec![s],
    }
}

fn selector(text: &str, resolution: Resolution) -> Selector {
    Selector {
        resolution,
        ..text.parse().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_series_past_keep_raw_are_removed_once_folded_and_rollups_keep_the_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let token = new_token();
    SqliteStore::open(&db)
        .unwrap()
        .add_token("p1", &hash_token(&token), 1)
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let ingest = Ingest::start(
        Box::new(SqliteStore::open(&db).unwrap()),
        Box::new(SqliteStore::open(&db).unwrap()),
        Box::new(SqliteStore::open(&db).unwrap()),
        metrics.clone(),
        UpkeepConfig {
            keep_raw: Some(Duration::from_millis(DAY)),
            fold_every: Duration::from_millis(200),
        },
    )
    .unwrap();
    // Three days ago, 40 windows "before"; the last hour, 5 windows "after".
    let now = now_ms() / 60_000 * 60_000;
    let mut batches: Vec<Batch> = (1..=40)
        .map(|seq| batch(seq, "before", now - 3 * DAY + seq * 60_000, 20))
        .collect();
    batches.extend((41..=45).map(|seq| batch(seq, "after", now - 3_600_000 + seq * 60_000, 30)));
    for b in &batches {
        let ack = ingest.handle(Some(&token), &b.encode().unwrap()).await;
        assert_eq!(ack.status, AckStatus::Stored, "{}", ack.reason);
    }
    let waited = Instant::now();
    while metrics.raw_removed().batches < 40 && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let removed = metrics.raw_removed();
    assert_eq!(
        (removed.batches, removed.series),
        (40, 40),
        "the old ones, and only them"
    );
    let text = metrics.render();
    assert!(
        text.contains("vantage_collector_raw_series_removed_total 40"),
        "{text}"
    );
    assert!(
        text.contains("vantage_collector_batches_folded_total 45"),
        "{text}"
    );

    let mut store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.unfolded_batches().unwrap(), 0);
    let raw = store
        .select(&selector("country=MY", Resolution::Window))
        .unwrap();
    assert_eq!(raw.len(), 5, "one-minute series of the last day kept");
    assert!(raw.iter().all(|r| r.labels.get("phase") == Some("after")));
    assert_eq!(store.batch_bytes("p1", 1).unwrap(), None);
    assert!(store.batch_bytes("p1", 45).unwrap().is_some());
    assert_eq!(store.batch_count().unwrap(), 45, "batch keys kept");
    for (phase, samples) in [("before", 40 * 20), ("after", 5 * 30)] {
        for r in [Resolution::Hour, Resolution::Day] {
            let rows = store
                .select(&selector(&format!("phase={phase}"), r))
                .unwrap();
            let total: u64 = rows.iter().map(|row| row.series.histogram.len()).sum();
            assert_eq!(total, samples, "{phase} at {r}: every sample still counted");
        }
    }
    // A late duplicate of a removed batch is still acknowledged as one.
    let again = ingest
        .handle(Some(&token), &batches[0].encode().unwrap())
        .await;
    assert_eq!(again.status, AckStatus::Duplicate);
    // One-minute data asked for where only roll-ups are left.
    let before = selector("phase=before", Resolution::Window);
    let err = Evidence::gather_at(
        &mut store,
        &[],
        &before,
        &before,
        ResolutionChoice::Fixed(Resolution::Window),
        3,
    )
    .unwrap_err();
    assert!(
        matches!(&err, GatherError::NoSuchResolution { available, .. } if available == &[Resolution::Hour, Resolution::Day]),
        "{err}"
    );
}
