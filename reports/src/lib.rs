//! Vantage reports: a baseline compared with a candidate (two phases, or two
//! data centres measured at the same time), per group, with bootstrap
//! confidence intervals, and verdicts on the claims a stakeholder states.
//!
//! Methods, in short: each side is a set of (probe, window) series from
//! the store; percentiles are taken over all of a side's samples together;
//! their intervals come from a bootstrap that resamples whole series, since
//! requests within one series share the probe's network and the minute's
//! conditions and are not independent. Too few series or samples give
//! "insufficient data", never a verdict.
#![warn(missing_docs, unreachable_pub)]

pub mod charts;
pub mod claim;
mod evidence;
pub mod html;
mod lab_timing;
pub mod plain;
pub mod print;
pub mod serving;
pub mod stats;

use claim::{claimed_interval, verdict, Claim, Verdict};
use serde::Serialize;
use stats::{bootstrap, quantiles, Interval, SideUnits, Unit};
use std::collections::{BTreeMap, BTreeSet};
use vantage_store::StoredSeries;

use evidence::Gathered;
pub use evidence::{
    CutOver, Evidence, Failures, GatherError, ResolutionChoice, Role, SilentWindows, GATHER_CAP,
    MAX_UNITS,
};
pub use lab_timing::LabTiming;

/// Version of `report.json`, bumped on any change of its fields.
pub const REPORT_SCHEMA: &str = "vantage.report/5";
/// The percentiles every group reports.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// How to compare.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The baseline's selector, as text (for the report).
    pub baseline: String,
    /// The candidate's selector, as text.
    pub candidate: String,
    /// Grouping keys besides the metric (default: country).
    pub group_by: Vec<String>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Confidence of the intervals (0.95).
    pub confidence: f64,
    /// Seed of the resampling.
    pub seed: u64,
    /// Fewest samples per side for a comparison.
    pub min_samples: u64,
    /// Fewest (probe, window) series per side.
    pub min_series: usize,
    /// Fewest distinct probes per side for a claim's verdict: below it
    /// the verdict is "insufficient probes" (the interval still shown),
    /// since an interval over one probe's minutes says nothing of a
    /// country's users.
    pub min_probes: usize,
    /// Fewest samples per side for a throughput metric, where one sample
    /// is one sync batch (minutes apart on a real probe), not one request.
    pub min_batches: u64,
    /// Claims to judge.
    pub claims: Vec<Claim>,
    /// The lab's own timing, when the data came from a lab run.
    pub lab_timing: Option<LabTiming>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            baseline: String::new(),
            candidate: String::new(),
            group_by: vec!["country".into()],
            resamples: 1000,
            confidence: 0.95,
            seed: 1,
            min_samples: 30,
            min_series: 3,
            min_probes: 3,
            min_batches: 5,
            claims: Vec::new(),
            lab_timing: None,
        }
    }
}

/// One side of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Side {
    /// Samples.
    pub samples: u64,
    /// (probe, window) series.
    pub series: usize,
    /// Distinct probes.
    pub probes: usize,
    /// The distinct networks (`network` labels) of those probes, sorted
    /// (`-`: unlabelled).
    pub networks: Vec<String>,
    /// Attempts.
    pub sent: u64,
    /// (lost + errors) / sent.
    pub loss_rate: Option<f64>,
    /// Attempts lost (no answer in time).
    pub lost: u64,
    /// Failed attempts by class, reason and HTTP status.
    pub failures: Failures,
    /// p50, p90, p99, p99.9 in the metric's unit (µs, or kbit/s for goodput).
    pub percentiles: Vec<Option<u64>>,
}

/// One percentile compared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PercentileComparison {
    /// The percentile, such as 50 or 99.9.
    pub percentile: f64,
    /// candidate − baseline.
    pub difference: Interval,
    /// candidate / baseline.
    pub ratio: Interval,
}

/// A group's comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupComparison {
    /// Grouping key values.
    pub key: BTreeMap<String, String>,
    /// The key values besides the metric, `/`-joined: what claims name.
    pub subject: String,
    /// The metric.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// `ok` or `insufficient_data`.
    pub status: String,
    /// Why the data is insufficient, if it is.
    pub reason: Option<String>,
    /// Baseline.
    pub baseline: Side,
    /// Candidate.
    pub candidate: Side,
    /// Per percentile, when the data suffices.
    pub percentiles: Vec<PercentileComparison>,
    /// The strata (subjects such as `IN/4g`) with enough data whose p50
    /// moved the other way than this group's, both intervals clear of
    /// zero: Simpson's paradox, when one stratum's share differs between
    /// the sides. Only for a group rolled up from `--group-by`'s strata.
    pub reversed_in: Vec<String>,
}

/// A claim and its verdict.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClaimResult {
    /// The claim.
    pub claim: Claim,
    /// Per matching group: its subject, the claimed statistic's interval and verdict.
    pub groups: Vec<ClaimGroup>,
    /// Holds only if it holds for every matching group.
    pub verdict: Verdict,
}

