//! `--url` against a real web server: nginx (Debian's `nginx-light`, which
//! `.ci/run` installs) started by the test on loopback with its own
//! configuration and a generated certificate in a temporary directory,
//! serving HTTP/1.1 and HTTP/2 over TLS. A missing nginx fails the test with
//! what to install; it is never skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vantage_probe::{run, HttpVersion, ProbeArgs, RunSummary, HTTP_METRICS};
use vantage_responder::Identity;
use vantage_wire::{Metric, Series};

struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "nginx not found: install Debian's nginx-light (apt-get install nginx-light); .ci/run does"
    );
}

/// nginx on 127.0.0.1 with a certificate for `localhost`: `/small` answers
/// 2 bytes, `/photo.jpg` is a 100 kB file, `/fail` answers 500.
fn start_nginx() -> Nginx {
    let dir = tempfile::tempdir().expect("temporary directory");
    let d = dir.path();
    Identity::load_or_generate(&d.join("tls"), &["localhost".into()]).expect("certificate");
    std::fs::create_dir_all(d.join("www")).expect("www");
    std::fs::write(d.join("www/photo.jpg"), vec![7u8; 100_000]).expect("file");
    for t in ["body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
        std::fs::create_dir_all(d.join(t)).expect("temp dir");
    }
    // A free port: bind, read, release (nginx binds it right after).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = format!(
        r#"
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name localhost;
        ssl_certificate {d}/tls/cert.pem;
        ssl_certificate_key {d}/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 100000;
        root {d}/www;
        location = /small {{ return 200 "ok"; }}
        location = /fail {{ return 500 "broken"; }}
        location = /cdn {{
            add_header x-served-by "cache-bom4720-BOM, cache-sin18024-SIN" always;
            return 200 "ok";
        }}
    }}
}}
"#,
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).expect("config");
    // As root, nginx's workers would switch to `nobody`, who cannot read
    // the key in the test's directory; run them as the test's user.
    if running_as_root() {
        let conf = std::fs::read_to_string(d.join("nginx.conf")).expect("config");
        std::fs::write(d.join("nginx.conf"), format!("user root;\n{conf}")).expect("config");
    }
    let mut cmd = Command::new(nginx_binary());
    cmd.arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen on 127.0.0.1:{port}: {}",
            std::fs::read_to_string(d.join("logs/error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, port, dir }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn probe(nginx: &Nginx, path: &str, version: &str, secs: u64) -> RunSummary {
    let state = tempfile::tempdir().expect("state");
    let args = ProbeArgs {
        urls: vec![format!("web=https://localhost:{}{path}", nginx.port)],
        ca_file: Some(nginx.dir.path().join("tls/cert.pem")),
        http_version: Some(match version {
            "1.1" => HttpVersion::Http1,
            "2" => HttpVersion::Http2,
            _ => HttpVersion::Auto,
        }),
        state_dir: Some(state.path().to_path_buf()),
        quiet: true,
        seed: Some(3),
        rates: ["http_total=10", "http_warm_total=20"]
            .map(String::from)
            .to_vec(),
        duration: Some(Duration::from_secs(secs)),
        ..ProbeArgs::default()
    };
    let (_tx, stop) = watch::channel(false);
    run(args.into_config().expect("config"), stop)
        .await
        .expect("probe run")
}

fn series(s: &RunSummary, m: Metric) -> &Series {
    s.totals
        .iter()
        .find(|t| t.metric == m)
        .unwrap_or_else(|| panic!("no {m} series"))
}

fn p50_us(s: &RunSummary, m: Metric) -> f64 {
    series(s, m).histogram.value_at_quantile(0.5) as f64
}

/// Every phase measured without an error, cold and warm, over HTTP/1.1 and
/// HTTP/2 (asking for HTTP/2 fails a request if nginx does not agree to it,
/// so no error means HTTP/2 was spoken). The phases' medians add up to the
/// total's within 25 % + 1 ms (medians of a sum and sums of medians differ
/// on a loopback's bimodal timings); a warm request costs less than a cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_over_http1_and_http2() {
    let nginx = start_nginx();
    let mut table = Vec::new();
    for version in ["1.1", "2"] {
        let s = probe(&nginx, "/photo.jpg", version, 4).await;
        for m in HTTP_METRICS {
            let x = series(&s, m);
            assert!(x.histogram.len() >= 10, "HTTP/{version} {m}: {x:?}");
            assert_eq!(x.lost + x.error_total(), 0, "HTTP/{version} {m}: {x:?}");
        }
        assert_eq!(
            series(&s, Metric::HttpTransfer).bytes,
            100_000 * series(&s, Metric::HttpTransfer).sent
        );
        let phases: f64 = [
            Metric::HttpDns,
            Metric::HttpConnect,
            Metric::HttpTls,
            Metric::HttpTtfb,
            Metric::HttpTransfer,
        ]
        .iter()
        .map(|m| p50_us(&s, *m))
        .sum();
        let total = p50_us(&s, Metric::HttpTotal);
        assert!(
            (total - phases).abs() <= 0.25 * total + 1000.0,
            "HTTP/{version}: phases' p50s add up to {phases} µs, the total's p50 is {total} µs"
        );
        assert!(
            p50_us(&s, Metric::HttpWarmTotal) < total,
            "HTTP/{version}: a warm request should cost less than a cold one"
        );
        let address = &series(&s, Metric::HttpTotal).target.address;
        assert!(
            address.contains("127.0.0.1") || address.contains("::1"),
            "{address}"
        );
        let row: Vec<String> = HTTP_METRICS
            .iter()
            .map(|m| format!("{:.0}", p50_us(&s, *m)))
            .collect();
        table.push(format!("| HTTP/{version} | {} |", row.join(" | ")));
    }
    println!(
        "| nginx, 100 kB, p50 µs | {} |\n|{}\n{}",
        HTTP_METRICS.map(|m| m.name()).join(" | "),
        " --- |".repeat(HTTP_METRICS.len() + 1),
        table.join("\n")
    );
}

