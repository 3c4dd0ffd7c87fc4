//! Percentiles over sets of series, and the bootstrap that gives them
//! confidence intervals. Requests within one (probe, window) series are
//! not independent (they share the probe's network and the minute's
//! conditions), so the bootstrap resamples whole series, never single
//! requests; and series of one probe are not independent either (its
//! network, its device), so it resamples in two stages, probes first and
//! then each drawn probe's series, and a probe found on both sides is
//! drawn on both at once (a before/after panel). The interval then says
//! what other probes like these might show, not only what these probes'
//! minutes did. Plain code: randomness comes from a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vantage_wire::{LatencyHistogram, SparseCounts};

/// One resampling unit: a (probe, window) series' distribution, compacted
/// to its recorded (value, count) pairs, 8 bytes a pair: values are at
/// most an hour in µs (under 2^32), and a count past `u32::MAX` is split
/// over several pairs of the same value, so nothing is lost. A report
/// holds up to a thousand units per group, so their size is its memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    values: Vec<(u32, u32)>,
    samples: u64,
}

/// Appends (value, count), split into pairs that fit.
fn push_pair(values: &mut Vec<(u32, u32)>, value: u64, mut count: u64) {
    let v = u32::try_from(value).unwrap_or(u32::MAX);
    while count > 0 {
        let n = count.min(u64::from(u32::MAX));
        values.push((v, n as u32));
        count -= n;
    }
}

impl Unit {
    /// The unit of (highest equivalent value, count) pairs in value order.
    fn from_pairs(pairs: impl Iterator<Item = (u64, u64)>) -> Self {
        let mut values = Vec::with_capacity(pairs.size_hint().0);
        let mut samples = 0u64;
        for (v, n) in pairs {
            push_pair(&mut values, v, n);
            samples += n;
        }
        values.shrink_to_fit();
        Unit { values, samples }
    }

    /// The unit of one series' histogram.
    pub fn from_histogram(h: &LatencyHistogram) -> Self {
        Unit::from_pairs(h.iter_recorded().map(|v| {
            (
                h.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        }))
    }

    /// The unit of one series' sparse counts.
    pub fn from_counts(counts: &SparseCounts) -> Self {
        Unit::from_pairs(counts.iter_highest())
    }

    /// How many (value, count) pairs it holds: its size in memory, 8 bytes each.
    pub(crate) fn pair_count(&self) -> usize {
        self.values.len()
    }

    /// (value, count) pairs in value order.
    fn pairs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.values
            .iter()
            .map(|&(v, n)| (u64::from(v), u64::from(n)))
    }

    /// Samples in the unit.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// One unit holding every sample of `units`: sorted lists merged
    /// pairwise, in a tree, so each value is copied about log2(units) times
    /// and nothing is sorted.
    pub fn merge<'a>(units: impl IntoIterator<Item = &'a Unit>) -> Unit {
        let mut level: Vec<Unit> = Vec::new();
        let mut pending: Option<&Unit> = None;
        for u in units {
            match pending.take() {
                None => pending = Some(u),
                Some(p) => level.push(Unit::merge_two(p, u)),
            }
        }
        if let Some(p) = pending {
            level.push(p.clone());
        }
        while level.len() > 1 {
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut it = level.into_iter();
            while let Some(a) = it.next() {
                next.push(match it.next() {
                    Some(b) => Unit::merge_two(&a, &b),
                    None => a,
                });
            }
            level = next;
        }
        level.pop().unwrap_or_default()
    }

    /// `a` and `b` together, in one pass over both.
    fn merge_two(a: &Unit, b: &Unit) -> Unit {
        let (x, y) = (&a.values, &b.values);
        let mut values = Vec::with_capacity(x.len() + y.len());
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            let (vx, nx) = x[i];
            let (vy, ny) = y[j];
            if vx == vy {
                push_pair(&mut values, u64::from(vx), u64::from(nx) + u64::from(ny));
                i += 1;
                j += 1;
            } else if vx < vy {
                values.push((vx, nx));
                i += 1;
            } else {
                values.push((vy, ny));
                j += 1;
            }
        }
        values.extend_from_slice(&x[i..]);
        values.extend_from_slice(&y[j..]);
        Unit {
            values,
            samples: a.samples + b.samples,
        }
    }
}

