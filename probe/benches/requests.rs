//! `quic_request` and `https_request` on loopback next to the least code
//! that makes the same exchange: a minimal quinn request/response loop (one
//! connection, a bidirectional stream per request, the same 10-byte request
//! and 15 + 64-byte answer) and a minimal tokio-rustls loop (one TLS 1.3
//! connection, a hand-written HTTP/1.1 `GET` and a `Content-Length` answer
//! of 64 bytes, no hyper).
//!
//! Every figure runs on one current-thread runtime (the probe binary's own
//! set-up), client and server in one thread, so the placement is the same
//! for all; `benches/run` also pins the process to one CPU. Requests are
//! paced at `RATE` per second with equal spacing; the raw loops time each
//! exchange from its actual start, Vantage from the intended start less its
//! timer slack, as it does in the field. Medians of `ROUNDS` interleaved
//! rounds.
//!
//! `cargo bench -p vantage-probe --bench requests` prints a Markdown table.
//! Targets (issue "Benches"): quic_request p50 within 1.1× of raw quinn,
//! https_request within 1.2× of raw tokio-rustls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use vantage_probe::{ProbeArgs, TlsClient, Trust};
use vantage_responder::{Fingerprint, Identity, Responder, ResponderConfig};
use vantage_wire::echo::{EchoRequest, EchoResponse, EchoStatus, ALPN, RESPONSE_HEADER_LEN};
use vantage_wire::{new_latency_histogram, record_clamped, LatencyHistogram, Metric};

const RATE: u32 = 50;
const SECS: u64 = 6;
const ROUNDS: usize = 3;
const BODY: u32 = 64;

/// Vantage's own `metric`, measured by the probe against a responder in the
/// same runtime: the p50 in µs and the sample count.
async fn vantage(metric: Metric) -> (u64, u64) {
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
        metrics: vec![metric.name().into()],
        rates: vec![format!("{}={RATE}", metric.name())],
        fixed_spacing: true,
        response_bytes: Some(BODY),
        duration: Some(Duration::from_secs(SECS)),
        ..ProbeArgs::default()
    };
    let (_tx, stop) = watch::channel(false);
    let summary = vantage_probe::run(args.into_config().expect("config"), stop)
        .await
        .expect("probe run");
    responder.shutdown().await;
    let s = summary
        .totals
        .iter()
        .find(|s| s.metric == metric)
        .expect("series");
    assert_eq!(s.sent, s.histogram.len(), "every request answered: {s:?}");
    (s.histogram.value_at_quantile(0.5), s.histogram.len())
}

/// Runs `exchange` `RATE` times a second for `SECS`, timing each from its
/// start.
async fn paced<F, Fut>(mut exchange: F) -> (u64, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut h: LatencyHistogram = new_latency_histogram();
    let spacing = Duration::from_secs(1) / RATE;
    let first = tokio::time::Instant::now() + spacing;
    for i in 0..RATE as u64 * SECS {
        tokio::time::sleep_until(first + spacing * i as u32).await;
        let started = Instant::now();
        exchange().await;
        record_clamped(&mut h, started.elapsed().as_micros() as u64);
    }
    (h.value_at_quantile(0.5), h.len())
}

/// The minimal quinn loop: the echo protocol's bytes, nothing else.
async fn raw_quinn() -> (u64, u64) {
    let identity = Identity::generate(&["localhost".into()]).expect("identity");
    let server_config = identity
        .quic_server_config(ALPN, 256, Duration::from_secs(30))
        .expect("server config");
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap())
        .expect("server endpoint");
    let addr = server.local_addr().expect("address");
    let answer = {
        let mut a = EchoResponse {
            status: EchoStatus::Ok,
            server_time_ns: 0,
            body_len: BODY,
        }
        .encode()
        .to_vec();
        a.resize(RESPONSE_HEADER_LEN + BODY as usize, 0);
        a
    };
    let accept = tokio::spawn(async move {
        let Some(incoming) = server.accept().await else {
            return;
        };
        let Ok(conn) = incoming.await else { return };
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if recv.read_to_end(1024).await.is_ok() {
                    let _ = send.write_all(&answer).await;
                    let _ = send.finish();
                }
            });
        }
    });
    let client =
        TlsClient::new(&Trust::Pinned(vec![identity.fingerprint()]), &[ALPN]).expect("client TLS");
    let endpoint = client
        .quic_endpoint(addr, Duration::from_secs(30), Duration::from_secs(10))
        .expect("client endpoint");
    let conn = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let request = EchoRequest {
        response_len: BODY,
        padding_len: 0,
    }
    .encode();
    let result = paced(|| {
        let conn = conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await.expect("stream");
            send.write_all(&request).await.expect("write");
            send.finish().expect("finish");
            let got = recv.read_to_end(1024).await.expect("answer");
            assert_eq!(got.len(), RESPONSE_HEADER_LEN + BODY as usize);
        }
    })
    .await;
    conn.close(0u32.into(), b"");
    accept.abort();
    result
}

