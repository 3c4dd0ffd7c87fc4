//! The responder on 127.0.0.1 against real clients, well-behaved and not.

mod common;

use common::{client_tls, quic_client};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use vantage_responder::{Limits, Responder, ResponderConfig};
use vantage_wire::echo::{self, EchoRequest, EchoResponse, EchoStatus};
use vantage_wire::stamp::{ErrorEstimate, NtpTimestamp, ReflectorPacket, SenderPacket};

async fn https_get(
    config: &ResponderConfig,
    responder: &Responder,
    path: &str,
) -> std::io::Result<(String, Vec<u8>)> {
    let tcp = TcpStream::connect(responder.https_addr()).await?;
    let connector = tokio_rustls::TlsConnector::from(client_tls(config, b"http/1.1"));
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers")
        + 4;
    Ok((
        String::from_utf8_lossy(&raw[..split]).to_string(),
        raw[split..].to_vec(),
    ))
}

async fn quic_echo(conn: &quinn::Connection, request: &[u8]) -> (EchoResponse, usize) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(request).await.unwrap();
    send.finish().unwrap();
    let all = recv.read_to_end(10 << 20).await.unwrap();
    (
        EchoResponse::decode(&all).unwrap(),
        all.len() - echo::RESPONSE_HEADER_LEN,
    )
}

/// UDP never amplifies: every datagram of 0 to 1,500 octets gets a reply
/// no longer than itself, or none (too short, or too long for STAMP).
#[tokio::test]
async fn stamp_never_answers_with_more_octets_than_it_got() {
    let responder = Responder::start(ResponderConfig::local().unwrap())
        .await
        .unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 4096];
    let (mut answered, mut silent) = (0, 0);
    for len in (0..=1500).step_by(7) {
        let packet: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        socket
            .send_to(&packet, responder.stamp_addr())
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                assert!(n <= len, "{n} octets answered to {len}");
                answered += 1;
            }
            _ => {
                assert!(
                    !(vantage_wire::stamp::PACKET_LEN..=vantage_wire::stamp::MAX_PACKET_LEN)
                        .contains(&len),
                    "a {len}-octet test packet got no reflection"
                );
                silent += 1;
            }
        }
    }
    assert!(
        answered > 150 && silent > 5,
        "{answered} answered, {silent} not"
    );
    responder.shutdown().await;
}

#[tokio::test]
async fn stamp_reflector_conversation() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config).await.unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    a.set_ttl(37).unwrap();
    b.set_ttl(99).unwrap();
    let mut buf = [0u8; 2048];
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    for (i, socket) in [&a, &a, &b, &a].into_iter().enumerate() {
        let t1 = now();
        let mut packet = SenderPacket {
            sequence: 100 + i as u32,
            timestamp: NtpTimestamp::from_unix(t1),
            error_estimate: ErrorEstimate::UNSYNCHRONIZED,
        }
        .encode()
        .to_vec();
        if i == 3 {
            packet.extend_from_slice(&[0x5a; 56]); // padded to 100 octets
        }
        socket
            .send_to(&packet, responder.stamp_addr())
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, packet.len(), "reflected at the test packet's length");
        let reply = ReflectorPacket::decode(&buf[..n]).unwrap();
        assert_eq!(reply.sender_sequence, 100 + i as u32);
        assert_eq!(reply.sender_timestamp, NtpTimestamp::from_unix(t1));
        // Stateful: a's packets are its session's 0, 1, 2; b's first is 0.
        let expected_seq = [0, 1, 0, 2][i];
        assert_eq!(reply.sequence, expected_seq, "packet {i}");
        // Ses-Sender TTL: the TTL the test packet arrived with.
        assert_eq!(reply.sender_ttl, [37, 37, 99, 37][i], "packet {i}");
        let (t2, t3) = (reply.receive_timestamp.to_unix(), reply.timestamp.to_unix());
        assert!(t2 <= t3, "T2 {t2:?} after T3 {t3:?}");
        assert!(t2 >= t1 - Duration::from_millis(5) && t3 <= now() + Duration::from_millis(5));
        // MBZ octets stay zero.
        assert_eq!(&buf[14..16], &[0, 0]);
        assert_eq!(&buf[38..40], &[0, 0]);
        assert_eq!(&buf[41..44], &[0, 0, 0]);
        if i == 3 {
            assert!(buf[44..n].iter().all(|b| *b == 0x5a));
        }
    }
    // A datagram too short for STAMP: no reply, counted, reflector keeps going.
    a.send_to(&[1, 2, 3], responder.stamp_addr()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.recv(&mut buf))
            .await
            .is_err()
    );
    let stats = responder.stats();
    assert_eq!(stats.stamp_malformed, 1);
    assert_eq!(stats.stamp_reflected, 4);
    // The reflector's thread ends with the responder and frees its port,
    // whether it is shut down or only dropped.
    let addr = responder.stamp_addr();
    responder.shutdown().await;
    std::net::UdpSocket::bind(addr).expect("STAMP port free after shutdown");
    let dropped = Responder::start(ResponderConfig::local().unwrap())
        .await
        .unwrap();
    let addr = dropped.stamp_addr();
    drop(dropped);
    let freed = async {
        while std::net::UdpSocket::bind(addr).is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), freed)
        .await
        .expect("STAMP port free within 2 s of the responder's drop");
}

