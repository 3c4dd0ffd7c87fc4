//! HTTP/3 on the QUIC port (ALPN `h3`), so a probe can time the responder
//! as a web server over every HTTP version: `GET /echo?bytes=N` (N zero
//! bytes, with `Server-Timing`) and `GET /health`, the same answers as the
//! HTTPS service's, and the responsiveness endpoints (`/.well-known/nq`,
//! `/nq/small`, `/nq/large`, `/nq/upload`).

use crate::stats::Stats;
use crate::{Shared, ZEROS};
use bytes::Bytes;
use hyper::http::{self, Request, Response, StatusCode};
use std::time::Instant;

/// The ALPN protocol of HTTP/3 (RFC 9114).
pub(crate) const ALPN: &[u8] = b"h3";

/// Serves HTTP/3 requests on `conn` until the client closes it.
pub(crate) async fn serve_connection(
    conn: quinn::Connection,
    local: Option<std::net::SocketAddr>,
    shared: Shared,
) {
    let remote = conn.remote_address();
    let mut h3 =
        match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "HTTP/3 connection set-up failed");
                return;
            }
        };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (request, mut stream) = match resolver.resolve_request().await {
                        Ok(r) => r,
                        Err(e) => {
                            Stats::bump(&shared.stats.http_bad_requests);
                            tracing::debug!(%remote, error = %e, "HTTP/3 request unreadable");
                            return;
                        }
                    };
                    let received = Instant::now();
                    let path = request.uri().path();
                    if path == "/nq/large" || path == "/nq/upload" {
                        serve_nq_transfer(&request, &mut stream, remote.ip(), &shared).await;
                        return;
                    }
                    let (status, body) = answer(&request, remote.ip(), local, &shared).await;
                    let mut response = Response::builder()
                        .status(status)
                        .header("content-length", body.len());
                    if status == StatusCode::OK {
                        let ms = received.elapsed().as_secs_f64() * 1e3;
                        response = response.header("server-timing", format!("app;dur={ms:.3}"));
                    }
                    if path == "/.well-known/nq" {
                        response = response.header("content-type", "application/json");
                    }
                    let Ok(response) = response.body(()) else {
                        return;
                    };
                    let sent = async {
                        stream.send_response(response).await?;
                        if !body.is_empty() {
                            stream.send_data(body).await?;
                        }
                        stream.finish().await
                    };
                    if let Err(e) = sent.await {
                        tracing::debug!(%remote, error = %e, "HTTP/3 response not sent");
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
}

async fn answer(
    request: &Request<()>,
    remote: std::net::IpAddr,
    local: Option<std::net::SocketAddr>,
    shared: &Shared,
) -> (StatusCode, Bytes) {
    if request.method() != http::Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET only\n"),
        );
    }
    match request.uri().path() {
        "/.well-known/nq" => {
            Stats::bump(&shared.stats.http_requests);
            let named = request.uri().authority().map(|a| a.as_str());
            let origin = crate::nq::origin(named, local);
            (StatusCode::OK, Bytes::from(crate::nq::config_json(&origin)))
        }
        "/nq/small" => {
            Stats::bump(&shared.stats.http_requests);
            (StatusCode::OK, Bytes::from_static(&ZEROS[..1]))
        }
        "/health" => {
            Stats::bump(&shared.stats.http_requests);
            (StatusCode::OK, Bytes::from_static(b"ok\n"))
        }
        "/echo" => {
            let n = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("bytes="))
                .map(|v| v.parse::<u64>());
            let n = match n {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    Stats::bump(&shared.stats.http_bad_requests);
                    return (
                        StatusCode::BAD_REQUEST,
                        Bytes::from_static(b"bytes= takes a number\n"),
                    );
                }
            };
            if n > crate::HEAVY_ECHO_BYTES {
                let token = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| vantage_wire::access::bearer_token(v.as_bytes()));
                match shared.admit_heavy(remote, token) {
                    Ok(()) => {}
                    Err(crate::HeavyRefusal::OverRate) => {
                        return (
                            StatusCode::TOO_MANY_REQUESTS,
                            Bytes::from_static(crate::HEAVY_REFUSED.as_bytes()),
                        )
                    }
                    Err(crate::HeavyRefusal::Access(why)) => {
                        let status = match why {
                            crate::AccessRefusal::Missing => StatusCode::UNAUTHORIZED,
                            _ => StatusCode::FORBIDDEN,
                        };
                        return (status, Bytes::from(format!("{why}\n")));
                    }
                }
            }
            if n > u64::from(shared.limits.max_response_bytes) || n as usize > ZEROS.len() {
                Stats::bump(&shared.stats.http_bad_requests);
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Bytes::from_static(b"bytes= above the responder's limit\n"),
                );
            }
            shared.stall.wait().await;
            Stats::bump(&shared.stats.http_requests);
            (StatusCode::OK, Bytes::from_static(&ZEROS[..n as usize]))
        }
        _ => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"try GET /echo?bytes=N, GET /health or GET /.well-known/nq\n"),
        ),
    }
}

