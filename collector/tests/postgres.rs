//! The PostgreSQL backend against a real server (Debian's package, started
//! per test in a temporary directory): exactly-once, the same answers as
//! SQLite for the same batches, tokens, roll-ups, retention and schema
//! versions.

#[path = "support/postgres.rs"]
mod pg;

use pg::TestPostgres;
use rand::{Rng, SeedableRng};
use vantage_collector::copy::{copy_store, CopyError, COPY_CHUNK};
use vantage_collector::{Incoming, Inserted, PgStore, SqliteStore, Store};
use vantage_reports::{build_report_from, Evidence, ReportOptions, ResolutionChoice};
use vantage_store::fleet::{Assignee, Fleet, ProbeHealth};
use vantage_store::{export, merge_groups, Resolution, Selector, StoreError};
use vantage_wire::campaign::PhaseSwitch;
use vantage_wire::{Batch, ErrorClass, Labels, Metric, Reason, Series, Target, Window};

/// A batch of three series over one minute of probe `probe`'s hour.
fn batch(probe: &str, seq: u64, phase: &str, rng: &mut impl Rng) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "IN").unwrap();
    labels.insert("phase", phase).unwrap();
    labels.insert("network", "wifi").unwrap();
    let start = 1_796_256_000_000 + seq * 60_000;
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
            for _ in 0..rng.gen_range(20..200) {
                s.histogram.record(rng.gen_range(20_000..400_000)).unwrap();
            }
            s.lost = rng.gen_range(0..3);
            s.errors.insert(ErrorClass::Reset, rng.gen_range(0..2));
            s.errors.insert(ErrorClass::Tls, 1);
            s.reasons.insert(Reason::TlsExpired, 1);
            s.statuses.insert(200, s.histogram.len());
            s.path.ipdv_sum_us = rng.gen_range(0..1000);
            s.server_time.sum_us = rng.gen_range(0..1000);
            s.server_time.count = 3;
            s.sent = s.histogram.len() + s.lost + s.error_total();
            s
        })
        .collect();
    Batch {
        probe_id: probe.into(),
        sequence: seq,
        campaign: "move".into(),
        labels,
        created_unix_ms: start + 61_000,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
}

fn insert(store: &mut dyn Store, batches: &[Batch]) -> Vec<Inserted> {
    insert_with_tokens(store, batches, &vec![None; batches.len()])
}

/// `batches`, each with its token hash (or none), in one transaction.
fn insert_with_tokens(
    store: &mut dyn Store,
    batches: &[Batch],
    hashes: &[Option<&str>],
) -> Vec<Inserted> {
    let raws: Vec<Vec<u8>> = batches.iter().map(|b| b.encode().unwrap()).collect();
    let items: Vec<Incoming<'_>> = batches
        .iter()
        .zip(&raws)
        .zip(hashes)
        .map(|((batch, raw), token_hash)| Incoming {
            batch,
            raw,
            plain_histograms: &[],
            token_hash: *token_hash,
        })
        .collect();
    store.insert_batches(&items, 1_796_260_000_000).unwrap()
}

/// Batches of four probes, two phases, 90 minutes (two hours touched).
fn campaign() -> Vec<Batch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut out = Vec::new();
    for (p, phase) in [
        ("a", "before"),
        ("b", "before"),
        ("c", "after"),
        ("d", "after"),
    ] {
        for seq in 1..=90 {
            out.push(batch(p, seq, phase, &mut rng));
        }
    }
    out
}

/// What a store hands back at every resolution: each row in order, with
/// its histogram's encoding, and the export of its groups by probe, as bytes.
fn renderings(store: &mut dyn Store) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for resolution in [Resolution::Window, Resolution::Hour, Resolution::Day] {
        let mut selector: Selector = "country=IN".parse().unwrap();
        selector.resolution = resolution;
        let rows = store.select(&selector).unwrap();
        assert!(!rows.is_empty(), "{resolution:?}");
        let mut listed = Vec::new();
        for r in &rows {
            let mut series = r.series.clone();
            let mut hist = Vec::new();
            vantage_wire::encode_histogram_plain(&series.histogram, &mut hist).unwrap();
            series.histogram.reset();
            listed.push(format!(
                "{} {} {} {:?} {:?} {hist:?}",
                r.probe_id, r.sequence, r.campaign, r.labels, series
            ));
        }
        out.push((
            format!("{resolution:?} rows"),
            listed.join("\n").into_bytes(),
        ));
        let keys = vec!["probe".to_string(), "phase".to_string()];
        let groups = merge_groups(&rows, &keys);
        let table: Vec<_> = groups
            .iter()
            .map(|g| export::GroupRow::new(&keys, g))
            .collect();
        out.push((
            format!("{resolution:?} csv"),
            export::render_csv(&table).unwrap(),
        ));
    }
    out
}

