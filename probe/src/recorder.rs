//! Aggregation of attempt outcomes into per-window series. Plain code: time
//! comes in as an argument.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vantage_wire::trace::{PathTrace, Trace};
use vantage_wire::{record_clamped, ErrorClass, Metric, PathStats, Reason, Series, Target, Window};

/// The result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Answered: the value to record (a latency) and what the responder said.
    Measured {
        /// Latency counted from the intended start.
        latency: Duration,
        /// Responder-reported processing time, if any.
        server_time: Option<Duration>,
        /// Payload bytes moved.
        bytes: u64,
    },
    /// A value in the metric's own unit, not a latency: kbit/s for
    /// `photosync_goodput`, round trips per minute for `responsiveness_rpm`.
    Value {
        /// The value recorded.
        value: u64,
        /// Bytes the value covers (acknowledged bytes for goodput).
        bytes: u64,
    },
    /// No answer before the timeout.
    Lost,
    /// Failed with this class (never `Timeout`: that is `Lost`).
    Failed(ErrorClass),
    /// Failed for this finer reason: counted under the reason's class and
    /// under the reason itself.
    FailedBecause(Reason),
    /// A transfer that failed part-way: counted as failed with `class` (or
    /// lost, for a timeout), and the bytes that did arrive are kept.
    Incomplete {
        /// Why it ended.
        class: ErrorClass,
        /// Bytes acknowledged before it ended.
        bytes: u64,
    },
}

impl Outcome {
    /// A failure of class `class`; a timeout becomes `Lost`.
    pub fn failed(class: ErrorClass) -> Self {
        if class == ErrorClass::Timeout {
            Outcome::Lost
        } else {
            Outcome::Failed(class)
        }
    }

    /// A failure of class `class` with its finer reason, when one is known
    /// and refines that class.
    pub fn failed_for(class: ErrorClass, reason: Option<Reason>) -> Self {
        match reason {
            Some(r) if r.class() == class => Outcome::FailedBecause(r),
            _ => Outcome::failed(class),
        }
    }
}

/// One attempt's outcome, with what it measured and when it was meant to start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Index of the target in the probe's configuration.
    pub target: usize,
    /// The metric.
    pub metric: Metric,
    /// When the attempt was meant to start: decides its window.
    pub intended: Instant,
    /// What happened.
    pub outcome: Outcome,
}

/// Maps the monotonic clock to wall-clock labels. Read once at start, so a
/// wall-clock step during a run moves no window and times no request.
#[derive(Debug, Clone, Copy)]
pub struct WallAnchor {
    instant: Instant,
    unix: Duration,
}

impl WallAnchor {
    /// Ties `instant` to `unix` (time since the Unix epoch).
    pub fn new(instant: Instant, unix: Duration) -> Self {
        WallAnchor { instant, unix }
    }

    /// Wall-clock label of a monotonic instant, ms since the Unix epoch.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let unix = match at.checked_duration_since(self.instant) {
            Some(after) => self.unix + after,
            None => self.unix.saturating_sub(self.instant - at),
        };
        unix.as_millis() as u64
    }
}

/// Collects samples into one [`Series`] per (target, metric, window), with
/// windows aligned to UTC multiples of the window length so series from
/// different probes line up.
#[derive(Debug)]
pub struct Recorder {
    anchor: WallAnchor,
    window_ms: u64,
    grace: Duration,
    targets: Vec<Target>,
    /// Addresses that differ from the target's for one metric (the STAMP
    /// port answers `udp_rtt`, not the QUIC/HTTPS port).
    metric_addresses: BTreeMap<(usize, Metric), String>,
    run_start_ms: u64,
    open: BTreeMap<(u64, usize, Metric), Series>,
    totals: BTreeMap<(usize, Metric), Series>,
    /// Traces by the end of their window (ms), waiting for it to close.
    traces: Vec<(u64, PathTrace)>,
}

impl Recorder {
    /// A recorder for `targets`, windows of `window`, closing a window
    /// `grace` after its end (at least the attempt timeout, so every attempt
    /// of a window has its outcome when the window closes).
    pub fn new(
        anchor: WallAnchor,
        start: Instant,
        window: Duration,
        grace: Duration,
        targets: Vec<Target>,
    ) -> Self {
        Recorder {
            anchor,
            window_ms: window.as_millis().max(1) as u64,
            grace,
            targets,
            metric_addresses: BTreeMap::new(),
            run_start_ms: anchor.unix_ms(start),
            open: BTreeMap::new(),
            totals: BTreeMap::new(),
            traces: Vec::new(),
        }
    }

