//! Counters of a collector, rendered in the Prometheus text format at
//! `/metrics`, so it can be watched with the tools operators already run.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use vantage_store::fleet::ProbeHealth;
use vantage_wire::campaign::PollStatus;
use vantage_wire::upload::AckStatus;

/// What the collector did, since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    stored: AtomicU64,
    duplicates: AtomicU64,
    series: AtomicU64,
    commits: AtomicU64,
    commit_ns: AtomicU64,
    folded: AtomicU64,
    raw_batches_removed: AtomicU64,
    raw_series_removed: AtomicU64,
    upkeep_failures: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    last_seen: Mutex<BTreeMap<String, u64>>,
    polls: Mutex<BTreeMap<&'static str, u64>>,
    fleet: Mutex<BTreeMap<String, Polled>>,
    stored_by_probe: Mutex<BTreeMap<String, u64>>,
}

/// A probe's last heartbeat, and the campaign version it was answered with.
#[derive(Debug, Clone)]
struct Polled {
    health: ProbeHealth,
    assigned: Option<(String, u64)>,
}

impl Metrics {
    pub(crate) fn count(&self, status: AckStatus, series: usize) {
        match status {
            AckStatus::Stored => {
                self.stored.fetch_add(1, Ordering::Relaxed);
                self.series.fetch_add(series as u64, Ordering::Relaxed);
            }
            AckStatus::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            refused => self.count_refused(refused.name()),
        }
    }

