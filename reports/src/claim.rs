//! Claims a stakeholder states, and their verdicts.
//!
//! Grammar (keywords are case-insensitive):
//!
//! ```text
//! claim   := SUBJECT METRIC STAT CHANGE
//! SUBJECT := the group's value, such as IN (or IN/singapore when grouped by
//!            two keys besides the metric), or * for every group
//! STAT    := p50 | p90 | p99 | p99.9 | pNN
//! CHANGE  := (decreases | increases) by OP AMOUNT
//!          | ratio OP NUMBER
//!          | ratio between NUMBER and NUMBER
//! OP      := >= | > | <= | < | at least | at most
//! AMOUNT  := NUMBER (us | ms | s | %)
//! ```
//!
//! Examples: `IN quic_cold_request p50 decreases by >= 350ms`,
//! `MY photosync_goodput p50 ratio between 2 and 3`.
//!
//! A claim **holds** when its whole confidence interval satisfies it,
//! **fails** when the whole interval contradicts it, and is
//! **inconclusive** otherwise.

use std::fmt;
use std::str::FromStr;
use vantage_wire::Metric;

/// The grammar, for error messages.
pub const GRAMMAR: &str = "SUBJECT METRIC pNN (decreases|increases) by (>=|>|<=|<|at least|at most) NUMBER(us|ms|s|%)  \
or  SUBJECT METRIC pNN ratio (>=|>|<=|<) NUMBER  or  SUBJECT METRIC pNN ratio between A and B  \
(for example: IN quic_cold_request p50 decreases by >= 350ms; MY photosync_goodput p50 ratio between 2 and 3)";

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    /// ≥
    AtLeast,
    /// >
    Above,
    /// ≤
    AtMost,
    /// <
    Below,
}

/// What the claim says changes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Change {
    /// baseline − candidate, µs (latency drops).
    DecreaseBy(Op, f64),
    /// candidate − baseline, µs.
    IncreaseBy(Op, f64),
    /// (baseline − candidate) / baseline, as a fraction.
    DecreaseByFraction(Op, f64),
    /// (candidate − baseline) / baseline, as a fraction.
    IncreaseByFraction(Op, f64),
    /// candidate / baseline.
    Ratio(Op, f64),
    /// candidate / baseline within [low, high].
    RatioBetween(f64, f64),
}

/// A parsed claim.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Claim {
    /// As the user wrote it.
    pub text: String,
    /// The group it is about (`*` for all).
    pub subject: String,
    /// The metric.
    #[serde(serialize_with = "metric_name")]
    pub metric: Metric,
    /// The quantile, 0..1.
    pub quantile: f64,
    /// The change claimed.
    pub change: Change,
}

impl Claim {
    /// A value of the claimed statistic as people read it: ms for a
    /// latency change, % for a relative one, × for a ratio.
    pub fn format_statistic(&self, v: f64) -> String {
        match self.change {
            Change::DecreaseBy(..) | Change::IncreaseBy(..) => format!("{:.1} ms", v / 1e3),
            Change::DecreaseByFraction(..) | Change::IncreaseByFraction(..) => {
                format!("{:.1} %", v * 100.0)
            }
            Change::Ratio(..) | Change::RatioBetween(..) => format!("{v:.2}×"),
        }
    }
}

