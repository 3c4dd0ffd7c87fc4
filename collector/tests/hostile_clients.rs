//! The collector against clients that lie, stall or flood, through its
//! real listeners on 127.0.0.1: a wrong token is refused from the request's
//! head before any body is read, a body that drips loses its slot, the
//! memory of all uploads in flight is bounded, and a collector whose disk
//! fills refuses with `storage_full`, says so in `/health`, and recovers by
//! itself with nothing lost or doubled; `/metrics` and `/health` show no
//! token, token hash or batch content.

#[path = "support/collector.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};
use support::{add_token, setup_limited, uploader, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_collector::{StoreLocation, UploadLimits};
use vantage_tls::{TlsClient, Trust};
use vantage_wire::upload::{self, Ack, AckStatus};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the collector's HTTPS port, pinned to its certificate.
async fn https(s: &Setup) -> Tls {
    let client = TlsClient::new(
        &Trust::Pinned(vec![s.collector.fingerprint()]),
        &[b"http/1.1"],
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(s.collector.https_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(client.config)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Writes a batch upload's head (no body) with `token` and `length`.
async fn post_head(tls: &mut Tls, token: &str, length: usize) {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n",
        upload::HTTP_PATH
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
}

/// The status code and body of the response, read until the server closes
/// or `within` passes (then `None`).
async fn response(tls: &mut Tls, within: Duration) -> Option<(u16, String)> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                if length.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn limits(body_timeout: Duration, in_flight_bytes: usize) -> UploadLimits {
    UploadLimits {
        body_timeout,
        in_flight_bytes,
        busy_wait: Duration::from_millis(300),
        per_token: None,
    }
}

async fn collector(limits: UploadLimits) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = StoreLocation::Sqlite(dir.path().join("c.db"));
    setup_limited(db, dir, limits).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_over_https_before_its_body_is_sent() {
    let s = collector(limits(Duration::from_secs(60), 64 << 20)).await;
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut tls = https(&s).await;
        post_head(&mut tls, "vt_fake", 15 << 20).await;
        conns.push(tls);
    }
    for tls in &mut conns {
        let answer = response(tls, Duration::from_secs(5)).await;
        let (status, body) = answer.expect("an answer without the body being sent");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("unknown or revoked token"), "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        s.collector.metrics().refused().get("unauthorized"),
        Some(&20)
    );
    s.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_over_quic_before_its_body_is_sent() {
    let s = collector(limits(Duration::from_secs(60), 64 << 20)).await;
    let client = TlsClient::new(
        &Trust::Pinned(vec![s.collector.fingerprint()]),
        &[upload::ALPN],
    )
    .unwrap();
    let endpoint = client
        .quic_endpoint(
            s.collector.quic_addr(),
            Duration::from_secs(10),
            Duration::from_secs(2),
        )
        .unwrap();
    let conn = endpoint
        .connect(s.collector.quic_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The head and token, and the start of a 15 MiB body that never ends.
    let head = upload::encode_request("vt_fake", &[0u8; 64 << 10]);
    send.write_all(&head).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16))
        .await
        .expect("an answer before the stream is finished")
        .unwrap();
    let ack = Ack::decode(&answer).unwrap();
    assert_eq!(ack.status, AckStatus::Unauthorized, "{}", ack.reason);
    endpoint.close(0u32.into(), b"");
    s.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_drips_loses_its_slot_at_the_body_timeout() {
    let s = collector(limits(Duration::from_secs(1), 64 << 20)).await;
    let token = add_token(&s.db, "p1");
    let mut tls = https(&s).await;
    post_head(&mut tls, &token, 1000).await;
    let started = Instant::now();
    let drip = async {
        for _ in 0..50 {
            if tls.write_all(b"x").await.is_err() || tls.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    drip.await;
    let answer = response(&mut tls, Duration::from_secs(3)).await;
    let (status, body) = answer.expect("an answer at the timeout");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("did not arrive within 1 s"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(
        s.collector.metrics().refused().get("body_timeout"),
        Some(&1)
    );
    s.collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_flight_together_are_bounded_and_the_rest_told_to_come_back() {
    // Room for 2 MiB: two 1 MiB bodies being sent hold all of it.
    let s = collector(limits(Duration::from_secs(30), 2 << 20)).await;
    let token = add_token(&s.db, "p1");
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut tls = https(&s).await;
        post_head(&mut tls, &token, 1 << 20).await;
        tls.write_all(&[0u8; 1000]).await.unwrap();
        tls.flush().await.unwrap();
        holding.push(tls);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = Vec::new();
    for _ in 0..8 {
        let mut tls = https(&s).await;
        post_head(&mut tls, &token, 1 << 20).await;
        refused.push(tls);
    }
    for tls in &mut refused {
        let (status, body) = response(tls, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("collector busy: 2 MiB of uploads in flight"),
            "{body}"
        );
    }
    assert_eq!(s.collector.metrics().refused().get("busy"), Some(&8));
    // Once the two that held the room are gone, a real upload goes through.
    drop(holding);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let batch = vantage_wire::Batch {
        probe_id: "p1".into(),
        sequence: 1,
        campaign: "test".into(),
        labels: Default::default(),
        created_unix_ms: 1_700_000_000_000,
        dropped_batches: 0,
        traces: Vec::new(),
        series: Vec::new(),
    };
    let ack = uploader(&s, s.collector.quic_addr().port(), &token)
        .send(&batch.encode().unwrap(), std::time::Instant::now())
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Stored, "{}", ack.reason);
    s.collector.shutdown().await;
}

#[path = "../../probe/tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

/// A batch of three series with a few hundred samples each.
fn batch(seq: u64, rng: &mut impl rand::Rng) -> Vec<u8> {
    use vantage_wire::{Metric, Series, Target, Window};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = now / 60_000 * 60_000 - 3_600_000 + seq % 50 * 60_000;
    let series = [Metric::UdpRtt, Metric::QuicRequest, Metric::HttpsRequest]
        .into_iter()
        .map(|m| {
            let target = Target {
                name: "singapore".into(),
                address: "127.0.0.1:4433".into(),
            };
            let window = Window {
                start_unix_ms: start,
                end_unix_ms: start + 60_000,
            };
            let mut s = Series::new(target, m, window);
            for _ in 0..300 {
                s.histogram.record(rng.gen_range(20_000..400_000)).unwrap();
            }
            s.sent = s.histogram.len();
            s
        })
        .collect();
    vantage_wire::Batch {
        probe_id: "p1".into(),
        sequence: seq,
        campaign: "test".into(),
        labels: Default::default(),
        created_unix_ms: start + 61_000,
        dropped_batches: 0,
        traces: Vec::new(),
        series,
    }
    .encode()
    .unwrap()
}

async fn health_over_https(s: &Setup) -> (u16, String) {
    let mut tls = https(s).await;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    response(&mut tls, Duration::from_secs(5))
        .await
        .expect("/health answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_full_store_disk_refuses_with_storage_full_and_recovers_with_nothing_lost() {
    use rand::SeedableRng;
    let disk = Tmpfs::mount("1m");
    let dir = tempfile::tempdir().unwrap();
    let db = StoreLocation::Sqlite(disk.path().join("c.db"));
    let s = setup_limited(db, dir, UploadLimits::default()).await;
    let token = add_token(&s.db, "p1");
    let mut up = uploader(&s, s.collector.quic_addr().port(), &token);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let mut sent = Vec::new();
    let mut refused = Vec::new();
    for seq in 1..=2_000 {
        let bytes = batch(seq, &mut rng);
        let ack = up.send(&bytes, Instant::now()).await.unwrap();
        sent.push(bytes);
        match ack.status {
            // Near the end of the disk a later batch may still fit after a
            // refusal (that depends on how SQLite's files stand after the
            // failed commit); what must hold is that each refusal is
            // `storage_full` and every batch is stored exactly once when
            // space returns.
            AckStatus::Stored => {}
            AckStatus::Unavailable => {
                assert!(ack.reason.starts_with("storage_full:"), "{}", ack.reason);
                refused.push(seq);
                if refused.len() == 5 {
                    break;
                }
            }
            other => panic!("{other:?}: {}", ack.reason),
        }
    }
    assert_eq!(refused.len(), 5, "the 1 MiB disk filled");
    let (status, body) = health_over_https(&s).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("storage_full:"), "{body}");
    assert!(body.contains("disk is full"), "{body}");
    assert_eq!(
        s.collector.metrics().refused().get("storage_full"),
        Some(&5)
    );

    // Space returns: the refused batches go up again, no restart.
    disk.resize("64m");
    for seq in refused.clone() {
        let ack = up
            .send(&sent[seq as usize - 1], Instant::now())
            .await
            .unwrap();
        assert_eq!(ack.status, AckStatus::Stored, "{}", ack.reason);
    }
    assert_eq!(health_over_https(&s).await, (200, "ok\n".to_string()));
    for bytes in &sent {
        let ack = up.send(bytes, Instant::now()).await.unwrap();
        assert_eq!(ack.status, AckStatus::Duplicate, "{}", ack.reason);
    }
    let mut store = s.db.open().unwrap();
    assert_eq!(store.batch_count().unwrap(), sent.len() as u64);
    for (n, bytes) in sent.iter().enumerate() {
        let stored = store.batch_bytes("p1", n as u64 + 1).unwrap();
        assert_eq!(stored.as_deref(), Some(&bytes[..]), "batch {}", n + 1);
    }
    drop(store);
    s.collector.shutdown().await;
}

async fn get_over_https(s: &Setup, path: &str) -> (u16, String) {
    let mut tls = https(s).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    response(&mut tls, Duration::from_secs(5))
        .await
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_leak_no_token_hash_or_batch_content() {
    use rand::SeedableRng;
    let s = collector(UploadLimits::default()).await;
    let token = add_token(&s.db, "p1");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let bytes = batch(1, &mut rng);
    let ack = uploader(&s, s.collector.quic_addr().port(), &token)
        .send(&bytes, Instant::now())
        .await
        .unwrap();
    assert_eq!(ack.status, AckStatus::Stored, "{}", ack.reason);
    // A refused one too, so the refusal paths have been through as well.
    let wrong = uploader(&s, s.collector.quic_addr().port(), "vt_not_a_real_token")
        .send(&bytes, Instant::now())
        .await
        .unwrap();
    assert_eq!(wrong.status, AckStatus::Unauthorized);
    let hash = vantage_collector::hash_token(&token);
    for path in ["/metrics", "/health"] {
        let (status, body) = get_over_https(&s, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        for secret in [
            token.as_str(),
            &token[3..],
            hash.as_str(),
            &hash[..16],
            "vt_not_a_real_token",
            "127.0.0.1:4433",
        ] {
            assert!(!body.contains(secret), "{path} shows {secret:.12}…");
        }
    }
    // The dashboard's families name targets by the name the probe gives
    // them (aggregates, as a report shows them), never by address; /health
    // says nothing of any batch.
    let (_, health) = get_over_https(&s, "/health").await;
    assert!(!health.contains("singapore"), "{health}");
    let (_, metrics) = get_over_https(&s, "/metrics").await;
    assert!(
        metrics.contains("vantage_collector_batches_stored_total 1"),
        "{metrics}"
    );
    s.collector.shutdown().await;
}

/// One token past its upload rate is refused as unavailable with
/// `rate_limited`, counted, and nothing of it stored; another token (even
/// of the same probe) has its own bucket, and the refused batches go up
/// once the rate allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_past_its_upload_rate_is_told_to_come_back_and_loses_nothing() {
    use rand::SeedableRng;
    let s = collector(UploadLimits {
        per_token: Some(vantage_wire::rate::SourceRate {
            per_second: 0.001,
            burst: 3.0,
        }),
        ..UploadLimits::default()
    })
    .await;
    let (fast, other) = (add_token(&s.db, "p1"), add_token(&s.db, "p1"));
    let mut up = uploader(&s, s.collector.quic_addr().port(), &fast);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let batches: Vec<Vec<u8>> = (1..=6).map(|seq| batch(seq, &mut rng)).collect();
    let mut statuses = Vec::new();
    for bytes in &batches {
        let ack = up.send(bytes, Instant::now()).await.unwrap();
        if ack.status == AckStatus::Unavailable {
            assert!(ack.reason.starts_with("rate_limited:"), "{}", ack.reason);
        }
        statuses.push(ack.status);
    }
    use AckStatus::{Stored, Unavailable};
    assert_eq!(
        statuses,
        [
            Stored,
            Stored,
            Stored,
            Unavailable,
            Unavailable,
            Unavailable
        ]
    );
    assert_eq!(
        s.collector.metrics().refused().get("rate_limited"),
        Some(&3)
    );
    assert_eq!(s.db.open().unwrap().batch_count().unwrap(), 3);
    // The other token's bucket is full: the refused batches go up.
    let mut up = uploader(&s, s.collector.quic_addr().port(), &other);
    for bytes in &batches[3..] {
        let ack = up.send(bytes, Instant::now()).await.unwrap();
        assert_eq!(ack.status, Stored, "{}", ack.reason);
    }
    assert_eq!(s.db.open().unwrap().batch_count().unwrap(), 6);
    s.collector.shutdown().await;
}