/// The standard normal quantile at `p` (0 < p < 1), by Acklam's rational
/// approximation (relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// The Wilson score interval of a binomial share: `hits` of `n`, at
/// `confidence` (two-sided). With no trials, the whole of [0, 1].
pub fn wilson(hits: u64, n: u64, confidence: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    let (n, p) = (n as f64, hits as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The values at quantiles `qs` (each in 0..=1) of the units taken together,
/// with HdrHistogram's convention: the highest value equivalent to the
/// sample at rank ⌈q·n⌉. `None` when there are no samples.
pub fn quantiles<'a>(units: impl IntoIterator<Item = &'a Unit>, qs: &[f64]) -> Option<Vec<u64>> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    for u in units {
        all.extend(u.pairs());
    }
    let total: u64 = all.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    all.sort_unstable_by_key(|(v, _)| *v);
    let mut out = Vec::with_capacity(qs.len());
    for &q in qs {
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let mut value = all.last().map(|(v, _)| *v).unwrap_or(0);
        for (v, c) in &all {
            seen += c;
            if seen >= rank {
                value = *v;
                break;
            }
        }
        out.push(value);
    }
    Some(out)
}

/// A point estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    /// From all the data.
    pub estimate: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Every unit's (value, count) pairs pooled and sorted once, so that a
/// resample, which only changes how many times each unit is drawn, costs
/// one walk over the pool instead of a merge and a sort. When the table
/// fits, each unit's cumulative counts at every distinct value are kept
/// too (value-major), and a quantile is a binary search over the values,
/// each step one weighted sum over the units: far less than a walk when
/// there are many pairs.
struct Pool {
    /// (value, unit index, count), by value.
    pairs: Vec<(u64, u32, u64)>,
    samples: Vec<u64>,
    /// Distinct values, ascending.
    values: Vec<u64>,
    /// `cumulative[j * units + u]`: samples of unit `u` at or below `values[j]`.
    cumulative: Option<Vec<u32>>,
}

/// Largest cumulative table kept (entries); beyond it the pool walks.
const MAX_TABLE: usize = 32 << 20;

impl Pool {
    fn new(units: &[Unit]) -> Self {
        Self::build(units, true)
    }

    /// The pool, with the cumulative table if `table` and it fits.
    fn build(units: &[Unit], table: bool) -> Self {
        let mut pairs: Vec<(u64, u32, u64)> = units
            .iter()
            .enumerate()
            .flat_map(|(i, u)| u.pairs().map(move |(v, c)| (v, i as u32, c)))
            .collect();
        pairs.sort_unstable_by_key(|&(v, _, _)| v);
        let mut values: Vec<u64> = pairs.iter().map(|&(v, _, _)| v).collect();
        values.dedup();
        let n = units.len();
        let fits = table
            && values.len().saturating_mul(n) <= MAX_TABLE
            && units.iter().all(|u| u.samples <= u64::from(u32::MAX));
        let cumulative = fits.then(|| {
            let mut table = vec![0u32; values.len() * n];
            let mut running = vec![0u32; n];
            let mut j = 0;
            for &(v, u, c) in &pairs {
                while values[j] < v {
                    table[j * n..(j + 1) * n].copy_from_slice(&running);
                    j += 1;
                }
                running[u as usize] += c as u32;
            }
            table[j * n..(j + 1) * n].copy_from_slice(&running);
            table
        });
        // With the table, quantiles never walk the pairs: not kept.
        let pairs = if cumulative.is_some() {
            Vec::new()
        } else {
            pairs
        };
        Pool {
            pairs,
            samples: units.iter().map(|u| u.samples).collect(),
            values,
            cumulative,
        }
    }

    /// Samples of the drawn units at or below `values[j]`.
    fn weight_at(table: &[u32], n: usize, weights: &[u64], j: usize) -> u64 {
        table[j * n..(j + 1) * n]
            .iter()
            .zip(weights)
            .map(|(&c, &w)| u64::from(c) * w)
            .sum()
    }