    /// Counts a refused upload under `reason`: its status's name, or a
    /// finer reason (`storage_full`, `body_timeout`, `busy`, …).
    pub(crate) fn count_refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(reason).or_insert(0) += 1;
        }
    }

    pub(crate) fn commit(&self, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_folded(&self, batches: u64) {
        self.folded.fetch_add(batches, Ordering::Relaxed);
    }

    pub(crate) fn removed_raw(&self, removed: vantage_store::RawRemoved) {
        self.raw_batches_removed
            .fetch_add(removed.batches, Ordering::Relaxed);
        self.raw_series_removed
            .fetch_add(removed.series, Ordering::Relaxed);
    }

    pub(crate) fn upkeep_failed(&self) {
        self.upkeep_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn seen(&self, probe: &str, unix_ms: u64, stored: bool) {
        if let Ok(mut m) = self.last_seen.lock() {
            // Bounded by the number of probes with valid tokens.
            m.insert(probe.to_string(), unix_ms);
        }
        if let (true, Ok(mut m)) = (stored, self.stored_by_probe.lock()) {
            *m.entry(probe.to_string()).or_insert(0) += 1;
        }
    }

    pub(crate) fn count_poll(&self, status: PollStatus) {
        if let Ok(mut m) = self.polls.lock() {
            *m.entry(status.name()).or_insert(0) += 1;
        }
    }

    pub(crate) fn polled(&self, health: &ProbeHealth, assigned: Option<(String, u64)>) {
        if let Ok(mut m) = self.fleet.lock() {
            // Bounded by the number of probes with valid tokens.
            let polled = Polled {
                health: health.clone(),
                assigned,
            };
            m.insert(health.probe_id.clone(), polled);
        }
    }

    /// Campaign polls answered, by status.
    pub fn polls(&self) -> BTreeMap<&'static str, u64> {
        self.polls.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Batches stored.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Duplicate batches acknowledged without storing.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Batches folded into the roll-ups.
    pub fn folded(&self) -> u64 {
        self.folded.load(Ordering::Relaxed)
    }

    /// What retention removed: batches, and their one-minute series.
    pub fn raw_removed(&self) -> vantage_store::RawRemoved {
        vantage_store::RawRemoved {
            batches: self.raw_batches_removed.load(Ordering::Relaxed),
            series: self.raw_series_removed.load(Ordering::Relaxed),
        }
    }

    /// Refusals by reason.
    pub fn refused(&self) -> BTreeMap<&'static str, u64> {
        self.refused.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "vantage_collector_batches_stored_total",
            "Batches stored.",
            self.stored(),
        );
        counter(
            "vantage_collector_batches_duplicate_total",
            "Batches received again and acknowledged without storing.",
            self.duplicates(),
        );
        counter(
            "vantage_collector_series_stored_total",
            "Series stored.",
            self.series.load(Ordering::Relaxed),
        );
        counter(
            "vantage_collector_store_commits_total",
            "Store transactions committed.",
            self.commits.load(Ordering::Relaxed),
        );
        counter(
            "vantage_collector_batches_folded_total",
            "Batches folded into the hourly and daily roll-ups.",
            self.folded(),
        );
        counter(
            "vantage_collector_raw_batches_removed_total",
            "Batches whose one-minute series and raw bytes retention (--keep-raw) removed.",
            self.raw_batches_removed.load(Ordering::Relaxed),
        );
        counter(
            "vantage_collector_raw_series_removed_total",
            "One-minute series removed by retention (--keep-raw); their roll-ups are kept.",
            self.raw_series_removed.load(Ordering::Relaxed),
        );
        counter(
            "vantage_collector_store_upkeep_failures_total",
            "Fold or retention steps that failed (ingest goes on; the step is retried).",
            self.upkeep_failures.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP vantage_collector_store_commit_seconds_total Time spent committing to the store.\n# TYPE vantage_collector_store_commit_seconds_total counter\nvantage_collector_store_commit_seconds_total {:.6}",
            self.commit_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "# HELP vantage_collector_batches_refused_total Batches refused, by reason.\n# TYPE vantage_collector_batches_refused_total counter");
        for (reason, n) in self.refused() {
            let _ = writeln!(
                out,
                "vantage_collector_batches_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP vantage_collector_probe_last_seen_seconds When a probe's last batch arrived, Unix time.\n# TYPE vantage_collector_probe_last_seen_seconds gauge");
        if let Ok(m) = self.last_seen.lock() {
            for (probe, ms) in m.iter() {
                let _ = writeln!(
                    out,
                    "vantage_collector_probe_last_seen_seconds{{probe=\"{}\"}} {:.3}",
                    escape(probe),
                    *ms as f64 / 1e3
                );
            }
        }
        self.render_fleet(&mut out);
        out
    }

    /// The fleet's figures: polls by status, and each probe's last
    /// heartbeat to this collector.
    fn render_fleet(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP vantage_collector_campaign_polls_total Campaign polls answered, by status.\n# TYPE vantage_collector_campaign_polls_total counter");
        for (status, n) in self.polls() {
            let _ = writeln!(
                out,
                "vantage_collector_campaign_polls_total{{status=\"{status}\"}} {n}"
            );
        }
        if let Ok(stored) = self.stored_by_probe.lock() {
            let name = "vantage_collector_probe_batches_stored_total";
            let _ = writeln!(out, "# HELP {name} Batches of a probe this collector stored (rate: the probe's run rate).\n# TYPE {name} counter");
            for (probe, n) in stored.iter() {
                let _ = writeln!(out, "{name}{{probe=\"{}\"}} {n}", escape(probe));
            }
        }
        let Ok(fleet) = self.fleet.lock() else { return };
        let gauges: [(&str, &str, HealthFigure); 6] = [
            ("vantage_collector_probe_last_poll_seconds", "When a probe last polled, Unix time.", |h| Some(h.seen_unix_ms as f64 / 1e3)),
            ("vantage_collector_probe_backlog_batches", "Batches waiting in a probe's spool, at its last poll.", |h| Some(h.backlog_batches as f64)),
            ("vantage_collector_probe_dropped_batches", "Batches a probe's spool dropped at its cap since it started, at its last poll.", |h| Some(h.dropped_batches as f64)),
            ("vantage_collector_probe_clock_offset_seconds", "A probe's clock minus the collector's, from its poll round trips.", |h| h.clock_offset.map(|(o, _)| o as f64 / 1e6)),
            ("vantage_collector_probe_campaign_error", "1 when a probe could not apply the newest campaign it received (it runs the one before).", |h| Some(if h.campaign_error.is_some() { 1.0 } else { 0.0 })),
            ("vantage_collector_probe_window_seconds", "A probe's window: it makes a batch every window, and is silent after a few without one.", |h| (h.window_ms > 0).then(|| h.window_ms as f64 / 1e3)),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (probe, p) in fleet.iter() {
                if let Some(v) = value(&p.health) {
                    let _ = writeln!(out, "{name}{{probe=\"{}\"}} {v}", escape(probe));
                }
            }
        }
        let versions: [(&str, &str, VersionOf); 2] = [
            ("vantage_collector_probe_campaign_version", "The campaign version a probe runs, at its last poll.", |p| p.health.applied.as_ref()),
            ("vantage_collector_probe_campaign_assigned_version", "The campaign version assigned to a probe, at its last poll (drift: it differs from the one it runs).", |p| p.assigned.as_ref()),
        ];
        for (name, help, version_of) in versions {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (probe, p) in fleet.iter() {
                if let Some((campaign, version)) = version_of(p) {
                    let _ = writeln!(
                        out,
                        "{name}{{probe=\"{}\",campaign=\"{}\"}} {version}",
                        escape(probe),
                        escape(campaign)
                    );
                }
            }
        }
    }
}

