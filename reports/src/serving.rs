//! Where users were served and which countries their paths crossed: the
//! "served by" and "path crosses" tables per country × side, the share
//! claims (`IN served_from CN share <= 1%`, `IN path_crosses CN share
//! decreases to <= 1%`) judged with Wilson intervals over (probe, window)
//! units, and the physical sanity check of the site map.
//!
//! What this evidence can show: the site of the address that answered a
//! request (by the user's site map), and the countries of the routers
//! that answered a traceroute (by the user's datasets). What it cannot:
//! where data is stored or processed behind that address, and a router
//! that does not answer is invisible — a path "with no CN hop" means no
//! *answering* hop was in CN.

use crate::stats::wilson;
use crate::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use vantage_geo::distance::{great_circle_km, least_round_trip};
use vantage_geo::{HopDatasets, SiteMap};
use vantage_store::{Selector, Store, StoreError, StoredSeries, StoredTrace};
use vantage_wire::{Metric, SparseCounts};

/// The value shown for an address no map or dataset covers: never guessed.
pub const UNKNOWN: &str = "unknown";

/// What the share tables count in, per (subject country, side).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct ShareTable {
    /// Rows: the value (a site, or a crossed country), its country where
    /// it has one, the count and the share of all.
    pub rows: Vec<ShareRow>,
    /// Everything counted (requests, or traces).
    pub total: u64,
    /// (probe, window) units.
    pub units: u64,
    /// Distinct probes.
    pub probes: usize,
}

/// One row of a share table.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ShareRow {
    /// A site name (served by) or a country code (path crosses).
    pub value: String,
    /// The site's country (served by); the country itself (path crosses).
    pub country: String,
    /// Requests served by it, or traces crossing it.
    pub count: u64,
    /// `count` of the table's total.
    pub share: f64,
}

/// One unit's evidence: the countries it touched.
#[derive(Debug, Default, Clone)]
struct Units {
    /// (probe, window start or batch sequence) → countries seen in it.
    seen: BTreeMap<(String, u64), BTreeSet<String>>,
}

impl Units {
    fn add(&mut self, probe: &str, window: u64, countries: impl IntoIterator<Item = String>) {
        self.seen
            .entry((probe.to_string(), window))
            .or_default()
            .extend(countries);
    }

    /// Units, and those that touched `country`.
    fn count(&self, country: &str) -> (u64, u64) {
        let hit = self.seen.values().filter(|c| c.contains(country)).count();
        (self.seen.len() as u64, hit as u64)
    }

    fn probes(&self) -> usize {
        self.seen
            .keys()
            .map(|(p, _)| p)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// One (subject country, side)'s counts while gathering.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// (value, country) → count.
    counts: BTreeMap<(String, String), u64>,
    total: u64,
    units: Units,
}

impl Tally {
    fn table(&self) -> ShareTable {
        let mut rows: Vec<ShareRow> = self
            .counts
            .iter()
            .map(|((value, country), n)| ShareRow {
                value: value.clone(),
                country: country.clone(),
                count: *n,
                share: *n as f64 / self.total.max(1) as f64,
            })
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
        ShareTable {
            rows,
            total: self.total,
            units: self.units.seen.len() as u64,
            probes: self.units.probes(),
        }
    }
}

/// A site whose measured minimum round trip is shorter than light in
/// fibre allows for its distance from the probe: the map cannot be right.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ImpossibleSite {
    /// The site.
    pub site: String,
    /// The probe.
    pub probe: String,
    /// Great-circle distance, km.
    pub km: f64,
    /// The least round trip that distance allows, ms.
    pub least_ms: f64,
    /// The least measured, ms.
    pub measured_ms: f64,
}

/// Which evidence a share claim is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ShareKind {
    /// Requests served from a site in the country.
    ServedFrom,
    /// Traces with an answering hop in the country.
    PathCrosses,
}

/// What a share claim says.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum ShareChange {
    /// The candidate's share is at most this fraction.
    AtMost(f64),
    /// The share falls from the baseline's, to at most this fraction.
    DecreasesTo(f64),
}

/// A claim about a share of (probe, window) units.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShareClaim {
    /// As written.
    pub text: String,
    /// The probes' country (`IN`).
    pub subject: String,
    /// Served from, or path crosses.
    pub kind: ShareKind,
    /// The country the share is of (`CN`).
    pub country: String,
    /// What is claimed.
    pub change: ShareChange,
}

