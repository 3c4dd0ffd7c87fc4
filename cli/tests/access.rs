//! `vantage access` and `vantage serve --require-token`, end to end with
//! real processes on loopback: an operator makes a key and issues a token,
//! a probe with the token syncs photos and gets large echoes over QUIC and
//! HTTPS, and a probe without one is refused every heavy request (counted
//! as failed samples, with one warning that says what to do) while its
//! light measurements go on.

mod common;

use common::{free_port, vantage, Running};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Per metric: (samples, failed samples), summed over windows; and stderr.
fn probe(
    port: u16,
    stamp_port: u16,
    pin: &str,
    dir: &std::path::Path,
    transport: &str,
    token: Option<&str>,
) -> (HashMap<String, (u64, u64)>, String) {
    let mut cmd = vantage();
    cmd.args(["probe", "--json", "--probe-id", "in-1"])
        .args(["--target", &format!("dc=127.0.0.1:{port}")])
        .args(["--stamp-port", &stamp_port.to_string(), "--pin", pin])
        .args([
            "--metrics",
            "udp_rtt,quic_request,https_request,photosync_upload,photosync_download",
        ])
        .args([
            "--response-bytes",
            "100000",
            "--window",
            "1s",
            "--duration",
            "4s",
        ])
        .args(["--rate", "quic_request=2", "--rate", "https_request=2"])
        .args([
            "--sync-every",
            "1s",
            "--sync-photos",
            "2",
            "--sync-photo-bytes",
            "100000",
        ])
        .args(["--sync-direction", "both", "--sync-transport", transport])
        .arg("--state-dir")
        .arg(dir.join(format!("state-{transport}-{}", token.is_some())))
        .env("RUST_LOG", "warn");
    if let Some(token) = token {
        cmd.args(["--access-token", token]);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "probe failed: {stderr}");
    let mut tally: HashMap<String, (u64, u64)> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let entry = tally
            .entry(v["metric"].as_str().unwrap_or("").to_string())
            .or_default();
        entry.0 += v["sent"].as_u64().unwrap_or(0);
        entry.1 += v["lost"].as_u64().unwrap_or(0) + v["errors"].as_u64().unwrap_or(0);
    }
    (tally, stderr)
}

#[test]
fn a_token_from_vantage_access_opens_the_heavy_endpoints_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("access");
    let keygen = vantage()
        .args(["access", "keygen", "--dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(keys.join("access.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    // A second keygen does not overwrite the key without --force.
    let again = vantage()
        .args(["access", "keygen", "--dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let issue = vantage()
        .args([
            "access", "issue", "--probe", "in-1", "--valid", "1h", "--key",
        ])
        .arg(keys.join("access.key"))
        .output()
        .unwrap();
    assert!(issue.status.success(), "{issue:?}");
    let token = String::from_utf8(issue.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("vt1.in-1."), "{token}");

    let (port, stamp_port) = (free_port(), free_port());
    let mut child = vantage()
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--heavy-rate-per-source",
            "0",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--stamp-port",
            &stamp_port.to_string(),
        ])
        .arg("--cert-dir")
        .arg(dir.path().join("cert"))
        .arg("--require-token")
        .arg(keys.join("access.pub"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let serve = Running(child);
    let mut pin = None;
    let mut said_required = false;
    while pin.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        said_required |= line.contains("need an access token");
        pin = line.strip_prefix("probe with: --pin ").map(str::to_string);
    }
    assert!(
        said_required,
        "vantage serve says heavy requests need a token"
    );
    let pin = pin.unwrap();

    for transport in ["quic", "https"] {
        let (with, _) = probe(port, stamp_port, &pin, dir.path(), transport, Some(&token));
        for metric in [
            "quic_request",
            "https_request",
            "photosync_upload",
            "photosync_download",
        ] {
            let (sent, failed) = with.get(metric).copied().unwrap_or_default();
            assert!(
                sent > 0 && failed == 0,
                "{transport}, token: {metric} {sent} sent, {failed} failed"
            );
        }
        let (without, stderr) = probe(port, stamp_port, &pin, dir.path(), transport, None);
        for metric in [
            "quic_request",
            "https_request",
            "photosync_upload",
            "photosync_download",
        ] {
            let (sent, failed) = without.get(metric).copied().unwrap_or_default();
            assert!(
                sent > 0 && failed == sent,
                "{transport}, no token: {metric} {sent} sent, {failed} failed"
            );
        }
        let (sent, failed) = without["udp_rtt"];
        assert!(
            sent > 0 && failed == 0,
            "STAMP needs no token: {sent} sent, {failed} failed"
        );
        let warnings = stderr.matches("requires an access token").count();
        assert!(
            (1..=1).contains(&warnings),
            "one warning, not one per attempt: {stderr}"
        );
    }

    let pid = serve.0.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = HashMap::new();
    while served.is_empty() && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
            if let Some(pairs) = line.strip_prefix("served: ") {
                served = pairs
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_string(), v.parse::<u64>().ok()?)))
                    .collect();
            }
        }
    }
    assert!(served["access_granted"] > 0, "{served:?}");
    assert!(served["access_missing"] > 0, "{served:?}");
    assert_eq!(
        served["access_invalid"] + served["access_expired"],
        0,
        "{served:?}"
    );
}
