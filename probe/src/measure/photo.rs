//! Photo sync: batches of photo uploads and downloads against the
//! responder's sink and source, and `loaded_rtt` on a separate QUIC
//! connection while a batch runs.
//!
//! Per photo, `photosync_upload` runs from the first byte sent until the
//! sink's receipt, `photosync_download` from the request until the last
//! byte checked. Per batch, `photosync_goodput` is the bytes acknowledged
//! (receipted or checked) divided by the time from the batch's intended
//! start until its last photo, so handshakes and a late start count, as
//! they do for a user waiting on a sync.

use super::quic::{classify_connection, connect, timed_echo};
use super::{until, Failure, TargetCtx};
use crate::config::{PhotoSyncConfig, SyncTransport};
use crate::photosync::{plan_batch, Leg, PhotoJob};
use crate::recorder::Outcome;
use crate::schedule::{latency_from, Schedule, Spacing, TIMER_SLACK};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use vantage_wire::photo::{self, PhotoBytes, PhotoCheck, PhotoReply, PhotoRequest, PhotoStatus};
use vantage_wire::{ErrorClass, Metric};

/// Runs a photo-sync batch every `sync.every` from `start` until `stop`.
/// A batch ends by its timeout at the latest, which is at most the
/// interval, so the next batch starts on schedule.
pub(crate) async fn photosync_job(
    ctx: Arc<TargetCtx>,
    sync: PhotoSyncConfig,
    start: Instant,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut k: u32 = 0;
    while !*stop.borrow() {
        let intended = start + sync.every * k;
        tokio::select! {
            _ = tokio::time::sleep_until(intended.into()) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let jobs = plan_batch(&sync, &mut rng);
        ctx.sync_gate.fetch_add(1, Ordering::SeqCst);
        run_batch(&ctx, &sync, jobs, intended, rng.gen()).await;
        // While the gate still holds the other measurements: the trim
        // blocks this thread, and no attempt should wait behind it.
        release_freed_memory();
        ctx.sync_gate.fetch_sub(1, Ordering::SeqCst);
        k += 1;
        // A batch whose start has already passed (only a stalled probe
        // gets here) is counted, never silently skipped.
        let now = Instant::now();
        while start + sync.every * k + TIMER_SLACK < now {
            let missed = start + sync.every * k;
            ctx.emit(
                Metric::PhotosyncGoodput,
                missed,
                Outcome::Failed(ErrorClass::ProbeOverload),
            )
            .await;
            k += 1;
        }
    }
}

/// Hands the memory a batch freed (QUIC and TLS send and receive buffers,
/// megabytes at a time) back to the system. glibc keeps freed heap pages
/// resident for reuse, so without this the probe would sit at its sync
/// peak for the minutes between batches.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own free
    // lists and returns whole free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the photos of a batch achieved together.
#[derive(Default)]
struct BatchTally {
    acked_bytes: AtomicU64,
    failure: Mutex<Option<ErrorClass>>,
    lost: AtomicU64,
}

impl BatchTally {
    fn fail(&self, class: ErrorClass) {
        if class == ErrorClass::Timeout {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(class);
    }
}

async fn run_batch(
    ctx: &Arc<TargetCtx>,
    sync: &PhotoSyncConfig,
    jobs: Vec<PhotoJob>,
    intended: Instant,
    seed: u64,
) {
    let started = Instant::now();
    let deadline = intended + sync.timeout;
    let (done_tx, done_rx) = watch::channel(false);
    let loaded = tokio::spawn(loaded_rtt(
        ctx.clone(),
        sync.loaded_rtt_rate,
        seed,
        done_rx.clone(),
        deadline,
    ));
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    let tally = Arc::new(BatchTally::default());
    let responsiveness = match sync.transport {
        SyncTransport::Quic => match connect(ctx, deadline).await {
            Ok(conn) => {
                let rpm = tokio::spawn(responsiveness(
                    ctx.clone(),
                    Some(conn.clone()),
                    sync.loaded_rtt_rate,
                    seed ^ 0x5eed,
                    done_rx,
                ));
                quic_batch(ctx, sync, conn, &queue, &tally, intended, deadline).await;
                Some(rpm)
            }
            Err(failure) => {
                fail_rest(ctx, &queue, &tally, intended, &failure).await;
                None
            }
        },
        SyncTransport::Https => {
            let rpm = tokio::spawn(responsiveness(
                ctx.clone(),
                None,
                sync.loaded_rtt_rate,
                seed ^ 0x5eed,
                done_rx,
            ));
            https_batch(ctx, sync, &queue, &tally, intended, deadline).await;
            Some(rpm)
        }
    };
    let finished = Instant::now();
    let _ = done_tx.send(true);
    let _ = loaded.await;
    if let Some(Ok(Some(rpm))) = match responsiveness {
        Some(task) => Some(task.await),
        None => None,
    } {
        ctx.emit(
            Metric::ResponsivenessRpm,
            intended,
            Outcome::Value {
                value: rpm.round() as u64,
                bytes: 0,
            },
        )
        .await;
    }
    let bytes = tally.acked_bytes.load(Ordering::Relaxed);
    let failure = *tally.failure.lock().unwrap_or_else(|p| p.into_inner());
    let outcome = match failure {
        None => {
            let elapsed = latency_from(intended, started, finished, TIMER_SLACK);
            let kbit_per_s =
                (bytes as f64 * 8.0 / elapsed.as_secs_f64().max(1e-6) / 1000.0).round();
            Outcome::Value {
                value: kbit_per_s as u64,
                bytes,
            }
        }
        // A batch with a photo still in flight at the deadline is lost,
        // whatever else failed first.
        Some(_) if tally.lost.load(Ordering::Relaxed) > 0 => Outcome::Incomplete {
            class: ErrorClass::Timeout,
            bytes,
        },
        Some(class) => Outcome::Incomplete { class, bytes },
    };
    ctx.emit(Metric::PhotosyncGoodput, intended, outcome).await;
}

fn metric_of(leg: Leg) -> Metric {
    match leg {
        Leg::Upload => Metric::PhotosyncUpload,
        Leg::Download => Metric::PhotosyncDownload,
    }
}

fn next_job(queue: &Mutex<VecDeque<PhotoJob>>) -> Option<PhotoJob> {
    queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
}

/// Records one photo's result and adds it to the batch's tally.
async fn settle(
    ctx: &TargetCtx,
    tally: &BatchTally,
    job: PhotoJob,
    intended: Instant,
    result: Result<(Duration, u64), Failure>,
) {
    let metric = metric_of(job.leg);
    match result {
        Ok((latency, bytes)) => {
            tally.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
            ctx.emit(
                metric,
                intended,
                Outcome::Measured {
                    latency,
                    server_time: None,
                    bytes,
                },
            )
            .await;
        }
        Err((class, why)) => {
            tally.fail(class);
            ctx.emit_error(metric, intended, class, &why).await;
        }
    }
}

/// Fails every photo left in the queue with `failure` (no connection could
/// carry them): an app's sync would fail them too.
async fn fail_rest(
    ctx: &TargetCtx,
    queue: &Mutex<VecDeque<PhotoJob>>,
    tally: &BatchTally,
    intended: Instant,
    failure: &Failure,
) {
    while let Some(job) = next_job(queue) {
        settle(ctx, tally, job, intended, Err(failure.clone())).await;
    }
}

async fn quic_batch(
    ctx: &Arc<TargetCtx>,
    sync: &PhotoSyncConfig,
    conn: quinn::Connection,
    queue: &Arc<Mutex<VecDeque<PhotoJob>>>,
    tally: &Arc<BatchTally>,
    intended: Instant,
    deadline: Instant,
) {
    let mut workers = JoinSet::new();
    for _ in 0..sync.concurrency {
        let (ctx, conn, queue, tally) = (ctx.clone(), conn.clone(), queue.clone(), tally.clone());
        workers.spawn(async move {
            let mut buf = vec![0u8; photo::CHUNK];
            while let Some(job) = next_job(&queue) {
                let attempt = async {
                    match job.leg {
                        Leg::Upload => quic_upload(&ctx, &conn, job, &mut buf).await,
                        Leg::Download => quic_download(&ctx, &conn, job, &mut buf).await,
                    }
                };
                let result = match tokio::time::timeout(until(deadline), attempt).await {
                    Ok(r) => r,
                    Err(_) => Err((ErrorClass::Timeout, "sync batch timed out".into())),
                };
                let timed_out = matches!(result, Err((ErrorClass::Timeout, _)));
                settle(&ctx, &tally, job, intended, result).await;
                if timed_out || Instant::now() >= deadline {
                    break;
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    conn.close(0u32.into(), b"sync done");
    // Photos the batch never got to are lost too: they missed the sync.
    let failure = (ErrorClass::Timeout, "sync batch timed out".to_string());
    fail_rest(ctx, queue, tally, intended, &failure).await;
}

fn write_failure(e: quinn::WriteError) -> Failure {
    match e {
        quinn::WriteError::ConnectionLost(c) => (classify_connection(&c), c.to_string()),
        other => (ErrorClass::Reset, format!("photo stream: {other}")),
    }
}

fn read_failure(e: quinn::ReadError) -> Failure {
    match e {
        quinn::ReadError::ConnectionLost(c) => (classify_connection(&c), c.to_string()),
        other => (ErrorClass::Reset, format!("photo stream: {other}")),
    }
}

fn reply_failure(r: &PhotoReply, size: u64) -> Option<Failure> {
    let why = |class, what: &str| Some((class, format!("{what} ({} of {size} bytes)", r.bytes)));
    match r.status {
        PhotoStatus::Ok => None,
        PhotoStatus::Integrity => why(ErrorClass::Integrity, "sink: checksum mismatch"),
        PhotoStatus::Truncated => why(ErrorClass::Integrity, "sink: photo truncated"),
        PhotoStatus::Busy => why(ErrorClass::ServerError, "sink: busy"),
        PhotoStatus::TooLarge => why(ErrorClass::ServerError, "sink: photo above its limit"),
        PhotoStatus::BadRequest => why(ErrorClass::Protocol, "sink: bad request"),
        PhotoStatus::Forbidden => why(ErrorClass::ServerError, "sink: access token refused"),
    }
}

async fn read_reply(recv: &mut quinn::RecvStream) -> Result<PhotoReply, Failure> {
    let mut head = [0u8; photo::REPLY_LEN];
    recv.read_exact(&mut head).await.map_err(|e| match e {
        quinn::ReadExactError::ReadError(r) => read_failure(r),
        quinn::ReadExactError::FinishedEarly(n) => (
            ErrorClass::Protocol,
            format!("photo reply ended after {n} bytes"),
        ),
    })?;
    PhotoReply::decode(&head).map_err(|e| (ErrorClass::Protocol, e.to_string()))
}

/// A photo request's header, after the access preamble when the probe
/// has a token: one write, so the token costs no extra packet.
fn with_access(ctx: &TargetCtx, header: &PhotoRequest) -> Vec<u8> {
    let mut head = ctx.access_preamble(true).to_vec();
    head.extend_from_slice(&header.encode());
    head
}

async fn quic_upload(
    ctx: &TargetCtx,
    conn: &quinn::Connection,
    job: PhotoJob,
    buf: &mut [u8],
) -> Result<(Duration, u64), Failure> {
    let source = PhotoBytes::new(job.seed);
    let crc32 = source.crc32(job.size);
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| (classify_connection(&e), e.to_string()))?;
    let started = Instant::now();
    let header = PhotoRequest::Upload {
        size: job.size,
        crc32,
    };
    send.write_all(&with_access(ctx, &header))
        .await
        .map_err(write_failure)?;
    let mut offset = 0u64;
    while offset < job.size {
        let n = ((job.size - offset) as usize).min(buf.len());
        source.fill(offset, &mut buf[..n]);
        send.write_all(&buf[..n]).await.map_err(write_failure)?;
        offset += n as u64;
    }
    let _ = send.finish();
    let reply = read_reply(&mut recv).await?;
    if reply.status == PhotoStatus::Forbidden {
        ctx.report_access_refused("photos");
    }
    if let Some(f) = reply_failure(&reply, job.size) {
        return Err(f);
    }
    if reply.bytes != job.size || reply.crc32 != crc32 {
        return Err((
            ErrorClass::Integrity,
            format!(
                "receipt for {} bytes with CRC {:08x}, sent {} with {crc32:08x}",
                reply.bytes, reply.crc32, job.size
            ),
        ));
    }
    Ok((started.elapsed(), job.size))
}

async fn quic_download(
    ctx: &TargetCtx,
    conn: &quinn::Connection,
    job: PhotoJob,
    buf: &mut [u8],
) -> Result<(Duration, u64), Failure> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| (classify_connection(&e), e.to_string()))?;
    let started = Instant::now();
    let header = PhotoRequest::Download {
        size: job.size,
        seed: job.seed,
    };
    send.write_all(&with_access(ctx, &header))
        .await
        .map_err(write_failure)?;
    let _ = send.finish();
    let reply = read_reply(&mut recv).await?;
    if reply.status == PhotoStatus::Forbidden {
        ctx.report_access_refused("photos");
    }
    if let Some(f) = reply_failure(&reply, job.size) {
        return Err(f);
    }
    let mut check = PhotoCheck::new(job.seed);
    while let Some(n) = recv.read(buf).await.map_err(read_failure)? {
        check.update(&buf[..n]);
        if check.received() > job.size {
            break;
        }
    }
    verify(&check, job.size)?;
    Ok((started.elapsed(), job.size))
}

fn verify(check: &PhotoCheck, size: u64) -> Result<(), Failure> {
    if let Some(at) = check.first_mismatch() {
        return Err((
            ErrorClass::Integrity,
            format!("photo byte {at} differs from what the seed gives"),
        ));
    }
    if check.received() != size {
        return Err((
            ErrorClass::Integrity,
            format!("photo of {} bytes, expected {size}", check.received()),
        ));
    }
    Ok(())
}

/// An upload's body: the photo generated a chunk at a time (empty for a GET).
struct PhotoBody {
    source: PhotoBytes,
    offset: u64,
    size: u64,
}

impl Body for PhotoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.offset >= this.size {
            return Poll::Ready(None);
        }
        let n = ((this.size - this.offset) as usize).min(photo::CHUNK);
        let mut buf = vec![0u8; n];
        this.source.fill(this.offset, &mut buf);
        this.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.size
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size - self.offset)
    }
}

async fn https_sender(
    ctx: &TargetCtx,
    deadline: Instant,
) -> Result<SendRequest<PhotoBody>, Failure> {
    let stream = super::https::tcp(ctx, deadline).await?;
    let stream = super::https::tls(ctx, stream, deadline).await?;
    let (sender, conn) = match tokio::time::timeout(
        until(deadline),
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    {
        Err(_) => return Err((ErrorClass::Timeout, "HTTP handshake timed out".into())),
        Ok(Err(e)) => return Err((super::https::classify_hyper(&e), e.to_string())),
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "photo HTTPS connection ended");
        }
    });
    Ok(sender)
}

