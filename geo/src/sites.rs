//! The site map: which data centre (site) an address belongs to, with its
//! provider, region and country. From the user's own CSV, and from the IP
//! range files cloud providers publish (AWS `ip-ranges.json`, Google Cloud
//! `cloud.json`, Azure Service Tags), which users download themselves.

use crate::error::{data_lines, read_text, GeoError};
use crate::range::{IpRange, RangeMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an address is served from.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The data centre's name (`singapore`, or a provider's region).
    pub name: String,
    /// Who runs it (`aws`, `gcp`, `azure`, or as the user wrote).
    pub provider: String,
    /// The provider's region (`ap-southeast-1`).
    pub region: String,
    /// ISO 3166-1 alpha-2, when known; `None` is unknown, never a guess.
    pub country: Option<String>,
    /// Latitude and longitude in degrees, when the site map gives them.
    pub coords: Option<(f64, f64)>,
}

/// Sites by address: the user's entries first, then the providers'.
#[derive(Debug, Default)]
pub struct SiteMap {
    own: RangeMap<Arc<Site>>,
    providers: RangeMap<Arc<Site>>,
}

impl SiteMap {
    /// Reads site-map files: CSV (`cidr,site,provider,region,country`,
    /// optionally `latitude,longitude`), or a provider's JSON (told apart
    /// by its content). The user's ranges may not overlap each other; a
    /// provider's may nest (the narrowest wins), and the user's win over
    /// any provider's.
    pub fn load(files: &[PathBuf]) -> Result<SiteMap, GeoError> {
        let mut own = Vec::new();
        let mut providers = Vec::new();
        for file in files {
            let text = read_text(file)?;
            if text.trim_start().starts_with('{') {
                providers.extend(provider_ranges(file, &text)?);
            } else {
                own.extend(csv_ranges(file, &text)?);
            }
        }
        let own = RangeMap::build(own).map_err(|((r1, w1), (r2, w2))| GeoError::Overlap {
            first: (r1.to_string(), w1.0, w1.1),
            second: (r2.to_string(), w2.0, w2.1),
        })?;
        Ok(SiteMap {
            own,
            providers: RangeMap::most_specific(providers),
        })
    }

    /// The site `ip` belongs to.
    pub fn site_of(&self, ip: IpAddr) -> Option<&Site> {
        self.own
            .get(ip)
            .or_else(|| self.providers.get(ip))
            .map(|s| s.as_ref())
    }