    fn window_of(&self, index: u64) -> Window {
        Window {
            start_unix_ms: (index * self.window_ms).max(self.run_start_ms),
            end_unix_ms: (index + 1) * self.window_ms,
        }
    }

    fn entry(
        &mut self,
        target: usize,
        metric: Metric,
        intended: Instant,
    ) -> Option<(&mut Series, &mut Series)> {
        let index = self.anchor.unix_ms(intended) / self.window_ms;
        let window = self.window_of(index);
        let base = self.targets.get(target)?;
        // The target (and the address that answers this metric) is copied
        // only when a series is opened, not for every sample.
        let addresses = &self.metric_addresses;
        let series_target = || {
            let mut t = base.clone();
            if let Some(address) = addresses.get(&(target, metric)) {
                t.address = address.clone();
            }
            t
        };
        let s = self
            .open
            .entry((index, target, metric))
            .or_insert_with(|| Series::new(series_target(), metric, window));
        let total = self.totals.entry((target, metric)).or_insert_with(|| {
            Series::new(
                series_target(),
                metric,
                Window {
                    start_unix_ms: window.start_unix_ms,
                    end_unix_ms: window.end_unix_ms,
                },
            )
        });
        total.window.end_unix_ms = total.window.end_unix_ms.max(window.end_unix_ms);
        Some((s, total))
    }

    /// Counts one attempt.
    pub fn record(&mut self, sample: &Sample) {
        let Some((s, total)) = self.entry(sample.target, sample.metric, sample.intended) else {
            tracing::error!(target = sample.target, "sample for an unknown target index");
            return;
        };
        for s in [s, total] {
            s.sent += 1;
            match sample.outcome {
                Outcome::Measured {
                    latency,
                    server_time,
                    bytes,
                } => {
                    record_clamped(&mut s.histogram, latency.as_micros() as u64);
                    s.bytes += bytes;
                    if let Some(st) = server_time {
                        s.server_time.sum_us += st.as_micros() as u64;
                        s.server_time.count += 1;
                    }
                }
                Outcome::Value { value, bytes } => {
                    record_clamped(&mut s.histogram, value);
                    s.bytes += bytes;
                }
                Outcome::Lost => s.lost += 1,
                Outcome::Failed(class) => *s.errors.entry(class).or_insert(0) += 1,
                Outcome::FailedBecause(reason) => {
                    *s.errors.entry(reason.class()).or_insert(0) += 1;
                    *s.reasons.entry(reason).or_insert(0) += 1;
                }
                Outcome::Incomplete { class, bytes } => {
                    if class == ErrorClass::Timeout {
                        s.lost += 1;
                    } else {
                        *s.errors.entry(class).or_insert(0) += 1;
                    }
                    s.bytes += bytes;
                }
            }
        }
    }

    /// Adds path statistics (duplicates, reordering, loss direction, jitter)
    /// to the window of `intended`.
    pub fn record_path(
        &mut self,
        target: usize,
        metric: Metric,
        intended: Instant,
        delta: PathStats,
    ) {
        if let Some((s, total)) = self.entry(target, metric, intended) {
            s.path.add(&delta);
            total.path.add(&delta);
        }
    }

    /// Counts an HTTP response's status in the window of `intended` (the
    /// attempt itself is counted by [`Recorder::record`]).
    pub fn record_status(&mut self, target: usize, metric: Metric, intended: Instant, status: u16) {
        if let Some((s, total)) = self.entry(target, metric, intended) {
            for s in [s, total] {
                *s.statuses.entry(status).or_insert(0) += 1;
            }
        }
    }

    /// Counts the CDN edge a response of `target` named, in the window of
    /// `intended` (the attempt itself is counted by [`Recorder::record`]).
    pub fn record_edge(&mut self, target: usize, metric: Metric, intended: Instant, edge: &str) {
        if let Some((s, total)) = self.entry(target, metric, intended) {
            s.count_edge(edge);
            total.count_edge(edge);
        }
    }

