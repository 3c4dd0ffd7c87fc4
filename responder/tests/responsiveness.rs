//! The responsiveness endpoints (draft-ietf-ippm-responsiveness) as
//! standard clients reach them: over HTTP/1.0 with no Host, over HTTP/2
//! (what those clients use) and over HTTP/3, on 127.0.0.1.

mod common;

use bytes::{Buf, Bytes};
use common::client_tls;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vantage_responder::{Responder, ResponderConfig};

/// The three URLs of a `/.well-known/nq` document.
fn nq_urls(body: &[u8]) -> Vec<String> {
    let nq: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(nq["version"], 1);
    ["large_download_url", "small_download_url", "upload_url"]
        .iter()
        .map(|k| nq["urls"][k].as_str().unwrap().to_string())
        .collect()
}

/// An HTTP/1.0 request carries no Host: the URLs point at the address and
/// port the request reached, not at 443.
#[tokio::test]
async fn without_a_host_the_urls_name_the_address_the_request_reached() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let tcp = TcpStream::connect(responder.https_addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls(&config, b"http/1.1"));
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /.well-known/nq HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..split]);
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let origin = format!("https://{}/nq/", responder.https_addr());
    for url in nq_urls(&raw[split..]) {
        assert!(url.starts_with(&origin), "{url} should start with {origin}");
    }
    responder.shutdown().await;
}

/// Over HTTP/2: the document names the request's authority, the small
/// object is one byte, the large one streams until the client stops, and
/// an upload is read whole and its length answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_http2() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let addr = responder.https_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls(&config, b"h2"));
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let authority = format!("localhost:{}", addr.port());
    let request = |method: &str, path: &str, body: Bytes| {
        hyper::Request::builder()
            .method(method)
            .uri(format!("https://{authority}{path}"))
            .body(Full::new(body))
            .unwrap()
    };

    let r = send
        .send_request(request("GET", "/.well-known/nq", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), hyper::Version::HTTP_2);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    for url in nq_urls(&body) {
        assert!(
            url.starts_with(&format!("https://{authority}/nq/")),
            "{url}"
        );
    }

    let r = send
        .send_request(request("GET", "/nq/small", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes().len(), 1);

    let r = send
        .send_request(request("GET", "/nq/large", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let mut got = 0usize;
    while got < 4 << 20 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the large object keeps coming")
            .unwrap()
            .unwrap();
        got += frame.data_ref().map_or(0, |d| d.len());
    }
    drop(body);

    let r = send
        .send_request(request(
            "PUT",
            "/nq/upload",
            Bytes::from(vec![7u8; 300_000]),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"300000\n");
    responder.shutdown().await;
}

/// Over HTTP/3 on the QUIC port: the same four endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_http3() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let addr = responder.quic_addr();
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(&config, b"h3")).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move { driver.wait_idle().await });
    let authority = format!("localhost:{}", addr.port());

    // GET a small answer whole: (status, body).
    let mut get = async |path: &str| {
        let req = hyper::Request::get(format!("https://{authority}{path}"))
            .body(())
            .unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        let head = stream.recv_response().await.unwrap();
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            body.extend_from_slice(chunk.chunk());
            chunk.advance(chunk.remaining());
        }
        (head.status(), body)
    };
    let (status, body) = get("/.well-known/nq").await;
    assert_eq!(status, 200);
    for url in nq_urls(&body) {
        assert!(
            url.starts_with(&format!("https://{authority}/nq/")),
            "{url}"
        );
    }
    let (status, body) = get("/nq/small").await;
    assert_eq!((status.as_u16(), body.len()), (200, 1));

    let req = hyper::Request::get(format!("https://{authority}/nq/large"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    assert_eq!(stream.recv_response().await.unwrap().status(), 200);
    let mut got = 0usize;
    while got < 4 << 20 {
        let mut chunk = tokio::time::timeout(Duration::from_secs(5), stream.recv_data())
            .await
            .expect("the large object keeps coming")
            .unwrap()
            .expect("not ended");
        got += chunk.remaining();
        chunk.advance(chunk.remaining());
    }
    stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
    drop(stream);

    let req = hyper::Request::put(format!("https://{authority}/nq/upload"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    for _ in 0..5 {
        stream
            .send_data(Bytes::from(vec![7u8; 60_000]))
            .await
            .unwrap();
    }
    stream.finish().await.unwrap();
    assert_eq!(stream.recv_response().await.unwrap().status(), 200);
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(chunk.chunk());
        chunk.advance(chunk.remaining());
    }
    assert_eq!(&body[..], b"300000\n");
    responder.shutdown().await;
}
