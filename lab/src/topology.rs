//! Namespace mode's topology: one network namespace per host (a probe's
//! device, a data centre's responder), each with one TUN device and one
//! address, joined through the [`PacketEmulator`] by paths. A host's
//! programs run unchanged inside its namespace; only the addresses they
//! use differ from relay mode.
//!
//! Addresses come from 198.18.0.0/15, the range RFC 2544 sets aside for
//! benchmarking, so they are never anyone's real hosts.

use crate::delay_line::ReleaseClock;
use crate::emulator::{EmulatorBuilder, EmulatorCounters, Express, PacketEmulator, PortId};
use crate::link::PathSpec;
use crate::netns::{self, Netns, NetnsError, NsRuntime};
use crate::path::{Direction, DirectionCounters};
use crate::tun::TunPort;
use crate::udp_relay::UdpRelay;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A segment that only delays: no jitter, loss, bottleneck or MTU.
fn delay_only(d: &crate::path::DirectionSpec) -> bool {
    d.jitter == crate::path::Jitter::None
        && d.loss == crate::path::Loss::None
        && d.rate_bps.is_none()
        && d.mtu.is_none()
}

/// The name of every host's TUN device inside its namespace.
const TUN_NAME: &str = "vlab0";

/// A host of a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostId(usize);

struct Host {
    ns: Netns,
    addr: Ipv4Addr,
    port: PortId,
    /// A router that forwards but whose own packets (ICMP errors, echo
    /// replies) are never carried.
    silent: bool,
}

/// Both directions of a path between two hosts, for their counters.
#[derive(Clone)]
pub struct NsPath {
    up: Arc<Mutex<Direction>>,
    down: Arc<Mutex<Direction>>,
}

impl NsPath {
    /// Counters of (up, down).
    pub fn counters(&self) -> (DirectionCounters, DirectionCounters) {
        let read = |d: &Arc<Mutex<Direction>>| d.lock().map(|d| d.counters()).unwrap_or_default();
        (read(&self.up), read(&self.down))
    }
}

/// Namespaces being set up, joined by paths once [`Topology::start`]ed.
/// Dropping it (or the [`RunningTopology`]) removes every namespace, and
/// with them their TUN devices and routes.
pub struct Topology {
    // Hosts before the emulator's builder: the TUN devices it holds are
    // closed after the namespaces go, which is harmless either way.
    hosts: Vec<Host>,
    emulator: EmulatorBuilder,
    removed_stale: Vec<String>,
}

/// The address of the `index`th host: 198.18.X.Y with Y in 10..=209, so
/// no host has a .0 or .255 that some tools treat specially.
fn host_addr(index: usize) -> Ipv4Addr {
    let (x, y) = (index / 200, index % 200 + 10);
    Ipv4Addr::new(198, 18, (x % 256) as u8, y as u8)
}

impl Topology {
    /// An empty topology, after checking that this process may make
    /// namespaces and removing any a killed lab run left behind.
    pub fn new() -> Result<Self, NetnsError> {
        netns::available()?;
        let removed_stale = netns::remove_stale();
        for name in &removed_stale {
            tracing::info!(namespace = %name, "removed a namespace a killed lab run left behind");
        }
        Ok(Topology {
            hosts: Vec::new(),
            emulator: EmulatorBuilder::default(),
            removed_stale,
        })
    }

    /// Namespaces of killed runs that [`Topology::new`] removed.
    pub fn removed_stale(&self) -> &[String] {
        &self.removed_stale
    }

    /// Adds a host: a namespace named after `role`, its TUN device up
    /// with the host's address, and a default route through it.
    pub fn add_host(&mut self, role: &str) -> Result<HostId, NetnsError> {
        let ns = Netns::create(role)?;
        let addr = host_addr(self.hosts.len());
        let tun = TunPort::create(&ns, TUN_NAME)?;
        ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", TUN_NAME])?;
        ns.ip(&["link", "set", TUN_NAME, "up"])?;
        ns.ip(&["route", "add", "default", "dev", TUN_NAME])?;
        let port = self.emulator.port(tun);
        self.hosts.push(Host {
            ns,
            addr,
            port,
            silent: false,
        });
        Ok(HostId(self.hosts.len() - 1))
    }

