//! A roll-up migration killed with SIGKILL part-way resumes at the next
//! open: afterwards the roll-ups equal the merge of the stored series,
//! nothing lost or doubled, and the series themselves are untouched.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vantage_collector::{Incoming, SqliteStore, Store};
use vantage_store::{merge_into, Resolution, Selector};
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

const BATCHES: u64 = 24_000;

fn batch(seq: u64) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "IN").unwrap();
    let start = 1_796_256_000_000 + seq * 60_000;
    let series = ["beijing", "singapore"]
        .iter()
        .map(|dc| {
            let mut s = Series::new(
                Target {
                    name: dc.to_string(),
                    address: "127.0.0.1:1".into(),
                },
                Metric::QuicRequest,
                Window {
                    start_unix_ms: start,
                    end_unix_ms: start + 60_000,
                },
            );
            s.histogram.record(1_000 + seq % 977).unwrap();
            s.sent = 1;
            s
        })
        .collect();
    Batch {
        probe_id: format!("p{}", seq % 4),
        sequence: seq,
        campaign: "c".into(),
        labels,
        created_unix_ms: 0,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
}

fn at(resolution: Resolution) -> Selector {
    Selector {
        resolution,
        ..Selector::default()
    }
}

/// Each roll-up as the merge of the raw series it covers.
fn expected(store: &mut SqliteStore, r: Resolution) -> BTreeMap<(String, String, u64), Series> {
    let mut out: BTreeMap<(String, String, u64), Series> = BTreeMap::new();
    for row in store.select(&at(Resolution::Window)).unwrap() {
        let key = (
            row.probe_id.clone(),
            row.series.target.name.clone(),
            r.block_start(row.series.window.start_unix_ms),
        );
        match out.get_mut(&key) {
            Some(s) => merge_into(s, &row.series),
            None => {
                out.insert(key, row.series);
            }
        }
    }
    out
}

fn rolled(store: &mut SqliteStore, r: Resolution) -> BTreeMap<(String, String, u64), Series> {
    store
        .select(&at(r))
        .unwrap()
        .into_iter()
        .map(|row| {
            let key = (
                row.probe_id.clone(),
                row.series.target.name.clone(),
                r.block_start(row.series.window.start_unix_ms),
            );
            (key, row.series)
        })
        .collect()
}

/// Batches waiting to be folded into the roll-ups (`None` before the
/// migration has entered them).
fn pending(db: &std::path::Path) -> Option<u64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM rollup_pending", [], |r| {
        r.get::<_, i64>(0)
    })
    .ok()
    .map(|n| n as u64)
}

#[test]
fn a_migration_killed_part_way_resumes_without_loss_or_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    {
        let mut store = SqliteStore::open(&db).unwrap();
        let batches: Vec<Batch> = (1..=BATCHES).map(batch).collect();
        let raws: Vec<Vec<u8>> = batches.iter().map(|b| b.encode().unwrap()).collect();
        for (bs, rs) in batches.chunks(2000).zip(raws.chunks(2000)) {
            let items: Vec<Incoming<'_>> = bs
                .iter()
                .zip(rs)
                .map(|(batch, raw)| Incoming {
                    batch,
                    raw,
                    plain_histograms: &[],
                    token_hash: None,
                })
                .collect();
            store.insert_batches(&items, 0).unwrap();
        }
    }
    // Back to a store from before roll-ups.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE rollups; DROP TABLE rollup_pending; DROP TABLE meta;")
        .unwrap();
    // `vantage export` opens the store and starts the migration (every
    // batch entered as pending, then folded a chunk per transaction); kill
    // it once it has folded a chunk but not the last.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(["export", "--format", "csv", "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let waiting = pending(&db);
        if waiting.is_some_and(|n| n > 0 && n < BATCHES) {
            child.kill().unwrap();
            break waiting;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the migration finished before it could be killed ({waiting:?} pending); make the store larger"
        );
        assert!(Instant::now() < deadline, "no chunk committed in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.wait().unwrap();
    let after_kill = pending(&db);
    assert!(
        after_kill.is_some_and(|n| n > 0),
        "killed part-way: {killed_at:?} pending, {after_kill:?} after"
    );
    let mut store = SqliteStore::open(&db).unwrap();
    assert_eq!(pending(&db), Some(0), "the next open folded the rest");
    assert_eq!(store.batch_count().unwrap(), BATCHES, "no batch lost");
    assert_eq!(
        store.select(&at(Resolution::Window)).unwrap().len() as u64,
        2 * BATCHES,
        "every series kept"
    );
    for r in [Resolution::Hour, Resolution::Day] {
        let want = expected(&mut store, r);
        let got = rolled(&mut store, r);
        assert_eq!(got.len(), want.len(), "{r}");
        assert!(got == want, "{r}: every roll-up equals its series, once");
    }
}
