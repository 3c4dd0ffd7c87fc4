//! Which country and which network (AS) an address belongs to, from
//! datasets the user supplies: CSV ranges (`start,end,country` or
//! `start,end,asn,name`, as the free IP-to-country and IP-to-ASN files
//! are laid out) and the regional registries' delegated-stats files.
//! None ships with Vantage; an address no dataset holds is unknown, never
//! guessed.

use crate::error::{data_lines, read_text, GeoError};
use crate::range::{IpRange, Overlap, RangeMap};
use crate::sites::country_code;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// A network: its AS number and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The AS number.
    pub asn: u32,
    /// Its holder's name, as the dataset gives it.
    pub name: String,
}

/// Addresses to countries and networks.
#[derive(Debug, Default)]
pub struct HopDatasets {
    countries: RangeMap<String>,
    networks: RangeMap<Network>,
}

fn parse_err(file: &Path, line: u64, reason: impl Into<String>) -> GeoError {
    GeoError::Parse {
        file: file.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// An address as a dataset writes it: dotted or colon form, or an IPv4
/// address as one integer (as some IP-to-country files do).
fn address(file: &Path, line: u64, text: &str) -> Result<IpAddr, GeoError> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(ip);
    }
    match t.parse::<u32>() {
        Ok(n) => Ok(IpAddr::V4(Ipv4Addr::from(n))),
        Err(_) => Err(parse_err(
            file,
            line,
            format!("`{t}` is not an address (203.0.113.7, 2001:db8::1, or an IPv4 address as an integer)"),
        )),
    }
}

/// A file and line.
type Where = (PathBuf, u64);

/// What one dataset file holds.
enum Entries {
    Countries(Vec<(IpRange, String, Where)>),
    Networks(Vec<(IpRange, Network, Where)>),
}

impl HopDatasets {
    /// Reads dataset files: CSV of `start,end,country` or
    /// `start,end,asn,name` (told apart by their column count, a header
    /// line allowed), or a registry's delegated-stats file
    /// (`registry|cc|type|start|value|date|status`). Ranges of one kind
    /// may not overlap; the error names both.
    pub fn load(files: &[PathBuf]) -> Result<HopDatasets, GeoError> {
        let mut countries = Vec::new();
        let mut networks = Vec::new();
        for file in files {
            let text = read_text(file)?;
            match parse_file(file, &text)? {
                Entries::Countries(c) => countries.extend(c),
                Entries::Networks(n) => networks.extend(n),
            }
        }
        let overlap = |((r1, w1), (r2, w2)): Overlap<Where>| GeoError::Overlap {
            first: (r1.to_string(), w1.0, w1.1),
            second: (r2.to_string(), w2.0, w2.1),
        };
        Ok(HopDatasets {
            countries: RangeMap::build(countries).map_err(overlap)?,
            networks: RangeMap::build(networks).map_err(overlap)?,
        })
    }

    /// The country `ip` is in, when a dataset says.
    pub fn country_of(&self, ip: IpAddr) -> Option<&str> {
        self.countries.get(ip).map(String::as_str)
    }

    /// Whether no dataset was given (or they hold no range).
    pub fn is_empty(&self) -> bool {
        self.countries.len() == 0 && self.networks.len() == 0
    }

    /// The network `ip` belongs to, when a dataset says.
    pub fn network_of(&self, ip: IpAddr) -> Option<&Network> {
        self.networks.get(ip)
    }
}

