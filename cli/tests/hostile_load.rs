//! Hostile load on a real `vantage serve` while a real `vantage probe`
//! measures it, on loopback. The strangers come from 127.0.0.2 and up, the
//! probe from 127.0.0.1, so each side has its own per-source buckets, as
//! on the internet. Over one probe run the strangers send garbage and
//! floods to the STAMP and QUIC ports, hold 1,000 idle or slowloris TCP
//! connections, stall TLS ClientHellos part-way, send 1 MB request heads,
//! ask `/echo` for far beyond its cap, and open and abandon photo uploads
//! over HTTPS and QUIC.
//!
//! Asserted: the responder's RSS stays under [`RSS_BOUND_KIB`]; every kind
//! of attack shows in its refusal counters; the probe's `udp_rtt`,
//! `quic_request` and `https_request` p50s move by less than
//! [`P50_TOLERANCE_US`] against a run without the attack, and it loses
//! nothing. Every load loop is bounded in time and count. The figures of
//! one run are in benches/RESULTS.md.

mod common;

use common::{free_port, vantage, Running};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The probe's run, with and without the attack.
const PROBE_SECS: u64 = 8;
/// The responder's resident memory never goes above this (KiB).
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// Largest p50 shift of a probe metric under attack, µs. This 2-core VM's
/// cross-core wake-up alone costs ~40 µs at p50 and the attackers share
/// the cores, so the bound is on the responder staying responsive, not on
/// CPU contention vanishing.
const P50_TOLERANCE_US: i64 = 3_000;

struct Serve {
    process: Running,
    port: u16,
    stamp_port: u16,
    pin: String,
    lines: mpsc::Receiver<String>,
}

