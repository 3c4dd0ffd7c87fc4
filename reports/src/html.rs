//! The self-contained HTML report: verdicts and a summary table first,
//! then the charts (PNG inlined as data URIs), then the methods. No
//! request leaves the page: no scripts, fonts or styles from elsewhere.

// Markup is written in blocks that end their own lines; `writeln!` would
// split each block's text from its newline for no gain.
#![allow(clippy::write_with_newline)]

use crate::charts::RenderedChart;
use crate::claim::Verdict;
use crate::{Report, Side};
use base64::Engine;
use std::fmt::Write;

/// What the methods section says about the data, beyond the numbers.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DataSummary {
    /// Probes of the baseline.
    pub baseline_probes: Vec<String>,
    /// Probes of the candidate.
    pub candidate_probes: Vec<String>,
    /// First window start and last window end of the baseline, RFC 3339.
    pub baseline_span: Option<(String, String)>,
    /// The same for the candidate.
    pub candidate_span: Option<(String, String)>,
    /// Data centres measured.
    pub targets: Vec<String>,
    /// Windows in which a probe of a group sent nothing, per side.
    pub silent: Vec<crate::SilentWindows>,
    /// The stored phase switches to the candidate's phase, RFC 3339.
    pub cut_overs: Vec<(String, String, String)>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

