//! The UDP relay: carries STAMP and QUIC between a probe and a responder
//! through a path model, one upstream socket per client (so the responder
//! sees one peer per client, as on a real path).

use crate::delay_line::ReleaseClock;
use crate::path::{Direction, Verdict};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most client sessions one relay keeps.
const MAX_SESSIONS: usize = 256;
const POLL: Duration = Duration::from_millis(50);

/// A running UDP relay. Dropping it stops its threads.
pub struct UdpRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpRelay {
    /// Listens on `listen` and relays to `upstream`, each datagram through
    /// `forward` (client to responder) or `backward`.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        forward: Arc<Mutex<Direction>>,
        backward: Arc<Mutex<Direction>>,
        clock: Arc<ReleaseClock>,
    ) -> io::Result<Self> {
        Self::start_on(UdpSocket::bind(listen)?, upstream, forward, backward, clock)
    }

    /// As [`UdpRelay::start`], listening on `front`, a socket already
    /// bound (in namespace mode, inside a probe's namespace, while the
    /// relay's upstream sockets are made in the caller's).
    pub fn start_on(
        front: UdpSocket,
        upstream: SocketAddr,
        forward: Arc<Mutex<Direction>>,
        backward: Arc<Mutex<Direction>>,
        clock: Arc<ReleaseClock>,
    ) -> io::Result<Self> {
        let front = Arc::new(front);
        front.set_read_timeout(Some(POLL))?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name(format!("udp-relay-{}", addr.port())).spawn(move || {
            let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                let (n, client) = match front.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP relay receive error");
                        continue;
                    }
                };
                let now = Instant::now();
                if !sessions.contains_key(&client) {
                    if sessions.len() >= MAX_SESSIONS {
                        continue;
                    }
                    match Session::open(client, upstream, &front, &backward, &clock, &stop2) {
                        Ok(s) => {
                            sessions.insert(client, s);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "UDP relay cannot open an upstream socket");
                            continue;
                        }
                    }
                }
                let verdict = forward.lock().map(|mut d| d.handle_datagram(now, n));
                if let (Ok(Verdict::Deliver(at)), Some(s)) = (verdict, sessions.get(&client)) {
                    clock.send_at(at, &s.upstream, None, buf[..n].to_vec());
                }
            }
            for (_, s) in sessions {
                s.close();
            }
        })?;
        Ok(UdpRelay {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address probes send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Session {
    upstream: Arc<UdpSocket>,
    receiver: JoinHandle<()>,
}

impl Session {
    fn open(
        client: SocketAddr,
        upstream: SocketAddr,
        front: &Arc<UdpSocket>,
        backward: &Arc<Mutex<Direction>>,
        clock: &Arc<ReleaseClock>,
        stop: &Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let local: SocketAddr = if upstream.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        }
        .parse()
        .map_err(|_| io::Error::other("bad local address"))?;
        let up = Arc::new(UdpSocket::bind(local)?);
        up.connect(upstream)?;
        up.set_read_timeout(Some(POLL))?;
        let (front, backward, clock, stop, up2) = (
            front.clone(),
            backward.clone(),
            clock.clone(),
            stop.clone(),
            up.clone(),
        );
        let receiver = std::thread::Builder::new()
            .name("udp-back".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let n = match up2.recv(&mut buf) {
                        Ok(n) => n,
                        Err(_) => continue,
                    };
                    let now = Instant::now();
                    if let Ok(Verdict::Deliver(at)) =
                        backward.lock().map(|mut d| d.handle_datagram(now, n))
                    {
                        clock.send_at(at, &front, Some(client), buf[..n].to_vec());
                    }
                }
            })?;
        Ok(Session {
            upstream: up,
            receiver,
        })
    }

    fn close(self) {
        let _ = self.receiver.join();
    }
}
