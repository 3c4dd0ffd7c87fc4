//! `tcp_connect`, `tls_handshake` and `https_request` against the
//! responder's HTTPS echo.

use super::{classify_io, until, Failure, TargetCtx};
use crate::recorder::Outcome;
use crate::schedule::{latency_from, TIMER_SLACK};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use vantage_wire::{ErrorClass, Metric};

fn server_name(ctx: &TargetCtx) -> Result<ServerName<'static>, Failure> {
    ServerName::try_from(ctx.server_name.clone()).map_err(|e| {
        (
            ErrorClass::Tls,
            format!("server name `{}`: {e}", ctx.server_name),
        )
    })
}

pub(crate) async fn tcp(ctx: &TargetCtx, deadline: Instant) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(until(deadline), TcpStream::connect(ctx.https_addr)).await {
        Err(_) => Err((ErrorClass::Timeout, "TCP connect timed out".into())),
        Ok(Err(e)) => Err((classify_io(&e), e.to_string())),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

pub(crate) async fn tls(
    ctx: &TargetCtx,
    stream: TcpStream,
    deadline: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let connector = tokio_rustls::TlsConnector::from(ctx.https_tls.config.clone());
    match tokio::time::timeout(
        until(deadline),
        connector.connect(server_name(ctx)?, stream),
    )
    .await
    {
        Err(_) => Err((ErrorClass::Timeout, "TLS handshake timed out".into())),
        Ok(Err(e)) => {
            let class = match classify_io(&e) {
                ErrorClass::Reset | ErrorClass::Io => ErrorClass::Reset,
                c => c,
            };
            Err((class, e.to_string()))
        }
        Ok(Ok(s)) => Ok(s),
    }
}

/// A fresh TCP connection and TLS handshake: `tcp_connect` (counted from
/// the intended time) and `tls_handshake` (from connect to handshake done).
pub(crate) async fn tcp_cold(ctx: Arc<TargetCtx>, intended: Instant) {
    let deadline = intended + ctx.timeout;
    let started = Instant::now();
    let stream = match tcp(&ctx, deadline).await {
        Ok(s) => s,
        Err((class, why)) => {
            for m in [Metric::TcpConnect, Metric::TlsHandshake] {
                ctx.emit_error(m, intended, class, &why).await;
            }
            return;
        }
    };
    let connected = Instant::now();
    let connect = latency_from(intended, started, connected, TIMER_SLACK);
    ctx.emit(
        Metric::TcpConnect,
        intended,
        Outcome::Measured {
            latency: connect,
            server_time: None,
            bytes: 0,
        },
    )
    .await;
    match tls(&ctx, stream, deadline).await {
        Ok(mut s) => {
            let latency = connected.elapsed();
            ctx.emit(
                Metric::TlsHandshake,
                intended,
                Outcome::Measured {
                    latency,
                    server_time: None,
                    bytes: 0,
                },
            )
            .await;
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                tokio::io::AsyncWriteExt::shutdown(&mut s),
            )
            .await;
        }
        Err((class, why)) => {
            ctx.emit_error(Metric::TlsHandshake, intended, class, &why)
                .await
        }
    }
}

async fn new_sender(
    ctx: &TargetCtx,
    deadline: Instant,
) -> Result<SendRequest<Empty<Bytes>>, Failure> {
    let stream = tcp(ctx, deadline).await?;
    let stream = tls(ctx, stream, deadline).await?;
    let (sender, conn) = match tokio::time::timeout(
        until(deadline),
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    {
        Err(_) => return Err((ErrorClass::Timeout, "HTTP handshake timed out".into())),
        Ok(Err(e)) => return Err((classify_hyper(&e), e.to_string())),
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTPS connection ended");
        }
    });
    Ok(sender)
}

pub(crate) fn classify_hyper(e: &hyper::Error) -> ErrorClass {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        source = s.source();
    }
    if e.is_parse() || e.is_parse_status() || e.is_user() {
        ErrorClass::Protocol
    } else if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Reset
    }
}

