//! Selecting stored series by label and merging them into groups:
//! histograms add exactly, so any grouping is one merge away.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use vantage_wire::{Labels, Series, SparseCounts, Window};

/// One stored series with the identity and labels of its batch.
#[derive(Debug, Clone)]
pub struct StoredSeries {
    /// Probe that measured it.
    pub probe_id: String,
    /// Its batch's sequence number; 0 for a roll-up, which merges many.
    pub sequence: u64,
    /// Campaign.
    pub campaign: String,
    /// The batch's labels.
    pub labels: Labels,
    /// The series.
    pub series: Series,
}

impl StoredSeries {
    /// The value of a selection key: a label, or one of `probe`,
    /// `campaign`, `target`, `metric`.
    pub fn key(&self, key: &str) -> Option<&str> {
        batch_key(
            key,
            [&self.probe_id, &self.campaign, &self.series.target.name],
            self.series.metric,
            &self.labels,
        )
    }
}

/// A selection key's value for a stored row of a batch: `probe`,
/// `campaign`, `target` (`ids` in that order), `metric`, or a label.
pub(crate) fn batch_key<'a>(
    key: &str,
    ids: [&'a str; 3],
    metric: vantage_wire::Metric,
    labels: &'a Labels,
) -> Option<&'a str> {
    match key {
        "probe" | "probe_id" => Some(ids[0]),
        "campaign" => Some(ids[1]),
        "target" => Some(ids[2]),
        "metric" => Some(metric.name()),
        label => labels.get(label),
    }
}

/// Which series to take: every `key=value` must match (values separated
/// by `|` are alternatives), plus an optional time range on window starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Required values by key.
    pub equals: BTreeMap<String, Vec<String>>,
    /// Windows starting at or after this, ms since the epoch.
    pub since_unix_ms: Option<u64>,
    /// Windows ending at or before this, ms since the epoch.
    pub until_unix_ms: Option<u64>,
    /// Which series: the probes' own windows, or hourly or daily roll-ups.
    pub resolution: crate::Resolution,
}

/// A selector that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("selector `{0}`: expected key=value[,key=value…], such as country=IN,phase=before (alternatives with |: target=beijing|oregon)")]
pub struct SelectorError(pub String);

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut sel = Selector::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| SelectorError(s.to_string()))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(SelectorError(s.to_string()));
            }
            let values = v.split('|').map(|v| {
                if k == "country" {
                    v.to_ascii_uppercase()
                } else {
                    v.to_string()
                }
            });
            sel.equals.entry(k.to_string()).or_default().extend(values);
        }
        Ok(sel)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .equals
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Selector {
    /// True when `s` matches every condition.
    pub fn matches(&self, s: &StoredSeries) -> bool {
        self.equals
            .iter()
            .all(|(k, vs)| s.key(k).is_some_and(|v| vs.iter().any(|want| want == v)))
            && self
                .since_unix_ms
                .is_none_or(|t| s.series.window.start_unix_ms >= t)
            && self
                .until_unix_ms
                .is_none_or(|t| s.series.window.end_unix_ms <= t)
    }
}

/// Series merged over a group.
#[derive(Debug, Clone)]
pub struct Group {
    /// The group's key values, in the order of the grouping keys.
    pub key: Vec<String>,
    /// The merged series: histograms added, counts summed, window spanning all.
    pub merged: Series,
    /// Distinct probes that contributed.
    pub probes: BTreeSet<String>,
    /// Series merged.
    pub series: usize,
}

/// Groups `rows` by `keys` (labels or `probe`, `campaign`, `target`,
/// `metric`) and merges each group. A row without a key's value groups
/// under `-`.
pub fn merge_groups(rows: &[StoredSeries], keys: &[String]) -> Vec<Group> {
    let mut merger = GroupMerger::new(keys);
    for row in rows {
        merger.add(row, &SparseCounts::of(&row.series.histogram));
    }
    merger.finish()
}

/// [`merge_groups`] one row at a time, for rows streamed from a store:
/// memory is one merged series per group, never the rows.
#[derive(Debug)]
pub struct GroupMerger {
    keys: Vec<String>,
    groups: BTreeMap<Vec<String>, Group>,
}

impl GroupMerger {
    /// No groups yet, grouping by `keys`.
    pub fn new(keys: &[String]) -> Self {
        GroupMerger {
            keys: keys.to_vec(),
            groups: BTreeMap::new(),
        }
    }

