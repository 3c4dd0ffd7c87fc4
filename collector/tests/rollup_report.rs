//! A report from roll-ups against the same report from the one-minute
//! series, through the real SQLite store: merges are exact, so every
//! percentile is the same; and the roll-ups are the (probe, hour) units,
//! so the same seed gives the same intervals as those units built by hand.

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vantage_collector::{Incoming, SqliteStore, Store};
use vantage_reports::{build_report_from, Evidence, ReportOptions, ResolutionChoice, Role};
use vantage_store::{merge_into, Resolution, Selector, StoredSeries};
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

/// Three probes a phase, three hours of one-minute windows, a phase 300 ms
/// slower before than after.
fn fill(store: &mut SqliteStore) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (phase, base_us) in [("before", 400_000u64), ("after", 100_000)] {
        for probe in 0..3 {
            let mut batches = Vec::new();
            for w in 0..180u64 {
                let mut labels = Labels::new();
                labels.insert("country", "IN").unwrap();
                labels.insert("phase", phase).unwrap();
                let mut s = Series::new(
                    Target {
                        name: "dc".into(),
                        address: "127.0.0.1:1".into(),
                    },
                    Metric::QuicRequest,
                    Window {
                        start_unix_ms: 1_796_256_000_000 + w * 60_000,
                        end_unix_ms: 1_796_256_000_000 + (w + 1) * 60_000,
                    },
                );
                // Each probe and hour its own level, so units differ.
                let level = base_us + probe * 7_000 + (w / 60) * 3_000;
                for _ in 0..20 {
                    s.histogram
                        .record(level + rng.gen_range(0..30_000))
                        .unwrap();
                }
                s.sent = 21;
                s.lost = 1;
                batches.push(Batch {
                    probe_id: format!("{phase}-p{probe}"),
                    sequence: w + 1,
                    campaign: "c".into(),
                    labels,
                    created_unix_ms: 0,
                    dropped_batches: 0,
                    traces: Vec::new(),
                    series: vec![s],
                });
            }
            let raws: Vec<Vec<u8>> = batches.iter().map(|b| b.encode().unwrap()).collect();
            let items: Vec<Incoming<'_>> = batches
                .iter()
                .zip(&raws)
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
}

fn sides() -> (Selector, Selector) {
    (
        "phase=before".parse().unwrap(),
        "phase=after".parse().unwrap(),
    )
}

fn options() -> ReportOptions {
    ReportOptions {
        baseline: "phase=before".into(),
        candidate: "phase=after".into(),
        resamples: 300,
        ..ReportOptions::default()
    }
}

fn at(store: &mut SqliteStore, r: Resolution) -> Evidence {
    let (b, c) = sides();
    Evidence::gather_at(
        store,
        &options().group_by,
        &b,
        &c,
        ResolutionChoice::Fixed(r),
        3,
    )
    .unwrap()
}

#[test]
fn a_report_from_rollups_has_the_percentiles_of_the_one_minute_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    fill(&mut store);
    let minute = build_report_from(&at(&mut store, Resolution::Window), &options());
    for r in [Resolution::Hour, Resolution::Day] {
        let evidence = at(&mut store, r);
        let report = build_report_from(&evidence, &options());
        assert_eq!(report.resolution, r.name());
        assert_eq!(report.groups.len(), minute.groups.len());
        for (g, m) in report.groups.iter().zip(&minute.groups) {
            assert_eq!(g.baseline.percentiles, m.baseline.percentiles, "{r}");
            assert_eq!(g.candidate.percentiles, m.candidate.percentiles, "{r}");
            assert_eq!(g.baseline.samples, m.baseline.samples, "{r}");
            assert_eq!(g.baseline.loss_rate, m.baseline.loss_rate, "{r}");
        }
    }
    let hour = at(&mut store, Resolution::Hour);
    assert_eq!(
        hour.series(Role::Baseline),
        3 * 3,
        "three probes, three hours"
    );
}