/// The before/after report of a store, as its CSV and terminal summary.
fn report(store: &mut dyn Store, choice: ResolutionChoice) -> Vec<(String, Vec<u8>)> {
    let options = ReportOptions {
        baseline: "phase=before".into(),
        candidate: "phase=after".into(),
        resamples: 200,
        claims: vec!["IN quic_request p50 decreases by >= 1ms".parse().unwrap()],
        ..ReportOptions::default()
    };
    let evidence = Evidence::gather_at(
        store,
        &options.group_by,
        &options.baseline.parse().unwrap(),
        &options.candidate.parse().unwrap(),
        choice,
        2,
    )
    .unwrap();
    let report = build_report_from(&evidence, &options);
    assert!(!report.groups.is_empty());
    vec![
        (
            format!("{choice:?} csv"),
            vantage_reports::render_csv(&report).unwrap(),
        ),
        (
            format!("{choice:?} text"),
            vantage_reports::render_text(&report).into_bytes(),
        ),
    ]
}

/// Asserts two renderings equal, naming the first line that differs.
fn same(pg: &[(String, Vec<u8>)], lite: &[(String, Vec<u8>)], when: &str) {
    assert_eq!(pg.len(), lite.len());
    for ((name, a), (_, b)) in pg.iter().zip(lite) {
        let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
        for (n, (la, lb)) in a.lines().zip(b.lines()).enumerate() {
            assert_eq!(la, lb, "{when}: {name}, line {n}: PostgreSQL, then SQLite");
        }
        assert_eq!(
            a.lines().count(),
            b.lines().count(),
            "{when}: {name}: line counts"
        );
    }
}

