//! The driver: starts a measurement task per (target, measurement), feeds
//! their events to the recorder, closes windows into batches and writes
//! them out. The only place that reads the clock to decide when to act.

mod jobs;
pub(crate) mod poller;
mod reminder;
mod sequencing;
mod sinks;
mod steered;
mod targets;
pub(crate) mod upload_loop;

use crate::batch::{BatchMaker, Closed};
use crate::config::{Display, ProbeConfig};
use crate::measure::Event;
use crate::output::{LocalOutput, OutputError};
use crate::recorder::{Recorder, WallAnchor};
use crate::state::{ProbeState, StateError};
use sinks::{Sink, SpoolSink, Terminal};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use vantage_responder::ResponderError;
use vantage_tls::{Fingerprint, Trust, TrustError};
use vantage_wire::{Metric, Series, Target};

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
    /// The probe's own flags or file are wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The last good campaign could not be read or kept.
    #[error(transparent)]
    CampaignStore(#[from] crate::fleet::CampaignStoreError),
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
    /// The campaign that took over at a window boundary and ended this
    /// run (a probe that takes its campaign from the collector).
    pub next_campaign: Option<vantage_wire::campaign::CampaignDoc>,
}

pub use steered::{run_campaign, run_plan};

/// A run steered by the collector: the plan it resolves campaigns with,
/// and the status it shares with the poller.
pub(crate) struct FleetRun {
    plan: Arc<crate::config::CampaignPlan>,
    labels: vantage_wire::Labels,
    status: poller::SharedFleet,
}

/// Runs the probe until `stop` turns true or the configured duration ends,
/// then closes the last window, writes it, and returns what was measured.
pub async fn run(config: ProbeConfig, stop: watch::Receiver<bool>) -> Result<RunSummary, RunError> {
    run_with(config, stop, None).await
}

/// What is wrong with an access token a probe starts with, if anything:
/// expired, expiring within a week, or issued to another probe id.
/// Responders decide; the probe only warns, so a token can be renewed
/// before its photos start to fail.
fn access_token_warning(token: &str, probe_id: &str, now_unix: u64) -> Option<String> {
    const WEEK: u64 = 7 * 24 * 3600;
    let grant = vantage_tls::access::read_token(token).ok()?;
    if grant.expires_unix <= now_unix {
        return Some(format!(
            "the access token expired {} h ago: responders that require one will refuse photos and large echoes; issue a new one with `vantage access issue --probe {probe_id}`",
            (now_unix - grant.expires_unix) / 3600
        ));
    }
    if grant.expires_unix - now_unix < WEEK {
        return Some(format!(
            "the access token expires in {} h; issue a new one with `vantage access issue --probe {probe_id}`",
            (grant.expires_unix - now_unix) / 3600
        ));
    }
    (grant.probe != probe_id).then(|| {
        format!(
            "the access token was issued to probe `{}`, and this probe is `{probe_id}`",
            grant.probe
        )
    })
}