#[test]
fn rollups_are_the_probe_hour_units_so_one_seed_gives_one_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    fill(&mut store);
    // The (probe, hour) units built by hand from the one-minute series.
    let (b, c) = sides();
    let by_hand = |sel: &Selector, store: &mut SqliteStore| -> Vec<StoredSeries> {
        let mut merged: BTreeMap<(String, u64), StoredSeries> = BTreeMap::new();
        for row in store.select(sel).unwrap() {
            let hour = Resolution::Hour.block_start(row.series.window.start_unix_ms);
            match merged.get_mut(&(row.probe_id.clone(), hour)) {
                Some(m) => merge_into(&mut m.series, &row.series),
                None => {
                    merged.insert((row.probe_id.clone(), hour), row);
                }
            }
        }
        merged.into_values().collect()
    };
    let (bh, ch) = (by_hand(&b, &mut store), by_hand(&c, &mut store));
    let hand = build_report_from(
        &Evidence::from_rows(&bh, &ch, &options().group_by),
        &options(),
    );
    let rolled = build_report_from(&at(&mut store, Resolution::Hour), &options());
    let again = build_report_from(&at(&mut store, Resolution::Hour), &options());
    assert_eq!(rolled.groups[0].percentiles, hand.groups[0].percentiles);
    assert_eq!(rolled.groups[0].percentiles, again.groups[0].percentiles);
    assert!(!rolled.groups[0].percentiles.is_empty(), "intervals exist");
}

#[test]
fn auto_takes_the_coarsest_resolution_with_enough_units() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    fill(&mut store);
    let (b, c) = sides();
    // Three probes: one day is 3 units a side (enough for 3), so 1d.
    let e = Evidence::gather_at(&mut store, &[], &b, &c, ResolutionChoice::Auto, 3).unwrap();
    assert_eq!(e.resolution(), Resolution::Day);
    // Nine needed: three hours × three probes, so 1h.
    let e = Evidence::gather_at(&mut store, &[], &b, &c, ResolutionChoice::Auto, 9).unwrap();
    assert_eq!(e.resolution(), Resolution::Hour);
    let e = Evidence::gather_at(&mut store, &[], &b, &c, ResolutionChoice::Auto, 10).unwrap();
    assert_eq!(e.resolution(), Resolution::Window);
    let report = build_report_from(&e, &options());
    assert!(
        report.resolution_reason.contains("fewer than 10"),
        "{}",
        report.resolution_reason
    );
    // A selection with nothing at any resolution is empty, not an error.
    let none: Selector = "phase=nowhere".parse().unwrap();
    assert!(Evidence::gather_at(
        &mut store,
        &[],
        &none,
        &none,
        ResolutionChoice::Fixed(Resolution::Hour),
        3
    )
    .is_ok());
}

/// The cut-over a report marks is the phase switch stored with the
/// campaign, and the methods count the windows no probe left silent.
#[test]
fn the_report_marks_the_stored_cut_over_and_counts_silent_windows() {
    use vantage_store::fleet::{Fleet, PhaseSwitch};
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    fill(&mut store);
    let at_ms = 1_796_256_000_000 + 90 * 60_000;
    let switches = [
        PhaseSwitch {
            at_unix_ms: 1_796_256_000_000,
            phase: "before".into(),
        },
        PhaseSwitch {
            at_unix_ms: at_ms,
            phase: "after".into(),
        },
    ];
    store.put_campaign("c", "", &switches, 1).unwrap();
    store.put_campaign("other", "", &switches[1..], 1).unwrap();
    let (b, c) = sides();
    let mut c = c;
    c.equals.insert("campaign".into(), vec!["c".into()]);
    let evidence = Evidence::gather_at(
        &mut store,
        &options().group_by,
        &b,
        &c,
        ResolutionChoice::Fixed(Resolution::Window),
        3,
    )
    .unwrap();
    let marks: Vec<(&str, &str, u64)> = evidence
        .cut_overs()
        .iter()
        .map(|c| (c.campaign.as_str(), c.phase.as_str(), c.at_unix_ms))
        .collect();
    assert_eq!(
        marks,
        [("c", "after", at_ms)],
        "only campaign c's switch to after"
    );
    let silent = evidence.silent_windows();
    assert_eq!(silent.len(), 2);
    assert!(silent
        .iter()
        .all(|s| s.silent == 0 && s.expected == 3 * 180 && s.counted));
    let report = build_report_from(&evidence, &options());
    let out = dir.path().join("report");
    vantage_reports::write_report_from(&report, &evidence, &out).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains(
        "<b>Cut-over.</b> Campaign <code>c</code> switched its probes to phase <code>after</code>"
    ));
    assert!(html.contains("<b>Silent windows.</b>") && html.contains("(0 in all)"));
}
