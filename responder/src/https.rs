//! The HTTPS echo service: TCP + TLS 1.3 + HTTP/1.1 with keep-alive.

use crate::body::ResponseBody;
use crate::photo::{PhotoFault, SinkCheck, PHOTO_IDLE};
use crate::stats::Stats;
use crate::{ResponderConfig, ResponderError, Shared, ZEROS};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use vantage_wire::photo::{PhotoBytes, PhotoStatus};

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
    let mut handshaking = Handshaking::new(shared.limits.max_handshakes);
    let mut rate = shared
        .limits
        .connections_per_source
        .map(|r| crate::rate::RateLimiter::new(r, shared.limits.max_rate_sources));
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
        if let Some(rate) = rate.as_mut() {
            let source = crate::rate::source_key(remote.ip());
            if rate.check(&source, Instant::now()) != crate::rate::Verdict::Allowed {
                Stats::bump(&shared.stats.tcp_rate_limited);
                drop(tcp);
                continue;
            }
        }
        // A new connection always gets its handshake: when the handshakes
        // in progress are at their cap, the oldest is cut. Silent or
        // dripping connections cannot hold the door shut on probes, whose
        // handshakes finish in a round trip or two.
        let cancel = handshaking.admit(&shared.stats);
        Stats::bump(&shared.stats.tcp_connections);
        // The address the connection arrived on: the origin of the
        // responsiveness URLs when the request names none that is usable.
        let local = tcp.local_addr().ok();
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(shared.limits.handshake_timeout, async {
                // A client that closes before sending a byte measured its
                // connect time or checked the port: not a TLS failure.
                let mut first = [0u8; 1];
                if matches!(tcp.peek(&mut first).await, Ok(0)) {
                    return Err(None);
                }
                acceptor.accept(tcp).await.map_err(Some)
            });
            let done = tokio::select! {
                done = handshake => done,
                _ = cancel => {
                    tracing::debug!(%remote, "TLS handshake cut: the oldest of too many in progress");
                    return;
                }
            };
            let Ok(_permit) = slots.try_acquire_owned() else {
                Stats::bump(&shared.stats.tcp_refused);
                tracing::debug!(%remote, "TCP connection closed: at the connection limit");
                return;
            };
            let tls = match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(None)) => {
                    Stats::bump(&shared.stats.tcp_connect_only);
                    tracing::debug!(%remote, "TCP connection closed before TLS (a connect-time probe)");
                    return;
                }
                Ok(Err(Some(e))) => {
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
            serve_http(tls, remote, local, &shared, &mut shutdown).await;
        });
    }
}