/// A campaign version of a probe's last poll, if it has one.
type VersionOf = fn(&Polled) -> Option<&(String, u64)>;

/// One figure of a probe's last heartbeat, if it has it.
type HealthFigure = fn(&ProbeHealth) -> Option<f64>;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.count(AckStatus::Stored, 3);
        m.count(AckStatus::Duplicate, 3);
        m.count(AckStatus::Unauthorized, 0);
        m.count(AckStatus::Unauthorized, 0);
        m.seen("lab-in", 1_700_000_000_000, true);
        m.seen("lab-in", 1_700_000_000_000, false);
        m.commit(Duration::from_millis(2));
        m.count_poll(PollStatus::Current);
        m.polled(
            &ProbeHealth {
                probe_id: "lab-in".into(),
                seen_unix_ms: 1_700_000_000_500,
                applied: Some(("move".into(), 3)),
                campaign_error: Some("bad".into()),
                backlog_batches: 7,
                clock_offset: Some((-2_500, 300)),
                window_ms: 60_000,
                ..ProbeHealth::default()
            },
            Some(("move".into(), 4)),
        );
        let text = m.render();
        for line in [
            "vantage_collector_batches_stored_total 1",
            "vantage_collector_batches_duplicate_total 1",
            "vantage_collector_series_stored_total 3",
            "vantage_collector_batches_refused_total{reason=\"unauthorized\"} 2",
            "vantage_collector_probe_last_seen_seconds{probe=\"lab-in\"} 1700000000.000",
            "vantage_collector_store_commit_seconds_total 0.002000",
            "vantage_collector_campaign_polls_total{status=\"current\"} 1",
            "vantage_collector_probe_last_poll_seconds{probe=\"lab-in\"} 1700000000.5",
            "vantage_collector_probe_backlog_batches{probe=\"lab-in\"} 7",
            "vantage_collector_probe_clock_offset_seconds{probe=\"lab-in\"} -0.0025",
            "vantage_collector_probe_campaign_error{probe=\"lab-in\"} 1",
            "vantage_collector_probe_campaign_version{probe=\"lab-in\",campaign=\"move\"} 3",
            "vantage_collector_probe_campaign_assigned_version{probe=\"lab-in\",campaign=\"move\"} 4",
            "vantage_collector_probe_window_seconds{probe=\"lab-in\"} 60",
            "vantage_collector_probe_batches_stored_total{probe=\"lab-in\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // Every sample line belongs to a declared metric.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }
}
