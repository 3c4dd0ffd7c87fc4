use crate::histogram::{new_latency_histogram, LatencyHistogram};
use crate::labels::Labels;
use crate::metric::{ErrorClass, Metric, Reason};
use crate::trace::PathTrace;
use std::collections::BTreeMap;

/// `host:port` as an address is written everywhere in Vantage: an IPv6
/// literal in brackets (`[::1]:4443`), so the port cannot be read as part
/// of the address; a name or IPv4 address as it is.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A data centre a probe measures: its name (`singapore`) and the address it
/// was reached at (`203.0.113.7:4433`), so a report can tell which one answered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Data-centre name, as configured on the probe.
    pub name: String,
    /// Address measured, `host:port`.
    pub address: String,
}

/// The wall-clock interval a series covers, in milliseconds since the Unix
/// epoch. Only labels the data: no duration is ever computed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// Start, inclusive, ms since the Unix epoch (UTC).
    pub start_unix_ms: u64,
    /// End, exclusive, ms since the Unix epoch (UTC).
    pub end_unix_ms: u64,
}

/// Failed attempts by class. A sorted map so encodings are deterministic.
pub type ErrorCounts = BTreeMap<ErrorClass, u64>;

/// Failed attempts by finer reason, where the probe can tell one; each is
/// also counted under its class in [`ErrorCounts`].
pub type ReasonCounts = BTreeMap<Reason, u64>;

/// HTTP responses by status code (the expected one included), so a report
/// shows 200s next to 503s.
pub type StatusCounts = BTreeMap<u16, u64>;

/// A count map as `key=n;key=n` (`refused=2;tls=1`, `200=58;503=2`): how
/// CSV columns and the collector's store write error, reason and status
/// counts.
pub fn counts_text<K: std::fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Path properties only a packet metric (`udp_rtt`) can see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Replies received more than once.
    pub duplicates: u64,
    /// Replies that arrived after a reply to a later packet.
    pub reordered: u64,
    /// Lost packets that never reached the reflector (from its sequence numbers).
    pub forward_lost: u64,
    /// Lost packets whose reply was lost on the way back.
    pub backward_lost: u64,
    /// Lost packets whose direction cannot be told: the reflector's
    /// sequence numbers mirror the sender's (a stateless reflector, RFC
    /// 8762 §4.2.1, or one not yet shown to keep its own count), so a gap
    /// says nothing about where the packets went. Never put on either side.
    pub unknown_direction_lost: u64,
    /// Sum of |RTT(n) − RTT(n−1)| over consecutive replies, µs (IPDV, RFC 3393).
    pub ipdv_sum_us: u64,
    /// Number of consecutive-reply pairs in `ipdv_sum_us`.
    pub ipdv_pairs: u64,
}

impl PathStats {
    /// Adds `other` in: every field is a count or a sum, so merging is exact.
    pub fn add(&mut self, other: &PathStats) {
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.forward_lost += other.forward_lost;
        self.backward_lost += other.backward_lost;
        self.unknown_direction_lost += other.unknown_direction_lost;
        self.ipdv_sum_us += other.ipdv_sum_us;
        self.ipdv_pairs += other.ipdv_pairs;
    }

    /// Mean delay variation between consecutive packets (jitter), µs.
    pub fn jitter_us(&self) -> Option<f64> {
        (self.ipdv_pairs > 0).then(|| self.ipdv_sum_us as f64 / self.ipdv_pairs as f64)
    }
}

/// Processing time the responder reported, kept apart from the network time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerTime {
    /// Sum of reported server times, µs.
    pub sum_us: u64,
    /// Number of responses that reported one.
    pub count: u64,
}

impl ServerTime {
    /// Mean reported server time, µs.
    pub fn mean_us(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64)
    }
}

/// Responses by CDN edge name.
pub type EdgeCounts = BTreeMap<String, u64>;

/// Most distinct CDN edges a series names; more are counted as [`EDGE_OTHER`].
pub const MAX_EDGES: usize = 8;

