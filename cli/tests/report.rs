//! `vantage report` on a store written through the collector's store API.

use rand::{Rng, SeedableRng};
use std::process::Command;
use vantage_collector::{Incoming, SqliteStore, Store};
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

fn fill(db: &std::path::Path) {
    let mut store = SqliteStore::open(db).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut seq = 0;
    for (phase, target, base_us) in [
        ("before", "beijing", 460_000u64),
        ("after", "singapore", 125_000),
    ] {
        for probe in 0..3 {
            for w in 0..8u64 {
                seq += 1;
                let mut labels = Labels::new();
                labels.insert("country", "IN").unwrap();
                labels.insert("phase", phase).unwrap();
                labels.insert("simulated", "true").unwrap();
                let mut s = Series::new(
                    Target {
                        name: target.into(),
                        address: "127.0.0.1:1".into(),
                    },
                    Metric::QuicColdRequest,
                    Window {
                        start_unix_ms: w * 60_000,
                        end_unix_ms: (w + 1) * 60_000,
                    },
                );
                for _ in 0..40 {
                    s.histogram
                        .record(base_us + rng.gen_range(0..10_000))
                        .unwrap();
                }
                s.sent = 40;
                let b = Batch {
                    probe_id: format!("p{probe}"),
                    sequence: seq,
                    campaign: "t".into(),
                    labels,
                    created_unix_ms: 0,
                    dropped_batches: 0,
                    traces: Vec::new(),
                    series: vec![s],
                };
                let raw = b.encode().unwrap();
                store
                    .insert_batches(
                        &[Incoming {
                            batch: &b,
                            raw: &raw,
                            plain_histograms: &[],
                            token_hash: None,
                        }],
                        0,
                    )
                    .unwrap();
            }
        }
    }
}

#[test]
fn report_judges_claims_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    fill(&db);
    let out = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args([
            "report",
            "--baseline",
            "phase=before",
            "--candidate",
            "phase=after",
            "--resamples",
            "300",
        ])
        .args([
            "--claim",
            "IN quic_cold_request p50 decreases by >= 300ms",
            "--claim",
            "IN quic_cold_request p50 decreases by >= 350ms",
        ])
        .arg("--db")
        .arg(&db)
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("SIMULATED DATA"), "{stdout}");
    assert!(stdout.contains(">= 300ms — holds"), "{stdout}");
    assert!(stdout.contains(">= 350ms — fails"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/report.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], "vantage.report/4");
    assert_eq!(json["simulated"], true);
    assert_eq!(json["claims"][0]["verdict"], "holds");
    assert_eq!(json["claims"][1]["verdict"], "fails");
    let p50 = &json["groups"][0]["percentiles"][0];
    let d = p50["difference"]["estimate"].as_f64().unwrap();
    assert!((-340_000.0..=-330_000.0).contains(&d), "{d}");
    assert!(dir.path().join("r/comparison.csv").exists());
}

#[test]
fn bad_claim_syntax_shows_the_grammar() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    fill(&db);
    let out = Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args([
            "report",
            "--baseline",
            "phase=before",
            "--candidate",
            "phase=after",
        ])
        .args(["--claim", "IN got faster"])
        .arg("--db")
        .arg(&db)
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Grammar:") && err.contains("decreases"),
        "{err}"
    );
}