/// The status and body of a refused heavy request, as HTTP/3 answers it.
fn heavy_refusal(refusal: crate::HeavyRefusal) -> (StatusCode, Bytes) {
    match refusal {
        crate::HeavyRefusal::OverRate => (
            StatusCode::TOO_MANY_REQUESTS,
            Bytes::from_static(crate::HEAVY_REFUSED.as_bytes()),
        ),
        crate::HeavyRefusal::Access(why) => {
            let status = match why {
                crate::AccessRefusal::Missing => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            (status, Bytes::from(format!("{why}\n")))
        }
    }
}

/// One chunk of `/nq/large`: zeros, as many as the client reads.
const NQ_CHUNK: usize = 64 * 1024;

/// The responsiveness test's heavy transfers over HTTP/3: `GET /nq/large`
/// sends zeros until the client stops reading (it resets the stream, as
/// the draft's clients do), bounded like the HTTPS one; `PUT`/`POST
/// /nq/upload` reads the body, however large, and answers its length.
/// Both are heavy requests: the source's rate and a token apply first.
async fn serve_nq_transfer<S>(
    request: &Request<()>,
    stream: &mut h3::server::RequestStream<S, Bytes>,
    remote: std::net::IpAddr,
    shared: &Shared,
) where
    S: h3::quic::BidiStream<Bytes>,
{
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| vantage_wire::access::bearer_token(v.as_bytes()));
    let refused = shared.admit_heavy(remote, token).err().map(heavy_refusal);
    let upload = request.uri().path() == "/nq/upload";
    let method_ok = if upload {
        matches!(*request.method(), http::Method::PUT | http::Method::POST)
    } else {
        *request.method() == http::Method::GET
    };
    let (status, body) = match refused {
        Some(r) => r,
        None if !method_ok => (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET /nq/large, PUT or POST /nq/upload\n"),
        ),
        None if upload => {
            let mut got = 0u64;
            loop {
                match tokio::time::timeout(crate::photo::PHOTO_IDLE, stream.recv_data()).await {
                    Ok(Ok(Some(mut chunk))) => {
                        use bytes::Buf;
                        got += chunk.remaining() as u64;
                        chunk.advance(chunk.remaining());
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(_)) | Err(_) => {
                        Stats::bump(&shared.stats.http_bad_requests);
                        return;
                    }
                }
            }
            Stats::bump(&shared.stats.http_requests);
            (StatusCode::OK, Bytes::from(format!("{got}\n")))
        }
        None => {
            Stats::bump(&shared.stats.http_requests);
            let head = Response::builder().status(StatusCode::OK).body(());
            let Ok(head) = head else { return };
            if stream.send_response(head).await.is_err() {
                return;
            }
            let chunk = Bytes::from_static(&ZEROS[..NQ_CHUNK]);
            let mut left = crate::nq::NQ_LARGE_BYTES;
            while left > 0 {
                let n = left.min(NQ_CHUNK as u64) as usize;
                // Ends when the client stops the stream or goes away.
                if stream.send_data(chunk.slice(..n)).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = stream.finish().await;
            return;
        }
    };
    let head = Response::builder()
        .status(status)
        .header("content-length", body.len())
        .body(());
    let Ok(head) = head else { return };
    let sent = async {
        stream.send_response(head).await?;
        stream.send_data(body).await?;
        stream.finish().await
    };
    if let Err(e) = sent.await {
        tracing::debug!(%remote, error = %e, "HTTP/3 response not sent");
    }
}