#[test]
fn stores_once_and_answers_as_sqlite_does() {
    let server = TestPostgres::start();
    let mut pg = PgStore::open(&server.location("vantage")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lite = SqliteStore::open(&dir.path().join("v.db")).unwrap();
    let batches = campaign();
    for store in [&mut pg as &mut dyn Store, &mut lite] {
        // In groups, as the writer commits them; half again as duplicates,
        // one key twice inside one group.
        for group in batches.chunks(64) {
            assert!(insert(store, group).iter().all(|i| *i == Inserted::Stored));
        }
        let mut again = batches[..100].to_vec();
        again.push(batches[0].clone());
        assert!(insert(store, &again)
            .iter()
            .all(|i| *i == Inserted::Duplicate));
        let mut fresh = vec![batch(
            "e",
            1,
            "after",
            &mut rand::rngs::StdRng::seed_from_u64(1),
        )];
        fresh.push(fresh[0].clone());
        assert_eq!(
            insert(store, &fresh),
            [Inserted::Stored, Inserted::Duplicate]
        );
        assert_eq!(store.batch_count().unwrap(), batches.len() as u64 + 1);
        assert_eq!(store.unfolded_batches().unwrap(), batches.len() as u64 + 1);
    }
    // Unfolded: roll-ups read whole from the pending batches.
    same(&renderings(&mut pg), &renderings(&mut lite), "unfolded");
    // Folded part way, then whole.
    assert_eq!(pg.fold_rollups(100).unwrap(), 100);
    // Folded unevenly: a read hands the same rows in the same order
    // however far the folds have come.
    assert_eq!(lite.fold_rollups(77).unwrap(), 77);
    same(&renderings(&mut pg), &renderings(&mut lite), "part folded");
    while pg.fold_rollups(100).unwrap() > 0 {}
    while lite.fold_rollups(1000).unwrap() > 0 {}
    assert_eq!(pg.unfolded_batches().unwrap(), 0);
    same(&renderings(&mut pg), &renderings(&mut lite), "folded");
    // The same report from both, at every resolution: figures, intervals
    // (one seed, the same units in the same order) and verdicts.
    for choice in [
        ResolutionChoice::Auto,
        ResolutionChoice::Fixed(Resolution::Window),
        ResolutionChoice::Fixed(Resolution::Hour),
    ] {
        same(
            &report(&mut pg, choice),
            &report(&mut lite, choice),
            "report",
        );
    }
    // The raw bytes come back as received.
    let b = &batches[5];
    assert_eq!(
        pg.batch_bytes(&b.probe_id, b.sequence).unwrap(),
        Some(b.encode().unwrap())
    );
    // Retention removes the same on both, and the roll-ups stay.
    let (p, l) = (
        pg.remove_raw_before(u64::MAX / 2, 50).unwrap(),
        lite.remove_raw_before(u64::MAX / 2, 50).unwrap(),
    );
    assert_eq!((p.batches, p.series), (50, 150));
    assert_eq!((p.batches, p.series), (l.batches, l.series));
    same(
        &renderings(&mut pg)[2..],
        &renderings(&mut lite)[2..],
        "after retention",
    );
}

#[test]
fn two_collectors_storing_the_same_batches_at_once_store_each_once() {
    let server = TestPostgres::start();
    let location = server.location("vantage");
    let batches = campaign();
    let threads: Vec<_> = (0..2)
        .map(|n| {
            let (location, mut batches) = (location.clone(), batches.clone());
            if n == 1 {
                batches.reverse();
            }
            std::thread::spawn(move || {
                let mut store = PgStore::open(&location).unwrap();
                let mut stored = 0;
                for group in batches.chunks(16) {
                    stored += insert(&mut store, group)
                        .iter()
                        .filter(|i| **i == Inserted::Stored)
                        .count();
                }
                stored
            })
        })
        .collect();
    let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(stored, batches.len(), "each batch stored by exactly one");
    let mut store = PgStore::open(&location).unwrap();
    assert_eq!(store.batch_count().unwrap(), batches.len() as u64);
    let rows = store.select(&"country=IN".parse().unwrap()).unwrap();
    assert_eq!(rows.len(), batches.len() * 3);
    assert_eq!(
        server
            .psql("vantage", "SELECT count(*) FROM rollup_pending")
            .trim(),
        batches.len().to_string()
    );
}

#[test]
fn tokens_live_in_the_database_and_a_revoke_is_seen_at_once() {
    let server = TestPostgres::start();
    let location = server.location("vantage");
    let mut admin = PgStore::open(&location).unwrap();
    let mut collector = PgStore::open(&location).unwrap();
    admin.add_token("in-1", "hash-a", 1).unwrap();
    admin.add_token("in-1", "hash-b", 2).unwrap();
    admin.add_token("my-1", "hash-c", 3).unwrap();
    assert_eq!(
        collector.token_probe("hash-a").unwrap().as_deref(),
        Some("in-1")
    );
    assert_eq!(collector.token_probe("nope").unwrap(), None);
    assert!(
        admin.add_token("x", "hash-a", 4).is_err(),
        "a hash is unique"
    );
    assert_eq!(admin.revoke_tokens("in-1", 10).unwrap(), 2);
    assert_eq!(admin.revoke_tokens("in-1", 11).unwrap(), 0);
    assert_eq!(collector.token_probe("hash-a").unwrap(), None);
    assert_eq!(
        collector.token_probe("hash-c").unwrap().as_deref(),
        Some("my-1")
    );
    let listed = collector.tokens().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].probe_id, "in-1");
    assert_eq!(listed[0].revoked_unix_ms, Some(10));
    assert_eq!(listed[2].revoked_unix_ms, None);
}

#[test]
fn the_storing_transaction_checks_each_batch_token_on_both_backends() {
    let server = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = PgStore::open(&server.location("vantage")).unwrap();
    let mut lite = SqliteStore::open(&dir.path().join("v.db")).unwrap();
    for store in [&mut pg as &mut dyn Store, &mut lite] {
        store.add_token("in-1", "hash-a", 1).unwrap();
        store.add_token("my-1", "hash-c", 2).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let b: Vec<Batch> = (1..=6)
            .map(|seq| batch("in-1", seq, "before", &mut rng))
            .collect();
        // One group: valid, another probe's token, unknown, no token (a
        // copy), and a duplicate of the first under a valid token.
        let out = insert_with_tokens(
            store,
            &[
                b[0].clone(),
                b[1].clone(),
                b[2].clone(),
                b[3].clone(),
                b[0].clone(),
            ],
            &[
                Some("hash-a"),
                Some("hash-c"),
                Some("nope"),
                None,
                Some("hash-a"),
            ],
        );
        use Inserted::{Duplicate, Stored, TokenRevoked};
        assert_eq!(out, [Stored, TokenRevoked, TokenRevoked, Stored, Duplicate]);
        store.revoke_tokens("in-1", 10).unwrap();
        let out = insert_with_tokens(store, &b[4..6], &[Some("hash-a"), None]);
        assert_eq!(out, [TokenRevoked, Stored]);
        assert_eq!(store.batch_count().unwrap(), 3, "only the batches allowed");
    }
}

