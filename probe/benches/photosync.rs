//! Photo-sync upload goodput on loopback next to what the same bytes reach
//! without Vantage: a raw quinn stream transfer (same QUIC and TLS
//! configuration, same concurrency, no checksum, no receipt), a raw
//! tokio-rustls stream (TLS 1.3, no HTTP), and, for context, iperf3's
//! single plaintext TCP stream. All in one run, one process per tool pair,
//! loopback only, bounded (a few seconds per figure).
//!
//! `cargo bench -p vantage-probe --bench photosync` prints a Markdown table.
//! Targets (issue "Benches"): Vantage QUIC ≥ 0.9× raw quinn, Vantage HTTPS
//! ≥ 0.9× raw tokio-rustls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use vantage_probe::{ProbeArgs, SyncDirection, SyncTransport, TlsClient, Trust};
use vantage_responder::{Identity, Responder, ResponderConfig};
use vantage_wire::Metric;

const PHOTOS: usize = 20;
const PHOTO: usize = 3_000_000;
const CONCURRENCY: usize = 3;
const ROUNDS: usize = 3;

fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
}

/// Vantage's own photo sync: one batch, goodput as the probe records it.
async fn vantage(transport: SyncTransport) -> f64 {
    let responder = Responder::start(ResponderConfig::local().expect("identity"))
        .await
        .expect("responder");
    let state = tempfile::tempdir().expect("temporary directory");
    let args = ProbeArgs {
        targets: vec![format!("dc=127.0.0.1:{}", responder.quic_addr().port())],
        stamp_port: Some(responder.stamp_addr().port()),
        pins: vec![responder.fingerprint().to_string()],
        state_dir: Some(state.path().to_path_buf()),
        quiet: true,
        seed: Some(1),
        metrics: vec!["photosync_goodput".into()],
        sync_every: Some(Duration::from_secs(60)),
        sync_photos: Some(PHOTOS as u32),
        sync_concurrency: Some(CONCURRENCY as u32),
        sync_photo_bytes: Some(PHOTO as u64),
        sync_size_sigma: Some(0.0),
        sync_direction: Some(SyncDirection::Upload),
        sync_transport: Some(transport),
        duration: Some(Duration::from_millis(200)),
        ..ProbeArgs::default()
    };
    let (_tx, stop) = watch::channel(false);
    let summary = vantage_probe::run(args.into_config().expect("config"), stop)
        .await
        .expect("probe run");
    responder.shutdown().await;
    let goodput = summary
        .totals
        .iter()
        .find(|s| s.metric == Metric::PhotosyncGoodput)
        .expect("goodput series");
    assert_eq!(goodput.histogram.len(), 1, "{goodput:?}");
    goodput.histogram.value_at_quantile(0.5) as f64 / 1000.0
}

