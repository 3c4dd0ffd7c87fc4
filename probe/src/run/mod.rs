//! The driver: starts a measurement task per (target, measurement), feeds
//! their events to the recorder, closes windows into batches and writes
//! them out. The only place that reads the clock to decide when to act.

pub(crate) mod upload_loop;

use crate::config::{Display, Measurement, ProbeConfig, TargetConfig};
use crate::measure::{self, Event, TargetCtx};
use crate::output::{render_json_line, render_table, LocalOutput, OutputError, SeriesRow};
use crate::recorder::{Recorder, WallAnchor};
use crate::schedule::Schedule;
use crate::state::{ProbeState, StateError};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use vantage_responder::{Responder, ResponderConfig, ResponderError};
use vantage_tls::Fingerprint;
use vantage_tls::{TlsClient, Trust, TrustError};
use vantage_wire::echo::{self, EchoRequest};
use vantage_wire::{Batch, Metric, Series, Target};

/// Why a probe run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] StateError),
    /// Local output failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The in-process responder of `--local` did not start.
    #[error("local responder: {0}")]
    Responder(#[from] ResponderError),
    /// A target's host name does not resolve.
    #[error("target `{target}`: cannot resolve `{host}`: {reason}")]
    Resolve {
        /// Target name.
        target: String,
        /// Host.
        host: String,
        /// Resolver error.
        reason: String,
    },
    /// TLS configuration failed.
    #[error("target `{target}`: {source}")]
    Trust {
        /// Target name.
        target: String,
        /// Cause.
        source: TrustError,
    },
    /// The QUIC client could not be set up.
    #[error("target `{target}`: QUIC client: {reason}")]
    Quic {
        /// Target name.
        target: String,
        /// Cause.
        reason: String,
    },
    /// The responder's certificate is not the pinned one.
    #[error("target `{target}`: certificate pin mismatch: the server at {address} presented {presented}, but --pin expects {expected}. Check the fingerprint that `vantage serve` printed, or that the address is right")]
    PinMismatch {
        /// Target name.
        target: String,
        /// Address.
        address: SocketAddr,
        /// What the server presented.
        presented: Fingerprint,
        /// What was pinned.
        expected: String,
    },
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// Standard output was closed (`| head`): not an error for the user.
    #[error("standard output closed")]
    BrokenPipe,
    /// Standard output failed otherwise.
    #[error("writing to standard output: {0}")]
    Stdout(std::io::Error),
}

/// What a finished run did.
#[derive(Debug)]
pub struct RunSummary {
    /// The probe id used.
    pub probe_id: String,
    /// Batches written.
    pub batches: u64,
    /// Every (target, metric) merged over the run.
    pub totals: Vec<Series>,
    /// `series.csv`, if written.
    pub csv: Option<PathBuf>,
    /// What the uploader did, when a collector was configured.
    pub upload: Option<crate::upload::UploadStats>,
}

struct ResolvedTarget {
    config: TargetConfig,
    quic: SocketAddr,
    https: SocketAddr,
    stamp: SocketAddr,
}

async fn resolve(t: &TargetConfig, port: u16) -> Result<SocketAddr, RunError> {
    let err = |reason: String| RunError::Resolve {
        target: t.name.clone(),
        host: t.host.clone(),
        reason,
    };
    tokio::net::lookup_host((t.host.as_str(), port))
        .await
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

/// Checks each pinned target's certificate once before measuring, so a
/// wrong `--pin` stops the run with a clear message instead of filling
/// every series with TLS errors. An unreachable target only warns: it is
/// measured (and its failures counted) like any other.
async fn preflight(t: &ResolvedTarget, tls: &TlsClient) -> Result<(), RunError> {
    let Trust::Pinned(pins) = &t.config.trust else {
        return Ok(());
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(t.https).await?;
        let name = rustls::pki_types::ServerName::try_from(t.config.server_name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await?;
        Ok::<_, std::io::Error>(())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), attempt).await;
    if let Some(presented) = tls.pin_mismatch() {
        return Err(RunError::PinMismatch {
            target: t.config.name.clone(),
            address: t.https,
            presented,
            expected: pins
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
        });
    }
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(target = %t.config.name, address = %t.https, error = %e, "target not reachable yet; measuring anyway, failures are counted")
        }
        Err(_) => {
            tracing::warn!(target = %t.config.name, address = %t.https, "target did not answer within 5 s; measuring anyway, failures are counted")
        }
    }
    Ok(())
}

struct Terminal {
    display: Display,
    live: bool,
    drawn_lines: usize,
}

