//! The tokens a collector has checked lately, so that an upload's token
//! is checked before its body is read without a database round trip for
//! every batch. This is only the first check: the transaction that stores
//! a batch checks its token again ([`vantage_store::Incoming::token_hash`]),
//! so a revoke still refuses every later batch on every collector at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a checked token is taken as still valid by the first check.
pub(crate) const TOKEN_FRESH: Duration = Duration::from_secs(10);
/// Most tokens remembered; past it the stale ones go, then all of them,
/// so a flood of distinct tokens cannot grow the collector's memory.
pub(crate) const TOKENS_REMEMBERED: usize = 65_536;

/// Token hash → the probe it belonged to when it was last checked.
#[derive(Debug)]
pub(crate) struct KnownTokens {
    entries: HashMap<String, Known>,
    fresh_for: Duration,
    capacity: usize,
}

#[derive(Debug)]
struct Known {
    probe_id: String,
    checked: Instant,
}

impl KnownTokens {
    pub(crate) fn new(fresh_for: Duration, capacity: usize) -> Self {
        KnownTokens {
            entries: HashMap::new(),
            fresh_for,
            capacity: capacity.max(1),
        }
    }

    /// The probe of `hash` if it was found valid less than `fresh_for`
    /// before `now`.
    pub(crate) fn probe(&self, hash: &str, now: Instant) -> Option<&str> {
        self.entries
            .get(hash)
            .filter(|k| now.saturating_duration_since(k.checked) < self.fresh_for)
            .map(|k| k.probe_id.as_str())
    }

    /// Remembers that `hash` was `probe_id`'s valid token at `now`.
    pub(crate) fn remember(&mut self, hash: &str, probe_id: &str, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(hash) {
            let fresh_for = self.fresh_for;
            self.entries
                .retain(|_, k| now.saturating_duration_since(k.checked) < fresh_for);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(
            hash.to_string(),
            Known {
                probe_id: probe_id.to_string(),
                checked: now,
            },
        );
    }

    /// Forgets `hash` (its batch was refused when stored: revoked).
    pub(crate) fn forget(&mut self, hash: &str) {
        self.entries.remove(hash);
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_token_is_known_until_it_goes_stale() {
        let t0 = Instant::now();
        let mut known = KnownTokens::new(Duration::from_secs(10), 8);
        assert_eq!(known.probe("h1", t0), None);
        known.remember("h1", "probe-a", t0);
        assert_eq!(
            known.probe("h1", t0 + Duration::from_secs(9)),
            Some("probe-a")
        );
        assert_eq!(known.probe("h1", t0 + Duration::from_secs(10)), None);
        assert_eq!(known.probe("h2", t0), None);
    }

    #[test]
    fn a_forgotten_token_is_checked_again() {
        let t0 = Instant::now();
        let mut known = KnownTokens::new(Duration::from_secs(10), 8);
        known.remember("h1", "probe-a", t0);
        known.forget("h1");
        assert_eq!(known.probe("h1", t0), None);
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let t0 = Instant::now();
        let mut known = KnownTokens::new(Duration::from_secs(10), 4);
        for n in 0..4 {
            known.remember(&format!("old{n}"), "p", t0);
        }
        // Past the capacity, the stale entries go first...
        let later = t0 + Duration::from_secs(11);
        known.remember("new0", "p", later);
        assert_eq!(known.len(), 1);
        assert_eq!(known.probe("new0", later), Some("p"));
        // ...and when every entry is fresh, all of them.
        for n in 1..4 {
            known.remember(&format!("new{n}"), "p", later);
        }
        known.remember("new4", "p", later);
        assert_eq!(known.len(), 1);
        assert_eq!(known.probe("new4", later), Some("p"));
        // Checking a known token again adds nothing.
        known.remember("new4", "p", later);
        assert_eq!(known.len(), 1);
    }
}
