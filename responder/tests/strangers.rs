//! What a stranger on the internet can make a responder do: per-source
//! rate limits on STAMP and on new connections, and QUIC's
//! anti-amplification limit before an address is validated.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpStream, UdpSocket};
use vantage_responder::{Limits, Responder, ResponderConfig, SourceRate};
use vantage_wire::stamp::{ErrorEstimate, NtpTimestamp, SenderPacket};

fn packet(sequence: u32) -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    SenderPacket {
        sequence,
        timestamp: NtpTimestamp::from_unix(now),
        error_estimate: ErrorEstimate::UNSYNCHRONIZED,
    }
    .encode()
    .to_vec()
}

/// Replies that arrive within `wait` after the last one.
async fn drain(socket: &UdpSocket, wait: Duration) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        n += 1;
    }
    n
}

#[tokio::test]
async fn one_source_flooding_stamp_gets_its_burst_and_another_source_is_untouched() {
    let mut config = ResponderConfig::local().unwrap();
    config.limits = Limits {
        stamp_per_source: Some(SourceRate {
            per_second: 5.0,
            burst: 20.0,
        }),
        ..Limits::default()
    };
    let responder = Responder::start(config).await.unwrap();
    let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for seq in 0..500 {
        flood
            .send_to(&packet(seq), responder.stamp_addr())
            .await
            .unwrap();
        // Paced so that the kernel's receive buffer drops none of them.
        if seq % 25 == 24 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let answered = drain(&flood, Duration::from_millis(500)).await;
    assert!(
        (20..=25).contains(&answered),
        "the burst and what the rate refilled meanwhile: {answered}"
    );
    // Another address (127.0.0.2 is loopback too) is its own source.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for seq in 0..10 {
        other
            .send_to(&packet(seq), responder.stamp_addr())
            .await
            .unwrap();
    }
    assert_eq!(drain(&other, Duration::from_millis(500)).await, 10);
    let stats = responder.stats();
    assert_eq!(stats.stamp_reflected, answered as u64 + 10);
    assert_eq!(
        stats.stamp_rate_limited,
        500 - answered as u64,
        "every dropped datagram is counted"
    );
    responder.shutdown().await;
}

#[tokio::test]
async fn new_connections_over_a_sources_rate_are_closed_or_ignored_and_counted() {
    let mut config = ResponderConfig::local().unwrap();
    config.limits = Limits {
        connections_per_source: Some(SourceRate {
            per_second: 0.1,
            burst: 3.0,
        }),
        ..Limits::default()
    };
    let responder = Responder::start(config.clone()).await.unwrap();

    // TCP: three TLS handshakes complete; the rest are closed at once.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(config.identity.certs[0].clone()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let mut handshakes = 0;
    for _ in 0..8 {
        let tcp = TcpStream::connect(responder.https_addr()).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        let done = tokio::time::timeout(
            Duration::from_secs(2),
            connector.connect("localhost".try_into().unwrap(), tcp),
        )
        .await;
        if matches!(done, Ok(Ok(_))) {
            handshakes += 1;
        }
    }
    assert_eq!(handshakes, 3, "the burst");

    // QUIC: three connect; the others get no answer at all.
    let mut quic_tls = (*tls).clone();
    quic_tls.alpn_protocols = vec![vantage_wire::echo::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(quic_tls)).unwrap();
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_millis(800).try_into().unwrap()));
    client.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let mut connected = 0;
    for _ in 0..6 {
        let connecting = endpoint
            .connect(responder.quic_addr(), "localhost")
            .unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connecting).await {
            connected += 1;
        }
    }
    assert_eq!(connected, 3, "the burst");
    let stats = responder.stats();
    assert_eq!(stats.tcp_rate_limited, 5);
    // Each Initial the three clients sent again is refused again.
    assert!(stats.quic_rate_limited >= 3, "{stats:?}");
    assert_eq!(stats.quic_connections, 3);
    responder.shutdown().await;
}

