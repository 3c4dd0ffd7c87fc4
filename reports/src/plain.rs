//! The report in plain words: what a stakeholder reads in a minute. One
//! sentence per claim and per country's headline metric, each with its
//! interval, the probes and networks behind it, the time each side ran,
//! and the verdict. Plain functions of the report, to text; the HTML and
//! `summary.txt` both show them.

use crate::claim::{Change, Claim, Verdict};
use crate::{ClaimGroup, GroupComparison, Report};
use vantage_wire::Metric;

/// A metric's plain name: what a user waits for, not how it is measured.
pub fn plain_metric(metric: &str) -> &'static str {
    let Ok(m) = metric.parse::<Metric>() else {
        return "this measurement";
    };
    match m {
        Metric::UdpRtt => "the network round trip",
        Metric::QuicHandshake => "connecting (a QUIC handshake)",
        Metric::QuicRequest => "a request on an open connection (QUIC)",
        Metric::QuicColdRequest => "opening the app (a cold request)",
        Metric::TcpConnect => "a TCP connect",
        Metric::TlsHandshake => "a TLS handshake",
        Metric::HttpsRequest => "a request on an open connection (HTTPS)",
        Metric::HttpDns => "the DNS lookup of a web request",
        Metric::HttpConnect => "the connect of a web request",
        Metric::HttpTls => "the TLS handshake of a web request",
        Metric::HttpTtfb => "a web request's first byte",
        Metric::HttpTransfer => "a web response's transfer",
        Metric::HttpTotal => "a web request, end to end",
        Metric::HttpWarmTtfb => "a repeat web request's first byte",
        Metric::HttpWarmTransfer => "a repeat web response's transfer",
        Metric::HttpWarmTotal => "a repeat web request, end to end",
        Metric::PhotosyncUpload => "uploading a photo",
        Metric::PhotosyncDownload => "downloading a photo",
        Metric::PhotosyncGoodput => "photo sync",
        Metric::LoadedRtt => "a request while photos sync",
        Metric::ResponsivenessRpm => "responsiveness under load",
        Metric::UdpOwdForward => "the network delay on the way to the data centre",
        Metric::UdpOwdBackward => "the network delay on the way back",
        Metric::UdpOwdError => "the clocks' error on a one-way delay",
        Metric::PathTrace => "the round trip a traceroute finds",
    }
}

/// A country's name from its ISO 3166-1 alpha-2 code, for the countries
/// a campaign most likely has; other codes are shown as given.
pub fn country_name(code: &str) -> &str {
    const NAMES: &[(&str, &str)] = &[
        ("AE", "the UAE"),
        ("AU", "Australia"),
        ("BD", "Bangladesh"),
        ("BR", "Brazil"),
        ("CA", "Canada"),
        ("CN", "China"),
        ("DE", "Germany"),
        ("EG", "Egypt"),
        ("ES", "Spain"),
        ("FR", "France"),
        ("GB", "the UK"),
        ("HK", "Hong Kong"),
        ("ID", "Indonesia"),
        ("IN", "India"),
        ("IT", "Italy"),
        ("JP", "Japan"),
        ("KE", "Kenya"),
        ("KR", "South Korea"),
        ("LK", "Sri Lanka"),
        ("MX", "Mexico"),
        ("MY", "Malaysia"),
        ("NG", "Nigeria"),
        ("NL", "the Netherlands"),
        ("NP", "Nepal"),
        ("PH", "the Philippines"),
        ("PK", "Pakistan"),
        ("RU", "Russia"),
        ("SA", "Saudi Arabia"),
        ("SG", "Singapore"),
        ("TH", "Thailand"),
        ("TR", "Türkiye"),
        ("TW", "Taiwan"),
        ("US", "the US"),
        ("VN", "Vietnam"),
        ("ZA", "South Africa"),
    ];
    NAMES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map_or(code, |(_, name)| name)
}

/// A group's subject in words: `IN` is India, `IN/4g` India on 4g.
fn subject_name(subject: &str) -> String {
    let mut parts = subject.split('/');
    let first = parts.next().unwrap_or(subject);
    let rest: Vec<&str> = parts.collect();
    let name = country_name(first);
    // Sentences begin with it: "The US", not "the US".
    let mut name = name.to_string();
    if let Some(c) = name.get(..1) {
        name = c.to_uppercase() + &name[1..];
    }
    if rest.is_empty() {
        name
    } else {
        format!("{name} ({})", rest.join(", "))
    }
}

/// The percentile in words.
fn percentile_name(q: f64) -> String {
    if (q - 0.5).abs() < 1e-9 {
        "the median".into()
    } else {
        format!("the {}th percentile", trim_number(q * 100.0))
    }
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A duration in words, coarse: "50 s", "12 min", "5 h", "2 days".
pub fn duration_words(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", (s + 30) / 60),
        7_200..=172_799 => format!("{} h", (s + 1800) / 3600),
        _ => format!("{} days", (s + 43_200) / 86_400),
    }
}