fn serve(dir: &std::path::Path) -> Serve {
    let (port, stamp_port) = (free_port(), free_port());
    let mut child = vantage()
        .args(["serve", "--bind", "127.0.0.1"])
        .args([
            "--port",
            &port.to_string(),
            "--stamp-port",
            &stamp_port.to_string(),
        ])
        .arg("--cert-dir")
        .arg(dir.join("cert"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut pin = None;
    while pin.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("vantage serve started");
        pin = line.strip_prefix("probe with: --pin ").map(str::to_string);
    }
    Serve {
        process: Running(child),
        port,
        stamp_port,
        pin: pin.unwrap(),
        lines,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One probe run: each metric's p50 (µs), and what it sent and lost.
#[derive(Debug, Default)]
struct Measured {
    p50_us: HashMap<String, i64>,
    lost_or_failed: u64,
    count: u64,
}

fn probe(serve: &Serve, dir: &std::path::Path) -> Measured {
    let out = vantage()
        .args(["probe", "--json"])
        .args(["--target", &format!("dc=127.0.0.1:{}", serve.port)])
        .args(["--stamp-port", &serve.stamp_port.to_string()])
        .args(["--pin", &serve.pin])
        .args(["--window", &format!("{PROBE_SECS}s")])
        .args(["--duration", &format!("{PROBE_SECS}s")])
        .args(["--rate", "udp_rtt=20", "--rate", "quic_request=10"])
        .args(["--rate", "https_request=10"])
        .arg("--state-dir")
        .arg(dir.join("probe-state"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = Measured::default();
    let mut fullest: HashMap<String, u64> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let metric = v["metric"].as_str().unwrap_or("").to_string();
        let count = v["count"].as_u64().unwrap_or(0);
        // The run spans two UTC-aligned windows: the fuller one's p50.
        if let Some(p50) = v["p50_us"].as_i64() {
            if count > fullest.get(&metric).copied().unwrap_or(0) {
                fullest.insert(metric.clone(), count);
                m.p50_us.insert(metric.clone(), p50);
            }
        }
        m.count += count;
        let failed = v["lost"].as_u64().unwrap_or(0) + v["errors"].as_u64().unwrap_or(0);
        if failed > 0 {
            println!("{metric}: {failed} lost or failed: {}", v["error_classes"]);
        }
        m.lost_or_failed += failed;
    }
    m
}

/// What the strangers did, counted on their side.
#[derive(Default)]
struct Sent {
    datagrams: AtomicU64,
    tcp_opened: AtomicU64,
    big_heads: AtomicU64,
    big_echoes: AtomicU64,
    photos_abandoned: AtomicU64,
}

fn stranger(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((source, 0).into()).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .ok()?
        .ok()
}

async fn tls_from(
    source: Ipv4Addr,
    to: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = connect_from(source, to).await?;
    let name = "localhost".try_into().ok()?;
    tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .ok()?
        .ok()
}

/// Every attack at once until `until`, each bounded in count too.
async fn attack(serve_port: u16, stamp_port: u16, until: Instant, sent: Arc<Sent>) {
    let https: SocketAddr = (Ipv4Addr::LOCALHOST, serve_port).into();
    let client =
        vantage_tls::TlsClient::new(&vantage_tls::Trust::Insecure, &[b"http/1.1"]).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client.config.clone());
    let mut tasks = tokio::task::JoinSet::new();
    // Garbage and floods on the STAMP and QUIC ports: 2,000 a second each,
    // from two sources, at most 40,000 each.
    for (source, port) in [(2, stamp_port), (3, serve_port), (4, stamp_port)] {
        let sent = sent.clone();
        tasks.spawn(async move {
            let socket = tokio::net::UdpSocket::bind((stranger(source), 0))
                .await
                .unwrap();
            let to: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
            let mut tick = tokio::time::interval(Duration::from_micros(500));
            for i in 0u32..40_000 {
                if Instant::now() >= until {
                    break;
                }
                tick.tick().await;
                let len = 1 + (i as usize * 7919) % 1400;
                let bytes: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
                if socket.send_to(&bytes, to).await.is_ok() {
                    sent.datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    // 1,000 idle or slowloris TCP connections from ten sources, each
    // dripping a partial ClientHello a byte a second, held to the end.
    for source in 10..20u8 {
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut held = Vec::new();
            for _ in 0..100 {
                if let Some(tcp) = connect_from(stranger(source), https).await {
                    sent.tcp_opened.fetch_add(1, Ordering::Relaxed);
                    held.push(tcp);
                }
            }
            let hello = [
                0x16u8, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03,
            ];
            for byte in hello.iter().cycle() {
                if Instant::now() >= until {
                    break;
                }
                for (k, tcp) in held.iter_mut().enumerate() {
                    // Half stay silent, half drip.
                    if k % 2 == 0 {
                        let _ = tcp.write_all(&[*byte]).await;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    // Partial ClientHellos: a record header promising 16 KiB, then silence.
    {
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut held = Vec::new();
            for _ in 0..200 {
                if Instant::now() >= until {
                    break;
                }
                if let Some(mut tcp) = connect_from(stranger(5), https).await {
                    let _ = tcp
                        .write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00])
                        .await;
                    sent.tcp_opened.fetch_add(1, Ordering::Relaxed);
                    held.push(tcp);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
        });
    }
    // 1 MB request heads, and /echo far beyond its cap.
    {
        let (sent, tls) = (sent.clone(), tls.clone());
        tasks.spawn(async move {
            let mut head = b"GET /echo?bytes=1 HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
            head.resize(head.len() + (1 << 20), b'a');
            head.extend_from_slice(b"\r\n\r\n");
            for _ in 0..40 {
                if Instant::now() >= until {
                    break;
                }
                if let Some(mut s) = tls_from(stranger(6), https, &tls).await {
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&head)).await;
                    let mut buf = [0u8; 512];
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                    sent.big_heads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    {
        let (sent, tls) = (sent.clone(), tls.clone());
        tasks.spawn(async move {
            let Some(mut s) = tls_from(stranger(7), https, &tls).await else {
                return;
            };
            for _ in 0..2_000 {
                if Instant::now() >= until {
                    break;
                }
                let ask = b"GET /echo?bytes=4000000000 HTTP/1.1\r\nHost: localhost\r\n\r\n";
                if s.write_all(ask).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => sent.big_echoes.fetch_add(1, Ordering::Relaxed),
                    _ => break,
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    // Photo uploads opened and abandoned: a head promising 64 MiB, 1 KiB
    // of body, then the connection dropped; 20 sources, 100 each.
    for source in 30..50u8 {
        let (sent, tls) = (sent.clone(), tls.clone());
        tasks.spawn(async move {
            for _ in 0..100 {
                if Instant::now() >= until {
                    break;
                }
                if let Some(mut s) = tls_from(stranger(source), https, &tls).await {
                    let head = "PUT /photo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 67108864\r\nX-Photo-Crc32: 1234abcd\r\n\r\n";
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&[7u8; 1024]).await;
                    sent.photos_abandoned.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    }
    // Photo streams over QUIC opened and abandoned: connections from
    // 127.0.0.8, each stream a photo-upload head promising 64 MiB and
    // 1 KiB of body, then reset; at most 2,000 streams.
    {
        let sent = sent.clone();
        tasks.spawn(async move {
            let client = vantage_tls::TlsClient::new(
                &vantage_tls::Trust::Insecure,
                &[vantage_wire::echo::ALPN],
            )
            .unwrap();
            let crypto =
                quinn::crypto::rustls::QuicClientConfig::try_from(client.config.clone()).unwrap();
            let mut endpoint = quinn::Endpoint::client((stranger(8), 0).into()).unwrap();
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let quic: SocketAddr = (Ipv4Addr::LOCALHOST, serve_port).into();
            let head = vantage_wire::photo::PhotoRequest::Upload {
                size: 64 << 20,
                crc32: 0x1234_abcd,
            }
            .encode();
            let mut streams = 0u32;
            'connections: while streams < 2_000 && Instant::now() < until {
                let Ok(connecting) = endpoint.connect(quic, "localhost") else {
                    break;
                };
                let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(2), connecting).await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while streams < 2_000 && Instant::now() < until {
                    let Ok((mut send, _recv)) = conn.open_bi().await else {
                        continue 'connections;
                    };
                    let _ = send.write_all(&head).await;
                    let _ = send.write_all(&[7u8; 1024]).await;
                    let _ = send.reset(0u32.into());
                    streams += 1;
                    sent.photos_abandoned.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            }
            endpoint.close(0u32.into(), b"done");
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The counters of the `served:` line `vantage serve` prints as it stops.
fn served(serve: Serve) -> HashMap<String, u64> {
    let pid = serve.process.0.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match serve.lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                if let Some(pairs) = line.strip_prefix("served: ") {
                    return pairs
                        .split_whitespace()
                        .filter_map(|kv| kv.split_once('='))
                        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                        .collect();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("vantage serve printed no served: line");
}

#[test]
fn a_responder_under_hostile_load_stays_small_counts_every_refusal_and_keeps_probes_steady() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let pid = serve.process.0.id();
    let rss_before = rss_kib(pid);
    let quiet = probe(&serve, dir.path());

    let sent = Arc::new(Sent::default());
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(PROBE_SECS + 3);
    let attacker = {
        let (sent, port, stamp) = (sent.clone(), serve.port, serve.stamp_port);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(attack(port, stamp, until, sent));
        })
    };
    // Let the connections and floods build up first.
    std::thread::sleep(Duration::from_secs(2));
    let attacked = probe(&serve, dir.path());
    attacker.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let rss_after = rss_kib(pid);
    let counters = served(serve);
    let peak = peak.load(Ordering::Relaxed);

    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    println!(
        "strangers sent: {} datagrams, {} TCP connections, {} 1 MB heads, {} oversized echoes, {} abandoned photos",
        sent.datagrams.load(Ordering::Relaxed),
        sent.tcp_opened.load(Ordering::Relaxed),
        sent.big_heads.load(Ordering::Relaxed),
        sent.big_echoes.load(Ordering::Relaxed),
        sent.photos_abandoned.load(Ordering::Relaxed),
    );
    println!("responder RSS: {rss_before} KiB before, {peak} KiB peak, {rss_after} KiB after");
    println!("responder counters: {counters:?}");
    for metric in ["udp_rtt", "quic_request", "https_request"] {
        let (q, a) = (quiet.p50_us[metric], attacked.p50_us[metric]);
        println!(
            "{metric}: p50 {q} µs quiet, {a} µs under attack ({:+} µs)",
            a - q
        );
    }
    println!(
        "probe: {} samples quiet ({} lost or failed), {} under attack ({} lost or failed)",
        quiet.count, quiet.lost_or_failed, attacked.count, attacked.lost_or_failed
    );

    assert!(peak < RSS_BOUND_KIB, "RSS peaked at {peak} KiB");
    // Every kind of attack left its mark in the counters.
    assert!(
        get("stamp_rate_limited") + get("stamp_malformed") > 1_000,
        "{counters:?}"
    );
    assert!(get("handshakes_cut") > 100, "{counters:?}");
    assert!(get("tls_failed") > 100, "{counters:?}");
    // The 1 MB heads (40 sent) and the echoes past their cap.
    assert!(get("http_bad_requests") > 30, "{counters:?}");
    // Abandoned photo uploads: the client left mid-body, counted apart
    // from requests that broke HTTP.
    assert!(get("http_aborted") > 100, "{counters:?}");
    assert!(get("heavy_rate_limited") > 100, "{counters:?}");
    assert!(get("photos_damaged") > 0, "{counters:?}");
    // Photo streams reset under the responder: broken requests, counted.
    assert!(get("quic_bad_requests") > 100, "{counters:?}");
    // The legitimate probe: nothing lost, p50s within the tolerance.
    assert!(attacked.count > 0 && quiet.count > 0);
    assert_eq!(
        attacked.lost_or_failed, 0,
        "the probe lost samples under attack"
    );
    for metric in ["udp_rtt", "quic_request", "https_request"] {
        let shift = attacked.p50_us[metric] - quiet.p50_us[metric];
        assert!(
            shift.abs() < P50_TOLERANCE_US,
            "{metric} p50 moved {shift} µs under attack"
        );
    }
}
