//! The probe against a real responder on 127.0.0.1: real QUIC, TLS, TCP
//! and UDP sockets, bounded in time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use vantage_probe::{run, ProbeArgs, RunError};
use vantage_responder::{Responder, ResponderConfig};
use vantage_wire::{ErrorClass, Metric};

fn args_for(responder: &Responder, state: &Path) -> ProbeArgs {
    assert_eq!(
        responder.quic_addr().port(),
        responder.https_addr().port(),
        "one port for QUIC and HTTPS"
    );
    ProbeArgs {
        targets: vec![format!("dc=127.0.0.1:{}", responder.quic_addr().port())],
        stamp_port: Some(responder.stamp_addr().port()),
        pins: vec![responder.fingerprint().to_string()],
        state_dir: Some(state.to_path_buf()),
        quiet: true,
        seed: Some(1),
        ..ProbeArgs::default()
    }
}

/// A row of series.csv as a map from column to value.
fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &BTreeMap<String, String>, col: &str) -> u64 {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{col} = {:?}", row[col]))
}

/// Every metric is measured with sensible counts and no loss; then the
/// responder goes away (errors are counted by class, the probe keeps
/// running) and comes back on the same ports (the probe recovers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_measured_then_outage_counted_then_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let (quic, https, stamp) = (
        responder.quic_addr(),
        responder.https_addr(),
        responder.stamp_addr(),
    );
    let mut args = args_for(&responder, dir.path());
    args.window = Some(Duration::from_secs(1));
    args.timeout = Some(Duration::from_millis(500));
    args.duration = Some(Duration::from_secs(10));
    args.out = Some(dir.path().join("out"));
    args.rates = [
        "udp_rtt=40",
        "quic_request=20",
        "https_request=20",
        "quic_handshake=10",
        "tcp_connect=10",
    ]
    .map(String::from)
    .to_vec();
    args.metrics = vantage_probe::LATENCY_METRICS
        .map(|m| m.name().to_string())
        .to_vec();
    args.country = Some("IN".into());
    args.phase = Some("before".into());
    let config_probe = args.into_config().unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    let probe = tokio::spawn(run(config_probe, stop));

    // 0–3.2 s up, 3.2–5.5 s down, then up again on the same ports.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    responder.shutdown().await;
    let down_at = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let back_at = std::time::SystemTime::now();
    let restarted = Responder::start(ResponderConfig {
        quic_port: quic.port(),
        https_port: https.port(),
        stamp_port: stamp.port(),
        ..config
    })
    .await
    .expect("restart on the same ports");
    let summary = probe.await.unwrap().expect("probe run");
    restarted.shutdown().await;

    let rows = read_csv(&dir.path().join("out/series.csv"));
    assert!(
        summary.batches >= 8,
        "one batch per 1 s window, got {}",
        summary.batches
    );
    let ts =
        |row: &BTreeMap<String, String>, col: &str| humantime::parse_rfc3339(&row[col]).unwrap();
    let metrics = vantage_probe::LATENCY_METRICS;
    for m in metrics {
        let of_metric: Vec<_> = rows.iter().filter(|r| r["metric"] == m.name()).collect();
        for r in &of_metric {
            assert_eq!(r["country"], "IN");
            assert_eq!(r["phase"], "before");
            assert_eq!(
                num(r, "sent"),
                num(r, "count") + num(r, "lost") + num(r, "errors"),
                "{r:?}"
            );
        }
        // Before the outage (windows ending 0.6 s before it): no loss at all.
        let before: Vec<_> = of_metric
            .iter()
            .filter(|r| ts(r, "window_end") + Duration::from_millis(600) <= down_at)
            .collect();
        let counted: u64 = before.iter().map(|r| num(r, "count")).sum();
        assert!(
            counted >= 3,
            "{m}: only {counted} samples before the outage"
        );
        for r in &before {
            assert_eq!(
                (num(r, "lost"), num(r, "errors")),
                (0, 0),
                "{m} lost before the outage: {r:?}"
            );
            assert!(
                num(r, "p50_us") > 0 && num(r, "p50_us") < 100_000,
                "{m}: p50 {} µs on loopback",
                r["p50_us"]
            );
        }
        // During the outage: failures, counted by class.
        let during: Vec<_> = of_metric
            .iter()
            .filter(|r| {
                ts(r, "window_start") >= down_at + Duration::from_millis(300)
                    && ts(r, "window_end") <= back_at
            })
            .collect();
        let failed: u64 = during
            .iter()
            .map(|r| num(r, "lost") + num(r, "errors"))
            .sum();
        assert!(
            failed > 0,
            "{m}: no failure counted while the responder was down: {during:?}"
        );
        // After it came back: measured again.
        let after: u64 = of_metric
            .iter()
            .filter(|r| ts(r, "window_start") >= back_at + Duration::from_millis(1500))
            .map(|r| num(r, "count"))
            .sum();
        assert!(after > 0, "{m}: no recovery after the responder came back");
    }
    // TCP to a closed port is refused, not timed out.
    let refused: u64 = rows
        .iter()
        .filter(|r| r["metric"] == "tcp_connect")
        .filter(|r| r["error_classes"].contains("refused="))
        .count() as u64;
    assert!(
        refused > 0,
        "tcp_connect failures should be classed `refused`"
    );
    // udp_rtt losses are losses (no answer), not errors.
    let udp_lost: u64 = rows
        .iter()
        .filter(|r| r["metric"] == "udp_rtt")
        .map(|r| num(r, "lost"))
        .sum();
    assert!(udp_lost > 0);
    // Histogram logs exist for each metric.
    for m in metrics {
        let p = dir.path().join(format!("out/hlog/dc.{}.hlog", m.name()));
        assert!(p.exists(), "{p:?}");
    }
}