fn parse_file(file: &Path, text: &str) -> Result<Entries, GeoError> {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if first.contains('|') {
        return delegated(file, text).map(Entries::Countries);
    }
    let mut countries = Vec::new();
    let mut networks = Vec::new();
    for (line, l) in data_lines(text) {
        let cols: Vec<&str> = split_csv(l);
        // A header: its first column is not an address.
        if line_is_header(&cols) {
            continue;
        }
        let (start, end) = (
            address(file, line, cols[0])?,
            address(file, line, cols.get(1).copied().unwrap_or(""))?,
        );
        let range = IpRange::new(start, end).ok_or_else(|| {
            parse_err(
                file,
                line,
                format!("{start} to {end} is not a range (same family, first ≤ last)"),
            )
        })?;
        let at = (file.to_path_buf(), line);
        match cols.len() {
            3 => {
                if let Some(cc) = country_code(file, line, cols[2])? {
                    countries.push((range, cc, at));
                }
            }
            4.. => {
                let asn_text = cols[2]
                    .trim()
                    .trim_start_matches("AS")
                    .trim_start_matches("as");
                let asn: u32 = asn_text.parse().map_err(|_| {
                    parse_err(
                        file,
                        line,
                        format!("`{}` is not an AS number (13335 or AS13335)", cols[2]),
                    )
                })?;
                // AS 0: not routed; nothing to say of the range.
                if asn != 0 {
                    let name = cols[3..].join(",").trim().trim_matches('"').to_string();
                    networks.push((range, Network { asn, name }, at));
                }
            }
            _ => {
                return Err(parse_err(
                    file,
                    line,
                    "expected `start,end,country` or `start,end,asn,name`",
                ))
            }
        }
    }
    match (countries.is_empty(), networks.is_empty()) {
        (_, true) => Ok(Entries::Countries(countries)),
        (true, false) => Ok(Entries::Networks(networks)),
        (false, false) => Err(GeoError::Format {
            file: file.to_path_buf(),
            reason: "mixes country rows (3 columns) and network rows (4); give each its own file"
                .into(),
        }),
    }
}

/// Fields of a CSV line, a quoted last field allowed to hold commas.
fn split_csv(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(',') {
        if rest.trim_start().starts_with('"') {
            break;
        }
        out.push(rest[..at].trim());
        rest = &rest[at + 1..];
    }
    out.push(rest.trim());
    out
}

fn line_is_header(cols: &[&str]) -> bool {
    let first = cols.first().copied().unwrap_or("").trim();
    first.parse::<IpAddr>().is_err()
        && first.parse::<u32>().is_err()
        && first.chars().any(|c| c.is_ascii_alphabetic())
}

/// A delegated-stats file: `registry|cc|type|start|value|date|status`,
/// IPv4 `value` a count of addresses, IPv6 `value` a prefix length; the
/// version line and the summary lines (`*` country) are skipped, and so
/// are entries neither allocated nor assigned.
fn delegated(file: &Path, text: &str) -> Result<Vec<(IpRange, String, Where)>, GeoError> {
    let mut out = Vec::new();
    for (line, l) in data_lines(text) {
        let f: Vec<&str> = l.split('|').collect();
        if f.len() < 7 || f[1] == "*" || f[5] == "summary" || f.last() == Some(&"summary") {
            continue; // the version line or a summary
        }
        if !matches!(f[6], "allocated" | "assigned") {
            continue;
        }
        let value: u64 = f[4]
            .parse()
            .map_err(|_| parse_err(file, line, format!("value `{}` is not a number", f[4])))?;
        let range = match f[2] {
            "ipv4" => {
                let start: Ipv4Addr = f[3].parse().map_err(|_| {
                    parse_err(file, line, format!("`{}` is not an IPv4 address", f[3]))
                })?;
                let last = u64::from(u32::from(start)) + value.max(1) - 1;
                let last = u32::try_from(last).map_err(|_| {
                    parse_err(
                        file,
                        line,
                        format!("{start} + {value} addresses runs past 255.255.255.255"),
                    )
                })?;
                IpRange::new(start.into(), Ipv4Addr::from(last).into())
            }
            "ipv6" => {
                let start: Ipv6Addr = f[3].parse().map_err(|_| {
                    parse_err(file, line, format!("`{}` is not an IPv6 address", f[3]))
                })?;
                IpRange::parse_cidr(&format!("{start}/{value}"))
            }
            _ => continue, // asn lines
        };
        let range = range.ok_or_else(|| parse_err(file, line, "not a valid range"))?;
        if let Some(cc) = country_code(file, line, f[1])? {
            out.push((range, cc, (file.to_path_buf(), line)));
        }
    }
    Ok(out)
}