/// The same bytes over raw quinn streams: connect, `CONCURRENCY` workers
/// each sending whole photos on fresh streams and waiting for a 1-byte
/// answer after the stream's end (the least a receipt can be).
async fn raw_quinn() -> f64 {
    let identity = Identity::generate(&["localhost".into()]).expect("identity");
    let server_config = identity
        .quic_server_config(b"raw", 256, Duration::from_secs(30))
        .expect("server config");
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap())
        .expect("server endpoint");
    let addr = server.local_addr().expect("address");
    let accept = tokio::spawn(async move {
        let Some(incoming) = server.accept().await else {
            return;
        };
        let Ok(conn) = incoming.await else { return };
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(Some(_)) = recv.read(&mut buf).await {}
                let _ = send.write_all(&[1]).await;
                let _ = send.finish();
            });
        }
    });
    let client = TlsClient::new(&Trust::Pinned(vec![identity.fingerprint()]), &[b"raw"])
        .expect("client TLS");
    let endpoint = client
        .quic_endpoint(addr, Duration::from_secs(30), Duration::from_secs(10))
        .expect("client endpoint");
    let photo: Arc<Vec<u8>> = Arc::new((0..PHOTO).map(|i| (i * 7 % 251) as u8).collect());
    let started = Instant::now();
    let conn = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (conn, photo, next) = (conn.clone(), photo.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < PHOTOS {
                let (mut send, mut recv) = conn.open_bi().await.expect("stream");
                for chunk in photo.chunks(64 * 1024) {
                    send.write_all(chunk).await.expect("write");
                }
                send.finish().expect("finish");
                let mut ack = [0u8; 1];
                recv.read_exact(&mut ack).await.expect("ack");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let took = started.elapsed();
    conn.close(0u32.into(), b"");
    accept.abort();
    mbps(PHOTOS * PHOTO, took)
}

/// The same bytes over `CONCURRENCY` raw TLS 1.3 connections: each sends
/// a photo prefixed by its length and waits for a 1-byte answer.
async fn raw_tls() -> f64 {
    let identity = Identity::generate(&["localhost".into()]).expect("identity");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        identity.server_config(&[b"raw"]).expect("server config"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let accept = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let Ok(len) = tls.read_u64().await else {
                        return;
                    };
                    let mut left = len as usize;
                    while left > 0 {
                        let want = left.min(buf.len());
                        match tls.read(&mut buf[..want]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left -= n,
                        }
                    }
                    if tls.write_all(&[1]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = TlsClient::new(&Trust::Pinned(vec![identity.fingerprint()]), &[b"raw"])
        .expect("client TLS");
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let photo: Arc<Vec<u8>> = Arc::new((0..PHOTO).map(|i| (i * 7 % 251) as u8).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (connector, photo, next) = (connector.clone(), photo.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, tcp).await.expect("TLS");
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < PHOTOS {
                tls.write_u64(PHOTO as u64).await.expect("length");
                for chunk in photo.chunks(64 * 1024) {
                    tls.write_all(chunk).await.expect("write");
                }
                tls.flush().await.expect("flush");
                let mut ack = [0u8; 1];
                tls.read_exact(&mut ack).await.expect("ack");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let took = started.elapsed();
    accept.abort();
    mbps(PHOTOS * PHOTO, took)
}

/// iperf3's single plaintext TCP stream of the same byte count, for context.
fn iperf3() -> Option<f64> {
    let port = "5299";
    let mut server = std::process::Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", port])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", port, "-J", "-n"])
        .arg((PHOTOS * PHOTO).to_string())
        .output()
        .ok();
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_slice(&out?.stdout).ok()?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e6)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut vq, mut rq, mut vh, mut rh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleaved rounds, so drift on a shared machine hits every figure alike.
    for _ in 0..ROUNDS {
        vq.push(rt.block_on(vantage(SyncTransport::Quic)));
        rq.push(rt.block_on(raw_quinn()));
        vh.push(rt.block_on(vantage(SyncTransport::Https)));
        rh.push(rt.block_on(raw_tls()));
    }
    let (vq, rq, vh, rh) = (median(vq), median(rq), median(vh), median(rh));
    println!(
        "{PHOTOS} photos of {PHOTO} bytes, {CONCURRENCY} in flight, upload, loopback, one process, 2 runtime threads; median of {ROUNDS} interleaved rounds (Mbit/s)\n"
    );
    println!("| transfer | Vantage photo sync | raw stream | ratio | target | met |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, v, r) in [("QUIC", vq, rq), ("HTTPS / TLS", vh, rh)] {
        let ratio = v / r;
        println!(
            "| {name} | {v:.0} | {r:.0} | {ratio:.2} | ≥ 0.90 | {} |",
            if ratio >= 0.9 { "yes" } else { "no" }
        );
    }
    match iperf3() {
        Some(b) => println!("\niperf3 single TCP stream (plaintext, same bytes): {b:.0} Mbit/s"),
        None => println!("\niperf3 not found: install Debian's iperf3 (benches/run does)"),
    }
}