#[test]
fn the_fleet_is_kept_alike_on_both_backends() {
    let server = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = PgStore::open(&server.location("vantage")).unwrap();
    let mut lite = SqliteStore::open(&dir.path().join("v.db")).unwrap();
    let mut seen = Vec::new();
    for store in [&mut pg as &mut dyn Store, &mut lite] {
        let after = PhaseSwitch {
            at_unix_ms: 1_796_300_000_000,
            phase: "after".into(),
        };
        assert_eq!(store.campaign_version("move", None).unwrap(), None);
        assert_eq!(
            store
                .put_campaign("move", "window = \"60s\"\n", &[], 10)
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .put_campaign(
                    "move",
                    "window = \"60s\"\n",
                    std::slice::from_ref(&after),
                    20
                )
                .unwrap(),
            2
        );
        assert_eq!(store.put_campaign("other", "", &[], 30).unwrap(), 1);
        let latest = store.campaign_version("move", None).unwrap().unwrap();
        assert_eq!((latest.version, latest.phases.clone()), (2, vec![after]));
        let first = store.campaign_version("move", Some(1)).unwrap().unwrap();
        assert_eq!(
            (first.version, first.phases.len(), first.created_unix_ms),
            (1, 0, 10)
        );
        assert_eq!(store.campaign_version("move", Some(3)).unwrap(), None);
        assert_eq!(
            store.campaigns().unwrap(),
            [("move".to_string(), 2), ("other".to_string(), 1)]
        );
        store
            .assign("move", &Assignee::Probe("in-1".into()), 40)
            .unwrap();
        store
            .assign("move", &Assignee::Labels("country=MY".into()), 41)
            .unwrap();
        // Assigning a probe again moves it: one campaign per assignee.
        store
            .assign("other", &Assignee::Probe("in-1".into()), 42)
            .unwrap();
        let assigned = store.assignments().unwrap();
        assert_eq!(assigned.len(), 2);
        assert_eq!(
            (
                assigned[1].campaign.as_str(),
                &assigned[1].assignee,
                assigned[1].created_unix_ms
            ),
            ("other", &Assignee::Probe("in-1".into()), 42)
        );
        let mut health = ProbeHealth {
            probe_id: "in-1".into(),
            seen_unix_ms: 50,
            software: "0.1.0".into(),
            applied: Some(("move".into(), 2)),
            campaign_error: None,
            backlog_batches: 3,
            backlog_bytes: 3000,
            dropped_batches: 0,
            uptime_s: 60,
            clock_offset: Some((-1200, 400)),
            labels: "country=IN".into(),
            window_ms: 60_000,
        };
        store.put_health(&health).unwrap();
        health.seen_unix_ms = 60;
        health.campaign_error = Some("line 3: unknown field".into());
        health.clock_offset = None;
        store.put_health(&health).unwrap();
        let mut other = health.clone();
        other.probe_id = "a-first".into();
        other.applied = None;
        store.put_health(&other).unwrap();
        let fleet = store.fleet_health().unwrap();
        assert_eq!(fleet, [other.clone(), health.clone()]);
        seen.push(fleet);
        // The latest batches by sequence, newest first, however they came.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let batches: Vec<Batch> = [5, 1, 3, 2, 4]
            .iter()
            .map(|&n| batch("in-1", n, "before", &mut rng))
            .collect();
        insert(store, &batches);
        let created = |n: u64| 1_796_256_000_000 + n * 60_000 + 61_000;
        assert_eq!(
            store.recent_batches("in-1", 3).unwrap(),
            [created(5), created(4), created(3)]
        );
        assert_eq!(store.recent_batches("in-1", 10).unwrap().len(), 5);
        assert!(store.recent_batches("nobody", 10).unwrap().is_empty());
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn every_connection_commits_synchronously_whatever_the_default() {
    let server = TestPostgres::start();
    server.psql(
        "vantage",
        "ALTER DATABASE vantage SET synchronous_commit = off",
    );
    let mut store = PgStore::open(&server.location("vantage")).unwrap();
    assert_eq!(store.setting("synchronous_commit").unwrap(), "on");
}

#[test]
fn a_database_with_a_newer_schema_is_refused_and_left_alone() {
    let server = TestPostgres::start();
    let location = server.location("vantage");
    drop(PgStore::open(&location).unwrap());
    let version = || {
        server
            .psql("vantage", "SELECT version FROM schema_version")
            .trim()
            .to_string()
    };
    assert_eq!(version(), "6");
    // A version-3 database (before the fleet and the losses of unknown
    // direction) gains the fleet's tables and the columns.
    server.psql(
        "vantage",
        "DROP TABLE campaign_versions, campaign_assignments, probe_health, traces; \
         ALTER TABLE series DROP COLUMN unknown_direction_lost, DROP COLUMN edges; \
         ALTER TABLE rollups DROP COLUMN unknown_direction_lost, DROP COLUMN edges; \
         UPDATE schema_version SET version = 3",
    );
    let mut store = PgStore::open(&location).unwrap();
    assert_eq!(version(), "6");
    assert_eq!(store.put_campaign("c", "", &[], 1).unwrap(), 1);
    drop(store);
    // A version-4 database gains the columns, and stores and folds them.
    server.psql(
        "vantage",
        "DROP TABLE traces; \
         ALTER TABLE series DROP COLUMN unknown_direction_lost, DROP COLUMN edges; \
         ALTER TABLE rollups DROP COLUMN unknown_direction_lost, DROP COLUMN edges; \
         UPDATE schema_version SET version = 4",
    );
    let mut store = PgStore::open(&location).unwrap();
    assert_eq!(version(), "6");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut b = batch("p1", 1, "before", &mut rng);
    b.series[0].path.unknown_direction_lost = 7;
    let raw = b.encode().unwrap();
    store
        .insert_batches(
            &[Incoming {
                batch: &b,
                raw: &raw,
                plain_histograms: &[],
                token_hash: None,
            }],
            1,
        )
        .unwrap();
    store.fold_rollups(usize::MAX).unwrap();
    for resolution in [Resolution::Window, Resolution::Hour] {
        let rows = store
            .select(&Selector {
                resolution,
                ..Selector::default()
            })
            .unwrap();
        let unknown: u64 = rows
            .iter()
            .map(|r| r.series.path.unknown_direction_lost)
            .sum();
        assert_eq!(unknown, 7, "{resolution}");
    }
    drop(store);
    // A version-5 database gains the traces table, and stores traces.
    server.psql(
        "vantage",
        "DROP TABLE traces; ALTER TABLE series DROP COLUMN edges; \
         ALTER TABLE rollups DROP COLUMN edges; UPDATE schema_version SET version = 5",
    );
    let mut store = PgStore::open(&location).unwrap();
    assert_eq!(version(), "6");
    let mut b = traced_batch("p2", 1, "after");
    b.series[0].count_edge("cloudfront:BOM78-P1");
    assert_eq!(
        insert(&mut store, std::slice::from_ref(&b)),
        [Inserted::Stored]
    );
    let mut traces = Vec::new();
    store
        .select_traces(&Selector::default(), &mut |t| {
            traces.push(t.trace);
            Ok(())
        })
        .unwrap();
    assert_eq!(traces, b.traces);
    let rows = store.select(&"probe=p2".parse().unwrap()).unwrap();
    assert_eq!(rows[0].series.edges, b.series[0].edges, "edges stored");
    drop(store);
    server.psql("vantage", "UPDATE schema_version SET version = 99");
    let err = PgStore::open(&location).err().expect("refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("version 99") && text.contains("upgrade vantage"),
        "{text}"
    );
    assert_eq!(
        server
            .psql("vantage", "SELECT version FROM schema_version")
            .trim(),
        "99"
    );
}

#[test]
fn a_wrong_password_and_a_down_server_say_so() {
    let server = TestPostgres::start();
    let wrong =
        vantage_collector::PgLocation::parse(&server.url(), None, Some("wrong".into())).unwrap();
    let err = PgStore::open(&wrong).err().expect("refused").to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "the password is never shown: {err}");
    // Over the Unix socket (trust for local connections here).
    let socket =
        vantage_collector::PgLocation::parse(&server.socket_conninfo(), None, None).unwrap();
    let mut store = PgStore::open(&socket).unwrap();
    store.ping().unwrap();
    // The server goes away and comes back: the store fails, then reconnects.
    server.stop_immediate();
    let down = store.ping().expect_err("down").to_string();
    assert!(down.contains(socket.place()), "{down}");
    server.start_again();
    store.ping().unwrap();
    assert_eq!(store.batch_count().unwrap(), 0);
}

#[test]
fn store_copy_moves_every_batch_once_and_resumes_after_a_stop() {
    let server = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut lite = SqliteStore::open(&dir.path().join("v.db")).unwrap();
    let batches = campaign();
    for group in batches.chunks(50) {
        insert(&mut lite, group);
    }
    lite.add_token("a", "hash-live", 1).unwrap();
    lite.add_token("b", "hash-revoked", 1).unwrap();
    lite.revoke_tokens("b", 5).unwrap();
    lite.add_token("b", "hash-b-live", 6).unwrap();
    lite.fold_rollups(100).unwrap();
    let mut pg = PgStore::open(&server.location("vantage")).unwrap();
    // A first copy stopped after its first chunk: what it committed is whole.
    let stopped = copy_store(&mut lite, "v.db", &mut pg, &mut |_| false).unwrap_err();
    let CopyError::Stopped(first) = stopped else {
        panic!("{stopped}")
    };
    assert_eq!(first.read, COPY_CHUNK as u64);
    assert_eq!(pg.batch_count().unwrap(), COPY_CHUNK as u64);
    // Run again: the rest, and the first chunk answered as already there.
    let mut seen = Vec::new();
    let done = copy_store(&mut lite, "v.db", &mut pg, &mut |p| {
        seen.push(*p);
        true
    })
    .unwrap();
    assert_eq!(done.total, batches.len() as u64);
    assert_eq!(done.read, batches.len() as u64);
    assert_eq!(done.already, COPY_CHUNK as u64);
    assert_eq!(done.copied, (batches.len() - COPY_CHUNK) as u64);
    assert_eq!(done.tokens, 0, "the first copy brought them");
    assert!(
        seen.windows(2).all(|w| w[0].read < w[1].read),
        "progress grows"
    );
    assert_eq!(pg.batch_count().unwrap(), batches.len() as u64);
    same(&renderings(&mut pg), &renderings(&mut lite), "copied");
    for b in &batches[..5] {
        assert_eq!(
            pg.batch_bytes(&b.probe_id, b.sequence).unwrap(),
            lite.batch_bytes(&b.probe_id, b.sequence).unwrap()
        );
    }
    // Tokens: the revoked one stays revoked, the live ones live.
    assert_eq!(pg.token_probe("hash-live").unwrap().as_deref(), Some("a"));
    assert_eq!(pg.token_probe("hash-b-live").unwrap().as_deref(), Some("b"));
    assert_eq!(pg.token_probe("hash-revoked").unwrap(), None);
    // After retention the source can no longer be copied whole: it says so.
    lite.fold_rollups(10_000).unwrap();
    lite.remove_raw_before(u64::MAX / 2, 10).unwrap();
    let other = server.create_database("other");
    let mut empty = PgStore::open(
        &vantage_collector::PgLocation::parse(&other, None, Some(pg::PASSWORD.into())).unwrap(),
    )
    .unwrap();
    let err = copy_store(&mut lite, "v.db", &mut empty, &mut |_| true).unwrap_err();
    assert!(matches!(err, CopyError::RawRemoved { .. }), "{err}");
    assert!(err.to_string().contains("--keep-raw"), "{err}");
}

#[test]
fn tls_to_the_database_is_rustls_and_checks_the_certificate() {
    let server = TestPostgres::start();
    let certs = tempfile::tempdir().unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    vantage_tls::Identity::load_or_generate(&certs.path().join("server"), &names).unwrap();
    vantage_tls::Identity::load_or_generate(&certs.path().join("other"), &names).unwrap();
    let read = |p: &str| std::fs::read(certs.path().join(p)).unwrap();
    server.require_tls(&read("server/cert.pem"), &read("server/key.pem"));
    let at = |query: &str| {
        vantage_collector::PgLocation::parse(
            &format!(
                "postgres://vantage@127.0.0.1:{}/vantage?{query}",
                server.port
            ),
            None,
            Some(pg::PASSWORD.into()),
        )
        .unwrap()
    };
    // The server takes TCP connections only over TLS: this one got in, so
    // it was encrypted, and its certificate was checked against the CA.
    let ca = certs.path().join("server/cert.pem");
    let mut store = PgStore::open(&at(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.display()
    )))
    .unwrap();
    store.ping().unwrap();
    store.add_token("p", "h", 1).unwrap();
    // A certificate from another CA is refused, saying why.
    let other = certs.path().join("other/cert.pem");
    let err = PgStore::open(&at(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    )))
    .err()
    .expect("refused");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate"), "{text}");
    // Without TLS the server refuses; `require` encrypts without checking.
    let err = PgStore::open(&at("sslmode=disable"))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no encryption"), "{err}");
    PgStore::open(&at("sslmode=require"))
        .unwrap()
        .ping()
        .unwrap();
}