/// A claim judged on one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClaimGroup {
    /// The group's subject.
    pub subject: String,
    /// Distinct probes behind (baseline, candidate).
    pub probes: (usize, usize),
    /// Distinct networks of those probes, (baseline, candidate).
    pub networks: (usize, usize),
    /// The claimed statistic (µs, fraction or ratio, per the claim).
    pub statistic: Option<Interval>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: &'static str,
    /// Baseline selector.
    pub baseline: String,
    /// Candidate selector.
    pub candidate: String,
    /// Grouping keys (the metric is always one more).
    pub group_by: Vec<String>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Interval confidence.
    pub confidence: f64,
    /// True when any series came from the lab (label simulated=true).
    pub simulated: bool,
    /// Metrics the data's lab mode could not emulate, withheld from every
    /// table, chart and sentence: with the lab's relay mode (label
    /// `emulation=relay`), [`RELAY_NOT_EMULATED`].
    pub not_emulated: Vec<String>,
    /// The lab's release timing, for a report of a lab run: when
    /// `degraded`, no figure of the report is accurate.
    pub lab_timing: Option<LabTiming>,
    /// The resolution resampled: `1m` (the probes' windows), `1h` or `1d`.
    pub resolution: String,
    /// Why that resolution.
    pub resolution_reason: String,
    /// Probes on each side.
    pub probes: (usize, usize),
    /// How long each side ran, ms: its first window's start to its last
    /// window's end.
    pub durations_ms: (Option<u64>, Option<u64>),
    /// Fewest probes on a side for a verdict ([`ReportOptions::min_probes`]).
    pub min_probes: usize,
    /// Every group.
    pub groups: Vec<GroupComparison>,
    /// Every claim.
    pub claims: Vec<ClaimResult>,
    /// Where users were served and which countries their paths crossed,
    /// when asked for (a site map, hop datasets or share claims); null
    /// otherwise.
    pub where_served: Option<serving::WhereServed>,
}

/// What the lab's relay mode cannot emulate: it ends TCP at the relay on
/// loopback, so the kernel's handshake never crosses the emulated path
/// (`tcp_connect` reads ~0.2 ms on a 250 ms path), and a traceroute finds
/// loopback, not the path's routers (`path_trace`).
pub const RELAY_NOT_EMULATED: [vantage_wire::Metric; 2] = [
    vantage_wire::Metric::TcpConnect,
    vantage_wire::Metric::PathTrace,
];

/// The metrics `evidence`'s lab mode could not emulate.
fn not_emulated(evidence: &Evidence) -> Vec<String> {
    if !evidence.relay_emulated {
        return Vec::new();
    }
    RELAY_NOT_EMULATED
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

/// The resampling units of (baseline, candidate) of one group.
type SidesUnits<'a> = (SideUnits<'a>, SideUnits<'a>);

fn side(g: Option<&Gathered>) -> Side {
    let Some(g) = g else {
        return Side {
            samples: 0,
            series: 0,
            probes: 0,
            networks: Vec::new(),
            sent: 0,
            loss_rate: None,
            lost: 0,
            failures: Failures::default(),
            percentiles: vec![None; QUANTILES.len()],
        };
    };
    let q = quantiles(&g.units, &QUANTILES);
    Side {
        samples: g.units.iter().map(Unit::samples).sum(),
        series: g.series,
        probes: g.probes.len(),
        networks: g.networks.iter().cloned().collect(),
        sent: g.sent,
        loss_rate: (g.sent > 0).then(|| g.failed as f64 / g.sent as f64),
        lost: g.lost,
        failures: g.failures.clone(),
        percentiles: match q {
            Some(v) => v.into_iter().map(Some).collect(),
            None => vec![None; QUANTILES.len()],
        },
    }
}

/// Why a group's data do not suffice for a comparison; empty when they do.
fn shortfalls(bs: &Side, cs: &Side, metric: &str, options: &ReportOptions) -> Vec<String> {
    let min_samples = match metric
        .parse::<vantage_wire::Metric>()
        .ok()
        .map(|m| m.unit())
    {
        Some(vantage_wire::Unit::KilobitsPerSecond | vantage_wire::Unit::RoundTripsPerMinute) => {
            options.min_batches
        }
        _ => options.min_samples,
    };
    [
        (bs.series < options.min_series || cs.series < options.min_series).then(|| {
            format!(
                "fewer than {} series on a side ({} vs {})",
                options.min_series, bs.series, cs.series
            )
        }),
        (bs.samples < min_samples || cs.samples < min_samples).then(|| {
            format!(
                "fewer than {} samples on a side ({} vs {})",
                min_samples, bs.samples, cs.samples
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn side_units(owned: &Owned) -> SideUnits<'_> {
    SideUnits {
        units: &owned.0,
        probes: &owned.1,
    }
}

/// One group's plan: its gathered sides, their summaries, its shortfalls.
type Plan<'a> = (
    Option<&'a Gathered>,
    Option<&'a Gathered>,
    Side,
    Side,
    Vec<String>,
);
/// One side's resampling units and the probe of each.
type Owned = (Vec<Unit>, Vec<u32>);
/// A group's resampled units and intervals, when its data suffice.
type Boot = Option<(Owned, Owned, Option<Vec<(Interval, Interval)>>)>;

/// The bootstraps, the costly part, on every core: each group has its own
/// seed, so the result does not depend on the thread count.
fn bootstraps(plans: &[Plan<'_>], options: &ReportOptions) -> Vec<Boot> {
    let mut boots: Vec<Boot> = (0..plans.len()).map(|_| None).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = plans.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (i, out) in boots.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (j, slot) in out.iter_mut().enumerate() {
                    let n = i * chunk + j;
                    let (bg, cg, _, _, short) = &plans[n];
                    if let (true, Some(bg), Some(cg)) = (short.is_empty(), bg, cg) {
                        let (bu, cu) = (
                            bg.resampling_units(evidence::MAX_UNITS),
                            cg.resampling_units(evidence::MAX_UNITS),
                        );
                        let iv = bootstrap(
                            side_units(&bu),
                            side_units(&cu),
                            &QUANTILES,
                            options.resamples,
                            options.confidence,
                            options.seed.wrapping_add(n as u64),
                        );
                        *slot = Some((bu, cu, iv));
                    }
                }
            });
        }
    });
    boots
}

