//! The STAMP session-reflector (RFC 8762, unauthenticated, stateful).
//!
//! It runs on a thread of its own with blocking socket calls, not as a task
//! on the async runtime: a test packet is reflected the moment it arrives,
//! whatever the QUIC and HTTPS services are doing on the runtime's threads
//! (a photo sync keeps them busy with crypto), so the reflector's own time
//! is not added to the path it measures; and the packet costs one wake-up,
//! as in sockperf's server, not a trip through the reactor.

use crate::stats::Stats;
use crate::{ResponderConfig, ResponderError, Shared};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use vantage_wire::stamp::{self, ErrorEstimate, NtpTimestamp, MAX_PACKET_LEN};

/// The stateful reflector's sessions: one sequence counter per sender
/// (RFC 8762 §4.3: a session is identified by the sender's address and
/// port), so the sender can tell forward loss from backward loss. Plain
/// state: time comes in as an argument.
#[derive(Debug)]
pub struct SessionTable<K> {
    sessions: HashMap<K, (u32, Instant)>,
    capacity: usize,
    idle: Duration,
}

impl<K: Eq + Hash + Clone> SessionTable<K> {
    /// A table of at most `capacity` sessions, forgetting those idle longer than `idle`.
    pub fn new(capacity: usize, idle: Duration) -> Self {
        SessionTable {
            sessions: HashMap::new(),
            capacity,
            idle,
        }
    }

    /// The reflector sequence number for the next packet of `peer`, or `None`
    /// when the table is full of live sessions (reflect statelessly then).
    pub fn next_sequence(&mut self, peer: &K, now: Instant) -> Option<u32> {
        if let Some((seq, seen)) = self.sessions.get_mut(peer) {
            let out = *seq;
            *seq = seq.wrapping_add(1);
            *seen = now;
            return Some(out);
        }
        if self.sessions.len() >= self.capacity {
            let idle = self.idle;
            self.sessions
                .retain(|_, (_, seen)| now.duration_since(*seen) < idle);
            if self.sessions.len() >= self.capacity {
                return None;
            }
        }
        self.sessions.insert(peer.clone(), (1, now));
        Some(0)
    }

    /// Sessions tracked.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// How long a blocking receive waits before the reflector looks at the
/// shutdown signal again.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

pub(crate) fn bind(config: &ResponderConfig) -> Result<UdpSocket, ResponderError> {
    let addr = SocketAddr::new(config.bind, config.stamp_port);
    let err = |source| ResponderError::Bind {
        proto: "STAMP (UDP)",
        addr,
        source,
    };
    let socket = UdpSocket::bind(addr).map_err(err)?;
    socket.set_read_timeout(Some(SHUTDOWN_POLL)).map_err(err)?;
    Ok(socket)
}

/// How well this host's clock is synchronised, as its kernel's clock
/// discipline states it (`adjtimex`, read only): what a STAMP packet's
/// Error Estimate says, so the far end can tell whether a one-way delay
/// means anything. Unsynchronised where it cannot be read.
pub fn clock_estimate() -> ErrorEstimate {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed timex is valid; with `modes` 0 adjtimex only
        // reads the kernel's state into it.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state >= 0 {
            return ErrorEstimate::from_kernel(tx.status, tx.esterror as i64, tx.maxerror as i64);
        }
    }
    ErrorEstimate::UNSYNCHRONIZED
}

/// [`clock_estimate`] read at most once a second, so the read (a system
/// call) never falls between a timestamp and the send it stamps, and a
/// busy reflector or probe makes one a second, not one a packet.
#[derive(Debug, Default)]
pub struct ClockEstimate {
    last: Option<(Instant, ErrorEstimate)>,
}

impl ClockEstimate {
    /// The estimate at `now`, read anew when the last is a second old.
    pub fn at(&mut self, now: Instant) -> ErrorEstimate {
        match self.last {
            Some((at, e)) if now.saturating_duration_since(at) < Duration::from_secs(1) => e,
            _ => {
                let e = clock_estimate();
                self.last = Some((now, e));
                e
            }
        }
    }
}

fn wall_now() -> NtpTimestamp {
    NtpTimestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Reflects test packets until `shutdown` says so or its sender is gone
/// (a responder dropped without `shutdown`). Blocking: run it on a thread
/// of its own.
pub(crate) fn serve(socket: UdpSocket, shared: Shared, shutdown: watch::Receiver<bool>) {
    let ttl_known = match crate::ttl::enable(&socket) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read received TTLs; STAMP replies will carry Ses-Sender TTL 255");
            false
        }
    };
    let mut table = SessionTable::new(shared.limits.max_stamp_sessions, Duration::from_secs(300));
    let mut rate = shared
        .limits
        .stamp_per_source
        .map(|r| crate::rate::RateLimiter::new(r, shared.limits.max_rate_sources));
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let mut clock = ClockEstimate::default();
    loop {
        if shutdown.has_changed().is_err() || *shutdown.borrow() {
            break;
        }
        let estimate = clock.at(Instant::now());
        let received = crate::ttl::recv_from(&socket, &mut buf);
        let t2 = wall_now();
        let (len, peer, ttl) = match received {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors from earlier replies surface here; not fatal.
                tracing::debug!(error = %e, "STAMP receive error");
                continue;
            }
        };
        if let Some(rate) = rate.as_mut() {
            let source = crate::rate::source_key(peer.ip());
            if rate.check(&source, Instant::now()) != crate::rate::Verdict::Allowed {
                Stats::bump(&shared.stats.stamp_rate_limited);
                continue;
            }
        }
        let sender = match stamp::SenderPacket::decode(&buf[..len]) {
            Ok(p) => p,
            Err(e) => {
                Stats::bump(&shared.stats.stamp_malformed);
                tracing::debug!(%peer, error = %e, "not a STAMP test packet");
                continue;
            }
        };
        shared.stall.wait_blocking();
        let seq = table
            .next_sequence(&peer, Instant::now())
            .unwrap_or_else(|| {
                // Stateless mode (RFC 8762 §4.3): copy the sender's sequence.
                Stats::bump(&shared.stats.stamp_stateless);
                sender.sequence
            });
        // 255 when the kernel did not say (non-Linux, or the option failed).
        let ttl = ttl.filter(|_| ttl_known).unwrap_or(255);
        match stamp::reflect(&buf[..len], seq, t2, wall_now(), estimate, ttl) {
            Ok(reply) => match socket.send_to(&reply, peer) {
                Ok(_) => Stats::bump(&shared.stats.stamp_reflected),
                Err(e) => {
                    Stats::bump(&shared.stats.stamp_send_failed);
                    tracing::debug!(%peer, error = %e, "STAMP reply not sent");
                }
            },
            Err(e) => {
                Stats::bump(&shared.stats.stamp_malformed);
                tracing::debug!(%peer, error = %e, "not a STAMP test packet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_count_per_peer_and_fall_back_when_full() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(2, Duration::from_secs(10));
        assert_eq!(t.next_sequence(&"a", t0), Some(0));
        assert_eq!(t.next_sequence(&"a", t0), Some(1));
        assert_eq!(t.next_sequence(&"b", t0), Some(0));
        assert_eq!(
            t.next_sequence(&"c", t0),
            None,
            "table full of live sessions"
        );
        let later = t0 + Duration::from_secs(11);
        assert_eq!(t.next_sequence(&"b", later), Some(1));
        assert_eq!(
            t.next_sequence(&"c", later),
            Some(0),
            "idle `a` was evicted"
        );
        assert_eq!(t.len(), 2);
    }
}
