//! Per-source rate limits: a token bucket per source, so one address (or
//! one IPv6 /64, or one token) cannot take the reflector's, the
//! handshakes' or the collector's whole capacity. Shared by the responder
//! and the collector. Plain state: time comes in as an argument.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// How fast one source may go: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceRate {
    /// Sustained rate, events per second.
    pub per_second: f64,
    /// Events a quiet source may send back to back.
    pub burst: f64,
}

/// The key a source is limited under: its IPv4 address, or its IPv6 /64
/// (one host usually holds a whole /64, and could rotate within it).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// What a limiter said about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the source's rate.
    Allowed,
    /// Over the source's rate.
    Limited,
    /// The table holds `capacity` sources, all active: a new one is
    /// refused rather than tracked (a flood from spoofed sources).
    TableFull,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets for at most `capacity` sources.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: SourceRate,
    capacity: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter at `rate` per source, tracking at most `capacity` sources.
    pub fn new(rate: SourceRate, capacity: usize) -> Self {
        RateLimiter {
            rate,
            capacity,
            buckets: HashMap::new(),
        }
    }

    /// Counts one event from `source` at `now`.
    pub fn check(&mut self, source: &K, now: Instant) -> Verdict {
        let SourceRate { per_second, burst } = self.rate;
        let refill = |b: &Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + elapsed * per_second).min(burst)
        };
        if let Some(b) = self.buckets.get_mut(source) {
            b.tokens = refill(b);
            b.at = now;
            return if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Verdict::Allowed
            } else {
                Verdict::Limited
            };
        }
        if self.buckets.len() >= self.capacity {
            // A source whose bucket is full again is as good as new:
            // forgetting it changes nothing.
            self.buckets.retain(|_, b| refill(b) < burst);
            if self.buckets.len() >= self.capacity {
                return Verdict::TableFull;
            }
        }
        if burst < 1.0 {
            return Verdict::Limited;
        }
        self.buckets.insert(
            source.clone(),
            Bucket {
                tokens: burst - 1.0,
                at: now,
            },
        );
        Verdict::Allowed
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATE: SourceRate = SourceRate {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RATE, 16);
        let allowed = (0..20)
            .filter(|_| l.check(&1, t0) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 5, "the burst, at once");
        // One second later: ten more (the rate), never more than the burst.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..20)
            .filter(|_| l.check(&1, t1) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 5, "capped at the burst");
        let mut n = 0;
        for ms in 0..1000 {
            if l.check(&1, t1 + Duration::from_millis(ms)) == Verdict::Allowed {
                n += 1;
            }
        }
        assert!((9..=11).contains(&n), "about the rate over a second: {n}");
        assert_eq!(
            l.check(&2, t1),
            Verdict::Allowed,
            "another source is not limited"
        );
    }

    #[test]
    fn a_full_table_forgets_quiet_sources_and_refuses_when_all_are_active() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RATE, 2);
        assert_eq!(l.check(&1, t0), Verdict::Allowed);
        assert_eq!(l.check(&2, t0), Verdict::Allowed);
        assert_eq!(l.check(&3, t0), Verdict::TableFull);
        // Source 1 and 2 refill within 0.1 s: both may be forgotten.
        let later = t0 + Duration::from_millis(200);
        assert_eq!(l.check(&3, later), Verdict::Allowed);
        assert!(l.len() <= 2);
    }

    #[test]
    fn ipv6_sources_are_limited_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), v4);
        assert_eq!(source_key(v4), v4);
    }
}