/// The grammar, for error messages.
pub const SHARE_GRAMMAR: &str =
    "SUBJECT (served_from|path_crosses) COUNTRY share (<= N% | decreases to <= N%)  \
(for example: IN served_from CN share <= 1%; IN path_crosses CN share decreases to <= 1%)";

/// A share claim that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("claim `{text}`: {problem}. Grammar: {SHARE_GRAMMAR}")]
pub struct ShareClaimError {
    /// The claim.
    pub text: String,
    /// What is wrong.
    pub problem: String,
}

impl ShareClaim {
    /// Whether `text` is a share claim (its second word names one), so a
    /// caller knows which grammar to parse it with.
    pub fn is_share_claim(text: &str) -> bool {
        matches!(
            text.split_whitespace()
                .nth(1)
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("served_from" | "path_crosses")
        )
    }
}

impl FromStr for ShareClaim {
    type Err = ShareClaimError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |problem: &str| ShareClaimError {
            text: text.to_string(),
            problem: problem.to_string(),
        };
        let spaced = text.replace("<=", " <= ").replace('%', " % ");
        let words: Vec<String> = spaced.split_whitespace().map(str::to_lowercase).collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let (subject, kind, country, rest) = match w.as_slice() {
            [s, k, c, "share", rest @ ..] => (*s, *k, *c, rest),
            _ => return Err(err("expected SUBJECT KIND COUNTRY share …")),
        };
        let kind = match kind {
            "served_from" => ShareKind::ServedFrom,
            "path_crosses" => ShareKind::PathCrosses,
            _ => return Err(err("the kind is served_from or path_crosses")),
        };
        let two_letters = |c: &str| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic());
        if !two_letters(country) || !two_letters(subject) {
            return Err(err(
                "the subject and the country are ISO 3166-1 alpha-2 codes (IN, CN)",
            ));
        }
        let percent = |n: &str| -> Result<f64, ShareClaimError> {
            n.parse::<f64>()
                .ok()
                .filter(|v| (0.0..=100.0).contains(v))
                .map(|v| v / 100.0)
                .ok_or_else(|| err("the share is a percentage from 0 to 100, such as 1%"))
        };
        let change = match rest {
            ["<=", n, "%"] => ShareChange::AtMost(percent(n)?),
            ["decreases", "to", "<=", n, "%"] => ShareChange::DecreasesTo(percent(n)?),
            _ => return Err(err("expected `<= N%` or `decreases to <= N%`")),
        };
        Ok(ShareClaim {
            text: text.to_string(),
            subject: subject.to_ascii_uppercase(),
            kind,
            country: country.to_ascii_uppercase(),
            change,
        })
    }
}

impl fmt::Display for ShareClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A side's share of units with an interval.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct UnitShare {
    /// Units that touched the country.
    pub hits: u64,
    /// Units.
    pub units: u64,
    /// Distinct probes.
    pub probes: usize,
    /// Wilson interval of the share, (low, high).
    pub interval: (f64, f64),
}

/// A share claim's verdict.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ShareVerdict {
    /// The claim.
    pub claim: ShareClaim,
    /// `holds`, `fails`, `inconclusive` or `insufficient probes`.
    pub verdict: String,
    /// The baseline's share.
    pub baseline: UnitShare,
    /// The candidate's share.
    pub candidate: UnitShare,
    /// In words, with how many probes and units back it (the verdict apart).
    pub sentence: String,
}

/// Everything the report says of where users were served.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct WhereServed {
    /// Served by, per (probe country, side).
    pub served_by: BTreeMap<String, [ShareTable; 2]>,
    /// Path crosses, per (probe country, side).
    pub path_crosses: BTreeMap<String, [ShareTable; 2]>,
    /// Share claims judged.
    pub claims: Vec<ShareVerdict>,
    /// Sites whose mapping cannot be right.
    pub impossible: Vec<ImpossibleSite>,
    /// (site, probe) pairs checked against the fibre floor: those with
    /// both places known and a `udp_rtt` measured.
    pub checked: usize,
    /// Site-map ranges and dataset ranges loaded, for the methods text.
    pub sites_known: bool,
    /// Whether hop datasets were given.
    pub hops_known: bool,
}

/// What the tables need while gathering, per side.
#[derive(Default)]
struct Gathered {
    served: BTreeMap<String, Tally>,
    crosses: BTreeMap<String, Tally>,
    /// (site, probe) → least udp_rtt, µs.
    least_rtt: BTreeMap<(String, String), u64>,
    probe_coords: BTreeMap<String, (f64, f64)>,
    site_coords: BTreeMap<String, (f64, f64)>,
}