fn metric_name<S: serde::Serializer>(m: &Metric, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// A claim that does not parse, with the grammar.
#[derive(Debug, Clone, thiserror::Error)]
#[error("claim `{text}`: {problem}. Grammar: {GRAMMAR}")]
pub struct ClaimError {
    /// The claim.
    pub text: String,
    /// What is wrong.
    pub problem: String,
}

fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl FromStr for Claim {
    type Err = ClaimError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |problem: &str| ClaimError {
            text: text.to_string(),
            problem: problem.to_string(),
        };
        // Split numbers from units and operators from numbers: "by >=350ms";
        // not in the subject and metric, whose names may mix digits and
        // letters (`IN/4g`).
        let mut head = text.split_whitespace();
        let mut spaced: String = head.by_ref().take(2).collect::<Vec<_>>().join(" ");
        spaced.push(' ');
        let tail: String = head.collect::<Vec<_>>().join(" ");
        let chars: Vec<char> = tail.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            spaced.push(*c);
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            let is_op = |c: char| matches!(c, '<' | '>' | '=');
            if (is_op(*c) && !is_op(next))
                || (c.is_ascii_digit() && (next.is_alphabetic() || next == '%' || next == 'µ'))
            {
                spaced.push(' ');
            }
        }
        let words: Vec<String> = spaced.split_whitespace().map(|w| w.to_string()).collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        if words.len() < 5 {
            return Err(err("too short"));
        }
        let subject = words[0].to_uppercase();
        let subject = if subject.len() == 2 {
            subject
        } else {
            words[0].clone()
        };
        let metric: Metric = words[1]
            .parse()
            .map_err(|e: vantage_wire::ParseNameError| err(&e.to_string()))?;
        let quantile = lower[2]
            .strip_prefix('p')
            .and_then(parse_number)
            .filter(|p| *p > 0.0 && *p < 100.0)
            .map(|p| p / 100.0)
            .ok_or_else(|| {
                err(&format!(
                    "`{}` is not a percentile such as p50 or p99.9",
                    words[2]
                ))
            })?;
        let rest: Vec<&str> = lower[3..].iter().map(String::as_str).collect();
        let op = |w: &[&str]| -> Option<(Op, usize)> {
            match w {
                [">=", ..] => Some((Op::AtLeast, 1)),
                [">", ..] => Some((Op::Above, 1)),
                ["<=", ..] => Some((Op::AtMost, 1)),
                ["<", ..] => Some((Op::Below, 1)),
                ["at", "least", ..] => Some((Op::AtLeast, 2)),
                ["at", "most", ..] => Some((Op::AtMost, 2)),
                _ => None,
            }
        };
        let change = match rest.as_slice() {
            [dir @ ("decreases" | "increases"), "by", tail @ ..] => {
                let (op, used) = op(tail).ok_or_else(|| {
                    err("expected an operator after `by`: >=, >, <=, <, at least, at most")
                })?;
                let amount = &tail[used..];
                let (value, unit) = match amount {
                    [v, u] => (parse_number(v), *u),
                    _ => (None, ""),
                };
                let value =
                    value.ok_or_else(|| err("expected an amount such as 350 ms or 20 %"))?;
                let decrease = *dir == "decreases";
                match unit {
                    "%" => {
                        if decrease {
                            Change::DecreaseByFraction(op, value / 100.0)
                        } else {
                            Change::IncreaseByFraction(op, value / 100.0)
                        }
                    }
                    "us" | "µs" | "ms" | "s" => {
                        let us = value
                            * match unit {
                                "ms" => 1e3,
                                "s" => 1e6,
                                _ => 1.0,
                            };
                        if decrease {
                            Change::DecreaseBy(op, us)
                        } else {
                            Change::IncreaseBy(op, us)
                        }
                    }
                    other => return Err(err(&format!("unit `{other}`: use us, ms, s or %"))),
                }
            }
            ["ratio", "between", a, "and", b] => {
                let (a, b) = (parse_number(a), parse_number(b));
                match (a, b) {
                    (Some(a), Some(b)) if a <= b => Change::RatioBetween(a, b),
                    _ => return Err(err("`ratio between A and B` needs numbers with A ≤ B")),
                }
            }
            ["ratio", tail @ ..] => {
                let (op, used) =
                    op(tail).ok_or_else(|| err("expected an operator after `ratio`"))?;
                match &tail[used..] {
                    [v] => Change::Ratio(
                        op,
                        parse_number(v)
                            .ok_or_else(|| err("expected a number after the operator"))?,
                    ),
                    _ => return Err(err("expected one number after the operator")),
                }
            }
            _ => {
                return Err(err(
                    "expected `decreases by …`, `increases by …` or `ratio …`",
                ))
            }
        };
        Ok(Claim {
            text: text.trim().to_string(),
            subject,
            metric,
            quantile,
            change,
        })
    }
}

/// The verdict on a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval satisfies the claim.
    Holds,
    /// The whole interval contradicts it.
    Fails,
    /// The interval straddles the claimed bound.
    Inconclusive,
    /// Too few samples or series to judge.
    InsufficientData,
    /// An interval was computed, but fewer probes than
    /// [`crate::ReportOptions::min_probes`] back a side: it describes
    /// those probes, not the country's users, so no verdict is given.
    InsufficientProbes,
    /// No group matches the claim's subject and metric.
    NoData,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::Inconclusive => "inconclusive",
            Verdict::InsufficientData => "insufficient data",
            Verdict::InsufficientProbes => "insufficient probes",
            Verdict::NoData => "no data",
        })
    }
}

/// Where an interval [low, high] stands against `op bound`.
fn judge(op: Op, bound: f64, low: f64, high: f64) -> Verdict {
    if low.is_nan() || high.is_nan() {
        return Verdict::InsufficientData;
    }
    let (all, none) = match op {
        Op::AtLeast => (low >= bound, high < bound),
        Op::Above => (low > bound, high <= bound),
        Op::AtMost => (high <= bound, low > bound),
        Op::Below => (high < bound, low >= bound),
    };
    if all {
        Verdict::Holds
    } else if none {
        Verdict::Fails
    } else {
        Verdict::Inconclusive
    }
}

/// The claimed statistic's interval, computed from the difference
/// (candidate − baseline) and ratio (candidate / baseline) intervals.
pub fn claimed_interval(
    change: &Change,
    diff: (f64, f64, f64),
    ratio: (f64, f64, f64),
) -> (f64, f64, f64) {
    match change {
        Change::DecreaseBy(..) => (-diff.0, -diff.2, -diff.1),
        Change::IncreaseBy(..) => diff,
        Change::DecreaseByFraction(..) => (1.0 - ratio.0, 1.0 - ratio.2, 1.0 - ratio.1),
        Change::IncreaseByFraction(..) => (ratio.0 - 1.0, ratio.1 - 1.0, ratio.2 - 1.0),
        Change::Ratio(..) | Change::RatioBetween(..) => ratio,
    }
}

