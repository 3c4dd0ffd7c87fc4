//! Batch assembly: the closed windows' series, filtered to the metrics
//! asked for, with the probe's identity, labels and the drop count the
//! collector must hear of. Plain code: the instant of closing comes in as
//! `now` and is labelled with the run's [`WallAnchor`].

use crate::recorder::WallAnchor;
use std::time::Instant;
use vantage_wire::campaign::{phase_at, PhaseSwitch};
use vantage_wire::trace::PathTrace;
use vantage_wire::{Batch, Labels, Metric, Series};

/// Makes every batch of one run.
#[derive(Debug, Clone)]
pub(crate) struct BatchMaker {
    campaign: String,
    labels: Labels,
    metrics: Vec<Metric>,
    anchor: WallAnchor,
    /// The campaign's phase switches; each window's batch takes the phase
    /// of the last switch at or before the window's start.
    phases: Vec<PhaseSwitch>,
}

impl BatchMaker {
    /// Batches of `campaign` carrying `labels`, with only `metrics`
    /// (a cold measurement records two metrics; one may be unwanted).
    pub(crate) fn new(
        campaign: String,
        labels: Labels,
        metrics: Vec<Metric>,
        anchor: WallAnchor,
    ) -> Self {
        BatchMaker {
            campaign,
            labels,
            metrics,
            anchor,
            phases: Vec::new(),
        }
    }

    /// Labels windows by these phase switches from now on (a switch only
    /// ever applies to windows starting at or after its instant).
    pub(crate) fn set_phases(&mut self, phases: Vec<PhaseSwitch>) {
        self.phases = phases;
    }

    /// The closed series and traces in groups of one phase, each to be one
    /// batch: a batch carries one set of labels. A trace goes by its start.
    pub(crate) fn by_phase(&self, series: Vec<Series>, traces: Vec<PathTrace>) -> Vec<Closed> {
        let mut groups: Vec<(Option<&str>, Closed)> = Vec::new();
        for s in series {
            let phase = phase_at(&self.phases, s.window.start_unix_ms);
            group_of(&mut groups, phase).series.push(s);
        }
        for t in traces {
            let phase = phase_at(&self.phases, t.started_unix_ms);
            group_of(&mut groups, phase).traces.push(t);
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// The traces worth a batch: all of them if `path_trace` is asked for.
    pub(crate) fn wanted_traces(&self, traces: Vec<PathTrace>) -> Vec<PathTrace> {
        if self.metrics.contains(&Metric::PathTrace) {
            traces
        } else {
            Vec::new()
        }
    }

    /// Whether `s` is of a metric asked for.
    pub(crate) fn keeps(&self, s: &Series) -> bool {
        self.metrics.contains(&s.metric)
    }

    /// The series worth a batch: those of the metrics asked for.
    pub(crate) fn wanted(&self, series: Vec<Series>) -> Vec<Series> {
        series.into_iter().filter(|s| self.keeps(s)).collect()
    }

    /// The batch of `closed` (already [`wanted`](Self::wanted)), numbered
    /// `sequence`, made at `now`, reporting `dropped` batches the spool
    /// could not keep.
    pub(crate) fn make(
        &self,
        probe_id: &str,
        sequence: u64,
        closed: Closed,
        dropped: u64,
        now: Instant,
    ) -> Batch {
        let Closed { series, traces } = closed;
        let mut labels = self.labels.clone();
        let start = series
            .iter()
            .map(|s| s.window.start_unix_ms)
            .chain(traces.iter().map(|t| t.started_unix_ms))
            .min();
        if let Some(phase) = start.and_then(|t| phase_at(&self.phases, t)) {
            // Checked when the campaign was stored and again when applied.
            let _ = labels.insert(Labels::PHASE, phase);
        }
        Batch {
            probe_id: probe_id.to_string(),
            sequence,
            campaign: self.campaign.clone(),
            labels,
            created_unix_ms: self.anchor.unix_ms(now),
            dropped_batches: dropped,
            traces,
            series,
        }
    }
}

/// The group of `phase` in `groups`, added last when it is new.
fn group_of<'a, 'p>(
    groups: &'a mut Vec<(Option<&'p str>, Closed)>,
    phase: Option<&'p str>,
) -> &'a mut Closed {
    let i = match groups.iter().position(|(p, _)| *p == phase) {
        Some(i) => i,
        None => {
            groups.push((phase, Closed::default()));
            groups.len() - 1
        }
    };
    &mut groups[i].1
}