    /// Keeps a finished trace of `target` begun at `intended`, to travel
    /// with its window's series (its attempt is counted by [`Recorder::record`]).
    pub fn record_trace(&mut self, target: usize, intended: Instant, trace: Trace) {
        let Some(base) = self.targets.get(target) else {
            tracing::error!(target, "trace for an unknown target index");
            return;
        };
        let mut target_of_trace = base.clone();
        if let Some(address) = self.metric_addresses.get(&(target, Metric::PathTrace)) {
            target_of_trace.address = address.clone();
        }
        let started_unix_ms = self.anchor.unix_ms(intended);
        let window_end = self.window_of(started_unix_ms / self.window_ms).end_unix_ms;
        self.traces.push((
            window_end,
            PathTrace {
                target: target_of_trace,
                started_unix_ms,
                trace,
            },
        ));
    }

    /// Traces of every window that ended at least `grace` before `now`.
    pub fn poll_closed_traces(&mut self, now: Instant) -> Vec<PathTrace> {
        let now_ms = self.anchor.unix_ms(now);
        let grace_ms = self.grace.as_millis() as u64;
        let (closed, open) = std::mem::take(&mut self.traces)
            .into_iter()
            .partition(|(end, _)| end + grace_ms <= now_ms);
        self.traces = open;
        closed.into_iter().map(|(_, t)| t).collect()
    }