impl DataSummary {
    /// Summarises both sides of the evidence.
    pub fn of(evidence: &crate::Evidence) -> Self {
        use crate::Role;
        let side = |r: Role| evidence.side(r);
        let span = |r: Role| side(r).span.map(|(a, b)| (rfc3339(a), rfc3339(b)));
        DataSummary {
            baseline_probes: side(Role::Baseline).probes.iter().cloned().collect(),
            candidate_probes: side(Role::Candidate).probes.iter().cloned().collect(),
            baseline_span: span(Role::Baseline),
            candidate_span: span(Role::Candidate),
            targets: side(Role::Baseline)
                .targets
                .union(&side(Role::Candidate).targets)
                .cloned()
                .collect(),
            silent: evidence.silent_windows(),
            cut_overs: evidence
                .cut_overs()
                .iter()
                .map(|c| (c.campaign.clone(), c.phase.clone(), rfc3339(c.at_unix_ms)))
                .collect(),
        }
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn value(v: Option<u64>, unit: &str) -> String {
    match (v, unit) {
        (None, _) => "–".into(),
        (Some(v), "kbps") => format!("{:.2} Mbit/s", v as f64 / 1000.0),
        (Some(v), "rpm") => format!("{v} RPM"),
        (Some(v), _) => format!("{:.2} ms", v as f64 / 1000.0),
    }
}

fn loss(s: &Side) -> String {
    s.loss_rate
        .map(|l| format!("{:.2} %", l * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn verdict_class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Holds => "holds",
        Verdict::Fails => "fails",
        Verdict::Inconclusive => "inconclusive",
        Verdict::InsufficientData | Verdict::InsufficientProbes | Verdict::NoData => "insufficient",
    }
}

const STYLE: &str = "
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:0 auto;max-width:1240px;padding:0 24px 48px;color:#222;line-height:1.45}
h1{margin-top:28px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
.simulated{background:#fff3cd;border:3px solid #b8860b;padding:14px 18px;font-weight:bold;font-size:1.1em;margin-top:20px}
table{border-collapse:collapse;margin:12px 0;font-size:.92em}th,td{border:1px solid #ccc;padding:5px 9px;text-align:right;white-space:nowrap}
th{background:#f2f2f2}td.l,th.l{text-align:left;white-space:normal;min-width:6em}
.scroll{overflow-x:auto;max-width:100%}.n{white-space:nowrap}
details.fold{margin:6px 0}details.fold>summary{cursor:pointer;font-weight:bold;padding:4px 0}
@media (max-width:600px){body{padding:0 10px 32px}h1{font-size:1.5em}}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:bold;border:2px solid #222}
.holds{background:#d4edda}.fails{background:#f8d7da}.inconclusive{background:#fff3cd}.insufficient{background:#e2e3e5}
figure{margin:26px 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#444;font-size:.92em}
code{background:#f4f4f4;padding:1px 4px}
.sentences li{margin:6px 0;font-size:1.05em}.reversal{background:#f8d7da;font-weight:bold}
";

/// Records on `<body>`: `data-charts-total`, `data-charts-loaded`,
/// `data-cells-overflowing`, `data-numbers-broken` and
/// `data-summary-above-fold` (`yes`/`no`). Folded countries are opened
/// while measuring, then folded again.
const LAYOUT_SCRIPT: &str = "
function lines(node){var r=document.createRange();r.selectNodeContents(node);var tops={};
Array.prototype.forEach.call(r.getClientRects(),function(x){if(x.width>0){tops[Math.round(x.top/8)]=1;}});
return Object.keys(tops).length;}
function unfold(open){var d=document.querySelectorAll('details.fold');var was=[];
for(var k=0;k<d.length;k++){was.push(d[k].open);if(open!==undefined){d[k].open=open;}}return was;}
window.addEventListener('beforeprint',function(){unfold(true);});
window.addEventListener('load',function(){
var b=document.body;var i=Array.prototype.slice.call(document.images);
b.setAttribute('data-charts-total',i.length);
b.setAttribute('data-charts-loaded',i.filter(function(x){return x.complete&&x.naturalWidth>0;}).length);
var li=document.querySelector('#in-one-minute li');
b.setAttribute('data-summary-above-fold',li&&li.getBoundingClientRect().bottom<=window.innerHeight?'yes':'no');
var was=unfold();unfold(true);var over=0,broken=0;
document.querySelectorAll('td,th').forEach(function(c){if(c.scrollWidth>c.clientWidth+1){over++;}
if(!c.classList.contains('l')&&lines(c)>1){broken++;}});
document.querySelectorAll('.n').forEach(function(n){if(lines(n)>1){broken++;}});
b.setAttribute('data-cells-overflowing',over);b.setAttribute('data-numbers-broken',broken);
if(location.hash!=='#print'){document.querySelectorAll('details.fold').forEach(function(d,k){d.open=was[k];});}
});";

/// Renders the HTML report, each chart's PNG inlined from its bytes and its
/// SVG and CSV linked under `chart_link_prefix`. Markup goes into a
/// `String`, whose `fmt::Write` never fails.
pub fn render_html(
    report: &Report,
    data: &DataSummary,
    charts: &[RenderedChart],
    chart_link_prefix: &str,
) -> String {
    let mut h = String::new();
    let w = &mut h;
    let _ = write!(
        w,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Vantage report: {} vs {}</title><style>{STYLE}</style></head><body>\n",
        esc(&report.baseline),
        esc(&report.candidate)
    );
    if report.simulated {
        let _ = write!(
            w,
            "<div class=\"simulated\" id=\"simulated\">SIMULATED DATA. These measurements come from \
Vantage's lab: emulated network paths on one machine. They show how the tool works and say nothing \
about any real network.</div>\n"
        );
    }
    if let Some(line) = crate::not_emulated_sentence(report) {
        let _ = write!(
            w,
            "<div class=\"simulated\" id=\"not-emulated\">{}</div>\n",
            esc(&line)
        );
    }
    if let Some(t) = report.lab_timing.filter(|t| t.degraded) {
        let _ = write!(
            w,
            "<div class=\"simulated\" id=\"lab-timing-degraded\">{}</div>\n",
            esc(&t.sentence())
        );
    }
    let _ = write!(
        w,
        "<h1>Vantage report</h1><p>Baseline <code>{}</code> compared with candidate <code>{}</code>, \
grouped by {} and metric. Intervals are {:.0} % bootstrap intervals.</p>\n",
        esc(&report.baseline),
        esc(&report.candidate),
        esc(&report.group_by.join(", ")),
        report.confidence * 100.0
    );

    in_one_minute(w, report);
    verdicts(w, report);
    summary(w, report);
    if let Some(served) = &report.where_served {
        w.push_str(&crate::serving::render_where_html(served));
    }
    chart_figures(w, charts, chart_link_prefix);
    methods(w, report, data);
    // The only script: it records whether every chart image decoded and
    // whether the layout holds at this width (no table cell's content
    // overflows it, no number breaks from its unit, the first summary
    // sentence is on screen before any scrolling), for the browser test
    // and for anyone checking a report by hand; and it unfolds every
    // country for printing (or when the address ends in #print).
    let _ = write!(w, "<script>{LAYOUT_SCRIPT}</script>\n");
    let _ = write!(w, "</body></html>\n");
    h
}

/// The summary in sentences, above everything else: what a stakeholder
/// reads in a minute.
fn in_one_minute(w: &mut String, report: &Report) {
    let sentences = crate::plain::summary_sentences(report);
    if sentences.is_empty() {
        return;
    }
    let _ = write!(
        w,
        "<section id=\"in-one-minute\"><h2>In one minute</h2><ul class=\"sentences\">\n"
    );
    for s in sentences {
        let _ = write!(w, "<li>{}</li>\n", bind_numbers(&esc(&s)));
    }
    let _ = write!(w, "</ul></section>\n");
}

/// Words that follow a number as its unit: kept on one line with it.
const UNIT_WORDS: [&str; 12] = [
    "ms", "µs", "s", "min", "h", "days", "%", "times", "probes", "probe", "Mbit/s", "RPM",
];

/// `text` (already escaped) with every number and the unit after it in
/// a `<span class="n">` that does not break: "391 ms" never ends a line
/// at "391".
fn bind_numbers(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < words.len() {
        if i > 0 {
            out.push(' ');
        }
        let word = words[i];
        let numeric = word
            .trim_start_matches('[')
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-');
        let unit = words.get(i + 1).map(|u| {
            let bare = u.trim_end_matches([',', ';', '.', ')', ']']);
            (UNIT_WORDS.contains(&bare), bare.len(), *u)
        });
        match unit {
            Some((true, bare_len, next)) if numeric => {
                let _ = write!(
                    out,
                    "<span class=\"n\">{word}&nbsp;{}</span>{}",
                    &next[..bare_len],
                    &next[bare_len..]
                );
                i += 2;
            }
            _ => {
                out.push_str(word);
                i += 1;
            }
        }
    }
    out
}

/// The verdict of every claim: each group's interval and backing.
fn verdicts(w: &mut String, report: &Report) {
    let _ = write!(w, "<h2 id=\"verdicts\">Verdicts</h2>\n");
    if report.claims.is_empty() {
        let _ = write!(w, "<p>No claim was stated (<code>--claim</code>).</p>\n");
    } else {
        let _ = write!(
            w,
            "<div class=\"scroll\"><table><tr><th class=\"l\">claim</th><th class=\"l\">verdict</th><th class=\"l\">group</th><th>estimate</th><th>interval</th><th class=\"l\">backed by (before / after)</th></tr>\n"
        );
        for c in &report.claims {
            let rows = c.groups.len().max(1);
            let _ = write!(
                w,
                "<tr><td class=\"l\" rowspan=\"{rows}\">{}</td><td class=\"l\" rowspan=\"{rows}\"><span class=\"badge {}\">{}</span></td>",
                esc(&c.claim.text),
                verdict_class(&c.verdict),
                esc(&c.verdict.to_string())
            );
            if c.groups.is_empty() {
                let _ = write!(
                    w,
                    "<td class=\"l\">no matching group</td><td></td><td></td><td></td></tr>\n"
                );
            }
            for (i, g) in c.groups.iter().enumerate() {
                if i > 0 {
                    let _ = write!(w, "<tr>");
                }
                let (est, iv) = match &g.statistic {
                    Some(s) => (
                        c.claim.format_statistic(s.estimate),
                        format!(
                            "[{}, {}]",
                            c.claim.format_statistic(s.low),
                            c.claim.format_statistic(s.high)
                        ),
                    ),
                    None => ("–".into(), "–".into()),
                };
                let reversed = report
                    .groups
                    .iter()
                    .find(|x| x.subject == g.subject && x.metric == c.claim.metric.name())
                    .map(|x| x.reversed_in.clone())
                    .unwrap_or_default();
                let warning = if reversed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<br><span class=\"reversal\">⚠ reversed within {}: see Strata</span>",
                        esc(&reversed.join(", "))
                    )
                };
                let _ = write!(
                    w,
                    "<td class=\"l\">{} ({})</td><td>{}</td><td>{}</td><td class=\"l\">{}{warning}</td></tr>\n",
                    esc(&g.subject),
                    esc(&g.verdict.to_string()),
                    esc(&est),
                    esc(&iv),
                    esc(&crate::backing(g)),
                );
            }
        }
        let _ = write!(w, "</table></div>\n");
    }
}

/// One row per group: samples, probes, loss, p50 and p99, the p50 ratio;
/// folded by country (the first grouping value), each country's rows in
/// a `<details>` of its own, so a long table reads one country at a time.
fn summary(w: &mut String, report: &Report) {
    let _ = write!(w, "<h2 id=\"summary\">Summary</h2>\n");
    let mut countries: Vec<&str> = report
        .groups
        .iter()
        .map(|g| g.subject.split('/').next().unwrap_or(""))
        .collect();
    countries.dedup();
    let fold = countries.len() > 1;
    for country in countries {
        let rows: Vec<_> = report
            .groups
            .iter()
            .filter(|g| g.subject.split('/').next().unwrap_or("") == country)
            .collect();
        if fold {
            let _ = write!(
                w,
                "<details class=\"fold\"><summary>{} ({} groups)</summary>\n",
                esc(crate::plain::country_name(country)),
                rows.len()
            );
        }
        summary_table(w, &rows);
        if fold {
            let _ = write!(w, "</details>\n");
        }
    }
    strata(w, report);
    failures(w, report);
}

/// The groups whose change reverses within a stratum: each named, with
/// both p50 changes, so a stakeholder does not read a mix shift as an
/// improvement (or a regression).
fn strata(w: &mut String, report: &Report) {
    let flagged: Vec<_> = report
        .groups
        .iter()
        .filter(|g| !g.reversed_in.is_empty())
        .collect();
    if flagged.is_empty() {
        return;
    }
    let _ = write!(
        w,
        "<h2 id=\"strata\">Strata</h2>\n<p class=\"reversal\">⚠ Simpson's paradox: these groups' p50 moved one way \
as a whole and the other way within a stratum with enough data, both intervals clear of zero. The whole moved because \
the strata's shares differ between the sides (one network type dominates a phase), not because each got better or worse. \
Read the strata.</p>\n<div class=\"scroll\"><table><tr><th class=\"l\">group</th><th class=\"l\">metric</th>\
<th>p50 change</th><th class=\"l\">reversed within</th><th>p50 change there</th></tr>\n"
    );
    let change = |g: &crate::GroupComparison| {
        g.percentiles
            .iter()
            .find(|p| (p.percentile - 50.0).abs() < 1e-9)
            .map(|p| {
                let d = p.difference;
                format!(
                    "{:+.1}&nbsp;ms [{:+.1}, {:+.1}]",
                    d.estimate / 1e3,
                    d.low / 1e3,
                    d.high / 1e3
                )
            })
            .unwrap_or_else(|| "–".into())
    };
    for g in flagged {
        for s in &g.reversed_in {
            let stratum = report
                .groups
                .iter()
                .find(|x| &x.subject == s && x.metric == g.metric);
            let _ = write!(
                w,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td></tr>\n",
                esc(&g.subject),
                metric_cell(&g.metric),
                change(g),
                esc(s),
                stratum.map(change).unwrap_or_default()
            );
        }
    }
    let _ = write!(w, "</table></div>\n");
}

fn summary_table(w: &mut String, rows: &[&crate::GroupComparison]) {
    let _ = write!(
        w,
        "<div class=\"scroll\"><table><tr><th class=\"l\">group</th><th class=\"l\">metric</th>\
<th>samples (b / c)</th><th>probes</th><th>loss b</th><th>loss c</th><th>p50 b</th><th>p50 c</th>\
<th>p99 b</th><th>p99 c</th><th>p50 ratio c/b [interval]</th><th class=\"l\">status</th></tr>\n"
    );
    for g in rows {
        let ratio = g
            .percentiles
            .iter()
            .find(|p| (p.percentile - 50.0).abs() < 1e-9)
            .map(|p| {
                format!(
                    "{:.3} [{:.3}, {:.3}]",
                    p.ratio.estimate, p.ratio.low, p.ratio.high
                )
            })
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            w,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{} / {}</td><td>{} / {}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>\n",
            esc(&g.subject),
            metric_cell(&g.metric),
            g.baseline.samples,
            g.candidate.samples,
            g.baseline.probes,
            g.candidate.probes,
            loss(&g.baseline),
            loss(&g.candidate),
            value(g.baseline.percentiles.first().copied().flatten(), &g.unit),
            value(g.candidate.percentiles.first().copied().flatten(), &g.unit),
            value(g.baseline.percentiles.get(2).copied().flatten(), &g.unit),
            value(g.candidate.percentiles.get(2).copied().flatten(), &g.unit),
            ratio,
            esc(g.reason.as_deref().unwrap_or(&g.status)),
        );
    }
    let _ = write!(w, "</table></div>\n");
}

/// A metric as a reader and an engineer each know it.
fn metric_cell(metric: &str) -> String {
    format!(
        "{} <code>{}</code>",
        esc(crate::plain::plain_metric(metric)),
        esc(metric)
    )
}

/// `name n, name n` of a count map, largest first.
fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = map.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = v.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(", ")
    }
}

/// One side's failures: lost, then classes, reasons and statuses.
fn side_failures(s: &Side) -> String {
    let mut parts = Vec::new();
    let f = &s.failures;
    if s.lost > 0 {
        parts.push(format!("lost {}", s.lost));
    }
    if !f.loss_direction.is_empty() {
        // `unknown`: a stateless reflector, whose numbers mirror ours.
        parts.push(format!("(direction {})", counts(&f.loss_direction)));
    }
    if !f.classes.is_empty() {
        parts.push(counts(&f.classes));
    }
    if !f.reasons.is_empty() {
        parts.push(format!("({})", counts(&f.reasons)));
    }
    if !f.statuses.is_empty() {
        parts.push(format!("HTTP {}", counts(&f.statuses)));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// Whether a side saw any failure or any HTTP status but 2xx.
fn failed(s: &Side) -> bool {
    s.lost > 0
        || !s.failures.classes.is_empty()
        || s.failures.statuses.keys().any(|k| !k.starts_with('2'))
}

/// What failed, per group, before and after: a move that trades latency
/// for errors shows here. Groups without any failure are counted, not
/// listed.
fn failures(w: &mut String, report: &Report) {
    let _ = write!(w, "<h2 id=\"failures\">Failures</h2>\n");
    let listed: Vec<_> = report
        .groups
        .iter()
        .filter(|g| failed(&g.baseline) || failed(&g.candidate))
        .collect();
    let clean = report.groups.len() - listed.len();
    if listed.is_empty() {
        let _ = write!(
            w,
            "<p>No attempt was lost or failed, and every HTTP answer was a success, in all {clean} groups.</p>\n"
        );
        return;
    }
    let _ = write!(
        w,
        "<p>Lost attempts (no answer in time), failures by class with their TLS and DNS reasons, and HTTP \
statuses, in the groups where anything failed; the other {clean} had none.</p>\n\
<div class=\"scroll\"><table><tr><th class=\"l\">group</th><th class=\"l\">metric</th><th>loss b</th><th>loss c</th>\
<th class=\"l\">baseline</th><th class=\"l\">candidate</th></tr>\n"
    );
    for g in listed {
        let _ = write!(
            w,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>\n",
            esc(&g.subject),
            metric_cell(&g.metric),
            loss(&g.baseline),
            loss(&g.candidate),
            esc(&side_failures(&g.baseline)),
            esc(&side_failures(&g.candidate)),
        );
    }
    let _ = write!(w, "</table></div>\n");
}

/// Each chart's PNG inlined, with links to its SVG and CSV.
fn chart_figures(w: &mut String, charts: &[RenderedChart], chart_link_prefix: &str) {
    let _ = write!(w, "<h2 id=\"charts\">Charts</h2>\n");
    for rendered in charts {
        let c = &rendered.file;
        let data = base64::engine::general_purpose::STANDARD.encode(&rendered.png);
        let _ = write!(
            w,
            "<figure class=\"chart\" id=\"{stem}\"><img alt=\"{title}\" src=\"data:image/png;base64,{data}\">\
<figcaption><b>{title}.</b> {caption} Also as <a href=\"{p}{stem}.svg\">SVG</a>, numbers in <a href=\"{p}{stem}.csv\">CSV</a>.</figcaption></figure>\n",
            stem = esc(&c.stem),
            title = esc(&c.title),
            caption = esc(&c.caption),
            p = esc(chart_link_prefix),
        );
    }
}

/// How the numbers were made, and from what data.
fn methods(w: &mut String, report: &Report, data: &DataSummary) {
    let span = |s: &Option<(String, String)>| {
        s.as_ref()
            .map(|(a, b)| format!("{a} to {b}"))
            .unwrap_or_else(|| "–".into())
    };
    let _ = write!(
        w,
        "<h2 id=\"methods\">Methods</h2>\n\
<p><b>What was measured.</b> Each probe measures, on an open-loop schedule with random (Poisson) spacing, \
request latency against each data centre: a STAMP round trip (<code>udp_rtt</code>), QUIC and TCP+TLS \
handshakes, a request on a warm QUIC or HTTPS connection, and a handshake plus first request \
(<code>quic_cold_request</code>, what a user opening an app waits for). Latency counts from the intended \
send time, so a stalled probe cannot hide a slow network; every timeout and error is counted. Photo sync \
runs in batches: each photo's time until the data centre's receipt (<code>photosync_upload</code>), and \
the batch's goodput, acknowledged bytes over its whole time (<code>photosync_goodput</code>, kbit/s); \
<code>loaded_rtt</code> is a QUIC request measured while a batch runs.</p>\n\
<p><b>How it is compared.</b> Probes aggregate into HDR histograms (1 µs to 1 h, 3 significant digits) per \
aggregation window; the report merges them exactly. Intervals come from a bootstrap with {} resamples that \
resamples whole (probe, window) series, never single requests: requests in one window share the same path, \
the same congestion and the same probe, so they are not independent, and resampling them one by one would \
give intervals far narrower than the evidence supports. It resamples in two stages: first the probes (a probe \
on both sides is drawn on both at once, as one member of a before/after panel), then each drawn probe's \
series, so an interval says what other probes like these might show, not only what these probes' minutes \
did. A verdict needs at least {} probes on each side; below that it is \"insufficient probes\", with the \
interval still shown. When a group has more than {} series on a side, \
each probe's consecutive windows are merged into blocks so that at most that many units remain (a block \
bootstrap: neighbouring windows of one probe are not independent either); the merging begins while the series \
are read, so a report's memory is bounded by its groups, not by the series stored. A group with fewer than the minimum samples or \
series on either side is marked insufficient data and gets no verdict. A claim holds when its whole \
interval satisfies it, fails when the whole interval contradicts it, and is inconclusive otherwise.</p>\n\
<p><b>Resolution.</b> The units resampled are {}.</p>\n\
<div class=\"scroll\"><table><tr><th class=\"l\"></th><th class=\"l\">baseline</th><th class=\"l\">candidate</th></tr>\
<tr><td class=\"l\">selector</td><td class=\"l\"><code>{}</code></td><td class=\"l\"><code>{}</code></td></tr>\
<tr><td class=\"l\">probes</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>\
<tr><td class=\"l\">time</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr></table></div>\n\
<p>Data centres: {}. Samples per group are in the summary table. Tool: Vantage {}, report schema <code>{}</code>.</p>\n",
        report.resamples,
        report.min_probes,
        crate::MAX_UNITS,
        esc(&report.resolution_reason),
        esc(&report.baseline),
        esc(&report.candidate),
        esc(&data.baseline_probes.join(", ")),
        esc(&data.candidate_probes.join(", ")),
        esc(&span(&data.baseline_span)),
        esc(&span(&data.candidate_span)),
        esc(&data.targets.join(", ")),
        env!("CARGO_PKG_VERSION"),
        crate::REPORT_SCHEMA,
    );
    silent_windows(w, data);
    if report.simulated {
        let _ = write!(
            w,
            "<p><b>Simulated.</b> The lab emulates each path's delay, jitter, loss and bandwidth with userspace \
relays on loopback; every series carries the label <code>simulated=true</code>.</p>\n"
        );
    }
    if let Some(t) = &report.lab_timing {
        let _ = write!(w, "<p id=\"lab-timing\">{}</p>\n", esc(&t.sentence()));
    }
}

/// The silent windows and the stored cut-overs, for the methods section.
fn silent_windows(w: &mut String, data: &DataSummary) {
    for (campaign, phase, at) in &data.cut_overs {
        let _ = write!(
            w,
            "<p><b>Cut-over.</b> Campaign <code>{}</code> switched its probes to phase <code>{}</code> at {} \
(stored by <code>vantage campaign phase</code>; each probe labels its windows from the first that starts then or later). \
The timeline marks it.</p>\n",
            esc(campaign),
            esc(phase),
            esc(at)
        );
    }
    if data.silent.is_empty() {
        return;
    }
    let total: u64 = data
        .silent
        .iter()
        .filter(|s| s.counted)
        .map(|s| s.silent)
        .sum();
    let _ = write!(
        w,
        "<p><b>Silent windows.</b> Over each side's run (from its median probe's first window to its median probe's last, \
so probes started or stopped a window apart are not counted for it), every probe of a group is expected to send a \
series every window; a window in which it sent nothing is silent. Silent windows add no unit to the resampling, so they are not averaged \
over but counted here ({total} in all); on the timeline a stretch in which no probe of a group sent is a gap.</p>\n\
<div class=\"scroll\"><table><tr><th class=\"l\">group</th><th class=\"l\">side</th><th>probes</th><th>silent</th><th>of windows</th></tr>"
    );
    for s in &data.silent {
        let silent = if s.counted {
            s.silent.to_string()
        } else {
            "not counted (units merged while read)".into()
        };
        let _ = write!(
            w,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.group.join(" / ")),
            s.side,
            s.probes,
            esc(&silent),
            s.expected
        );
    }
    let _ = write!(w, "</table></div>\n");
}
