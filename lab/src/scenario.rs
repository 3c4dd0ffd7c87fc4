//! Scenario files: countries, data centres, the emulated path between each
//! pair, and the phases (which data centre serves each country). The default
//! scenario ships in `lab/scenarios/default.toml`.

use crate::link::PathSpec;
use crate::path::{DirectionSpec, Jitter, Loss};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The default scenario: Beijing to Singapore and Oregon, users in IN, MY, ID, US.
pub const DEFAULT_SCENARIO: &str = include_str!("../scenarios/default.toml");

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name, used as the campaign of every batch.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Seed of every path's loss and jitter.
    pub seed: u64,
    /// Countries (ISO 3166-1 alpha-2) and their region label.
    pub countries: BTreeMap<String, String>,
    /// Where each country's probes are, when the scenario says: their
    /// `latitude` and `longitude` labels.
    pub country_coords: BTreeMap<String, (f64, f64)>,
    /// Each country's probes, at least one: each on its own network,
    /// with that network's access leg in front of the country's paths.
    pub probes: BTreeMap<String, Vec<LabProbe>>,
    /// Data-centre names.
    pub datacenters: BTreeSet<String>,
    /// Where each data centre is, when the scenario says: the lab's site
    /// map (`OUT/sites.csv`) is made of it.
    pub sites: BTreeMap<String, DatacenterSite>,
    /// The path from each country to each data centre.
    pub paths: BTreeMap<(String, String), PathSpec>,
    /// The routers along each path, from the country's end (namespace
    /// mode only: relays have no TTL to decrement).
    pub hops: BTreeMap<(String, String), Vec<Hop>>,
    /// Phases by name.
    pub phases: BTreeMap<String, Phase>,
    /// Photo-sync settings of every probe: [`LAB_SYNC`] overridden by the
    /// scenario's `[sync]` table (same keys as a probe's `[sync]`).
    pub sync: toml::Table,
}

/// Photo sync in the lab unless a scenario says otherwise: small batches
/// often (3 photos of about 300 kB every 10 s), so a minute gives several
/// batches to compare while the idle metrics, paused during a batch, keep
/// most of the time, and the relays' CPU stays low.
pub const LAB_SYNC: &str = r#"
every = "10s"
photos = 3
photo_bytes = 300000
size_sigma = 0.3
concurrency = 3
direction = "upload"
transport = "quic"
timeout = "10s"
"#;

/// A router along a path: in namespace mode a namespace of its own that
/// forwards, decrements TTL and answers ICMP time-exceeded, so a
/// traceroute from a probe finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// Its name, as a network operator would label it (`bjs-cn2-core`).
    pub name: String,
    /// The country it sits in (ISO 3166-1 alpha-2).
    pub country: String,
    /// Where it sits: the share of the path's one-way delay from the
    /// country's end, in (0, 1).
    pub at: f64,
    /// Forwards but never answers, as many real routers: a traceroute
    /// sees a gap at its TTL.
    pub silent: bool,
}

/// Most hops a path may declare.
pub const MAX_HOPS: usize = 16;

/// One simulated probe of a country.
#[derive(Debug, Clone, PartialEq)]
pub struct LabProbe {
    /// Its `network` label (`wifi`, `4g`, `5g`; `lab` when the scenario
    /// gives a country no probes of its own).
    pub network: String,
    /// Its name in the lab's outputs: the country, or `IN-wifi` when the
    /// country has probes of its own.
    pub name: String,
    /// The access leg (the probe's own network) in front of every path
    /// of its country; `None`: the path alone.
    pub access: Option<PathSpec>,
}

/// One phase: who serves whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// The data centre serving each country.
    pub serve: BTreeMap<String, String>,
    /// Measure every data centre from every country, not only the serving one
    /// (for a country × data-centre matrix).
    pub measure_all: bool,
}

impl Phase {
    /// The data centres a country's probe measures in this phase.
    pub fn targets_of<'a>(&'a self, country: &str, scenario: &'a Scenario) -> Vec<&'a str> {
        if self.measure_all {
            scenario.datacenters.iter().map(String::as_str).collect()
        } else {
            self.serve
                .get(country)
                .map(|dc| vec![dc.as_str()])
                .unwrap_or_default()
        }
    }
}

