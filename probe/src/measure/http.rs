//! Real service URLs, timed the way an app meets them: a cold request (a
//! new DNS lookup with the probe's own resolver, a new TCP connection, a
//! new TLS handshake, then the request) with each phase in its own
//! histogram, and a warm request on a reused connection. HTTP/1.1 and
//! HTTP/2 through hyper and rustls; the version is what TLS ALPN agreed.
//!
//! Phases are plain durations, each from its own start; the totals count
//! from the attempt's intended start, so a late attempt is charged its
//! lateness (coordinated omission) in `http_total` and `http_warm_total`.

use super::{classify_io, tls_reason_io, until, Event, Failure, Scheduled};
use crate::config::{HttpTargetConfig, HttpVersion};
use crate::recorder::Outcome;
use crate::schedule::{latency_from, TIMER_SLACK};
use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use vantage_tls::TlsClient;
use vantage_wire::{ErrorClass, Metric, Reason};

/// Everything the measurements of one URL share.
pub(crate) struct HttpCtx {
    pub(crate) index: usize,
    pub(crate) target: HttpTargetConfig,
    /// `None` when the URL's host is an address: nothing to look up.
    pub(crate) resolver: Option<TokioResolver>,
    pub(crate) tls: TlsClient,
    pub(crate) timeout: Duration,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) sync_gate: Arc<AtomicUsize>,
    /// Idle connections for warm requests (an HTTP/1.1 connection carries
    /// one request at a time; an HTTP/2 one is shared).
    pub(crate) warm: Mutex<Vec<HttpSender>>,
    /// The address the last lookup gave, told to the recorder when it changes.
    pub(crate) resolved: Mutex<Option<IpAddr>>,
    /// QUIC endpoints for HTTP/3, IPv4 and IPv6, made on first use.
    pub(crate) quic: Mutex<[Option<quinn::Endpoint>; 2]>,
    /// Whether an Alt-Svc offer of HTTP/3 was seen (said once).
    pub(crate) alt_svc_h3: std::sync::atomic::AtomicBool,
}

/// A connection's request side, whichever version it speaks.
pub(crate) enum HttpSender {
    /// HTTP/1.1.
    H1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    H2(http2::SendRequest<Full<Bytes>>),
    /// HTTP/3 over QUIC.
    H3 {
        send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        conn: quinn::Connection,
    },
}

impl HttpSender {
    fn usable(&self) -> bool {
        match self {
            HttpSender::H1(s) => !s.is_closed() && s.is_ready(),
            HttpSender::H2(s) => !s.is_closed() && s.is_ready(),
            HttpSender::H3 { conn, .. } => conn.close_reason().is_none(),
        }
    }

    /// Whether requests may share this connection at once.
    fn shared(&self) -> bool {
        !matches!(self, HttpSender::H1(_))
    }

    fn version(&self) -> u8 {
        match self {
            HttpSender::H1(_) => 1,
            HttpSender::H2(_) => 2,
            HttpSender::H3 { .. } => 3,
        }
    }

    fn share(&self) -> Option<HttpSender> {
        match self {
            HttpSender::H1(_) => None,
            HttpSender::H2(s) => Some(HttpSender::H2(s.clone())),
            HttpSender::H3 { send, conn } => Some(HttpSender::H3 {
                send: send.clone(),
                conn: conn.clone(),
            }),
        }
    }

    async fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            HttpSender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            HttpSender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            HttpSender::H3 { .. } => unreachable!("HTTP/3 requests go through exchange_h3"),
        }
    }
}

impl Scheduled for HttpCtx {
    fn syncing(&self) -> bool {
        self.sync_gate.load(Ordering::SeqCst) > 0
    }

    fn emit_sample(
        &self,
        metric: Metric,
        intended: Instant,
        outcome: Outcome,
    ) -> impl Future<Output = ()> + Send {
        self.emit(metric, intended, outcome)
    }
}

/// The ALPN protocols offered for `version`.
pub(crate) fn alpn_for(version: HttpVersion) -> &'static [&'static [u8]] {
    match version {
        HttpVersion::Auto => &[b"h2", b"http/1.1"],
        HttpVersion::Http1 => &[b"http/1.1"],
        HttpVersion::Http2 => &[b"h2"],
        HttpVersion::Http3 => &[b"h3"],
    }
}

/// How long each phase of one request took.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Phases {
    /// `None` for an address (no lookup) and on a reused connection.
    pub(crate) dns: Option<Duration>,
    /// `None` on a reused connection.
    pub(crate) connect: Option<Duration>,
    /// `None` on a reused connection.
    pub(crate) tls: Option<Duration>,
    pub(crate) ttfb: Duration,
    pub(crate) transfer: Duration,
    pub(crate) body_bytes: u64,
    pub(crate) status: u16,
    /// The HTTP version spoken: 1, 2 or 3.
    pub(crate) version: u8,
    /// The finer cause of a TLS or DNS failure, when one is known.
    pub(crate) reason: Option<Reason>,
    /// The CDN edge the response named ([`cdn_edge`]).
    pub(crate) edge: Option<String>,
}

/// The CDN edge a response says served it, as `provider:POP`: CloudFront's
/// `x-amz-cf-pop` (`cloudfront:BOM78-P1`), the POP at the end of
/// Cloudflare's `cf-ray` (`cloudflare:SIN`), or Fastly's `x-served-by`,
/// whose last entry is the edge nearest the client (`fastly:SIN` from
/// `cache-bom4720-BOM, cache-sin18024-SIN`). What the server sent is not
/// trusted: the series counts a name that is no bounded label as `other`.
pub(crate) fn cdn_edge(headers: &hyper::HeaderMap) -> Option<String> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let pop_after_dash = |v: &str| v.rsplit('-').next().unwrap_or(v).trim().to_string();
    if let Some(pop) = text("x-amz-cf-pop") {
        return Some(format!("cloudfront:{pop}"));
    }
    if let Some(ray) = text("cf-ray") {
        return Some(format!("cloudflare:{}", pop_after_dash(ray)));
    }
    if let Some(served) = text("x-served-by") {
        let last = served.rsplit(',').next().unwrap_or(served);
        return Some(format!("fastly:{}", pop_after_dash(last)));
    }
    None
}

/// A step of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Dns,
    Connect,
    Tls,
    Ttfb,
    Transfer,
    /// The response came whole but with another status than expected.
    Status,
}

impl HttpCtx {
    async fn emit(&self, metric: Metric, intended: Instant, outcome: Outcome) {
        super::send_sample(&self.events, self.index, metric, intended, outcome).await;
    }

    async fn failed(&self, metric: Metric, intended: Instant, outcome: Outcome, why: &str) {
        tracing::debug!(target_index = self.index, url = %self.target.url, %metric, ?outcome, why, "request failed");
        self.emit(metric, intended, outcome).await;
    }