/// Serves HTTP on one TLS connection until it ends or the responder
/// stops: HTTP/2 when the client chose `h2` in ALPN (what responsiveness
/// clients use), HTTP/1.1 with keep-alive otherwise.
async fn serve_http(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(answer(req, remote.ip(), local, &shared).await) }
    });
    let io = TokioIo::new(tls);
    let result = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(shared.limits.max_streams_per_connection)
            .max_header_list_size(64 * 1024)
            .serve_connection(io, service);
        until_shutdown(conn, shutdown, |c| c.graceful_shutdown()).await
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(shared.limits.handshake_timeout)
            // Room for a photo upload's body to arrive in large reads:
            // at 16 or 64 KiB the HTTPS upload ran at ~0.6 of a raw TLS
            // stream on loopback, at 256 KiB ~0.75 (benches/ANALYSIS.md).
            // Headers stay bounded by hyper's header count and the
            // header-read timeout; the buffer grows only when reads fill
            // it, so an idle connection keeps 8 KiB.
            .max_buf_size(256 * 1024)
            .keep_alive(true)
            // One buffer per response: with vectored writes the head and a
            // small body become two TLS records, and the client wakes twice.
            .writev(false)
            .serve_connection(io, service);
        until_shutdown(conn, shutdown, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = result {
        if client_went_away(&e) {
            Stats::bump(&shared.stats.http_aborted);
            tracing::debug!(%remote, error = %e, "HTTP connection closed by the client mid-exchange");
        } else {
            Stats::bump(&shared.stats.http_bad_requests);
            tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Whether an HTTP connection ended because the client left (closed or
/// reset it, or cancelled a stream) rather than broke the protocol: a
/// responsiveness client does so by design when it has read enough of
/// `/nq/large`.
fn client_went_away(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_io() || h2.reason() == Some(h2::Reason::CANCEL) || h2.is_go_away();
        }
        source = s.source();
    }
    false
}

/// Drives `conn` to its end; when the responder stops first, asks it to
/// finish gracefully (`graceful`: the HTTP/1.1 or HTTP/2 connection's own
/// call) and waits for that.
async fn until_shutdown<C>(
    conn: C,
    shutdown: &mut watch::Receiver<bool>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) -> C::Output
where
    C: std::future::Future,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// Whether a request is heavy: a photo, an echo of more than
/// [`crate::HEAVY_ECHO_BYTES`], or the responsiveness test's large
/// transfers. Per-source limits apply to these (see
/// [`crate::Limits::heavy_per_source`]).
fn is_heavy(req: &Request<Incoming>) -> bool {
    match req.uri().path() {
        "/photo" | "/nq/large" | "/nq/upload" => true,
        "/echo" => matches!(query_number(req, "bytes"), Ok(Some(n)) if n > crate::HEAVY_ECHO_BYTES),
        _ => false,
    }
}

/// The access token of an `authorization: Bearer` header, if any.
fn request_token(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| vantage_wire::access::bearer_token(v.as_bytes()))
}

/// The answer to a refused heavy request: 429 with `Retry-After` over the
/// rate, 401 with a `Bearer` challenge without a token, 403 with a bad one.
fn heavy_refused(refusal: &crate::HeavyRefusal) -> Response<ResponseBody> {
    use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
    match refusal {
        crate::HeavyRefusal::OverRate => {
            let mut r = reply(StatusCode::TOO_MANY_REQUESTS, crate::HEAVY_REFUSED);
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        crate::HeavyRefusal::Access(why) => {
            let (status, challenge) = match why {
                crate::AccessRefusal::Missing => {
                    (StatusCode::UNAUTHORIZED, "Bearer realm=\"vantage\"")
                }
                _ => (
                    StatusCode::FORBIDDEN,
                    "Bearer realm=\"vantage\", error=\"invalid_token\"",
                ),
            };
            let mut r = reply(status, format!("{why}\n"));
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            r
        }
    }
}

/// The TLS handshakes in progress, oldest first, each with the means to
/// cut it.
struct Handshaking {
    cap: usize,
    pending: std::collections::VecDeque<tokio::sync::oneshot::Sender<()>>,
}

impl Handshaking {
    fn new(cap: usize) -> Self {
        Handshaking {
            cap: cap.max(1),
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Admits one more handshake, cutting the oldest still in progress if
    /// the cap is reached (counted in `handshakes_cut`). The receiver
    /// fires when this one is cut in turn; dropping it (the handshake
    /// ended) takes it off the list.
    fn admit(&mut self, stats: &Stats) -> tokio::sync::oneshot::Receiver<()> {
        self.pending.retain(|cut| !cut.is_closed());
        while self.pending.len() >= self.cap {
            if let Some(oldest) = self.pending.pop_front() {
                if oldest.send(()).is_ok() {
                    Stats::bump(&stats.handshakes_cut);
                }
            }
        }
        let (cut, cancel) = tokio::sync::oneshot::channel();
        self.pending.push_back(cut);
        cancel
    }
}

async fn answer(
    req: Request<Incoming>,
    remote: IpAddr,
    local: Option<SocketAddr>,
    shared: &Shared,
) -> Response<ResponseBody> {
    let received = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if is_heavy(&req) {
        if let Err(refusal) = shared.admit_heavy(remote, request_token(&req)) {
            return heavy_refused(&refusal);
        }
    }
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/health") => {
            Stats::bump(&shared.stats.http_requests);
            reply(StatusCode::OK, "ok\n")
        }
        (Method::GET | Method::HEAD, "/echo") => {
            let n = match query_number(&req, "bytes") {
                Ok(n) => n.unwrap_or(0),
                Err(why) => return bad_request(shared, StatusCode::BAD_REQUEST, why),
            };
            if n > u64::from(shared.limits.max_response_bytes) || n as usize > ZEROS.len() {
                return bad_request(
                    shared,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "bytes= above the responder's limit\n",
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
        (Method::PUT | Method::POST, "/photo") => photo_upload(req, shared).await,
        (Method::GET, "/photo") => {
            shared.stall.wait().await;
            photo_download(&req, shared)
        }
        (Method::GET, "/.well-known/nq") => {
            Stats::bump(&shared.stats.http_requests);
            let named = req.uri().authority().map(|a| a.as_str()).or_else(|| {
                req.headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
            });
            let origin = crate::nq::origin(named, local);
            let mut r = reply(StatusCode::OK, crate::nq::config_json(&origin));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        (Method::GET, "/nq/small") => {
            Stats::bump(&shared.stats.http_requests);
            reply(StatusCode::OK, Bytes::from_static(&ZEROS[..1]))
        }
        (Method::GET, "/nq/large") => {
            // The draft's large object: more than any test reads, generated
            // on the fly; the client ends the transfer by closing.
            Stats::bump(&shared.stats.http_requests);
            let mut r = Response::new(ResponseBody::Zeros {
                left: crate::nq::NQ_LARGE_BYTES,
            });
            *r.status_mut() = StatusCode::OK;
            r
        }
        (Method::PUT | Method::POST, "/nq/upload") => {
            let mut body = req.into_body();
            let mut got = 0u64;
            loop {
                match tokio::time::timeout(PHOTO_IDLE, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            got += d.len() as u64;
                        }
                    }
                    Ok(None) => break,
                    Ok(Some(Err(_))) | Err(_) => {
                        return bad_request(shared, StatusCode::BAD_REQUEST, "upload broken\n")
                    }
                }
            }
            Stats::bump(&shared.stats.http_requests);
            reply(StatusCode::OK, format!("{got}\n"))
        }
        _ => bad_request(
            shared,
            StatusCode::NOT_FOUND,
            "try GET /echo?bytes=N, GET /health, PUT /photo, GET /photo?size=N&seed=S or GET /.well-known/nq\n",
        ),
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r
}

fn bad_request(
    shared: &Shared,
    status: StatusCode,
    why: impl Into<Bytes>,
) -> Response<ResponseBody> {
    Stats::bump(&shared.stats.http_bad_requests);
    reply(status, why)
}

/// The number in query parameter `name`; an error message when it is not one.
fn query_number(req: &Request<Incoming>, name: &str) -> Result<Option<u64>, String> {
    crate::query::query_number(req.uri().query().unwrap_or(""), name).map_err(|e| format!("{e}\n"))
}

/// `PUT /photo` with `Content-Length` and `x-photo-crc32`: reads every
/// byte, checks length and checksum, and only then answers 200 (the
/// receipt, with `x-photo-bytes` and `x-photo-crc32`); 422 for a checksum
/// mismatch, 400 for a short or over-long body.
async fn photo_upload(req: Request<Incoming>, shared: &Shared) -> Response<ResponseBody> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(size) = header("content-length").and_then(|v| v.parse::<u64>().ok()) else {
        return bad_request(
            shared,
            StatusCode::LENGTH_REQUIRED,
            "a photo needs Content-Length\n",
        );
    };
    let Some(crc32) = header(PHOTO_CRC_HEADER).and_then(|v| u32::from_str_radix(&v, 16).ok())
    else {
        return bad_request(
            shared,
            StatusCode::BAD_REQUEST,
            "a photo needs x-photo-crc32: HEX (CRC-32 of its bytes)\n",
        );
    };
    if size > shared.limits.max_photo_bytes {
        return bad_request(
            shared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "photo above the responder's limit\n",
        );
    }
    let Ok(_slot) = shared.photo_slots.clone().try_acquire_owned() else {
        Stats::bump(&shared.stats.photos_busy);
        return reply(StatusCode::SERVICE_UNAVAILABLE, "too many photos at once\n");
    };
    let mut check = SinkCheck::new(size, crc32, shared.photo_fault.get());
    let mut body = req.into_body();
    loop {
        let frame = match tokio::time::timeout(PHOTO_IDLE, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            // A broken body: the client sees the connection fail, which is
            // what it is; nothing is receipted.
            Ok(Some(Err(_))) | Err(_) => {
                Stats::bump(&shared.stats.photos_damaged);
                return reply(StatusCode::BAD_REQUEST, "photo body broken off\n");
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !check.take(&data) {
            Stats::bump(&shared.stats.photos_damaged);
            let mut r = reply(
                StatusCode::BAD_REQUEST,
                "photo cut short (injected fault)\n",
            );
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return r;
        }
    }
    let (verdict, got, computed) = check.finish();
    shared.stall.wait().await;
    let (status, text) = match verdict {
        PhotoStatus::Ok => (StatusCode::OK, "received\n"),
        PhotoStatus::Integrity => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "photo checksum mismatch\n",
        ),
        _ => (StatusCode::BAD_REQUEST, "photo truncated\n"),
    };
    if status == StatusCode::OK {
        Stats::bump(&shared.stats.photos_received);
    } else {
        Stats::bump(&shared.stats.photos_damaged);
    }
    let mut r = reply(status, text);
    if let Ok(v) = got.to_string().parse() {
        r.headers_mut().insert("x-photo-bytes", v);
    }
    if let Ok(v) = format!("{computed:08x}").parse() {
        r.headers_mut().insert(PHOTO_CRC_HEADER, v);
    }
    r
}

/// `GET /photo?size=N&seed=S`: the photo of seed S, generated as it is sent.
fn photo_download(req: &Request<Incoming>, shared: &Shared) -> Response<ResponseBody> {
    let (size, seed) = match (query_number(req, "size"), query_number(req, "seed")) {
        (Ok(Some(size)), Ok(Some(seed))) => (size, seed),
        _ => {
            return bad_request(
                shared,
                StatusCode::BAD_REQUEST,
                "GET /photo?size=N&seed=S with two numbers\n",
            )
        }
    };
    if size > shared.limits.max_photo_bytes {
        return bad_request(
            shared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "photo above the responder's limit\n",
        );
    }
    // The body holds the slot until hyper has sent it or dropped it.
    let Ok(slot) = shared.photo_slots.clone().try_acquire_owned() else {
        Stats::bump(&shared.stats.photos_busy);
        return reply(StatusCode::SERVICE_UNAVAILABLE, "too many photos at once\n");
    };
    let fault = shared.photo_fault.get();
    Stats::bump(&shared.stats.photos_sent);
    let mut r = Response::new(ResponseBody::Photo {
        source: PhotoBytes::new(seed),
        offset: 0,
        end: if fault == Some(PhotoFault::CutShort) {
            size / 2
        } else {
            size
        },
        size,
        flip: (fault == Some(PhotoFault::FlipByte) && size > 0).then_some(size / 2),
        _slot: slot,
    });
    *r.status_mut() = StatusCode::OK;
    r
}

/// The header carrying a photo's CRC-32 (IEEE), eight hex digits.
pub(crate) const PHOTO_CRC_HEADER: &str = "x-photo-crc32";
