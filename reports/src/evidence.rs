//! What a report is computed from, gathered one series at a time: each
//! (probe, window) series is compacted to its resampling [`Unit`] as it
//! arrives and its decoded histogram dropped, so a store of millions of
//! series is reported on without ever being held decoded in memory.

use crate::stats::Unit;
use std::collections::{BTreeMap, BTreeSet};
use vantage_store::{Resolution, Selector, Store, StoreError, StoredSeries};
use vantage_wire::{Metric, SparseCounts};

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
    /// One unit per series (or, past [`GATHER_CAP`], per block of a
    /// probe's consecutive series), and the start of its first window.
    pub(crate) units: Vec<Unit>,
    pub(crate) windows: Vec<u64>,
    /// Series read into the units.
    pub(crate) series: usize,
    /// How many of a probe's consecutive series a unit holds at most
    /// (doubles at each merge past [`GATHER_CAP`]; 0 means 1).
    pub(crate) merged: u64,
    /// The probe of each unit, as an index into [`Evidence`]'s probe ids.
    pub(crate) unit_probes: Vec<u32>,
    /// (value, count) pairs the units hold, for [`GATHER_PAIRS`].
    pairs: usize,
    pub(crate) sent: u64,
    pub(crate) failed: u64,
    pub(crate) lost: u64,
    /// Failed attempts by error class, finer reason and HTTP status
    /// (names as stored: `timeout`, `tls_expired`, `503`).
    pub(crate) failures: Failures,
    pub(crate) probes: BTreeSet<String>,
    /// Distinct `network` labels of the probes (`-` when unlabelled).
    pub(crate) networks: BTreeSet<String>,
}

/// What failed in a group's attempts, by cause: what the page shows next
/// to the latencies, so a move that trades latency for errors is seen.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Failures {
    /// Attempts that failed, by error class.
    pub classes: BTreeMap<String, u64>,
    /// The finer TLS and DNS reasons, counted within their class.
    pub reasons: BTreeMap<String, u64>,
    /// HTTP statuses seen (success and not).
    pub statuses: BTreeMap<String, u64>,
    /// `udp_rtt` losses by direction: `forward`, `backward`, and `unknown`
    /// where the reflector's sequence numbers mirror the probe's (a
    /// stateless reflector), so no side can be named. Only those seen.
    pub loss_direction: BTreeMap<String, u64>,
}

impl Failures {
    /// Adds one series' counts.
    fn add(&mut self, s: &vantage_wire::Series) {
        for (class, n) in &s.errors {
            *slot(&mut self.classes, &class.name().to_string()) += n;
        }
        for (reason, n) in &s.reasons {
            *slot(&mut self.reasons, &reason.name().to_string()) += n;
        }
        for (status, n) in &s.statuses {
            *slot(&mut self.statuses, &status.to_string()) += n;
        }
        let p = &s.path;
        for (direction, n) in [
            ("forward", p.forward_lost),
            ("backward", p.backward_lost),
            ("unknown", p.unknown_direction_lost),
        ] {
            if n > 0 {
                *slot(&mut self.loss_direction, &direction.to_string()) += n;
            }
        }
    }
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
    /// Some series came from the lab's relay mode (label
    /// `emulation=relay`), which cannot emulate every metric.
    pub(crate) relay_emulated: bool,
    /// `quic_request` units by (country, data centre), both sides: the
    /// country × data-centre matrix.
    pub(crate) matrix: BTreeMap<(String, String), Vec<Unit>>,
    probe_index: std::collections::HashMap<String, u32>,
    /// Which stored series the units are: the probes' windows, or hourly
    /// or daily roll-ups.
    pub(crate) resolution: Resolution,
    /// Why that resolution, for the methods section.
    pub(crate) resolution_reason: String,
    /// The longest window of any series read, ms (0: none); a probe's
    /// last window may be cut short, so the longest is its window.
    pub(crate) longest_window_ms: u64,
    /// Reused lookup keys (a group's, a matrix cell's), so reading a row
    /// allocates no key.
    scratch_key: Vec<String>,
    scratch_cell: (String, String),
    /// The phase switches stored with the campaigns that lead to the
    /// candidate's phase: the cut-over where it really happened.
    pub(crate) cut_overs: Vec<CutOver>,
}

