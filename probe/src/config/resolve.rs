//! Layers of settings resolved into one [`ProbeConfig`], under one rule:
//!
//! **A value from a higher layer wins over any value from a lower one,
//! whether it was given for one target or URL or for all of them. Layers
//! from highest: flags, the `--config` file, a campaign from the collector,
//! then the built-in defaults. Within one layer, a target's or URL's own
//! value beats the layer's value for all.** Labels, rates and request
//! headers merge key by key under the same rule; targets and URLs are the
//! union of every layer's, each name once.
//!
//! Pure: no files, no clock. Each section has a function of its own.

use super::layer::{HttpSpec, Layer, UrlSpec};
use super::{
    default_state_dir, parse_https_url, ConfigError, Display, HttpTargetConfig, Measurement,
    PhotoSizes, PhotoSyncConfig, ProbeConfig, TargetConfig, UploadConfig, HTTP_METRICS,
    PATH_METRICS, RESPONDER_METRICS,
};
use crate::schedule::Spacing;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use vantage_tls::Trust;
use vantage_wire::{Labels, Metric};

/// The first value any layer gives, highest layer first.
fn pick<T>(layers: &[&Layer], get: impl Fn(&Layer) -> Option<T>) -> Option<T> {
    layers.iter().find_map(|l| get(l))
}

/// Resolves `layers` (highest first) into the configuration the probe runs.
pub fn resolve(layers: &[&Layer]) -> Result<ProbeConfig, ConfigError> {
    let labels = resolve_labels(layers)?;
    let mut targets = resolve_targets(layers)?;
    let urls = resolve_urls(layers)?;
    let local = pick(layers, |l| l.local).unwrap_or(false);
    check_names(&targets, &urls)?;
    if targets.is_empty() && urls.is_empty() && !local {
        return Err(ConfigError::NoTarget);
    }
    let metrics = resolve_metrics(layers, !targets.is_empty() || local, !urls.is_empty())?;
    require_trust(&mut targets, &metrics)?;
    let rates = resolve_rates(layers)?;
    let fixed = pick(layers, |l| l.fixed_spacing).unwrap_or(false);
    let schedules = resolve_schedules(&metrics, &rates, fixed);
    let (timeout, window) = resolve_timing(layers)?;
    let (response_bytes, request_bytes) = resolve_sizes(layers)?;
    let state_dir = pick(layers, |l| l.state_dir.clone()).unwrap_or_else(default_state_dir);
    let upload = resolve_upload(layers, &state_dir)?;
    let sync = resolve_sync(layers, &rates)?;
    Ok(ProbeConfig {
        phases: Vec::new(),
        sync,
        upload,
        urls,
        dns_server: pick(layers, |l| l.dns_server),
        probe_id: pick(layers, |l| l.probe_id.clone()),
        campaign: pick(layers, |l| l.campaign.clone()).unwrap_or_else(|| "default".into()),
        labels,
        targets,
        local,
        schedules,
        metrics,
        timeout,
        window,
        duration: pick(layers, |l| l.duration),
        response_bytes,
        request_bytes,
        access_token: resolve_access_token(layers)?,
        seed: pick(layers, |l| l.seed),
        state_dir,
        out: pick(layers, |l| l.out.clone()),
        display: pick(layers, |l| l.display).unwrap_or(Display::Table),
    })
}

/// The access token, if a layer gives one: it must read as a token, so a
/// pasted fragment fails here rather than at every heavy request.
fn resolve_access_token(layers: &[&Layer]) -> Result<Option<String>, ConfigError> {
    let Some(token) = pick(layers, |l| l.access_token.clone()) else {
        return Ok(None);
    };
    let token = token.trim().to_string();
    vantage_tls::access::read_token(&token).map_err(ConfigError::AccessToken)?;
    Ok(Some(token))
}

/// Labels of every layer, the higher layer's value for a key winning.
pub(super) fn resolve_labels(layers: &[&Layer]) -> Result<Labels, ConfigError> {
    let mut labels = Labels::new();
    for layer in layers.iter().rev() {
        for (k, v) in &layer.labels {
            labels.insert(k, v)?;
        }
    }
    Ok(labels)
}

