//! HTTP/3 on the QUIC port (ALPN `h3`), so a probe can time the responder
//! as a web server over every HTTP version: `GET /echo?bytes=N` (N zero
//! bytes, with `Server-Timing`) and `GET /health`, the same answers as the
//! HTTPS service's.

use crate::stats::Stats;
use crate::{Shared, ZEROS};
use bytes::Bytes;
use hyper::http::{self, Request, Response, StatusCode};
use std::time::Instant;

/// The ALPN protocol of HTTP/3 (RFC 9114).
pub(crate) const ALPN: &[u8] = b"h3";

/// Serves HTTP/3 requests on `conn` until the client closes it.
pub(crate) async fn serve_connection(conn: quinn::Connection, shared: Shared) {
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
                    let (status, body) = answer(&request, remote.ip(), &shared).await;
                    let mut response = Response::builder()
                        .status(status)
                        .header("content-length", body.len());
                    if status == StatusCode::OK {
                        let ms = received.elapsed().as_secs_f64() * 1e3;
                        response = response.header("server-timing", format!("app;dur={ms:.3}"));
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
    shared: &Shared,
) -> (StatusCode, Bytes) {
    if request.method() != http::Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET only\n"),
        );
    }
    match request.uri().path() {
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
            Bytes::from_static(b"try GET /echo?bytes=N or GET /health\n"),
        ),
    }
}
