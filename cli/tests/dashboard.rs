//! The live dashboard with the real tools: a `vantage collect` on loopback
//! takes a short lab run's batches, two real Prometheus servers (Debian's
//! `prometheus`, one with native histograms, one with the classic buckets)
//! scrape its `/metrics` over HTTPS, checking its own certificate, and their
//! query APIs give the paths' round trips back. `promtool check metrics`
//! passes on the exposition, and every metric the shipped Grafana dashboard
//! uses is one the collector exposes and Prometheus can query.

mod common;

use common::{free_port, start, vantage, Running};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One country served by one data centre over a 20 ms round trip.
const SCENARIO: &str = r#"
name = "dashboard"
seed = 7
[[country]]
code = "MY"
region = "Kuala Lumpur"
[[datacenter]]
name = "singapore"
[[path]]
country = "MY"
datacenter = "singapore"
delay_ms = 10
[[phase]]
name = "after"
serve = { MY = "singapore" }
"#;

/// Fails at once, saying what to install, when a tool the test drives is
/// missing.
fn need_tools() {
    for name in ["prometheus", "promtool", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "`{name}` not found: install Debian's prometheus package (and curl); .ci/run does"
        );
    }
}

/// A dashboard query with Grafana's variables filled in: every campaign,
/// country and target, one minute's rate, `udp_rtt`.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$campaign", ".*")
        .replace("$country", ".*")
        .replace("$target", ".*")
        .replace("$metric", "udp_rtt")
}

/// Starts a Prometheus scraping `collector` every second.
fn prometheus(dir: &Path, collector: &str, ca: &Path, native: bool) -> (Running, String) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vantage\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    static_configs:\n      - targets: [\"{collector}\"]\n",
            ca.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if native {
        cmd.arg("--enable-feature=native-histograms");
    }
    (Running(cmd.spawn().unwrap()), format!("127.0.0.1:{port}"))
}

/// The result vector of an instant query: (labels, value).
fn query(prometheus: &str, expr: &str) -> Vec<(serde_json::Value, f64)> {
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-G"])
        .arg(format!("http://{prometheus}/api/v1/query"))
        .arg("--data-urlencode")
        .arg(format!("query={expr}"))
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{expr}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let v = r["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((r["metric"].clone(), v))
        })
        .collect()
}

fn metrics_text(collector: &str, ca: &Path) -> String {
    let port = collector.rsplit(':').next().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/metrics"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("vantage_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

#[test]
fn prometheus_scrapes_the_collector_and_the_dashboard_queries_what_it_exposes() {
    need_tools();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let cert_dir = dir.path().join("collector-cert");
    let port = free_port();
    let collector = format!("127.0.0.1:{port}");
    let mut pin = String::new();
    let _collector = start(
        vantage()
            .args(["collect", "--listen", &collector])
            .arg("--db")
            .arg(&db)
            .arg("--cert-dir")
            .arg(&cert_dir),
        |w| match w {
            ["probe", "with:", _, p] => {
                pin = p.to_string();
                true
            }
            _ => false,
        },
    );
    let ca = cert_dir.join("cert.pem");
    let native_dir = dir.path().join("native");
    let classic_dir = dir.path().join("classic");
    std::fs::create_dir_all(&native_dir).unwrap();
    std::fs::create_dir_all(&classic_dir).unwrap();
    let (_native, native) = prometheus(&native_dir, &collector, &ca, true);
    let (_classic, classic) = prometheus(&classic_dir, &collector, &ca, false);

    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let lab = vantage()
        .args([
            "lab",
            "run",
            "--quiet",
            "--phase",
            "after",
            "--duration",
            "20s",
        ])
        .args(["--window", "2s", "--rate", "udp_rtt=20"])
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path().join("lab"))
        .arg("--db")
        .arg(&db)
        .args(["--collector", &collector, "--collector-pin", &pin])
        .env("RUST_LOG", "error")
        .status()
        .unwrap();
    assert!(lab.success());

    // Both servers have scraped the whole run within a few seconds more.
    let udp = r#"metric="udp_rtt",country="MY",phase="after",campaign="dashboard""#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let p50 = |server: &str, classic: bool, target: &str| {
        let expr = if classic {
            format!("histogram_quantile(0.5, sum by (le) (rate(vantage_latency_seconds_bucket{{{udp},target=\"{target}\"}}[1m])))")
        } else {
            format!("histogram_quantile(0.5, sum(rate(vantage_latency_seconds{{{udp},target=\"{target}\"}}[1m])))")
        };
        query(server, &expr)
            .first()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
    };
    while Instant::now() < deadline
        && (p50(&native, false, "singapore").is_none()
            || p50(&classic, true, "singapore").is_none())
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    // Native buckets are ~9 % wide: the median lands within one of the
    // path's 20 ms round trip.
    let rtt = 0.020;
    let native_p50 = p50(&native, false, "singapore").unwrap_or_else(|| {
        panic!(
            "no native-histogram median; the server has {:?}",
            query(
                &native,
                "count by (target, metric) (vantage_latency_seconds)"
            )
        )
    });
    assert!(
        native_p50 > rtt * 0.95 && native_p50 < rtt * 1.15,
        "native p50 {native_p50} s over a {rtt} s round trip"
    );
    // The classic buckets put 20 ms round trips in (20 ms, 50 ms]; the
    // quantile interpolates within it.
    let classic_sg = p50(&classic, true, "singapore").unwrap_or_else(|| {
        panic!(
            "no classic-bucket median; the server has {:?}",
            query(&classic, "count by (target, metric, le) (vantage_latency_seconds_bucket{metric=\"udp_rtt\"})")
        )
    });
    assert!(
        (0.02..=0.05).contains(&classic_sg),
        "singapore: {classic_sg}"
    );
    let sent = query(
        &classic,
        &format!("sum(vantage_attempts_total{{{udp},target=\"singapore\"}})"),
    );
    assert!(sent.first().is_some_and(|(_, v)| *v > 100.0), "{sent:?}");

    // promtool agrees that the exposition is well formed.
    let text = metrics_text(&collector, &ca);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Every metric the dashboard uses is exposed, and every query of the
    // dashboard is valid PromQL that Prometheus answers.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/vantage.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    exprs.extend(
        dashboard["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["expr"].as_str().map(str::to_string)),
    );
    assert!(exprs.len() >= 10, "{exprs:?}");
    let exposed = |name: &str| {
        text.lines().any(|l| {
            l.starts_with(&format!("# TYPE {name} "))
                || ["_bucket", "_sum", "_count"].iter().any(|s| {
                    name.strip_suffix(s)
                        .is_some_and(|f| l.starts_with(&format!("# TYPE {f} histogram")))
                })
        })
    };
    for expr in &exprs {
        for name in metric_names(expr) {
            // The cut-over gauge appears once a probe has polled a campaign
            // (the fleet tests show it); the lab's probes do not poll.
            if name != "vantage_campaign_phase_start_seconds" {
                assert!(
                    exposed(&name),
                    "the dashboard uses `{name}`, which /metrics lacks"
                );
            }
        }
        query(&classic, &concrete(expr));
    }
    let latency = concrete(
        exprs
            .iter()
            .find(|e| e.contains("histogram_quantile(0.5") && e.contains("_bucket"))
            .unwrap(),
    );
    let shown = query(&classic, &latency);
    assert_eq!(
        shown.len(),
        1,
        "the dashboard's p50 panel shows the path: {shown:?}"
    );
    assert!((0.02..=0.05).contains(&shown[0].1), "{shown:?}");
}