    /// Every trace kept (the end of a run).
    pub fn finish_traces(&mut self) -> Vec<PathTrace> {
        std::mem::take(&mut self.traces)
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Series of every window that ended at least `grace` before `now`.
    pub fn poll_closed(&mut self, now: Instant) -> Vec<Series> {
        let now_ms = self.anchor.unix_ms(now);
        let grace_ms = self.grace.as_millis() as u64;
        let closed: Vec<_> = self
            .open
            .iter()
            .filter(|(_, s)| s.window.end_unix_ms + grace_ms <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        closed
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .collect()
    }

    /// Closes every window at `now` (the end of a run): the last window ends
    /// at `now` rather than at its boundary, since nothing after was measured.
    pub fn finish(&mut self, now: Instant) -> Vec<Series> {
        let now_ms = self.anchor.unix_ms(now);
        std::mem::take(&mut self.open)
            .into_values()
            .map(|mut s| {
                if s.window.end_unix_ms > now_ms {
                    s.window.end_unix_ms = now_ms.max(s.window.start_unix_ms + 1);
                }
                s
            })
            .collect()
    }

    /// Sets the address that `metric`'s series of `target` carry instead of
    /// the target's: the one that answers that metric.
    pub fn set_metric_address(&mut self, target: usize, metric: Metric, address: String) {
        self.metric_addresses.insert((target, metric), address);
    }

    /// Sets the address series of `target` opened from now on carry (a
    /// URL's host resolved anew).
    pub fn set_address(&mut self, target: usize, address: String) {
        if let Some(t) = self.targets.get_mut(target) {
            t.address = address;
        }
    }

    /// Everything recorded so far, per (target, metric), for the live table.
    pub fn totals(&self) -> impl Iterator<Item = &Series> {
        self.totals.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{latency_from, Schedule, Spacing, TIMER_SLACK};

    fn target() -> Vec<Target> {
        vec![Target {
            name: "dc".into(),
            address: "127.0.0.1:1".into(),
        }]
    }

    #[test]
    fn windows_align_to_utc_boundaries_and_count_every_outcome() {
        let t0 = Instant::now();
        // The run starts 10.5 s into the minute that begins at 1_700_000_040 s.
        let anchor = WallAnchor::new(t0, Duration::from_millis(1_700_000_050_500));
        let mut r = Recorder::new(
            anchor,
            t0,
            Duration::from_secs(60),
            Duration::from_secs(2),
            target(),
        );
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let m = Metric::QuicRequest;
        let measured = Outcome::Measured {
            latency: Duration::from_millis(5),
            server_time: Some(Duration::from_micros(20)),
            bytes: 64,
        };
        for (when, outcome) in [
            (1.0, measured),
            (2.0, Outcome::Lost),
            (3.0, Outcome::failed(ErrorClass::Refused)),
            (4.0, Outcome::FailedBecause(Reason::TlsExpired)),
            (48.0, measured), // 1_700_000_098.5: still the first minute
            (50.0, measured), // 1_700_000_100.5: the next minute
        ] {
            r.record(&Sample {
                target: 0,
                metric: m,
                intended: at(when),
                outcome,
            });
        }
        r.record_status(0, m, at(1.0), 200);
        r.record_status(0, m, at(5.0), 200);
        r.record_status(0, m, at(50.0), 503);
        assert!(r.poll_closed(at(50.0)).is_empty(), "grace not over yet");
        let closed = r.poll_closed(at(51.6));
        assert_eq!(closed.len(), 1);
        let s = &closed[0];
        assert_eq!(
            s.window.start_unix_ms, 1_700_000_050_500,
            "first window starts with the run"
        );
        assert_eq!(s.window.end_unix_ms, 1_700_000_100_000);
        assert_eq!((s.sent, s.histogram.len(), s.lost), (5, 2, 1));
        assert_eq!(s.errors.get(&ErrorClass::Refused), Some(&1));
        assert_eq!(
            s.errors.get(&ErrorClass::Tls),
            Some(&1),
            "a reason counts under its class"
        );
        assert_eq!(s.reasons, [(Reason::TlsExpired, 1)].into());
        assert_eq!(
            s.statuses,
            [(200, 2)].into(),
            "the 503 is in the next window"
        );
        s.check().unwrap();
        assert_eq!(s.bytes, 128);
        assert_eq!(s.server_time.count, 2);
        s.check().unwrap();
        let last = r.finish(at(55.0));
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].window.start_unix_ms, 1_700_000_100_000);
        assert_eq!(
            last[0].window.end_unix_ms, 1_700_000_105_500,
            "cut at the stop"
        );
        let total = r.totals().next().unwrap();
        assert_eq!(total.sent, 6);
        assert_eq!(total.statuses, [(200, 2), (503, 1)].into());
    }

    #[test]
    fn a_timeout_class_is_counted_as_lost() {
        assert_eq!(Outcome::failed(ErrorClass::Timeout), Outcome::Lost);
    }

    /// Coordinated omission, with a fake clock: at 100 requests/s, the
    /// responder stalls once for 500 ms. Every request scheduled during the
    /// stall must carry the wait it suffered, so p99 is far above 400 ms, both
    /// when requests overlap (open loop) and when the probe itself is blocked
    /// and sends late (a single serial connection).
    #[test]
    fn a_500ms_stall_shows_up_in_p99() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let network = ms(1);
        let stall = (t0 + ms(2000), t0 + ms(2500));
        // The responder answers at its stall's end if the request arrives during it.
        let answer = |arrive: Instant| {
            if arrive >= stall.0 && arrive < stall.1 {
                stall.1 + network / 2
            } else {
                arrive + network / 2
            }
        };
        for serial in [false, true] {
            let mut sched = Schedule::new(
                Spacing::Poisson {
                    rate_per_sec: 100.0,
                },
                t0,
                3,
            );
            let mut r = Recorder::new(
                WallAnchor::new(t0, Duration::from_secs(1_700_000_000)),
                t0,
                ms(60_000),
                ms(2000),
                target(),
            );
            let mut busy_until = t0;
            while let Some(intended) = sched.poll_due(t0 + ms(5000)) {
                // A serial client cannot send before its previous answer.
                let started = if serial {
                    intended.max(busy_until)
                } else {
                    intended
                };
                let done = answer(started + network / 2);
                busy_until = done;
                r.record(&Sample {
                    target: 0,
                    metric: Metric::QuicRequest,
                    intended,
                    outcome: Outcome::Measured {
                        latency: latency_from(intended, started, done, TIMER_SLACK),
                        server_time: None,
                        bytes: 0,
                    },
                });
            }
            let s = &r.finish(t0 + ms(5000))[0];
            let p99 = s.histogram.value_at_quantile(0.99);
            let p50 = s.histogram.value_at_quantile(0.50);
            assert!(
                p99 > 430_000,
                "serial={serial}: p99 {p99} µs hides the stall"
            );
            assert!(p50 < 2_000, "serial={serial}: p50 {p50} µs");
            // Every request scheduled during the stall waited for its end.
            let during = s
                .histogram
                .iter_recorded()
                .filter(|v| v.value_iterated_to() > 10_000)
                .map(|v| v.count_at_value())
                .sum::<u64>();
            assert!(during >= 40, "serial={serial}: only {during} slow samples");
        }
    }
}