    /// The quantiles of the drawn units together, as [`quantiles`] gives
    /// them for the same multiset; false when no sample was drawn.
    fn quantiles(&self, weights: &[u64], qs: &[f64], out: &mut [u64]) -> bool {
        let total: u64 = weights.iter().zip(&self.samples).map(|(w, s)| w * s).sum();
        if total == 0 {
            return false;
        }
        let rank = |q: f64| ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        if let Some(table) = &self.cumulative {
            let n = weights.len();
            for (i, &q) in qs.iter().enumerate() {
                let want = rank(q);
                // Smallest j whose cumulative weight reaches the rank.
                let (mut lo, mut hi) = (0usize, self.values.len() - 1);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if Self::weight_at(table, n, weights, mid) >= want {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                out[i] = self.values[lo];
            }
            return true;
        }
        let mut order: Vec<usize> = (0..qs.len()).collect();
        order.sort_by(|&a, &b| qs[a].total_cmp(&qs[b]));
        let last = self
            .pairs
            .iter()
            .rev()
            .find(|&&(_, u, _)| weights[u as usize] > 0)
            .map_or(0, |&(v, _, _)| v);
        let mut next = 0;
        let mut seen = 0u64;
        for &(v, u, c) in &self.pairs {
            if next == order.len() {
                break;
            }
            seen += weights[u as usize] * c;
            while next < order.len() && seen >= rank(qs[order[next]]) {
                out[order[next]] = v;
                next += 1;
            }
        }
        for &i in &order[next..] {
            out[i] = last;
        }
        true
    }
}

/// One side's resampling units and the probe each came from, as an index
/// both sides share: a probe on both sides is one panel member.
#[derive(Debug, Clone, Copy)]
pub struct SideUnits<'a> {
    /// The units.
    pub units: &'a [Unit],
    /// `probes[i]`: the probe of `units[i]`.
    pub probes: &'a [u32],
}

/// The two-stage draw: which probes each side has (those on both drawn
/// together), and each probe's units per side.
struct Panel {
    /// Probes on both sides, on the baseline only, on the candidate only.
    both: Vec<usize>,
    only: [Vec<usize>; 2],
    /// Per side, per probe (dense index), its units' indices.
    members: [Vec<Vec<usize>>; 2],
}