/// A stored phase switch: from `at_unix_ms` on, campaign `campaign`'s
/// probes labelled their windows `phase`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CutOver {
    /// The campaign.
    pub campaign: String,
    /// The phase switched to.
    pub phase: String,
    /// The instant, ms since the epoch.
    pub at_unix_ms: u64,
}

/// Windows in which a probe of a group sent nothing, on one side: over
/// the side's run (its median probe's first window to its median probe's
/// last), each probe of the group is expected to send a series for every
/// window (hour, day: the unit resampled); one it did not is silent.
/// Silent windows add no unit, so they are counted here instead of being
/// averaged over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SilentWindows {
    /// The group's values (the metric left out: a probe's window counts
    /// when any metric has a series in it).
    pub group: Vec<String>,
    /// `baseline` or `candidate`.
    pub side: &'static str,
    /// Probes of the group on that side.
    pub probes: usize,
    /// Windows expected: probes × windows in the side's span.
    pub expected: u64,
    /// Of those, windows with no series.
    pub silent: u64,
    /// False when the group's units were merged into blocks while read,
    /// so single windows can no longer be told apart (not counted).
    pub counted: bool,
}

/// The value at `key`, inserted empty if missing; the key is cloned only
/// then (`entry` would take it owned for every lookup).
fn slot<'m, K: Ord + Clone, V: Default>(map: &'m mut BTreeMap<K, V>, key: &K) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.clone(), V::default());
    }
    map.get_mut(key).expect("inserted just above")
}

/// Sets `dst` to `src`, reusing its allocation.
fn set(dst: &mut String, src: &str) {
    if dst != src {
        dst.clear();
        dst.push_str(src);
    }
}

/// Which resolution a report reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolutionChoice {
    /// The coarsest at which every group keeps enough units.
    #[default]
    Auto,
    /// This one.
    Fixed(Resolution),
}

impl std::str::FromStr for ResolutionChoice {
    type Err = vantage_store::ResolutionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(ResolutionChoice::Auto),
            other => other.parse().map(ResolutionChoice::Fixed),
        }
    }
}

/// Why the evidence could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing is stored at the resolution asked for, but at others.
    #[error("no series at resolution {asked} match the selectors; the store has them at {}: use --resolution with one of those (one-minute series may have been removed by --keep-raw)", names(.available))]
    NoSuchResolution {
        /// What was asked for.
        asked: Resolution,
        /// What the store has for the selection.
        available: Vec<Resolution>,
    },
}

fn names(rs: &[Resolution]) -> String {
    rs.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
}

impl Evidence {
    /// Empty evidence grouped by `group_by` (and always the metric).
    pub fn new(group_by: &[String]) -> Self {
        Evidence {
            keys: group_by.to_vec(),
            sides: [SideEvidence::default(), SideEvidence::default()],
            simulated: false,
            relay_emulated: false,
            matrix: BTreeMap::new(),
            probe_index: std::collections::HashMap::new(),
            resolution: Resolution::Window,
            resolution_reason: "the series as given".into(),
            longest_window_ms: 0,
            scratch_key: Vec::new(),
            scratch_cell: (String::new(), String::new()),
            cut_overs: Vec::new(),
        }
    }

    /// Both sides from series already in memory.
    pub fn from_rows(
        baseline: &[StoredSeries],
        candidate: &[StoredSeries],
        group_by: &[String],
    ) -> Self {
        let mut e = Evidence::new(group_by);
        for (role, rows) in [(Role::Baseline, baseline), (Role::Candidate, candidate)] {
            for r in rows {
                e.add(role, r, &SparseCounts::of(&r.series.histogram));
            }
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
            store.select_sparse(selector, &mut |row, counts| {
                evidence.add(role, row, counts);
                Ok(())
            })?;
        }
        Ok(evidence)
    }