#[tokio::test]
async fn quic_and_https_echo_answer_with_the_bytes_asked_and_server_time() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let endpoint = quic_client(&config);
    let conn = endpoint
        .connect(responder.quic_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let mut req = EchoRequest {
        response_len: 3000,
        padding_len: 500,
    }
    .encode()
    .to_vec();
    req.extend_from_slice(&[0; 500]);
    let (resp, body) = quic_echo(&conn, &req).await;
    assert_eq!(
        (resp.status, resp.body_len, body),
        (EchoStatus::Ok, 3000, 3000)
    );
    assert!(resp.server_time_ns < 1_000_000_000);

    let (head, body) = https_get(&config, &responder, "/echo?bytes=1234")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("server-timing: app;dur="),
        "{head}"
    );
    assert_eq!(body.len(), 1234);
    let (head, body) = https_get(&config, &responder, "/health").await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && body == b"ok\n",
        "{head}"
    );
    responder.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_refused_counted_and_harmless() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let endpoint = quic_client(&config);
    let conn = endpoint
        .connect(responder.quic_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    // Not an echo request.
    let (resp, _) = quic_echo(&conn, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(resp.status, EchoStatus::BadRequest);
    // More than the response limit.
    let (resp, body) = quic_echo(
        &conn,
        &EchoRequest {
            response_len: u32::MAX,
            padding_len: 0,
        }
        .encode(),
    )
    .await;
    assert_eq!((resp.status, body), (EchoStatus::TooLarge, 0));
    // Padding beyond what the header declared.
    let mut req = EchoRequest {
        response_len: 1,
        padding_len: 2,
    }
    .encode()
    .to_vec();
    req.extend_from_slice(&[0; 50]);
    let (resp, _) = quic_echo(&conn, &req).await;
    assert_eq!(resp.status, EchoStatus::BadRequest);
    // The same connection still works.
    let (resp, body) = quic_echo(
        &conn,
        &EchoRequest {
            response_len: 10,
            padding_len: 0,
        }
        .encode(),
    )
    .await;
    assert_eq!((resp.status, body), (EchoStatus::Ok, 10));

    let (head, _) = https_get(&config, &responder, "/echo?bytes=99999999")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let (head, _) = https_get(&config, &responder, "/echo?bytes=lots")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = https_get(&config, &responder, "/nope").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Garbage datagrams on the QUIC port are dropped by quinn.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for len in [1usize, 50, 1200] {
        udp.send_to(&vec![0xff; len], responder.quic_addr())
            .await
            .unwrap();
    }
    let stats = responder.stats();
    assert_eq!(stats.quic_bad_requests, 3);
    assert_eq!(stats.http_bad_requests, 3);
    // Still serving.
    let (resp, _) = quic_echo(
        &conn,
        &EchoRequest {
            response_len: 1,
            padding_len: 0,
        }
        .encode(),
    )
    .await;
    assert_eq!(resp.status, EchoStatus::Ok);
    responder.shutdown().await;
}

#[tokio::test]
async fn garbage_half_open_and_floods_are_bounded() {
    let mut config = ResponderConfig::local().unwrap();
    config.limits = Limits {
        max_connections: 4,
        max_handshakes: 4,
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let responder = Responder::start(config.clone()).await.unwrap();

    // Plain HTTP on the TLS port.
    let mut tcp = TcpStream::connect(responder.https_addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut sink)).await;
    drop(tcp);

    // Half-open: connect and say nothing; the handshake timeout ends them.
    let silent: Vec<TcpStream> =
        futures_join(4, || TcpStream::connect(responder.https_addr())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A flood while the four handshakes are held: each new one cuts the
    // oldest unfinished, never more than four held at once.
    let mut flood = Vec::new();
    for _ in 0..20 {
        flood.push(TcpStream::connect(responder.https_addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = responder.stats();
    assert!(during.handshakes_cut >= 16, "{during:?}");
    drop(flood);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = responder.stats();
    // The garbage failed TLS; the last 4 of the flood, held until
    // dropped, closed before sending a byte: connect-only, not failures.
    assert!(after.tls_failed >= 1, "the garbage: {after:?}");
    assert!(
        after.tls_failed + after.tcp_connect_only >= 5,
        "garbage + the last 4 held: {after:?}"
    );
    drop(silent);

    // QUIC flood beyond the connection limit.
    let endpoint = quic_client(&config);
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        match endpoint
            .connect(responder.quic_addr(), "localhost")
            .unwrap()
            .await
        {
            Ok(c) => conns.push(c),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(conns.len(), 4);
    assert_eq!(refused, 4);
    assert_eq!(responder.stats().quic_refused, 4);
    drop(conns);

    // After all that, a normal client is served.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (head, _) = https_get(&config, &responder, "/health").await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    responder.shutdown().await;
}

async fn futures_join<F, Fut>(n: usize, f: F) -> Vec<TcpStream>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(f().await.unwrap());
    }
    out
}

/// A responder with `limits` and a QUIC connection to it (the endpoint
/// must outlive the connection).
async fn photo_responder(limits: Limits) -> (Responder, quinn::Endpoint, quinn::Connection) {
    let config = ResponderConfig {
        limits,
        ..ResponderConfig::local().unwrap()
    };
    let responder = Responder::start(config.clone()).await.unwrap();
    let endpoint = quic_client(&config);
    let conn = endpoint
        .connect(responder.quic_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    (responder, endpoint, conn)
}

/// Sends `header` then `body` on a fresh stream and reads the sink's reply.
async fn quic_photo(
    conn: &quinn::Connection,
    header: &[u8],
    body: &[u8],
) -> vantage_wire::photo::PhotoReply {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(header).await.unwrap();
    // The sink may stop reading early (refusals): that is its answer.
    let _ = send.write_all(body).await;
    let _ = send.finish();
    let mut head = [0u8; vantage_wire::photo::REPLY_LEN];
    recv.read_exact(&mut head).await.unwrap();
    vantage_wire::photo::PhotoReply::decode(&head).unwrap()
}

#[tokio::test]
async fn photo_sink_receipts_only_whole_photos_with_their_checksum() {
    use vantage_wire::photo::{PhotoBytes, PhotoRequest, PhotoStatus};
    let (responder, _endpoint, conn) = photo_responder(Limits {
        max_photo_bytes: 1_000_000,
        ..Limits::default()
    })
    .await;
    let mut photo = vec![0u8; 100_000];
    PhotoBytes::new(3).fill(0, &mut photo);
    let crc32 = crc32fast::hash(&photo);
    let header = |size: u64, crc32: u32| PhotoRequest::Upload { size, crc32 }.encode();

    let ok = quic_photo(&conn, &header(100_000, crc32), &photo).await;
    assert_eq!(ok.status, PhotoStatus::Ok);
    assert_eq!((ok.bytes, ok.crc32), (100_000, crc32));

    let short = quic_photo(&conn, &header(100_000, crc32), &photo[..60_000]).await;
    assert_eq!(short.status, PhotoStatus::Truncated);
    assert_eq!(short.bytes, 60_000);

    let long = quic_photo(&conn, &header(50_000, crc32), &photo).await;
    assert_eq!(
        long.status,
        PhotoStatus::Truncated,
        "more bytes than declared"
    );

    let mut flipped = photo.clone();
    flipped[77_777] ^= 0x80;
    let bad = quic_photo(&conn, &header(100_000, crc32), &flipped).await;
    assert_eq!(bad.status, PhotoStatus::Integrity);

    let big = quic_photo(&conn, &header(2_000_000, 0), &[]).await;
    assert_eq!(big.status, PhotoStatus::TooLarge);

    // The source: a download is the seed's bytes, exactly.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(
        &PhotoRequest::Download {
            size: 100_000,
            seed: 3,
        }
        .encode(),
    )
    .await
    .unwrap();
    send.finish().unwrap();
    let all = recv.read_to_end(200_000).await.unwrap();
    let reply = vantage_wire::photo::PhotoReply::decode(&all).unwrap();
    assert_eq!((reply.status, reply.bytes), (PhotoStatus::Ok, 100_000));
    assert_eq!(&all[vantage_wire::photo::REPLY_LEN..], &photo[..]);

    let stats = responder.stats();
    assert_eq!(stats.photos_received, 1);
    assert_eq!(stats.photos_damaged, 3);
    assert_eq!(stats.photos_sent, 1);
    conn.close(0u32.into(), b"");
    responder.shutdown().await;
}

#[tokio::test]
async fn photo_sink_is_bounded_in_concurrent_photos() {
    use vantage_wire::photo::{PhotoRequest, PhotoStatus};
    let (responder, _endpoint, conn) = photo_responder(Limits {
        max_concurrent_photos: 2,
        ..Limits::default()
    })
    .await;
    // Two uploads that never finish hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(
            &PhotoRequest::Upload {
                size: 1 << 20,
                crc32: 0,
            }
            .encode(),
        )
        .await
        .unwrap();
        send.write_all(&[0u8; 1000]).await.unwrap();
        held.push((send, recv));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = quic_photo(
        &conn,
        &PhotoRequest::Upload { size: 10, crc32: 0 }.encode(),
        &[0; 10],
    )
    .await;
    assert_eq!(third.status, PhotoStatus::Busy);
    assert_eq!(responder.stats().photos_busy, 1);
    drop(held);
    conn.close(0u32.into(), b"");
    responder.shutdown().await;
}

#[tokio::test]
async fn https_photo_endpoints_and_responsiveness_config() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let (head, body) = https_get(&config, &responder, "/.well-known/nq")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let nq: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(nq["version"], 1);
    for key in ["large_download_url", "small_download_url", "upload_url"] {
        let url = nq["urls"][key].as_str().unwrap();
        assert!(url.starts_with("https://localhost/nq/"), "{key}: {url}");
    }
    let (head, body) = https_get(&config, &responder, "/nq/small").await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && body.len() == 1,
        "{head}"
    );

    let (head, body) = https_get(&config, &responder, "/photo?size=5000&seed=9")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut expected = vec![0u8; 5000];
    vantage_wire::photo::PhotoBytes::new(9).fill(0, &mut expected);
    assert_eq!(body, expected);

    let (head, _) = https_get(&config, &responder, "/photo?size=x")
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // A PUT with a wrong checksum gets 422 and no receipt headers claiming success.
    let tcp = TcpStream::connect(responder.https_addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls(&config, b"http/1.1"));
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"PUT /photo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nx-photo-crc32: 00000000\r\nConnection: close\r\n\r\nabcd")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 422"), "{text}");
    assert!(
        text.contains(&format!("{:08x}", crc32fast::hash(b"abcd"))),
        "{text}"
    );
    responder.shutdown().await;
}

#[tokio::test]
async fn a_connect_time_probe_and_a_client_that_leaves_are_not_failures() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    // Connect and close at once, as `tcp_connect` measures.
    for _ in 0..3 {
        drop(TcpStream::connect(responder.https_addr()).await.unwrap());
    }
    // A photo upload that promises 1 MiB and leaves after 1 KiB.
    let tcp = TcpStream::connect(responder.https_addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls(&config, b"http/1.1"));
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"PUT /photo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\nX-Photo-Crc32: 1234abcd\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&[7u8; 1024]).await.unwrap();
    tls.flush().await.unwrap();
    drop(tls);
    // And a plain request that is broken: a failure.
    let _ = https_get(&config, &responder, "/no-such-path").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = responder.stats();
        if (s.tcp_connect_only >= 3 && s.http_aborted >= 1) || std::time::Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.tcp_connect_only, 3, "{stats:?}");
    assert_eq!(stats.tls_failed, 0, "{stats:?}");
    assert_eq!(stats.http_aborted, 1, "{stats:?}");
    assert_eq!(stats.http_bad_requests, 1, "the unknown path: {stats:?}");
    responder.shutdown().await;
}