/// The metrics whose samples are requests a site served: every
/// attempt-level metric but the traceroute's and the one-way delays
/// (halves of `udp_rtt`'s attempts), and not the per-batch figures.
fn is_request(m: Metric) -> bool {
    !matches!(
        m,
        Metric::PathTrace
            | Metric::UdpOwdForward
            | Metric::UdpOwdBackward
            | Metric::UdpOwdError
            | Metric::PhotosyncGoodput
            | Metric::ResponsivenessRpm
    )
}

/// The IP address of a series' `host:port` (or `[v6]:port`) target.
pub fn address_ip(address: &str) -> Option<IpAddr> {
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    address.parse().ok()
}

/// A probe's coordinates from its `latitude` and `longitude` labels.
fn probe_coords(row: &StoredSeries) -> Option<(f64, f64)> {
    let lat = row.labels.get("latitude")?.parse().ok()?;
    let lon = row.labels.get("longitude")?.parse().ok()?;
    Some((lat, lon))
}

impl Gathered {
    fn series(&mut self, row: &StoredSeries, counts: &SparseCounts, sites: &SiteMap) {
        let s = &row.series;
        if !is_request(s.metric) {
            return;
        }
        let country = row.labels.get("country").unwrap_or(UNKNOWN).to_string();
        let n: u64 = counts.iter().map(|(_, c)| c).sum();
        if n == 0 {
            return;
        }
        let site = address_ip(&s.target.address).and_then(|ip| sites.site_of(ip));
        let (name, site_country) = match site {
            Some(site) => (
                site.name.clone(),
                site.country.clone().unwrap_or_else(|| UNKNOWN.into()),
            ),
            None => (UNKNOWN.to_string(), UNKNOWN.to_string()),
        };
        let tally = self.served.entry(country).or_default();
        if s.edges.is_empty() {
            *tally
                .counts
                .entry((name.clone(), site_country.clone()))
                .or_default() += n;
            tally.total += n;
        } else {
            // Behind a CDN the edge that named itself is where the user
            // was served: its responses count under it.
            for (edge, responses) in &s.edges {
                *tally
                    .counts
                    .entry((edge.clone(), site_country.clone()))
                    .or_default() += responses;
                tally.total += responses;
            }
        }
        tally
            .units
            .add(&row.probe_id, s.window.start_unix_ms, [site_country]);
        if let (Metric::UdpRtt, Some(site_coords)) = (s.metric, site.and_then(|s| s.coords)) {
            if let (Some(least), Some(coords)) =
                (counts.iter().map(|(v, _)| v).min(), probe_coords(row))
            {
                self.site_coords.insert(name.clone(), site_coords);
                let slot = self
                    .least_rtt
                    .entry((name, row.probe_id.clone()))
                    .or_insert(u64::MAX);
                *slot = (*slot).min(least);
                self.probe_coords.insert(row.probe_id.clone(), coords);
            }
        }
    }

    fn trace(&mut self, t: &StoredTrace, sites: &SiteMap, hops: &HopDatasets) {
        let country = t.labels.get("country").unwrap_or(UNKNOWN).to_string();
        let crossed: BTreeSet<String> = t
            .trace
            .trace
            .hops
            .iter()
            .filter_map(|h| h.address)
            .map(|ip| hop_country(ip, sites, hops))
            .collect();
        let tally = self.crosses.entry(country).or_default();
        for c in &crossed {
            *tally.counts.entry((c.clone(), c.clone())).or_default() += 1;
        }
        tally.total += 1;
        // A batch is one probe's window: the traces of one batch are one unit.
        tally.units.add(&t.probe_id, t.sequence, crossed);
    }
}

/// A hop's country: the dataset's, else the site map's, else unknown.
pub fn hop_country(ip: IpAddr, sites: &SiteMap, hops: &HopDatasets) -> String {
    hops.country_of(ip)
        .map(str::to_string)
        .or_else(|| sites.site_of(ip).and_then(|s| s.country.clone()))
        .unwrap_or_else(|| UNKNOWN.to_string())
}

/// Reads the series and traces of both sides from `store` and makes the
/// tables, judges `claims` (with `confidence` and `min_probes`) and checks
/// the site map against the least round trips.
pub fn gather_where(
    store: &mut dyn Store,
    sides: [&Selector; 2],
    sites: &SiteMap,
    hops: &HopDatasets,
    claims: &[ShareClaim],
    confidence: f64,
    min_probes: usize,
) -> Result<WhereServed, StoreError> {
    let mut gathered: [Gathered; 2] = Default::default();
    for (side, selector) in sides.iter().enumerate() {
        let g = &mut gathered[side];
        let mut window = (*selector).clone();
        window.resolution = vantage_store::Resolution::Window;
        store.select_sparse(&window, &mut |row, counts| {
            g.series(row, counts, sites);
            Ok(())
        })?;
        store.select_traces(selector, &mut |t| {
            g.trace(&t, sites, hops);
            Ok(())
        })?;
    }
    Ok(where_served(
        &gathered, sites, hops, claims, confidence, min_probes,
    ))
}

