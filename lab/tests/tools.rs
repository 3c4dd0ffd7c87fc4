//! Namespace mode checked by tools no one here wrote: `ping` (ICMP round
//! trip), `iperf3` (TCP and UDP rate under a cap, and the loss rate) and
//! `sockperf` (UDP round trip) measure the lab's paths from inside its
//! namespaces, and must agree with what the path injects; Vantage's own
//! figures must agree with theirs. Needs root, and the three tools
//! (`.ci/run` installs them: iputils-ping, iperf3, sockperf).

use std::net::IpAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use tokio::sync::watch;
use vantage_lab::path::{DirectionSpec, Loss};
use vantage_lab::topology::{RunningTopology, Topology};
use vantage_lab::{Emulation, LabOptions, PathSpec, ReleaseClock, Scenario};
use vantage_wire::Metric;

/// Runs `tool ARGS` inside namespace `ns`; fails the test, saying what
/// to install, when the tool is missing.
fn in_ns(ns: &str, tool: &str, args: &[&str]) -> Command {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false),
        "{tool} is not installed (apt-get install iputils-ping iperf3 sockperf)"
    );
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, tool]).args(args);
    c
}

fn output(mut c: Command) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    let text = String::from_utf8_lossy(&stdout).to_string();
    assert!(
        status.success(),
        "{c:?} failed: {}\n{text}",
        String::from_utf8_lossy(&stderr)
    );
    text
}

/// A server left running in a namespace until dropped.
struct Server(Child);

