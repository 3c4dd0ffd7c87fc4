//! What a report is computed from, gathered one series at a time: each
//! (probe, window) series is compacted to its resampling [`Unit`] as it
//! arrives and its decoded histogram dropped, so a store of millions of
//! series is reported on without ever being held decoded in memory.

use crate::stats::Unit;
use std::collections::{BTreeMap, BTreeSet};
use vantage_store::{Selector, Store, StoreError, StoredSeries};
use vantage_wire::Metric;

/// Baseline or candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The "before" of the comparison.
    Baseline,
    /// The "after".
    Candidate,
}

/// One group's series on one side.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// One unit per series, and the start of its window.
    pub(crate) units: Vec<Unit>,
    pub(crate) windows: Vec<u64>,
    /// The probe of each unit, as an index into [`Evidence`]'s probe ids.
    pub(crate) unit_probes: Vec<u32>,
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) probes: BTreeSet<String>,
}

/// One side's series, grouped.
#[derive(Debug, Default)]
pub(crate) struct SideEvidence {
    /// By group key (grouping values, then the metric name).
    pub(crate) groups: BTreeMap<Vec<String>, Gathered>,
    pub(crate) probes: BTreeSet<String>,
    pub(crate) targets: BTreeSet<String>,
    /// (first window start, last window end), ms since the Unix epoch.
    pub(crate) span: Option<(u64, u64)>,
}

/// Everything the statistics, charts and HTML of a report need.
#[derive(Debug)]
pub struct Evidence {
    pub(crate) keys: Vec<String>,
    pub(crate) sides: [SideEvidence; 2],
    pub(crate) simulated: bool,
    /// `quic_request` units by (country, data centre), both sides: the
    /// country × data-centre matrix.
    pub(crate) matrix: BTreeMap<(String, String), Vec<Unit>>,
    probe_index: std::collections::HashMap<String, u32>,
}

impl Evidence {
    /// Empty evidence grouped by `group_by` (and always the metric).
    pub fn new(group_by: &[String]) -> Self {
        Evidence {
            keys: group_by.to_vec(),
            sides: [SideEvidence::default(), SideEvidence::default()],
            simulated: false,
            matrix: BTreeMap::new(),
            probe_index: std::collections::HashMap::new(),
        }
    }

    /// Both sides from series already in memory.
    pub fn from_rows(
        baseline: &[StoredSeries],
        candidate: &[StoredSeries],
        group_by: &[String],
    ) -> Self {
        let mut e = Evidence::new(group_by);
        for r in baseline {
            e.add(Role::Baseline, r);
        }
        for r in candidate {
            e.add(Role::Candidate, r);
        }
        e
    }

    /// Both sides of a comparison, streamed from `store`: each series is
    /// compacted as it is read, so a large store is never held decoded.
    pub fn gather(
        store: &mut dyn Store,
        group_by: &[String],
        baseline: &Selector,
        candidate: &Selector,
    ) -> Result<Self, StoreError> {
        let mut evidence = Evidence::new(group_by);
        for (role, selector) in [(Role::Baseline, baseline), (Role::Candidate, candidate)] {
            store.select_each(selector, &mut |row| {
                evidence.add(role, &row);
                Ok(())
            })?;
        }
        Ok(evidence)
    }

    /// Adds one series to `side`.
    pub fn add(&mut self, side: Role, row: &StoredSeries) {
        let s = &row.series;
        let unit = Unit::from_histogram(&s.histogram);
        if s.metric == Metric::QuicRequest {
            self.matrix
                .entry((
                    row.key("country").unwrap_or("-").to_string(),
                    s.target.name.clone(),
                ))
                .or_default()
                .push(unit.clone());
        }
        self.simulated |= row.labels.get("simulated") == Some("true");
        let mut key: Vec<String> = self
            .keys
            .iter()
            .map(|k| row.key(k).unwrap_or("-").to_string())
            .collect();
        key.push(s.metric.name().to_string());
        let next = self.probe_index.len() as u32;
        let probe = *self.probe_index.entry(row.probe_id.clone()).or_insert(next);
        let ev = &mut self.sides[side as usize];
        ev.probes.insert(row.probe_id.clone());
        ev.targets.insert(s.target.name.clone());
        ev.span = Some(match ev.span {
            None => (s.window.start_unix_ms, s.window.end_unix_ms),
            Some((a, b)) => (a.min(s.window.start_unix_ms), b.max(s.window.end_unix_ms)),
        });
        let g = ev.groups.entry(key).or_default();
        g.units.push(unit);
        g.windows.push(s.window.start_unix_ms);
        g.unit_probes.push(probe);
        g.sent += s.sent;
        g.failed += s.lost + s.error_total();
        if !g.probes.contains(&row.probe_id) {
            g.probes.insert(row.probe_id.clone());
        }
    }

    /// Series gathered on `side`.
    pub fn series(&self, side: Role) -> usize {
        self.sides[side as usize]
            .groups
            .values()
            .map(|g| g.units.len())
            .sum()
    }

    pub(crate) fn side(&self, side: Role) -> &SideEvidence {
        &self.sides[side as usize]
    }
}

/// Most resampling units per side of a group. Beyond it, each probe's
/// consecutive windows are merged into blocks (a block bootstrap): windows
/// of one probe close in time share its network, so blocks are, if
/// anything, the more honest unit, and the bootstrap's cost stays bounded
/// however long the campaign.
pub const MAX_UNITS: usize = 4096;

impl Gathered {
    /// The units the bootstrap resamples: the series themselves, or blocks
    /// of each probe's consecutive windows when there are more than `max`.
    pub(crate) fn resampling_units(&self, max: usize) -> Vec<Unit> {
        if self.units.len() <= max {
            return self.units.clone();
        }
        let block = self.units.len().div_ceil(max.max(1));
        let mut by_probe: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in self.unit_probes.iter().enumerate() {
            by_probe.entry(*p).or_default().push(i);
        }
        let mut out = Vec::new();
        for (_, mut idx) in by_probe {
            idx.sort_by_key(|&i| self.windows[i]);
            for chunk in idx.chunks(block) {
                out.push(Unit::merge(chunk.iter().map(|&i| &self.units[i])));
            }
        }
        out
    }
}