/// Reads until the end of an HTTP header block; returns the header bytes.
async fn read_head<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<usize> {
    buf.clear();
    let mut byte = [0u8; 256];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
}

/// The minimal tokio-rustls loop: HTTP/1.1 by hand on one TLS connection.
async fn raw_tls() -> (u64, u64) {
    let identity = Identity::generate(&["localhost".into()]).expect("identity");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        identity
            .server_config(&[b"http/1.1"])
            .expect("server config"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let accept = tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(mut tls) = acceptor.accept(tcp).await else {
            return;
        };
        let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n").into_bytes();
        answer.resize(answer.len() + BODY as usize, b'x');
        let mut buf = Vec::new();
        while read_head(&mut tls, &mut buf).await.is_some() {
            if tls.write_all(&answer).await.is_err() || tls.flush().await.is_err() {
                return;
            }
        }
    });
    let result = tls_client(addr, identity.fingerprint()).await;
    accept.abort();
    result
}

/// The same hand-written client against the responder's HTTPS server, to
/// tell the client's share of `https_request` from the server's.
async fn raw_tls_to_responder() -> (u64, u64) {
    let responder = Responder::start(ResponderConfig::local().expect("identity"))
        .await
        .expect("responder");
    let result = tls_client(responder.https_addr(), responder.fingerprint()).await;
    responder.shutdown().await;
    result
}

/// A paced HTTP/1.1 `GET /echo` loop, written by hand, on one TLS connection.
async fn tls_client(addr: SocketAddr, pin: Fingerprint) -> (u64, u64) {
    let client = TlsClient::new(&Trust::Pinned(vec![pin]), &[b"http/1.1"]).expect("client TLS");
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS");
    let tls = Arc::new(tokio::sync::Mutex::new(tls));
    let request = format!("GET /echo?bytes={BODY} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    paced(|| {
        let (tls, request) = (tls.clone(), request.clone());
        async move {
            let mut tls = tls.lock().await;
            tls.write_all(request.as_bytes()).await.expect("write");
            tls.flush().await.expect("flush");
            let mut buf = Vec::new();
            let head = read_head(&mut *tls, &mut buf).await.expect("answer");
            let mut left = BODY as usize - (buf.len() - head);
            let mut body = [0u8; 256];
            while left > 0 {
                let n = tls.read(&mut body[..left.min(256)]).await.expect("body");
                assert!(n > 0, "connection closed mid-body");
                left -= n;
            }
        }
    })
    .await
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut vq, mut rq, mut vh, mut rh, mut rr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut samples = [0u64; 5];
    // Interleaved rounds, so drift on a shared machine hits every figure alike.
    for _ in 0..ROUNDS {
        for (i, (out, r)) in [
            (&mut vq, rt.block_on(vantage(Metric::QuicRequest))),
            (&mut rq, rt.block_on(raw_quinn())),
            (&mut vh, rt.block_on(vantage(Metric::HttpsRequest))),
            (&mut rh, rt.block_on(raw_tls())),
            (&mut rr, rt.block_on(raw_tls_to_responder())),
        ]
        .into_iter()
        .enumerate()
        {
            out.push(r.0);
            samples[i] += r.1;
        }
    }
    let (vq, rq, vh, rh, rr) = (median(vq), median(rq), median(vh), median(rh), median(rr));
    println!(
        "{RATE} requests/s for {SECS} s, {BODY}-byte answers, one current-thread runtime (client and server in one thread), equal spacing; median of {ROUNDS} interleaved rounds' p50 (µs); samples per figure: {samples:?}\n"
    );
    println!("| request | Vantage p50 (µs) | minimal loop p50 (µs) | ratio | target | met |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, v, r, target) in [
        ("quic_request vs quinn", vq, rq, 1.1),
        ("https_request vs tokio-rustls", vh, rh, 1.2),
    ] {
        let ratio = v as f64 / r as f64;
        println!(
            "| {name} | {v} | {r} | {ratio:.2} | ≤ {target:.1} | {} |",
            if ratio <= target { "yes" } else { "no" }
        );
    }
    println!(
        "\nWhere https_request's time goes: the minimal client against the responder's HTTPS server (hyper) takes {rr} µs at p50, {:.2}× the minimal loop.",
        rr as f64 / rh as f64
    );
}
