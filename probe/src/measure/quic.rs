//! `quic_handshake`, `quic_cold_request` and `quic_request` against the
//! responder's QUIC echo.

use super::{until, TargetCtx};
use crate::recorder::Outcome;
use crate::schedule::{latency_from, TIMER_SLACK};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vantage_tls::TlsClient;
use vantage_wire::echo::{EchoResponse, EchoStatus, RESPONSE_HEADER_LEN};
use vantage_wire::{ErrorClass, Metric, Reason};

/// A client endpoint trusting as `tls` says, for targets of `peer`'s family.
pub(crate) fn quic_client_endpoint(
    tls: &TlsClient,
    peer: SocketAddr,
) -> Result<quinn::Endpoint, String> {
    tls.quic_endpoint(peer, Duration::from_secs(30), Duration::from_secs(10))
        .map_err(|e| e.to_string())
}

pub(crate) fn classify_connection(e: &quinn::ConnectionError) -> ErrorClass {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => ErrorClass::Timeout,
        E::ConnectionClosed(c) if is_crypto(u64::from(c.error_code)) => ErrorClass::Tls,
        E::Reset | E::ApplicationClosed(_) | E::ConnectionClosed(_) | E::LocallyClosed => {
            ErrorClass::Reset
        }
        E::TransportError(t) if is_crypto(u64::from(t.code)) => ErrorClass::Tls,
        _ => ErrorClass::Protocol,
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 + alert (RFC 9001 §4.8).
fn is_crypto(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

/// Why a QUIC handshake failed in TLS, if it did. quinn keeps only the
/// alert and rustls' message of a failure found here, so the reason comes
/// from the alert (RFC 8446 §6.2), with the message telling apart the
/// failures that share one; an alert the server sent is that.
pub(crate) fn tls_reason_quic(e: &quinn::ConnectionError) -> Option<Reason> {
    use quinn::ConnectionError as E;
    let (code, text) = match e {
        E::TransportError(t) => (u64::from(t.code), t.reason.as_str()),
        E::ConnectionClosed(c) if is_crypto(u64::from(c.error_code)) => {
            return Some(Reason::TlsAlertReceived)
        }
        _ => return None,
    };
    if !is_crypto(code) {
        return None;
    }
    Some(match code - 0x100 {
        45 if text.contains("not valid yet") || text.contains("NotValidYet") => {
            Reason::TlsNotYetValid
        }
        45 => Reason::TlsExpired,
        42 if text.contains("not valid for name") || text.contains("NotValidForName") => {
            Reason::TlsNameMismatch
        }
        42 | 43 => Reason::TlsBadCertificate,
        44 => Reason::TlsRevoked,
        48 => Reason::TlsUnknownIssuer,
        51 => Reason::TlsBadSignature,
        _ if vantage_tls::PinMismatch::in_text(text) => Reason::TlsPinMismatch,
        40 | 70 | 71 | 120 => Reason::TlsIncompatible,
        _ => Reason::TlsOther,
    })
}

/// Connects with a deadline; the error says which class and why.
pub(crate) async fn connect(
    ctx: &TargetCtx,
    deadline: Instant,
) -> Result<quinn::Connection, (ErrorClass, String)> {
    let connecting = ctx
        .endpoint
        .connect(ctx.quic_addr, &ctx.server_name)
        .map_err(|e| (ErrorClass::Protocol, e.to_string()))?;
    match tokio::time::timeout(until(deadline), connecting).await {
        Err(_) => Err((ErrorClass::Timeout, "handshake timed out".into())),
        Ok(Err(e)) => Err((classify_connection(&e), e.to_string())),
        Ok(Ok(c)) => Ok(c),
    }
}

/// One echo request on `conn`: the responder's reported time on success.
pub(crate) async fn echo(
    ctx: &TargetCtx,
    conn: &quinn::Connection,
    deadline: Instant,
) -> Result<(Duration, u64), (ErrorClass, String)> {
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| (classify_connection(&e), e.to_string()))?;
        let write_err = |e: quinn::WriteError| match e {
            quinn::WriteError::ConnectionLost(c) => (classify_connection(&c), c.to_string()),
            other => (ErrorClass::Reset, other.to_string()),
        };
        let heavy = u64::from(ctx.request.response_len) > vantage_wire::access::HEAVY_ECHO_BYTES;
        let preamble = ctx.access_preamble(heavy);
        if preamble.is_empty() {
            // The measuring loop's common case: no allocation.
            send.write_all(&ctx.request.encode())
                .await
                .map_err(write_err)?;
        } else {
            let mut head = preamble.to_vec();
            head.extend_from_slice(&ctx.request.encode());
            send.write_all(&head).await.map_err(write_err)?;
        }
        let mut padding = ctx.request.padding_len as usize;
        while padding > 0 {
            let n = padding.min(PADDING.len());
            send.write_all(&PADDING[..n]).await.map_err(write_err)?;
            padding -= n;
        }
        let _ = send.finish();
        let mut head = [0u8; RESPONSE_HEADER_LEN];
        recv.read_exact(&mut head).await.map_err(|e| match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
                (classify_connection(&c), c.to_string())
            }
            other => (ErrorClass::Protocol, other.to_string()),
        })?;
        let response =
            EchoResponse::decode(&head).map_err(|e| (ErrorClass::Protocol, e.to_string()))?;
        if response.status == EchoStatus::Forbidden {
            ctx.report_access_refused("large echoes");
        }
        if response.status != EchoStatus::Ok {
            return Err((
                ErrorClass::ServerError,
                format!("responder answered {:?}", response.status),
            ));
        }
        let mut body = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => body += n as u64,
                Ok(None) => break,
                Err(quinn::ReadError::ConnectionLost(c)) => {
                    return Err((classify_connection(&c), c.to_string()))
                }
                Err(e) => return Err((ErrorClass::Reset, e.to_string())),
            }
        }
        if body != u64::from(response.body_len) {
            return Err((
                ErrorClass::Protocol,
                format!("body of {body} bytes, header said {}", response.body_len),
            ));
        }
        Ok((
            Duration::from_nanos(response.server_time_ns),
            body + RESPONSE_HEADER_LEN as u64,
        ))
    };
    match tokio::time::timeout(until(deadline), exchange).await {
        Err(_) => Err((ErrorClass::Timeout, "request timed out".into())),
        Ok(r) => r,
    }
}