    /// How many ranges it holds.
    pub fn len(&self) -> usize {
        self.own.len() + self.providers.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Sourced = (IpRange, Arc<Site>, (PathBuf, u64));

fn parse_err(file: &Path, line: u64, reason: impl Into<String>) -> GeoError {
    GeoError::Parse {
        file: file.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// An ISO 3166-1 alpha-2 code, upper case; empty or `unknown` is `None`.
pub(crate) fn country_code(file: &Path, line: u64, text: &str) -> Result<Option<String>, GeoError> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("unknown") || t == "-" || t == "ZZ" {
        return Ok(None);
    }
    let up = t.to_ascii_uppercase();
    if up.len() == 2 && up.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(Some(up))
    } else {
        Err(parse_err(
            file,
            line,
            format!("country `{t}` is not an ISO 3166-1 alpha-2 code (or empty for unknown)"),
        ))
    }
}

/// One CSV line's fields (quotes allowed).
fn csv_fields(file: &Path, line: u64, text: &str) -> Result<csv::StringRecord, GeoError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    match reader.records().next() {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(parse_err(file, line, e.to_string())),
        None => Ok(csv::StringRecord::new()),
    }
}

fn csv_ranges(file: &Path, text: &str) -> Result<Vec<Sourced>, GeoError> {
    let expected = ["cidr", "site", "provider", "region", "country"];
    let mut out = Vec::new();
    let mut header_seen = false;
    for (line, l) in data_lines(text) {
        let record = csv_fields(file, line, l)?;
        if !header_seen {
            let names: Vec<&str> = record.iter().collect();
            if names.len() < 5 || names[..5] != expected {
                return Err(parse_err(
                    file,
                    line,
                    format!(
                        "the header must be `cidr,site,provider,region,country` (optionally `,latitude,longitude`), not `{}`",
                        names.join(",")
                    ),
                ));
            }
            header_seen = true;
            continue;
        }
        let field = |i: usize| record.get(i).unwrap_or("");
        let range = IpRange::parse_cidr(field(0)).ok_or_else(|| {
            parse_err(
                file,
                line,
                format!(
                    "`{}` is not a CIDR range (203.0.113.0/24, 2001:db8::/32)",
                    field(0)
                ),
            )
        })?;
        if field(1).is_empty() {
            return Err(parse_err(file, line, "the site name is empty"));
        }
        let coords = match (field(5), field(6)) {
            ("", "") => None,
            (lat, lon) => {
                let (lat, lon) = (lat.parse::<f64>(), lon.parse::<f64>());
                match (lat, lon) {
                    (Ok(lat), Ok(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {
                        Some((lat, lon))
                    }
                    _ => {
                        return Err(parse_err(
                            file,
                            line,
                            "latitude and longitude are degrees: -90 to 90, -180 to 180 (or leave both empty)",
                        ))
                    }
                }
            }
        };
        let site = Site {
            name: field(1).to_string(),
            provider: field(2).to_string(),
            region: field(3).to_string(),
            country: country_code(file, line, field(4))?,
            coords,
        };
        out.push((range, Arc::new(site), (file.to_path_buf(), line)));
    }
    Ok(out)
}

/// The line of the first occurrence of `needle` in `text`, for an error
/// about an entry of a JSON file.
fn line_of(text: &str, needle: &str) -> u64 {
    text.find(needle)
        .map_or(0, |at| text[..at].matches('\n').count() as u64 + 1)
}

fn provider_ranges(file: &Path, text: &str) -> Result<Vec<(IpRange, Arc<Site>)>, GeoError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| parse_err(file, e.line() as u64, format!("not valid JSON: {e}")))?;
    let (provider, entries): (&str, Vec<(String, String)>) = if json.get("syncToken").is_some()
        && json.get("createDate").is_some()
    {
        ("aws", aws_entries(&json))
    } else if json.get("syncToken").is_some() && json.get("creationTime").is_some() {
        ("gcp", gcp_entries(&json))
    } else if json.get("values").is_some() && json.get("cloud").is_some() {
        ("azure", azure_entries(&json))
    } else {
        return Err(GeoError::Format {
            file: file.to_path_buf(),
            reason: "a JSON site map must be AWS's ip-ranges.json (syncToken, createDate), Google Cloud's cloud.json (syncToken, creationTime) or Azure's Service Tags (cloud, values); your own sites go in a CSV".into(),
        });
    };
    let mut sites: std::collections::HashMap<String, Arc<Site>> = Default::default();
    let mut out = Vec::new();
    for (prefix, region) in entries {
        let range = IpRange::parse_cidr(&prefix).ok_or_else(|| {
            parse_err(
                file,
                line_of(text, &format!("\"{prefix}\"")),
                format!("`{prefix}` is not a CIDR range"),
            )
        })?;
        let site = sites
            .entry(region.clone())
            .or_insert_with(|| {
                Arc::new(Site {
                    name: region.clone(),
                    provider: provider.to_string(),
                    country: region_country(provider, &region).map(String::from),
                    region,
                    coords: None,
                })
            })
            .clone();
        out.push((range, site));
    }
    Ok(out)
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// The items of `v`'s array `key`; none when it is missing or no array.
fn items<'a>(v: &'a serde_json::Value, key: &str) -> impl Iterator<Item = &'a serde_json::Value> {
    v.get(key).and_then(|l| l.as_array()).into_iter().flatten()
}

/// AWS: `prefixes[].ip_prefix` and `ipv6_prefixes[].ipv6_prefix`, each
/// with its `region` (`GLOBAL` for edge networks).
fn aws_entries(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (list, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
        for p in items(json, list) {
            if let (Some(prefix), Some(region)) = (str_of(p, key), str_of(p, "region")) {
                out.push((prefix.to_string(), region.to_string()));
            }
        }
    }
    out
}

/// Google Cloud: `prefixes[]` with `ipv4Prefix` or `ipv6Prefix`, and
/// `scope` (the region).
fn gcp_entries(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in items(json, "prefixes") {
        let prefix = str_of(p, "ipv4Prefix").or_else(|| str_of(p, "ipv6Prefix"));
        if let (Some(prefix), Some(scope)) = (prefix, str_of(p, "scope")) {
            out.push((prefix.to_string(), scope.to_string()));
        }
    }
    out
}

/// Azure Service Tags: `values[]` whose `properties.region` is set, with
/// their `properties.addressPrefixes` (regionless tags span regions and
/// say nothing of a site).
fn azure_entries(json: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in items(json, "values") {
        let Some(props) = v.get("properties") else {
            continue;
        };
        let Some(region) = str_of(props, "region").filter(|r| !r.is_empty()) else {
            continue;
        };
        for p in items(props, "addressPrefixes").filter_map(|p| p.as_str()) {
            out.push((p.to_string(), region.to_string()));
        }
    }
    out
}

