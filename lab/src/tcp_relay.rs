//! The TCP relay: carries TCP + TLS + HTTP between a probe and a responder
//! through a path model. A byte stream is not lost or reordered; the
//! bottleneck paces it, and a full queue stops the relay from reading, so
//! the sender's own TCP sees the backpressure.
//!
//! A userspace relay cannot delay the kernel's TCP handshake: the probe's
//! connect completes against the relay's listening socket at loopback
//! speed. Everything after it (TLS, HTTP) crosses the emulated path.

use crate::delay_line::{DelayLine, Item, TimingStats};
use crate::path::Direction;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

const CHUNK: usize = 16 * 1024;
/// Chunks held per direction: with 16 KiB chunks, at most 16 MiB in flight.
const LINE_CAPACITY: usize = 1024;

/// A running TCP relay. Dropping it stops accepting; open connections end
/// when either side closes.
pub struct TcpRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Listens on `listen` and relays each connection to `upstream`.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        forward: Arc<Mutex<Direction>>,
        backward: Arc<Mutex<Direction>>,
        timing: Arc<TimingStats>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tcp-relay-{}", addr.port()))
            .spawn(move || {
                for client in listener.incoming() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (forward, backward, timing) =
                        (forward.clone(), backward.clone(), timing.clone());
                    let _ = std::thread::Builder::new()
                        .name("tcp-conn".into())
                        .spawn(move || {
                            if let Err(e) =
                                relay_connection(client, upstream, forward, backward, timing)
                            {
                                tracing::debug!(error = %e, "TCP relay connection ended");
                            }
                        });
                }
            })?;
        Ok(TcpRelay {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address probes connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay_connection(
    client: TcpStream,
    upstream: SocketAddr,
    forward: Arc<Mutex<Direction>>,
    backward: Arc<Mutex<Direction>>,
    timing: Arc<TimingStats>,
) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (c_read, s_write) = (client.try_clone()?, server.try_clone()?);
    let (s_read, c_write) = (server, client);
    let t = timing.clone();
    let up = std::thread::Builder::new()
        .name("tcp-up".into())
        .spawn(move || pump(c_read, s_write, forward, t))?;
    pump(s_read, c_write, backward, timing);
    let _ = up.join();
    Ok(())
}

/// Reads `from`, passes each chunk through `path`, writes it to `to` at its
/// delivery time; ends with a half-close in the same direction.
fn pump(mut from: TcpStream, to: TcpStream, path: Arc<Mutex<Direction>>, timing: Arc<TimingStats>) {
    let mut to_sink = match to.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let Ok(line) = DelayLine::spawn("tcp-line", LINE_CAPACITY, timing, move |item| match item {
        Item::Bytes(b) => to_sink.write_all(&b),
        Item::Fin => {
            let _ = to_sink.shutdown(Shutdown::Write);
            Ok(())
        }
    }) else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    let mut last = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = line.push(last, Item::Fin);
                break;
            }
            Ok(n) => n,
        };
        let mut now = Instant::now();
        // A full bottleneck queue: wait for room instead of dropping.
        loop {
            let room = match path.lock() {
                Ok(d) => d.room_at(now, n),
                Err(_) => return,
            };
            if room <= now {
                break;
            }
            std::thread::sleep(room - now);
            now = Instant::now();
        }
        let at = match path.lock() {
            Ok(mut d) => d.handle_stream(now, n),
            Err(_) => return,
        };
        last = at;
        if line.push(at, Item::Bytes(buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(line);
    let _ = from.shutdown(Shutdown::Read);
    drop(to);
}