/// A claim judged on every group it names, from the groups' units.
fn judge_claim(
    claim: &Claim,
    groups: &[GroupComparison],
    units_by_group: &BTreeMap<(String, String), SidesUnits<'_>>,
    options: &ReportOptions,
) -> ClaimResult {
    let matching: Vec<&GroupComparison> = groups
        .iter()
        .filter(|g| {
            g.metric == claim.metric.name()
                && (claim.subject == "*" || g.subject.eq_ignore_ascii_case(&claim.subject))
        })
        .collect();
    let judged: Vec<ClaimGroup> = matching
        .iter()
        .map(|g| judge_group(claim, g, units_by_group, options))
        .collect();
    let any = |v: Verdict| judged.iter().any(|g| g.verdict == v);
    let overall = if judged.is_empty() {
        Verdict::NoData
    } else if judged.iter().all(|g| g.verdict == Verdict::Holds) {
        Verdict::Holds
    } else if any(Verdict::Fails) {
        Verdict::Fails
    } else if any(Verdict::InsufficientData) {
        Verdict::InsufficientData
    } else if any(Verdict::InsufficientProbes) {
        Verdict::InsufficientProbes
    } else {
        Verdict::Inconclusive
    };
    ClaimResult {
        claim: claim.clone(),
        groups: judged,
        verdict: overall,
    }
}

/// Each country's groups gathered from its strata: keyed by the first
/// grouping value and the metric. Empty without strata (one grouping key).
fn roll_up(groups: &BTreeMap<Vec<String>, Gathered>) -> BTreeMap<Vec<String>, Gathered> {
    let mut parents: BTreeMap<Vec<String>, Gathered> = BTreeMap::new();
    for (key, g) in groups {
        if key.len() < 3 {
            continue;
        }
        let parent = vec![key[0].clone(), key[key.len() - 1].clone()];
        parents.entry(parent).or_default().absorb(g);
    }
    parents
}

/// The sign of an interval clear of zero: 1 above, −1 below, 0 across.
fn clear_sign(i: &Interval) -> i8 {
    if i.low > 0.0 {
        1
    } else if i.high < 0.0 {
        -1
    } else {
        0
    }
}

/// Marks each rolled-up group whose p50 change is reversed, with both
/// intervals clear of zero, in a stratum with enough data.
fn flag_reversals(groups: &mut [GroupComparison]) {
    let p50 = |g: &GroupComparison| {
        g.percentiles
            .iter()
            .find(|p| (p.percentile - 50.0).abs() < 1e-9)
            .map(|p| clear_sign(&p.difference))
    };
    let mut flags = Vec::new();
    for (i, parent) in groups.iter().enumerate() {
        if parent.subject.contains('/') {
            continue;
        }
        let Some(sign) = p50(parent).filter(|s| *s != 0) else {
            continue;
        };
        let prefix = format!("{}/", parent.subject);
        let reversed: Vec<String> = groups
            .iter()
            .filter(|g| g.metric == parent.metric && g.subject.starts_with(&prefix))
            .filter(|g| g.status == "ok" && p50(g) == Some(-sign))
            .map(|g| g.subject.clone())
            .collect();
        if !reversed.is_empty() {
            flags.push((i, reversed));
        }
    }
    for (i, reversed) in flags {
        groups[i].reversed_in = reversed;
    }
}

/// A claim judged on one group: the claimed statistic's interval, and its
/// verdict unless too few probes back a side.
fn judge_group(
    claim: &Claim,
    g: &GroupComparison,
    units_by_group: &BTreeMap<(String, String), SidesUnits<'_>>,
    options: &ReportOptions,
) -> ClaimGroup {
    let mut judged = ClaimGroup {
        subject: g.subject.clone(),
        probes: (g.baseline.probes, g.candidate.probes),
        networks: (g.baseline.networks.len(), g.candidate.networks.len()),
        statistic: None,
        verdict: Verdict::InsufficientData,
    };
    let Some((bu, cu)) = units_by_group.get(&(g.subject.clone(), g.metric.clone())) else {
        return judged;
    };
    let iv = bootstrap(
        *bu,
        *cu,
        &[claim.quantile],
        options.resamples,
        options.confidence,
        options.seed ^ 0xc1a1,
    );
    let Some((d, r)) = iv.and_then(|v| v.into_iter().next()) else {
        return judged;
    };
    let s = claimed_interval(
        &claim.change,
        (d.estimate, d.low, d.high),
        (r.estimate, r.low, r.high),
    );
    judged.statistic = Some(Interval {
        estimate: s.0,
        low: s.1,
        high: s.2,
    });
    judged.verdict = if judged.probes.0.min(judged.probes.1) < options.min_probes {
        Verdict::InsufficientProbes
    } else {
        verdict(&claim.change, s)
    };
    judged
}

/// Compares `baseline` with `candidate` as `options` say.
pub fn build_report(
    baseline: &[StoredSeries],
    candidate: &[StoredSeries],
    options: &ReportOptions,
) -> Report {
    build_report_from(
        &Evidence::from_rows(baseline, candidate, &options.group_by),
        options,
    )
}