/// Coordinated omission, for real: at 100 requests/s, a responder stall of
/// 500 ms must show in p99 for every request scheduled during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500ms_responder_stall_shows_in_p99() {
    let dir = tempfile::tempdir().unwrap();
    let responder = Responder::start(ResponderConfig::local().unwrap())
        .await
        .unwrap();
    let mut args = args_for(&responder, dir.path());
    args.metrics = vec!["quic_request".into()];
    args.rates = vec!["quic_request=100".into()];
    args.timeout = Some(Duration::from_secs(3));
    args.duration = Some(Duration::from_secs(4));
    let config = args.into_config().unwrap();
    let (_tx, stop) = watch::channel(false);
    let probe = tokio::spawn(run(config, stop));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    responder.inject_stall(Duration::from_millis(500));
    let summary = probe.await.unwrap().unwrap();
    responder.shutdown().await;
    let s = summary
        .totals
        .iter()
        .find(|s| s.metric == Metric::QuicRequest)
        .unwrap();
    let h = &s.histogram;
    assert!(h.len() >= 300, "{} samples", h.len());
    assert_eq!(s.lost + s.error_total(), 0);
    let p99 = h.value_at_quantile(0.99);
    let p50 = h.value_at_quantile(0.50);
    assert!(p99 > 400_000, "p99 {p99} µs hides the 500 ms stall");
    assert!(
        p50 < 50_000,
        "p50 {p50} µs: the stall should touch only ~1/8 of requests"
    );
    let slow = h
        .iter_recorded()
        .filter(|v| v.value_iterated_to() > 100_000)
        .map(|v| v.count_at_value())
        .sum::<u64>();
    assert!(
        slow >= 35,
        "only {slow} requests carry the stall; ~50 were scheduled during it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let responder = Responder::start(ResponderConfig::local().unwrap())
        .await
        .unwrap();
    let mut args = args_for(&responder, dir.path());
    let wrong = "sha256:".to_string() + &"ab".repeat(32);
    args.pins = vec![wrong.clone()];
    args.duration = Some(Duration::from_secs(1));
    let (_tx, stop) = watch::channel(false);
    let err = run(args.into_config().unwrap(), stop).await.unwrap_err();
    responder.shutdown().await;
    assert!(matches!(err, RunError::PinMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("pin mismatch"), "{msg}");
    assert!(msg.contains(&responder_fingerprint_hex(&msg)), "{msg}");
    assert!(msg.contains(&wrong), "names the expected pin: {msg}");
}

fn responder_fingerprint_hex(msg: &str) -> String {
    // The message names the presented fingerprint: sha256: and 64 hex digits.
    let at = msg
        .find("presented sha256:")
        .expect("presented fingerprint in the message");
    msg[at + 10..at + 10 + 71].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_is_trusted_and_insecure_runs_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    let identity = vantage_responder::Identity::load_or_generate(
        &dir.path().join("cert"),
        &["localhost".into()],
    )
    .unwrap();
    let responder = Responder::start(ResponderConfig {
        identity,
        ..ResponderConfig::local().unwrap()
    })
    .await
    .unwrap();
    let mut args = args_for(&responder, dir.path());
    args.pins.clear();
    args.targets = vec![format!("dc=localhost:{}", responder.quic_addr().port())];
    args.ca_file = Some(dir.path().join("cert/cert.pem"));
    args.metrics = vec!["tls_handshake".into(), "quic_request".into()];
    args.rates = vec!["tls_handshake=20".into(), "quic_request=20".into()];
    args.duration = Some(Duration::from_millis(1500));
    let (_tx, stop) = watch::channel(false);
    let summary = run(args.clone().into_config().unwrap(), stop)
        .await
        .unwrap();
    for s in &summary.totals {
        assert!(
            s.histogram.len() > 5,
            "{}: {} samples",
            s.metric,
            s.histogram.len()
        );
        assert_eq!(s.error_total() + s.lost, 0, "{}: {:?}", s.metric, s.errors);
    }

    args.ca_file = None;
    args.insecure = true;
    args.out = Some(dir.path().join("insecure"));
    let (_tx, stop) = watch::channel(false);
    run(args.into_config().unwrap(), stop).await.unwrap();
    responder.shutdown().await;
    let rows = read_csv(&dir.path().join("insecure/series.csv"));
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["labels"].contains("tls=insecure")),
        "{rows:?}"
    );
}