/// Before a QUIC peer's address is validated, the responder sends at most
/// three times what it received from it (RFC 9000 §8.1): a spoofed Initial
/// cannot be turned into a flood at someone else. A relay passes the
/// client's datagrams on and swallows every answer, counting both ways, so
/// the handshake never completes and the address is never validated.
#[tokio::test]
async fn quic_sends_at_most_three_times_what_an_unvalidated_address_sent() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    upstream.connect(responder.quic_addr()).await.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(config.identity.certs[0].clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![vantage_wire::echo::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint.connect(relay_addr, "localhost").unwrap();
    let attempt = tokio::spawn(async move { connecting.await.is_ok() });

    let (mut sent_to_server, mut sent_by_server) = (0usize, 0usize);
    let (mut buf, mut back) = ([0u8; 65_536], [0u8; 65_536]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        tokio::select! {
            got = relay.recv_from(&mut buf) => {
                let (n, _) = got.unwrap();
                sent_to_server += n;
                upstream.send(&buf[..n]).await.unwrap();
            }
            got = upstream.recv(&mut back) => sent_by_server += got.unwrap(),
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    assert!(sent_to_server >= 1200, "the client's Initial went through");
    assert!(sent_by_server > 0, "the server answered");
    assert!(
        sent_by_server <= 3 * sent_to_server,
        "{sent_by_server} octets sent for {sent_to_server} received"
    );
    attempt.abort();
    responder.shutdown().await;
}

fn https_client(config: &ResponderConfig) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(common::client_tls(config, b"http/1.1"))
}

/// A request head larger than the responder reads (1 MiB of one header)
/// gets `431 Request Header Fields Too Large` at once, not a connection
/// held to the header timeout and closed empty; it is counted as a bad
/// request and the responder still answers the next client.
#[tokio::test]
async fn a_head_over_the_limit_gets_431_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let connector = https_client(&config);
    let tcp = TcpStream::connect(responder.https_addr()).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut read, mut write) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let mut head = b"GET /echo?bytes=1 HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
        head.resize(head.len() + (1 << 20), b'a');
        head.extend_from_slice(b"\r\n\r\n");
        // The responder stops reading part-way; the write may fail then.
        let _ = write.write_all(&head).await;
        write
    });
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 431"), "got {answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    writer.abort();
    assert!(responder.stats().http_bad_requests >= 1);

    // Another client is served as before.
    let health = https_head(&connector, responder.https_addr(), "/health").await;
    assert!(health.starts_with("http/1.1 200"), "{health}");
    responder.shutdown().await;
}

/// One HTTPS request on a connection of its own; the status line and
/// headers of the answer, its body dropped.
async fn https_head(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    target: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // /nq/large never ends: read the head and stop.
    let mut buf = [0u8; 16384];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).to_lowercase()
}

/// Heavy requests (large echoes, photos, /nq/large, /nq/upload) share one
/// bucket per source: past its burst they get 429 with Retry-After, each
/// counted in `heavy_rate_limited`; light echoes and /health are not
/// touched by it.
#[tokio::test]
async fn heavy_requests_over_a_sources_rate_get_429_and_are_counted() {
    let mut config = ResponderConfig::local().unwrap();
    config.limits = Limits {
        heavy_per_source: Some(SourceRate {
            per_second: 0.01,
            burst: 3.0,
        }),
        ..Limits::default()
    };
    let responder = Responder::start(config.clone()).await.unwrap();
    let connector = https_client(&config);
    let addr = responder.https_addr();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let head = https_head(&connector, addr, "/echo?bytes=100000").await;
        statuses.push(head.get(9..12).unwrap_or("").to_string());
        if head.starts_with("http/1.1 429") {
            assert!(head.contains("retry-after: 1"), "{head}");
        }
    }
    assert_eq!(statuses, ["200", "200", "200", "429", "429", "429"]);
    // Light requests from the same source are served.
    let light = https_head(&connector, addr, "/echo?bytes=1000").await;
    assert!(light.starts_with("http/1.1 200"), "{light}");
    let health = https_head(&connector, addr, "/health").await;
    assert!(health.starts_with("http/1.1 200"), "{health}");
    // The other heavy endpoints draw on the same empty bucket.
    for target in ["/nq/large", "/photo?size=1000&seed=1"] {
        let head = https_head(&connector, addr, target).await;
        assert!(head.starts_with("http/1.1 429"), "{target}: {head}");
    }
    let stats = responder.stats();
    assert_eq!(stats.heavy_rate_limited, 5);
    assert!(stats.refusals().contains(&("heavy_rate_limited", 5)));
    responder.shutdown().await;
}

/// Silent connections beyond the handshake cap cannot keep a client out:
/// each new one cuts the oldest unfinished handshake, counted.
#[tokio::test]
async fn silent_connections_cannot_hold_the_door_shut() {
    let mut config = ResponderConfig::local().unwrap();
    config.limits = Limits {
        max_handshakes: 8,
        max_connections: 16,
        ..Limits::default()
    };
    let responder = Responder::start(config.clone()).await.unwrap();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(responder.https_addr()).await.unwrap());
    }
    let connector = https_client(&config);
    let head = https_head(&connector, responder.https_addr(), "/health").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let cut = responder.stats().handshakes_cut;
    assert!(cut >= 42, "{cut} handshakes cut");
    drop(silent);
    responder.shutdown().await;
}