    async fn status(&self, metric: Metric, intended: Instant, status: u16) {
        let _ = self
            .events
            .send(Event::Status {
                target: self.index,
                metric,
                intended,
                status,
            })
            .await;
    }

    async fn edge(&self, metric: Metric, intended: Instant, edge: String) {
        let _ = self
            .events
            .send(Event::Edge {
                target: self.index,
                metric,
                intended,
                edge,
            })
            .await;
    }

    /// Looks the host up with the probe's resolver (no cache: every cold
    /// request asks the server), or takes the address as given.
    pub(crate) async fn lookup(
        &self,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(Vec<IpAddr>, Option<Duration>), Failure> {
        let Some(resolver) = &self.resolver else {
            let ip = self.target.host.parse().map_err(|_| {
                phases.reason = Some(Reason::DnsOther);
                (
                    ErrorClass::Dns,
                    "host is neither a name nor an address".into(),
                )
            })?;
            return Ok((vec![ip], None));
        };
        let started = Instant::now();
        let answer = match tokio::time::timeout(
            until(deadline),
            resolver.lookup_ip(self.target.host.as_str()),
        )
        .await
        {
            Err(_) => return Err((ErrorClass::Timeout, "DNS lookup timed out".into())),
            Ok(Err(e)) => {
                phases.reason = Some(if e.is_nx_domain() {
                    Reason::DnsNoSuchName
                } else if e.is_no_records_found() {
                    Reason::DnsNoAddress
                } else {
                    Reason::DnsOther
                });
                return Err((ErrorClass::Dns, format!("DNS: {e}")));
            }
            Ok(Ok(answer)) => answer,
        };
        let took = started.elapsed();
        let ips: Vec<IpAddr> = answer.iter().collect();
        if ips.is_empty() {
            phases.reason = Some(Reason::DnsNoAddress);
            return Err((ErrorClass::Dns, "DNS answer holds no address".into()));
        }
        Ok((ips, Some(took)))
    }

    /// Tells the recorder when the address that took the connection changes,
    /// so each series says which data centre answered.
    async fn note_address(&self, ip: IpAddr) {
        let changed = {
            let mut last = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            let changed = *last != Some(ip);
            *last = Some(ip);
            changed
        };
        if changed {
            let _ = self
                .events
                .send(Event::Address {
                    target: self.index,
                    address: format!(
                        "{} ({})",
                        self.target.url,
                        SocketAddr::new(ip, self.target.port)
                    ),
                })
                .await;
        }
    }

    /// A new connection: lookup, TCP connect, TLS, and the HTTP handshake
    /// of the version ALPN agreed.
    pub(crate) async fn connect(
        &self,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<HttpSender, (Phase, Failure)> {
        let (ips, dns) = self
            .lookup(deadline, phases)
            .await
            .map_err(|f| (Phase::Dns, f))?;
        phases.dns = dns;
        if self.target.version == HttpVersion::Http3 {
            return self.connect_h3(ips, deadline, phases).await;
        }

        // The answer's addresses in order until one takes the connection, as
        // a client without Happy Eyeballs does; the phase is the whole wait.
        let started = Instant::now();
        let mut last = None;
        let mut connected = None;
        for ip in ips {
            let addr = SocketAddr::new(ip, self.target.port);
            match tokio::time::timeout(until(deadline), TcpStream::connect(addr)).await {
                Err(_) => {
                    last = Some((ErrorClass::Timeout, format!("connect {addr} timed out")));
                    break;
                }
                Ok(Err(e)) => last = Some((classify_io(&e), format!("connect {addr}: {e}"))),
                Ok(Ok(s)) => {
                    connected = Some((s, ip));
                    break;
                }
            }
        }
        let Some((tcp, ip)) = connected else {
            let failure = last.unwrap_or((ErrorClass::Dns, "no address to connect to".into()));
            return Err((Phase::Connect, failure));
        };
        phases.connect = Some(started.elapsed());
        self.note_address(ip).await;
        let _ = tcp.set_nodelay(true);

        let name = ServerName::try_from(self.target.host.clone()).map_err(|e| {
            phases.reason = Some(Reason::TlsOther);
            (Phase::Tls, (ErrorClass::Tls, format!("server name: {e}")))
        })?;
        let started = Instant::now();
        let connector = tokio_rustls::TlsConnector::from(self.tls.config.clone());
        let tls = match tokio::time::timeout(until(deadline), connector.connect(name, tcp)).await {
            Err(_) => {
                return Err((
                    Phase::Tls,
                    (ErrorClass::Timeout, "TLS handshake timed out".into()),
                ))
            }
            Ok(Err(e)) => {
                let class = match classify_io(&e) {
                    ErrorClass::Io => ErrorClass::Tls,
                    c => c,
                };
                if class == ErrorClass::Tls {
                    phases.reason = Some(tls_reason_io(&e).unwrap_or(Reason::TlsOther));
                }
                return Err((Phase::Tls, (class, format!("TLS: {e}"))));
            }
            Ok(Ok(s)) => s,
        };
        phases.tls = Some(started.elapsed());
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if self.target.version == HttpVersion::Http2 && !h2 {
            return Err((
                Phase::Tls,
                (
                    ErrorClass::Protocol,
                    "the server did not agree to HTTP/2 in ALPN".into(),
                ),
            ));
        }
        let io = TokioIo::new(tls);
        let handshake = async {
            if h2 {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "HTTP/2 connection ended");
                    }
                });
                Ok::<_, hyper::Error>(HttpSender::H2(sender))
            } else {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "HTTP/1.1 connection ended");
                    }
                });
                Ok(HttpSender::H1(sender))
            }
        };
        let handshake = async {
            handshake
                .await
                .map_err(|e| (super::https::classify_hyper(&e), e.to_string()))
        };
        let sender = within(deadline, Phase::Ttfb, "HTTP handshake", handshake).await?;
        phases.version = if h2 { 2 } else { 1 };
        Ok(sender)
    }

    /// A new QUIC connection (its handshake is the `http_tls` phase: QUIC
    /// has no separate connect) and HTTP/3 on it.
    async fn connect_h3(
        &self,
        ips: Vec<IpAddr>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<HttpSender, (Phase, Failure)> {
        let started = Instant::now();
        let mut last = None;
        for ip in ips {
            let addr = SocketAddr::new(ip, self.target.port);
            let endpoint = match self.quic_endpoint(addr) {
                Ok(e) => e,
                Err(why) => {
                    last = Some((ErrorClass::Io, why));
                    continue;
                }
            };
            let connecting = match endpoint.connect(addr, &self.target.host) {
                Ok(c) => c,
                Err(e) => {
                    last = Some((ErrorClass::Io, format!("QUIC connect {addr}: {e}")));
                    continue;
                }
            };
            let conn = match tokio::time::timeout(until(deadline), connecting).await {
                Err(_) => {
                    last = Some((
                        ErrorClass::Timeout,
                        format!("QUIC handshake with {addr} timed out"),
                    ));
                    break;
                }
                Ok(Err(e)) => {
                    let class = super::quic::classify_connection(&e);
                    phases.reason = (class == ErrorClass::Tls)
                        .then(|| super::quic::tls_reason_quic(&e).unwrap_or(Reason::TlsOther));
                    last = Some((class, format!("QUIC {addr}: {e}")));
                    continue;
                }
                Ok(Ok(c)) => c,
            };
            phases.tls = Some(started.elapsed());
            self.note_address(ip).await;
            let (mut driver, send) =
                match h3::client::new(h3_quinn::Connection::new(conn.clone())).await {
                    Ok(pair) => pair,
                    Err(e) => {
                        return Err((Phase::Ttfb, (ErrorClass::Protocol, format!("HTTP/3: {e}"))))
                    }
                };
            tokio::spawn(async move {
                let e = driver.wait_idle().await;
                tracing::debug!(error = %e, "HTTP/3 connection ended");
            });
            phases.version = 3;
            return Ok(HttpSender::H3 { send, conn });
        }
        let failure = last.unwrap_or((ErrorClass::Dns, "no address to connect to".into()));
        Err((Phase::Tls, failure))
    }

    /// The QUIC endpoint for `peer`'s address family, made on first use.
    fn quic_endpoint(&self, peer: SocketAddr) -> Result<quinn::Endpoint, String> {
        let mut slots = self.quic.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[usize::from(peer.is_ipv6())];
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let e = self
            .tls
            .quic_endpoint(peer, Duration::from_secs(30), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        *slot = Some(e.clone());
        Ok(e)
    }

    /// One HTTP/3 request: head, then the body, counted up to the cap.
    async fn exchange_h3(
        &self,
        send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(), (Phase, Failure)> {
        let request = self.request(true).map_err(|f| (Phase::Ttfb, f))?;
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let request = hyper::Request::from_parts(parts, ());
        let h3_err = |e: h3::error::StreamError| (ErrorClass::Protocol, format!("HTTP/3: {e}"));
        let started = Instant::now();
        let head = async {
            let mut stream = send.send_request(request).await.map_err(h3_err)?;
            if !body.is_empty() {
                stream.send_data(body).await.map_err(h3_err)?;
            }
            stream.finish().await.map_err(h3_err)?;
            let response = stream.recv_response().await.map_err(h3_err)?;
            Ok::<_, Failure>((stream, response))
        };
        let (mut stream, response) = within(deadline, Phase::Ttfb, "response head", head).await?;
        phases.ttfb = started.elapsed();
        phases.status = response.status().as_u16();
        phases.edge = cdn_edge(response.headers());
        let read = async {
            let mut bytes = 0u64;
            while let Some(chunk) = stream.recv_data().await.map_err(h3_err)? {
                self.count_body(&mut bytes, bytes::Buf::remaining(&chunk))?;
            }
            Ok(bytes)
        };
        self.transfer(read, deadline, phases).await
    }

    /// Adds `n` body bytes to `bytes`; more than the cap is an error.
    fn count_body(&self, bytes: &mut u64, n: usize) -> Result<(), Failure> {
        *bytes += n as u64;
        if *bytes > self.target.max_body_bytes {
            return Err((
                ErrorClass::Protocol,
                format!(
                    "body longer than the cap of {} bytes",
                    self.target.max_body_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Times `read` (the whole body, counted) as the transfer phase, then
    /// judges the status.
    async fn transfer(
        &self,
        read: impl Future<Output = Result<u64, Failure>>,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(), (Phase, Failure)> {
        let started = Instant::now();
        phases.body_bytes = within(deadline, Phase::Transfer, "response body", read).await?;
        phases.transfer = started.elapsed();
        self.check_status(phases)
    }

    fn request(&self, h2: bool) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let t = &self.target;
        let authority = match (t.port, t.host.contains(':')) {
            (443, true) => format!("[{}]", t.host),
            (443, false) => t.host.clone(),
            _ => vantage_wire::host_port(&t.host, t.port),
        };
        // HTTP/2 carries the authority in the URI; HTTP/1.1 in Host.
        let uri = if h2 {
            format!("https://{authority}{}", t.path_and_query)
        } else {
            t.path_and_query.clone()
        };
        let mut b = hyper::Request::builder()
            .method(t.method.as_str())
            .uri(uri)
            .header(hyper::header::USER_AGENT, "vantage-probe");
        if !h2 {
            b = b.header(hyper::header::HOST, authority);
        }
        for (k, v) in &t.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let body = t.body.clone().map(Bytes::from).unwrap_or_default();
        b.body(Full::new(body))
            .map_err(|e| (ErrorClass::Protocol, format!("request: {e}")))
    }

    /// One request on `sender`: the response head, then the body, read and
    /// counted up to the cap, never kept.
    pub(crate) async fn exchange(
        &self,
        sender: &mut HttpSender,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(), (Phase, Failure)> {
        phases.version = sender.version();
        if let HttpSender::H3 { send, .. } = sender {
            return self.exchange_h3(send, deadline, phases).await;
        }
        let h2 = matches!(sender, HttpSender::H2(_));
        let request = self.request(h2).map_err(|f| (Phase::Ttfb, f))?;
        let started = Instant::now();
        let head = async {
            sender
                .send(request)
                .await
                .map_err(|e| (super::https::classify_hyper(&e), e.to_string()))
        };
        let response = within(deadline, Phase::Ttfb, "response head", head).await?;
        phases.ttfb = started.elapsed();
        phases.status = response.status().as_u16();
        phases.edge = cdn_edge(response.headers());
        self.note_alt_svc(response.headers());
        let mut body = response.into_body();
        let read = async {
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| (super::https::classify_hyper(&e), e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    self.count_body(&mut bytes, data.len())?;
                }
            }
            Ok(bytes)
        };
        self.transfer(read, deadline, phases).await
    }

    /// Says once when the server offers HTTP/3 in Alt-Svc: a probe on
    /// `auto` keeps to what ALPN agreed (so a run's samples are of one
    /// version), and HTTP/3 is measured as its own URL with version 3.
    fn note_alt_svc(&self, headers: &hyper::HeaderMap) {
        let offers_h3 = headers
            .get_all(hyper::header::ALT_SVC)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|alt| alt.trim_start().starts_with("h3=")));
        if offers_h3 && !self.alt_svc_h3.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.target.url, "the server offers HTTP/3 (Alt-Svc); measure it as another URL with version 3 ([[url]] version = \"3\", or --http-version 3)");
        }
    }

    /// An unexpected status fails the request, by class: 5xx a server
    /// error, anything else (a redirect included) an HTTP status error.
    fn check_status(&self, phases: &Phases) -> Result<(), (Phase, Failure)> {
        if phases.status == self.target.expect_status {
            return Ok(());
        }
        let s = phases.status;
        let class = if (500..600).contains(&s) {
            ErrorClass::ServerError
        } else {
            ErrorClass::HttpStatus
        };
        let what = if (300..400).contains(&s) {
            " (a redirect: not followed)"
        } else {
            ""
        };
        Err((
            Phase::Status,
            (
                class,
                format!("status {s}{what}, expected {}", self.target.expect_status),
            ),
        ))
    }
}

/// Runs `step`, a phase of a request, until `deadline`: its failure, or a
/// timeout saying `what` did not finish, is charged to `phase`.
async fn within<T>(
    deadline: Instant,
    phase: Phase,
    what: &str,
    step: impl Future<Output = Result<T, Failure>>,
) -> Result<T, (Phase, Failure)> {
    match tokio::time::timeout(until(deadline), step).await {
        Err(_) => Err((phase, (ErrorClass::Timeout, format!("{what} timed out")))),
        Ok(r) => r.map_err(|f| (phase, f)),
    }
}

/// A cold request: new lookup, new connection, one request, closed.
pub(crate) async fn http_cold(ctx: Arc<HttpCtx>, intended: Instant) {
    let deadline = intended + ctx.timeout;
    let started = Instant::now();
    let mut phases = Phases::default();
    let result = match ctx.connect(deadline, &mut phases).await {
        Ok(mut sender) => ctx.exchange(&mut sender, deadline, &mut phases).await,
        Err(e) => Err(e),
    };
    let total = latency_from(intended, started, Instant::now(), TIMER_SLACK);
    record(&ctx, intended, &phases, result, total, true).await;
}

/// A warm request on an idle connection (a new one, unrecorded phases and
/// all, when none is idle: that request carries its handshake, as an app's
/// would). The connection is kept for the next.
pub(crate) async fn http_warm(ctx: Arc<HttpCtx>, intended: Instant) {
    let deadline = intended + ctx.timeout;
    let started = Instant::now();
    let idle = {
        let mut pool = ctx.warm.lock().unwrap_or_else(|p| p.into_inner());
        pool.retain(HttpSender::usable);
        match pool.last().map(HttpSender::share) {
            Some(Some(shared)) => Some(shared),
            Some(None) => pool.pop(),
            None => None,
        }
    };
    let mut phases = Phases::default();
    let mut sender = match idle {
        Some(s) => s,
        None => {
            let mut unused = Phases::default();
            match ctx.connect(deadline, &mut unused).await {
                Ok(s) => s,
                Err((_, (class, why))) => {
                    let outcome = Outcome::failed_for(class, unused.reason);
                    for m in [Metric::HttpWarmTtfb, Metric::HttpWarmTotal] {
                        ctx.failed(m, intended, outcome, &why).await;
                    }
                    return;
                }
            }
        }
    };
    let result = ctx.exchange(&mut sender, deadline, &mut phases).await;
    let total = latency_from(intended, started, Instant::now(), TIMER_SLACK);
    let ok = result.is_ok() || matches!(result, Err((Phase::Status, _)));
    record(&ctx, intended, &phases, result, total, false).await;
    if ok {
        let mut pool = ctx.warm.lock().unwrap_or_else(|p| p.into_inner());
        if !(sender.shared() && pool.iter().any(HttpSender::shared)) && pool.len() < 8 {
            pool.push(sender);
        }
    }
}

/// What one request counts: its status (on the total's metric), then one
/// outcome per metric in the order they are sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Counted {
    /// The response's status, counted on the total's metric.
    pub(crate) status: Option<(Metric, u16)>,
    /// The CDN edge the response named, counted on the total's metric.
    pub(crate) edge: Option<(Metric, String)>,
    /// Each metric's outcome; a failure carries what went wrong, for the log.
    pub(crate) outcomes: Vec<(Metric, Outcome, Option<String>)>,
}

/// Counts a request's phases: each completed phase as measured, the one
/// that failed with its class, later ones not at all (never attempted), and
/// the total as measured only if the whole request succeeded. A warm
/// request has no lookup, connect or handshake of its own. Pure: the
/// table test below holds every case.
pub(crate) fn count_request(
    phases: &Phases,
    result: &Result<(), (Phase, Failure)>,
    total: Duration,
    cold: bool,
) -> Counted {
    let (ttfb_m, transfer_m, total_m) = if cold {
        (Metric::HttpTtfb, Metric::HttpTransfer, Metric::HttpTotal)
    } else {
        (
            Metric::HttpWarmTtfb,
            Metric::HttpWarmTransfer,
            Metric::HttpWarmTotal,
        )
    };
    let measured = |latency: Duration, bytes: u64| Outcome::Measured {
        latency,
        server_time: None,
        bytes,
    };
    let mut outcomes = Vec::new();
    let failed_at = result.as_ref().err().map(|(p, _)| *p);
    let reached = |p: Phase| failed_at.is_none_or(|f| phase_order(f) > phase_order(p));
    if cold {
        for (phase, metric, took) in [
            (Phase::Dns, Metric::HttpDns, phases.dns),
            (Phase::Connect, Metric::HttpConnect, phases.connect),
            (Phase::Tls, Metric::HttpTls, phases.tls),
        ] {
            if let (true, Some(d)) = (reached(phase), took) {
                outcomes.push((metric, measured(d, 0), None));
            }
        }
    }
    if reached(Phase::Ttfb) {
        outcomes.push((ttfb_m, measured(phases.ttfb, 0), None));
    }
    if reached(Phase::Transfer) {
        outcomes.push((
            transfer_m,
            measured(phases.transfer, phases.body_bytes),
            None,
        ));
    }
    match result {
        Ok(()) => outcomes.push((total_m, measured(total, phases.body_bytes), None)),
        Err((phase, (class, why))) => {
            let outcome = Outcome::failed_for(*class, phases.reason);
            let metric = match phase {
                Phase::Dns if cold => Some(Metric::HttpDns),
                Phase::Connect if cold => Some(Metric::HttpConnect),
                Phase::Tls if cold => Some(Metric::HttpTls),
                Phase::Ttfb => Some(ttfb_m),
                Phase::Transfer => Some(transfer_m),
                _ => None,
            };
            if let Some(m) = metric {
                outcomes.push((m, outcome, Some(why.clone())));
            }
            outcomes.push((total_m, outcome, Some(why.clone())));
        }
    }
    Counted {
        status: (phases.status != 0).then_some((total_m, phases.status)),
        edge: phases.edge.clone().map(|e| (total_m, e)),
        outcomes,
    }
}

/// Sends what [`count_request`] counted to the recorder.
async fn record(
    ctx: &HttpCtx,
    intended: Instant,
    phases: &Phases,
    result: Result<(), (Phase, Failure)>,
    total: Duration,
    cold: bool,
) {
    let counted = count_request(phases, &result, total, cold);
    if let Some((metric, status)) = counted.status {
        ctx.status(metric, intended, status).await;
    }
    if let Some((metric, edge)) = counted.edge {
        ctx.edge(metric, intended, edge).await;
    }
    for (metric, outcome, why) in counted.outcomes {
        match why {
            None => ctx.emit(metric, intended, outcome).await,
            Some(why) => ctx.failed(metric, intended, outcome, &why).await,
        }
    }
}

fn phase_order(p: Phase) -> u8 {
    match p {
        Phase::Dns => 0,
        Phase::Connect => 1,
        Phase::Tls => 2,
        Phase::Ttfb => 3,
        Phase::Transfer => 4,
        Phase::Status => 5,
    }
}

/// The probe's resolver: the system's configuration, or one server (for
/// tests and for probing a given resolver), with the cache off so every
/// cold request's lookup goes to the server.
pub(crate) fn resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TokioResolver, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("reading the system's DNS configuration: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = timeout.min(Duration::from_secs(5));
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vantage_responder::{Identity, Responder, ResponderConfig};
    use vantage_tls::Trust;

    /// One request's outcome as a short word: `ok`, `lost`, a class, or a reason.
    fn word(o: &Outcome) -> String {
        match o {
            Outcome::Measured { .. } => "ok".into(),
            Outcome::Lost => "lost".into(),
            Outcome::Failed(c) => c.name().into(),
            Outcome::FailedBecause(r) => r.name().into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_cdn_edge_is_read_from_each_providers_header() {
        let edge = |pairs: &[(&'static str, &'static str)]| {
            let mut h = hyper::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, hyper::header::HeaderValue::from_static(v));
            }
            cdn_edge(&h)
        };
        assert_eq!(
            edge(&[("x-amz-cf-pop", "BOM78-P1")]).as_deref(),
            Some("cloudfront:BOM78-P1")
        );
        assert_eq!(
            edge(&[("cf-ray", "7d1f2e3a4b5c6d7e-SIN")]).as_deref(),
            Some("cloudflare:SIN")
        );
        assert_eq!(
            edge(&[("x-served-by", "cache-bom4720-BOM, cache-sin18024-SIN")]).as_deref(),
            Some("fastly:SIN")
        );
        assert_eq!(edge(&[("server", "nginx")]), None);
        assert_eq!(edge(&[("x-amz-cf-pop", "  ")]), None);
    }

    #[test]
    fn a_request_counts_each_phase_it_reached_and_the_one_that_failed() {
        use Metric::*;
        let ms = Duration::from_millis;
        let full = Phases {
            dns: Some(ms(1)),
            connect: Some(ms(2)),
            tls: Some(ms(3)),
            ttfb: ms(4),
            transfer: ms(5),
            body_bytes: 100,
            status: 200,
            version: 1,
            reason: None,
            edge: Some("cloudfront:BOM78-P1".into()),
        };
        let fail = |phase, class, reason: Option<Reason>, status: u16, dns| {
            let phases = Phases {
                status,
                reason,
                dns,
                edge: (status != 0).then(|| "cloudfront:BOM78-P1".to_string()),
                ..full.clone()
            };
            (phases, Err((phase, (class, "why".to_string()))))
        };
        type Case = (
            &'static str,
            (Phases, Result<(), (Phase, Failure)>),
            bool,
            Option<u16>,
            Vec<(Metric, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "cold, whole",
                (full.clone(), Ok(())),
                true,
                Some(200),
                vec![
                    (HttpDns, "ok"),
                    (HttpConnect, "ok"),
                    (HttpTls, "ok"),
                    (HttpTtfb, "ok"),
                    (HttpTransfer, "ok"),
                    (HttpTotal, "ok"),
                ],
            ),
            (
                "cold to an address: no lookup",
                (
                    Phases {
                        dns: None,
                        ..full.clone()
                    },
                    Ok(()),
                ),
                true,
                Some(200),
                vec![
                    (HttpConnect, "ok"),
                    (HttpTls, "ok"),
                    (HttpTtfb, "ok"),
                    (HttpTransfer, "ok"),
                    (HttpTotal, "ok"),
                ],
            ),
            (
                "no such name",
                fail(
                    Phase::Dns,
                    ErrorClass::Dns,
                    Some(Reason::DnsNoSuchName),
                    0,
                    None,
                ),
                true,
                None,
                vec![
                    (HttpDns, "dns_no_such_name"),
                    (HttpTotal, "dns_no_such_name"),
                ],
            ),
            (
                "refused",
                fail(Phase::Connect, ErrorClass::Refused, None, 0, Some(ms(1))),
                true,
                None,
                vec![
                    (HttpDns, "ok"),
                    (HttpConnect, "refused"),
                    (HttpTotal, "refused"),
                ],
            ),
            (
                "expired certificate",
                fail(
                    Phase::Tls,
                    ErrorClass::Tls,
                    Some(Reason::TlsExpired),
                    0,
                    Some(ms(1)),
                ),
                true,
                None,
                vec![
                    (HttpDns, "ok"),
                    (HttpConnect, "ok"),
                    (HttpTls, "tls_expired"),
                    (HttpTotal, "tls_expired"),
                ],
            ),
            (
                "a reason of another class is not counted",
                fail(
                    Phase::Tls,
                    ErrorClass::Reset,
                    Some(Reason::TlsExpired),
                    0,
                    Some(ms(1)),
                ),
                true,
                None,
                vec![
                    (HttpDns, "ok"),
                    (HttpConnect, "ok"),
                    (HttpTls, "reset"),
                    (HttpTotal, "reset"),
                ],
            ),
            (
                "stall after the head",
                fail(Phase::Transfer, ErrorClass::Timeout, None, 200, Some(ms(1))),
                true,
                Some(200),
                vec![
                    (HttpDns, "ok"),
                    (HttpConnect, "ok"),
                    (HttpTls, "ok"),
                    (HttpTtfb, "ok"),
                    (HttpTransfer, "lost"),
                    (HttpTotal, "lost"),
                ],
            ),
            (
                "503: every phase measured, the request failed",
                fail(
                    Phase::Status,
                    ErrorClass::ServerError,
                    None,
                    503,
                    Some(ms(1)),
                ),
                true,
                Some(503),
                vec![
                    (HttpDns, "ok"),
                    (HttpConnect, "ok"),
                    (HttpTls, "ok"),
                    (HttpTtfb, "ok"),
                    (HttpTransfer, "ok"),
                    (HttpTotal, "server_error"),
                ],
            ),
            (
                "warm, whole",
                (full.clone(), Ok(())),
                false,
                Some(200),
                vec![
                    (HttpWarmTtfb, "ok"),
                    (HttpWarmTransfer, "ok"),
                    (HttpWarmTotal, "ok"),
                ],
            ),
            (
                "warm, 404",
                fail(Phase::Status, ErrorClass::HttpStatus, None, 404, None),
                false,
                Some(404),
                vec![
                    (HttpWarmTtfb, "ok"),
                    (HttpWarmTransfer, "ok"),
                    (HttpWarmTotal, "http_status"),
                ],
            ),
            (
                "warm, a TLS failure has no phase of its own",
                fail(Phase::Tls, ErrorClass::Tls, None, 0, None),
                false,
                None,
                vec![(HttpWarmTotal, "tls")],
            ),
        ];
        for (name, (phases, result), cold, status, want) in cases {
            let c = count_request(&phases, &result, ms(20), cold);
            let got: Vec<(Metric, String)> =
                c.outcomes.iter().map(|(m, o, _)| (*m, word(o))).collect();
            let want: Vec<(Metric, String)> =
                want.into_iter().map(|(m, w)| (m, w.to_string())).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(c.status.map(|(_, s)| s), status, "{name}: status");
            // A response that named its edge counts it on the total, as its status.
            assert_eq!(
                c.edge.as_ref().map(|(m, _)| *m),
                c.status.map(|(m, _)| m),
                "{name}: edge"
            );
            if let Some((m, _)) = c.status {
                assert!(
                    matches!(m, HttpTotal | HttpWarmTotal),
                    "{name}: status on the total"
                );
            }
            let total = c.outcomes.last().unwrap();
            if result.is_ok() {
                assert_eq!(
                    total.1,
                    Outcome::Measured {
                        latency: ms(20),
                        server_time: None,
                        bytes: 100
                    },
                    "{name}"
                );
            } else {
                assert_eq!(
                    total.2.as_deref(),
                    Some("why"),
                    "{name}: the failure says why"
                );
            }
        }
    }

    /// A DNS server on loopback that answers `A` queries for `names` with
    /// 127.0.0.1, any other name with NXDOMAIN, and counts the queries.
    async fn dns_server(names: &'static [&'static str]) -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let q = &buf[..n];
                if n < 12 {
                    continue;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let (mut at, mut labels) = (12, Vec::new());
                while at < n && q[at] != 0 {
                    let len = q[at] as usize;
                    labels.push(
                        String::from_utf8_lossy(&q[at + 1..(at + 1 + len).min(n)]).to_string(),
                    );
                    at += 1 + len;
                }
                let question_end = (at + 5).min(n);
                let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
                let name = labels.join(".").to_ascii_lowercase();
                let known = names.contains(&name.as_str());
                let answer = known && qtype == 1;
                let mut r = Vec::with_capacity(64);
                r.extend_from_slice(&q[0..2]);
                r.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]);
                r.extend_from_slice(&[0, 1, 0, answer as u8, 0, 0, 0, 0]);
                r.extend_from_slice(&q[12..question_end]);
                if answer {
                    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
                }
                let _ = socket.send_to(&r, from).await;
            }
        });
        (addr, queries)
    }

    fn target(url: &str, trust: Trust) -> HttpTargetConfig {
        let (host, port, path_and_query) = crate::config::parse_https_url(url).unwrap();
        HttpTargetConfig {
            name: "web".into(),
            url: url.into(),
            host,
            port,
            path_and_query,
            method: "GET".into(),
            headers: vec![("x-test".into(), "1".into())],
            body: None,
            expect_status: 200,
            version: HttpVersion::Auto,
            max_body_bytes: 1 << 20,
            trust,
        }
    }

    fn context(
        t: HttpTargetConfig,
        dns: Option<SocketAddr>,
        timeout: Duration,
    ) -> (Arc<HttpCtx>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(1024);
        let resolver = t
            .host
            .parse::<IpAddr>()
            .is_err()
            .then(|| resolver(dns, timeout).unwrap());
        let ctx = HttpCtx {
            index: 0,
            tls: TlsClient::for_web(&t.trust, alpn_for(t.version)).unwrap(),
            target: t,
            resolver,
            timeout,
            events: tx,
            sync_gate: Arc::new(AtomicUsize::new(0)),
            warm: Mutex::new(Vec::new()),
            resolved: Mutex::new(None),
            quic: Mutex::new([None, None]),
            alt_svc_h3: Default::default(),
        };
        (Arc::new(ctx), rx)
    }

    /// The samples sent so far, as (metric, outcome).
    fn drain(rx: &mut mpsc::Receiver<Event>) -> Vec<(Metric, Outcome)> {
        drain_all(rx).0
    }

    /// What a request sent: its samples and the HTTP statuses it counted.
    type Sent = (Vec<(Metric, Outcome)>, Vec<(Metric, u16)>);

    /// The samples and the HTTP statuses sent so far.
    fn drain_all(rx: &mut mpsc::Receiver<Event>) -> Sent {
        let (mut samples, mut statuses) = (Vec::new(), Vec::new());
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::Sample(s) => samples.push((s.metric, s.outcome)),
                Event::Status { metric, status, .. } => statuses.push((metric, status)),
                _ => {}
            }
        }
        (samples, statuses)
    }

    fn failed(samples: &[(Metric, Outcome)]) -> Vec<(Metric, ErrorClass)> {
        samples
            .iter()
            .filter_map(|(m, o)| match o {
                Outcome::Failed(c) => Some((*m, *c)),
                Outcome::FailedBecause(r) => Some((*m, r.class())),
                Outcome::Lost => Some((*m, ErrorClass::Timeout)),
                _ => None,
            })
            .collect()
    }

    /// A request that failed in its TLS phase for `reason`: counted on the
    /// phase and the total, no response, so no status.
    fn assert_tls_failure(s: &[(Metric, Outcome)], statuses: &[(Metric, u16)], reason: Reason) {
        assert_eq!(
            failed(s),
            [
                (Metric::HttpTls, ErrorClass::Tls),
                (Metric::HttpTotal, ErrorClass::Tls)
            ],
            "{s:?}"
        );
        assert_eq!(
            reasons(s),
            [(Metric::HttpTls, reason), (Metric::HttpTotal, reason)]
        );
        assert_eq!(statuses, []);
    }

    /// The reasons of the failures in `samples`, in order.
    fn reasons(samples: &[(Metric, Outcome)]) -> Vec<(Metric, Reason)> {
        samples
            .iter()
            .filter_map(|(m, o)| match o {
                Outcome::FailedBecause(r) => Some((*m, *r)),
                _ => None,
            })
            .collect()
    }

    async fn responder() -> Responder {
        Responder::start(ResponderConfig::local().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn cold_phases_add_up_and_warm_requests_skip_the_handshake() {
        let r = responder().await;
        let (dns, queries) = dns_server(&["web.test"]).await;
        let url = format!("https://web.test:{}/echo?bytes=5000", r.https_addr().port());
        let (ctx, mut rx) = context(
            target(&url, Trust::Pinned(vec![r.fingerprint()])),
            Some(dns),
            Duration::from_secs(5),
        );
        let mut gaps = Vec::new();
        for i in 0..10 {
            let started = Instant::now();
            let mut p = Phases::default();
            let mut sender = ctx.connect(started + ctx.timeout, &mut p).await.unwrap();
            ctx.exchange(&mut sender, started + ctx.timeout, &mut p)
                .await
                .unwrap();
            let wall = started.elapsed();
            let (dns_t, connect, tls) = (p.dns.unwrap(), p.connect.unwrap(), p.tls.unwrap());
            let sum = dns_t + connect + tls + p.ttfb + p.transfer;
            assert!(sum <= wall, "request {i}: phases {p:?} exceed {wall:?}");
            gaps.push(wall - sum);
            // The responder offers h2 and http/1.1; ALPN picks h2.
            assert_eq!((p.status, p.body_bytes, p.version), (200, 5000, 2));
            // A warm request on the same connection has no handshake phases.
            let mut w = Phases::default();
            ctx.exchange(&mut sender, Instant::now() + ctx.timeout, &mut w)
                .await
                .unwrap();
            assert_eq!((w.dns, w.connect, w.tls), (None, None, None));
            assert_eq!(w.body_bytes, 5000);
        }
        // What no phase owns: hyper's handshake call and the task switches
        // between phases (~0.3 ms here); the median, so a busy machine's
        // odd stall does not fail the test.
        gaps.sort();
        assert!(
            gaps[5] < Duration::from_millis(5),
            "time in no phase: {gaps:?}"
        );
        assert!(
            queries.load(Ordering::SeqCst) >= 10,
            "every cold request asks the DNS server"
        );

        // Through the jobs: a cold request records all six phases, a warm
        // one its three.
        drain(&mut rx);
        http_cold(ctx.clone(), Instant::now()).await;
        let cold = drain(&mut rx);
        let mut names: Vec<_> = cold.iter().map(|(m, _)| m.name()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "http_connect",
                "http_dns",
                "http_tls",
                "http_total",
                "http_transfer",
                "http_ttfb"
            ]
        );
        assert!(failed(&cold).is_empty(), "{cold:?}");
        for _ in 0..2 {
            http_warm(ctx.clone(), Instant::now()).await;
        }
        let warm = drain(&mut rx);
        assert_eq!(warm.len(), 6, "{warm:?}");
        assert!(failed(&warm).is_empty(), "{warm:?}");
        assert!(warm.iter().all(|(m, _)| matches!(
            m,
            Metric::HttpWarmTtfb | Metric::HttpWarmTransfer | Metric::HttpWarmTotal
        )));
        assert_eq!(
            ctx.warm.lock().unwrap().len(),
            1,
            "the warm connection is kept"
        );
        r.shutdown().await;
    }

    #[tokio::test]
    async fn http3_to_the_responder_times_the_quic_handshake_as_tls() {
        let r = responder().await;
        let (dns, _) = dns_server(&["web.test"]).await;
        let url = format!("https://web.test:{}/echo?bytes=5000", r.quic_addr().port());
        let mut t = target(&url, Trust::Pinned(vec![r.fingerprint()]));
        t.version = HttpVersion::Http3;
        let (ctx, mut rx) = context(t, Some(dns), Duration::from_secs(5));
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let mut p = Phases::default();
            let mut sender = ctx.connect(started + ctx.timeout, &mut p).await.unwrap();
            ctx.exchange(&mut sender, started + ctx.timeout, &mut p)
                .await
                .unwrap();
            let wall = started.elapsed();
            assert_eq!(p.connect, None, "QUIC has no separate connect");
            let sum = p.dns.unwrap() + p.tls.unwrap() + p.ttfb + p.transfer;
            assert!(sum <= wall, "{p:?} in {wall:?}");
            gaps.push(wall - sum);
            assert_eq!((p.status, p.body_bytes, p.version), (200, 5000, 3));
            let mut w = Phases::default();
            ctx.exchange(&mut sender, Instant::now() + ctx.timeout, &mut w)
                .await
                .unwrap();
            assert_eq!((w.body_bytes, w.version), (5000, 3));
        }
        gaps.sort();
        assert!(
            gaps[2] < Duration::from_millis(5),
            "time in no phase: {gaps:?}"
        );
        drain(&mut rx);
        http_cold(ctx.clone(), Instant::now()).await;
        http_warm(ctx.clone(), Instant::now()).await;
        http_warm(ctx.clone(), Instant::now()).await;
        let samples = drain(&mut rx);
        assert!(failed(&samples).is_empty(), "{samples:?}");
        assert!(!samples.iter().any(|(m, _)| *m == Metric::HttpConnect));
        assert_eq!(samples.len(), 5 + 6, "{samples:?}");
        // A status the responder gives over HTTP/3 too.
        let mut t = target(
            &format!("https://web.test:{}/nowhere", r.quic_addr().port()),
            Trust::Pinned(vec![r.fingerprint()]),
        );
        t.version = HttpVersion::Http3;
        let (ctx, mut rx) = context(t, Some(dns), Duration::from_secs(5));
        http_cold(ctx, Instant::now()).await;
        let (s, statuses) = drain_all(&mut rx);
        assert_eq!(failed(&s), [(Metric::HttpTotal, ErrorClass::HttpStatus)]);
        assert_eq!(statuses, [(Metric::HttpTotal, 404)]);
        // A pin the server does not match: the QUIC handshake's TLS reason.
        let other = Identity::generate(&["localhost".into()]).unwrap();
        let mut t = target(
            &format!("https://web.test:{}/echo", r.quic_addr().port()),
            Trust::Pinned(vec![other.fingerprint()]),
        );
        t.version = HttpVersion::Http3;
        let (ctx, mut rx) = context(t, Some(dns), Duration::from_secs(5));
        http_cold(ctx, Instant::now()).await;
        let (s, statuses) = drain_all(&mut rx);
        assert_tls_failure(&s, &statuses, Reason::TlsPinMismatch);
        r.shutdown().await;

        // An expired certificate, and one for another name, over QUIC: quinn
        // keeps the alert and rustls' message, and both tell them apart.
        let dir = tempfile::tempdir().unwrap();
        let (expired, expired_ca) = expired_identity(dir.path());
        let named = Identity::load_or_generate(dir.path(), &["localhost".into()]).unwrap();
        let named_ca = dir.path().join("cert.pem");
        // (Not `localhost`: the resolver answers it itself, ::1 first, where
        // nothing listens.)
        for (id, ca, host, reason) in [
            (expired, expired_ca, "expired.test", Reason::TlsExpired),
            (named, named_ca, "web.test", Reason::TlsNameMismatch),
        ] {
            let mut config = ResponderConfig::local().unwrap();
            config.identity = id;
            let server = Responder::start(config).await.unwrap();
            let mut t = target(
                &format!("https://{host}:{}/echo", server.quic_addr().port()),
                Trust::CaFile(ca),
            );
            t.version = HttpVersion::Http3;
            let (dns, _) = dns_server(&["web.test", "expired.test"]).await;
            let (ctx, mut rx) = context(t, Some(dns), Duration::from_secs(5));
            http_cold(ctx, Instant::now()).await;
            let (s, statuses) = drain_all(&mut rx);
            assert_tls_failure(&s, &statuses, reason);
            server.shutdown().await;
        }
    }

    #[tokio::test]
    async fn failures_are_counted_by_class_at_the_phase_that_failed() {
        let r = responder().await;
        let (dns, _) = dns_server(&["web.test", "localhost.test"]).await;
        let port = r.https_addr().port();
        let pin = Trust::Pinned(vec![r.fingerprint()]);
        let run = |url: String, trust: Trust, timeout: Duration| async move {
            let (ctx, mut rx) = context(target(&url, trust), Some(dns), timeout);
            http_cold(ctx, Instant::now()).await;
            drain_all(&mut rx)
        };

        // A name the DNS server does not know.
        let (s, statuses) = run(
            format!("https://nowhere.test:{port}/echo"),
            pin.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            failed(&s),
            [
                (Metric::HttpDns, ErrorClass::Dns),
                (Metric::HttpTotal, ErrorClass::Dns)
            ]
        );
        assert_eq!(s.len(), 2, "nothing after the lookup was attempted: {s:?}");
        assert_eq!(
            reasons(&s),
            [
                (Metric::HttpDns, Reason::DnsNoSuchName),
                (Metric::HttpTotal, Reason::DnsNoSuchName)
            ]
        );
        assert_eq!(statuses, [], "no response, no status");

        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (s, statuses) = run(
            format!("https://web.test:{closed}/"),
            pin.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            failed(&s),
            [
                (Metric::HttpConnect, ErrorClass::Refused),
                (Metric::HttpTotal, ErrorClass::Refused)
            ]
        );
        assert_eq!((reasons(&s), statuses), (vec![], vec![]));
        assert!(s
            .iter()
            .any(|(m, o)| *m == Metric::HttpDns && matches!(o, Outcome::Measured { .. })));

        // A certificate for another name (verified against its CA, not pinned).
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::load_or_generate(dir.path(), &["localhost".into()]).unwrap();
        let named = tls_server(id, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false).await;
        let ca = Trust::CaFile(dir.path().join("cert.pem"));
        let (s, statuses) = run(
            format!("https://web.test:{}/", named.port()),
            ca.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert_tls_failure(&s, &statuses, Reason::TlsNameMismatch);

        // …which passes under its own name, so the CA file itself is fine.
        let (s, statuses) = run(
            format!("https://localhost:{}/", named.port()),
            ca,
            Duration::from_secs(5),
        )
        .await;
        assert!(failed(&s).is_empty(), "{s:?}");
        assert_eq!(statuses, [(Metric::HttpTotal, 200)]);

        // An expired certificate.
        let (id, expired) = expired_identity(dir.path());
        let old = tls_server(id, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false).await;
        let (s, statuses) = run(
            format!("https://localhost:{}/", old.port()),
            Trust::CaFile(expired),
            Duration::from_secs(5),
        )
        .await;
        assert_tls_failure(&s, &statuses, Reason::TlsExpired);

        // A pinned certificate the server does not present.
        let other = Identity::generate(&["localhost".into()]).unwrap();
        let (s, statuses) = run(
            format!("https://web.test:{port}/echo"),
            Trust::Pinned(vec![other.fingerprint()]),
            Duration::from_secs(5),
        )
        .await;
        assert_tls_failure(&s, &statuses, Reason::TlsPinMismatch);

        // A status other than the expected one: the request's phases are
        // timed, the request is counted as failed by its class.
        let (s, statuses) = run(
            format!("https://web.test:{port}/echo?bytes=999999999"),
            pin.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(failed(&s), [(Metric::HttpTotal, ErrorClass::HttpStatus)]);
        assert!(s
            .iter()
            .any(|(m, o)| *m == Metric::HttpTtfb && matches!(o, Outcome::Measured { .. })));
        assert!(
            matches!(statuses[..], [(Metric::HttpTotal, 400..=499)]),
            "{statuses:?}"
        );
        let (s, statuses) = run(
            format!("https://web.test:{port}/no-such-page"),
            pin.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(failed(&s), [(Metric::HttpTotal, ErrorClass::HttpStatus)]);
        assert_eq!(statuses, [(Metric::HttpTotal, 404)]);

        // A server that sends its headers and then stalls: the transfer is
        // lost at the timeout.
        let id = Identity::generate(&["localhost".into()]).unwrap();
        let fp = id.fingerprint();
        let stall = tls_server(
            id,
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial",
            true,
        )
        .await;
        let (s, statuses) = run(
            format!("https://localhost.test:{}/", stall.port()),
            Trust::Pinned(vec![fp]),
            Duration::from_millis(400),
        )
        .await;
        assert_eq!(
            failed(&s),
            [
                (Metric::HttpTransfer, ErrorClass::Timeout),
                (Metric::HttpTotal, ErrorClass::Timeout)
            ]
        );
        assert_eq!(statuses, [(Metric::HttpTotal, 200)], "the head came whole");
        r.shutdown().await;
    }

    /// A self-signed certificate for `localhost` and `expired.test` that
    /// expired in 2021, and
    /// the path of its PEM (the CA file that trusts it).
    fn expired_identity(dir: &std::path::Path) -> (Identity, std::path::PathBuf) {
        let expired = dir.join("expired");
        std::fs::create_dir_all(&expired).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["localhost".to_string(), "expired.test".to_string()];
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(expired.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(expired.join("key.pem"), key.serialize_pem()).unwrap();
        let id =
            Identity::from_pem_files(&expired.join("cert.pem"), &expired.join("key.pem")).unwrap();
        (id, expired.join("cert.pem"))
    }

    /// A TLS server that answers every request with `answer`, then closes
    /// the connection or, with `stall`, holds it open without a word more.
    async fn tls_server(id: Identity, answer: &'static [u8], stall: bool) -> SocketAddr {
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(id.server_config(&[b"http/1.1"]).unwrap()));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(answer).await;
                    let _ = tls.flush().await;
                    if stall {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        addr
    }
}