/// A batch of `batch`'s series and two traces toward Singapore, one
/// reached through a silent hop, one ended silent.
fn traced_batch(probe: &str, seq: u64, phase: &str) -> Batch {
    use std::time::Duration;
    use vantage_wire::trace::{End, HopRecord, PathTrace, Trace};
    let mut b = batch(
        probe,
        seq,
        phase,
        &mut rand::rngs::StdRng::seed_from_u64(seq),
    );
    let hop = |ttl, address: Option<&str>, rtt_us: Option<u64>| HopRecord {
        ttl,
        address: address.map(|a| a.parse().unwrap()),
        rtts: vec![rtt_us.map(Duration::from_micros); 2],
    };
    let start = b.series[0].window.start_unix_ms;
    b.traces = vec![
        PathTrace {
            target: b.series[0].target.clone(),
            started_unix_ms: start + 1_000,
            trace: Trace {
                hops: vec![
                    hop(1, Some("198.18.0.1"), Some(5_000)),
                    hop(2, None, None),
                    hop(3, Some("2001:db8::9"), Some(70_000 + seq)),
                ],
                end: End::Reached,
            },
        },
        PathTrace {
            target: b.series[0].target.clone(),
            started_unix_ms: start + 31_000,
            trace: Trace {
                hops: vec![hop(1, Some("198.18.0.1"), Some(5_000)), hop(2, None, None)],
                end: End::Silent,
            },
        },
    ];
    b
}