    /// Both sides at the resolution `choice` names. `Auto` tries daily
    /// roll-ups, then hourly, then the probes' windows, and keeps the
    /// coarsest at which every group with data on both sides has at least
    /// `min_units` (probe, block) units a side: fewer rows to read, and
    /// units that are, if anything, more independent.
    pub fn gather_at(
        store: &mut dyn Store,
        group_by: &[String],
        baseline: &Selector,
        candidate: &Selector,
        choice: ResolutionChoice,
        min_units: usize,
    ) -> Result<Self, GatherError> {
        let mut e = Self::gather_resolved(store, group_by, baseline, candidate, choice, min_units)?;
        e.cut_overs = cut_overs(store, candidate)?;
        Ok(e)
    }

    fn gather_resolved(
        store: &mut dyn Store,
        group_by: &[String],
        baseline: &Selector,
        candidate: &Selector,
        choice: ResolutionChoice,
        min_units: usize,
    ) -> Result<Self, GatherError> {
        let at = |r: Resolution, s: &Selector| Selector {
            resolution: r,
            ..s.clone()
        };
        match choice {
            ResolutionChoice::Fixed(r) => {
                let mut e = Self::gather(store, group_by, &at(r, baseline), &at(r, candidate))?;
                if e.series(Role::Baseline) + e.series(Role::Candidate) == 0 {
                    let mut available = Vec::new();
                    for other in Resolution::ALL {
                        if other != r
                            && (store.any(&at(other, baseline))?
                                || store.any(&at(other, candidate))?)
                        {
                            available.push(other);
                        }
                    }
                    if !available.is_empty() {
                        return Err(GatherError::NoSuchResolution {
                            asked: r,
                            available,
                        });
                    }
                }
                e.resolution = r;
                e.resolution_reason = format!("{} as asked (--resolution {})", unit_name(r), r);
                Ok(e)
            }
            ResolutionChoice::Auto => {
                for r in [Resolution::Day, Resolution::Hour] {
                    let mut e = Self::gather(store, group_by, &at(r, baseline), &at(r, candidate))?;
                    if e.every_group_has(min_units) {
                        e.resolution = r;
                        e.resolution_reason = format!(
                            "{}: the coarsest resolution at which every group has at least {min_units} units on each side",
                            unit_name(r)
                        );
                        return Ok(e);
                    }
                }
                let r = Resolution::Window;
                let mut e = Self::gather(store, group_by, &at(r, baseline), &at(r, candidate))?;
                e.resolution = r;
                e.resolution_reason = format!(
                    "{}: hourly and daily roll-ups would leave some group with fewer than {min_units} units on a side",
                    unit_name(r)
                );
                Ok(e)
            }
        }
    }

    /// Whether the evidence has data and every group with data on both
    /// sides has at least `n` units on each.
    fn every_group_has(&self, n: usize) -> bool {
        let (b, c) = (&self.sides[0].groups, &self.sides[1].groups);
        !b.is_empty()
            && !c.is_empty()
            && b.iter()
                .filter_map(|(k, g)| c.get(k).map(|h| (g, h)))
                .all(|(g, h)| g.units.len() >= n && h.units.len() >= n)
    }