async fn https_batch(
    ctx: &Arc<TargetCtx>,
    sync: &PhotoSyncConfig,
    queue: &Arc<Mutex<VecDeque<PhotoJob>>>,
    tally: &Arc<BatchTally>,
    intended: Instant,
    deadline: Instant,
) {
    let last_connect_failure: Arc<Mutex<Option<Failure>>> = Arc::new(Mutex::new(None));
    let mut workers = JoinSet::new();
    for _ in 0..sync.concurrency {
        let (ctx, queue, tally, last) = (
            ctx.clone(),
            queue.clone(),
            tally.clone(),
            last_connect_failure.clone(),
        );
        workers.spawn(async move {
            let mut sender = match https_sender(&ctx, deadline).await {
                Ok(s) => s,
                Err(f) => {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
                    return;
                }
            };
            while let Some(job) = next_job(&queue) {
                let attempt = https_photo(&ctx, &mut sender, job);
                let result = match tokio::time::timeout(until(deadline), attempt).await {
                    Ok(r) => r,
                    Err(_) => Err((ErrorClass::Timeout, "sync batch timed out".into())),
                };
                let broken = result.is_err();
                let timed_out = matches!(result, Err((ErrorClass::Timeout, _)));
                settle(&ctx, &tally, job, intended, result).await;
                if timed_out || Instant::now() >= deadline {
                    break;
                }
                // HTTP/1.1 after an error: the connection may be unusable,
                // so a new one carries the next photo, as an app would.
                if broken || sender.ready().await.is_err() {
                    match https_sender(&ctx, deadline).await {
                        Ok(s) => sender = s,
                        Err(f) => {
                            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
                            return;
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let last = last_connect_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(failure) = last {
        fail_rest(ctx, queue, tally, intended, &failure).await;
    } else if Instant::now() >= deadline {
        let failure = (ErrorClass::Timeout, "sync batch timed out".to_string());
        fail_rest(ctx, queue, tally, intended, &failure).await;
    }
}

async fn https_photo(
    ctx: &TargetCtx,
    sender: &mut SendRequest<PhotoBody>,
    job: PhotoJob,
) -> Result<(Duration, u64), Failure> {
    let source = PhotoBytes::new(job.seed);
    let request = match job.leg {
        Leg::Upload => {
            let crc32 = source.crc32(job.size);
            hyper::Request::put("/photo")
                .header(hyper::header::HOST, ctx.server_name.as_str())
                .header("x-photo-crc32", format!("{crc32:08x}"))
                .body(PhotoBody {
                    source,
                    offset: 0,
                    size: job.size,
                })
                .map(|r| (r, Some(crc32)))
        }
        Leg::Download => hyper::Request::get(format!("/photo?size={}&seed={}", job.size, job.seed))
            .header(hyper::header::HOST, ctx.server_name.as_str())
            .body(PhotoBody {
                source,
                offset: 0,
                size: 0,
            })
            .map(|r| (r, None)),
    };
    let (mut request, crc32) = request.map_err(|e| (ErrorClass::Protocol, e.to_string()))?;
    if let Some(token) = ctx.access_header() {
        request
            .headers_mut()
            .insert(hyper::header::AUTHORIZATION, token.clone());
    }
    let started = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| (super::https::classify_hyper(&e), e.to_string()))?;
    let status = response.status();
    if matches!(status.as_u16(), 401 | 403) {
        ctx.report_access_refused("photos");
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let receipt_bytes = header("x-photo-bytes").and_then(|v| v.parse::<u64>().ok());
    let receipt_crc = header("x-photo-crc32").and_then(|v| u32::from_str_radix(&v, 16).ok());
    let mut body = response.into_body();
    let mut check = PhotoCheck::new(job.seed);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            let class = if e.is_incomplete_message() {
                ErrorClass::Integrity
            } else {
                super::https::classify_hyper(&e)
            };
            (
                class,
                format!("photo body after {} bytes: {e}", check.received()),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            // Anything else (a receipt, an error text) is read and dropped.
            if status.is_success() && job.leg == Leg::Download {
                check.update(data);
            }
        }
    }
    if !status.is_success() {
        let class = match status.as_u16() {
            422 | 400 => ErrorClass::Integrity,
            500..=599 => ErrorClass::ServerError,
            _ => ErrorClass::HttpStatus,
        };
        return Err((class, format!("HTTP status {status}")));
    }
    match job.leg {
        Leg::Upload => {
            if receipt_bytes != Some(job.size) || receipt_crc != crc32 {
                return Err((
                    ErrorClass::Integrity,
                    format!(
                        "receipt for {receipt_bytes:?} bytes with CRC {receipt_crc:?}, sent {} with {crc32:?}",
                        job.size
                    ),
                ));
            }
        }
        Leg::Download => verify(&check, job.size)?,
    }
    Ok((started.elapsed(), job.size))
}

/// Calls `start` at every intended time of a Poisson schedule at `rate`
/// from now until `done` (open loop: each attempt is its own task in the
/// set) and returns the attempts still in flight.
async fn open_loop_until(
    rate: f64,
    seed: u64,
    done: &mut watch::Receiver<bool>,
    mut start: impl FnMut(Instant, &mut JoinSet<()>),
) -> JoinSet<()> {
    let mut schedule = Schedule::new(
        Spacing::Poisson { rate_per_sec: rate },
        Instant::now(),
        seed,
    );
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(schedule.next_due().into()) => {}
            _ = done.changed() => break,
        }
        let now = Instant::now();
        while let Some(intended) = schedule.poll_due(now) {
            start(intended, &mut in_flight);
        }
    }
    in_flight
}

/// `quic_request` on its own connection, open-loop at `rate` per second,
/// from the batch's start until `done`: latency under the sync's load.
async fn loaded_rtt(
    ctx: Arc<TargetCtx>,
    rate: f64,
    seed: u64,
    mut done: watch::Receiver<bool>,
    deadline: Instant,
) {
    const M: Metric = Metric::LoadedRtt;
    let start = Instant::now();
    let conn = match connect(&ctx, deadline).await {
        Ok(c) => c,
        Err((class, why)) => return ctx.emit_error(M, start, class, &why).await,
    };
    let mut in_flight = open_loop_until(rate, seed, &mut done, |intended, in_flight| {
        let (ctx, conn) = (ctx.clone(), conn.clone());
        in_flight.spawn(async move {
            let deadline = intended + ctx.timeout;
            timed_echo(
                &ctx,
                &conn,
                M,
                (intended, intended),
                Instant::now(),
                deadline,
            )
            .await;
        });
    })
    .await;
    while in_flight.join_next().await.is_some() {}
    conn.close(0u32.into(), b"sync done");
}

/// Trimmed mean of the lowest 95 % (the draft's "95th percentile trimmed
/// mean"), in ms.
pub(crate) fn trimmed_mean_ms(samples: &mut [Duration]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let keep = ((samples.len() as f64 * 0.95).ceil() as usize).clamp(1, samples.len());
    let sum: f64 = samples[..keep].iter().map(|d| d.as_secs_f64() * 1e3).sum();
    Some(sum / keep as f64)
}

/// Responsiveness by draft-ietf-ippm-responsiveness while the batch loads
/// the path: foreign probes (a new TCP connection, its TLS handshake and a
/// small HTTP GET, each timed) and, over QUIC, self probes (an echo on the
/// batch's own loaded connection). RPM = 60 000 / (½ · TM(foreign) + ½ ·
/// TM(self)), where TM(foreign) is the mean of the three components'
/// trimmed means; without self probes (HTTPS batches, whose HTTP/1.1
/// connections cannot carry a second request mid-photo) the foreign part
/// alone. `None` when no foreign probe finished before the batch did.
async fn responsiveness(
    ctx: Arc<TargetCtx>,
    loaded: Option<quinn::Connection>,
    rate: f64,
    seed: u64,
    mut done: watch::Receiver<bool>,
) -> Option<f64> {
    type Samples = Arc<Mutex<Vec<Duration>>>;
    let (tcp_f, tls_f, http_f, self_s): (Samples, Samples, Samples, Samples) = Default::default();
    let mut in_flight = open_loop_until(rate, seed, &mut done, |intended, in_flight| {
        let deadline = intended + ctx.timeout;
        let (ctx2, tcp_f, tls_f, http_f) =
            (ctx.clone(), tcp_f.clone(), tls_f.clone(), http_f.clone());
        in_flight.spawn(async move {
            if let Some((tcp, tls, http)) = foreign_probe(&ctx2, deadline).await {
                let push = |v: &Samples, d| v.lock().unwrap_or_else(|p| p.into_inner()).push(d);
                push(&tcp_f, tcp);
                push(&tls_f, tls);
                push(&http_f, http);
            }
        });
        if let Some(conn) = loaded.clone() {
            let (ctx2, self_s) = (ctx.clone(), self_s.clone());
            in_flight.spawn(async move {
                let started = Instant::now();
                if super::quic::echo(&ctx2, &conn, deadline).await.is_ok() {
                    self_s
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(started.elapsed());
                }
            });
        }
    })
    .await;
    // Probes still running when the load ended no longer measure it.
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
    let take = |v: &Samples| std::mem::take(&mut *v.lock().unwrap_or_else(|p| p.into_inner()));
    let foreign = [
        trimmed_mean_ms(&mut take(&tcp_f))?,
        trimmed_mean_ms(&mut take(&tls_f))?,
        trimmed_mean_ms(&mut take(&http_f))?,
    ];
    let foreign = foreign.iter().sum::<f64>() / 3.0;
    let rtt = match trimmed_mean_ms(&mut take(&self_s)) {
        Some(own) => 0.5 * foreign + 0.5 * own,
        None => foreign,
    };
    (rtt > 0.0).then(|| 60_000.0 / rtt)
}

/// One foreign probe: (TCP connect, TLS handshake, GET /nq/small) times.
async fn foreign_probe(
    ctx: &TargetCtx,
    deadline: Instant,
) -> Option<(Duration, Duration, Duration)> {
    let t0 = Instant::now();
    let tcp = super::https::tcp(ctx, deadline).await.ok()?;
    let t1 = Instant::now();
    let tls = super::https::tls(ctx, tcp, deadline).await.ok()?;
    let t2 = Instant::now();
    let (mut sender, conn) = tokio::time::timeout(
        until(deadline),
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(tls)),
    )
    .await
    .ok()?
    .ok()?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get("/nq/small")
        .header(hyper::header::HOST, ctx.server_name.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .ok()?;
    let t3 = Instant::now();
    let exchange = async {
        let response = sender.send_request(request).await.ok()?;
        let ok = response.status().is_success();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.ok()?;
        }
        ok.then_some(())
    };
    let answered = tokio::time::timeout(until(deadline), exchange)
        .await
        .ok()
        .flatten();
    let http = t3.elapsed();
    driver.abort();
    answered.map(|()| (t1 - t0, t2 - t1, http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_mean_drops_the_top_five_percent() {
        let mut v: Vec<Duration> = (1..=19).map(|_| Duration::from_millis(10)).collect();
        v.push(Duration::from_secs(10));
        assert_eq!(
            trimmed_mean_ms(&mut v),
            Some(10.0),
            "the one outlier of 20 is trimmed"
        );
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(trimmed_mean_ms(&mut one), Some(7.0));
        assert_eq!(trimmed_mean_ms(&mut []), None);
    }
}