/// A path's routers, checked: named, in a country, in order along it.
fn path_hops(p: &FilePath, spec: &PathSpec) -> Result<Vec<Hop>, ScenarioError> {
    let invalid = |what: String| {
        Err(ScenarioError::Invalid(format!(
            "path {} → {}: {what}",
            p.country, p.datacenter
        )))
    };
    if p.hops.len() > MAX_HOPS {
        return invalid(format!("{} hops; at most {MAX_HOPS}", p.hops.len()));
    }
    let up_ms = spec.up.delay.as_secs_f64() * 1e3;
    let n = p.hops.len();
    let mut out: Vec<Hop> = Vec::with_capacity(n);
    for (i, h) in p.hops.iter().enumerate() {
        let named = !h.name.is_empty()
            && h.name.len() <= 32
            && h.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !named {
            return invalid(format!(
                "hop `{}`: name it with up to 32 letters, digits, `-`, `_` and `.`",
                h.name
            ));
        }
        let country = h.country.to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return invalid(format!(
                "hop {}: country `{}` is not an ISO 3166-1 alpha-2 code",
                h.name, h.country
            ));
        }
        let at = match h.delay_ms {
            None => (i + 1) as f64 / (n + 1) as f64,
            Some(d) if d.is_finite() && d > 0.0 && d < up_ms => d / up_ms,
            Some(d) => {
                return invalid(format!(
                    "hop {}: delay_ms {d} must lie inside the path's {up_ms} ms up",
                    h.name
                ))
            }
        };
        if out.last().is_some_and(|prev| prev.at >= at) {
            return invalid(format!(
                "hop {}: its delay_ms must be more than the hop before it",
                h.name
            ));
        }
        if out.iter().any(|prev| prev.name == h.name) {
            return invalid(format!("hop {} is listed twice", h.name));
        }
        out.push(Hop {
            name: h.name.clone(),
            country,
            at,
            silent: h.silent,
        });
    }
    Ok(out)
}

/// A router named on several paths is one router: the same country and
/// the same silence on each.
fn check_routers(hops: &BTreeMap<(String, String), Vec<Hop>>) -> Result<(), ScenarioError> {
    let mut seen: BTreeMap<&str, (&Hop, &(String, String))> = BTreeMap::new();
    for (path, list) in hops {
        for hop in list {
            match seen.get(hop.name.as_str()) {
                Some((first, where_)) if (&first.country, first.silent) != (&hop.country, hop.silent) => {
                    return Err(ScenarioError::Invalid(format!(
                        "hop {} is in {} (silent {}) on path {} → {} but in {} (silent {}) on path {} → {}: one name is one router",
                        hop.name, first.country, first.silent, where_.0, where_.1,
                        hop.country, hop.silent, path.0, path.1
                    )))
                }
                Some(_) => {}
                None => {
                    seen.insert(&hop.name, (hop, path));
                }
            }
        }
    }
    Ok(())
}

/// Where a data centre is.
#[derive(Debug, Clone, PartialEq)]
pub struct DatacenterSite {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// (latitude, longitude), degrees.
    pub coords: Option<(f64, f64)>,
}

/// Why a scenario is unusable, saying where.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not readable.
    #[error("scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Not valid TOML for a scenario.
    #[error("scenario: {0}")]
    Parse(String),
    /// Valid TOML, inconsistent content.
    #[error("scenario: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    seed: u64,
    #[serde(rename = "country")]
    countries: Vec<FileCountry>,
    #[serde(rename = "datacenter")]
    datacenters: Vec<FileDatacenter>,
    #[serde(rename = "path")]
    paths: Vec<FilePath>,
    #[serde(rename = "phase")]
    phases: Vec<FilePhase>,
    /// The probes' photo-sync settings, the `[sync]` table of a probe
    /// configuration file; checked by the probe.
    sync: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCountry {
    code: String,
    #[serde(default)]
    region: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    /// The country's probes, each on its own access network.
    #[serde(default, rename = "probe")]
    probes: Vec<FileProbe>,
}