    /// The resolution the units are at.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// Adds one series to `side`, its histogram as `counts` (the series'
    /// own `histogram` is not read).
    pub fn add(&mut self, side: Role, row: &StoredSeries, counts: &SparseCounts) {
        let s = &row.series;
        let unit = Unit::from_counts(counts);
        if s.metric == Metric::QuicRequest {
            // Looked up through a reused key, so a row allocates no key.
            let cell_key = &mut self.scratch_cell;
            set(&mut cell_key.0, row.key("country").unwrap_or("-"));
            set(&mut cell_key.1, &s.target.name);
            let cell = slot(&mut self.matrix, cell_key);
            cell.push(unit.clone());
            // The matrix shows percentiles only, which merging keeps.
            if cell.len() > MATRIX_CELL_CAP {
                let merged = Unit::merge(cell.iter());
                *cell = vec![merged];
            }
        }
        self.simulated |= row.labels.get("simulated") == Some("true");
        self.relay_emulated |= row.labels.get("emulation") == Some("relay");
        let length = s.window.end_unix_ms.saturating_sub(s.window.start_unix_ms);
        self.longest_window_ms = self.longest_window_ms.max(length);
        let key = &mut self.scratch_key;
        key.resize(self.keys.len() + 1, String::new());
        for (slot, k) in key.iter_mut().zip(&self.keys) {
            set(slot, row.key(k).unwrap_or("-"));
        }
        set(&mut key[self.keys.len()], s.metric.name());
        let probe = match self.probe_index.get(&row.probe_id) {
            Some(&p) => p,
            None => {
                let next = self.probe_index.len() as u32;
                self.probe_index.insert(row.probe_id.clone(), next);
                next
            }
        };
        let ev = &mut self.sides[side as usize];
        if !ev.probes.contains(&row.probe_id) {
            ev.probes.insert(row.probe_id.clone());
        }
        if !ev.targets.contains(&s.target.name) {
            ev.targets.insert(s.target.name.clone());
        }
        ev.span = Some(match ev.span {
            None => (s.window.start_unix_ms, s.window.end_unix_ms),
            Some((a, b)) => (a.min(s.window.start_unix_ms), b.max(s.window.end_unix_ms)),
        });
        let g = slot(&mut ev.groups, key);
        g.push(unit, s.window.start_unix_ms, probe);
        g.sent += s.sent;
        g.failed += s.lost + s.error_total();
        g.lost += s.lost;
        g.failures.add(s);
        if !g.probes.contains(&row.probe_id) {
            g.probes.insert(row.probe_id.clone());
        }
        let network = row.key("network").filter(|n| !n.is_empty()).unwrap_or("-");
        if !g.networks.contains(network) {
            g.networks.insert(network.to_string());
        }
    }

    /// The stored phase switches to the candidate's phase.
    pub fn cut_overs(&self) -> &[CutOver] {
        &self.cut_overs
    }

    /// How long one unit's block is, ms: the probes' window, an hour or a day.
    fn unit_ms(&self) -> u64 {
        match self.resolution {
            Resolution::Window => self.longest_window_ms.max(1),
            Resolution::Hour => 3_600_000,
            Resolution::Day => 86_400_000,
        }
    }

    /// Silent windows per group and side (see [`SilentWindows`]).
    pub fn silent_windows(&self) -> Vec<SilentWindows> {
        let unit = self.unit_ms();
        let mut out = Vec::new();
        for (role, name) in [(Role::Baseline, "baseline"), (Role::Candidate, "candidate")] {
            let side = self.side(role);
            // Per group (metric left out): each probe's window indices.
            let mut groups: BTreeMap<&[String], (ProbeWindows, bool)> = BTreeMap::new();
            for (key, g) in &side.groups {
                let (probes, merged) = groups.entry(&key[..self.keys.len()]).or_default();
                *merged |= g.merged > 1;
                for (w, p) in g.windows.iter().zip(&g.unit_probes) {
                    probes.entry(*p).or_default().insert(w / unit);
                }
            }
            let Some((first, last)) = median_run(groups.values().map(|(p, _)| p)) else {
                continue;
            };
            let span = last - first + 1;
            for (group, (probes, merged)) in groups {
                let present: u64 = probes
                    .values()
                    .map(|w| w.range(first..=last).count() as u64)
                    .sum();
                let expected = span * probes.len() as u64;
                out.push(SilentWindows {
                    group: group.to_vec(),
                    side: name,
                    probes: probes.len(),
                    expected,
                    silent: expected.saturating_sub(present),
                    counted: !merged,
                });
            }
        }
        out
    }

