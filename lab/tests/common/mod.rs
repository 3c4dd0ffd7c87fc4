//! What the accuracy tests of both lab modes share: reading a probe's
//! series, and checking a figure against what the path injected.
#![allow(dead_code)]

use std::time::Duration;
use vantage_lab::path::DirectionSpec;
use vantage_lab::PathSpec;
use vantage_probe::{ProbeArgs, RunSummary};
use vantage_wire::{Metric, Series};

pub fn series(s: &RunSummary, m: Metric) -> &Series {
    s.totals
        .iter()
        .find(|t| t.metric == m)
        .unwrap_or_else(|| panic!("no {m}"))
}

pub fn p50_ms(s: &Series) -> f64 {
    s.histogram.value_at_quantile(0.5) as f64 / 1000.0
}

/// What a test compares of one metric: its fastest sample and its median,
/// in ms.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub min: f64,
    pub p50: f64,
}

/// The fastest sample and the median of `m`, after checking the series has
/// at least 5 samples and lost or failed none; `what` names the case in a
/// failure.
pub fn observe(summary: &RunSummary, m: Metric, what: &str) -> Observed {
    let s = series(summary, m);
    assert!(
        s.histogram.len() >= 5,
        "{what} {m}: {} samples",
        s.histogram.len()
    );
    assert_eq!(s.lost + s.error_total(), 0, "{what} {m}: {:?}", s.errors);
    Observed {
        min: s.histogram.min() as f64 / 1000.0,
        p50: s.histogram.value_at_quantile(0.5) as f64 / 1000.0,
    }
}

/// The floor of a metric from its zero-delay runs (one before the delayed
/// runs, one after): their mean, and how far apart they are, which widens
/// the tolerance (a floor measured in a busy moment of the VM moves).
pub fn floor_of(floors: &[Observed]) -> (Observed, Observed) {
    let n = floors.len().max(1) as f64;
    let mean = Observed {
        min: floors.iter().map(|f| f.min).sum::<f64>() / n,
        p50: floors.iter().map(|f| f.p50).sum::<f64>() / n,
    };
    let range = |pick: fn(&Observed) -> f64| {
        let vs = floors.iter().map(pick);
        vs.clone().fold(f64::MIN, f64::max) - vs.fold(f64::MAX, f64::min)
    };
    (
        mean,
        Observed {
            min: range(|f| f.min),
            p50: range(|f| f.p50),
        },
    )
}

/// Checks a metric measured through a path that injected `injected` ms
/// against the same metric through zero-delay paths (`floors`, see
/// [`floor_of`]), and returns a row for the printed table.
///
/// Scheduling noise on a shared VM only ever adds time, and it moves a
/// median of a few dozen samples by milliseconds from run to run, while
/// the fastest sample barely moves. So the two figures carry two checks:
/// - the fastest sample is the injected time plus the floors' fastest,
///   within max(1.5 ms, 1.5 %) and the floors' own spread: an error in the probe's clock, its schedule or
///   the relay's release would move it;
/// - the median is the injected time plus the floors' median, within
///   max(3 ms, 5 %) and the floors' spread: a share of samples taking a round trip too many or
///   too few would move it past that.
pub fn check(
    what: &str,
    metric: Metric,
    injected: f64,
    floors: &[Observed],
    seen: Observed,
) -> String {
    let (floor, spread) = floor_of(floors);
    let min_tolerance = (1.5f64).max(0.015 * injected) + spread.min;
    let min_err = seen.min - (injected + floor.min);
    let p50_tolerance = (3.0f64).max(0.05 * injected) + spread.p50;
    let p50_err = seen.p50 - (injected + floor.p50);
    let row = format!(
        "| {what} | {metric} | {injected:.1} ms | min {:.3} ms ({min_err:+.3}) | p50 {:.3} ms ({p50_err:+.3}) |",
        seen.min, seen.p50
    );
    assert!(
        min_err.abs() <= min_tolerance,
        "{metric} at {what}: fastest {:.3} ms, expected {injected:.1} ms + floor {:.3} ms ± {min_tolerance:.2} ms (floors {floors:?})\n{row}",
        seen.min,
        floor.min
    );
    assert!(
        p50_err.abs() <= p50_tolerance,
        "{metric} at {what}: p50 {:.3} ms, expected {injected:.1} ms + floor {:.3} ms ± {p50_tolerance:.2} ms (floors {floors:?})\n{row}",
        seen.p50,
        floor.p50
    );
    row
}

