//! `vantage report` on a store written through the collector's store API.

use rand::{Rng, SeedableRng};
use std::process::Command;
use std::time::Duration;
use vantage_collector::{Incoming, SqliteStore, Store};
use vantage_wire::trace::{End, HopRecord, PathTrace, Trace};
use vantage_wire::{Batch, Labels, Metric, Series, Target, Window};

fn fill(db: &std::path::Path) {
    let mut store = SqliteStore::open(db).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut seq = 0;
    for (phase, target, base_us, address, first_hop) in [
        ("before", "beijing", 460_000u64, "198.18.1.9", "10.0.0.1"),
        ("after", "singapore", 125_000, "198.18.2.9", "10.0.1.1"),
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
                        address: format!("{address}:4433"),
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
                    traces: vec![trace(&s.target, w * 60_000 + 7, first_hop, address)],
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

/// `text` written to `dir/name`.
fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A trace through `first_hop`, a silent router, to `address`.
fn trace(target: &Target, started_unix_ms: u64, first_hop: &str, address: &str) -> PathTrace {
    let hop = |ttl, a: Option<&str>| HopRecord {
        ttl,
        address: a.map(|a| a.parse().unwrap()),
        rtts: vec![a.map(|_| Duration::from_millis(20)); 3],
    };
    PathTrace {
        target: target.clone(),
        started_unix_ms,
        trace: Trace {
            hops: vec![hop(1, Some(first_hop)), hop(2, None), hop(3, Some(address))],
            end: End::Reached,
        },
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
    assert_eq!(json["schema"], "vantage.report/5");
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

/// Served-by and path-crosses tables and share claims from stored series
/// and traces, with a site map and a hop dataset; a site map that does
/// not parse is refused with its file, line and reason.
#[test]
fn report_says_where_users_were_served_and_which_countries_paths_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    fill(&db);
    let sites = write(
        dir.path(),
        "sites.csv",
        "cidr,site,provider,region,country\n198.18.1.0/24,beijing,own,cn-north,CN\n198.18.2.0/24,singapore,own,ap-southeast,SG\n",
    );
    let hops = write(
        dir.path(),
        "countries.csv",
        "10.0.0.0,10.0.0.255,CN\n10.0.1.0,10.0.1.255,SG\n",
    );
    let run = |sites: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_vantage"))
            .args([
                "report",
                "--baseline",
                "phase=before",
                "--candidate",
                "phase=after",
            ])
            .args(["--resamples", "100"])
            .args(["--claim", "IN served_from CN share <= 1%"])
            .args(["--claim", "IN path_crosses CN share decreases to <= 20%"])
            .arg("--sites")
            .arg(sites)
            .arg("--hop-data")
            .arg(&hops)
            .arg("--db")
            .arg(&db)
            .arg("--out")
            .arg(dir.path().join("r"))
            .output()
            .unwrap()
    };
    let out = run(&sites);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("served by, probes in IN:\n  before: beijing (CN) 100.0% of 960 requests, 24 units, 3 probes\n  after: singapore (SG) 100.0%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("path crosses, probes in IN:\n  before: CN 100.0% of 24 traces"),
        "{stdout}"
    );
    // And in the summary's sentences, on top.
    assert!(
        stdout.contains("* India: units served from China: 24 of 24 before, 0 of 24 after [0.0%, 13.8%]; 3 / 3 probes; inconclusive (claim: IN served_from CN share <= 1%)."),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/report.json")).unwrap()).unwrap();
    let w = &json["where_served"];
    assert_eq!(w["path_crosses"]["IN"][1]["rows"][0]["value"], "SG");
    // 0 of 24 units after: the interval's upper bound (~13.8 %) cannot
    // show <= 1 %, but does show <= 20 % and a fall from 24 of 24.
    assert_eq!(w["claims"][0]["verdict"], "inconclusive");
    assert_eq!(w["claims"][1]["verdict"], "holds");
    assert_eq!(w["claims"][1]["candidate"]["units"], 24);
    let html = std::fs::read_to_string(dir.path().join("r/report.html")).unwrap();
    assert!(html.contains("id=\"where-served\""));
    assert!(html.contains("id=\"path-crosses-IN\""), "the chart");
    assert!(html.contains("a router that does not answer is invisible"));
    // A site map with a bad line: refused, naming it.
    std::fs::write(
        &sites,
        "cidr,site,provider,region,country\n198.18.1.0/33,beijing,own,x,CN\n",
    )
    .unwrap();
    let out = run(&sites);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sites.csv:2:") && stderr.contains("not a CIDR range"),
        "{stderr}"
    );
}

/// `vantage export --format traces`: a row per stored hop with its
/// country, network and site by the given data (unknown where they say
/// nothing); `--sites` makes `site` a key series group by.
#[test]
fn export_writes_trace_hops_and_groups_series_by_site() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    fill(&db);
    let sites = write(
        dir.path(),
        "sites.csv",
        "cidr,site,provider,region,country\n198.18.1.0/24,beijing,own,cn-north,CN\n",
    );
    let countries = write(dir.path(), "countries.csv", "10.0.0.0,10.0.0.255,CN\n");
    let asns = write(
        dir.path(),
        "asns.csv",
        "10.0.0.0,10.0.0.255,4809,CHINA TELECOM CN2\n",
    );
    let export = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vantage"))
            .arg("export")
            .arg("--db")
            .arg(&db)
            .arg("--sites")
            .arg(&sites)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let hops = export(&[
        "--format",
        "traces",
        "--select",
        "phase=before",
        "--hop-data",
        countries.to_str().unwrap(),
        "--hop-data",
        asns.to_str().unwrap(),
    ]);
    let mut lines = hops.lines();
    assert_eq!(
        lines.next(),
        Some("probe_id,sequence,phase,country,target,target_address,started,end,ttl,address,rtts_us,hop_country,hop_asn,hop_network,hop_site")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 24 * 3, "three hops of each of 24 traces");
    assert!(
        rows[0].ends_with(",1,10.0.0.1,20000 20000 20000,CN,AS4809,CHINA TELECOM CN2,unknown"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].ends_with(",2,,* * *,unknown,unknown,unknown,unknown"),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].ends_with(",3,198.18.1.9,20000 20000 20000,CN,unknown,unknown,beijing"),
        "{}",
        rows[2]
    );
    // Series grouped by site: Beijing's before, unknown (no range) after.
    let by_site = export(&["--group-by", "phase,site,site_country"]);
    assert!(
        by_site.contains("\nphase=before;site=beijing;site_country=CN,quic_cold_request,"),
        "{by_site}"
    );
    assert!(
        by_site.contains("\nphase=after;site=unknown;site_country=unknown,quic_cold_request,"),
        "{by_site}"
    );
}
