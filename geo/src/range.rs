//! Address ranges and a sorted map from ranges to values. IPv4 and IPv6
//! share one number line: an IPv4 address is placed at its IPv4-mapped
//! IPv6 position (`::ffff:a.b.c.d`), so one binary search serves both.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    start: u128,
    end: u128,
}

/// Where an address sits on the shared number line.
pub fn position(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

fn address(pos: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(pos);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl IpRange {
    /// From its first and last address; `None` when they are of two
    /// families or out of order.
    pub fn new(first: IpAddr, last: IpAddr) -> Option<Self> {
        if first.is_ipv4() != last.is_ipv4() {
            return None;
        }
        let (start, end) = (position(first), position(last));
        (start <= end).then_some(IpRange { start, end })
    }

    /// From CIDR notation (`203.0.113.0/24`, `2001:db8::/32`); a bare
    /// address is a range of one.
    pub fn parse_cidr(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return IpRange::new(net.network(), net.broadcast());
        }
        let ip: IpAddr = text.parse().ok()?;
        IpRange::new(ip, ip)
    }

    /// Whether `ip` is in it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        (self.start..=self.end).contains(&position(ip))
    }

    /// How many addresses it spans, less one (so the whole IPv6 space fits).
    fn span(&self) -> u128 {
        self.end - self.start
    }

    /// Whether it shares an address with `other`.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for IpRange {
    /// As CIDR when it is one prefix, else as `first-last`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, last) = (address(self.start), address(self.end));
        let size = self.span().wrapping_add(1);
        if size.is_power_of_two() && self.start.is_multiple_of(size) {
            let bits = size.trailing_zeros();
            let prefix = match first {
                IpAddr::V4(_) => 32 - bits,
                IpAddr::V6(_) => 128 - bits,
            };
            write!(f, "{first}/{prefix}")
        } else if self.span() == u128::MAX {
            write!(f, "::/0")
        } else {
            write!(f, "{first}-{last}")
        }
    }
}

/// Ranges with a value each, no two overlapping, for lookups by address.
#[derive(Debug, Clone)]
pub struct RangeMap<T> {
    entries: Vec<(IpRange, T)>,
}

impl<T> Default for RangeMap<T> {
    fn default() -> Self {
        RangeMap {
            entries: Vec::new(),
        }
    }
}

/// Two ranges that overlap, each with what its caller said of it.
pub type Overlap<W> = ((IpRange, W), (IpRange, W));

impl<T> RangeMap<T> {
    /// From ranges and values; the first two that overlap are the error,
    /// each with what the caller said of it (a file and line, say).
    pub fn build<W: Clone>(mut items: Vec<(IpRange, T, W)>) -> Result<Self, Overlap<W>> {
        items.sort_by_key(|a| a.0);
        for pair in items.windows(2) {
            if pair[0].0.overlaps(&pair[1].0) {
                return Err((
                    (pair[0].0, pair[0].2.clone()),
                    (pair[1].0, pair[1].2.clone()),
                ));
            }
        }
        Ok(RangeMap {
            entries: items.into_iter().map(|(r, v, _)| (r, v)).collect(),
        })
    }

    /// From ranges that may nest (a cloud provider's file lists a region's
    /// block and, inside it, a service's): an address takes the value of
    /// the narrowest range that holds it. Ranges that overlap without
    /// nesting are cut so the later-starting one wins where they meet.
    pub fn most_specific(mut items: Vec<(IpRange, T)>) -> Self
    where
        T: Clone,
    {
        // Widest first, so narrower ranges are laid over them.
        items.sort_by(|a, b| b.0.span().cmp(&a.0.span()).then(a.0.cmp(&b.0)));
        let mut map: RangeMap<T> = RangeMap::default();
        for (range, value) in items {
            map.lay_over(range, value);
        }
        map
    }