/// Compares the two sides of `evidence` as `options` say; the grouping is
/// the evidence's own.
pub fn build_report_from(evidence: &Evidence, options: &ReportOptions) -> Report {
    let keys = &evidence.keys;
    // With strata (`--group-by country,network`), each country's group is
    // also gathered from its strata, so claims on `IN` and the flag of a
    // reversal in `IN/4g` have their whole-country figures.
    let parents = [Role::Baseline, Role::Candidate].map(|r| roll_up(&evidence.side(r).groups));
    let with_parents = |side: Role| -> BTreeMap<Vec<String>, &Gathered> {
        let own = evidence.side(side).groups.iter();
        own.chain(parents[side as usize].iter())
            .map(|(k, g)| (k.clone(), g))
            .collect()
    };
    let b_all = with_parents(Role::Baseline);
    let c_all = with_parents(Role::Candidate);
    let (b, c) = (&b_all, &c_all);
    let mut all_keys: Vec<&Vec<String>> = b
        .keys()
        .chain(c.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // A country's whole before its strata.
    all_keys.sort_by(|x, y| (&x[0], x.len(), x).cmp(&(&y[0], y.len(), y)));
    // What the lab's relay mode cannot emulate is withheld: no figure,
    // table, chart or sentence of it, only the mark.
    let not_emulated = not_emulated(evidence);
    all_keys.retain(|k| !k.last().is_some_and(|m| not_emulated.contains(m)));
    // First the cheap part: each group's sides and whether its data suffice.
    let mut plans = Vec::with_capacity(all_keys.len());
    for key in &all_keys {
        let (bg, cg) = (b.get(*key).copied(), c.get(*key).copied());
        let (bs, cs) = (side(bg), side(cg));
        let short = shortfalls(&bs, &cs, key.last().map_or("", String::as_str), options);
        plans.push((bg, cg, bs, cs, short));
    }
    let boots = bootstraps(&plans, options);
    let mut groups = Vec::new();
    let mut units_by_group: BTreeMap<(String, String), SidesUnits<'_>> = BTreeMap::new();
    for ((key, (_, _, bs, cs, short)), boot) in all_keys.iter().zip(plans).zip(&boots) {
        let metric = key.last().cloned().unwrap_or_default();
        let subject = key[..key.len() - 1].join("/");
        let unit = metric
            .parse::<vantage_wire::Metric>()
            .map(|m| m.unit().suffix().to_string())
            .unwrap_or_else(|_| "us".into());
        let mut percentiles = Vec::new();
        if let Some((bu, cu, iv)) = boot {
            if let Some(iv) = iv {
                for (q, (d, r)) in QUANTILES.iter().zip(iv) {
                    percentiles.push(PercentileComparison {
                        percentile: q * 100.0,
                        difference: *d,
                        ratio: *r,
                    });
                }
            }
            units_by_group.insert(
                (subject.clone(), metric.clone()),
                (side_units(bu), side_units(cu)),
            );
        }
        // A rolled-up group's key is its first grouping value and the metric.
        let mut k: BTreeMap<String, String> = keys
            .iter()
            .cloned()
            .zip(key[..key.len() - 1].iter().cloned())
            .collect();
        k.insert("metric".into(), metric.clone());
        groups.push(GroupComparison {
            key: k,
            subject,
            metric,
            unit,
            status: if short.is_empty() {
                "ok".into()
            } else {
                "insufficient_data".into()
            },
            reason: (!short.is_empty()).then(|| short.join("; ")),
            baseline: bs,
            candidate: cs,
            percentiles,
            reversed_in: Vec::new(),
        });
    }
    flag_reversals(&mut groups);
    let claims = options
        .claims
        .iter()
        .map(|claim| judge_claim(claim, &groups, &units_by_group, options))
        .collect();
    Report {
        schema: REPORT_SCHEMA,
        baseline: options.baseline.clone(),
        candidate: options.candidate.clone(),
        group_by: keys.clone(),
        resamples: options.resamples,
        confidence: options.confidence,
        simulated: evidence.simulated,
        not_emulated,
        lab_timing: options.lab_timing,
        resolution: evidence.resolution.name().to_string(),
        resolution_reason: evidence.resolution_reason.clone(),
        probes: (
            evidence.side(Role::Baseline).probes.len(),
            evidence.side(Role::Candidate).probes.len(),
        ),
        durations_ms: (
            evidence
                .side(Role::Baseline)
                .span
                .map(|(a, b)| b.saturating_sub(a)),
            evidence
                .side(Role::Candidate)
                .span
                .map(|(a, b)| b.saturating_sub(a)),
        ),
        min_probes: options.min_probes,
        groups,
        claims,
        where_served: None,
    }
}

/// `report.json`.
pub fn render_json(report: &Report) -> Result<Vec<u8>, RenderError> {
    let mut v = serde_json::to_vec_pretty(report)?;
    v.push(b'\n');
    Ok(v)
}

/// A report rendering that failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// `report.json` did not serialize.
    #[error("report.json: {0}")]
    Json(#[from] serde_json::Error),
    /// `comparison.csv` did not serialize.
    #[error("comparison.csv: {0}")]
    Csv(#[from] csv::Error),
}

/// `comparison.csv`: one row per group and percentile.
pub fn render_csv(report: &Report) -> Result<Vec<u8>, RenderError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "subject",
        "metric",
        "unit",
        "status",
        "percentile",
        "baseline",
        "candidate",
        "difference",
        "difference_low",
        "difference_high",
        "ratio",
        "ratio_low",
        "ratio_high",
        "baseline_samples",
        "candidate_samples",
        "baseline_series",
        "candidate_series",
        "baseline_loss_rate",
        "candidate_loss_rate",
    ])?;
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let rate = |v: Option<f64>| v.map(|v| format!("{v:.5}")).unwrap_or_default();
    for g in &report.groups {
        for (i, q) in QUANTILES.iter().enumerate() {
            let pc = g.percentiles.get(i);
            let f = |v: Option<f64>| {
                v.filter(|v| v.is_finite())
                    .map(|v| format!("{v:.3}"))
                    .unwrap_or_default()
            };
            w.write_record([
                g.subject.clone(),
                g.metric.clone(),
                g.unit.clone(),
                g.status.clone(),
                format!("{}", q * 100.0),
                opt(g.baseline.percentiles[i]),
                opt(g.candidate.percentiles[i]),
                f(pc.map(|p| p.difference.estimate)),
                f(pc.map(|p| p.difference.low)),
                f(pc.map(|p| p.difference.high)),
                f(pc.map(|p| p.ratio.estimate)),
                f(pc.map(|p| p.ratio.low)),
                f(pc.map(|p| p.ratio.high)),
                g.baseline.samples.to_string(),
                g.candidate.samples.to_string(),
                g.baseline.series.to_string(),
                g.candidate.series.to_string(),
                rate(g.baseline.loss_rate),
                rate(g.candidate.loss_rate),
            ])?;
        }
    }
    w.into_inner()
        .map_err(|e| RenderError::Csv(e.into_error().into()))
}