fn where_served(
    gathered: &[Gathered; 2],
    sites: &SiteMap,
    hops: &HopDatasets,
    claims: &[ShareClaim],
    confidence: f64,
    min_probes: usize,
) -> WhereServed {
    let tables = |pick: fn(&Gathered) -> &BTreeMap<String, Tally>| {
        let mut out: BTreeMap<String, [ShareTable; 2]> = BTreeMap::new();
        for (side, g) in gathered.iter().enumerate() {
            for (country, tally) in pick(g) {
                out.entry(country.clone()).or_default()[side] = tally.table();
            }
        }
        out
    };
    let mut impossible = Vec::new();
    let mut checked = BTreeSet::new();
    for g in gathered {
        for ((site_name, probe), least_us) in &g.least_rtt {
            let (Some(site_coords), Some(coords)) =
                (g.site_coords.get(site_name), g.probe_coords.get(probe))
            else {
                continue;
            };
            checked.insert((site_name, probe));
            let km = great_circle_km(*coords, *site_coords);
            let least = least_round_trip(km).as_secs_f64() * 1e3;
            let measured = *least_us as f64 / 1e3;
            if measured < least
                && !impossible
                    .iter()
                    .any(|i: &ImpossibleSite| i.site == *site_name && i.probe == *probe)
            {
                impossible.push(ImpossibleSite {
                    site: site_name.clone(),
                    probe: probe.clone(),
                    km,
                    least_ms: least,
                    measured_ms: measured,
                });
            }
        }
    }
    WhereServed {
        served_by: tables(|g| &g.served),
        path_crosses: tables(|g| &g.crosses),
        claims: claims
            .iter()
            .map(|c| judge(c, gathered, confidence, min_probes))
            .collect(),
        impossible,
        checked: checked.len(),
        sites_known: !sites.is_empty(),
        hops_known: !hops.is_empty(),
    }
}

fn unit_share(g: &Gathered, claim: &ShareClaim, confidence: f64) -> UnitShare {
    let tally = match claim.kind {
        ShareKind::ServedFrom => g.served.get(&claim.subject),
        ShareKind::PathCrosses => g.crosses.get(&claim.subject),
    };
    let (units, hits, probes) = tally.map_or((0, 0, 0), |t| {
        let (units, hits) = t.units.count(&claim.country);
        (units, hits, t.units.probes())
    });
    UnitShare {
        hits,
        units,
        probes,
        interval: wilson(hits, units, confidence),
    }
}

/// Judges one claim by the same rules as the latency claims: it holds
/// when the whole interval satisfies it, fails when the whole interval
/// contradicts it, and is inconclusive otherwise.
fn judge(
    claim: &ShareClaim,
    gathered: &[Gathered; 2],
    confidence: f64,
    min_probes: usize,
) -> ShareVerdict {
    let base = unit_share(&gathered[Role::Baseline as usize], claim, confidence);
    let cand = unit_share(&gathered[Role::Candidate as usize], claim, confidence);
    let (verdict, why) = match claim.change {
        ShareChange::AtMost(p) => {
            if cand.interval.1 <= p {
                ("holds", format!("its upper bound is at most {}", pct(p)))
            } else if cand.interval.0 > p {
                ("fails", format!("its lower bound is above {}", pct(p)))
            } else {
                ("inconclusive", format!("the interval straddles {}", pct(p)))
            }
        }
        ShareChange::DecreasesTo(p) => {
            if cand.interval.1 <= p && base.interval.0 > cand.interval.1 {
                (
                    "holds",
                    format!("after is at most {} and below before", pct(p)),
                )
            } else if cand.interval.0 > p || cand.interval.0 > base.interval.1 {
                (
                    "fails",
                    format!("after is above {} or above before", pct(p)),
                )
            } else {
                (
                    "inconclusive",
                    "the intervals overlap the threshold or each other".into(),
                )
            }
        }
    };
    // With none seen, Wilson's upper bound is z²/(n + z²): how many units
    // would bring it to the threshold.
    let why = match (verdict, claim.change, cand.hits) {
        ("inconclusive", ShareChange::AtMost(p) | ShareChange::DecreasesTo(p), 0) if p > 0.0 => {
            let z = crate::stats::normal_quantile(1.0 - (1.0 - confidence) / 2.0);
            let needed = (z * z * (1.0 - p) / p).ceil();
            format!(
                "{why}; with none seen, {needed:.0} units would show at most {}",
                pct(p)
            )
        }
        _ => why,
    };
    let verdict = if base.probes.min(cand.probes) < min_probes {
        "insufficient probes"
    } else {
        verdict
    };
    let what = match claim.kind {
        ShareKind::ServedFrom => format!("served from {}", claim.country),
        ShareKind::PathCrosses => format!("with a path crossing {}", claim.country),
    };
    let side = |s: &UnitShare| {
        format!(
            "{} of {} units ({} to {}, {} probes)",
            s.hits,
            s.units,
            pct(s.interval.0),
            pct(s.interval.1),
            s.probes
        )
    };
    let sentence = format!(
        "{} units {what}: before {}, after {}; {why}.",
        claim.subject,
        side(&base),
        side(&cand)
    );
    ShareVerdict {
        claim: claim.clone(),
        verdict: verdict.to_string(),
        baseline: base,
        candidate: cand,
        sentence,
    }
}