/// nginx's 500 is counted as a server error on the request, and by its
/// status, its phases still timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_server_error_is_counted() {
    let nginx = start_nginx();
    let s = probe(&nginx, "/fail", "auto", 2).await;
    let total = series(&s, Metric::HttpTotal);
    assert!(total.sent >= 5, "{total:?}");
    assert_eq!(
        total.errors.get(&vantage_wire::ErrorClass::ServerError),
        Some(&total.sent),
        "{total:?}"
    );
    assert_eq!(
        total.statuses,
        [(500, total.sent)].into(),
        "every response's status is counted"
    );
    assert_eq!(series(&s, Metric::HttpTtfb).error_total(), 0);
}

/// A response naming its CDN edge (Fastly's `x-served-by`, shield then
/// edge) is counted under that edge, on the request's total, once per
/// response, as its status is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_edge_a_response_names_is_counted() {
    let nginx = start_nginx();
    let s = probe(&nginx, "/cdn", "auto", 2).await;
    let total = series(&s, Metric::HttpTotal);
    assert!(total.sent >= 5, "{total:?}");
    let responses: u64 = total.statuses.values().sum();
    assert_eq!(
        total.edges,
        [("fastly:SIN".to_string(), responses)].into(),
        "{total:?}"
    );
    let warm = series(&s, Metric::HttpWarmTotal);
    assert_eq!(warm.edges.get("fastly:SIN"), warm.statuses.get(&200));
    assert!(
        series(&s, Metric::HttpTtfb).edges.is_empty(),
        "only on the totals"
    );
}

/// A URL target is traced too, toward the address its host resolves to
/// (`localhost`: loopback, reached at the first hop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_is_traced_toward_the_address_its_host_resolves_to() {
    let nginx = start_nginx();
    let state = tempfile::tempdir().expect("state");
    let args = ProbeArgs {
        urls: vec![format!("web=https://localhost:{}/small", nginx.port)],
        ca_file: Some(nginx.dir.path().join("tls/cert.pem")),
        state_dir: Some(state.path().to_path_buf()),
        quiet: true,
        seed: Some(3),
        rates: ["http_total=1", "http_warm_total=1", "path_trace=5"]
            .map(String::from)
            .to_vec(),
        duration: Some(Duration::from_secs(2)),
        ..ProbeArgs::default()
    };
    let config = args.into_config().expect("config");
    assert!(
        config.metrics.contains(&Metric::PathTrace),
        "traced by default"
    );
    let (_tx, stop) = watch::channel(false);
    let s = run(config, stop).await.expect("probe run");
    let trace = series(&s, Metric::PathTrace);
    assert_eq!(trace.target.name, "web");
    assert!(trace.sent >= 3, "{trace:?}");
    assert_eq!(trace.histogram.len(), trace.sent, "reached: {trace:?}");
}
