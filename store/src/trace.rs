//! Stored path traces: a batch's [`PathTrace`]s with its identity and
//! labels, and the hop list as one text column both backends keep.

use crate::select::Selector;
use vantage_wire::trace::{End, HopRecord, PathTrace, Trace};
use vantage_wire::Labels;

/// One stored trace with the identity and labels of its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrace {
    /// Probe that traced.
    pub probe_id: String,
    /// Its batch's sequence number.
    pub sequence: u64,
    /// Campaign.
    pub campaign: String,
    /// The batch's labels.
    pub labels: Labels,
    /// The trace.
    pub trace: PathTrace,
}

impl StoredTrace {
    /// The value of a selection key, as [`crate::StoredSeries::key`]
    /// gives it; `metric` is `path_trace`.
    pub fn key(&self, key: &str) -> Option<&str> {
        crate::select::batch_key(
            key,
            [&self.probe_id, &self.campaign, &self.trace.target.name],
            vantage_wire::Metric::PathTrace,
            &self.labels,
        )
    }
}

impl Selector {
    /// True when `t` matches every condition, its start within the time range.
    pub fn matches_trace(&self, t: &StoredTrace) -> bool {
        let at = t.trace.started_unix_ms;
        self.equals
            .iter()
            .all(|(k, vs)| t.key(k).is_some_and(|v| vs.iter().any(|want| want == v)))
            && self.since_unix_ms.is_none_or(|since| at >= since)
            && self.until_unix_ms.is_none_or(|until| at <= until)
    }
}

/// A hop list as one text column: hops separated by `;`, each `TTL
/// ADDRESS RTTS` with `*` for no address and RTTS the probes' round trips
/// in µs, comma separated, `*` for one unanswered: `1 198.18.0.1
/// 5012,*;2 * *,*;3 198.18.0.9 35120`.
pub fn hops_text(trace: &Trace) -> String {
    trace
        .hops
        .iter()
        .map(|h| {
            let rtts: Vec<String> = h
                .rtts
                .iter()
                .map(|r| r.map_or("*".to_string(), |d| d.as_micros().to_string()))
                .collect();
            let address = h.address.map_or("*".to_string(), |a| a.to_string());
            format!("{} {address} {}", h.ttl, rtts.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Reads a hop list written by [`hops_text`], with how the trace ended.
pub fn parse_hops(text: &str, end: &str) -> Result<Trace, String> {
    let end = End::from_name(end).ok_or_else(|| format!("trace end `{end}`"))?;
    let mut hops = Vec::new();
    for hop in text.split(';').filter(|h| !h.is_empty()) {
        let bad = || format!("hop `{hop}`");
        let mut parts = hop.split(' ');
        let (Some(ttl), Some(address), Some(rtts), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let ttl: u8 = ttl.parse().map_err(|_| bad())?;
        let address = match address {
            "*" => None,
            a => Some(a.parse().map_err(|_| bad())?),
        };
        let rtts = rtts
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| match r {
                "*" => Ok(None),
                us => us
                    .parse()
                    .map(|us| Some(std::time::Duration::from_micros(us)))
                    .map_err(|_| bad()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        hops.push(HopRecord { ttl, address, rtts });
    }
    Ok(Trace { hops, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_hop_list_reads_back_as_written() {
        let trace = Trace {
            hops: vec![
                HopRecord {
                    ttl: 1,
                    address: Some("198.18.0.1".parse().unwrap()),
                    rtts: vec![Some(Duration::from_micros(5012)), None],
                },
                HopRecord {
                    ttl: 2,
                    address: None,
                    rtts: vec![None, None],
                },
                HopRecord {
                    ttl: 3,
                    address: Some("2001:db8::9".parse().unwrap()),
                    rtts: vec![Some(Duration::from_micros(35120))],
                },
            ],
            end: End::Reached,
        };
        let text = hops_text(&trace);
        assert_eq!(text, "1 198.18.0.1 5012,*;2 * *,*;3 2001:db8::9 35120");
        assert_eq!(parse_hops(&text, "reached").unwrap(), trace);
        assert!(parse_hops("1 nowhere 5", "reached").is_err());
        assert!(parse_hops(&text, "lost").is_err());
        let empty = parse_hops("", "silent").unwrap();
        assert!(empty.hops.is_empty());
    }
}