    /// Adds a router: a host that forwards what passes it, decrementing
    /// TTL and answering an expired packet with ICMP time-exceeded (the
    /// kernel's own router code does both). `silent`: it forwards but its
    /// own packets are never carried, as a router that does not answer.
    pub fn add_router(&mut self, role: &str, silent: bool) -> Result<HostId, NetnsError> {
        let id = self.add_host(role)?;
        let host = &mut self.hosts[id.0];
        host.silent = silent;
        // Forwarding on; no ICMP redirects (a router here sends every
        // packet back out the device it came by); no rate limit on ICMP
        // errors, so each probe of a traceroute is answered.
        let settings = [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/default/send_redirects", "0"),
            ("net/ipv4/conf/vlab0/send_redirects", "0"),
            ("net/ipv4/icmp_ratelimit", "0"),
        ];
        host.ns
            .run(|| {
                settings
                    .iter()
                    .try_for_each(|(key, value)| std::fs::write(format!("/proc/sys/{key}"), value))
            })?
            .map_err(|source| NetnsError::Sys {
                what: format!("make {} a router", host.ns.name()),
                source,
            })?;
        Ok(id)
    }

    /// Joins `a` and `b` by `spec` (`up` is a to b); `seed` fixes the
    /// loss and jitter pattern of both directions.
    pub fn link(&mut self, a: HostId, b: HostId, spec: &PathSpec, seed: u64) -> NsPath {
        self.link_via(a, &[], b, std::slice::from_ref(spec), seed)
    }

    /// Joins `a` and `b` through `routers` (in order from `a`), segment
    /// `i` from `a`'s end following `segments[i]` (one more segment than
    /// routers; missing ones carry nothing). Each router that answers
    /// reaches `a` back down the segments between them, so a traceroute
    /// from `a` sees every such router at its share of the path's delay.
    pub fn link_via(
        &mut self,
        a: HostId,
        routers: &[HostId],
        b: HostId,
        segments: &[PathSpec],
        seed: u64,
    ) -> NsPath {
        let chain: Vec<HostId> = std::iter::once(a)
            .chain(routers.iter().copied())
            .chain(std::iter::once(b))
            .collect();
        let direction = |spec: &crate::path::DirectionSpec, seed: u64| {
            Arc::new(Mutex::new(Direction::new(spec.clone(), seed)))
        };
        let segs: Vec<NsPath> = segments
            .iter()
            .take(chain.len() - 1)
            .enumerate()
            .map(|(i, spec)| {
                let seed = seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
                NsPath {
                    up: direction(&spec.up, seed),
                    down: direction(&spec.down, seed ^ 0x9e37_79b9_7f4a_7c15),
                }
            })
            .collect();
        let addr = |h: HostId| IpAddr::V4(self.hosts[h.0].addr);
        let port = |h: HostId| self.hosts[h.0].port;
        let (from, to) = (addr(a), addr(b));
        let k = chain.len() - 2;
        // Packets that outlive the routers ahead skip them (see
        // `Express`), which needs every segment but the first to be
        // delay only, as `DirectionSpec::split` makes them.
        let express_ok = segments.len() == k + 1
            && segments[1..].iter().all(|s| delay_only(&s.up))
            && segments[..k].iter().all(|s| delay_only(&s.down));
        let up_delay = |r: std::ops::Range<usize>| -> Duration {
            segments[r].iter().map(|s| s.up.delay).sum()
        };
        let down_delay = |r: std::ops::Range<usize>| -> Duration {
            segments[r].iter().map(|s| s.down.delay).sum()
        };
        let mut routes = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let (near, far) = (chain[i], chain[i + 1]);
            // Going up from chain[i]: segment i (the impaired one when
            // i is 0), then the rest, delay only.
            let up_express = (express_ok && k > i).then(|| Express {
                out: port(b),
                routers: (k - i) as u8,
                direction: (i == 0).then(|| seg.up.clone()),
                after: up_delay(if i == 0 { 1 } else { i }..k + 1),
            });
            // Coming down from chain[i + 1]: segment i (the impaired one
            // when it is the last), then the rest down to `a`.
            let down_express = (express_ok && i > 0).then(|| Express {
                out: port(a),
                routers: i as u8,
                direction: (i == k).then(|| seg.down.clone()),
                after: down_delay(0..if i == k { k } else { i + 1 }),
            });
            routes.push((
                (port(near), from, to),
                port(far),
                seg.up.clone(),
                up_express,
            ));
            routes.push((
                (port(far), to, from),
                port(near),
                seg.down.clone(),
                down_express,
            ));
        }
        // Each answering router to and from `a`, over the segments
        // between them.
        for (j, &router) in routers.iter().enumerate() {
            if self.hosts[router.0].silent {
                continue;
            }
            let r = addr(router);
            for (i, seg) in segs.iter().enumerate().take(j + 1) {
                let (near, far) = (chain[i], chain[i + 1]);
                routes.push(((port(far), r, from), port(near), seg.down.clone(), None));
                routes.push(((port(near), from, r), port(far), seg.up.clone(), None));
            }
        }
        for (key, out, dir, express) in routes {
            self.emulator.route(key, out, dir, express);
        }
        segs.into_iter().next().unwrap_or_else(|| NsPath {
            up: direction(&Default::default(), 0),
            down: direction(&Default::default(), 0),
        })
    }

    /// A host's address.
    pub fn addr(&self, host: HostId) -> IpAddr {
        IpAddr::V4(self.hosts[host.0].addr)
    }

    /// A host's namespace.
    pub fn netns(&self, host: HostId) -> &Netns {
        &self.hosts[host.0].ns
    }

    /// Starts carrying packets, each released by `clock`.
    pub fn start(mut self, clock: Arc<ReleaseClock>) -> Result<RunningTopology, NetnsError> {
        let builder = std::mem::take(&mut self.emulator);
        let emulator = builder.start(clock).map_err(|source| NetnsError::Sys {
            what: "start the packet emulator".into(),
            source,
        })?;
        Ok(RunningTopology {
            emulator,
            hosts: std::mem::take(&mut self.hosts),
        })
    }
}