/// Most idle keep-alive connections kept per target.
const POOL: usize = 16;

/// One request on a warm keep-alive connection: `https_request`. HTTP/1.1
/// carries one request at a time per connection, so overlapping attempts
/// open more connections; such an attempt includes its handshakes, as it
/// would for an app.
pub(crate) async fn https_request(ctx: Arc<TargetCtx>, intended: Instant) {
    const M: Metric = Metric::HttpsRequest;
    let deadline = intended + ctx.timeout;
    let started = Instant::now();
    let idle = {
        let mut pool = ctx.https_pool.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        while let Some(s) = pool.pop() {
            if s.is_ready() {
                found = Some(s);
                break;
            }
        }
        found
    };
    // With no idle warm connection, one is opened first. Its handshakes
    // are `tcp_connect`'s and `tls_handshake`'s to measure, not a warm
    // request's, so the request is then timed from when it is ready (in
    // namespace mode 2.6 % of requests at 20/s over a 40 ms path had
    // counted two extra round trips). `origin` is what the latency is
    // counted from: the intended time, or the ready connection.
    let (mut sender, origin, started) = match idle {
        Some(s) => (s, intended, started),
        None => match new_sender(&ctx, deadline).await {
            Ok(s) => {
                let ready = Instant::now();
                (s, ready, ready)
            }
            Err((class, why)) => return ctx.emit_error(M, intended, class, &why).await,
        },
    };
    let uri = format!("/echo?bytes={}", ctx.request.response_len);
    let mut request =
        hyper::Request::get(uri).header(hyper::header::HOST, ctx.server_name.as_str());
    if u64::from(ctx.request.response_len) > vantage_wire::access::HEAVY_ECHO_BYTES {
        if let Some(token) = ctx.access_header() {
            request = request.header(hyper::header::AUTHORIZATION, token);
        }
    }
    let request = match request.body(Empty::<Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return ctx.emit_error(M, intended, ErrorClass::Protocol, &e).await,
    };
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| (classify_hyper(&e), e.to_string()))?;
        let status = response.status();
        let server_time = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_server_timing);
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| (classify_hyper(&e), e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
            }
        }
        if matches!(status.as_u16(), 401 | 403) {
            ctx.report_access_refused("large echoes");
        }
        if !status.is_success() {
            let class = if status.is_server_error() {
                ErrorClass::ServerError
            } else {
                ErrorClass::HttpStatus
            };
            return Err((class, format!("HTTP status {status}")));
        }
        Ok::<_, Failure>((server_time, bytes))
    };
    match tokio::time::timeout(until(deadline), exchange).await {
        Err(_) => {
            ctx.emit_error(M, intended, ErrorClass::Timeout, &"request timed out")
                .await
        }
        Ok(Err((class, why))) => ctx.emit_error(M, intended, class, &why).await,
        Ok(Ok((server_time, bytes))) => {
            let latency = latency_from(origin, started, Instant::now(), TIMER_SLACK);
            ctx.emit(
                M,
                intended,
                Outcome::Measured {
                    latency,
                    server_time,
                    bytes,
                },
            )
            .await;
            let mut pool = ctx.https_pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL {
                pool.push(sender);
            }
        }
    }
}

/// Reads `app;dur=1.234` (milliseconds) from a `Server-Timing` header.
pub(crate) fn parse_server_timing(v: &str) -> Option<Duration> {
    v.split(',')
        .flat_map(|metric| metric.split(';'))
        .find_map(|p| p.trim().strip_prefix("dur="))
        .and_then(|ms| ms.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_is_read_in_ms() {
        assert_eq!(
            parse_server_timing("app;dur=1.5"),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(parse_server_timing("app"), None);
        assert_eq!(parse_server_timing("app;dur=-3"), None);
        assert_eq!(parse_server_timing("app;dur=NaN"), None);
    }
}