/// The mark of what the data's lab mode could not emulate, if anything.
pub fn not_emulated_sentence(report: &Report) -> Option<String> {
    (!report.not_emulated.is_empty()).then(|| {
        format!(
            "NOT EMULATED: {} (the lab's relay mode ends TCP at the relay, so the handshake never crosses the emulated path, and puts no router on it); not shown.",
            report.not_emulated.join(", ")
        )
    })
}

/// A terminal summary: verdicts first, then p50 and p99 per group.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    if report.simulated {
        out.push_str("SIMULATED DATA (vantage lab): these numbers describe emulated paths, not a real network.\n");
    }
    if let Some(t) = &report.lab_timing {
        out.push_str(&t.sentence());
        out.push('\n');
    }
    if let Some(line) = not_emulated_sentence(report) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "baseline {} ({} probes) vs candidate {} ({} probes); {:.0} % intervals, {} resamples of whole series\n",
        report.baseline, report.probes.0, report.candidate, report.probes.1, report.confidence * 100.0, report.resamples
    ));
    for sentence in plain::summary_sentences(report) {
        out.push_str(&format!("* {sentence}\n"));
    }
    for c in &report.claims {
        out.push_str(&format!("claim: {} — {}\n", c.claim.text, c.verdict));
        let (scale, unit, what) = match c.claim.change {
            claim::Change::DecreaseBy(..) => (1e-3, " ms", "decrease"),
            claim::Change::IncreaseBy(..) => (1e-3, " ms", "increase"),
            claim::Change::DecreaseByFraction(..) => (100.0, " %", "decrease"),
            claim::Change::IncreaseByFraction(..) => (100.0, " %", "increase"),
            claim::Change::Ratio(..) | claim::Change::RatioBetween(..) => {
                (1.0, "", "ratio candidate/baseline")
            }
        };
        for g in &c.groups {
            if let Some(s) = g.statistic {
                out.push_str(&format!(
                    "  {}: {what} {:.3}{unit} [{:.3}, {:.3}] → {} ({})\n",
                    g.subject,
                    s.estimate * scale,
                    s.low * scale,
                    s.high * scale,
                    g.verdict,
                    backing(g)
                ));
            }
        }
    }
    out.push_str(&format!(
        "\n{:<14} {:<18} {:>12} {:>12} {:>26} {:>12} {:>12} {:>26}\n",
        "group",
        "metric",
        "p50 base",
        "p50 cand",
        "p50 diff [95% CI]",
        "p99 base",
        "p99 cand",
        "p99 diff [95% CI]"
    ));
    for g in &report.groups {
        // ms and Mbit/s are thousands of the stored µs and kbit/s; RPM as is.
        let scale = if g.unit == "rpm" { 1.0 } else { 1e3 };
        let v = |s: &Side, i: usize| {
            s.percentiles[i]
                .map(|v| format!("{:.2}", v as f64 / scale))
                .unwrap_or("-".into())
        };
        let d = |i: usize| {
            g.percentiles
                .get(i)
                .map(|p| {
                    format!(
                        "{:+.2} [{:+.2},{:+.2}]",
                        p.difference.estimate / scale,
                        p.difference.low / scale,
                        p.difference.high / scale
                    )
                })
                .unwrap_or_else(|| "insufficient data".into())
        };
        out.push_str(&format!(
            "{:<14} {:<18} {:>12} {:>12} {:>26} {:>12} {:>12} {:>26}\n",
            g.subject,
            g.metric,
            v(&g.baseline, 0),
            v(&g.candidate, 0),
            d(0),
            v(&g.baseline, 2),
            v(&g.candidate, 2),
            d(2)
        ));
    }
    out.push_str("(latencies in ms; photosync_goodput in Mbit/s; responsiveness_rpm in RPM)\n");
    if let Some(w) = &report.where_served {
        out.push_str(&serving::render_where_text(w));
    }
    out
}

/// How many probes and networks back a claim's group, before / after:
/// "3 / 3 probes on 3 / 3 networks".
pub fn backing(g: &ClaimGroup) -> String {
    let plural = |n: usize, one: &str, many: &str| if n == 1 { one } else { many }.to_string();
    format!(
        "{} / {} {} on {} / {} {}",
        g.probes.0,
        g.probes.1,
        plural(g.probes.1, "probe", "probes"),
        g.networks.0,
        g.networks.1,
        plural(g.networks.1, "network", "networks"),
    )
}