/// The value of one target or URL that layer `at` names: from the highest
/// layer that gives one; in the item's own layer, its own value comes
/// before that layer's value for all items.
fn item_value<'a, T>(
    layers: &[&'a Layer],
    at: usize,
    own: Option<T>,
    for_all: impl Fn(&'a Layer) -> Option<T>,
) -> Option<T> {
    let mut own = own;
    layers.iter().enumerate().find_map(|(i, l)| match i == at {
        true => own.take().or_else(|| for_all(l)),
        false => for_all(l),
    })
}

/// The one place a certificate trust is chosen, by the rule of
/// [`item_value`]: `own` is an item's own decision and the layer it is in
/// (`None` for the collector, which only layers decide). `None` when no
/// layer decides.
fn choose_trust<'a>(
    layers: &[&'a Layer],
    own: Option<(usize, &'a Trust)>,
    for_all: impl Fn(&'a Layer) -> Option<&'a Trust>,
) -> Option<Trust> {
    let (at, own) = match own {
        Some((at, t)) => (at, Some(t)),
        None => (usize::MAX, None),
    };
    item_value(layers, at, own, for_all).cloned()
}

/// A certificate trust for each data centre when a metric measured uses
/// TLS (every responder metric but STAMP's: `udp_rtt` and the one-way
/// delays), and none otherwise: a STAMP-only probe needs no `--pin`, and
/// an `--insecure` it was given is not carried, since nothing is
/// unverified.
fn require_trust(targets: &mut [TargetConfig], metrics: &[Metric]) -> Result<(), ConfigError> {
    let uses_tls = metrics
        .iter()
        .any(|m| RESPONDER_METRICS.contains(m) && Measurement::of(*m) != Some(Measurement::UdpRtt));
    for t in targets {
        if !uses_tls {
            t.trust = None;
        } else if t.trust.is_none() {
            return Err(ConfigError::NoTrust(t.name.clone()));
        }
    }
    Ok(())
}

/// Data centres of every layer, lower layers first; each with the trust
/// its layers give, if any ([`require_trust`] decides whether it needs one).
fn resolve_targets(layers: &[&Layer]) -> Result<Vec<TargetConfig>, ConfigError> {
    let stamp_default = vantage_responder::DEFAULT_STAMP_PORT;
    let mut out = Vec::new();
    for (at, layer) in layers.iter().enumerate().rev() {
        for t in &layer.targets {
            let trust = choose_trust(layers, t.trust.as_ref().map(|x| (at, x)), |l| {
                l.trust.as_ref()
            });
            let stamp_port =
                item_value(layers, at, t.stamp_port, |l| l.stamp_port).unwrap_or(stamp_default);
            out.push(TargetConfig {
                name: t.name.clone(),
                server_name: t.server_name.clone().unwrap_or_else(|| t.host.clone()),
                host: t.host.clone(),
                port: t.port,
                stamp_port,
                trust,
                shared_clock: t.shared_clock,
            });
        }
    }
    Ok(out)
}

/// One request setting of a URL from layer `at`, by the rule of [`item_value`].
fn url_setting<T>(
    layers: &[&Layer],
    at: usize,
    own: &HttpSpec,
    get: impl Fn(&HttpSpec) -> Option<T>,
) -> Option<T> {
    item_value(layers, at, get(own), |l| get(&l.http))
}

/// Request headers of a URL from `at`: every layer's, a header name of a
/// higher layer (or the URL's own, within its layer) replacing a lower's.
fn url_headers(layers: &[&Layer], at: usize, own: &HttpSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |headers: &[(String, String)]| {
        for (k, v) in headers {
            out.retain(|(have, _)| !have.eq_ignore_ascii_case(k));
            out.push((k.clone(), v.clone()));
        }
    };
    for (i, l) in layers.iter().enumerate().rev() {
        add(&l.http.headers);
        if i == at {
            add(&own.headers);
        }
    }
    out
}

fn url_target(layers: &[&Layer], at: usize, u: &UrlSpec) -> Result<HttpTargetConfig, ConfigError> {
    let (host, port, path_and_query) =
        parse_https_url(&u.url).ok_or_else(|| ConfigError::BadUrl(u.spec.clone()))?;
    if u.name.is_empty() {
        return Err(ConfigError::BadUrl(u.spec.clone()));
    }
    let t = HttpTargetConfig {
        name: u.name.clone(),
        url: u.url.clone(),
        host,
        port,
        path_and_query,
        method: url_setting(layers, at, &u.http, |h| h.method.clone())
            .unwrap_or_else(|| "GET".into()),
        headers: url_headers(layers, at, &u.http),
        body: u.body.clone(),
        expect_status: url_setting(layers, at, &u.http, |h| h.expect_status).unwrap_or(200),
        version: url_setting(layers, at, &u.http, |h| h.version).unwrap_or_default(),
        max_body_bytes: url_setting(layers, at, &u.http, |h| h.max_body_bytes).unwrap_or(16 << 20),
        trust: choose_trust(layers, u.trust.as_ref().map(|x| (at, x)), |l| {
            l.trust.as_ref()
        })
        .unwrap_or(Trust::PublicRoots),
    };
    if hyper::Method::from_bytes(t.method.as_bytes()).is_err() {
        return Err(ConfigError::BadMethod {
            url: t.name,
            method: t.method,
        });
    }
    if !(100..=599).contains(&t.expect_status) {
        return Err(ConfigError::BadStatus {
            url: t.name,
            status: t.expect_status,
        });
    }
    Ok(t)
}

/// Service URLs of every layer, lower layers first.
fn resolve_urls(layers: &[&Layer]) -> Result<Vec<HttpTargetConfig>, ConfigError> {
    let mut out = Vec::new();
    for (at, layer) in layers.iter().enumerate().rev() {
        for u in &layer.urls {
            out.push(url_target(layers, at, u)?);
        }
    }
    Ok(out)
}

fn check_names(targets: &[TargetConfig], urls: &[HttpTargetConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for name in targets
        .iter()
        .map(|t| &t.name)
        .chain(urls.iter().map(|u| &u.name))
    {
        if !names.insert(name.clone()) {
            return Err(ConfigError::DuplicateTarget(name.clone()));
        }
    }
    Ok(())
}

/// The metrics of the highest layer that lists any; else every metric of
/// what is measured.
fn resolve_metrics(
    layers: &[&Layer],
    responders: bool,
    urls: bool,
) -> Result<Vec<Metric>, ConfigError> {
    let Some(names) = pick(layers, |l| l.metrics.clone().filter(|m| !m.is_empty())) else {
        let mut m = Vec::new();
        if responders {
            m.extend(RESPONDER_METRICS);
            m.extend(PATH_METRICS);
        }
        if urls {
            m.extend(HTTP_METRICS);
            if !responders {
                m.extend(PATH_METRICS);
            }
        }
        return Ok(m);
    };
    let mut out = Vec::new();
    for n in &names {
        let m: Metric = n
            .trim()
            .parse()
            .map_err(|e: vantage_wire::ParseNameError| ConfigError::Metric(e.to_string()))?;
        if Measurement::of(m).is_none() {
            return Err(ConfigError::Metric(format!(
                "metric `{m}` is not measured by this probe yet"
            )));
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Rates of every layer, the higher layer's winning per measurement.
fn resolve_rates(layers: &[&Layer]) -> Result<BTreeMap<Measurement, f64>, ConfigError> {
    let mut rates = BTreeMap::new();
    for layer in layers.iter().rev() {
        for (k, v, spec) in &layer.rates {
            let bad = || ConfigError::BadRate(spec.clone());
            let m: Metric = k.trim().parse().map_err(|_| bad())?;
            let meas = Measurement::of(m).ok_or_else(bad)?;
            let rate: f64 = v.trim().parse().map_err(|_| bad())?;
            if !(rate > 0.0 && rate <= 1000.0) {
                return Err(bad());
            }
            rates.insert(meas, rate);
        }
    }
    Ok(rates)
}

fn resolve_schedules(
    metrics: &[Metric],
    rates: &BTreeMap<Measurement, f64>,
    fixed: bool,
) -> BTreeMap<Measurement, Spacing> {
    metrics
        .iter()
        .filter_map(|m| Measurement::of(*m))
        .map(|meas| {
            let rate = rates.get(&meas).copied().unwrap_or(meas.default_rate());
            let spacing = if fixed {
                Spacing::Fixed {
                    interval: Duration::from_secs_f64(1.0 / rate),
                }
            } else {
                Spacing::Poisson { rate_per_sec: rate }
            };
            (meas, spacing)
        })
        .collect()
}

fn out_of_range(field: &'static str, value: impl std::fmt::Debug, allowed: String) -> ConfigError {
    ConfigError::OutOfRange {
        field,
        value: format!("{value:?}"),
        allowed,
    }
}

/// Attempt timeout and aggregation window.
fn resolve_timing(layers: &[&Layer]) -> Result<(Duration, Duration), ConfigError> {
    let timeout = pick(layers, |l| l.timeout).unwrap_or(Duration::from_secs(2));
    let window = pick(layers, |l| l.window).unwrap_or(Duration::from_secs(60));
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(600) {
        return Err(out_of_range(
            "--timeout",
            timeout,
            "use 10ms to 10min".into(),
        ));
    }
    if window < Duration::from_secs(1) || window > Duration::from_secs(86_400) {
        return Err(out_of_range("--window", window, "use 1s to 24h".into()));
    }
    Ok((timeout, window))
}

/// Echo response size and request padding.
fn resolve_sizes(layers: &[&Layer]) -> Result<(u32, u32), ConfigError> {
    let max = vantage_responder::DEFAULT_MAX_RESPONSE_BYTES;
    let response_bytes = pick(layers, |l| l.response_bytes).unwrap_or(64);
    if response_bytes > max {
        return Err(out_of_range(
            "--response-bytes",
            response_bytes,
            format!("the responder sends at most {max}"),
        ));
    }
    let request_bytes = pick(layers, |l| l.request_bytes).unwrap_or(0);
    if request_bytes > 64 * 1024 {
        return Err(out_of_range(
            "--request-bytes",
            request_bytes,
            "the responder takes at most 65536".into(),
        ));
    }
    Ok((response_bytes, request_bytes))
}

/// The collectors, when a layer names them with a token.
/// The collector settings alone, with the state directory they default
/// under: what a probe that takes its campaign from the collector needs
/// before it has one.
pub(super) fn resolve_collector(
    layers: &[&Layer],
) -> Result<(Option<UploadConfig>, PathBuf), ConfigError> {
    let state_dir = pick(layers, |l| l.state_dir.clone()).unwrap_or_else(default_state_dir);
    Ok((resolve_upload(layers, &state_dir)?, state_dir))
}

fn resolve_upload(
    layers: &[&Layer],
    state_dir: &std::path::Path,
) -> Result<Option<UploadConfig>, ConfigError> {
    let (Some(addrs), Some(token)) = (
        pick(layers, |l| l.upload.collector.clone()).filter(|a| !a.is_empty()),
        pick(layers, |l| l.upload.token.clone()),
    ) else {
        return Ok(None);
    };
    if token.len() > vantage_wire::upload::MAX_TOKEN_LEN {
        return Err(ConfigError::OutOfRange {
            field: "--token",
            value: format!("of {} bytes", token.len()),
            allowed: format!(
                "a token has at most {} bytes",
                vantage_wire::upload::MAX_TOKEN_LEN
            ),
        });
    }
    let trust = choose_trust(layers, None, |l| l.upload.trust.as_ref())
        .ok_or(ConfigError::NoCollectorTrust)?;
    let mut targets = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let (host, port) = super::split_host_port(&addr)
            .ok_or_else(|| ConfigError::BadTarget(format!("collector={addr}")))?;
        targets.push(crate::upload::CollectorTarget {
            server_name: host.clone(),
            host,
            port,
            trust: trust.clone(),
            token: token.clone(),
        });
    }
    Ok(Some(UploadConfig {
        targets,
        spool_dir: pick(layers, |l| l.upload.spool_dir.clone())
            .unwrap_or_else(|| state_dir.join("spool")),
        spool_max_bytes: pick(layers, |l| l.upload.spool_max_bytes).unwrap_or(64 << 20),
    }))
}

/// Photo-sync batches.
fn resolve_sync(
    layers: &[&Layer],
    rates: &BTreeMap<Measurement, f64>,
) -> Result<PhotoSyncConfig, ConfigError> {
    let d = PhotoSyncConfig::default();
    let every = pick(layers, |l| l.sync.every).unwrap_or(d.every);
    let photos = pick(layers, |l| l.sync.photos).unwrap_or(d.photos);
    let concurrency = pick(layers, |l| l.sync.concurrency).unwrap_or(d.concurrency);
    let median = pick(layers, |l| l.sync.photo_bytes);
    let sigma = pick(layers, |l| l.sync.size_sigma);
    let sizes = match (median, sigma) {
        (None, None) => d.sizes,
        (m, s) => {
            let m = m.unwrap_or(d.sizes.median_bytes);
            let s = s.unwrap_or(d.sizes.sigma);
            PhotoSizes {
                median_bytes: m,
                sigma: s,
                min_bytes: if s == 0.0 { m } else { (m / 8).max(1) },
                max_bytes: if s == 0.0 { m } else { m.saturating_mul(5) },
            }
        }
    };
    let timeout = pick(layers, |l| l.sync.timeout).unwrap_or(d.timeout.min(every));
    if every < Duration::from_secs(1) {
        return Err(out_of_range("--sync-every", every, "use 1s or more".into()));
    }
    if timeout > every || timeout < Duration::from_millis(100) {
        return Err(out_of_range(
            "--sync-timeout",
            timeout,
            format!(
                "use 100ms to --sync-every ({every:?}), so one batch ends before the next is due"
            ),
        ));
    }
    if !(1..=1000).contains(&photos) {
        return Err(out_of_range(
            "--sync-photos",
            photos,
            "use 1 to 1000".into(),
        ));
    }
    if !(1..=64).contains(&concurrency) {
        return Err(out_of_range(
            "--sync-concurrency",
            concurrency,
            "use 1 to 64 in flight".into(),
        ));
    }
    if sizes.median_bytes == 0 || sizes.max_bytes > 256 * 1024 * 1024 {
        return Err(out_of_range(
            "--sync-photo-bytes",
            sizes.median_bytes,
            "photos must be 1 byte to 256 MiB (the responder's limit)".into(),
        ));
    }
    if !(0.0..=3.0).contains(&sizes.sigma) {
        return Err(out_of_range(
            "--sync-size-sigma",
            sizes.sigma,
            "use 0 to 3".into(),
        ));
    }
    Ok(PhotoSyncConfig {
        every,
        photos,
        concurrency,
        sizes,
        direction: pick(layers, |l| l.sync.direction).unwrap_or(d.direction),
        transport: pick(layers, |l| l.sync.transport).unwrap_or(d.transport),
        timeout,
        loaded_rtt_rate: rates
            .get(&Measurement::PhotoSync)
            .copied()
            .unwrap_or(d.loaded_rtt_rate),
    })
}

#[cfg(test)]
mod tests {
    use super::super::layer::{Layer, UploadSpec, UrlSpec};
    use super::super::{Display, HttpVersion, Measurement, SyncDirection, SyncTransport};
    use super::*;

    /// What every case starts from: one URL (so there is something to
    /// measure) and a collector with its token and trust, in the lower layer.
    fn base() -> (Layer, Layer) {
        let file = Layer {
            urls: vec![UrlSpec {
                name: "api".into(),
                url: "https://api.test/ping".into(),
                spec: "api=https://api.test/ping".into(),
                http: HttpSpec::default(),
                body: None,
                trust: None,
            }],
            upload: UploadSpec {
                collector: Some(vec!["base.test:1".into()]),
                token: Some("token".into()),
                trust: Some(Trust::Insecure),
                ..Default::default()
            },
            ..Layer::default()
        };
        (Layer::default(), file)
    }

    #[test]
    fn an_access_token_that_is_not_one_is_refused_with_what_to_do() {
        let (flags, mut file) = base();
        file.access_token = Some("vt1.in-1.12".into());
        let err = resolve(&[&flags, &file]).unwrap_err().to_string();
        assert!(
            err.contains("--access-token") && err.contains("vantage access issue"),
            "{err}"
        );
    }

    #[test]
    fn a_token_longer_than_the_wire_carries_is_refused() {
        let (flags, mut file) = base();
        file.upload.token = Some("t".repeat(vantage_wire::upload::MAX_TOKEN_LEN + 1));
        let err = resolve(&[&flags, &file]).unwrap_err().to_string();
        assert!(
            err.contains("--token") && err.contains("at most 128 bytes"),
            "{err}"
        );
        file.upload.token = Some("t".repeat(vantage_wire::upload::MAX_TOKEN_LEN));
        assert!(resolve(&[&flags, &file]).is_ok());
    }

    /// How a layer sets a field: `true` with the higher layer's value,
    /// `false` with the lower's.
    type Set = fn(&mut Layer, bool);
    /// The field as the resolved configuration shows it.
    type Get = fn(&ProbeConfig) -> String;

    fn s(hi: bool, a: &str, b: &str) -> String {
        if hi { a } else { b }.to_string()
    }
    fn secs(hi: bool, a: u64, b: u64) -> Duration {
        Duration::from_secs(if hi { a } else { b })
    }

    /// Every field: how to set it, how to read it, and what it reads with
    /// neither layer set, with the lower layer's value, with the higher's.
    #[rustfmt::skip]
    fn fields() -> Vec<(&'static str, Set, Get, [&'static str; 3])> {
        vec![
            ("probe_id", |l, h| l.probe_id = Some(s(h, "hi", "lo")), |c| format!("{:?}", c.probe_id), ["None", "Some(\"lo\")", "Some(\"hi\")"]),
            ("campaign", |l, h| l.campaign = Some(s(h, "hi", "lo")), |c| c.campaign.clone(), ["default", "lo", "hi"]),
            ("labels", |l, h| l.labels.push(("phase".into(), s(h, "after", "before"))), |c| c.labels.get("phase").unwrap_or("-").into(), ["-", "before", "after"]),
            ("trust: for all above, the URL's own below", |l, h| if h { l.trust = Some(Trust::Insecure) } else { l.urls[0].trust = Some(Trust::CaFile("ca.pem".into())) }, |c| format!("{:?}", c.urls[0].trust), ["PublicRoots", "CaFile(\"ca.pem\")", "Insecure"]),
            ("method: for all above, the URL's own below", |l, h| if h { l.http.method = Some("HEAD".into()) } else { l.urls[0].http.method = Some("POST".into()) }, |c| c.urls[0].method.clone(), ["GET", "POST", "HEAD"]),
            ("expect_status", |l, h| l.http.expect_status = Some(if h { 204 } else { 202 }), |c| c.urls[0].expect_status.to_string(), ["200", "202", "204"]),
            ("http version", |l, h| l.http.version = Some(if h { HttpVersion::Http2 } else { HttpVersion::Http1 }), |c| format!("{:?}", c.urls[0].version), ["Auto", "Http1", "Http2"]),
            ("max_body_bytes", |l, h| l.http.max_body_bytes = Some(if h { 2 } else { 1 }), |c| c.urls[0].max_body_bytes.to_string(), ["16777216", "1", "2"]),
            ("http headers", |l, h| l.http.headers.push(("x-side".into(), s(h, "hi", "lo"))), |c| format!("{:?}", c.urls[0].headers), ["[]", "[(\"x-side\", \"lo\")]", "[(\"x-side\", \"hi\")]"]),
            ("dns_server", |l, h| l.dns_server = Some(s(h, "127.0.0.2:53", "127.0.0.1:53").parse().unwrap()), |c| format!("{:?}", c.dns_server), ["None", "Some(127.0.0.1:53)", "Some(127.0.0.2:53)"]),
            ("local", |l, h| l.local = Some(!h), |c| c.local.to_string(), ["false", "true", "false"]),
            ("metrics", |l, h| l.metrics = Some(vec![s(h, "http_total", "http_dns")]), |c| c.metrics.iter().map(|m| m.name()).collect::<Vec<_>>().join(","), ["http_dns,http_connect,http_tls,http_ttfb,http_transfer,http_total,http_warm_ttfb,http_warm_transfer,http_warm_total,path_trace", "http_dns", "http_total"]),
            ("rates", |l, h| l.rates.push(("http_total".into(), s(h, "3", "2"), String::new())), |c| c.schedules[&Measurement::HttpCold].rate_per_sec().to_string(), ["0.2", "2", "3"]),
            ("spacing", |l, h| l.fixed_spacing = Some(!h), |c| matches!(c.schedules[&Measurement::HttpWarm], Spacing::Fixed { .. }).to_string(), ["false", "true", "false"]),
            ("timeout", |l, h| l.timeout = Some(secs(h, 4, 3)), |c| format!("{:?}", c.timeout), ["2s", "3s", "4s"]),
            ("window", |l, h| l.window = Some(secs(h, 20, 10)), |c| format!("{:?}", c.window), ["60s", "10s", "20s"]),
            ("duration", |l, h| l.duration = Some(secs(h, 20, 10)), |c| format!("{:?}", c.duration), ["None", "Some(10s)", "Some(20s)"]),
            ("response_bytes", |l, h| l.response_bytes = Some(if h { 200 } else { 100 }), |c| c.response_bytes.to_string(), ["64", "100", "200"]),
            ("request_bytes", |l, h| l.request_bytes = Some(if h { 20 } else { 10 }), |c| c.request_bytes.to_string(), ["0", "10", "20"]),
            ("access_token", |l, h| l.access_token = Some(format!("vt1.{}.1.{}", s(h, "hi", "lo"), "0".repeat(128))), |c| c.access_token.as_deref().and_then(|t| t.get(4..6)).unwrap_or("None").into(), ["None", "lo", "hi"]),
            ("seed", |l, h| l.seed = Some(if h { 2 } else { 1 }), |c| format!("{:?}", c.seed), ["None", "Some(1)", "Some(2)"]),
            ("state_dir", |l, h| l.state_dir = Some(s(h, "/hi", "/lo").into()), |c| c.state_dir.display().to_string(), ["<default>", "/lo", "/hi"]),
            ("out", |l, h| l.out = Some(s(h, "hi", "lo").into()), |c| format!("{:?}", c.out), ["None", "Some(\"lo\")", "Some(\"hi\")"]),
            ("display", |l, h| l.display = Some(if h { Display::Json } else { Display::Quiet }), |c| format!("{:?}", c.display), ["Table", "Quiet", "Json"]),
            ("collector", |l, h| l.upload.collector = Some(vec![s(h, "hi.test:2", "lo.test:3"), "spare.test:4".into()]), |c| c.upload.as_ref().map(|u| u.targets.iter().map(|t| vantage_wire::host_port(&t.host, t.port)).collect::<Vec<_>>().join(",")).unwrap_or_default(), ["base.test:1", "lo.test:3,spare.test:4", "hi.test:2,spare.test:4"]),
            ("token", |l, h| l.upload.token = Some(s(h, "hi", "lo")), |c| c.upload.as_ref().map(|u| u.targets[0].token.clone()).unwrap_or_default(), ["token", "lo", "hi"]),
            ("collector trust", |l, h| l.upload.trust = Some(Trust::CaFile(s(h, "hi.pem", "lo.pem").into())), |c| c.upload.as_ref().map(|u| format!("{:?}", u.targets[0].trust)).unwrap_or_default(), ["Insecure", "CaFile(\"lo.pem\")", "CaFile(\"hi.pem\")"]),
            ("spool_dir", |l, h| l.upload.spool_dir = Some(s(h, "/hi", "/lo").into()), |c| c.upload.as_ref().map(|u| u.spool_dir.display().to_string()).unwrap_or_default(), ["<default>/spool", "/lo", "/hi"]),
            ("spool_max_bytes", |l, h| l.upload.spool_max_bytes = Some(if h { 2 } else { 1 }), |c| c.upload.as_ref().map(|u| u.spool_max_bytes.to_string()).unwrap_or_default(), ["67108864", "1", "2"]),
            ("sync every", |l, h| l.sync.every = Some(secs(h, 600, 400)), |c| format!("{:?}", c.sync.every), ["300s", "400s", "600s"]),
            ("sync photos", |l, h| l.sync.photos = Some(if h { 2 } else { 1 }), |c| c.sync.photos.to_string(), ["10", "1", "2"]),
            ("sync concurrency", |l, h| l.sync.concurrency = Some(if h { 2 } else { 1 }), |c| c.sync.concurrency.to_string(), ["3", "1", "2"]),
            ("sync photo_bytes", |l, h| l.sync.photo_bytes = Some(if h { 2000 } else { 1000 }), |c| c.sync.sizes.median_bytes.to_string(), ["3000000", "1000", "2000"]),
            ("sync size_sigma", |l, h| l.sync.size_sigma = Some(if h { 0.2 } else { 0.1 }), |c| c.sync.sizes.sigma.to_string(), ["0.3", "0.1", "0.2"]),
            ("sync direction", |l, h| l.sync.direction = Some(if h { SyncDirection::Both } else { SyncDirection::Download }), |c| format!("{:?}", c.sync.direction), ["Upload", "Download", "Both"]),
            ("sync transport", |l, h| l.sync.transport = Some(if h { SyncTransport::Quic } else { SyncTransport::Https }), |c| format!("{:?}", c.sync.transport), ["Quic", "Https", "Quic"]),
            ("sync timeout", |l, h| l.sync.timeout = Some(secs(h, 20, 10)), |c| format!("{:?}", c.sync.timeout), ["120s", "10s", "20s"]),
        ]
    }

    #[test]
    fn a_higher_layer_wins_for_every_field_and_each_layer_alone_is_taken() {
        let state = super::super::default_state_dir().display().to_string();
        for (field, set, get, [default, lo, hi]) in fields() {
            for (flags_set, file_set) in
                [(false, false), (false, true), (true, false), (true, true)]
            {
                let (mut flags, mut file) = base();
                if flags_set {
                    set(&mut flags, true);
                }
                if file_set {
                    set(&mut file, false);
                }
                let config = resolve(&[&flags, &file])
                    .unwrap_or_else(|e| panic!("{field} ({flags_set}, {file_set}): {e}"));
                let want = match (flags_set, file_set) {
                    (true, _) => hi,
                    (false, true) => lo,
                    (false, false) => default,
                };
                assert_eq!(
                    get(&config),
                    want.replace("<default>", &state),
                    "{field}: flags set {flags_set}, file set {file_set}"
                );
            }
        }
    }

    #[test]
    fn headers_merge_by_name_with_the_higher_layer_winning() {
        let (mut flags, mut file) = base();
        file.http.headers = vec![("x-a".into(), "file".into()), ("x-b".into(), "file".into())];
        file.urls[0].http.headers = vec![("x-a".into(), "url".into())];
        flags.http.headers = vec![("X-B".into(), "flag".into())];
        let c = resolve(&[&flags, &file]).unwrap();
        assert_eq!(
            c.urls[0].headers,
            [
                ("x-a".to_string(), "url".to_string()),
                ("X-B".to_string(), "flag".to_string())
            ]
        );
    }
}