/// A probe that measures only `udp_rtt` against a responder on `::1`:
/// STAMP needs no certificate trust, so none is asked for and none is
/// labelled; each series names the address that answered it, IPv6 in
/// brackets, and `udp_rtt` names the STAMP port, not the QUIC/HTTPS one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_only_probe_over_ipv6_asks_no_trust_and_names_the_stamp_port() {
    let dir = tempfile::tempdir().unwrap();
    let responder = Responder::start(ResponderConfig {
        bind: std::net::Ipv6Addr::LOCALHOST.into(),
        ..ResponderConfig::local().unwrap()
    })
    .await
    .unwrap();
    let port = responder.quic_addr().port();
    let stamp = responder.stamp_addr().port();
    let mut args = ProbeArgs {
        targets: vec![format!("dc=[::1]:{port}")],
        stamp_port: Some(stamp),
        state_dir: Some(dir.path().to_path_buf()),
        quiet: true,
        seed: Some(1),
        metrics: vec!["udp_rtt".into()],
        rates: vec!["udp_rtt=50".into()],
        duration: Some(Duration::from_millis(1500)),
        window: Some(Duration::from_secs(1)),
        ..ProbeArgs::default()
    };
    for (insecure, out) in [(false, "plain"), (true, "insecure")] {
        args.insecure = insecure;
        args.out = Some(dir.path().join(out));
        let (_tx, stop) = watch::channel(false);
        let summary = run(args.clone().into_config().expect("no trust needed"), stop)
            .await
            .unwrap();
        let counted: u64 = summary.totals.iter().map(|s| s.histogram.len()).sum();
        assert!(counted > 20, "{out}: {counted} udp_rtt samples");
        let rows = read_csv(&dir.path().join(out).join("series.csv"));
        assert!(!rows.is_empty());
        for r in &rows {
            assert_eq!(r["metric"], "udp_rtt");
            assert_eq!(r["target_address"], format!("[::1]:{stamp}"), "{r:?}");
            assert!(!r["labels"].contains("tls="), "{out}: {r:?}");
        }
    }
    responder.shutdown().await;
}

