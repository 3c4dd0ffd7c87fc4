//! `run_lab` end to end on a small scenario: responders, relays and a
//! probe per country, outputs labelled simulated.

use std::time::Duration;
use tokio::sync::watch;
use vantage_lab::{run_lab, LabOptions, Scenario};
use vantage_wire::Metric;

const SMALL: &str = r#"
name = "small"
seed = 1
[[country]]
code = "MY"
region = "Kuala Lumpur"
[[datacenter]]
name = "singapore"
[[datacenter]]
name = "beijing"
[[path]]
country = "MY"
datacenter = "singapore"
delay_ms = 10
[[path]]
country = "MY"
datacenter = "beijing"
delay_ms = 40
[[phase]]
name = "before"
serve = { MY = "beijing" }
[[phase]]
name = "after"
serve = { MY = "singapore" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_runs_end_to_end_and_is_labelled_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(SMALL).unwrap();
    for (phase, rtt_ms) in [("before", 80.0), ("after", 20.0)] {
        let options = LabOptions {
            scenario: scenario.clone(),
            phase: phase.into(),
            duration: Duration::from_secs(3),
            out: dir.path().to_path_buf(),
            window: Duration::from_secs(1),
            rates: vec!["udp_rtt=20".into()],
            db: Some(dir.path().join("lab.db").into()),
            also_measure: Vec::new(),
            fleet: false,
            outside_collector: None,
        };
        let (_tx, stop) = watch::channel(false);
        let summary = run_lab(options, stop).await.unwrap();
        let uploaded = summary.probes["MY"]
            .upload
            .expect("uploads to the lab's collector");
        assert!(
            uploaded.stored > 0 && uploaded.rejected == 0,
            "{uploaded:?}"
        );
        let udp = summary
            .totals()
            .find(|(c, s)| *c == "MY" && s.metric == Metric::UdpRtt)
            .map(|(_, s)| s)
            .expect("udp_rtt for MY");
        // The run judged its own timing: every release counted, held to
        // 1 ms (1 % of its smallest path, 10 ms, is less).
        let t = summary.timing;
        assert_eq!(t.releases, summary.relay_lateness.2);
        assert!(t.releases > 50, "{t:?}");
        assert_eq!(t.bound_us, 1000.0);
        assert_eq!(t.degraded, t.lateness_p99_us > t.bound_us);
        let p50 = udp.histogram.value_at_quantile(0.5) as f64 / 1000.0;
        assert!(
            p50 >= rtt_ms && p50 < rtt_ms + 3.0,
            "{phase}: udp_rtt p50 {p50} ms over a {rtt_ms} ms path"
        );
    }
    assert!(std::fs::read_to_string(dir.path().join("SIMULATED.txt"))
        .unwrap()
        .contains("SIMULATED"));
    let csv = std::fs::read_to_string(dir.path().join("MY/series.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.contains("simulated=true")), "{csv}");
    // Every row says the relay mode measured it, so a report can withhold
    // what that mode cannot emulate.
    assert!(rows.iter().all(|r| r.contains("emulation=relay")), "{csv}");
    assert!(
        rows.iter()
            .any(|r| r.contains(",before,MY,Kuala Lumpur,lab,") && r.contains(",beijing,")),
        "{csv}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains(",after,MY,Kuala Lumpur,lab,") && r.contains(",singapore,")),
        "{csv}"
    );
}

#[tokio::test]
async fn an_unknown_phase_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions {
        scenario: Scenario::parse(SMALL).unwrap(),
        phase: "during".into(),
        duration: Duration::from_secs(1),
        out: dir.path().to_path_buf(),
        window: Duration::from_secs(1),
        rates: vec![],
        db: None,
        also_measure: Vec::new(),
        fleet: false,
        outside_collector: None,
    };
    let (_tx, stop) = watch::channel(false);
    let err = run_lab(options, stop).await.unwrap_err().to_string();
    assert!(err.contains("after, before"), "{err}");
}
