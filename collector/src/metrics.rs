//! Counters of a collector, rendered in the Prometheus text format at
//! `/metrics`, so it can be watched with the tools operators already run.

use crate::live::Live;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_protobuf, prometheus_text, DescriptorEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    live: Live,
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

    /// The live families: latency histograms and goodput gauges.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The Prometheus text exposition (format 0.0.4): classic histograms.
    pub fn render(self: &Arc<Self>) -> String {
        let mut out = String::new();
        if prometheus_text::encode(&mut out, &self.registry()).is_err() {
            tracing::warn!("the /metrics text could not be written");
        }
        out
    }

    /// The Prometheus protobuf exposition: native histograms beside the
    /// classic buckets, for a Prometheus that asks for it.
    pub fn render_protobuf(self: &Arc<Self>) -> Vec<u8> {
        prometheus_protobuf::encode_to_vec(&self.registry()).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "the /metrics protobuf could not be written");
            Vec::new()
        })
    }

    fn registry(self: &Arc<Self>) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposed(self.clone())));
        registry
    }

    /// Every family, in the order they are listed.
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters: [(&str, &str, u64); 8] = [
            (
                "vantage_collector_batches_stored",
                "Batches stored",
                self.stored(),
            ),
            (
                "vantage_collector_batches_duplicate",
                "Batches received again and acknowledged without storing",
                self.duplicates(),
            ),
            (
                "vantage_collector_series_stored",
                "Series stored",
                self.series.load(Ordering::Relaxed),
            ),
            (
                "vantage_collector_store_commits",
                "Store transactions committed",
                self.commits.load(Ordering::Relaxed),
            ),
            (
                "vantage_collector_batches_folded",
                "Batches folded into the hourly and daily roll-ups",
                self.folded(),
            ),
            (
                "vantage_collector_raw_batches_removed",
                "Batches whose one-minute series and raw bytes retention (--keep-raw) removed",
                self.raw_batches_removed.load(Ordering::Relaxed),
            ),
            (
                "vantage_collector_raw_series_removed",
                "One-minute series removed by retention (--keep-raw); their roll-ups are kept",
                self.raw_series_removed.load(Ordering::Relaxed),
            ),
            (
                "vantage_collector_store_upkeep_failures",
                "Fold or retention steps that failed (ingest goes on; the step is retried)",
                self.upkeep_failures.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            counter(
                encoder.encode_descriptor(name, help, None, MetricType::Counter)?,
                v,
            )?;
        }
        let commit_s = self.commit_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_descriptor(
                "vantage_collector_store_commit_seconds",
                "Time spent committing to the store",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&commit_s, None)?;
        let mut family = encoder.encode_descriptor(
            "vantage_collector_batches_refused",
            "Batches refused, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in self.refused() {
            counter(family.encode_family(&[("reason", reason)])?, n)?;
        }
        if let Ok(m) = self.last_seen.lock() {
            let mut family = encoder.encode_descriptor(
                "vantage_collector_probe_last_seen_seconds",
                "When a probe's last batch arrived, Unix time",
                None,
                MetricType::Gauge,
            )?;
            for (probe, ms) in m.iter() {
                family
                    .encode_family(&[("probe", probe.as_str())])?
                    .encode_gauge(&(*ms as f64 / 1e3))?;
            }
        }
        self.encode_fleet(encoder)?;
        self.live.encode(encoder)
    }

    /// The fleet's figures: polls by status, and each probe's last
    /// heartbeat to this collector.
    fn encode_fleet(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "vantage_collector_campaign_polls",
            "Campaign polls answered, by status",
            None,
            MetricType::Counter,
        )?;
        for (status, n) in self.polls() {
            counter(family.encode_family(&[("status", status)])?, n)?;
        }
        if let Ok(stored) = self.stored_by_probe.lock() {
            let mut family = encoder.encode_descriptor(
                "vantage_collector_probe_batches_stored",
                "Batches of a probe this collector stored (rate: the probe's run rate)",
                None,
                MetricType::Counter,
            )?;
            for (probe, n) in stored.iter() {
                counter(family.encode_family(&[("probe", probe.as_str())])?, *n)?;
            }
        }
        let Ok(fleet) = self.fleet.lock() else {
            return Ok(());
        };
        let gauges: [(&str, &str, HealthFigure); 6] = [
            ("vantage_collector_probe_last_poll_seconds", "When a probe last polled, Unix time", |h| Some(h.seen_unix_ms as f64 / 1e3)),
            ("vantage_collector_probe_backlog_batches", "Batches waiting in a probe's spool, at its last poll", |h| Some(h.backlog_batches as f64)),
            ("vantage_collector_probe_dropped_batches", "Batches a probe's spool dropped at its cap since it started, at its last poll", |h| Some(h.dropped_batches as f64)),
            ("vantage_collector_probe_clock_offset_seconds", "A probe's clock minus the collector's, from its poll round trips", |h| h.clock_offset.map(|(o, _)| o as f64 / 1e6)),
            ("vantage_collector_probe_campaign_error", "1 when a probe could not apply the newest campaign it received (it runs the one before)", |h| Some(if h.campaign_error.is_some() { 1.0 } else { 0.0 })),
            ("vantage_collector_probe_window_seconds", "A probe's window: it makes a batch every window, and is silent after a few without one", |h| (h.window_ms > 0).then(|| h.window_ms as f64 / 1e3)),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (probe, p) in fleet.iter() {
                if let Some(v) = value(&p.health) {
                    family
                        .encode_family(&[("probe", probe.as_str())])?
                        .encode_gauge(&v)?;
                }
            }
        }
        let versions: [(&str, &str, VersionOf); 2] = [
            ("vantage_collector_probe_campaign_version", "The campaign version a probe runs, at its last poll", |p| p.health.applied.as_ref()),
            ("vantage_collector_probe_campaign_assigned_version", "The campaign version assigned to a probe, at its last poll (drift: it differs from the one it runs)", |p| p.assigned.as_ref()),
        ];
        for (name, help, version_of) in versions {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (probe, p) in fleet.iter() {
                if let Some((campaign, version)) = version_of(p) {
                    family
                        .encode_family(&[
                            ("probe", probe.as_str()),
                            ("campaign", campaign.as_str()),
                        ])?
                        .encode_gauge(version)?;
                }
            }
        }
        Ok(())
    }
}

