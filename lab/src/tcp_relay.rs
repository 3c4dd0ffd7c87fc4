//! The TCP relay: carries TCP + TLS + HTTP between a probe and a responder
//! through a path model. A byte stream is not lost or reordered; the
//! bottleneck paces it, and a full queue stops the relay from reading, so
//! the sender's own TCP sees the backpressure.
//!
//! Chunks are released by the lab's one real-time release thread with a
//! non-blocking send, so they leave on time however busy the cores are;
//! only when the receiver's socket is full does a chunk go to this
//! direction's writer thread, which blocks (the receiver is the bottleneck
//! then, and order is kept).
//!
//! A userspace relay cannot delay the kernel's TCP handshake: the probe's
//! connect completes against the relay's listening socket at loopback
//! speed. Everything after it (TLS, HTTP) crosses the emulated path.

use crate::delay_line::ReleaseClock;
use crate::path::Direction;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHUNK: usize = 16 * 1024;
/// Bytes one direction may have waiting for release, beyond which the relay
/// stops reading (bounds memory when no bandwidth cap paces the stream).
const MAX_IN_FLIGHT: usize = 8 * 1024 * 1024;

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
        clock: Arc<ReleaseClock>,
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
                    let (forward, backward, clock) =
                        (forward.clone(), backward.clone(), clock.clone());
                    let _ = std::thread::Builder::new()
                        .name("tcp-conn".into())
                        .spawn(move || {
                            if let Err(e) =
                                relay_connection(client, upstream, forward, backward, clock)
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
    clock: Arc<ReleaseClock>,
) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (c_read, s_write) = (client.try_clone()?, server.try_clone()?);
    let (s_read, c_write) = (server, client);
    let clock2 = clock.clone();
    let up = std::thread::Builder::new()
        .name("tcp-up".into())
        .spawn(move || pump(c_read, s_write, forward, clock2))?;
    pump(s_read, c_write, backward, clock);
    let _ = up.join();
    Ok(())
}

struct SinkState {
    /// Items handed to the writer thread and not yet written.
    queued: usize,
    /// The receiver is gone: drop what comes.
    closed: bool,
}

/// Where one direction's chunks go: written by the release thread without
/// blocking, or by the writer thread once the receiver pushes back.
pub(crate) struct StreamSink {
    socket: TcpStream,
    state: Mutex<SinkState>,
    writer: Mutex<mpsc::Sender<Option<Vec<u8>>>>,
    in_flight: AtomicUsize,
}

impl StreamSink {
    fn start(socket: TcpStream) -> io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
        let sink = Arc::new(StreamSink {
            socket: socket.try_clone()?,
            state: Mutex::new(SinkState {
                queued: 0,
                closed: false,
            }),
            writer: Mutex::new(tx),
            in_flight: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&sink);
        std::thread::Builder::new()
            .name("tcp-writer".into())
            .spawn(move || {
                let mut socket = socket;
                for item in rx {
                    let ok = match &item {
                        Some(bytes) => socket.write_all(bytes).is_ok(),
                        None => {
                            let _ = socket.shutdown(Shutdown::Write);
                            true
                        }
                    };
                    let Some(sink) = weak.upgrade() else { break };
                    if let Ok(mut st) = sink.state.lock() {
                        st.queued = st.queued.saturating_sub(1);
                        st.closed |= !ok;
                    }
                    if let Some(b) = item {
                        sink.in_flight.fetch_sub(b.len(), Ordering::Relaxed);
                    }
                }
            })?;
        Ok(sink)
    }

    /// Called by the release thread at the chunk's instant: `None` is the end
    /// of the stream. Never blocks.
    pub(crate) fn release(&self, chunk: Option<Vec<u8>>) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let len = chunk.as_ref().map_or(0, Vec::len);
        if st.closed {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        let rest = match chunk {
            None if st.queued == 0 => {
                let _ = self.socket.shutdown(Shutdown::Write);
                return;
            }
            None => None,
            Some(bytes) if st.queued == 0 => match send_now(&self.socket, &bytes) {
                Ok(n) if n == bytes.len() => {
                    self.in_flight.fetch_sub(len, Ordering::Relaxed);
                    return;
                }
                Ok(n) => {
                    self.in_flight.fetch_sub(n, Ordering::Relaxed);
                    Some(bytes[n..].to_vec())
                }
                Err(_) => {
                    st.closed = true;
                    self.in_flight.fetch_sub(len, Ordering::Relaxed);
                    return;
                }
            },
            Some(bytes) => Some(bytes),
        };
        st.queued += 1;
        if let Ok(w) = self.writer.lock() {
            let _ = w.send(rest);
        }
    }
}

/// One non-blocking send: the bytes the kernel took (0 if its buffer is full).
fn send_now(socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd and a live buffer of the given length.
        let n = unsafe {
            libc::send(
                socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, bytes);
        Ok(0)
    }
}

/// Reads `from`, passes each chunk through `path`, and has it released to
/// `to` at its delivery time; ends with a half-close in the same direction.
fn pump(mut from: TcpStream, to: TcpStream, path: Arc<Mutex<Direction>>, clock: Arc<ReleaseClock>) {
    let Ok(sink) = StreamSink::start(to) else {
        return;
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        while sink.in_flight.load(Ordering::Relaxed) > MAX_IN_FLIGHT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                // The end of the stream crosses the path like its data: it
                // leaves now, after everything before it. (Releasing it at
                // the last chunk's instant would send it as early as that,
                // and count a connection's idle time as release lateness.)
                let Ok(at) = path.lock().map(|mut d| d.handle_stream_end(Instant::now())) else {
                    return;
                };
                clock.stream_at(at, &sink, None);
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
        sink.in_flight.fetch_add(n, Ordering::Relaxed);
        if !clock.stream_at(at, &sink, Some(buf[..n].to_vec())) {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Read);
}