static PADDING: [u8; 4096] = [0; 4096];

/// One echo on `conn`, recorded as `metric`: latency from the intended
/// start, or the failure's class.
pub(crate) async fn timed_echo(
    ctx: &TargetCtx,
    conn: &quinn::Connection,
    metric: Metric,
    (intended, origin): (Instant, Instant),
    started: Instant,
    deadline: Instant,
) {
    match echo(ctx, conn, deadline).await {
        Ok((server_time, bytes)) => {
            let latency = latency_from(origin, started, Instant::now(), TIMER_SLACK);
            let outcome = Outcome::Measured {
                latency,
                server_time: Some(server_time),
                bytes,
            };
            ctx.emit(metric, intended, outcome).await;
        }
        Err((class, why)) => ctx.emit_error(metric, intended, class, &why).await,
    }
}

/// A fresh connection and one request: `quic_handshake` and `quic_cold_request`.
pub(crate) async fn quic_cold(ctx: Arc<TargetCtx>, intended: Instant) {
    let deadline = intended + ctx.timeout;
    let started = Instant::now();
    let conn = match connect(&ctx, deadline).await {
        Ok(c) => c,
        Err((class, why)) => {
            for m in [Metric::QuicHandshake, Metric::QuicColdRequest] {
                ctx.emit_error(m, intended, class, &why).await;
            }
            return;
        }
    };
    let handshake = latency_from(intended, started, Instant::now(), TIMER_SLACK);
    ctx.emit(
        Metric::QuicHandshake,
        intended,
        Outcome::Measured {
            latency: handshake,
            server_time: None,
            bytes: 0,
        },
    )
    .await;
    timed_echo(
        &ctx,
        &conn,
        Metric::QuicColdRequest,
        (intended, intended),
        started,
        deadline,
    )
    .await;
    conn.close(0u32.into(), b"done");
}

/// One request on the warm connection: `quic_request`. A dead connection
/// is replaced first; that request then also carries the handshake, as it
/// would for an app.
pub(crate) async fn quic_warm(ctx: Arc<TargetCtx>, intended: Instant) {
    let deadline = intended + ctx.timeout;
    let mut started = Instant::now();
    // As `https_request`: a request that had to wait for a connection to
    // be opened is timed from when it is ready (its handshake is
    // `quic_handshake`'s to measure), so `origin` moves with it.
    let mut origin = intended;
    let conn = {
        // Held by another request: it is opening the connection.
        let (mut slot, waited) = match ctx.warm_quic.try_lock() {
            Ok(slot) => (slot, false),
            Err(_) => (ctx.warm_quic.lock().await, true),
        };
        match slot.as_ref().filter(|c| c.close_reason().is_none()) {
            Some(c) => {
                if waited {
                    started = Instant::now();
                    origin = started;
                }
                c.clone()
            }
            None => match connect(&ctx, deadline).await {
                Ok(c) => {
                    *slot = Some(c.clone());
                    started = Instant::now();
                    origin = started;
                    c
                }
                Err((class, why)) => {
                    *slot = None;
                    drop(slot);
                    ctx.emit_error(Metric::QuicRequest, intended, class, &why)
                        .await;
                    return;
                }
            },
        }
    };
    timed_echo(
        &ctx,
        &conn,
        Metric::QuicRequest,
        (intended, origin),
        started,
        deadline,
    )
    .await;
}