/// A probe's access network: its leg in front of the country's paths,
/// one-way figures as a path's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProbe {
    network: String,
    #[serde(default)]
    delay_ms: f64,
    #[serde(default)]
    jitter_ms: f64,
    #[serde(default)]
    loss: f64,
    jitter_dist: Option<String>,
    down_mbps: Option<f64>,
    up_mbps: Option<f64>,
    queue_ms: Option<f64>,
}

impl FileProbe {
    /// The access leg, checked as a path is.
    fn access(&self, country: &str) -> Result<PathSpec, ScenarioError> {
        let leg = FilePath {
            country: country.to_string(),
            datacenter: format!("its {} access network", self.network),
            delay_ms: Some(self.delay_ms),
            jitter_ms: self.jitter_ms,
            loss: self.loss,
            burst_loss: None,
            jitter_dist: self.jitter_dist.clone(),
            down_mbps: self.down_mbps,
            up_mbps: self.up_mbps,
            queue_ms: self.queue_ms,
            mtu: None,
            reorder: false,
            up_delay_ms: None,
            down_delay_ms: None,
            hops: Vec::new(),
        };
        Ok(PathSpec {
            up: direction(&leg, leg.up_mbps, self.delay_ms)?,
            down: direction(&leg, leg.down_mbps, self.delay_ms)?,
        })
    }
}