/// Where responses from edges past [`MAX_EDGES`] are counted.
pub const EDGE_OTHER: &str = "other";

/// Whether `name` may be a CDN edge label: 1 to 48 characters of ASCII
/// letters, digits and `-_.:`.
pub fn edge_name_ok(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// One (target, metric, window): the histogram of successful measurements and
/// the count of every attempt, so `sent = histogram.len() + lost + errors`.
#[derive(Debug, Clone)]
pub struct Series {
    /// The data centre measured.
    pub target: Target,
    /// What was measured.
    pub metric: Metric,
    /// When the attempts were scheduled.
    pub window: Window,
    /// Successful measurements, in the metric's unit.
    pub histogram: LatencyHistogram,
    /// Attempts started in the window.
    pub sent: u64,
    /// Attempts that got no answer before their timeout.
    pub lost: u64,
    /// Attempts that failed otherwise, by class (never `timeout`).
    pub errors: ErrorCounts,
    /// Failed attempts by finer reason (a TLS failure's cause, a DNS
    /// answer's kind); part of `errors`, never in addition to it.
    pub reasons: ReasonCounts,
    /// HTTP responses by status code, for HTTP metrics.
    pub statuses: StatusCounts,
    /// HTTP responses by the CDN edge that said it served them (see
    /// [`Series::count_edge`]): at most [`MAX_EDGES`] names, the rest
    /// under [`EDGE_OTHER`].
    pub edges: EdgeCounts,
    /// Payload bytes moved, for throughput metrics.
    pub bytes: u64,
    /// Loss direction, reordering, duplicates and jitter (packet metrics).
    pub path: PathStats,
    /// Responder-reported processing time.
    pub server_time: ServerTime,
}

impl PartialEq for Series {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target
            && self.metric == other.metric
            && self.window == other.window
            && crate::histogram::same_counts(&self.histogram, &other.histogram)
            && self.sent == other.sent
            && self.lost == other.lost
            && self.errors == other.errors
            && self.reasons == other.reasons
            && self.statuses == other.statuses
            && self.edges == other.edges
            && self.bytes == other.bytes
            && self.path == other.path
            && self.server_time == other.server_time
    }
}

impl Series {
    /// An empty series for one target, metric and window.
    pub fn new(target: Target, metric: Metric, window: Window) -> Self {
        Series {
            target,
            metric,
            window,
            histogram: new_latency_histogram(),
            sent: 0,
            lost: 0,
            errors: ErrorCounts::new(),
            reasons: ReasonCounts::new(),
            statuses: StatusCounts::new(),
            edges: EdgeCounts::new(),
            bytes: 0,
            path: PathStats::default(),
            server_time: ServerTime::default(),
        }
    }

    /// Counts one response served by CDN edge `edge` (`cloudfront:BOM78-P1`):
    /// a name a series holds already, or a new one while it holds fewer
    /// than [`MAX_EDGES`], else [`EDGE_OTHER`]. A name that is not
    /// [`edge_name_ok`] counts as [`EDGE_OTHER`] too.
    pub fn count_edge(&mut self, edge: &str) {
        self.add_edge(edge, 1);
    }

    /// Adds `edges` (another series' counts) under the same bound as
    /// [`Series::count_edge`].
    pub fn add_edges(&mut self, edges: &EdgeCounts) {
        for (edge, n) in edges {
            self.add_edge(edge, *n);
        }
    }

    /// `n` responses served by `edge`, bounded as [`Series::count_edge`] says.
    fn add_edge(&mut self, edge: &str, n: u64) {
        // A name already counted (most responses): no allocation.
        if let Some(slot) = self.edges.get_mut(edge) {
            *slot = slot.saturating_add(n);
            return;
        }
        let name = if edge_name_ok(edge) && self.edges.len() < MAX_EDGES {
            edge
        } else {
            EDGE_OTHER
        };
        let slot = self.edges.entry(name.to_string()).or_insert(0);
        *slot = slot.saturating_add(n);
    }