#[test]
fn traces_are_stored_once_and_read_alike_on_both_backends() {
    let server = TestPostgres::start();
    let mut pg = PgStore::open(&server.location("vantage")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lite = SqliteStore::open(&dir.path().join("v.db")).unwrap();
    let batches: Vec<Batch> = (1..=6)
        .map(|seq| traced_batch("t", seq, if seq <= 3 { "before" } else { "after" }))
        .collect();
    let mut read = Vec::new();
    for store in [&mut pg as &mut dyn Store, &mut lite] {
        assert!(insert(store, &batches)
            .iter()
            .all(|i| *i == Inserted::Stored));
        assert!(insert(store, &batches[..2])
            .iter()
            .all(|i| *i == Inserted::Duplicate));
        let mut traces = Vec::new();
        let n = store
            .select_traces(&"phase=after".parse().unwrap(), &mut |t| {
                traces.push(t);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 6, "three batches of two traces, each stored once");
        let want: Vec<_> = batches[3..].iter().flat_map(|b| b.traces.clone()).collect();
        let got: Vec<_> = traces.iter().map(|t| t.trace.clone()).collect();
        assert_eq!(got, want);
        assert_eq!(traces[0].labels.get("country"), Some("IN"));
        assert_eq!((traces[0].probe_id.as_str(), traces[0].sequence), ("t", 4));
        // A selector on a metric other than path_trace takes none.
        let none = store
            .select_traces(&"metric=udp_rtt".parse().unwrap(), &mut |_| Ok(()))
            .unwrap();
        assert_eq!(none, 0);
        read.push(traces);
    }
    assert_eq!(
        read[0], read[1],
        "PostgreSQL and SQLite read the same traces"
    );
}