/// A fraction as a percentage, to a tenth.
pub fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

/// The tables and verdicts as plain text, for `summary.txt` and the terminal.
pub fn render_where_text(w: &WhereServed) -> String {
    let mut out = String::new();
    let mut table = |title: &str, tables: &BTreeMap<String, [ShareTable; 2]>, unit: &str| {
        for (country, sides) in tables {
            out.push_str(&format!("{title}, probes in {country}:\n"));
            for (side, t) in ["before", "after"].iter().zip(sides) {
                let rows: Vec<String> = t
                    .rows
                    .iter()
                    .map(|r| {
                        if r.value == r.country {
                            format!("{} {}", r.value, pct(r.share))
                        } else {
                            format!("{} ({}) {}", r.value, r.country, pct(r.share))
                        }
                    })
                    .collect();
                out.push_str(&format!(
                    "  {side}: {} of {} {unit}, {} units, {} probes\n",
                    if rows.is_empty() {
                        "none".to_string()
                    } else {
                        rows.join(", ")
                    },
                    t.total,
                    t.units,
                    t.probes
                ));
            }
        }
    };
    table("served by", &w.served_by, "requests");
    table("path crosses", &w.path_crosses, "traces");
    for v in &w.claims {
        out.push_str(&format!(
            "claim: {} — {}: {}\n",
            v.claim.text, v.verdict, v.sentence
        ));
    }
    for i in &w.impossible {
        out.push_str(&format!(
            "site map cannot be right: {} is {:.0} km from probe {}, at least {:.1} ms there and back in fibre, but {:.1} ms was measured\n",
            i.site, i.km, i.probe, i.least_ms, i.measured_ms
        ));
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Before-against-after bars of one table's shares, as inline SVG: one
/// row per value, the baseline's bar above the candidate's.
fn share_chart(id: &str, sides: &[ShareTable; 2]) -> String {
    let mut values: Vec<&str> = sides
        .iter()
        .flat_map(|t| t.rows.iter().map(|r| r.value.as_str()))
        .collect();
    values.sort_unstable();
    values.dedup();
    let (row_h, width, label_w) = (34.0, 520.0, 130.0);
    let height = 24.0 + row_h * values.len() as f64;
    let mut svg = format!(
        "<svg id=\"{id}\" role=\"img\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" style=\"max-width:100%;height:auto\" \
xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">\
<text x=\"{label_w}\" y=\"12\" fill=\"#555\">before</text><rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" fill=\"#999\"/>\
<text x=\"{}\" y=\"12\" fill=\"#555\">after</text><rect x=\"{}\" y=\"4\" width=\"10\" height=\"10\" fill=\"#1f6feb\"/>",
        label_w + 45.0,
        label_w + 70.0,
        label_w + 105.0
    );
    let bar_w = width - label_w - 60.0;
    for (i, v) in values.iter().enumerate() {
        let y = 24.0 + row_h * i as f64;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 18.0,
            esc(v)
        ));
        for (k, (t, colour)) in sides.iter().zip(["#999", "#1f6feb"]).enumerate() {
            let share = t
                .rows
                .iter()
                .find(|r| r.value == *v)
                .map_or(0.0, |r| r.share);
            let by = y + 4.0 + 13.0 * k as f64;
            svg.push_str(&format!(
                "<rect x=\"{label_w}\" y=\"{by}\" width=\"{:.1}\" height=\"11\" fill=\"{colour}\"/>\
<text x=\"{:.1}\" y=\"{}\" fill=\"#333\">{}</text>",
                bar_w * share,
                label_w + bar_w * share + 4.0,
                by + 10.0,
                pct(share)
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The "where served" section of `report.html`: for each country, the
/// served-by and path-crosses tables and their before/after charts, the
/// share claims' verdicts, any impossible site, and what the evidence can
/// and cannot show.
pub fn render_where_html(w: &WhereServed) -> String {
    let mut h = String::from("<h2 id=\"where-served\">Where users were served, and which countries their paths crossed</h2>\n");
    for v in &w.claims {
        h.push_str(&format!(
            "<p class=\"share-claim\"><b>{}</b>: <code>{}</code>. {}</p>\n",
            esc(&v.verdict),
            esc(&v.claim.text),
            esc(&v.sentence)
        ));
    }
    let mut section = |kind: &str,
                       title: &str,
                       tables: &BTreeMap<String, [ShareTable; 2]>,
                       what: &str| {
        for (country, sides) in tables {
            h.push_str(&format!(
                "<h3>{title}: probes in {}</h3>\n<table class=\"{kind}\"><tr><th>side</th><th>{what}</th><th>country</th><th>share</th><th>of</th></tr>\n",
                esc(country)
            ));
            for (side, t) in ["before", "after"].iter().zip(sides) {
                for r in &t.rows {
                    h.push_str(&format!(
                        "<tr><td>{side}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({} units, {} probes)</td></tr>\n",
                        esc(&r.value),
                        esc(&r.country),
                        pct(r.share),
                        t.total,
                        t.units,
                        t.probes
                    ));
                }
            }
            h.push_str("</table>\n");
            h.push_str(&share_chart(&format!("{kind}-{}", esc(country)), sides));
            h.push('\n');
        }
    };
    section("served-by", "Served by", &w.served_by, "site");
    section(
        "path-crosses",
        "Path crosses",
        &w.path_crosses,
        "country crossed",
    );
    for i in &w.impossible {
        h.push_str(&format!(
            "<p class=\"impossible\">The site map cannot be right for <b>{}</b>: probe {} is {:.0} km away, at least {:.1} ms there and back at 2/3 of c in fibre, but {:.1} ms was measured.</p>\n",
            esc(&i.site),
            esc(&i.probe),
            i.km,
            i.least_ms,
            i.measured_ms
        ));
    }
    h.push_str(&format!(
        "<p class=\"where-methods\">{}</p>\n",
        esc(&methods_text(w))
    ));
    h
}

/// What this evidence can and cannot show, for the methods section.
pub fn methods_text(w: &WhereServed) -> String {
    let mut s = String::from(
        "Served by: each request's answering address, mapped to a site by the given site map; \
path crosses: each traceroute's answering routers, mapped to a country by the given datasets \
(else the site map). Shares of claims are over (probe, window) units, with Wilson intervals. \
This locates the endpoint that answered and the routers that answered, not where data is \
stored or processed behind them; a router that does not answer is invisible, so \"no CN hop\" \
means no answering hop in CN. An address no map covers is shown as unknown, never guessed.",
    );
    if !w.sites_known {
        s.push_str(" No site map was given (--sites): every site is unknown.");
    }
    if w.checked > 0 {
        s.push_str(&format!(
            " {} site and probe pairs were checked against light in fibre (2/3 c over the great-circle distance, from the probes' latitude and longitude labels); {} cannot be right.",
            w.checked,
            w.impossible.len()
        ));
    }
    if !w.hops_known {
        s.push_str(
            " No hop dataset was given (--hop-data): hop countries come from the site map alone.",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::normal_quantile;
    use std::time::Duration;
    use vantage_wire::trace::{End, HopRecord, PathTrace, Trace};
    use vantage_wire::{Labels, Series, Target, Window};

    fn sites() -> SiteMap {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sites.csv");
        std::fs::write(
            &f,
            "cidr,site,provider,region,country,latitude,longitude\n\
             198.18.1.0/24,beijing,own,cn-north,CN,39.9,116.4\n\
             198.18.2.0/24,singapore,own,ap-southeast,SG,1.35,103.8\n",
        )
        .unwrap();
        SiteMap::load(&[f]).unwrap()
    }

    fn hop_data() -> HopDatasets {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("countries.csv");
        std::fs::write(
            &f,
            "start,end,country\n10.0.0.0,10.0.0.255,CN\n10.0.1.0,10.0.1.255,SG\n",
        )
        .unwrap();
        HopDatasets::load(&[f]).unwrap()
    }

    fn labels(probe_at_mumbai: bool) -> Labels {
        let mut l = Labels::new();
        l.insert("country", "IN").unwrap();
        if probe_at_mumbai {
            l.insert("latitude", "19.07").unwrap();
            l.insert("longitude", "72.88").unwrap();
        }
        l
    }

    /// `units` (probe, minute) units of udp_rtt answered by `address`,
    /// each with two samples of `rtt_us`.
    fn served(g: &mut Gathered, units: u64, address: &str, rtt_us: u64) {
        for u in 0..units {
            let mut s = Series::new(
                Target {
                    name: "dc".into(),
                    address: format!("{address}:862"),
                },
                Metric::UdpRtt,
                Window {
                    start_unix_ms: u * 60_000,
                    end_unix_ms: (u + 1) * 60_000,
                },
            );
            s.histogram.record_n(rtt_us, 2).unwrap();
            let row = StoredSeries {
                probe_id: format!("p{}", u % 4),
                sequence: u,
                campaign: "move".into(),
                labels: labels(true),
                series: s,
            };
            let counts = SparseCounts::of(&row.series.histogram);
            g.series(&row, &counts, &sites());
        }
    }

    fn traced(g: &mut Gathered, units: u64, hops: &[Option<&str>]) {
        let hop_data = hop_data();
        for u in 0..units {
            let t = StoredTrace {
                probe_id: format!("p{}", u % 4),
                sequence: u,
                campaign: "move".into(),
                labels: labels(false),
                trace: PathTrace {
                    target: Target {
                        name: "dc".into(),
                        address: "198.18.1.9:4433".into(),
                    },
                    started_unix_ms: u * 60_000 + 5,
                    trace: Trace {
                        hops: hops
                            .iter()
                            .enumerate()
                            .map(|(i, a)| HopRecord {
                                ttl: i as u8 + 1,
                                address: a.map(|a| a.parse().unwrap()),
                                rtts: vec![a.map(|_| Duration::from_millis(10))],
                            })
                            .collect(),
                        end: End::Reached,
                    },
                },
            };
            g.trace(&t, &sites(), &hop_data);
        }
    }

    #[test]
    fn wilson_matches_known_intervals() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        let (lo, hi) = wilson(5, 10, 0.95);
        assert!(
            (lo - 0.2366).abs() < 1e-3 && (hi - 0.7634).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 100, 0.95);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.0370).abs() < 1e-3, "{hi}");
        assert_eq!(wilson(0, 0, 0.95), (0.0, 1.0));
    }

    #[test]
    fn share_claims_parse_and_bad_ones_say_why() {
        let c: ShareClaim = "IN served_from CN share <= 1%".parse().unwrap();
        assert_eq!(
            (c.subject.as_str(), c.kind, c.country.as_str(), c.change),
            ("IN", ShareKind::ServedFrom, "CN", ShareChange::AtMost(0.01))
        );
        let c: ShareClaim = "in path_crosses cn share decreases to <=0.5%"
            .parse()
            .unwrap();
        assert_eq!(c.change, ShareChange::DecreasesTo(0.005));
        assert_eq!((c.subject.as_str(), c.country.as_str()), ("IN", "CN"));
        assert!(ShareClaim::is_share_claim("IN served_from CN share <= 1%"));
        assert!(!ShareClaim::is_share_claim(
            "IN udp_rtt p50 decreases by >= 1ms"
        ));
        for (bad, why) in [
            ("IN served_from China share <= 1%", "alpha-2"),
            ("IN served_from CN share <= 120%", "percentage"),
            ("IN served_by CN share <= 1%", "served_from or path_crosses"),
            ("IN served_from CN share >= 1%", "expected `<= N%`"),
        ] {
            let e = bad.parse::<ShareClaim>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn tables_and_claims_before_beijing_after_singapore() {
        let mut g: [Gathered; 2] = Default::default();
        served(&mut g[0], 400, "198.18.1.9", 60_000);
        served(&mut g[1], 400, "198.18.2.9", 40_000);
        traced(
            &mut g[0],
            400,
            &[Some("10.0.0.1"), None, Some("198.18.1.9")],
        );
        traced(&mut g[1], 400, &[Some("10.0.1.1"), Some("198.18.2.9")]);
        let claims: Vec<ShareClaim> = [
            "IN served_from CN share <= 1%",
            "IN path_crosses CN share decreases to <= 1%",
            "IN served_from SG share <= 1%",
        ]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
        let w = where_served(&g, &sites(), &hop_data(), &claims, 0.95, 3);
        let [before, after] = &w.served_by["IN"];
        assert_eq!(before.rows[0].value, "beijing");
        assert_eq!(
            (before.rows[0].country.as_str(), before.rows[0].share),
            ("CN", 1.0)
        );
        assert_eq!(
            (after.rows[0].value.as_str(), after.total),
            ("singapore", 800)
        );
        assert_eq!((after.units, after.probes), (400, 4));
        let [before, after] = &w.path_crosses["IN"];
        let share = |t: &ShareTable, c: &str| t.rows.iter().find(|r| r.value == c).map(|r| r.share);
        assert_eq!(share(before, "CN"), Some(1.0));
        assert_eq!(share(after, "CN"), None, "no answering hop in CN after");
        assert_eq!(share(after, "SG"), Some(1.0));
        let verdicts: Vec<&str> = w.claims.iter().map(|v| v.verdict.as_str()).collect();
        assert_eq!(verdicts, ["holds", "holds", "fails"], "{:#?}", w.claims);
        assert!(
            w.claims[0].sentence.contains("0 of 400 units"),
            "{}",
            w.claims[0].sentence
        );
        // Too few units for 1%: the interval cannot rule it out.
        let mut few: [Gathered; 2] = Default::default();
        served(&mut few[0], 40, "198.18.1.9", 60_000);
        served(&mut few[1], 40, "198.18.2.9", 40_000);
        let w = where_served(&few, &sites(), &hop_data(), &claims[..1], 0.95, 3);
        assert_eq!(w.claims[0].verdict, "inconclusive");
        assert!(
            w.claims[0]
                .sentence
                .contains("with none seen, 381 units would show at most 1.0%"),
            "{}",
            w.claims[0].sentence
        );
        let w = where_served(&few, &sites(), &hop_data(), &claims[..1], 0.95, 5);
        assert_eq!(w.claims[0].verdict, "insufficient probes");
    }

    #[test]
    fn behind_a_cdn_the_edges_are_the_rows() {
        let mut g: [Gathered; 2] = Default::default();
        let mut s = Series::new(
            Target {
                name: "api".into(),
                address: "203.0.113.7:443".into(),
            },
            Metric::HttpTotal,
            Window {
                start_unix_ms: 0,
                end_unix_ms: 60_000,
            },
        );
        s.histogram.record_n(90_000, 3).unwrap();
        s.sent = 3;
        for e in [
            "cloudfront:BOM78-P1",
            "cloudfront:BOM78-P1",
            "cloudfront:SIN2-C1",
        ] {
            s.count_edge(e);
        }
        let row = StoredSeries {
            probe_id: "p".into(),
            sequence: 1,
            campaign: "move".into(),
            labels: labels(false),
            series: s,
        };
        g[1].series(&row, &SparseCounts::of(&row.series.histogram), &sites());
        let w = where_served(&g, &sites(), &hop_data(), &[], 0.95, 1);
        let after = &w.served_by["IN"][1];
        let rows: Vec<(&str, u64)> = after
            .rows
            .iter()
            .map(|r| (r.value.as_str(), r.count))
            .collect();
        assert_eq!(
            rows,
            [("cloudfront:BOM78-P1", 2), ("cloudfront:SIN2-C1", 1)]
        );
        assert_eq!(
            after.rows[0].country, UNKNOWN,
            "no site map range for the address"
        );
    }

    #[test]
    fn a_round_trip_faster_than_light_flags_the_site_mapping() {
        // Mumbai to Beijing is ~4,700 km: at least ~47 ms in fibre; 5 ms
        // cannot be right, 60 ms can.
        let mut g: [Gathered; 2] = Default::default();
        served(&mut g[0], 4, "198.18.1.9", 5_000);
        served(&mut g[1], 4, "198.18.1.9", 60_000);
        let w = where_served(&g, &sites(), &hop_data(), &[], 0.95, 1);
        assert_eq!(
            w.impossible.len(),
            4,
            "each probe, once: {:?}",
            w.impossible
        );
        assert_eq!(w.checked, 4, "4 probes, one site");
        assert!(methods_text(&w).contains("4 site and probe pairs were checked"));
        let i = &w.impossible[0];
        assert_eq!(i.site, "beijing");
        assert!((4_000.0..5_500.0).contains(&i.km), "{}", i.km);
        assert!(i.least_ms > 40.0 && i.measured_ms < 6.0, "{i:?}");
    }
}