/// A country's probes from its file entry: one on network `lab` with no
/// access leg when it lists none.
fn country_probes(code: &str, c: &FileCountry) -> Result<Vec<LabProbe>, ScenarioError> {
    if c.probes.is_empty() {
        return Ok(vec![LabProbe {
            network: "lab".into(),
            name: code.to_string(),
            access: None,
        }]);
    }
    let mut probes: Vec<LabProbe> = Vec::new();
    for p in &c.probes {
        let ok = !p.network.is_empty()
            && p.network.len() <= 16
            && p.network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(ScenarioError::Invalid(format!(
                "country {code}: probe network `{}`: use up to 16 letters, digits, `-` and `_`",
                p.network
            )));
        }
        if probes.iter().any(|q| q.network == p.network) {
            return Err(ScenarioError::Invalid(format!(
                "country {code}: two probes on network {}; give each its own",
                p.network
            )));
        }
        probes.push(LabProbe {
            network: p.network.clone(),
            name: format!("{code}-{}", p.network),
            access: Some(p.access(code)?),
        });
    }
    Ok(probes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatacenter {
    name: String,
    /// Its country (ISO 3166-1 alpha-2), for the lab's site map.
    country: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePath {
    country: String,
    datacenter: String,
    /// One-way delay each way, unless `up_delay_ms` or `down_delay_ms`
    /// says otherwise.
    delay_ms: Option<f64>,
    #[serde(default)]
    jitter_ms: f64,
    #[serde(default)]
    loss: f64,
    /// Bursty loss instead of `loss`: a Gilbert–Elliott model.
    burst_loss: Option<FileBurstLoss>,
    /// `"uniform"` (default: ± jitter_ms) or `"normal"` (sd jitter_ms).
    jitter_dist: Option<String>,
    down_mbps: Option<f64>,
    up_mbps: Option<f64>,
    /// Bottleneck queue in ms of the link's rate (default 100 ms).
    queue_ms: Option<f64>,
    mtu: Option<usize>,
    #[serde(default)]
    reorder: bool,
    /// Asymmetric paths: the one-way delay up (country to data centre)
    /// and down, each instead of `delay_ms`.
    up_delay_ms: Option<f64>,
    down_delay_ms: Option<f64>,
    /// Routers along the path, from the country's end.
    #[serde(default)]
    hops: Vec<FileHop>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHop {
    name: String,
    country: String,
    /// One-way delay from the country's end to the router, up the path
    /// (default: the routers evenly spaced).
    delay_ms: Option<f64>,
    #[serde(default)]
    silent: bool,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct FileBurstLoss {
    p_good_to_bad: f64,
    p_bad_to_good: f64,
    #[serde(default)]
    loss_good: f64,
    loss_bad: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePhase {
    name: String,
    serve: BTreeMap<String, String>,
    #[serde(default)]
    measure_all: bool,
}

fn direction(
    p: &FilePath,
    mbps: Option<f64>,
    delay_ms: f64,
) -> Result<DirectionSpec, ScenarioError> {
    let invalid = |what: String| {
        Err(ScenarioError::Invalid(format!(
            "path {} → {}: {what}",
            p.country, p.datacenter
        )))
    };
    let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
    if !finite_nonneg(delay_ms) || !finite_nonneg(p.jitter_ms) || delay_ms > 10_000.0 {
        return invalid(
            "delay_ms (up_delay_ms, down_delay_ms) and jitter_ms must be between 0 and 10000"
                .into(),
        );
    }
    if !(0.0..1.0).contains(&p.loss) {
        return invalid("loss is a probability, 0 ≤ loss < 1".into());
    }
    let loss = match p.burst_loss {
        Some(b) => {
            let probs = [b.p_good_to_bad, b.p_bad_to_good, b.loss_good, b.loss_bad];
            if probs.iter().any(|v| !(0.0..=1.0).contains(v)) || p.loss > 0.0 {
                return invalid("burst_loss takes probabilities between 0 and 1, and replaces loss (give one of them)".into());
            }
            Loss::GilbertElliott {
                p_good_to_bad: b.p_good_to_bad,
                p_bad_to_good: b.p_bad_to_good,
                loss_good: b.loss_good,
                loss_bad: b.loss_bad,
            }
        }
        None if p.loss > 0.0 => Loss::Bernoulli { p: p.loss },
        None => Loss::None,
    };
    let width = Duration::from_secs_f64(p.jitter_ms / 1e3);
    let jitter = match (p.jitter_ms > 0.0, p.jitter_dist.as_deref()) {
        (false, _) => Jitter::None,
        (true, None | Some("uniform")) => Jitter::Uniform { half_width: width },
        (true, Some("normal")) => Jitter::Normal { sd: width },
        (true, Some(other)) => {
            return invalid(format!(
                "jitter_dist `{other}`: use \"uniform\" or \"normal\""
            ))
        }
    };
    let rate_bps = match mbps {
        None => None,
        Some(m) if m.is_finite() && m > 0.0 => Some((m * 1e6) as u64),
        Some(_) => return invalid("bandwidth must be positive Mbit/s".into()),
    };
    let queue_ms = p.queue_ms.unwrap_or(100.0).max(1.0);
    let queue_bytes = rate_bps.map_or(256 * 1024, |r| {
        ((r as f64 * queue_ms / 1e3 / 8.0) as usize).max(16 * 1024)
    });
    Ok(DirectionSpec {
        delay: Duration::from_secs_f64(delay_ms / 1e3),
        jitter,
        reorder: p.reorder,
        loss,
        rate_bps,
        queue_bytes,
        mtu: p.mtu,
    })
}

impl Scenario {
    /// Every probe of every country, with its country and region, in
    /// country order.
    pub fn all_probes(&self) -> impl Iterator<Item = (&str, &str, &LabProbe)> {
        self.countries.iter().flat_map(move |(code, region)| {
            self.probes
                .get(code)
                .into_iter()
                .flatten()
                .map(move |p| (code.as_str(), region.as_str(), p))
        })
    }

    /// The emulated path from `probe` of `country` to `datacenter`: its
    /// access leg, then the country's path.
    pub fn path_of(&self, country: &str, probe: &LabProbe, datacenter: &str) -> Option<PathSpec> {
        let path = self
            .paths
            .get(&(country.to_string(), datacenter.to_string()))?;
        Some(match &probe.access {
            None => path.clone(),
            Some(access) => PathSpec {
                up: access.up.then(&path.up),
                down: path.down.then(&access.down),
            },
        })
    }

    /// The routers along the path from `country` to `datacenter`.
    pub fn hops_of(&self, country: &str, datacenter: &str) -> &[Hop] {
        self.hops
            .get(&(country.to_string(), datacenter.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The path from `probe` of `country` to `datacenter` (its access
    /// leg included) cut at its routers: one segment more than it has
    /// hops, in order from the probe's end. Each router sits after the
    /// access leg and its share of the country's path; each direction's
    /// impairments are in the segment where it starts (the first going
    /// up, the last coming down), so a packet's fate is decided as it
    /// enters the path.
    pub fn segments_of(
        &self,
        country: &str,
        probe: &LabProbe,
        datacenter: &str,
    ) -> Option<Vec<PathSpec>> {
        let path = self
            .paths
            .get(&(country.to_string(), datacenter.to_string()))?;
        let whole = self.path_of(country, probe, datacenter)?;
        let hops = self.hops_of(country, datacenter);
        let cuts = |access: Duration, leg: Duration, total: Duration| -> Vec<f64> {
            let total = total.as_secs_f64().max(f64::MIN_POSITIVE);
            hops.iter()
                .map(|h| (access.as_secs_f64() + h.at * leg.as_secs_f64()) / total)
                .collect()
        };
        let access =
            |pick: fn(&PathSpec) -> Duration| probe.access.as_ref().map_or(Duration::ZERO, pick);
        let up = whole.up.split(
            &cuts(access(|a| a.up.delay), path.up.delay, whole.up.delay),
            false,
        );
        let down = whole.down.split(
            &cuts(access(|a| a.down.delay), path.down.delay, whole.down.delay),
            true,
        );
        Some(
            up.into_iter()
                .zip(down)
                .map(|(up, down)| PathSpec { up, down })
                .collect(),
        )
    }

    /// The built-in default scenario.
    pub fn default_scenario() -> Self {
        // The shipped file is tested to parse; see the tests below.
        Self::parse(DEFAULT_SCENARIO)
            .unwrap_or_else(|e| panic!("the built-in scenario is broken: {e}"))
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates scenario TOML.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let f: File = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        let mut countries = BTreeMap::new();
        let mut country_coords = BTreeMap::new();
        let mut probes = BTreeMap::new();
        for c in &f.countries {
            let code = c.code.to_ascii_uppercase();
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return invalid(format!(
                    "country `{}` is not an ISO 3166-1 alpha-2 code",
                    c.code
                ));
            }
            match (c.latitude, c.longitude) {
                (Some(lat), Some(lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    country_coords.insert(code.clone(), (lat, lon));
                }
                (None, None) => {}
                _ => {
                    return invalid(format!(
                        "country {code}: give both latitude (-90 to 90) and longitude (-180 to 180), or neither"
                    ))
                }
            }
            if countries.insert(code.clone(), c.region.clone()).is_some() {
                return invalid(format!("country {code} is listed twice"));
            }
            probes.insert(code.clone(), country_probes(&code, c)?);
        }
        let mut datacenters = BTreeSet::new();
        let mut sites = BTreeMap::new();
        for d in &f.datacenters {
            let ok = !d.name.is_empty()
                && d.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return invalid(format!(
                    "data centre `{}`: use letters, digits, `-` and `_`",
                    d.name
                ));
            }
            if !datacenters.insert(d.name.clone()) {
                return invalid(format!("data centre {} is listed twice", d.name));
            }
            if let Some(country) = &d.country {
                let code = country.to_ascii_uppercase();
                if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                    return invalid(format!(
                        "data centre {}: country `{country}` is not an ISO 3166-1 alpha-2 code",
                        d.name
                    ));
                }
                let coords = match (d.latitude, d.longitude) {
                    (Some(lat), Some(lon))
                        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                    {
                        Some((lat, lon))
                    }
                    (None, None) => None,
                    _ => {
                        return invalid(format!(
                            "data centre {}: give both latitude (-90 to 90) and longitude (-180 to 180), or neither",
                            d.name
                        ))
                    }
                };
                sites.insert(
                    d.name.clone(),
                    DatacenterSite {
                        country: code,
                        coords,
                    },
                );
            }
        }
        let mut paths = BTreeMap::new();
        let mut hops = BTreeMap::new();
        for p in &f.paths {
            let country = p.country.to_ascii_uppercase();
            if !countries.contains_key(&country) {
                return invalid(format!("path from unknown country {}", p.country));
            }
            if !datacenters.contains(&p.datacenter) {
                return invalid(format!("path to unknown data centre {}", p.datacenter));
            }
            let (Some(up_ms), Some(down_ms)) =
                (p.up_delay_ms.or(p.delay_ms), p.down_delay_ms.or(p.delay_ms))
            else {
                return invalid(format!(
                    "path {country} → {}: give delay_ms, or up_delay_ms and down_delay_ms",
                    p.datacenter
                ));
            };
            let spec = PathSpec {
                up: direction(p, p.up_mbps, up_ms)?,
                down: direction(p, p.down_mbps, down_ms)?,
            };
            hops.insert(
                (country.clone(), p.datacenter.clone()),
                path_hops(p, &spec)?,
            );
            if paths
                .insert((country.clone(), p.datacenter.clone()), spec)
                .is_some()
            {
                return invalid(format!("path {country} → {} is listed twice", p.datacenter));
            }
        }
        check_routers(&hops)?;
        let mut phases = BTreeMap::new();
        for ph in &f.phases {
            let mut serve = BTreeMap::new();
            for (c, dc) in &ph.serve {
                let c = c.to_ascii_uppercase();
                if !countries.contains_key(&c) {
                    return invalid(format!("phase {}: unknown country {c}", ph.name));
                }
                if !datacenters.contains(dc) {
                    return invalid(format!("phase {}: unknown data centre {dc}", ph.name));
                }
                serve.insert(c, dc.clone());
            }
            for c in countries.keys() {
                if !serve.contains_key(c) {
                    return invalid(format!("phase {}: no data centre serves {c}", ph.name));
                }
            }
            let phase = Phase {
                serve,
                measure_all: ph.measure_all,
            };
            if phases.insert(ph.name.clone(), phase).is_some() {
                return invalid(format!("phase {} is listed twice", ph.name));
            }
        }
        let mut sync: toml::Table = toml::from_str(LAB_SYNC)
            .map_err(|e| ScenarioError::Parse(format!("built-in sync settings: {e}")))?;
        if let Some(own) = f.sync {
            sync.extend(own);
        }
        let scenario = Scenario {
            sync,
            name: f.name,
            description: f.description,
            seed: f.seed,
            countries,
            probes,
            datacenters,
            sites,
            country_coords,
            paths,
            hops,
            phases,
        };
        for (name, phase) in &scenario.phases {
            for c in scenario.countries.keys() {
                for dc in phase.targets_of(c, &scenario) {
                    if !scenario.paths.contains_key(&(c.clone(), dc.to_string())) {
                        return invalid(format!(
                            "phase {name} needs a path {c} → {dc}, and there is none"
                        ));
                    }
                }
            }
        }
        if scenario.phases.is_empty() {
            return invalid("no [[phase]]".into());
        }
        Ok(scenario)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_tells_the_design_story() {
        let s = Scenario::default_scenario();
        assert_eq!(
            s.countries.keys().collect::<Vec<_>>(),
            ["ID", "IN", "MY", "US"]
        );
        assert_eq!(
            s.datacenters.iter().collect::<Vec<_>>(),
            ["beijing", "oregon", "singapore"]
        );
        let before = &s.phases["before"];
        assert!(before.serve.values().all(|dc| dc == "beijing"));
        let after = &s.phases["after"];
        for c in ["IN", "MY", "ID"] {
            assert_eq!(after.serve[c], "singapore");
        }
        assert_eq!(after.serve["US"], "oregon");
        // Moving closer lowers delay for every country.
        for c in s.countries.keys() {
            let d = |dc: &str| s.paths[&(c.clone(), dc.to_string())].up.delay;
            assert!(d(&after.serve[c]) < d(&before.serve[c]), "{c}");
        }
        assert_eq!(s.paths.len(), 12);
    }

    #[test]
    fn each_default_country_has_three_probes_on_their_own_networks() {
        let s = Scenario::default_scenario();
        for (code, probes) in &s.probes {
            let networks: Vec<&str> = probes.iter().map(|p| p.network.as_str()).collect();
            assert_eq!(networks, ["wifi", "4g", "5g"], "{code}");
            assert_eq!(probes[1].name, format!("{code}-4g"));
        }
        assert_eq!(s.all_probes().count(), 12);
        // The 4G leg comes before the path: delays add, the path's slower
        // uplink stays the bottleneck.
        let (_, _, g4) = s.all_probes().find(|(_, _, p)| p.name == "IN-4g").unwrap();
        let path = s.path_of("IN", g4, "beijing").unwrap();
        assert_eq!(path.up.delay, Duration::from_millis(15 + 125));
        assert_eq!(path.down.delay, Duration::from_millis(125 + 15));
        assert_eq!(path.up.rate_bps, Some(4_000_000));
        let (_, _, wifi) = s
            .all_probes()
            .find(|(_, _, p)| p.name == "MY-wifi")
            .unwrap();
        assert_eq!(
            s.path_of("MY", wifi, "singapore").unwrap().up.rate_bps,
            Some(10_000_000)
        );
    }

    #[test]
    fn a_country_without_probes_has_one_on_the_path_alone() {
        let text = DEFAULT_SCENARIO.replace("[[country.probe]]", "[[ignored]]");
        // Strip every probe table: what is left is a scenario of one probe a country.
        let text: String = text
            .split("\n\n")
            .filter(|block| !block.starts_with("[[ignored]]"))
            .collect::<Vec<_>>()
            .join("\n\n");
        let s = Scenario::parse(&text).unwrap();
        let (code, _, p) = s.all_probes().next().unwrap();
        assert_eq!(
            (code, p.name.as_str(), p.network.as_str()),
            ("ID", "ID", "lab")
        );
        assert_eq!(
            s.path_of("ID", p, "beijing"),
            s.paths.get(&("ID".into(), "beijing".into())).cloned()
        );
        // Two probes on one network are refused.
        let twice = DEFAULT_SCENARIO.replacen("network = \"4g\"", "network = \"wifi\"", 1);
        let err = Scenario::parse(&twice).unwrap_err().to_string();
        assert!(err.contains("two probes on network wifi"), "{err}");
    }

    #[test]
    fn burst_loss_and_normal_jitter_are_read() {
        let text = DEFAULT_SCENARIO.replacen(
            "loss = 0.005\ndown_mbps = 8",
            "burst_loss = { p_good_to_bad = 0.01, p_bad_to_good = 0.3, loss_bad = 0.5 }\njitter_dist = \"normal\"\ndown_mbps = 8",
            1,
        );
        let s = Scenario::parse(&text).unwrap();
        let p = &s.paths[&("IN".to_string(), "beijing".to_string())];
        assert!(matches!(p.up.loss, Loss::GilbertElliott { loss_bad, .. } if loss_bad == 0.5));
        assert_eq!(
            p.down.jitter,
            Jitter::Normal {
                sd: Duration::from_millis(6)
            }
        );
    }

    const HOPS: &str = r#"
name = "hops"
[[country]]
code = "IN"
[[country.probe]]
network = "4g"
delay_ms = 10
[[datacenter]]
name = "beijing"
[[path]]
country = "IN"
datacenter = "beijing"
up_delay_ms = 100
down_delay_ms = 60
loss = 0.01
hops = [
  { name = "bom-ix", country = "in", delay_ms = 10 },
  { name = "hkg-transit", country = "HK", silent = true },
  { name = "bjs-core", country = "CN", delay_ms = 90 },
]
[[phase]]
name = "before"
serve = { IN = "beijing" }
"#;

    #[test]
    fn a_path_declares_its_routers_and_its_delay_each_way() {
        let s = Scenario::parse(HOPS).unwrap();
        let hops = s.hops_of("IN", "beijing");
        let names: Vec<(&str, &str, bool)> = hops
            .iter()
            .map(|h| (h.name.as_str(), h.country.as_str(), h.silent))
            .collect();
        assert_eq!(
            names,
            [
                ("bom-ix", "IN", false),
                ("hkg-transit", "HK", true),
                ("bjs-core", "CN", false)
            ]
        );
        // bom-ix at 10 of 100 ms up; the one without a delay is placed
        // evenly (2 of 4); bjs-core at 90.
        let at: Vec<f64> = hops.iter().map(|h| h.at).collect();
        assert_eq!(at, [0.1, 0.5, 0.9]);
        let path = &s.paths[&("IN".to_string(), "beijing".to_string())];
        assert_eq!(path.up.delay, Duration::from_millis(100));
        assert_eq!(path.down.delay, Duration::from_millis(60));

        // Cut at the routers, with the 4G access leg and the loss in the
        // segment at the probe's end; the whole is the path.
        let probe = &s.probes["IN"][0];
        let segs = s.segments_of("IN", probe, "beijing").unwrap();
        let ms = |d: Duration| (d.as_secs_f64() * 1e3).round() as u64;
        let up: Vec<u64> = segs.iter().map(|p| ms(p.up.delay)).collect();
        let down: Vec<u64> = segs.iter().map(|p| ms(p.down.delay)).collect();
        assert_eq!(up, [20, 40, 40, 10]);
        assert_eq!(down, [16, 24, 24, 6]);
        assert_eq!(segs[0].up.loss, Loss::Bernoulli { p: 0.01 });
        assert!(segs[1..].iter().all(|p| p.up.loss == Loss::None));
        // Coming down, the loss is met where the path starts: at the
        // data centre's end.
        assert_eq!(segs[3].down.loss, Loss::Bernoulli { p: 0.01 });
        assert!(segs[..3].iter().all(|p| p.down.loss == Loss::None));
    }

    #[test]
    fn the_default_beijing_paths_cross_china_and_the_singapore_paths_do_not() {
        let s = Scenario::default_scenario();
        for country in s.countries.keys() {
            let in_cn = |dc: &str| s.hops_of(country, dc).iter().any(|h| h.country == "CN");
            assert!(in_cn("beijing"), "{country} → beijing has no CN hop");
            assert!(!in_cn("singapore"), "{country} → singapore crosses CN");
            assert!(!s.hops_of(country, "singapore").is_empty());
        }
    }

    #[test]
    fn bad_hops_say_what_is_wrong() {
        for (from, to, needle) in [
            ("delay_ms = 90 }", "delay_ms = 100 }", "must lie inside"),
            (
                "delay_ms = 90 }",
                "delay_ms = 5 }",
                "more than the hop before",
            ),
            ("country = \"HK\"", "country = \"HKG\"", "alpha-2"),
            ("name = \"bjs-core\"", "name = \"bjs core\"", "name it with"),
            ("name = \"bjs-core\"", "name = \"bom-ix\"", "listed twice"),
        ] {
            assert!(HOPS.contains(from), "fixture drifted: {from}");
            let err = Scenario::parse(&HOPS.replacen(from, to, 1))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "`{err}` lacks `{needle}`");
        }
        // One name is one router: the same country on every path.
        let two = HOPS.replace(
            "[[phase]]",
            "[[datacenter]]\nname = \"sg\"\n[[path]]\ncountry = \"IN\"\ndatacenter = \"sg\"\ndelay_ms = 30\nhops = [{ name = \"bom-ix\", country = \"SG\" }]\n[[phase]]",
        );
        let err = Scenario::parse(&two).unwrap_err().to_string();
        assert!(err.contains("one name is one router"), "{err}");
    }

    #[test]
    fn inconsistent_scenarios_say_what_is_wrong() {
        let base = DEFAULT_SCENARIO;
        for (from, to, needle) in [
            ("code = \"IN\"", "code = \"IND\"", "alpha-2"),
            (
                "serve = { IN = \"singapore\",",
                "serve = { IN = \"mars\",",
                "unknown data centre mars",
            ),
            (
                "delay_ms = 125\njitter_ms = 6\nloss = 0.005",
                "delay_ms = 125\njitter_ms = 6\nloss = 1.5",
                "probability",
            ),
            ("seed = 2026", "seed = 2026\nbogus = 1", "bogus"),
        ] {
            assert!(base.contains(from), "fixture drifted: {from}");
            let err = Scenario::parse(&base.replacen(from, to, 1))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "`{err}` lacks `{needle}`");
        }
    }
}