/// "wifi, 4g and 5g".
fn list_words(items: &[String]) -> String {
    // Named networks first, the unlabelled last.
    let mut items: Vec<&str> = items.iter().map(String::as_str).collect();
    items.sort_by_key(|s| *s == "-");
    let items: Vec<&str> = items
        .into_iter()
        .map(|s| if s == "-" { "unlabelled networks" } else { s })
        .collect();
    match items.as_slice() {
        [] => "no network label".into(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// How long each side ran: "50 s before and after", "2 days before and 3
/// days after".
fn spans_words(spans: (Option<u64>, Option<u64>)) -> String {
    match spans {
        (Some(b), Some(c)) if duration_words(b) == duration_words(c) => {
            format!("{} before and after", duration_words(b))
        }
        (Some(b), Some(c)) => format!(
            "{} before and {} after",
            duration_words(b),
            duration_words(c)
        ),
        _ => "time range unknown".into(),
    }
}

/// Who backs a statement: "3 probes on wifi, 4g and 5g, 50 s before and
/// after"; the two sides apart when their probes differ.
fn backing_words(g: &GroupComparison, spans: (Option<u64>, Option<u64>)) -> String {
    let (b, c) = (&g.baseline, &g.candidate);
    let probes = if b.probes == c.probes {
        format!("{} probe{}", b.probes, if b.probes == 1 { "" } else { "s" })
    } else {
        format!("{} probes before and {} after", b.probes, c.probes)
    };
    let mut networks = b.networks.clone();
    for n in &c.networks {
        if !networks.contains(n) {
            networks.push(n.clone());
        }
    }
    networks.sort();
    format!(
        "{probes} on {}, {}",
        list_words(&networks),
        spans_words(spans)
    )
}

/// A latency change in words: "391 ms faster", "12 ms slower".
fn latency_change(us: f64) -> String {
    let ms = us.abs() / 1000.0;
    let amount = if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    };
    if us < 0.0 {
        format!("{amount} faster")
    } else {
        format!("{amount} slower")
    }
}

fn ms(us: f64) -> String {
    let v = us / 1000.0;
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The verdict in words.
fn verdict_words(v: Verdict, g: &ClaimGroup, min_probes: usize) -> String {
    match v {
        Verdict::Holds => "the claim holds".into(),
        Verdict::Fails => "the claim fails".into(),
        Verdict::Inconclusive => {
            "inconclusive: the interval reaches both sides of the claimed bound".into()
        }
        Verdict::InsufficientProbes => format!(
            "no verdict: {} probe{} on a side, and a verdict needs at least {min_probes}",
            g.probes.0.min(g.probes.1),
            if g.probes.0.min(g.probes.1) == 1 {
                ""
            } else {
                "s"
            }
        ),
        Verdict::InsufficientData => "no verdict: too few samples".into(),
        Verdict::NoData => "no verdict: no data".into(),
    }
}

/// The warning of a reversal in a stratum, or nothing.
fn reversal_words(g: &GroupComparison) -> String {
    if g.reversed_in.is_empty() {
        return String::new();
    }
    let strata: Vec<String> = g
        .reversed_in
        .iter()
        .map(|s| s.split_once('/').map_or(s.as_str(), |(_, r)| r).to_string())
        .collect();
    format!(
        "; but the change goes the other way within {} (Simpson's paradox: the strata's shares differ between the sides, so read the strata)",
        list_words(&strata)
    )
}

/// The claimed statistic of `g` in words, with its interval.
fn claim_statistic(claim: &Claim, g: &ClaimGroup) -> Option<String> {
    let s = g.statistic?;
    let at = percentile_name(claim.quantile);
    Some(match claim.change {
        Change::DecreaseBy(..) | Change::IncreaseBy(..) => {
            // The statistic is the claimed direction's amount.
            let signed = if matches!(claim.change, Change::DecreaseBy(..)) {
                -s.estimate
            } else {
                s.estimate
            };
            let (lo, hi) = (s.low.min(s.high), s.low.max(s.high));
            format!(
                "{} at {at} [{}, {}]",
                latency_change(signed),
                ms(lo),
                ms(hi)
            )
        }
        Change::DecreaseByFraction(..) => format!(
            "{:.0} % lower at {at} [{:.0}, {:.0}]",
            s.estimate * 100.0,
            s.low * 100.0,
            s.high * 100.0
        ),
        Change::IncreaseByFraction(..) => format!(
            "{:.0} % higher at {at} [{:.0}, {:.0}]",
            s.estimate * 100.0,
            s.low * 100.0,
            s.high * 100.0
        ),
        Change::Ratio(..) | Change::RatioBetween(..) => {
            let faster = claim.metric.unit() != vantage_wire::Unit::Microseconds;
            let what = if faster { "as fast" } else { "as long" };
            format!(
                "{:.1} times {what} at {at} [{:.1}, {:.1}]",
                s.estimate, s.low, s.high
            )
        }
    })
}

/// The metric a country's sentence is about when no claim names it: what
/// a user feels first.
const HEADLINE: [&str; 5] = [
    "quic_cold_request",
    "http_total",
    "https_request",
    "quic_request",
    "udp_rtt",
];

/// A share claim in a sentence: the units on each side, the interval
/// after, the probes behind it and the verdict.
pub fn share_sentence(v: &crate::serving::ShareVerdict) -> String {
    use crate::serving::{pct, ShareKind};
    let country = country_name(&v.claim.country);
    let what = match v.claim.kind {
        ShareKind::ServedFrom => format!("served from {country}"),
        ShareKind::PathCrosses => format!("with a path through {country}"),
    };
    let (b, c) = (&v.baseline, &v.candidate);
    format!(
        "{}: units {what}: {} of {} before, {} of {} after [{}, {}]; {} / {} probes; {} (claim: {}).",
        subject_name(&v.claim.subject),
        b.hits,
        b.units,
        c.hits,
        c.units,
        pct(c.interval.0),
        pct(c.interval.1),
        b.probes,
        c.probes,
        v.verdict,
        v.claim.text
    )
}

/// Every sentence of the summary: one per claimed group, then one per
/// share claim, then one per country (group subject) whose headline
/// metric no claim covers.
pub fn summary_sentences(report: &Report) -> Vec<String> {
    let (spans, min_probes) = (report.durations_ms, report.min_probes);
    let mut out = Vec::new();
    let mut covered: Vec<(String, String)> = Vec::new();
    for c in &report.claims {
        for g in &c.groups {
            let group = report
                .groups
                .iter()
                .find(|x| x.subject == g.subject && x.metric == c.claim.metric.name());
            let (Some(group), Some(stat)) = (group, claim_statistic(&c.claim, g)) else {
                out.push(format!(
                    "{}: {}: {}.",
                    subject_name(&g.subject),
                    plain_metric(c.claim.metric.name()),
                    verdict_words(g.verdict, g, min_probes)
                ));
                continue;
            };
            covered.push((g.subject.clone(), group.metric.clone()));
            out.push(format!(
                "{}: {} is {stat}; {}; {} (claim: {}){}.",
                subject_name(&g.subject),
                plain_metric(&group.metric),
                backing_words(group, spans),
                verdict_words(g.verdict, g, min_probes),
                c.claim.text,
                reversal_words(group)
            ));
        }
    }
    if let Some(w) = &report.where_served {
        out.extend(w.claims.iter().map(share_sentence));
    }
    let mut subjects: Vec<&str> = report.groups.iter().map(|g| g.subject.as_str()).collect();
    subjects.dedup();
    for subject in subjects {
        let Some(group) = HEADLINE.iter().find_map(|m| {
            report
                .groups
                .iter()
                .find(|g| g.subject == subject && g.metric == *m)
        }) else {
            continue;
        };
        if covered.contains(&(subject.to_string(), group.metric.clone())) {
            continue;
        }
        let Some(p50) = group
            .percentiles
            .iter()
            .find(|p| (p.percentile - 50.0).abs() < 1e-9)
        else {
            out.push(format!(
                "{}: {}: too few samples to compare ({}).",
                subject_name(subject),
                plain_metric(&group.metric),
                group.reason.as_deref().unwrap_or("insufficient data")
            ));
            continue;
        };
        let d = p50.difference;
        // The interval in the sense of the words: amounts faster, or slower.
        let (lo, hi) = if d.estimate < 0.0 {
            (-d.high, -d.low)
        } else {
            (d.low, d.high)
        };
        out.push(format!(
            "{}: {} is {} at the median [{}, {}], {} ms before and {} ms after; {}; no claim stated{}.",
            subject_name(subject),
            plain_metric(&group.metric),
            latency_change(d.estimate),
            ms(lo),
            ms(hi),
            group.baseline.percentiles[0].map_or("–".into(), |v| ms(v as f64)),
            group.candidate.percentiles[0].map_or("–".into(), |v| ms(v as f64)),
            backing_words(group, spans),
            reversal_words(group)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_for_durations_lists_and_names() {
        assert_eq!(duration_words(50_000), "50 s");
        assert_eq!(duration_words(12 * 60_000), "12 min");
        assert_eq!(duration_words(5 * 3_600_000), "5 h");
        assert_eq!(duration_words(2 * 86_400_000), "2 days");
        assert_eq!(
            list_words(&["4g".into(), "5g".into(), "wifi".into()]),
            "4g, 5g and wifi"
        );
        assert_eq!(list_words(&["-".into()]), "unlabelled networks");
        assert_eq!(
            list_words(&["-".into(), "4g".into()]),
            "4g and unlabelled networks"
        );
        assert_eq!(subject_name("IN"), "India");
        assert_eq!(subject_name("US/4g"), "The US (4g)");
        assert_eq!(subject_name("ZZ"), "ZZ");
        assert_eq!(
            plain_metric("quic_cold_request"),
            "opening the app (a cold request)"
        );
        assert_eq!(latency_change(-391_200.0), "391 ms faster");
        assert_eq!(latency_change(2_340.0), "2.3 ms slower");
        assert_eq!(percentile_name(0.999), "the 99.9th percentile");
    }
}
