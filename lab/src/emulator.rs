//! The packet emulator of namespace mode: every IP packet a namespace
//! sends leaves through its TUN device, is read here, passes the path
//! model of its (source, destination) pair, and is written into the
//! destination's TUN device at its release instant by the one
//! [`ReleaseClock`]. TCP's handshake, slow start, loss recovery and
//! queueing thus all meet the path, as in Mahimahi's `mm-delay` and
//! `mm-link`; nothing is terminated on the way.

use crate::delay_line::ReleaseClock;
use crate::path::{Direction, Verdict};
use crate::tun::TunPort;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a reader waits for a packet before looking at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Largest packet read from a TUN device (its MTU is 1500; this leaves
/// room for a larger one to be seen, counted and dropped by the path).
const MAX_PACKET: usize = 65_536;

/// A TUN device registered with the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortId(usize);

/// What the emulator did with packets, beside what each path's
/// [`Direction`] counts.
#[derive(Debug, Default)]
pub struct EmulatorCounters {
    /// Packets passed to a path.
    pub routed: AtomicU64,
    /// Packets for which no path exists (a namespace's own IPv6 neighbour
    /// discovery, say): dropped, as a router without a route would.
    pub unrouted: AtomicU64,
    /// Packets that were not IPv4 or IPv6.
    pub not_ip: AtomicU64,
    /// Packets dropped because the release queue was full.
    pub release_queue_full: AtomicU64,
    /// Packets carried past the routers ahead in one step (see [`Express`]).
    pub express: AtomicU64,
}

struct Route {
    out: Arc<TunPort>,
    direction: Arc<Mutex<Direction>>,
    express: Option<ExpressRoute>,
}

struct ExpressRoute {
    out: Arc<TunPort>,
    routers: u8,
    direction: Option<Arc<Mutex<Direction>>>,
    after: Duration,
}

/// How a packet that will outlive every router ahead of it reaches the
/// end of the chain in one step: its TTL (hop limit) lowered by the
/// routers it passes, as they would lower it, and delayed as the
/// segments between would delay it. A router can only change such a
/// packet's TTL, so this is what carrying it router by router would
/// deliver, at a quarter of the cost on a four-router path. A packet
/// whose TTL runs out on the way (a traceroute's) still goes router by
/// router, and the router where it expires answers.
pub struct Express {
    /// The port at the end of the chain.
    pub out: PortId,
    /// Routers ahead.
    pub routers: u8,
    /// The segment with the direction's impairments, when the packet
    /// enters it now (each direction's impairments are where it starts,
    /// so its fate is decided, in order, as it enters the path).
    pub direction: Option<Arc<Mutex<Direction>>>,
    /// Delay of the segments after it.
    pub after: Duration,
}

/// The ports and routes of an emulator that has not started.
#[derive(Default)]
pub struct EmulatorBuilder {
    ports: Vec<Arc<TunPort>>,
    routes: HashMap<RouteKey, Route>,
}

/// Which route a packet takes: the port it came in by, its source and
/// its destination. The port matters once routers are in the way: a
/// packet from a probe to a data centre passes the emulator once per
/// segment, and each time it must go on to the next.
type RouteKey = (PortId, IpAddr, IpAddr);

impl EmulatorBuilder {
    /// Registers a TUN device.
    pub fn port(&mut self, tun: TunPort) -> PortId {
        self.ports.push(Arc::new(tun));
        PortId(self.ports.len() - 1)
    }

    /// Packets from `from` to `to` that come in by `by` pass `direction`
    /// and leave by `out`, or by `express` when they outlive the routers
    /// ahead.
    pub fn route(
        &mut self,
        (by, from, to): (PortId, IpAddr, IpAddr),
        out: PortId,
        direction: Arc<Mutex<Direction>>,
        express: Option<Express>,
    ) {
        let out = self.ports[out.0].clone();
        let express = express.map(|x| ExpressRoute {
            out: self.ports[x.out.0].clone(),
            routers: x.routers,
            direction: x.direction,
            after: x.after,
        });
        self.routes.insert(
            (by, from, to),
            Route {
                out,
                direction,
                express,
            },
        );
    }

    /// Starts one reader thread per port.
    pub fn start(self, clock: Arc<ReleaseClock>) -> io::Result<PacketEmulator> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(EmulatorCounters::default());
        let routes = Arc::new(self.routes);
        let mut readers = Vec::new();
        for (i, port) in self.ports.into_iter().enumerate() {
            let (halt, counters, routes, clock) = (
                stop.clone(),
                counters.clone(),
                routes.clone(),
                clock.clone(),
            );
            let reader = std::thread::Builder::new()
                .name(format!("lab-tun-{}", port.name()))
                .spawn(move || read_port((PortId(i), &port), &routes, &clock, &counters, &halt));
            match reader {
                Ok(r) => readers.push(r),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(PacketEmulator {
            stop,
            readers,
            counters,
        })
    }
}

fn read_port(
    (id, port): (PortId, &TunPort),
    routes: &HashMap<RouteKey, Route>,
    clock: &ReleaseClock,
    counters: &EmulatorCounters,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    while !stop.load(Ordering::Relaxed) {
        let n = match port.read(&mut buf, POLL) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, port = port.name(), "reading a TUN device failed");
                return;
            }
        };
        let now = Instant::now();
        let packet = &buf[..n];
        let Some((from, to)) = addresses(packet) else {
            counters.not_ip.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(route) = routes.get(&(id, from, to)) else {
            counters.unrouted.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        counters.routed.fetch_add(1, Ordering::Relaxed);
        let (verdict, out, lower_by) = match &route.express {
            Some(x) if ttl(packet).is_some_and(|t| t > x.routers) => {
                counters.express.fetch_add(1, Ordering::Relaxed);
                let verdict = match &x.direction {
                    Some(d) => d.lock().map(|mut d| d.handle_datagram(now, n)),
                    None => Ok(Verdict::Deliver(now)),
                };
                let verdict = verdict.map(|v| match v {
                    Verdict::Deliver(at) => Verdict::Deliver(at + x.after),
                    dropped => dropped,
                });
                (verdict, &x.out, x.routers)
            }
            _ => (
                route
                    .direction
                    .lock()
                    .map(|mut d| d.handle_datagram(now, n)),
                &route.out,
                0,
            ),
        };
        if let Ok(Verdict::Deliver(at)) = verdict {
            let mut bytes = packet.to_vec();
            lower_ttl(&mut bytes, lower_by);
            if !clock.write_at(at, out, bytes) {
                counters.release_queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An IPv4 packet's TTL or an IPv6 packet's hop limit.
pub fn ttl(packet: &[u8]) -> Option<u8> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(packet[8]),
        6 if packet.len() >= 40 => Some(packet[7]),
        _ => None,
    }
}

/// Lowers a packet's TTL (hop limit) by `by`, as that many routers
/// would, and mends the IPv4 header checksum.
pub fn lower_ttl(packet: &mut [u8], by: u8) {
    if by == 0 {
        return;
    }
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            packet[8] = packet[8].saturating_sub(by);
            let header = usize::from(packet[0] & 0x0f) * 4;
            if header < 20 || header > packet.len() {
                return;
            }
            packet[10..12].copy_from_slice(&[0, 0]);
            let sum = header_checksum(&packet[..header]);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        Some(6) if packet.len() >= 40 => packet[7] = packet[7].saturating_sub(by),
        _ => {}
    }
}

/// The Internet checksum (RFC 1071) of an IPv4 header.
fn header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The source and destination of an IPv4 or IPv6 packet.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

/// A running emulator. Dropping it stops its readers.
pub struct PacketEmulator {
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    counters: Arc<EmulatorCounters>,
}

impl PacketEmulator {
    /// Its counters.
    pub fn counters(&self) -> &EmulatorCounters {
        &self.counters
    }
}

impl Drop for PacketEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_both_ip_versions_and_nothing_else() {
        let mut v4 = vec![0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[198, 18, 0, 10]);
        v4[16..20].copy_from_slice(&[198, 18, 1, 10]);
        assert_eq!(
            addresses(&v4),
            Some((
                "198.18.0.10".parse().unwrap(),
                "198.18.1.10".parse().unwrap()
            ))
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[23] = 1;
        v6[24] = 0xfe;
        v6[25] = 0x80;
        assert_eq!(
            addresses(&v6),
            Some(("::1".parse().unwrap(), "fe80::".parse().unwrap()))
        );
        assert_eq!(addresses(&v4[..19]), None, "a truncated header");
        assert_eq!(addresses(&[0x25; 40]), None, "not IP");
        assert_eq!(addresses(&[]), None);
    }

    #[test]
    fn lowering_the_ttl_keeps_the_ipv4_header_checksum_valid() {
        // A real header (from RFC 1071's worked style): 20 bytes, TTL 64.
        let mut v4: Vec<u8> = vec![
            0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 198, 18, 0, 10,
            198, 18, 0, 11,
        ];
        let sum = header_checksum(&v4);
        v4[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(header_checksum(&v4), 0, "a valid header sums to zero");
        lower_ttl(&mut v4, 3);
        assert_eq!(ttl(&v4), Some(61));
        assert_eq!(header_checksum(&v4), 0, "still valid after lowering");
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[7] = 64;
        lower_ttl(&mut v6, 5);
        assert_eq!(ttl(&v6), Some(59));
        assert_eq!(ttl(&[0x45; 10]), None);
    }
}