#[tokio::test]
async fn one_way_delays_against_a_reflector_on_another_clock_need_both_clocks_synchronised() {
    let dir = tempfile::tempdir().unwrap();
    let responder = Responder::start(ResponderConfig::local().unwrap())
        .await
        .unwrap();
    // A target given by flags: the probe cannot know it shares the clock.
    let args = ProbeArgs {
        targets: vec![format!("dc=127.0.0.1:{}", responder.quic_addr().port())],
        stamp_port: Some(responder.stamp_addr().port()),
        state_dir: Some(dir.path().to_path_buf()),
        quiet: true,
        seed: Some(1),
        metrics: vec!["udp_rtt".into(), "udp_owd_forward".into()],
        rates: vec!["udp_rtt=50".into()],
        duration: Some(Duration::from_millis(1500)),
        window: Some(Duration::from_secs(1)),
        out: Some(dir.path().join("out")),
        ..ProbeArgs::default()
    };
    let (_tx, stop) = watch::channel(false);
    let summary = run(args.into_config().unwrap(), stop).await.unwrap();
    let of = |m: Metric| {
        summary
            .totals
            .iter()
            .find(|s| s.metric == m)
            .cloned()
            .unwrap_or_else(|| panic!("no {m}"))
    };
    let (rtt, fwd) = (of(Metric::UdpRtt), of(Metric::UdpOwdForward));
    assert!(rtt.histogram.len() > 20);
    // This host's kernel says whether its clock is synchronised; both ends
    // read the same one, so both say the same.
    if vantage_responder::clock_estimate().synchronized() {
        assert_eq!(fwd.histogram.len(), rtt.histogram.len());
    } else {
        // Unsynchronised: no one-way figure, every answered attempt
        // counted as such; the round trip stands.
        assert!(fwd.histogram.is_empty());
        assert_eq!(
            fwd.errors.get(&ErrorClass::Unsynchronized).copied(),
            Some(rtt.histogram.len()),
            "{:?}",
            fwd.errors
        );
        let rows = read_csv(&dir.path().join("out").join("series.csv"));
        assert!(rows
            .iter()
            .any(|r| r["metric"] == "udp_owd_forward"
                && r["error_classes"].contains("unsynchronized")));
    }
    responder.shutdown().await;
}

/// `path_trace` on its schedule toward IPv4 and IPv6 loopback (the kernel
/// answers; no responder needed): each trace is one attempt of the
/// series, reached at TTL 1, and its hop is in `traces.csv`. Root uses
/// ICMP datagram sockets, a user outside `ping_group_range` UDP: both
/// reach the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_trace_runs_on_its_schedule_and_its_hops_are_written() {
    let dir = tempfile::tempdir().unwrap();
    for (host, address) in [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")] {
        let out = dir.path().join(address.replace(':', "_"));
        let args = ProbeArgs {
            targets: vec![format!("dc={host}:4433")],
            state_dir: Some(dir.path().to_path_buf()),
            quiet: true,
            seed: Some(3),
            metrics: vec!["path_trace".into()],
            rates: vec!["path_trace=5".into()],
            duration: Some(Duration::from_millis(2000)),
            window: Some(Duration::from_secs(1)),
            out: Some(out.clone()),
            ..ProbeArgs::default()
        };
        let (_tx, stop) = watch::channel(false);
        let summary = run(args.into_config().expect("no trust needed"), stop)
            .await
            .unwrap();
        let s = summary
            .totals
            .iter()
            .find(|s| s.metric == Metric::PathTrace)
            .unwrap_or_else(|| panic!("{address}: no path_trace series"));
        assert!(s.sent >= 3, "{address}: {} traces in 2 s at 5/s", s.sent);
        assert_eq!(s.histogram.len(), s.sent, "{address}: every trace reached");
        assert!(s.errors.is_empty() && s.lost == 0, "{address}: {s:?}");
        let hops = read_csv(&out.join("traces.csv"));
        assert_eq!(hops.len() as u64, s.sent, "{address}: one hop per trace");
        for h in &hops {
            assert_eq!(
                (h["ttl"].as_str(), h["address"].as_str(), h["end"].as_str()),
                ("1", address, "reached"),
                "{h:?}"
            );
            assert_eq!(h["target"], "dc");
            let rtt: u64 = h["rtts_us"].split(' ').next().unwrap().parse().unwrap();
            assert!(rtt < 100_000, "{address}: loopback round trip {rtt} µs");
        }
    }
}