pub fn symmetric(one_way: Duration) -> PathSpec {
    let d = DirectionSpec {
        delay: one_way,
        ..Default::default()
    };
    PathSpec {
        up: d.clone(),
        down: d,
    }
}

pub fn capped(one_way: Duration, mbps: u64, queue_bytes: usize) -> PathSpec {
    let d = DirectionSpec {
        delay: one_way,
        rate_bps: Some(mbps * 1_000_000),
        queue_bytes,
        ..Default::default()
    };
    PathSpec {
        up: d.clone(),
        down: d,
    }
}

pub fn photosync_args(a: &mut ProbeArgs, transport: vantage_probe::SyncTransport) {
    a.metrics = vantage_probe::PHOTOSYNC_METRICS
        .map(|m| m.name().to_string())
        .to_vec();
    a.sync_transport = Some(transport);
    a.sync_direction = Some(vantage_probe::SyncDirection::Upload);
    a.sync_every = Some(Duration::from_secs(30));
    a.sync_photos = Some(6);
    a.sync_concurrency = Some(3);
    a.sync_photo_bytes = Some(1_000_000);
    a.sync_size_sigma = Some(0.0);
    a.sync_timeout = Some(Duration::from_secs(20));
}

/// The rates and run time of one delay case: enough samples of every
/// latency metric for a median in a few seconds (5 s at 150 ms one way).
pub fn delay_case(a: &mut ProbeArgs, one_way_ms: u64) {
    a.rates = [
        "udp_rtt=20",
        "quic_request=10",
        "https_request=10",
        "quic_handshake=4",
        "tcp_connect=4",
    ]
    .map(String::from)
    .to_vec();
    a.duration = Some(Duration::from_secs(if one_way_ms == 150 { 5 } else { 3 }));
}

/// The figures of several delay cases: the zero-delay runs are the
/// floors, each other run is checked against them by [`check`].
#[derive(Default)]
pub struct RoundTrips {
    floor: std::collections::BTreeMap<Metric, Vec<Observed>>,
    delayed: Vec<(String, Metric, f64, Observed)>,
}

impl RoundTrips {
    /// Takes one run through `one_way_ms` each way: each of `metrics`
    /// with the round trips its protocol needs.
    pub fn add(
        &mut self,
        what: String,
        one_way_ms: u64,
        summary: &RunSummary,
        metrics: &[(Metric, f64)],
    ) {
        let rtt = 2.0 * one_way_ms as f64;
        for &(metric, round_trips) in metrics {
            let seen = observe(summary, metric, &what);
            if one_way_ms == 0 {
                self.floor.entry(metric).or_default().push(seen);
            } else {
                self.delayed
                    .push((what.clone(), metric, round_trips * rtt, seen));
            }
        }
    }

    /// Checks every delayed run against its metric's floors: the table's
    /// rows, or a failed assertion.
    pub fn check_all(self) -> Vec<String> {
        self.delayed
            .into_iter()
            .map(|(what, metric, injected, seen)| {
                check(&what, metric, injected, &self.floor[&metric], seen)
            })
            .collect()
    }
}

/// The arguments every accuracy run starts from: one target at `addr`
/// (its STAMP port beside it), pinned to `pin`, state in `state`, the
/// latency metrics, a 3 s timeout and a fixed seed.
pub fn accuracy_args(
    addr: std::net::SocketAddr,
    stamp_port: u16,
    pin: String,
    state: &std::path::Path,
) -> ProbeArgs {
    ProbeArgs {
        targets: vec![format!("dc={addr}")],
        stamp_port: Some(stamp_port),
        pins: vec![pin],
        state_dir: Some(state.to_path_buf()),
        quiet: true,
        seed: Some(42),
        timeout: Some(Duration::from_secs(3)),
        metrics: vantage_probe::LATENCY_METRICS
            .map(|m| m.name().to_string())
            .to_vec(),
        ..ProbeArgs::default()
    }
}
