//! An emulated path from one probe location to one responder: relays for
//! its QUIC (UDP), HTTPS (TCP) and STAMP (UDP) ports, all sharing the
//! path's two directions, as traffic on one route shares its bottleneck.

use crate::delay_line::ReleaseClock;
use crate::path::{Direction, DirectionCounters, DirectionSpec};
use crate::tcp_relay::TcpRelay;
use crate::udp_relay::UdpRelay;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Both directions of a path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathSpec {
    /// Probe to responder.
    pub up: DirectionSpec,
    /// Responder to probe.
    pub down: DirectionSpec,
}

/// The responder's addresses a path leads to.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// QUIC (UDP).
    pub quic: SocketAddr,
    /// HTTPS (TCP).
    pub https: SocketAddr,
    /// STAMP (UDP).
    pub stamp: SocketAddr,
}

/// A running emulated path on loopback.
pub struct EmulatedPath {
    quic: UdpRelay,
    stamp: UdpRelay,
    _https: TcpRelay,
    up: Arc<Mutex<Direction>>,
    down: Arc<Mutex<Direction>>,
}

impl EmulatedPath {
    /// Starts relays to `upstream` through `spec`; `seed` fixes the loss
    /// and jitter pattern of both directions.
    pub fn start(
        upstream: Upstream,
        spec: &PathSpec,
        seed: u64,
        clock: Arc<ReleaseClock>,
    ) -> io::Result<Self> {
        let up = Arc::new(Mutex::new(Direction::new(spec.up.clone(), seed)));
        let down = Arc::new(Mutex::new(Direction::new(
            spec.down.clone(),
            seed ^ 0x9e37_79b9_7f4a_7c15,
        )));
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        // QUIC and HTTPS share one port number, as on a responder.
        let mut last_err = None;
        for _ in 0..20 {
            let quic =
                UdpRelay::start(any, upstream.quic, up.clone(), down.clone(), clock.clone())?;
            let same = SocketAddr::new(any.ip(), quic.addr().port());
            match TcpRelay::start(
                same,
                upstream.https,
                up.clone(),
                down.clone(),
                clock.clone(),
            ) {
                Ok(https) => {
                    let stamp =
                        UdpRelay::start(any, upstream.stamp, up.clone(), down.clone(), clock)?;
                    return Ok(EmulatedPath {
                        quic,
                        stamp,
                        _https: https,
                        up,
                        down,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free port pair")))
    }

    /// The QUIC and HTTPS port probes target (`127.0.0.1:PORT`).
    pub fn port(&self) -> u16 {
        self.quic.addr().port()
    }

    /// The STAMP port.
    pub fn stamp_port(&self) -> u16 {
        self.stamp.addr().port()
    }

    /// Counters of (up, down).
    pub fn counters(&self) -> (DirectionCounters, DirectionCounters) {
        let read = |d: &Arc<Mutex<Direction>>| d.lock().map(|d| d.counters()).unwrap_or_default();
        (read(&self.up), read(&self.down))
    }
}