    /// Series gathered on `side`.
    pub fn series(&self, side: Role) -> usize {
        self.sides[side as usize]
            .groups
            .values()
            .map(|g| g.series)
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
pub const MAX_UNITS: usize = 1024;

/// Most units a group holds while it is gathered. Past it, each probe's
/// consecutive units are merged in pairs (in window order), so memory is
/// bounded by the number of groups, never by the series read; merges are
/// exact, so percentiles do not change, and the bootstrap resamples the
/// merged blocks (of one probe, close in time) as its units.
pub const GATHER_CAP: usize = MAX_UNITS;

/// Most (value, count) pairs a group holds on a side while it is gathered
/// (2 MiB): units of hours or days hold thousands of distinct buckets
/// each, so past it units are merged in pairs as past [`GATHER_CAP`],
/// bounding memory by the groups however wide each unit's distribution.
pub(crate) const GATHER_PAIRS: usize = 256 * 1024;

/// The pair budget never merges a group below this many units (the unit
/// cap alone may): a bootstrap needs hundreds of blocks.
pub(crate) const GATHER_PAIRS_FLOOR: usize = 256;

/// Units a country × data-centre cell holds before they are merged into
/// one (the matrix shows percentiles only).
const MATRIX_CELL_CAP: usize = 64;

impl Gathered {
    /// Adds one series' unit.
    fn push(&mut self, unit: Unit, window: u64, probe: u32) {
        self.pairs += unit.pair_count();
        self.units.push(unit);
        self.windows.push(window);
        self.unit_probes.push(probe);
        self.series += 1;
        if self.units.len() > GATHER_CAP
            || (self.pairs > GATHER_PAIRS && self.units.len() > 2 * GATHER_PAIRS_FLOOR)
        {
            self.merge_pairs();
        }
    }

    /// Takes in `other`'s series too: a country's group gathered from its
    /// strata (every series is in exactly one stratum, so none twice).
    pub(crate) fn absorb(&mut self, other: &Gathered) {
        self.units.extend(other.units.iter().cloned());
        self.windows.extend_from_slice(&other.windows);
        self.unit_probes.extend_from_slice(&other.unit_probes);
        self.pairs += other.pairs;
        self.series += other.series;
        self.merged = self.merged.max(other.merged);
        self.sent += other.sent;
        self.failed += other.failed;
        self.lost += other.lost;
        for (mine, theirs) in [
            (&mut self.failures.classes, &other.failures.classes),
            (&mut self.failures.reasons, &other.failures.reasons),
            (&mut self.failures.statuses, &other.failures.statuses),
            (
                &mut self.failures.loss_direction,
                &other.failures.loss_direction,
            ),
        ] {
            for (k, n) in theirs {
                *mine.entry(k.clone()).or_default() += n;
            }
        }
        self.probes.extend(other.probes.iter().cloned());
        self.networks.extend(other.networks.iter().cloned());
    }

    /// Merges each probe's units in pairs, in window order.
    fn merge_pairs(&mut self) {
        let (units, windows, probes) = self.blocks(2);
        self.pairs = units.iter().map(Unit::pair_count).sum();
        self.units = units;
        self.windows = windows;
        self.unit_probes = probes;
        self.merged = 2 * self.merged.max(1);
    }

    /// Each probe's units merged `block` at a time, in window order: the
    /// merged units, each one's first window, and its probe.
    fn blocks(&self, block: usize) -> (Vec<Unit>, Vec<u64>, Vec<u32>) {
        let mut by_probe: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, p) in self.unit_probes.iter().enumerate() {
            by_probe.entry(*p).or_default().push(i);
        }
        let (mut units, mut windows, mut probes) = (Vec::new(), Vec::new(), Vec::new());
        for (probe, mut idx) in by_probe {
            idx.sort_by_key(|&i| self.windows[i]);
            for chunk in idx.chunks(block.max(1)) {
                units.push(Unit::merge(chunk.iter().map(|&i| &self.units[i])));
                windows.push(self.windows[chunk[0]]);
                probes.push(probe);
            }
        }
        (units, windows, probes)
    }

    /// The units the bootstrap resamples: the series themselves, or blocks
    /// of each probe's consecutive windows when there are more than `max`;
    /// with the probe of each.
    pub(crate) fn resampling_units(&self, max: usize) -> (Vec<Unit>, Vec<u32>) {
        if self.units.len() <= max {
            return (self.units.clone(), self.unit_probes.clone());
        }
        let (units, _, probes) = self.blocks(self.units.len().div_ceil(max.max(1)));
        (units, probes)
    }
}

/// What one resampled unit is at `r`.
/// Each probe's window (or hour, or day) indices, by probe index.
type ProbeWindows = BTreeMap<u32, BTreeSet<u64>>;

/// The window indices a side ran over: from its median probe's first to
/// its median probe's last (each probe's across every group), so probes
/// that started or stopped a window or two apart are not counted silent
/// for it, while one that stopped early is.
fn median_run<'a>(groups: impl Iterator<Item = &'a ProbeWindows>) -> Option<(u64, u64)> {
    let mut ends: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for probes in groups {
        for (p, w) in probes {
            let (Some(&a), Some(&b)) = (w.first(), w.last()) else {
                continue;
            };
            let e = ends.entry(*p).or_insert((a, b));
            *e = (e.0.min(a), e.1.max(b));
        }
    }
    let mut firsts: Vec<u64> = ends.values().map(|e| e.0).collect();
    let mut lasts: Vec<u64> = ends.values().map(|e| e.1).collect();
    firsts.sort_unstable();
    lasts.sort_unstable();
    let (first, last) = (
        *firsts.get(firsts.len() / 2)?,
        *lasts.get((lasts.len() - 1) / 2)?,
    );
    Some((first, last.max(first)))
}