    /// Adds one row, its histogram as `counts` (the row's own `histogram`
    /// is not read), exactly.
    pub fn add(&mut self, row: &StoredSeries, counts: &SparseCounts) {
        let key: Vec<String> = self
            .keys
            .iter()
            .map(|k| row.key(k).unwrap_or("-").to_string())
            .collect();
        let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
            key,
            merged: Series::new(
                row.series.target.clone(),
                row.series.metric,
                row.series.window,
            ),
            probes: BTreeSet::new(),
            series: 0,
        });
        merge_counts_into(&mut g.merged, &row.series);
        counts.add_to(&mut g.merged.histogram);
        if !g.probes.contains(&row.probe_id) {
            g.probes.insert(row.probe_id.clone());
        }
        g.series += 1;
    }

    /// The groups, in key order.
    pub fn finish(self) -> Vec<Group> {
        self.groups.into_values().collect()
    }
}

/// Adds `s` into `into`: exact for histograms and counts.
pub fn merge_into(into: &mut Series, s: &Series) {
    // Same bounds on both sides (decoders refuse others), so `add` cannot fail.
    let _ = into.histogram.add(&s.histogram);
    merge_counts_into(into, s);
}

/// [`merge_into`] for everything but the histogram: for a caller that
/// adds the histogram's counts itself (from sparse counts, say).
pub fn merge_counts_into(into: &mut Series, s: &Series) {
    into.sent += s.sent;
    into.lost += s.lost;
    into.bytes += s.bytes;
    for (c, n) in &s.errors {
        *into.errors.entry(*c).or_insert(0) += n;
    }
    for (r, n) in &s.reasons {
        *into.reasons.entry(*r).or_insert(0) += n;
    }
    for (code, n) in &s.statuses {
        *into.statuses.entry(*code).or_insert(0) += n;
    }
    into.add_edges(&s.edges);
    into.path.add(&s.path);
    into.server_time.sum_us += s.server_time.sum_us;
    into.server_time.count += s.server_time.count;
    into.window = Window {
        start_unix_ms: into.window.start_unix_ms.min(s.window.start_unix_ms),
        end_unix_ms: into.window.end_unix_ms.max(s.window.end_unix_ms),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_wire::{Metric, Target};

    fn row(probe: &str, country: &str, phase: &str, values: &[u64]) -> StoredSeries {
        let mut labels = Labels::new();
        labels.insert("country", country).unwrap();
        labels.insert("phase", phase).unwrap();
        let mut s = Series::new(
            Target {
                name: "sg".into(),
                address: "a".into(),
            },
            Metric::UdpRtt,
            Window {
                start_unix_ms: 1000,
                end_unix_ms: 2000,
            },
        );
        for v in values {
            s.histogram.record(*v).unwrap();
        }
        s.sent = values.len() as u64 + 1;
        s.lost = 1;
        StoredSeries {
            probe_id: probe.into(),
            sequence: 1,
            campaign: "c".into(),
            labels,
            series: s,
        }
    }

    #[test]
    fn selectors_parse_and_match() {
        let sel: Selector = "country=in|my, phase=before".parse().unwrap();
        assert!(sel.matches(&row("p", "IN", "before", &[1])));
        assert!(sel.matches(&row("p", "MY", "before", &[1])));
        assert!(!sel.matches(&row("p", "IN", "after", &[1])));
        assert!(!sel.matches(&row("p", "US", "before", &[1])));
        assert!("country".parse::<Selector>().is_err());
        assert_eq!(sel.to_string(), "country=IN|MY,phase=before");
    }

    #[test]
    fn merging_adds_histograms_exactly() {
        let mut rows = vec![
            row("p1", "IN", "before", &[10, 20]),
            row("p2", "IN", "before", &[30]),
            row("p3", "MY", "before", &[40]),
        ];
        for (r, code) in rows.iter_mut().zip([200, 200, 503]) {
            r.series.statuses.insert(code, 1);
            r.series.errors.insert(vantage_wire::ErrorClass::Tls, 1);
            r.series.reasons.insert(vantage_wire::Reason::TlsExpired, 1);
            r.series.sent += 1;
        }
        let groups = merge_groups(&rows, &["country".into(), "metric".into()]);
        assert_eq!(groups.len(), 2);
        let g = &groups[0];
        assert_eq!(g.key, ["IN", "udp_rtt"]);
        assert_eq!(g.merged.histogram.len(), 3);
        assert_eq!((g.merged.sent, g.merged.lost), (7, 2));
        assert_eq!(g.merged.statuses, [(200, 2)].into());
        assert_eq!(
            g.merged.reasons,
            [(vantage_wire::Reason::TlsExpired, 2)].into()
        );
        assert_eq!(g.probes.len(), 2);
        g.merged.check().unwrap();
        let mut direct = vantage_wire::new_latency_histogram();
        for v in [10, 20, 30] {
            direct.record(v).unwrap();
        }
        assert_eq!(g.merged.histogram, direct);
    }
}