impl Panel {
    fn new(sides: [&SideUnits<'_>; 2]) -> Panel {
        let mut ids: Vec<u32> = sides
            .iter()
            .flat_map(|s| s.probes.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let dense = |id: u32| ids.binary_search(&id).unwrap_or(0);
        let mut members = [vec![Vec::new(); ids.len()], vec![Vec::new(); ids.len()]];
        for (side, units) in sides.iter().enumerate() {
            for (i, &id) in units.probes.iter().enumerate() {
                members[side][dense(id)].push(i);
            }
        }
        let (mut both, mut only) = (Vec::new(), [Vec::new(), Vec::new()]);
        for (p, (b, c)) in members[0].iter().zip(&members[1]).enumerate() {
            match (b.is_empty(), c.is_empty()) {
                (false, false) => both.push(p),
                (false, true) => only[0].push(p),
                (true, false) => only[1].push(p),
                (true, true) => {}
            }
        }
        Panel {
            both,
            only,
            members,
        }
    }

    /// One resample: as many probes as there are, with replacement (the
    /// same draw for both sides where a probe is on both), and for each
    /// drawn probe as many of its units as it has, with replacement.
    /// `weights[side][i]` becomes how many times unit `i` was drawn.
    fn draw(&self, weights: [&mut [u64]; 2], rng: &mut StdRng) {
        let [wb, wc] = weights;
        wb.iter_mut().for_each(|w| *w = 0);
        wc.iter_mut().for_each(|w| *w = 0);
        let within = |units: &[usize], w: &mut [u64], rng: &mut StdRng| {
            for _ in 0..units.len() {
                w[units[rng.gen_range(0..units.len())]] += 1;
            }
        };
        for _ in 0..self.both.len() {
            let p = self.both[rng.gen_range(0..self.both.len())];
            within(&self.members[0][p], wb, rng);
            within(&self.members[1][p], wc, rng);
        }
        for (side, w) in [(0, &mut *wb), (1, &mut *wc)] {
            let only = &self.only[side];
            for _ in 0..only.len() {
                let p = only[rng.gen_range(0..only.len())];
                within(&self.members[side][p], w, rng);
            }
        }
    }
}

/// Bootstrap intervals, at `confidence`, of each quantile's difference
/// (candidate − baseline, in the values' unit) and ratio (candidate /
/// baseline), from `resamples` two-stage resamples of both sides (see the
/// module's head: probes, then their units).
pub fn bootstrap(
    baseline: SideUnits<'_>,
    candidate: SideUnits<'_>,
    qs: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<Vec<(Interval, Interval)>> {
    let base = quantiles(baseline.units, qs)?;
    let cand = quantiles(candidate.units, qs)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    let (pool_b, pool_c) = (Pool::new(baseline.units), Pool::new(candidate.units));
    let panel = Panel::new([&baseline, &candidate]);
    let (mut wb, mut wc) = (
        vec![0u64; baseline.units.len()],
        vec![0u64; candidate.units.len()],
    );
    let (mut bq, mut cq) = (vec![0u64; qs.len()], vec![0u64; qs.len()]);
    for _ in 0..resamples {
        panel.draw([&mut wb, &mut wc], &mut rng);
        if !pool_b.quantiles(&wb, qs, &mut bq) || !pool_c.quantiles(&wc, qs, &mut cq) {
            continue;
        }
        for i in 0..qs.len() {
            diffs[i].push(cq[i] as f64 - bq[i] as f64);
            if bq[i] > 0 {
                ratios[i].push(cq[i] as f64 / bq[i] as f64);
            }
        }
    }
    let tail = (1.0 - confidence) / 2.0;
    let bounds = |v: &mut Vec<f64>, estimate: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return Interval {
                estimate,
                low: f64::NAN,
                high: f64::NAN,
            };
        }
        let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        Interval {
            estimate,
            low: at(tail),
            high: at(1.0 - tail),
        }
    };
    Some(
        (0..qs.len())
            .map(|i| {
                let d = bounds(&mut diffs[i], cand[i] as f64 - base[i] as f64);
                let r = bounds(
                    &mut ratios[i],
                    if base[i] > 0 {
                        cand[i] as f64 / base[i] as f64
                    } else {
                        f64::NAN
                    },
                );
                (d, r)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_wire::new_latency_histogram;

    #[test]
    fn pooled_resample_quantiles_equal_the_merged_ones() {
        let mut rng = StdRng::seed_from_u64(9);
        let units: Vec<Unit> = (0..20)
            .map(|i| unit((0..30).map(|_| 1000 * (i % 5 + 1) + rng.gen_range(0..5000))))
            .collect();
        let pool = Pool::new(&units);
        assert!(pool.cumulative.is_some(), "a small pool keeps its table");
        let walk = Pool::build(&units, false);
        assert!(walk.cumulative.is_none() && !walk.pairs.is_empty());
        assert!(
            pool.pairs.is_empty(),
            "a pool with its table drops the pairs"
        );
        let qs = [0.5, 0.99, 0.9, 0.0, 1.0];
        let mut weights = vec![0u64; units.len()];
        let mut other = vec![0u64; units.len()];
        let mut got = vec![0u64; qs.len()];
        // Five probes of four units each, on both sides.
        let probes: Vec<u32> = (0..units.len() as u32).map(|i| i / 4).collect();
        let side = SideUnits {
            units: &units,
            probes: &probes,
        };
        let panel = Panel::new([&side, &side]);
        for _ in 0..50 {
            panel.draw([&mut weights, &mut other], &mut rng);
            assert_eq!(weights.iter().sum::<u64>(), units.len() as u64);
            // Whole probes are drawn: a probe's units come only with it.
            for p in 0..5 {
                let drawn = |w: &[u64]| w[p * 4..p * 4 + 4].iter().sum::<u64>() > 0;
                assert_eq!(
                    drawn(&weights),
                    drawn(&other),
                    "a panel probe is on both sides or neither"
                );
            }
            let mut walked = vec![0u64; qs.len()];
            assert!(walk.quantiles(&weights, &qs, &mut walked));
            assert!(pool.quantiles(&weights, &qs, &mut got));
            assert_eq!(got, walked, "table and walk agree");
            let drawn: Vec<&Unit> = units
                .iter()
                .zip(&weights)
                .flat_map(|(u, &w)| std::iter::repeat_n(u, w as usize))
                .collect();
            assert_eq!(Some(got.clone()), quantiles(drawn, &qs));
        }
    }

    #[test]
    fn a_count_past_u32_is_split_over_pairs_and_never_lost() {
        let many = u64::from(u32::MAX) + 5;
        let big = Unit::from_pairs([(100, many), (200, 1)].into_iter());
        assert_eq!(big.samples(), many + 1);
        assert_eq!(big.values.len(), 3, "{:?}", big.values);
        let merged = Unit::merge([&big, &big, &unit([100, 300])]);
        assert_eq!(merged.samples(), 2 * many + 4);
        assert_eq!(
            merged.pairs().map(|(_, n)| n).sum::<u64>(),
            merged.samples()
        );
        assert!(merged.values.windows(2).all(|w| w[0].0 <= w[1].0));
        // Rank total - 2 is the first 200, rank total the 300.
        let q200 = 1.0 - 2.5 / merged.samples() as f64;
        assert_eq!(
            quantiles([&merged], &[0.5, q200, 1.0]),
            Some(vec![100, 200, 300])
        );
    }

    #[test]
    fn merged_units_keep_every_sample() {
        let a = unit([10, 20, 20, 30]);
        let b = unit([20, 40]);
        let m = Unit::merge([&a, &b]);
        assert_eq!(m.samples(), 6);
        assert_eq!(
            quantiles([&m], &[0.5, 1.0]),
            quantiles([&a, &b], &[0.5, 1.0])
        );
    }

    fn unit(values: impl IntoIterator<Item = u64>) -> Unit {
        let mut h = new_latency_histogram();
        for v in values {
            h.record(v).unwrap();
        }
        Unit::from_histogram(&h)
    }

    #[test]
    fn quantiles_follow_hdrhistogram() {
        let mut h = new_latency_histogram();
        let mut rng = StdRng::seed_from_u64(1);
        let values: Vec<u64> = (0..5000).map(|_| rng.gen_range(1..1_000_000)).collect();
        for v in &values {
            h.record(*v).unwrap();
        }
        let halves = [
            unit(values[..2500].iter().copied()),
            unit(values[2500..].iter().copied()),
        ];
        let qs = [0.5, 0.9, 0.99, 0.999];
        let ours = quantiles(&halves, &qs).unwrap();
        let theirs: Vec<u64> = qs.iter().map(|q| h.value_at_quantile(*q)).collect();
        assert_eq!(ours, theirs);
        assert_eq!(quantiles(&[Unit::default()], &qs), None);
    }

    /// Two sides drawn from the same population: the difference interval
    /// covers zero; a 20 ms shift: it excludes zero and covers 20 ms.
    #[test]
    fn intervals_cover_the_truth() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut side = |shift: u64| -> Vec<Unit> {
            (0..40)
                .map(|_| unit((0..100).map(|_| 50_000 + shift + rng.gen_range(0..10_000))))
                .collect()
        };
        let (a, b, c) = (side(0), side(0), side(20_000));
        let (ia, ib) = (own_probes(&a, 0), own_probes(&b, 1));
        let ic = own_probes(&c, 2);
        let same = bootstrap(sides(&a, &ia), sides(&b, &ib), &[0.5], 500, 0.95, 1).unwrap()[0].0;
        assert!(same.low <= 0.0 && same.high >= 0.0, "{same:?}");
        let (diff, ratio) =
            bootstrap(sides(&a, &ia), sides(&c, &ic), &[0.5], 500, 0.95, 1).unwrap()[0];
        assert!(
            diff.low > 15_000.0
                && diff.high < 25_000.0
                && diff.low <= 20_000.0
                && diff.high >= 20_000.0,
            "{diff:?}"
        );
        assert!(ratio.low > 1.2 && ratio.high < 1.5, "{ratio:?}");
    }

    /// Resampling whole series: when series differ from each other (a probe
    /// on a bad network), the interval is wider than one that pretends all
    /// requests were independent would be.
    #[test]
    fn correlated_series_widen_the_interval() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut side = || -> Vec<Unit> {
            (0..10)
                .map(|_| {
                    let level = rng.gen_range(20_000..80_000);
                    unit((0..200).map(|_| level + rng.gen_range(0..2_000)))
                })
                .collect()
        };
        let (a, b) = (side(), side());
        let (ia, ib) = (own_probes(&a, 0), own_probes(&b, 1));
        let series = bootstrap(sides(&a, &ia), sides(&b, &ib), &[0.5], 400, 0.95, 2).unwrap()[0].0;
        // The same samples as one unit per request.
        let explode = |units: &[Unit]| -> Vec<Unit> {
            units
                .iter()
                .flat_map(|u| {
                    u.pairs()
                        .flat_map(|(v, c)| std::iter::repeat_n(unit([v]), c as usize))
                })
                .collect()
        };
        let (ea, eb) = (explode(&a), explode(&b));
        let (iea, ieb) = (own_probes(&ea, 0), own_probes(&eb, 1));
        let requests =
            bootstrap(sides(&ea, &iea), sides(&eb, &ieb), &[0.5], 400, 0.95, 2).unwrap()[0].0;
        assert!(
            series.high - series.low > 3.0 * (requests.high - requests.low),
            "{series:?} vs {requests:?}"
        );
    }

    /// Each unit its own probe, numbered apart per `side`: the one-stage
    /// bootstrap of whole series.
    fn own_probes(units: &[Unit], side: u32) -> Vec<u32> {
        (0..units.len() as u32)
            .map(|i| side * 1_000_000 + i)
            .collect()
    }

    fn sides<'a>(units: &'a [Unit], probes: &'a [u32]) -> SideUnits<'a> {
        SideUnits { units, probes }
    }

    /// Three probes at very different levels (wifi, 5G, 4G), each 30 ms
    /// faster after: measured as a panel (the same probes on both sides),
    /// the interval is about the change and narrow; the same units
    /// treated as strangers on each side take in the level differences
    /// and are far wider. Both cover the truth.
    #[test]
    fn a_panel_of_probes_is_drawn_on_both_sides_at_once() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut side = |shift: u64| -> (Vec<Unit>, Vec<u32>) {
            let mut units = Vec::new();
            let mut probes = Vec::new();
            for (p, level) in [(0u32, 100_000u64), (1, 140_000), (2, 200_000)] {
                for _ in 0..8 {
                    units.push(unit(
                        (0..60).map(|_| level - shift + rng.gen_range(0..6_000)),
                    ));
                    probes.push(p);
                }
            }
            (units, probes)
        };
        let ((a, pa), (b, pb)) = (side(0), side(30_000));
        let panel = bootstrap(sides(&a, &pa), sides(&b, &pb), &[0.5], 600, 0.95, 4).unwrap()[0].0;
        assert!(
            panel.low <= -30_000.0 && panel.high >= -30_000.0,
            "{panel:?}"
        );
        assert!(panel.high - panel.low < 15_000.0, "{panel:?}");
        let (ia, ib) = (own_probes(&a, 0), own_probes(&b, 1));
        let strangers =
            bootstrap(sides(&a, &ia), sides(&b, &ib), &[0.5], 600, 0.95, 4).unwrap()[0].0;
        assert!(
            strangers.high - strangers.low > 2.0 * (panel.high - panel.low),
            "{strangers:?} vs {panel:?}"
        );
        // One probe: the two stages are the one-stage bootstrap of its series.
        let one: Vec<u32> = vec![7; a.len()];
        let single =
            bootstrap(sides(&a, &one), sides(&a, &one), &[0.5], 200, 0.95, 4).unwrap()[0].0;
        assert!(single.low <= 0.0 && single.high >= 0.0, "{single:?}");
    }
}