/// The phase switches stored with the campaigns the candidate selects
/// (all, unless it names a campaign) to a phase it selects (any, unless
/// it names one), in time order.
fn cut_overs(store: &mut dyn Store, candidate: &Selector) -> Result<Vec<CutOver>, StoreError> {
    let wanted = |key: &str, v: &str| {
        candidate
            .equals
            .get(key)
            .is_none_or(|vs| vs.iter().any(|w| w == v))
    };
    let mut out = Vec::new();
    for (campaign, _) in store.campaigns()? {
        if !wanted("campaign", &campaign) {
            continue;
        }
        // The latest version holds every switch made so far.
        let Some(latest) = store.campaign_version(&campaign, None)? else {
            continue;
        };
        out.extend(
            latest
                .phases
                .into_iter()
                .filter(|p| wanted("phase", &p.phase))
                .map(|p| CutOver {
                    campaign: campaign.clone(),
                    phase: p.phase,
                    at_unix_ms: p.at_unix_ms,
                }),
        );
    }
    out.sort_by_key(|c| c.at_unix_ms);
    Ok(out)
}

fn unit_name(r: Resolution) -> &'static str {
    match r {
        Resolution::Window => "(probe, window) series",
        Resolution::Hour => "(probe, hour) roll-ups",
        Resolution::Day => "(probe, day) roll-ups",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::quantiles;
    use vantage_wire::{Labels, Series, Target, Window};

    fn row(probe: &str, window: u64, values: &[u64]) -> StoredSeries {
        let mut labels = Labels::new();
        labels.insert("country", "IN").unwrap();
        let mut s = Series::new(
            Target {
                name: "sg".into(),
                address: "127.0.0.1:1".into(),
            },
            Metric::QuicRequest,
            Window {
                start_unix_ms: window * 60_000,
                end_unix_ms: (window + 1) * 60_000,
            },
        );
        for v in values {
            s.histogram.record(*v).unwrap();
        }
        s.sent = values.len() as u64;
        StoredSeries {
            probe_id: probe.into(),
            sequence: window,
            campaign: "c".into(),
            labels,
            series: s,
        }
    }

    #[test]
    fn windows_a_probe_sent_nothing_in_are_counted_per_group_and_side() {
        // p1 sends windows 0..10 but none in 3 and 4; p2 sends all ten;
        // p1's window 5 has only a photo-sync series (another metric):
        // still not silent.
        let mut baseline: Vec<StoredSeries> = (0..10)
            .filter(|w| ![3, 4, 5].contains(w))
            .map(|w| row("p1", w, &[1_000]))
            .chain((0..10).map(|w| row("p2", w, &[1_000])))
            .collect();
        let mut other = row("p1", 5, &[1_000]);
        other.series.metric = Metric::PhotosyncUpload;
        baseline.push(other);
        // p3 stops after window 4: its last five windows are silent (the
        // side's run is the median probe's, so one probe stopping early
        // does not shorten it).
        baseline.extend((0..5).map(|w| row("p3", w, &[1_000])));
        let candidate: Vec<StoredSeries> = (20..25).map(|w| row("p1", w, &[900])).collect();
        let e = Evidence::from_rows(&baseline, &candidate, &["country".into()]);
        let silent = e.silent_windows();
        let side = |name: &str| silent.iter().find(|s| s.side == name).unwrap();
        assert_eq!(silent.len(), 2, "{silent:?}");
        let b = side("baseline");
        assert_eq!(b.group, ["IN"]);
        assert_eq!(
            (b.probes, b.expected, b.silent, b.counted),
            (3, 30, 7, true)
        );
        let c = side("candidate");
        assert_eq!((c.probes, c.expected, c.silent), (1, 5, 0));
    }

    #[test]
    fn wide_units_are_merged_to_the_pair_budget_but_not_below_its_floor() {
        // Hour-like units: 1,500 distinct buckets each (values exact below 2048).
        let rows: Vec<StoredSeries> = (0..700u64)
            .map(|w| {
                let values: Vec<u64> = (0..1500).map(|i| 1 + (i + w) % 2000).collect();
                row(&format!("p{}", w % 4), w, &values)
            })
            .collect();
        let evidence = Evidence::from_rows(&rows, &[], &["country".to_string()]);
        let g = &evidence.side(Role::Baseline).groups
            [&vec!["IN".to_string(), "quic_request".to_string()]];
        assert!(g.units.len() < 700, "{} units: never merged", g.units.len());
        assert!(
            g.units.len() >= GATHER_PAIRS_FLOOR,
            "{} units",
            g.units.len()
        );
        assert_eq!(g.series, 700);
        let held: usize = g.units.iter().map(Unit::pair_count).sum();
        assert_eq!(held, g.pairs);
        let all: Vec<Unit> = rows
            .iter()
            .map(|r| Unit::from_histogram(&r.series.histogram))
            .collect();
        let qs = [0.0, 0.5, 0.99, 1.0];
        assert_eq!(quantiles(&g.units, &qs), quantiles(&all, &qs));
    }

    #[test]
    fn a_large_group_is_held_in_bounded_units_with_the_same_percentiles() {
        let mut rows = Vec::new();
        for w in 0..10_000u64 {
            rows.push(row("p1", w, &[1000 + w % 700, 5000 + (w * 37) % 9000]));
        }
        for w in 0..300u64 {
            rows.push(row("p2", w, &[800 + w]));
        }
        let evidence = Evidence::from_rows(&rows, &[], &["country".into()]);
        let g = &evidence.side(Role::Baseline).groups
            [&vec!["IN".to_string(), "quic_request".to_string()]];
        assert!(g.units.len() <= GATHER_CAP, "{} units", g.units.len());
        assert!(g.units.len() > GATHER_CAP / 4, "{} units", g.units.len());
        assert_eq!(g.series, 10_300, "every series counted");
        assert!(g.merged >= 2, "merged {}", g.merged);
        assert_eq!(evidence.longest_window_ms, 60_000);
        assert_eq!(evidence.series(Role::Baseline), 10_300);
        let all: Vec<Unit> = rows
            .iter()
            .map(|r| Unit::from_histogram(&r.series.histogram))
            .collect();
        let qs = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0];
        assert_eq!(
            quantiles(&g.units, &qs),
            quantiles(&all, &qs),
            "merges are exact"
        );
        let samples: u64 = g.units.iter().map(Unit::samples).sum();
        assert_eq!(samples, 20_300);
        // Blocks never mix probes, and p2's 300 windows stay apart from p1's.
        assert_eq!(g.unit_probes.len(), g.units.len());
        let p2 = *evidence.probe_index.get("p2").unwrap();
        let p2_samples: u64 = g
            .units
            .iter()
            .zip(&g.unit_probes)
            .filter(|(_, p)| **p == p2)
            .map(|(u, _)| u.samples())
            .sum();
        assert_eq!(p2_samples, 300);
        // The matrix cell keeps the percentiles of all its units.
        let cell = &evidence.matrix[&("IN".to_string(), "sg".to_string())];
        assert!(cell.len() <= MATRIX_CELL_CAP);
        assert_eq!(quantiles(cell, &qs), quantiles(&all, &qs));
    }
}