    /// Puts `value` on `range`, cutting what it covers out of the ranges
    /// already there.
    fn lay_over(&mut self, range: IpRange, value: T)
    where
        T: Clone,
    {
        let mut out = Vec::with_capacity(self.entries.len() + 2);
        for (r, v) in self.entries.drain(..) {
            if !r.overlaps(&range) {
                out.push((r, v));
                continue;
            }
            if r.start < range.start {
                out.push((
                    IpRange {
                        start: r.start,
                        end: range.start - 1,
                    },
                    v.clone(),
                ));
            }
            if r.end > range.end {
                out.push((
                    IpRange {
                        start: range.end + 1,
                        end: r.end,
                    },
                    v,
                ));
            }
        }
        out.push((range, value));
        out.sort_by_key(|a| a.0);
        self.entries = out;
    }

    /// The value of the range holding `ip`.
    pub fn get(&self, ip: IpAddr) -> Option<&T> {
        let pos = position(ip);
        let i = self.entries.partition_point(|(r, _)| r.start <= pos);
        let (r, v) = self.entries.get(i.checked_sub(1)?)?;
        (pos <= r.end).then_some(v)
    }

    /// How many ranges it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ipv4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn r(s: &str) -> IpRange {
        IpRange::parse_cidr(s).unwrap()
    }

    #[test]
    fn ranges_of_both_families_parse_print_and_hold_their_addresses() {
        let v4 = r("203.0.113.0/24");
        assert!(v4.contains(ipv4(203, 0, 113, 255)));
        assert!(!v4.contains(ipv4(203, 0, 114, 0)));
        assert_eq!(v4.to_string(), "203.0.113.0/24");
        let v6 = r("2001:db8::/32");
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains(ipv4(32, 1, 13, 184)));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert_eq!(r("198.51.100.7").to_string(), "198.51.100.7/32");
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert!(v4.contains("::ffff:203.0.113.9".parse().unwrap()));
        let odd = IpRange::new(ipv4(10, 0, 0, 5), ipv4(10, 0, 0, 9)).unwrap();
        assert_eq!(odd.to_string(), "10.0.0.5-10.0.0.9");
        assert!(IpRange::new(ipv4(10, 0, 0, 9), ipv4(10, 0, 0, 5)).is_none());
        assert!(IpRange::new(ipv4(10, 0, 0, 1), "::1".parse().unwrap()).is_none());
        assert!(IpRange::parse_cidr("10.0.0.0/33").is_none());
        assert!(IpRange::parse_cidr("not an address").is_none());
    }

    #[test]
    fn a_map_refuses_overlaps_naming_both_and_finds_each_address() {
        let err = RangeMap::build(vec![(r("10.0.0.0/8"), "a", 1), (r("10.1.0.0/16"), "b", 2)])
            .unwrap_err();
        assert_eq!((err.0 .1, err.1 .1), (1, 2));
        let map = RangeMap::build(vec![
            (r("10.0.0.0/16"), "a", ()),
            (r("2001:db8::/32"), "v6", ()),
            (r("10.1.0.0/16"), "b", ()),
        ])
        .unwrap();
        assert_eq!(map.get(ipv4(10, 0, 200, 1)), Some(&"a"));
        assert_eq!(map.get(ipv4(10, 1, 0, 0)), Some(&"b"));
        assert_eq!(map.get(ipv4(10, 2, 0, 0)), None);
        assert_eq!(map.get("2001:db8::5".parse().unwrap()), Some(&"v6"));
        assert_eq!(map.get(ipv4(9, 255, 255, 255)), None);
    }

    #[test]
    fn the_narrowest_range_wins_where_ranges_nest() {
        let map = RangeMap::most_specific(vec![
            (r("52.0.0.0/8"), "region"),
            (r("52.94.0.0/16"), "service"),
            (r("52.94.5.0/24"), "edge"),
        ]);
        assert_eq!(map.get(ipv4(52, 1, 0, 1)), Some(&"region"));
        assert_eq!(map.get(ipv4(52, 94, 4, 1)), Some(&"service"));
        assert_eq!(map.get(ipv4(52, 94, 5, 1)), Some(&"edge"));
        assert_eq!(map.get(ipv4(52, 94, 6, 1)), Some(&"service"));
        assert_eq!(map.get(ipv4(52, 255, 0, 1)), Some(&"region"));
        assert_eq!(map.get(ipv4(53, 0, 0, 0)), None);
    }
}
