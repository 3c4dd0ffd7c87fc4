//! Percentiles over sets of series, and the bootstrap that gives them
//! confidence intervals. Requests within one (probe, window) series are
//! not independent (they share the probe's network and the minute's
//! conditions), so the bootstrap resamples whole series, never single
//! requests. Plain code: randomness comes from a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vantage_wire::LatencyHistogram;

/// One resampling unit: a (probe, window) series' distribution, compacted
/// to its recorded (value, count) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    values: Vec<(u64, u64)>,
    samples: u64,
}

impl Unit {
    /// The unit of one series' histogram.
    pub fn from_histogram(h: &LatencyHistogram) -> Self {
        let values: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| {
                (
                    h.highest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect();
        Unit {
            samples: h.len(),
            values,
        }
    }

    /// Samples in the unit.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

/// The values at quantiles `qs` (each in 0..=1) of the units taken together,
/// with HdrHistogram's convention: the highest value equivalent to the
/// sample at rank ⌈q·n⌉. `None` when there are no samples.
pub fn quantiles<'a>(units: impl IntoIterator<Item = &'a Unit>, qs: &[f64]) -> Option<Vec<u64>> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    for u in units {
        all.extend_from_slice(&u.values);
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

/// Bootstrap intervals, at `confidence`, of each quantile's difference
/// (candidate − baseline, in the values' unit) and ratio (candidate /
/// baseline), resampling each side's units with replacement `resamples`
/// times.
pub fn bootstrap(
    baseline: &[Unit],
    candidate: &[Unit],
    qs: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<Vec<(Interval, Interval)>> {
    let base = quantiles(baseline, qs)?;
    let cand = quantiles(candidate, qs)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    fn draw<'u>(units: &'u [Unit], rng: &mut StdRng) -> Vec<&'u Unit> {
        (0..units.len())
            .map(|_| &units[rng.gen_range(0..units.len())])
            .collect()
    }
    for _ in 0..resamples {
        let b = draw(baseline, &mut rng);
        let c = draw(candidate, &mut rng);
        let (Some(bq), Some(cq)) = (quantiles(b, qs), quantiles(c, qs)) else {
            continue;
        };
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
        let same = bootstrap(&a, &b, &[0.5], 500, 0.95, 1).unwrap()[0].0;
        assert!(same.low <= 0.0 && same.high >= 0.0, "{same:?}");
        let (diff, ratio) = bootstrap(&a, &c, &[0.5], 500, 0.95, 1).unwrap()[0];
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
        let series = bootstrap(&a, &b, &[0.5], 400, 0.95, 2).unwrap()[0].0;
        // The same samples as one unit per request.
        let explode = |units: &[Unit]| -> Vec<Unit> {
            units
                .iter()
                .flat_map(|u| {
                    u.values
                        .iter()
                        .flat_map(|(v, c)| std::iter::repeat_n(unit([*v]), *c as usize))
                })
                .collect()
        };
        let requests = bootstrap(&explode(&a), &explode(&b), &[0.5], 400, 0.95, 2).unwrap()[0].0;
        assert!(
            series.high - series.low > 3.0 * (requests.high - requests.low),
            "{series:?} vs {requests:?}"
        );
    }
}
