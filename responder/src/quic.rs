//! The QUIC echo service.

use crate::stats::Stats;
use crate::{zero_chunks, ResponderConfig, ResponderError, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Semaphore};
use vantage_wire::access;
use vantage_wire::echo::{self, EchoRequest, EchoResponse, EchoStatus};

pub(crate) fn bind(config: &ResponderConfig) -> Result<quinn::Endpoint, ResponderError> {
    // One port, two protocols, told apart by ALPN: Vantage's echo and
    // HTTP/3 (for probes timing the responder as a web server).
    let server = config.identity.quic_server_config_for(
        &[echo::ALPN, crate::http3::ALPN],
        config.limits.max_streams_per_connection,
        8,
        config.limits.idle_timeout,
    )?;
    let addr = SocketAddr::new(config.bind, config.quic_port);
    quinn::Endpoint::server(server, addr).map_err(|source| ResponderError::Bind {
        proto: "QUIC (UDP)",
        addr,
        source,
    })
}

pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let mut rate = shared
        .limits
        .connections_per_source
        .map(|r| crate::rate::RateLimiter::new(r, shared.limits.max_rate_sources));
    let bound = endpoint.local_addr().ok();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = shutdown.changed() => break,
        };
        let Some(incoming) = incoming else { break };
        if let Some(rate) = rate.as_mut() {
            let source = crate::rate::source_key(incoming.remote_address().ip());
            if rate.check(&source, std::time::Instant::now()) != crate::rate::Verdict::Allowed {
                // Nothing is sent back: an address that may be spoofed
                // gets no packet at all.
                Stats::bump(&shared.stats.quic_rate_limited);
                incoming.ignore();
                continue;
            }
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Stats::bump(&shared.stats.quic_refused);
            tracing::debug!(remote = %incoming.remote_address(), "QUIC connection refused: at the connection limit");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(shared.limits.handshake_timeout, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    Stats::bump(&shared.stats.quic_handshake_failed);
                    tracing::debug!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    Stats::bump(&shared.stats.quic_handshake_failed);
                    tracing::debug!(%remote, "QUIC handshake timed out");
                    return;
                }
            };
            Stats::bump(&shared.stats.quic_connections);
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            if alpn.as_deref() == Some(crate::http3::ALPN) {
                // The address the connection reached: the packet's own
                // destination when the socket reports it, else the bound one.
                let local =
                    bound.map(|b| SocketAddr::new(conn.local_ip().unwrap_or(b.ip()), b.port()));
                crate::http3::serve_connection(conn, local, shared).await;
            } else {
                serve_connection(conn, shared).await;
            }
        });
    }
}