/// What closed windows hold: series, and the traces made in them.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    pub(crate) series: Vec<Series>,
    pub(crate) traces: Vec<PathTrace>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use vantage_wire::{Target, Window};

    fn series(metric: Metric) -> Series {
        Series::new(
            Target {
                name: "sg".into(),
                address: "127.0.0.1:1".into(),
            },
            metric,
            Window {
                start_unix_ms: 0,
                end_unix_ms: 60_000,
            },
        )
    }

    fn trace(started_unix_ms: u64) -> PathTrace {
        PathTrace {
            target: Target {
                name: "sg".into(),
                address: "127.0.0.1:1".into(),
            },
            started_unix_ms,
            trace: vantage_wire::trace::Trace {
                hops: Vec::new(),
                end: vantage_wire::trace::End::Silent,
            },
        }
    }

    #[test]
    fn a_batch_keeps_the_metrics_asked_for_and_is_labelled_at_its_instant() {
        let t0 = Instant::now();
        let anchor = WallAnchor::new(t0, Duration::from_secs(1_700_000_000));
        let mut labels = Labels::new();
        labels.insert("country", "IN").unwrap();
        let maker = BatchMaker::new(
            "move".into(),
            labels.clone(),
            vec![Metric::QuicHandshake],
            anchor,
        );
        let wanted = maker.wanted(vec![
            series(Metric::QuicHandshake),
            series(Metric::QuicColdRequest),
        ]);
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].metric, Metric::QuicHandshake);
        assert!(maker.wanted(vec![series(Metric::UdpRtt)]).is_empty());
        let closed = Closed {
            series: wanted,
            traces: maker.wanted_traces(vec![trace(5)]),
        };
        assert!(closed.traces.is_empty(), "path_trace not asked for");
        let b = maker.make("p1", 7, closed, 2, t0 + Duration::from_millis(1500));
        assert_eq!(
            (b.probe_id.as_str(), b.sequence, b.dropped_batches),
            ("p1", 7, 2)
        );
        assert_eq!(b.campaign, "move");
        assert_eq!(b.labels, labels);
        assert_eq!(b.created_unix_ms, 1_700_000_001_500);
    }

    #[test]
    fn each_window_takes_the_phase_of_its_start() {
        let t0 = Instant::now();
        let anchor = WallAnchor::new(t0, Duration::from_secs(1_700_000_000));
        let mut labels = Labels::new();
        labels.insert("phase", "before").unwrap();
        let mut maker = BatchMaker::new("move".into(), labels, vec![Metric::UdpRtt], anchor);
        maker.set_phases(vec![PhaseSwitch {
            at_unix_ms: 60_000,
            phase: "after".into(),
        }]);
        let at = |start: u64| {
            let mut s = series(Metric::UdpRtt);
            s.window = Window {
                start_unix_ms: start,
                end_unix_ms: start + 60_000,
            };
            s
        };
        let groups = maker.by_phase(
            vec![at(0), at(60_000), at(120_000)],
            vec![trace(59_999), trace(60_000)],
        );
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].series.len(), 1);
        assert_eq!(groups[1].series.len(), 2);
        // A trace goes with its start's phase, beside that phase's series.
        assert_eq!(groups[0].traces[0].started_unix_ms, 59_999);
        assert_eq!(groups[1].traces[0].started_unix_ms, 60_000);
        let phase = |series: Vec<Series>| {
            let closed = Closed {
                series,
                traces: Vec::new(),
            };
            maker
                .make("p1", 1, closed, 0, t0)
                .labels
                .get("phase")
                .map(str::to_string)
        };
        assert_eq!(phase(groups[0].series.clone()).as_deref(), Some("before"));
        assert_eq!(phase(groups[1].series.clone()).as_deref(), Some("after"));
        // A window starting a millisecond before the switch keeps the old phase.
        assert_eq!(phase(vec![at(59_999)]).as_deref(), Some("before"));
    }
}