/// The verdict for a claimed statistic's interval (estimate, low, high).
pub fn verdict(change: &Change, interval: (f64, f64, f64)) -> Verdict {
    let (_, low, high) = interval;
    match *change {
        Change::DecreaseBy(op, v)
        | Change::IncreaseBy(op, v)
        | Change::DecreaseByFraction(op, v)
        | Change::IncreaseByFraction(op, v)
        | Change::Ratio(op, v) => judge(op, v, low, high),
        Change::RatioBetween(a, b) => match (
            judge(Op::AtLeast, a, low, high),
            judge(Op::AtMost, b, low, high),
        ) {
            (Verdict::Holds, Verdict::Holds) => Verdict::Holds,
            (Verdict::Fails, _) | (_, Verdict::Fails) => Verdict::Fails,
            (Verdict::InsufficientData, _) | (_, Verdict::InsufficientData) => {
                Verdict::InsufficientData
            }
            _ => Verdict::Inconclusive,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_parse_in_the_forms_people_write_them() {
        let c: Claim = "IN quic_cold_request p50 decreases by >= 350ms"
            .parse()
            .unwrap();
        assert_eq!(
            (c.subject.as_str(), c.metric, c.quantile),
            ("IN", Metric::QuicColdRequest, 0.5)
        );
        assert_eq!(c.change, Change::DecreaseBy(Op::AtLeast, 350_000.0));
        let c: Claim = "my photosync_goodput p50 ratio between 2 and 3"
            .parse()
            .unwrap();
        assert_eq!(c.subject, "MY");
        assert_eq!(c.change, Change::RatioBetween(2.0, 3.0));
        let c: Claim = "US udp_rtt p99.9 increases by at most 10 %"
            .parse()
            .unwrap();
        assert!((c.quantile - 0.999).abs() < 1e-12);
        assert_eq!(c.change, Change::IncreaseByFraction(Op::AtMost, 0.10));
        let c: Claim = "* https_request p90 ratio <0.5".parse().unwrap();
        assert_eq!(c.change, Change::Ratio(Op::Below, 0.5));
        // A stratum's subject keeps its digits and letters together.
        let c: Claim = "MY/4g photosync_goodput p50 ratio >=2".parse().unwrap();
        assert_eq!(
            (c.subject.as_str(), c.metric),
            ("MY/4g", Metric::PhotosyncGoodput)
        );
        assert_eq!(c.change, Change::Ratio(Op::AtLeast, 2.0));
    }

    #[test]
    fn bad_claims_show_the_grammar() {
        for (claim, needle) in [
            ("IN quic_cold_request p50 drops by 350ms", "decreases by"),
            (
                "IN quic_cold_requests p50 decreases by >= 350ms",
                "unknown metric",
            ),
            ("IN udp_rtt p500 decreases by >= 1ms", "percentile"),
            ("IN udp_rtt p50 decreases by >= 1 furlong", "unit"),
            ("IN udp_rtt p50 ratio between 3 and 2", "A ≤ B"),
        ] {
            let e = claim.parse::<Claim>().unwrap_err().to_string();
            assert!(
                e.contains(needle) && e.contains("Grammar:"),
                "`{e}` lacks `{needle}`"
            );
        }
    }

    #[test]
    fn verdicts_need_the_whole_interval() {
        let c = Change::DecreaseBy(Op::AtLeast, 350_000.0);
        // Latency fell by 360..400 ms: holds.
        assert_eq!(
            verdict(
                &c,
                claimed_interval(&c, (-380e3, -400e3, -360e3), (0.2, 0.1, 0.3))
            ),
            Verdict::Holds
        );
        // Fell by 300..340 ms: fails.
        assert_eq!(
            verdict(
                &c,
                claimed_interval(&c, (-320e3, -340e3, -300e3), (0.2, 0.1, 0.3))
            ),
            Verdict::Fails
        );
        // Fell by 330..370 ms: inconclusive.
        assert_eq!(
            verdict(
                &c,
                claimed_interval(&c, (-350e3, -370e3, -330e3), (0.2, 0.1, 0.3))
            ),
            Verdict::Inconclusive
        );
        let r = Change::RatioBetween(2.0, 3.0);
        assert_eq!(verdict(&r, (2.5, 2.2, 2.8)), Verdict::Holds);
        assert_eq!(verdict(&r, (3.5, 3.2, 3.8)), Verdict::Fails);
        assert_eq!(verdict(&r, (2.9, 2.5, 3.3)), Verdict::Inconclusive);
        assert_eq!(
            verdict(&r, (f64::NAN, f64::NAN, f64::NAN)),
            Verdict::InsufficientData
        );
    }
}