    /// Failed attempts other than timeouts.
    pub fn error_total(&self) -> u64 {
        self.errors.values().fold(0, |a, n| a.saturating_add(*n))
    }

    /// Checks the invariants a collector relies on; the message says which failed.
    pub fn check(&self) -> Result<(), String> {
        if self.window.end_unix_ms <= self.window.start_unix_ms {
            return Err(format!(
                "window ends ({}) before it starts ({})",
                self.window.end_unix_ms, self.window.start_unix_ms
            ));
        }
        if self.errors.contains_key(&ErrorClass::Timeout) {
            return Err("timeouts belong in `lost`, not in `errors`".into());
        }
        for class in ErrorClass::all() {
            let refined: u64 = self
                .reasons
                .iter()
                .filter(|(r, _)| r.class() == class)
                .map(|(_, n)| *n)
                .sum();
            let counted = self.errors.get(&class).copied().unwrap_or(0);
            if refined > counted {
                return Err(format!(
                    "{refined} `{class}` failures have a reason, but only {counted} are counted"
                ));
            }
        }
        if let Some(code) = self.statuses.keys().find(|c| !(100..=999).contains(*c)) {
            return Err(format!("HTTP status {code} is not a three-digit code"));
        }
        let responses = self
            .statuses
            .values()
            .try_fold(0u64, |a, n| a.checked_add(*n));
        if responses.is_none_or(|n| n > self.sent) {
            return Err(format!(
                "more HTTP statuses counted than attempts ({})",
                self.sent
            ));
        }
        if let Some(name) = self.edges.keys().find(|e| !edge_name_ok(e)) {
            return Err(format!("CDN edge name `{name}` is not a bounded label"));
        }
        if self.edges.len() > MAX_EDGES + 1 {
            return Err(format!(
                "{} CDN edges named; at most {MAX_EDGES} and `{EDGE_OTHER}`",
                self.edges.len()
            ));
        }
        let served = self.edges.values().try_fold(0u64, |a, n| a.checked_add(*n));
        if served.is_none_or(|n| n > self.sent) {
            return Err(format!(
                "more CDN edges counted than attempts ({})",
                self.sent
            ));
        }
        let accounted = self
            .histogram
            .len()
            .checked_add(self.lost)
            .and_then(|n| n.checked_add(self.error_total()));
        if accounted != Some(self.sent) {
            return Err(format!(
                "sent ({}) is not samples ({}) + lost ({}) + errors ({})",
                self.sent,
                self.histogram.len(),
                self.lost,
                self.error_total()
            ));
        }
        Ok(())
    }
}

/// What a probe ships: its identity, its labels, and the series of one or
/// more windows. `(probe_id, sequence)` is unique and is the collector's
/// de-duplication key.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Stable probe identity, generated once and kept in the probe's state.
    pub probe_id: String,
    /// Per-probe sequence number, increasing, never reused.
    pub sequence: u64,
    /// Measurement campaign this batch belongs to.
    pub campaign: String,
    /// Where and how the probe measured.
    pub labels: Labels,
    /// When the batch was made, ms since the Unix epoch (a label, not a timer).
    pub created_unix_ms: u64,
    /// Earlier batches the probe had to drop (spool full) since its last batch.
    pub dropped_batches: u64,
    /// The measurements.
    pub series: Vec<Series>,
    /// The path traces made in the batch's windows, each with its hops
    /// (their counts are in the `path_trace` series beside them).
    pub traces: Vec<PathTrace>,
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn ipv6_addresses_are_joined_to_their_port_in_brackets() {
        assert_eq!(host_port("::1", 4443), "[::1]:4443");
        assert_eq!(host_port("2001:db8::7", 862), "[2001:db8::7]:862");
        assert_eq!(host_port("[::1]", 4443), "[::1]:4443");
        assert_eq!(host_port("127.0.0.1", 4443), "127.0.0.1:4443");
        assert_eq!(host_port("dc.example", 4443), "dc.example:4443");
    }
}