/// [`run`], with the campaign poller when `fleet` is given: a phase
/// switch applies from the next window on, a new campaign ends the run at
/// the next window boundary (`next_campaign` says which).
async fn run_with(
    config: ProbeConfig,
    mut stop: watch::Receiver<bool>,
    fleet: Option<&FleetRun>,
) -> Result<RunSummary, RunError> {
    let mut state = ProbeState::open(&config.state_dir, config.probe_id.as_deref())?;
    if let Some(token) = &config.access_token {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(warning) = access_token_warning(token, state.probe_id(), now_unix) {
            tracing::warn!("{warning}");
        }
    }
    let (resolved, local_responder) = targets::resolve_all(&config).await?;
    let mut labels = config.labels.clone();
    let insecure = resolved
        .iter()
        .any(|t| t.config.trust == Some(Trust::Insecure));
    if insecure {
        // Carried in every batch, so no report can lose the fact.
        let _ = labels.insert("tls", "insecure");
    }
    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    let sync_gate = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let contexts = targets::target_contexts(&config, &resolved, &events_tx, &sync_gate).await?;
    let http_contexts = targets::http_contexts(&config, resolved.len(), &events_tx, &sync_gate)?;
    drop(events_tx);

    let start = Instant::now();
    // Both clocks read once, together: windows are labelled from here on.
    let anchor = WallAnchor::new(
        start,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let grace = config.timeout + Duration::from_millis(500);
    let mut recorder = Recorder::new(
        anchor,
        start,
        config.window,
        grace,
        series_targets(&resolved, &config),
    );
    for (index, t) in resolved.iter().enumerate() {
        recorder.set_metric_address(index, Metric::UdpRtt, t.stamp.to_string());
    }
    // Without --seed, a seed from the clock: each run draws its own times.
    let seed = config.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let (jobs_stop, jobs_stop_rx) = watch::channel(false);
    let mut jobs = jobs::spawn(
        &config,
        &contexts,
        &http_contexts,
        start,
        seed,
        &jobs_stop_rx,
    );
    let endpoints: Vec<quinn::Endpoint> = contexts.iter().map(|c| c.endpoint.clone()).collect();
    drop((contexts, http_contexts));

    let mut outputs = Outputs::open(&config, insecure)?;
    let mut maker = BatchMaker::new(
        config.campaign.clone(),
        labels,
        config.metrics.clone(),
        anchor,
    );
    maker.set_phases(config.phases.clone());
    let window_ms = config.window.as_millis().max(1) as u64;
    let mut steering = fleet.map(|f| {
        let ctx = poller::PollContext {
            plan: f.plan.clone(),
            probe_id: state.probe_id().to_string(),
            labels: f.labels.clone(),
            window_ms,
            spool: outputs.spool.clone(),
            reachable: Some(outputs.reachable.clone()),
        };
        poller::Steering::start(ctx, f.status.clone())
    });
    let mut batches = 0u64;
    let end = config.duration.map(|d| start + d);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_draw = Instant::now();
    loop {
        let due = steering.as_ref().and_then(poller::Steering::due);
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => apply(&mut recorder, event),
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let closed = Closed {
                    series: recorder.poll_closed(now),
                    traces: recorder.poll_closed_traces(now),
                };
                batches += outputs.close(&maker, &mut state, closed, now)?;
                if outputs.live && now.duration_since(last_draw) >= Duration::from_secs(1) {
                    last_draw = now;
                    outputs.totals(&recorder, &maker, false)?;
                }
                if end.is_some_and(|e| now >= e) {
                    let _ = jobs_stop.send(true);
                }
            }
            _ = stop.changed() => {
                let _ = jobs_stop.send(true);
            }
            offer = poller::next_offer(&mut steering) => {
                if let Some(s) = steering.as_mut() {
                    s.take(offer, &mut maker, anchor, window_ms);
                }
            }
            _ = poller::sleep_until(due), if !*jobs_stop.borrow() => {
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
    let now = Instant::now();
    let last = Closed {
        series: recorder.finish(now),
        traces: recorder.finish_traces(),
    };
    batches += outputs.close(&maker, &mut state, last, now)?;
    outputs.release_or_count(&mut state, now)?;
    outputs.totals(&recorder, &maker, true)?;
    let totals: Vec<Series> = recorder
        .totals()
        .filter(|s| maker.keeps(s))
        .cloned()
        .collect();
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
    let next_campaign = steering.and_then(poller::Steering::finish);
    // A campaign taking over does not wait for the upload drain: the
    // spool keeps what is left, and the next run's uploader sends it.
    let (csv, upload) = outputs.shut_down(next_campaign.is_some()).await;
    Ok(RunSummary {
        probe_id: state.probe_id().to_string(),
        batches,
        totals,
        csv,
        upload,
        next_campaign,
    })
}

/// The series' targets, responders first then URLs: the recorder's index space.
fn series_targets(resolved: &[targets::ResolvedTarget], config: &ProbeConfig) -> Vec<Target> {
    resolved
        .iter()
        .map(|t| Target {
            name: t.config.name.clone(),
            // The address that answered, as a socket address writes it
            // (`[::1]:4443` for IPv6), not the host name as given.
            address: t.quic.to_string(),
        })
        .chain(config.urls.iter().map(|u| Target {
            name: u.name.clone(),
            address: u.url.clone(),
        }))
        .collect()
}

/// Every sink of a run, and the uploader behind the spool.
struct Outputs {
    sinks: Vec<Box<dyn Sink>>,
    spool: Option<Arc<Mutex<crate::spool::Spool>>>,
    /// Ends the uploader's backoff: the collector answered a poll.
    reachable: Arc<tokio::sync::Notify>,
    uploader: Option<(
        watch::Sender<bool>,
        tokio::task::JoinHandle<crate::upload::UploadStats>,
    )>,
    csv: Option<PathBuf>,
    /// The terminal redraws the table as the run goes.
    live: bool,
    /// Sequence numbers, and the batches waiting for one.
    sequencer: sequencing::Sequencer,
}

impl Outputs {
    /// Opens the spool (and starts its uploader), `--out`, and the terminal.
    fn open(config: &ProbeConfig, insecure: bool) -> Result<Self, RunError> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let (mut spool, mut uploader) = (None, None);
        let reachable = Arc::new(tokio::sync::Notify::new());
        if let Some(u) = &config.upload {
            let opened = Arc::new(Mutex::new(crate::spool::Spool::open(
                &u.spool_dir,
                u.spool_max_bytes,
            )?));
            let up = u
                .targets
                .iter()
                .map(|t| crate::upload::Uploader::new(t.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| RunError::Trust {
                    target: "collector".into(),
                    source,
                })?;
            let notify = Arc::new(tokio::sync::Notify::new());
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(upload_loop::run_uploader_woken(
                up,
                opened.clone(),
                notify.clone(),
                reachable.clone(),
                stop_rx,
                Duration::from_secs(5),
                Duration::from_secs(1),
            ));
            sinks.push(Box::new(SpoolSink {
                spool: opened.clone(),
                notify,
                trouble: Default::default(),
            }));
            spool = Some(opened);
            uploader = Some((stop, task));
        }
        let mut csv = None;
        if let Some(dir) = config.out.as_deref() {
            let out = LocalOutput::open(dir, std::time::SystemTime::now())?;
            csv = Some(out.csv_path());
            sinks.push(Box::new(out));
        }
        let live = config.display == Display::Table && std::io::stdout().is_terminal();
        let note = insecure.then_some("INSECURE: certificates were not verified (--insecure)");
        sinks.push(Box::new(Terminal::new(config.display, live, note)));
        Ok(Outputs {
            sinks,
            spool,
            reachable,
            uploader,
            csv,
            live,
            sequencer: sequencing::Sequencer::default(),
        })
    }

    /// Hands the closed windows' series, as batches made at `now` (one per
    /// phase, usually one), to every sink; the number of batches written.
    /// A batch that gets no sequence number (the state directory cannot
    /// store one) still goes to `--out` and the terminal, with sequence 0,
    /// and waits in memory for the collector (see [`sequencing`]).
    fn close(
        &mut self,
        maker: &BatchMaker,
        state: &mut ProbeState,
        closed: Closed,
        now: Instant,
    ) -> Result<u64, RunError> {
        let series = maker.wanted(closed.series);
        let traces = maker.wanted_traces(closed.traces);
        let mut written = 0;
        for closed in maker.by_phase(series, traces) {
            self.spool_released(state, now)?;
            let sequence = self.sequencer.next(state, now);
            let batch = maker.make(
                state.probe_id(),
                sequence.unwrap_or(0),
                closed,
                self.pending_drops(),
                now,
            );
            for sink in &mut self.sinks {
                if sequence.is_some() || !sink.needs_sequence() {
                    sink.put(&batch)?;
                }
            }
            if sequence.is_none() {
                if let Some(spool) = &self.spool {
                    let dropped = self.sequencer.hold(batch);
                    if let Ok(mut spool) = spool.lock() {
                        spool.count_dropped(dropped);
                    }
                }
            }
            written += 1;
        }
        Ok(written)
    }

    /// Drops the spool has yet to report, which the next batch carries.
    fn pending_drops(&self) -> u64 {
        self.spool
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.pending_drops()))
            .unwrap_or(0)
    }

    /// Numbers the batches waiting for a sequence number, if the state
    /// directory takes one again, and hands them to the sinks that were
    /// waiting (the spool); each reports the drops pending when it is spooled.
    fn spool_released(&mut self, state: &mut ProbeState, now: Instant) -> Result<(), RunError> {
        for mut batch in self.sequencer.release(state, now) {
            batch.dropped_batches = self.pending_drops();
            for sink in self.sinks.iter_mut().filter(|s| s.needs_sequence()) {
                sink.put(&batch)?;
            }
        }
        Ok(())
    }

    /// At the end of a run: the batches still waiting for a number get one
    /// if they can; those that cannot are counted lost (the next batch a
    /// later run spools reports them) and said.
    fn release_or_count(&mut self, state: &mut ProbeState, now: Instant) -> Result<(), RunError> {
        self.spool_released(state, now)?;
        let left = self.sequencer.waiting() as u64;
        if left > 0 {
            tracing::error!(
                windows = left,
                "windows not spooled for the collector: no sequence number could be stored for them (they are in --out); counted as dropped batches"
            );
            if let Some(Ok(mut spool)) = self.spool.as_ref().map(|s| s.lock()) {
                spool.count_dropped(left);
            }
        }
        Ok(())
    }

    /// Shows the totals so far (or at the end) to the sinks that show them.
    fn totals(
        &mut self,
        recorder: &Recorder,
        maker: &BatchMaker,
        last: bool,
    ) -> Result<(), RunError> {
        let totals: Vec<&Series> = recorder.totals().filter(|s| maker.keeps(s)).collect();
        for sink in &mut self.sinks {
            sink.totals(&totals, last)?;
        }
        Ok(())
    }

    /// Stops the uploader (after its bounded drain, unless `at_once`):
    /// `series.csv` and what the uploader did.
    async fn shut_down(
        self,
        at_once: bool,
    ) -> (Option<PathBuf>, Option<crate::upload::UploadStats>) {
        let upload = match self.uploader {
            Some((_, task)) if at_once => {
                // A batch in flight may be sent again: the collector
                // stores each (probe, sequence) once.
                task.abort();
                let _ = task.await;
                None
            }
            Some((stop, task)) => {
                let _ = stop.send(true);
                task.await.ok()
            }
            None => None,
        };
        (self.csv, upload)
    }
}

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
        Event::Trace {
            target,
            intended,
            trace,
        } => recorder.record_trace(target, intended, trace),
        Event::Edge {
            target,
            metric,
            intended,
            edge,
        } => recorder.record_edge(target, metric, intended, &edge),
    }
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

#[cfg(test)]
mod tests {
    use super::access_token_warning;

    fn token(probe: &str, expires: u64) -> String {
        format!("vt1.{probe}.{expires}.{}", "0".repeat(128))
    }

    #[test]
    fn an_access_token_is_warned_about_before_and_after_it_expires() {
        let day = 24 * 3600;
        assert_eq!(access_token_warning(&token("p", 30 * day), "p", 0), None);
        let soon = access_token_warning(&token("p", 2 * day), "p", 0).unwrap();
        assert!(soon.contains("expires in 48 h"), "{soon}");
        let past = access_token_warning(&token("p", day), "p", day + 7200).unwrap();
        assert!(past.contains("expired 2 h ago"), "{past}");
        let other = access_token_warning(&token("q", 30 * day), "p", 0).unwrap();
        assert!(other.contains("issued to probe `q`"), "{other}");
    }
}