async fn serve_connection(conn: quinn::Connection, shared: Shared) {
    let remote = conn.remote_address();
    // Streams are bounded by the transport's max_concurrent_bidi_streams.
    while let Ok((send, recv)) = conn.accept_bi().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(why) = serve_stream(send, recv, remote.ip(), &shared).await {
                Stats::bump(&shared.stats.quic_bad_requests);
                tracing::debug!(remote = %remote, %why, "QUIC echo request refused");
            }
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    remote: std::net::IpAddr,
    shared: &Shared,
) -> Result<(), String> {
    let limits = &shared.limits;
    let mut head = [0u8; echo::REQUEST_LEN];
    // The kind (third byte) says whether an echo, a photo or an access
    // token (then the request follows it) comes.
    read_head(&mut recv, &mut head[..3], limits.handshake_timeout).await?;
    let token = if head[2] == access::KIND_ACCESS {
        let token = read_token(
            [head[0], head[1], head[2]],
            &mut recv,
            limits.handshake_timeout,
        )
        .await?;
        read_head(&mut recv, &mut head[..3], limits.handshake_timeout).await?;
        Some(token)
    } else {
        None
    };
    if vantage_wire::photo::is_photo_kind(head[2]) {
        let head3 = [head[0], head[1], head[2]];
        return crate::photo::serve_quic(head3, token.as_deref(), send, recv, remote, shared).await;
    }
    tokio::time::timeout(limits.handshake_timeout, recv.read_exact(&mut head[3..]))
        .await
        .map_err(|_| "request header timed out".to_string())?
        .map_err(|e| format!("reading request header: {e}"))?;
    let request = match EchoRequest::decode(&head) {
        Ok(r) => r,
        Err(e) => {
            answer(&mut send, EchoStatus::BadRequest, 0, 0).await;
            return Err(e.to_string());
        }
    };
    if request.padding_len > limits.max_request_bytes {
        answer(&mut send, EchoStatus::TooLarge, 0, 0).await;
        return Err(format!(
            "request padding {} above limit",
            request.padding_len
        ));
    }
    // Read the padding and the FIN, bounded: anything past the declared
    // padding is a protocol error.
    let mut left = request.padding_len as usize;
    let mut sink = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(limits.handshake_timeout, recv.read(&mut sink))
            .await
            .map_err(|_| "request body timed out".to_string())?
            .map_err(|e| format!("reading request body: {e}"))?;
        match read {
            Some(n) if n <= left => left -= n,
            Some(_) => {
                answer(&mut send, EchoStatus::BadRequest, 0, 0).await;
                return Err("request longer than its declared padding".into());
            }
            None if left == 0 => break,
            None => return Err("request shorter than its declared padding".into()),
        }
    }
    let received = Instant::now();
    if u64::from(request.response_len) > crate::HEAVY_ECHO_BYTES {
        if let Err(refusal) = shared.admit_heavy(remote, token.as_deref()) {
            let status = match refusal {
                crate::HeavyRefusal::OverRate => EchoStatus::Busy,
                crate::HeavyRefusal::Access(_) => EchoStatus::Forbidden,
            };
            answer(&mut send, status, 0, 0).await;
            return Ok(());
        }
    }
    shared.stall.wait().await;
    if request.response_len > limits.max_response_bytes {
        answer(&mut send, EchoStatus::TooLarge, 0, 0).await;
        return Err(format!(
            "response of {} bytes above limit",
            request.response_len
        ));
    }
    let server_ns = received.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
    let header = EchoResponse {
        status: EchoStatus::Ok,
        server_time_ns: server_ns,
        body_len: request.response_len,
    };
    send.write_all(&header.encode())
        .await
        .map_err(|e| format!("writing response: {e}"))?;
    for chunk in zero_chunks(request.response_len as usize) {
        send.write_all(chunk)
            .await
            .map_err(|e| format!("writing response body: {e}"))?;
    }
    let _ = send.finish();
    Stats::bump(&shared.stats.quic_requests);
    Ok(())
}

/// Reads `buf.len()` bytes of a request's head within `timeout`.
async fn read_head(
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
    timeout: std::time::Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, recv.read_exact(buf))
        .await
        .map_err(|_| "request header timed out".to_string())?
        .map_err(|e| format!("reading request header: {e}"))
}

/// Reads the rest of an access preamble whose first three bytes are
/// `head3`: its length (checked before anything is allocated), then the
/// token.
async fn read_token(
    head3: [u8; 3],
    recv: &mut quinn::RecvStream,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let mut head = [0u8; access::PREAMBLE_HEAD_LEN];
    head[..3].copy_from_slice(&head3);
    read_head(recv, &mut head[3..], timeout).await?;
    let len = access::decode_preamble_head(&head).map_err(|e| e.to_string())?;
    let mut token = vec![0u8; len];
    read_head(recv, &mut token, timeout).await?;
    access::decode_token(&token)
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

async fn answer(
    send: &mut quinn::SendStream,
    status: EchoStatus,
    server_time_ns: u64,
    body_len: u32,
) {
    let header = EchoResponse {
        status,
        server_time_ns,
        body_len,
    };
    let _ = send.write_all(&header.encode()).await;
    let _ = send.finish();
}