impl Terminal {
    fn write(&mut self, text: &str) -> Result<(), RunError> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    RunError::BrokenPipe
                } else {
                    RunError::Stdout(e)
                }
            })
    }

    fn draw_live(&mut self, table: &str) -> Result<(), RunError> {
        let mut text = String::new();
        if self.drawn_lines > 0 {
            // Move up over the previous table and clear to the end of the screen.
            text.push_str(&format!("\x1b[{}A\x1b[J", self.drawn_lines));
        }
        text.push_str(table);
        self.drawn_lines = table.lines().count();
        self.write(&text)
    }
}

/// Runs the probe until `stop` turns true or the configured duration ends,
/// then closes the last window, writes it, and returns what was measured.
pub async fn run(
    config: ProbeConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<RunSummary, RunError> {
    let mut state = ProbeState::open(&config.state_dir, config.probe_id.as_deref())?;
    let mut labels = config.labels.clone();
    let mut local_responder = None;
    let mut targets_cfg = config.targets.clone();
    let mut resolved = Vec::new();
    if config.local {
        let responder =
            Responder::start(ResponderConfig::local().map_err(ResponderError::from)?).await?;
        resolved.push(ResolvedTarget {
            config: TargetConfig {
                name: "local".into(),
                host: "127.0.0.1".into(),
                port: responder.quic_addr().port(),
                stamp_port: responder.stamp_addr().port(),
                server_name: "localhost".into(),
                trust: Trust::Pinned(vec![responder.fingerprint()]),
            },
            quic: responder.quic_addr(),
            https: responder.https_addr(),
            stamp: responder.stamp_addr(),
        });
        local_responder = Some(responder);
    }
    for t in targets_cfg.drain(..) {
        let quic = resolve(&t, t.port).await?;
        let stamp = SocketAddr::new(quic.ip(), t.stamp_port);
        resolved.push(ResolvedTarget {
            https: quic,
            quic,
            stamp,
            config: t,
        });
    }
    let insecure = resolved.iter().any(|t| t.config.trust == Trust::Insecure);
    if insecure {
        // Carried in every batch, so no report can lose the fact.
        let _ = labels.insert("tls", "insecure");
    }

    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    let sync_gate = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut contexts = Vec::new();
    for (index, t) in resolved.iter().enumerate() {
        let trust_err = |source| RunError::Trust {
            target: t.config.name.clone(),
            source,
        };
        let https_tls = TlsClient::new(&t.config.trust, &[b"http/1.1"]).map_err(trust_err)?;
        let quic_tls = TlsClient::new(&t.config.trust, &[echo::ALPN]).map_err(trust_err)?;
        preflight(t, &https_tls).await?;
        let endpoint =
            measure::quic_client_endpoint(&quic_tls, t.quic).map_err(|reason| RunError::Quic {
                target: t.config.name.clone(),
                reason,
            })?;
        contexts.push(Arc::new(TargetCtx {
            index,
            quic_addr: t.quic,
            https_addr: t.https,
            stamp_addr: t.stamp,
            server_name: t.config.server_name.clone(),
            https_tls,
            endpoint,
            timeout: config.timeout,
            request: EchoRequest {
                response_len: config.response_bytes,
                padding_len: config.request_bytes,
            },
            events: events_tx.clone(),
            warm_quic: tokio::sync::Mutex::new(None),
            https_pool: Mutex::new(Vec::new()),
            sync_gate: sync_gate.clone(),
        }));
    }
    let mut http_contexts = Vec::new();
    for (i, u) in config.urls.iter().enumerate() {
        let tls = TlsClient::for_web(&u.trust, measure::alpn_for(u.version)).map_err(|source| {
            RunError::Trust {
                target: u.name.clone(),
                source,
            }
        })?;
        let resolver = if u.host.parse::<std::net::IpAddr>().is_ok() {
            None
        } else {
            Some(
                measure::resolver(config.dns_server, config.timeout).map_err(|reason| {
                    RunError::Resolve {
                        target: u.name.clone(),
                        host: u.host.clone(),
                        reason,
                    }
                })?,
            )
        };
        http_contexts.push(Arc::new(measure::HttpCtx {
            index: resolved.len() + i,
            target: u.clone(),
            resolver,
            tls,
            timeout: config.timeout,
            events: events_tx.clone(),
            sync_gate: sync_gate.clone(),
            warm: Mutex::new(Vec::new()),
            resolved: Mutex::new(None),
            quic: Mutex::new([None, None]),
            alt_svc_h3: Default::default(),
        }));
    }
    drop(events_tx);

    let targets: Vec<Target> = resolved
        .iter()
        .map(|t| Target {
            name: t.config.name.clone(),
            address: format!("{}:{}", t.config.host, t.config.port),
        })
        .chain(config.urls.iter().map(|u| Target {
            name: u.name.clone(),
            address: u.url.clone(),
        }))
        .collect();
    let start = Instant::now();
    // Both clocks read once, together: windows are labelled from here on.
    let anchor = WallAnchor::new(
        start,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let grace = config.timeout + Duration::from_millis(500);
    let mut recorder = Recorder::new(anchor, start, config.window, grace, targets);
    let (jobs_stop, jobs_stop_rx) = watch::channel(false);
    let mut jobs = JoinSet::new();
    // Without --seed, a seed from the clock: each run draws its own times.
    let mut seed = config.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    for ctx in &http_contexts {
        for (&measurement, &spacing) in &config.schedules {
            let schedule = Schedule::new(spacing, start, next_seed(&mut seed));
            let (ctx, stop) = (ctx.clone(), jobs_stop_rx.clone());
            match measurement {
                Measurement::HttpCold => {
                    const M: &[Metric] = crate::config::HTTP_METRICS.split_at(6).0;
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::http_cold,
                    ));
                }
                Measurement::HttpWarm => {
                    const M: &[Metric] = crate::config::HTTP_METRICS.split_at(6).1;
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::http_warm,
                    ));
                }
                _ => {}
            }
        }
    }
    drop(http_contexts);
    for ctx in &contexts {
        for (&measurement, &spacing) in &config.schedules {
            let schedule = Schedule::new(spacing, start, next_seed(&mut seed));
            let (ctx, stop) = (ctx.clone(), jobs_stop_rx.clone());
            match measurement {
                Measurement::UdpRtt => {
                    jobs.spawn(measure::udp_rtt_job(ctx, schedule, stop));
                }
                Measurement::QuicCold => {
                    const M: &[Metric] = &[Metric::QuicHandshake, Metric::QuicColdRequest];
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::quic_cold,
                    ));
                }
                Measurement::QuicRequest => {
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        &[Metric::QuicRequest],
                        measure::quic_warm,
                    ));
                }
                Measurement::TcpCold => {
                    const M: &[Metric] = &[Metric::TcpConnect, Metric::TlsHandshake];
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::tcp_cold,
                    ));
                }
                Measurement::HttpsRequest => {
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        &[Metric::HttpsRequest],
                        measure::https_request,
                    ));
                }
                Measurement::HttpCold | Measurement::HttpWarm => {}
                Measurement::PhotoSync => {
                    // Targets take turns: each one's batches are offset by
                    // its share of the interval, so two syncs never overlap
                    // while both fit in their share.
                    let offset =
                        config.sync.every / contexts.len().max(1) as u32 * ctx.index as u32;
                    jobs.spawn(measure::photosync_job(
                        ctx,
                        config.sync.clone(),
                        start + offset,
                        seed,
                        stop,
                    ));
                }
            }
        }
    }
    let endpoints: Vec<quinn::Endpoint> = contexts.iter().map(|c| c.endpoint.clone()).collect();
    drop(contexts);

    let mut output = config
        .out
        .as_deref()
        .map(|dir| LocalOutput::open(dir, std::time::SystemTime::now()))
        .transpose()?;
    let (uploader_stop, uploader_stop_rx) = watch::channel(false);
    let notify = Arc::new(tokio::sync::Notify::new());
    let (spool, uploader) = match &config.upload {
        Some(u) => {
            let spool = Arc::new(Mutex::new(crate::spool::Spool::open(
                &u.spool_dir,
                u.spool_max_bytes,
            )?));
            let uploader = crate::upload::Uploader::new(u.target.clone()).map_err(|source| {
                RunError::Trust {
                    target: "collector".into(),
                    source,
                }
            })?;
            let task = tokio::spawn(crate::upload::run_uploader(
                uploader,
                spool.clone(),
                notify.clone(),
                uploader_stop_rx,
                Duration::from_secs(5),
                Duration::from_secs(1),
            ));
            (Some(spool), Some(task))
        }
        None => (None, None),
    };
    let live = config.display == Display::Table && std::io::stdout().is_terminal();
    let mut terminal = Terminal {
        display: config.display,
        live,
        drawn_lines: 0,
    };
    let note = insecure.then_some("INSECURE: certificates were not verified (--insecure)");
    let wanted: Vec<Metric> = config.metrics.clone();
    let keep = |s: &Series| wanted.contains(&s.metric);
    let mut batches = 0u64;
    let end = config.duration.map(|d| start + d);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_draw = Instant::now();

    let write_out = |series: Vec<Series>,
                     state: &mut ProbeState,
                     terminal: &mut Terminal,
                     output: &mut Option<LocalOutput>|
     -> Result<u64, RunError> {
        let series: Vec<Series> = series.into_iter().filter(keep).collect();
        if series.is_empty() {
            return Ok(0);
        }
        let reported = spool
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.pending_drops()))
            .unwrap_or(0);
        let batch = Batch {
            probe_id: state.probe_id().to_string(),
            sequence: state.take_sequence()?,
            campaign: config.campaign.clone(),
            labels: labels.clone(),
            created_unix_ms: anchor.unix_ms(Instant::now()),
            dropped_batches: reported,
            series,
        };
        if let Some(spool) = &spool {
            match batch.encode() {
                Ok(bytes) => {
                    let pushed = spool
                        .lock()
                        .map_err(|_| "spool lock poisoned".to_string())
                        .and_then(|mut s| {
                            s.push(batch.sequence, &bytes, reported)
                                .map_err(|e| e.to_string())
                        });
                    match pushed {
                        Ok(_) => notify.notify_one(),
                        // Keep measuring: local output still has the batch.
                        Err(e) => {
                            tracing::error!(sequence = batch.sequence, error = %e, "batch not spooled for the collector")
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "batch could not be encoded"),
            }
        }
        if let Some(out) = output.as_mut() {
            out.write_batch(&batch)?;
        }
        if terminal.display == Display::Json {
            let text: String = batch
                .series
                .iter()
                .map(|s| render_json_line(&SeriesRow::new(&batch, s)))
                .collect::<Result<_, _>>()
                .map_err(OutputError::from)?;
            terminal.write(&text)?;
        }
        Ok(1)
    };

    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => apply(&mut recorder, event),
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let closed = recorder.poll_closed(now);
                batches += write_out(closed, &mut state, &mut terminal, &mut output)?;
                if terminal.live && now.duration_since(last_draw) >= Duration::from_secs(1) {
                    last_draw = now;
                    let table = render_table(recorder.totals().filter(|s| keep(s)), note);
                    terminal.draw_live(&table)?;
                }
                if end.is_some_and(|e| now >= e) {
                    let _ = jobs_stop.send(true);
                }
            }
            _ = stop.changed() => {
                let _ = jobs_stop.send(true);
            }
        }
        if *jobs_stop.borrow() && jobs.is_empty() {
            break;
        }
        while let Some(done) = jobs.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a measurement task failed");
            }
        }
    }
    // Every job has ended, so every attempt has its outcome: drain the rest.
    while let Ok(event) = events.try_recv() {
        apply(&mut recorder, event);
    }
    let last = recorder.finish(Instant::now());
    batches += write_out(last, &mut state, &mut terminal, &mut output)?;
    let totals: Vec<Series> = recorder.totals().filter(|s| keep(s)).cloned().collect();
    if terminal.display == Display::Table {
        let table = render_table(&totals, note);
        if terminal.live {
            terminal.draw_live(&table)?;
        } else {
            terminal.write(&table)?;
        }
    }
    // Tell responders the connections are done rather than leave them to
    // time out; bounded, since a responder may be gone.
    for e in &endpoints {
        e.close(0u32.into(), b"probe done");
    }
    for e in &endpoints {
        let _ = tokio::time::timeout(Duration::from_millis(500), e.wait_idle()).await;
    }
    if let Some(r) = local_responder {
        r.shutdown().await;
    }
    let _ = uploader_stop.send(true);
    let upload = match uploader {
        Some(task) => task.await.ok(),
        None => None,
    };
    Ok(RunSummary {
        probe_id: state.probe_id().to_string(),
        batches,
        totals,
        csv: output.map(|o| o.csv_path()),
        upload,
    })
}

/// Each schedule's own seed, drawn from the run's (an LCG step), so two
/// measurements never share their random spacing.
/// Hands one measurement event to the recorder.
fn apply(recorder: &mut Recorder, event: Event) {
    match event {
        Event::Sample(s) => recorder.record(&s),
        Event::Path {
            target,
            metric,
            intended,
            delta,
        } => recorder.record_path(target, metric, intended, delta),
        Event::Status {
            target,
            metric,
            intended,
            status,
        } => recorder.record_status(target, metric, intended, status),
        Event::Address { target, address } => recorder.set_address(target, address),
    }
}

fn next_seed(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed
}

/// A stop signal that turns true on Ctrl-C (SIGINT) or SIGTERM.
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    rx
}