impl Server {
    fn start(mut c: Command) -> Self {
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Give it time to bind.
        std::thread::sleep(Duration::from_millis(300));
        Server(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ping's round trips, in ms: every reply's `time=`.
fn ping_rtts(ns: &str, to: IpAddr, count: u32) -> Vec<f64> {
    let text = output(in_ns(
        ns,
        "ping",
        &[
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.05",
            &to.to_string(),
        ],
    ));
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!rtts.is_empty(), "no replies: {text}");
    rtts
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// sockperf's mean UDP round trip in ms (`--full-rtt`: it otherwise
/// prints half of it as "latency").
fn sockperf_rtt(client_ns: &str, server: IpAddr, port: u16) -> f64 {
    let text = output(in_ns(
        client_ns,
        "sockperf",
        &[
            "ping-pong",
            "-i",
            &server.to_string(),
            "-p",
            &port.to_string(),
            "-t",
            "2",
            "--mps",
            "100",
            "--full-rtt",
        ],
    ));
    // "sockperf: ====> avg-rtt=50123.456 (std-dev=...)", in µs.
    let us: f64 = text
        .split("avg-rtt=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no avg-rtt in sockperf's output: {text}"));
    us / 1000.0
}

/// iperf3's JSON result of a client run.
fn iperf3(client_ns: &str, server: IpAddr, port: u16, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "-c".to_string(),
        server.to_string(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        "4".into(),
        "-J".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(&output(in_ns(client_ns, "iperf3", &args))).unwrap()
}

fn two_hosts(spec: &PathSpec) -> (RunningTopology, IpAddr, String, String) {
    let mut topo = Topology::new().unwrap();
    let a = topo.add_host("tools-client").unwrap();
    let b = topo.add_host("tools-server").unwrap();
    topo.link(a, b, spec, 11);
    let running = topo.start(ReleaseClock::start().unwrap()).unwrap();
    let (na, nb) = (
        running.netns(a).name().to_string(),
        running.netns(b).name().to_string(),
    );
    let b_ip = running.addr(b);
    (running, b_ip, na, nb)
}

fn direction(delay_ms: u64, rate_bps: Option<u64>, loss: Loss) -> DirectionSpec {
    DirectionSpec {
        delay: Duration::from_millis(delay_ms),
        rate_bps,
        loss,
        queue_bytes: 64 * 1024,
        ..DirectionSpec::default()
    }
}

#[test]
#[ignore = "needs root"]
fn ping_and_sockperf_see_the_injected_round_trip() {
    // Asymmetric: 15 ms up, 25 ms down.
    let spec = PathSpec {
        up: direction(15, None, Loss::None),
        down: direction(25, None, Loss::None),
    };
    let (_topo, server, client_ns, server_ns) = two_hosts(&spec);
    let rtts = ping_rtts(&client_ns, server, 40);
    assert_eq!(rtts.len(), 40, "ping lost replies on a lossless path");
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let med = median(rtts);
    eprintln!("ping over 15 + 25 ms: min {min} ms, median {med} ms");
    assert!(min >= 40.0, "ping min {min} ms below the 40 ms path");
    assert!(med < 43.0, "ping median {med} ms over a 40 ms path");

    let _sockperf = Server::start(in_ns(
        &server_ns,
        "sockperf",
        &["server", "-i", &server.to_string(), "-p", "11111"],
    ));
    let rtt = sockperf_rtt(&client_ns, server, 11111);
    eprintln!("sockperf over 15 + 25 ms: mean {rtt} ms");
    assert!(
        (40.0..43.0).contains(&rtt),
        "sockperf mean round trip {rtt} ms over a 40 ms path"
    );
}

#[test]
#[ignore = "needs root"]
fn iperf3_finds_the_cap_and_the_loss_rate() {
    // 20 Mbit/s each way with a 64 KiB queue that drops, 10 ms each way.
    let cap = 20_000_000u64;
    let spec = PathSpec {
        up: direction(10, Some(cap), Loss::None),
        down: direction(10, Some(cap), Loss::None),
    };
    let (_topo, server, client_ns, server_ns) = two_hosts(&spec);
    let _iperf = Server::start(in_ns(
        &server_ns,
        "iperf3",
        &["-s", "-B", &server.to_string(), "-p", "15201"],
    ));

    // TCP fills the cap (its goodput is the cap less IP and TCP headers).
    let tcp = iperf3(&client_ns, server, 15201, &[]);
    let tcp_bps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    assert!(
        tcp_bps > 0.80 * cap as f64 && tcp_bps <= 1.0 * cap as f64,
        "TCP {tcp_bps} bit/s under a {cap} bit/s cap"
    );
    // Real drops at the full queue make TCP retransmit.
    let retransmits = tcp["end"]["sum_sent"]["retransmits"].as_u64().unwrap();
    eprintln!("iperf3 TCP under {cap} bit/s: {tcp_bps} bit/s, {retransmits} retransmits");
    assert!(
        retransmits > 0,
        "TCP over a dropping queue never retransmitted"
    );

    // UDP offered at 30 Mbit/s through a 20 Mbit/s cap loses about a third.
    let udp = iperf3(&client_ns, server, 15201, &["-u", "-b", "30M"]);
    let lost = udp["end"]["sum"]["lost_percent"].as_f64().unwrap();
    eprintln!("iperf3 UDP 30 Mbit/s into {cap} bit/s: {lost} % lost");
    assert!(
        (25.0..42.0).contains(&lost),
        "UDP 30 Mbit/s into a 20 Mbit/s cap lost {lost} %"
    );
}

#[test]
#[ignore = "needs root"]
fn iperf3_sees_the_injected_random_loss() {
    let spec = PathSpec {
        up: direction(5, None, Loss::Bernoulli { p: 0.05 }),
        down: direction(5, None, Loss::None),
    };
    let (_topo, server, client_ns, server_ns) = two_hosts(&spec);
    let _iperf = Server::start(in_ns(
        &server_ns,
        "iperf3",
        &["-s", "-B", &server.to_string(), "-p", "15202"],
    ));
    // 4 s at 5 Mbit/s of 1,200-byte datagrams: ~2,000 of them, so 5 %
    // loss reads within about ±1.5 points.
    let udp = iperf3(&client_ns, server, 15202, &["-u", "-b", "5M", "-l", "1200"]);
    let lost = udp["end"]["sum"]["lost_percent"].as_f64().unwrap();
    eprintln!("iperf3 UDP over 5 % injected loss: {lost} % lost");
    assert!(
        (3.5..6.5).contains(&lost),
        "5 % injected, iperf3 saw {lost} %"
    );
}

const SCENARIO: &str = r#"
name = "tools"
seed = 3
[[country]]
code = "MY"
region = "Kuala Lumpur"
[[datacenter]]
name = "singapore"
[[path]]
country = "MY"
datacenter = "singapore"
delay_ms = 20
[[phase]]
name = "after"
serve = { MY = "singapore" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn vantage_agrees_with_ping_and_sockperf_on_a_lab_path() {
    let dir = tempfile::tempdir().unwrap();
    let options = LabOptions {
        scenario: Scenario::parse(SCENARIO).unwrap(),
        phase: "after".into(),
        duration: Duration::from_secs(6),
        out: dir.path().to_path_buf(),
        window: Duration::from_secs(2),
        rates: vec!["udp_rtt=20".into(), "tcp_connect=5".into()],
        db: None,
        also_measure: Vec::new(),
        fleet: false,
        outside_collector: None,
        emulation: Emulation::Netns,
    };
    let (_tx, stop) = watch::channel(false);
    let lab = vantage_lab::start_lab(options, stop).await.unwrap();
    let namespaces = lab.namespaces();
    let ns_of = |role: &str| {
        namespaces
            .iter()
            .find(|n| n.ends_with(role))
            .cloned()
            .unwrap_or_else(|| panic!("no {role} in {namespaces:?}"))
    };
    let (probe_ns, dc_ns) = (ns_of("-p-MY"), ns_of("-dc-singapore"));
    // The responder's address, as the lab gave it to the probe.
    let config = std::fs::read_to_string(dir.path().join("MY/probe.toml")).unwrap();
    let dc: IpAddr = config
        .lines()
        .find_map(|l| l.strip_prefix("address = \""))
        .and_then(|a| a.trim_end_matches('"').parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip())
        .unwrap();
    // The tools measure the same path while the probe does.
    let (tools, _) = tokio::join!(
        tokio::task::spawn_blocking(move || {
            let _sockperf = Server::start(in_ns(
                &dc_ns,
                "sockperf",
                &["server", "-i", &dc.to_string(), "-p", "11112"],
            ));
            (
                median(ping_rtts(&probe_ns, dc, 40)),
                sockperf_rtt(&probe_ns, dc, 11112),
            )
        }),
        tokio::time::sleep(Duration::from_millis(10)),
    );
    let (ping, sockperf) = tools.unwrap();
    let summary = lab.finish().await.unwrap();
    let p50 = |metric| {
        summary
            .totals()
            .find(|(_, s)| s.metric == metric)
            .map(|(_, s)| s.histogram.value_at_quantile(0.5) as f64 / 1000.0)
            .unwrap_or_else(|| panic!("no {metric:?}"))
    };
    let (udp, tcp) = (p50(Metric::UdpRtt), p50(Metric::TcpConnect));
    eprintln!(
        "40 ms lab path: ping median {ping}, sockperf mean {sockperf}, udp_rtt p50 {udp}, tcp_connect p50 {tcp} (ms)"
    );
    for (what, ms) in [
        ("ping", ping),
        ("sockperf", sockperf),
        ("udp_rtt", udp),
        ("tcp_connect", tcp),
    ] {
        assert!(
            (40.0..43.0).contains(&ms),
            "{what} {ms} ms on a 40 ms path (ping {ping}, sockperf {sockperf}, udp_rtt {udp}, tcp_connect {tcp})"
        );
    }
    for (what, ms) in [("udp_rtt", udp), ("tcp_connect", tcp)] {
        assert!(
            (ms - ping).abs() < 2.0 && (ms - sockperf).abs() < 2.0,
            "Vantage's {what} {ms} ms against ping {ping} and sockperf {sockperf}"
        );
    }
}