/// The collector's figures as prometheus-client sees them: encoded afresh
/// at each scrape, in text or protobuf.
#[derive(Debug)]
struct Exposed(Arc<Metrics>);

impl Collector for Exposed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(&mut encoder)
    }
}

/// Writes one counter sample.
pub(crate) fn counter(mut metric: MetricEncoder, v: u64) -> Result<(), std::fmt::Error> {
    metric.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A campaign version of a probe's last poll, if it has one.
type VersionOf = fn(&Polled) -> Option<&(String, u64)>;

/// One figure of a probe's last heartbeat, if it has it.
type HealthFigure = fn(&ProbeHealth) -> Option<f64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Arc::new(Metrics::default());
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
            "vantage_collector_probe_last_seen_seconds{probe=\"lab-in\"} 1700000000.0",
            "vantage_collector_store_commit_seconds_total 0.002",
            "vantage_collector_campaign_polls_total{status=\"current\"} 1",
            "vantage_collector_probe_last_poll_seconds{probe=\"lab-in\"} 1700000000.5",
            "vantage_collector_probe_backlog_batches{probe=\"lab-in\"} 7.0",
            "vantage_collector_probe_clock_offset_seconds{probe=\"lab-in\"} -0.0025",
            "vantage_collector_probe_campaign_error{probe=\"lab-in\"} 1.0",
            "vantage_collector_probe_campaign_version{probe=\"lab-in\",campaign=\"move\"} 3",
            "vantage_collector_probe_campaign_assigned_version{probe=\"lab-in\",campaign=\"move\"} 4",
            "vantage_collector_probe_window_seconds{probe=\"lab-in\"} 60.0",
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
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name} undeclared"
            );
        }
    }
}