/// A topology whose packets flow.
pub struct RunningTopology {
    // The emulator first: its readers stop before the namespaces go.
    emulator: PacketEmulator,
    hosts: Vec<Host>,
}

impl RunningTopology {
    /// A host's address.
    pub fn addr(&self, host: HostId) -> IpAddr {
        IpAddr::V4(self.hosts[host.0].addr)
    }

    /// A host's namespace.
    pub fn netns(&self, host: HostId) -> &Netns {
        &self.hosts[host.0].ns
    }

    /// A tokio runtime inside a host's namespace.
    pub fn runtime(&self, host: HostId) -> Result<NsRuntime, NetnsError> {
        self.hosts[host.0].ns.runtime()
    }

    /// The names of every namespace, for the user to inspect.
    pub fn namespaces(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.ns.name()).collect()
    }

    /// The emulator's counters.
    pub fn counters(&self) -> &EmulatorCounters {
        self.emulator.counters()
    }

    /// A plain relay from the host's own loopback to `upstream` on the
    /// lab's: how a probe in a namespace reaches a collector outside,
    /// which is not part of any measured path. Carried at once (no
    /// delay, no loss) by `clock`.
    pub fn loopback_relay(
        &self,
        host: HostId,
        upstream: SocketAddr,
        clock: Arc<ReleaseClock>,
    ) -> Result<UdpRelay, NetnsError> {
        let sys = |what: &str, source| NetnsError::Sys {
            what: format!("{what} in {}", self.hosts[host.0].ns.name()),
            source,
        };
        let front = self.hosts[host.0]
            .ns
            .run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))?
            .map_err(|e| sys("bind a relay to the collector", e))?;
        let straight = || Arc::new(Mutex::new(Direction::new(Default::default(), 0)));
        UdpRelay::start_on(front, upstream, straight(), straight(), clock)
            .map_err(|e| sys("start a relay to the collector", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_are_distinct_benchmarking_addresses() {
        let all: Vec<Ipv4Addr> = (0..1000).map(host_addr).collect();
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for a in all {
            let o = a.octets();
            assert_eq!((o[0], o[1] & 0xfe), (198, 18), "{a} outside 198.18.0.0/15");
            assert!((10..=209).contains(&o[3]), "{a}");
        }
    }
}
