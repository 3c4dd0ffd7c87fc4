//! The HTTPS echo service: TCP + TLS 1.3 + HTTP/1.1 with keep-alive.

use crate::stats::Stats;
use crate::{ResponderConfig, ResponderError, Shared, ZEROS};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub(crate) async fn bind(config: &ResponderConfig) -> Result<TcpListener, ResponderError> {
    let addr = SocketAddr::new(config.bind, config.https_port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| ResponderError::Bind {
            proto: "HTTPS (TCP)",
            addr,
            source,
        })
}

pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Stats::bump(&shared.stats.tcp_refused);
            tracing::debug!(%remote, "TCP connection refused: at the connection limit");
            drop(tcp);
            continue;
        };
        Stats::bump(&shared.stats.tcp_connections);
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(
                shared.limits.handshake_timeout,
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    Stats::bump(&shared.stats.tls_failed);
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    Stats::bump(&shared.stats.tls_failed);
                    tracing::debug!(%remote, "TLS handshake timed out (half-open or silent client)");
                    return;
                }
            };
            let service_shared = shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = service_shared.clone();
                async move { Ok::<_, Infallible>(answer(req, &shared).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.limits.handshake_timeout)
                .max_buf_size(16 * 1024)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                Stats::bump(&shared.stats.http_bad_requests);
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

async fn answer(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let received = Instant::now();
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        Stats::bump(&shared.stats.http_bad_requests);
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET or HEAD only\n"),
        );
    }
    match req.uri().path() {
        "/health" => {
            Stats::bump(&shared.stats.http_requests);
            reply(StatusCode::OK, Bytes::from_static(b"ok\n"))
        }
        "/echo" => {
            let wanted = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("bytes="))
                .map(str::parse::<u32>);
            let n = match wanted {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    Stats::bump(&shared.stats.http_bad_requests);
                    return reply(
                        StatusCode::BAD_REQUEST,
                        Bytes::from_static(b"bytes= takes a number\n"),
                    );
                }
            };
            if n > shared.limits.max_response_bytes || n as usize > ZEROS.len() {
                Stats::bump(&shared.stats.http_bad_requests);
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Bytes::from_static(b"bytes= above the responder's limit\n"),
                );
            }
            shared.stall.wait().await;
            Stats::bump(&shared.stats.http_requests);
            let mut r = reply(StatusCode::OK, Bytes::from_static(&ZEROS[..n as usize]));
            let server_ms = received.elapsed().as_secs_f64() * 1e3;
            if let Ok(v) = format!("app;dur={server_ms:.3}").parse() {
                r.headers_mut().insert("server-timing", v);
            }
            r
        }
        _ => {
            Stats::bump(&shared.stats.http_bad_requests);
            reply(
                StatusCode::NOT_FOUND,
                Bytes::from_static(b"try /echo?bytes=N or /health\n"),
            )
        }
    }
}
