//! A `path_trace` as recorded: each hop's address and round trips, and how
//! the trace ended. The probe's tracer makes them; batches carry them (format
//! version 4); the collector stores them; reports read which sites and
//! countries a path crosses.

use crate::record::Target;
use std::net::IpAddr;
use std::time::Duration;

/// One hop of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopRecord {
    /// Its TTL (hop limit), from 1.
    pub ttl: u8,
    /// Who answered (the first answer's source); `None`: no probe was
    /// answered, the hop is invisible.
    pub address: Option<IpAddr>,
    /// Each probe's round trip, `None` for one unanswered.
    pub rtts: Vec<Option<Duration>>,
}

impl HopRecord {
    /// Whether any probe was answered.
    pub fn answered(&self) -> bool {
        self.address.is_some()
    }

    /// The least round trip of the hop's answered probes.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.rtts.iter().flatten().min().copied()
    }
}

/// How a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// The target answered.
    Reached,
    /// A destination-unreachable answer stopped it.
    Unreachable,
    /// Too many hops in a row answered nothing.
    Silent,
    /// The most hops were probed without reaching the target.
    MaxHops,
}

const ENDS: &[(End, &str)] = &[
    (End::Reached, "reached"),
    (End::Unreachable, "unreachable"),
    (End::Silent, "silent"),
    (End::MaxHops, "max_hops"),
];

impl End {
    /// The stable name, as on the wire and in stores.
    pub fn name(self) -> &'static str {
        ENDS.iter()
            .find(|(e, _)| *e == self)
            .map_or("unknown", |(_, n)| *n)
    }

    /// The end of that name.
    pub fn from_name(name: &str) -> Option<End> {
        ENDS.iter().find(|(_, n)| *n == name).map(|(e, _)| *e)
    }
}

/// A finished trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Every hop probed, by TTL from 1.
    pub hops: Vec<HopRecord>,
    /// How it ended.
    pub end: End,
}

impl Trace {
    /// Whether the target answered.
    pub fn reached(&self) -> bool {
        self.end == End::Reached
    }

    /// Probes sent and probes unanswered.
    pub fn sent_lost(&self) -> (u64, u64) {
        let sent = self.hops.iter().map(|h| h.rtts.len() as u64).sum();
        let lost = self
            .hops
            .iter()
            .flat_map(|h| &h.rtts)
            .filter(|r| r.is_none())
            .count() as u64;
        (sent, lost)
    }

    /// The hops that answered, up to the last: the path's length as seen.
    pub fn hop_count(&self) -> usize {
        self.hops
            .iter()
            .rposition(HopRecord::answered)
            .map_or(0, |i| i + 1)
    }

    /// The path's fingerprint: each hop's address in order, `*` for a
    /// silent one, up to the last that answered.
    pub fn fingerprint(&self) -> String {
        self.hops[..self.hop_count()]
            .iter()
            .map(|h| h.address.map_or("*".to_string(), |a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The round trip to the target: its hop's least, when it was reached.
    pub fn target_rtt(&self) -> Option<Duration> {
        if !self.reached() {
            return None;
        }
        self.hops.last().and_then(HopRecord::min_rtt)
    }
}

/// A trace toward one target, as a batch carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTrace {
    /// The target traced.
    pub target: Target,
    /// When the trace was meant to start, ms since the Unix epoch (a
    /// label: the round trips are measured on the monotonic clock).
    pub started_unix_ms: u64,
    /// What it found.
    pub trace: Trace,
}