/// The country of a provider's region, for the regions named here; any
/// other is unknown (never guessed from its name).
pub fn region_country(provider: &str, region: &str) -> Option<&'static str> {
    #[rustfmt::skip]
    const AWS: &[(&str, &str)] = &[
        ("us-east-1", "US"), ("us-east-2", "US"), ("us-west-1", "US"), ("us-west-2", "US"),
        ("us-gov-east-1", "US"), ("us-gov-west-1", "US"), ("ca-central-1", "CA"),
        ("ca-west-1", "CA"), ("mx-central-1", "MX"), ("sa-east-1", "BR"),
        ("eu-west-1", "IE"), ("eu-west-2", "GB"), ("eu-west-3", "FR"),
        ("eu-central-1", "DE"), ("eu-central-2", "CH"), ("eu-north-1", "SE"),
        ("eu-south-1", "IT"), ("eu-south-2", "ES"), ("ap-east-1", "HK"),
        ("ap-south-1", "IN"), ("ap-south-2", "IN"), ("ap-southeast-1", "SG"),
        ("ap-southeast-2", "AU"), ("ap-southeast-3", "ID"), ("ap-southeast-4", "AU"),
        ("ap-southeast-5", "MY"), ("ap-southeast-7", "TH"), ("ap-northeast-1", "JP"),
        ("ap-northeast-2", "KR"), ("ap-northeast-3", "JP"), ("me-south-1", "BH"),
        ("me-central-1", "AE"), ("il-central-1", "IL"), ("af-south-1", "ZA"),
        ("cn-north-1", "CN"), ("cn-northwest-1", "CN"),
    ];
    #[rustfmt::skip]
    const GCP: &[(&str, &str)] = &[
        ("asia-east1", "TW"), ("asia-east2", "HK"), ("asia-northeast1", "JP"),
        ("asia-northeast2", "JP"), ("asia-northeast3", "KR"), ("asia-south1", "IN"),
        ("asia-south2", "IN"), ("asia-southeast1", "SG"), ("asia-southeast2", "ID"),
        ("australia-southeast1", "AU"), ("australia-southeast2", "AU"),
        ("europe-central2", "PL"), ("europe-north1", "FI"), ("europe-west1", "BE"),
        ("europe-west2", "GB"), ("europe-west3", "DE"), ("europe-west4", "NL"),
        ("europe-west6", "CH"), ("europe-west8", "IT"), ("europe-west9", "FR"),
        ("europe-southwest1", "ES"), ("me-west1", "IL"), ("me-central1", "QA"),
        ("northamerica-northeast1", "CA"), ("northamerica-northeast2", "CA"),
        ("southamerica-east1", "BR"), ("southamerica-west1", "CL"), ("us-central1", "US"),
        ("us-east1", "US"), ("us-east4", "US"), ("us-east5", "US"), ("us-south1", "US"),
        ("us-west1", "US"), ("us-west2", "US"), ("us-west3", "US"), ("us-west4", "US"),
        ("africa-south1", "ZA"),
    ];
    #[rustfmt::skip]
    const AZURE: &[(&str, &str)] = &[
        ("eastus", "US"), ("eastus2", "US"), ("westus", "US"), ("westus2", "US"),
        ("westus3", "US"), ("centralus", "US"), ("northcentralus", "US"),
        ("southcentralus", "US"), ("westcentralus", "US"), ("canadacentral", "CA"),
        ("canadaeast", "CA"), ("brazilsouth", "BR"), ("northeurope", "IE"),
        ("westeurope", "NL"), ("uksouth", "GB"), ("ukwest", "GB"), ("francecentral", "FR"),
        ("germanywestcentral", "DE"), ("switzerlandnorth", "CH"), ("norwayeast", "NO"),
        ("swedencentral", "SE"), ("polandcentral", "PL"), ("italynorth", "IT"),
        ("eastasia", "HK"), ("southeastasia", "SG"), ("japaneast", "JP"),
        ("japanwest", "JP"), ("koreacentral", "KR"), ("koreasouth", "KR"),
        ("centralindia", "IN"), ("southindia", "IN"), ("westindia", "IN"),
        ("australiaeast", "AU"), ("australiasoutheast", "AU"), ("uaenorth", "AE"),
        ("southafricanorth", "ZA"), ("qatarcentral", "QA"), ("israelcentral", "IL"),
        ("malaysiawest", "MY"), ("indonesiacentral", "ID"), ("chinaeast", "CN"),
        ("chinaeast2", "CN"), ("chinanorth", "CN"), ("chinanorth2", "CN"),
        ("chinanorth3", "CN"),
    ];
    let table = match provider {
        "aws" => AWS,
        "gcp" => GCP,
        "azure" => AZURE,
        _ => return None,
    };
    table.iter().find(|(r, _)| *r == region).map(|(_, c)| *c)
}