/// The files a report was written to.
#[derive(Debug, Clone)]
pub struct WrittenReport {
    /// `report.html`.
    pub html: std::path::PathBuf,
    /// `report.json`.
    pub json: std::path::PathBuf,
    /// The charts, in `charts/`.
    pub charts: Vec<charts::ChartFile>,
    /// The terminal summary, as written to `summary.txt`.
    pub summary: String,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A chart failed.
    #[error(transparent)]
    Chart(#[from] charts::ChartError),
    /// The JSON or CSV did not render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Writes everything a report is into `dir`: `report.json`,
/// `comparison.csv`, `summary.txt`, `charts/` (PNG, SVG and CSV of each
/// chart) and the self-contained `report.html`. Each file is written to a
/// temporary name and renamed, so a failure leaves no half-written file.
pub fn write_report(
    report: &Report,
    baseline: &[StoredSeries],
    candidate: &[StoredSeries],
    dir: &std::path::Path,
) -> Result<WrittenReport, WriteError> {
    let evidence = Evidence::from_rows(baseline, candidate, &report.group_by);
    write_report_from(report, &evidence, dir)
}

/// [`write_report`] from gathered evidence (what [`build_report_from`] used).
pub fn write_report_from(
    report: &Report,
    evidence: &Evidence,
    dir: &std::path::Path,
) -> Result<WrittenReport, WriteError> {
    let summary = render_text(report);
    let charts = charts::render_charts(report, evidence)?;
    let page = html::render_html(report, &html::DataSummary::of(evidence), &charts, "charts/");
    let (json, csv) = (render_json(report)?, render_csv(report)?);
    let mut files: Vec<(std::path::PathBuf, &[u8])> = vec![
        ("report.json".into(), &json),
        ("comparison.csv".into(), &csv),
        ("summary.txt".into(), summary.as_bytes()),
    ];
    for c in &charts {
        for (ext, bytes) in [("svg", &c.svg), ("png", &c.png), ("csv", &c.csv)] {
            let name = format!("charts/{}.{ext}", c.file.stem);
            files.push((name.into(), bytes));
        }
    }
    files.push(("report.html".into(), page.as_bytes()));
    for (name, bytes) in &files {
        put_file(&dir.join(name), bytes)?;
    }
    Ok(WrittenReport {
        html: dir.join("report.html"),
        json: dir.join("report.json"),
        charts: charts.into_iter().map(|c| c.file).collect(),
        summary,
    })
}

/// Writes `bytes` to a temporary name beside `path`, then renames it, so a
/// failure leaves no half-written file.
fn put_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), WriteError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { path, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use vantage_wire::{Labels, Metric, Series, Target, Window};

    fn rows(
        country: &str,
        phase: &str,
        probes: usize,
        windows: u64,
        base_us: u64,
        rng: &mut impl Rng,
    ) -> Vec<StoredSeries> {
        let mut out = Vec::new();
        for p in 0..probes {
            for w in 0..windows {
                let mut labels = Labels::new();
                labels.insert("country", country).unwrap();
                labels.insert("phase", phase).unwrap();
                let mut s = Series::new(
                    Target {
                        name: "dc".into(),
                        address: "a".into(),
                    },
                    Metric::QuicColdRequest,
                    Window {
                        start_unix_ms: w * 60_000,
                        end_unix_ms: (w + 1) * 60_000,
                    },
                );
                for _ in 0..50 {
                    s.histogram
                        .record(base_us + rng.gen_range(0..20_000))
                        .unwrap();
                }
                s.sent = 50;
                out.push(StoredSeries {
                    probe_id: format!("{country}-{p}"),
                    sequence: w,
                    campaign: "c".into(),
                    labels,
                    series: s,
                });
            }
        }
        out
    }

    /// The keys of report.json's objects are exactly those the checked-in
    /// schema declares (and requires), so the schema cannot drift.
    fn check_against_schema(json: &serde_json::Value) {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/report.schema.json")).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let declared = |def: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = def["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            let mut req: Vec<String> = def["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            req.sort();
            assert_eq!(k, req, "every declared property is required");
            k
        };
        let defs = &schema["$defs"];
        assert_eq!(keys(json), declared(&schema));
        assert_eq!(keys(&json["groups"][0]), declared(&defs["group"]));
        assert_eq!(
            keys(&json["groups"][0]["baseline"]),
            declared(&defs["side"])
        );
        assert_eq!(
            keys(&json["groups"][0]["percentiles"][0]),
            declared(&defs["percentile_comparison"])
        );
        assert_eq!(
            keys(&json["groups"][0]["percentiles"][0]["ratio"]),
            declared(&defs["interval"])
        );
        assert_eq!(keys(&json["claims"][0]), declared(&defs["claim"]));
        assert_eq!(
            keys(&json["claims"][0]["groups"][0]),
            declared(&defs["claim"]["properties"]["groups"]["items"])
        );
        assert_eq!(
            keys(&json["groups"][0]["baseline"]["failures"]),
            declared(&defs["side"]["properties"]["failures"])
        );
        let verdicts: Vec<&str> = defs["verdict"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for c in json["claims"].as_array().unwrap() {
            assert!(verdicts.contains(&c["verdict"].as_str().unwrap()));
        }
    }

    #[test]
    fn a_clear_drop_holds_a_small_one_fails_and_thin_data_gets_no_verdict() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let before: Vec<_> = rows("IN", "before", 3, 10, 460_000, &mut rng)
            .into_iter()
            .chain(rows("MY", "before", 1, 2, 220_000, &mut rng))
            .collect();
        let after: Vec<_> = rows("IN", "after", 3, 10, 100_000, &mut rng)
            .into_iter()
            .chain(rows("MY", "after", 1, 2, 20_000, &mut rng))
            .collect();
        let options = ReportOptions {
            baseline: "phase=before".into(),
            candidate: "phase=after".into(),
            resamples: 300,
            claims: vec![
                "IN quic_cold_request p50 decreases by >= 350ms"
                    .parse()
                    .unwrap(),
                "IN quic_cold_request p50 decreases by >= 400ms"
                    .parse()
                    .unwrap(),
                "MY quic_cold_request p50 decreases by >= 100ms"
                    .parse()
                    .unwrap(),
                "ID quic_cold_request p50 decreases by >= 1ms"
                    .parse()
                    .unwrap(),
            ],
            ..ReportOptions::default()
        };
        let r = build_report(&before, &after, &options);
        let verdicts: Vec<Verdict> = r.claims.iter().map(|c| c.verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Holds,
                Verdict::Fails,
                Verdict::InsufficientData,
                Verdict::NoData
            ]
        );
        let my = r.groups.iter().find(|g| g.subject == "MY").unwrap();
        assert_eq!(my.status, "insufficient_data");
        assert!(
            my.percentiles.is_empty(),
            "no interval on insufficient data"
        );
        let json: serde_json::Value = serde_json::from_slice(&render_json(&r).unwrap()).unwrap();
        assert_eq!(json["schema"], REPORT_SCHEMA);
        check_against_schema(&json);
        assert_eq!(json["claims"][0]["verdict"], "holds");
        let csv = String::from_utf8(render_csv(&r).unwrap()).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2 * QUANTILES.len());
        assert!(render_text(&r)
            .contains("claim: IN quic_cold_request p50 decreases by >= 350ms — holds"));
    }

    /// Relay-mode lab data: `tcp_connect` never crossed the path, so it is
    /// withheld everywhere and marked in the JSON, the text and the page.
    #[test]
    fn what_the_relay_mode_cannot_emulate_is_marked_and_never_shown() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let side = |phase: &str, base: u64, rng: &mut rand::rngs::StdRng| {
            let mut out = rows("IN", phase, 3, 12, base, rng);
            let mut tcp = out.clone();
            for r in &mut tcp {
                r.series.metric = Metric::TcpConnect;
            }
            out.extend(tcp);
            for r in &mut out {
                r.labels.insert("simulated", "true").unwrap();
                r.labels.insert("emulation", "relay").unwrap();
            }
            out
        };
        let (before, after) = (side("before", 200, &mut rng), side("after", 100, &mut rng));
        let options = ReportOptions {
            resamples: 100,
            claims: vec!["IN quic_cold_request p50 decreases by >= 1ms"
                .parse()
                .unwrap()],
            ..ReportOptions::default()
        };
        let report = build_report(&before, &after, &options);
        assert_eq!(report.not_emulated, ["tcp_connect", "path_trace"]);
        assert!(report.groups.iter().all(|g| g.metric != "tcp_connect"));
        assert!(report
            .groups
            .iter()
            .any(|g| g.metric == "quic_cold_request"));
        let json: serde_json::Value =
            serde_json::from_slice(&render_json(&report).unwrap()).unwrap();
        check_against_schema(&json);
        assert_eq!(
            json["not_emulated"],
            serde_json::json!(["tcp_connect", "path_trace"])
        );
        let text = render_text(&report);
        assert!(
            text.contains("NOT EMULATED: tcp_connect, path_trace"),
            "{text}"
        );
        assert_eq!(text.matches("tcp_connect").count(), 1, "{text}");
        let page = html::render_html(&report, &html::DataSummary::default(), &[], "charts/");
        assert!(page.contains("id=\"not-emulated\""));
        assert_eq!(page.matches("tcp_connect").count(), 1);
        // Without the label (a real probe), nothing is withheld.
        let strip = |mut v: Vec<StoredSeries>| {
            for r in &mut v {
                r.labels = Labels::new();
                r.labels.insert("country", "IN").unwrap();
                r.labels.insert("phase", "x").unwrap();
            }
            v
        };
        let report = build_report(&strip(before), &strip(after), &options);
        assert!(report.not_emulated.is_empty());
        assert!(report.groups.iter().any(|g| g.metric == "tcp_connect"));
    }

    #[test]
    fn too_few_probes_get_no_verdict_but_keep_their_interval() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let claim = "IN quic_cold_request p50 decreases by >= 350ms";
        let judge = |probes: usize, min_probes: usize, rng: &mut rand::rngs::StdRng| {
            let before = rows("IN", "before", probes, 12, 460_000, rng);
            let mut after = rows("IN", "after", probes, 12, 100_000, rng);
            // One probe of the candidate on another network, and failures.
            after[0].labels.insert("network", "4g").unwrap();
            after[0].series.sent += 3;
            after[0].series.lost = 2;
            after[0]
                .series
                .errors
                .insert(vantage_wire::ErrorClass::Tls, 1);
            after[0]
                .series
                .reasons
                .insert(vantage_wire::Reason::TlsExpired, 1);
            after[0].series.statuses.insert(503, 4);
            // Of the 2 lost, one seen going out; one of unknown direction.
            after[0].series.path.forward_lost = 1;
            after[0].series.path.unknown_direction_lost = 1;
            let options = ReportOptions {
                resamples: 200,
                min_probes,
                claims: vec![claim.parse().unwrap()],
                ..ReportOptions::default()
            };
            build_report(&before, &after, &options)
        };
        let one = judge(1, 3, &mut rng);
        let g = &one.claims[0].groups[0];
        assert_eq!(g.verdict, Verdict::InsufficientProbes);
        assert_eq!(one.claims[0].verdict, Verdict::InsufficientProbes);
        let s = g.statistic.expect("the interval is still given");
        assert!(s.low > 300_000.0, "{s:?}");
        // The probe's first window came over another network: two.
        assert_eq!((g.probes, g.networks), ((1, 1), (1, 2)));
        assert!(render_text(&one).contains("insufficient probes (1 / 1 probe on 1 / 2 networks)"));
        let three = judge(3, 3, &mut rng);
        let g = &three.claims[0].groups[0];
        assert_eq!(g.verdict, Verdict::Holds);
        assert_eq!((g.probes, g.networks), ((3, 3), (1, 2)));
        let after = &three.groups[0].candidate;
        assert_eq!(after.lost, 2);
        assert_eq!(after.failures.classes["tls"], 1);
        assert_eq!(after.failures.reasons["tls_expired"], 1);
        assert_eq!(after.failures.statuses["503"], 4);
        assert_eq!(
            after.failures.loss_direction,
            [("forward".to_string(), 1), ("unknown".to_string(), 1)].into()
        );
        let json: serde_json::Value =
            serde_json::from_slice(&render_json(&three).unwrap()).unwrap();
        check_against_schema(&json);
        assert_eq!(
            json["claims"][0]["groups"][0]["probes"],
            serde_json::json!([3, 3])
        );
        // A lab run's timing: in the JSON, the text and the page; when
        // degraded, on top of the page and first in the text.
        let mut busy = three.clone();
        busy.lab_timing = Some(LabTiming::judge(
            std::time::Duration::from_micros(40),
            std::time::Duration::from_millis(89),
            21_367,
            Some(std::time::Duration::from_millis(5)),
        ));
        let json: serde_json::Value = serde_json::from_slice(&render_json(&busy).unwrap()).unwrap();
        check_against_schema(&json);
        assert_eq!(json["lab_timing"]["degraded"], true);
        assert!(render_text(&busy).contains("LAB TIMING DEGRADED"));
        let page = html::render_html(&busy, &html::DataSummary::default(), &[], "charts/");
        let banner = page.find("id=\"lab-timing-degraded\"").expect("a banner");
        assert!(banner < page.find("id=\"in-one-minute\"").unwrap_or(usize::MAX));
        assert!(page.contains("id=\"lab-timing\""));
        // The same data with the threshold lowered to one probe is judged.
        assert_eq!(judge(1, 1, &mut rng).claims[0].verdict, Verdict::Holds);

        // In plain words, first on the page and in summary.txt.
        let said = plain::summary_sentences(&one).join("\n");
        assert!(
            said.contains("India: opening the app (a cold request) is ")
                && said.contains(" faster at the median [")
                && said.contains("no verdict: 1 probe on a side, and a verdict needs at least 3"),
            "{said}"
        );
        let said = plain::summary_sentences(&three).join("\n");
        assert!(
            said.contains(
                "3 probes on 4g and unlabelled networks, 12 min before and after; the claim holds"
            ),
            "{said}"
        );
        assert!(render_text(&three).contains(&format!("* {}", said.lines().next().unwrap())));
        let page = html::render_html(&three, &html::DataSummary::default(), &[], "charts/");
        let at = |id: &str| page.find(&format!("id=\"{id}\"")).unwrap_or(usize::MAX);
        assert!(at("in-one-minute") < at("verdicts") && at("verdicts") < at("failures"));
        assert!(
            page.contains(
                "lost 2; (direction forward 1, unknown 1); tls 1; (tls_expired 1); HTTP 503 4"
            ),
            "failures listed"
        );
        assert!(page.contains("opening the app (a cold request) <code>quic_cold_request</code>"));
    }

    /// Every network got slower, yet the country as a whole got faster,
    /// because the slow network dominated before and the fast one after:
    /// with strata, the country's group is rolled up from them, and the
    /// reversal is flagged on it, in the sentences and on the page.
    #[test]
    fn a_change_that_reverses_within_every_stratum_is_flagged() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let side = |phase: &str, rng: &mut rand::rngs::StdRng| {
            let (wifi_windows, g4_windows, slower) = if phase == "before" {
                (2, 12, 0)
            } else {
                (12, 2, 25_000)
            };
            let mut out = Vec::new();
            for (net, windows, base) in
                [("wifi", wifi_windows, 100_000), ("4g", g4_windows, 300_000)]
            {
                for mut r in rows("IN", phase, 5, windows, base + slower, rng) {
                    r.labels.insert("network", net).unwrap();
                    r.probe_id = format!("{}-{net}", r.probe_id);
                    out.push(r);
                }
            }
            out
        };
        let (before, after) = (side("before", &mut rng), side("after", &mut rng));
        let options = ReportOptions {
            group_by: vec!["country".into(), "network".into()],
            resamples: 300,
            claims: vec!["IN quic_cold_request p50 decreases by >= 100ms"
                .parse()
                .unwrap()],
            ..ReportOptions::default()
        };
        let r = build_report(&before, &after, &options);
        let subjects: Vec<&str> = r.groups.iter().map(|g| g.subject.as_str()).collect();
        assert_eq!(subjects, ["IN", "IN/4g", "IN/wifi"], "{subjects:?}");
        let whole = &r.groups[0];
        assert_eq!(whole.baseline.probes, 10);
        assert_eq!(whole.key.get("network"), None);
        let p50 = whole.percentiles[0].difference;
        assert!(p50.high < 0.0, "faster as a whole: {p50:?}");
        for stratum in &r.groups[1..] {
            assert!(
                stratum.percentiles[0].difference.low > 0.0,
                "{}: slower",
                stratum.subject
            );
        }
        assert_eq!(whole.reversed_in, ["IN/4g", "IN/wifi"]);
        assert_eq!(
            r.claims[0].verdict,
            Verdict::Holds,
            "the claim is on the whole"
        );
        let said = plain::summary_sentences(&r).join("\n");
        assert!(
            said.contains("goes the other way within 4g and wifi (Simpson's paradox"),
            "{said}"
        );
        let page = html::render_html(&r, &html::DataSummary::default(), &[], "charts/");
        assert!(
            page.contains("id=\"strata\"") && page.contains("⚠ reversed within IN/4g, IN/wifi")
        );
        let json: serde_json::Value = serde_json::from_slice(&render_json(&r).unwrap()).unwrap();
        check_against_schema(&json);
        // Without strata nothing is rolled up or flagged.
        let flat = build_report(
            &before,
            &after,
            &ReportOptions {
                resamples: 100,
                ..ReportOptions::default()
            },
        );
        assert_eq!(flat.groups.len(), 1);
        assert!(flat.groups[0].reversed_in.is_empty());
    }

    #[test]
    fn charts_are_rendered_to_bytes_and_the_page_inlines_those_bytes() {
        use base64::Engine;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let before = rows("IN", "before", 3, 4, 300_000, &mut rng);
        let after = rows("IN", "after", 3, 4, 100_000, &mut rng);
        let options = ReportOptions {
            resamples: 100,
            ..ReportOptions::default()
        };
        let evidence = Evidence::from_rows(&before, &after, &options.group_by);
        let r = build_report_from(&evidence, &options);
        let charts = charts::render_charts(&r, &evidence).unwrap();
        assert!(charts.len() >= 4, "{} charts", charts.len());
        for c in &charts {
            assert!(c.png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", c.file.stem);
            assert!(String::from_utf8_lossy(&c.svg).contains("<svg"));
            assert!(c.csv.iter().filter(|b| **b == b'\n').count() > 1);
        }
        let page = html::render_html(&r, &html::DataSummary::of(&evidence), &charts, "charts/");
        for c in &charts {
            let inlined = base64::engine::general_purpose::STANDARD.encode(&c.png);
            assert!(page.contains(&inlined), "{} is inlined", c.file.stem);
        }
    }
}
