//! What the responder's integration tests share: clients that trust a
//! responder's own certificate.
#![allow(dead_code)]

use std::sync::Arc;
use vantage_responder::ResponderConfig;

/// A TLS 1.3 client configuration trusting `config`'s certificate,
/// offering `alpn`.
pub fn client_tls(config: &ResponderConfig, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(config.identity.certs[0].clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(c)
}

/// A QUIC client endpoint on 127.0.0.1 speaking `vantage/1` to `config`'s responder.
pub fn quic_client(config: &ResponderConfig) -> quinn::Endpoint {
    let tls = client_tls(config, vantage_wire::echo::ALPN);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut e = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    e.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    e
}

/// One HTTP/1.1 request over TLS on a connection of its own: `head_lines`
/// go after the Host header. Returns the status line and headers, lower
/// case; the body is not read past the head.
pub async fn https_head_with(
    config: &ResponderConfig,
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    head_lines: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls(config, b"http/1.1"));
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{head_lines}Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf)).await {
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
