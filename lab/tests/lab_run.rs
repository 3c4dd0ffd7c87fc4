//! `run_lab` end to end on a small scenario: responders, relays and a
//! probe per country, outputs labelled simulated.

use std::time::Duration;
use tokio::sync::watch;
use vantage_lab::{run_lab, Emulation, LabOptions, Mode, Scenario};
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
hops = [
  { name = "kul-ix", country = "MY", delay_ms = 5 },
  { name = "hkg-transit", country = "HK", delay_ms = 20, silent = true },
  { name = "bjs-core", country = "CN", delay_ms = 35 },
]
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
            emulation: Emulation::Relay,
        };
        let (_tx, stop) = watch::channel(false);
        let summary = run_lab(options, stop).await.unwrap();
        assert_eq!(summary.mode, Mode::Relay);
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
    // What relay mode cannot emulate is not measured, so no row shows it,
    // and the run's note says so.
    assert!(!rows.iter().any(|r| r.contains(",tcp_connect,")), "{csv}");
    assert!(!rows.iter().any(|r| r.contains(",path_trace,")), "{csv}");
    assert!(
        !dir.path().join("sites.csv").exists(),
        "no site map in relay mode"
    );
    let note = std::fs::read_to_string(dir.path().join("SIMULATED.txt")).unwrap();
    assert!(
        note.contains("tcp_connect and path_trace are NOT EMULATED in this mode"),
        "{note}"
    );
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
        emulation: Emulation::Relay,
    };
    let (_tx, stop) = watch::channel(false);
    let err = run_lab(options, stop).await.unwrap_err().to_string();
    assert!(err.contains("after, before"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn in_namespace_mode_the_tcp_handshake_crosses_the_path_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions {
        scenario: Scenario::parse(SMALL).unwrap(),
        phase: "before".into(),
        duration: Duration::from_secs(4),
        out: dir.path().to_path_buf(),
        window: Duration::from_secs(1),
        rates: vec!["udp_rtt=20".into(), "tcp_connect=5".into()],
        db: Some(dir.path().join("lab.db").into()),
        also_measure: Vec::new(),
        fleet: false,
        outside_collector: None,
        emulation: Emulation::Netns,
    };
    let (_tx, stop) = watch::channel(false);
    let lab = vantage_lab::start_lab(options, stop).await.unwrap();
    assert_eq!(lab.mode(), Mode::Netns);
    let namespaces = lab.namespaces();
    // A traceroute from the probe's namespace meets the routers at
    // their share of the delay: kul-ix at 5 ms each way, hkg-transit
    // silent, bjs-core at 35, then the data centre at 40.
    let probe_ns = namespaces.iter().find(|n| n.ends_with("-p-MY")).unwrap();
    let config = std::fs::read_to_string(dir.path().join("MY/probe.toml")).unwrap();
    let dc = config
        .lines()
        .find_map(|l| l.strip_prefix("address = \""))
        .and_then(|a| a.trim_end_matches('"').rsplit_once(':'))
        .map(|(ip, _)| ip.to_string())
        .unwrap();
    let trace = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            probe_ns,
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            &dc,
        ])
        .output()
        .expect("traceroute (apt-get install traceroute)");
    let text = String::from_utf8_lossy(&trace.stdout).to_string();
    let rtts: Vec<Option<f64>> = text
        .lines()
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|x| *x == "ms")
                .and_then(|i| w[i - 1].parse().ok())
        })
        .collect();
    assert_eq!(rtts.len(), 4, "{text}");
    for (got, want) in rtts.iter().zip([Some(10.0), None, Some(70.0), Some(80.0)]) {
        match (got, want) {
            (Some(g), Some(w)) => assert!(*g >= w && *g < w + 6.0, "{g} ms, want {w}: {text}"),
            (None, None) => {}
            _ => panic!("{got:?} where {want:?} was due: {text}"),
        }
    }
    let summary = lab.finish().await.unwrap();
    assert_eq!(summary.mode, Mode::Netns);
    // Uploads reach the collector outside the namespaces.
    let uploaded = summary.probes["MY"].upload.expect("uploads");
    assert!(
        uploaded.stored > 0 && uploaded.rejected == 0,
        "{uploaded:?}"
    );
    let p50_ms = |metric| {
        let s = summary
            .totals()
            .find(|(c, s)| *c == "MY" && s.metric == metric)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("{metric:?} for MY"));
        s.histogram.value_at_quantile(0.5) as f64 / 1000.0
    };
    // MY–Beijing is 40 ms each way: STAMP and the kernel's TCP handshake
    // (SYN up, SYN-ACK down) both take one 80 ms round trip.
    for metric in [Metric::UdpRtt, Metric::TcpConnect] {
        let p50 = p50_ms(metric);
        assert!(
            (80.0..84.0).contains(&p50),
            "{metric:?} p50 {p50} ms over an 80 ms path"
        );
    }
    let csv = std::fs::read_to_string(dir.path().join("MY/series.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.contains("emulation=netns")), "{csv}");
    // The routers, each a namespace of its own, listed with their
    // addresses, names and countries.
    let hops = std::fs::read_to_string(dir.path().join("hops.csv")).unwrap();
    let listed: Vec<Vec<&str>> = hops
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let named: Vec<(&str, &str, &str)> = listed.iter().map(|r| (r[1], r[2], r[3])).collect();
    assert_eq!(
        named,
        [
            ("kul-ix", "MY", "false"),
            ("hkg-transit", "HK", "true"),
            ("bjs-core", "CN", "false")
        ],
        "{hops}"
    );
    assert_eq!(namespaces.len(), 5, "a probe, a data centre, three routers");
    let note = std::fs::read_to_string(dir.path().join("SIMULATED.txt")).unwrap();
    assert!(!note.contains("NOT EMULATED"), "{note}");
    for name in namespaces {
        assert!(
            !std::path::Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
}

const ASYMMETRIC: &str = r#"
name = "asymmetric"
seed = 5
[[country]]
code = "MY"
[[datacenter]]
name = "singapore"
[[path]]
country = "MY"
datacenter = "singapore"
up_delay_ms = 10
down_delay_ms = 40
hops = [{ name = "kul-ix", country = "MY", delay_ms = 3 }]
[[phase]]
name = "after"
serve = { MY = "singapore" }
"#;

/// One clock for both ends: STAMP's timestamps give each direction of an
/// asymmetric path exactly, in either mode.
async fn one_way_delays_of(emulation: Emulation) {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions {
        scenario: Scenario::parse(ASYMMETRIC).unwrap(),
        phase: "after".into(),
        duration: Duration::from_secs(3),
        out: dir.path().to_path_buf(),
        window: Duration::from_secs(1),
        rates: vec!["udp_rtt=20".into()],
        db: None,
        also_measure: Vec::new(),
        fleet: false,
        outside_collector: None,
        emulation,
    };
    let (_tx, stop) = watch::channel(false);
    let summary = run_lab(options, stop).await.unwrap();
    let of = |metric| {
        summary
            .totals()
            .find(|(_, s)| s.metric == metric)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no {metric:?}"))
    };
    let ms = |s: &vantage_wire::Series, q| s.histogram.value_at_quantile(q) as f64 / 1000.0;
    let (fwd, back, err, rtt) = (
        of(Metric::UdpOwdForward),
        of(Metric::UdpOwdBackward),
        of(Metric::UdpOwdError),
        of(Metric::UdpRtt),
    );
    eprintln!(
        "{emulation:?}: forward p50 {} ms, backward p50 {} ms, round trip p50 {} ms",
        ms(&fwd, 0.5),
        ms(&back, 0.5),
        ms(&rtt, 0.5)
    );
    assert!(
        (10.0..11.5).contains(&ms(&fwd, 0.5)),
        "forward {}",
        ms(&fwd, 0.5)
    );
    assert!(
        (40.0..41.5).contains(&ms(&back, 0.5)),
        "backward {}",
        ms(&back, 0.5)
    );
    assert!(
        ms(&err, 1.0) < 0.01,
        "one clock, no error: {}",
        ms(&err, 1.0)
    );
    // Every attempt counted under each: as many one-way samples as round
    // trips, none unsynchronised.
    assert_eq!(
        (fwd.sent, fwd.histogram.len()),
        (rtt.sent, rtt.histogram.len())
    );
    assert!(fwd.errors.is_empty(), "{:?}", fwd.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_mode_gives_each_direction_of_an_asymmetric_path() {
    one_way_delays_of(Emulation::Relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn namespace_mode_gives_each_direction_of_an_asymmetric_path() {
    one_way_delays_of(Emulation::Netns).await;
}
