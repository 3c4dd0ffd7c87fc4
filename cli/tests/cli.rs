//! The `vantage` binary as a user runs it: real processes on loopback.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vantage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
}

#[test]
fn help_shows_examples() {
    for sub in ["serve", "probe"] {
        let out = vantage().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{sub} --help: {text}");
    }
}

#[test]
fn bad_flags_name_what_to_fix() {
    let out = vantage()
        .args(["probe", "--target", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAME=HOST:PORT"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn local_probe_prints_the_table_and_writes_series_csv() {
    let dir = tempfile::tempdir().unwrap();
    let out = vantage()
        .args([
            "probe",
            "--local",
            "--duration",
            "3s",
            "--rate",
            "tcp_connect=5",
            "--rate",
            "quic_handshake=5",
            "--seed",
            "1",
        ])
        .args([
            "--rate",
            "quic_request=10",
            "--rate",
            "https_request=10",
            "--rate",
            "udp_rtt=10",
        ])
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("p50 ms"), "{stdout}");
    for m in [
        "udp_rtt",
        "quic_handshake",
        "quic_request",
        "quic_cold_request",
        "tcp_connect",
        "tls_handshake",
        "https_request",
    ] {
        assert!(stdout.contains(m), "{m} missing from the table:\n{stdout}");
    }
    let csv = std::fs::read_to_string(dir.path().join("out/series.csv")).unwrap();
    assert!(csv.starts_with("probe_id,"), "{csv}");
    assert!(csv.lines().count() >= 8, "{csv}");
}

#[test]
fn json_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = vantage()
        .args([
            "probe",
            "--local",
            "--json",
            "--window",
            "1s",
            "--duration",
            "20s",
        ])
        .arg("--state-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (as `head -1` would) is gone now.
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["schema"], "vantage.series/5");
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status:?} {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "kept running after the pipe closed"
    );
}

#[test]
fn ctrl_c_writes_the_current_window() {
    let dir = tempfile::tempdir().unwrap();
    let child = vantage()
        .args(["probe", "--local", "--quiet", "--window", "60s"])
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let csv = std::fs::read_to_string(dir.path().join("out/series.csv")).unwrap();
    let udp = csv
        .lines()
        .find(|l| l.contains(",udp_rtt,"))
        .expect("udp_rtt row written on Ctrl-C");
    assert!(!udp.is_empty());
}

/// `vantage serve` prints its fingerprint; a probe pinned to it measures,
/// across two processes.
#[test]
fn serve_then_probe_with_the_printed_pin() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = vantage()
        .args([
            "serve",
            "--port",
            "0",
            "--stamp-port",
            "0",
            "--duration",
            "30s",
        ])
        .arg("--cert-dir")
        .arg(dir.path().join("cert"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let (mut quic, mut stamp, mut pin) = (String::new(), String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["quic", addr, ..] => quic = addr.to_string(),
            ["stamp", addr, ..] => stamp = addr.to_string(),
            ["probe", "with:", "--pin", p] => {
                pin = p.to_string();
                break;
            }
            _ => {}
        }
    }
    assert!(pin.starts_with("sha256:"), "no fingerprint printed");
    let stamp_port = stamp.rsplit(':').next().unwrap().to_string();
    let out = vantage()
        .args([
            "probe",
            "--target",
            &format!("dc={quic}"),
            "--pin",
            &pin,
            "--stamp-port",
            &stamp_port,
        ])
        .args([
            "--duration",
            "2s",
            "--metrics",
            "udp_rtt,quic_request,https_request",
            "--json",
            "--seed",
            "1",
        ])
        // Rates high enough that a 2 s run cannot go without an attempt.
        .args([
            "--rate",
            "udp_rtt=20",
            "--rate",
            "quic_request=20",
            "--rate",
            "https_request=20",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for m in ["udp_rtt", "quic_request", "https_request"] {
        let r = rows
            .iter()
            .find(|r| r["metric"] == m)
            .unwrap_or_else(|| panic!("no {m}"));
        assert!(r["count"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
}
