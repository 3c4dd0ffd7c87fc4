//! Namespace mode's packet emulator next to the relay (#18 item 7): how
//! many packets per second each forwards per core of CPU its own threads
//! spend, and how late the release clock lets them go while it does.
//!
//! Each mode carries 100-byte UDP datagrams over a path of 10 ms each way
//! with no other impairment, offered at a paced rate for 2 s (rates
//! rising; at most 2 s × the highest rate), from a sender to a receiver
//! that counts them. The CPU is that of the forwarding threads only
//! (`lab-*`, `udp-*`, read from /proc), so the sender's and receiver's
//! own cost is left out. Each rate gets a fresh path and release clock.
//!
//! `cargo bench -p vantage-lab --bench emulator` (the emulator needs
//! root: namespaces and TUN devices; without it the relay alone is
//! measured, and the output says so). `-- --quick` offers one low rate.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vantage_lab::path::{Direction, DirectionSpec};
use vantage_lab::topology::Topology;
use vantage_lab::{PathSpec, ReleaseClock, UdpRelay};

/// CPU seconds spent so far by this process's forwarding threads.
fn forwarding_cpu() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !(comm.starts_with("lab-") || comm.starts_with("udp-")) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime
        // are the 14th and 15th of the whole line.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += field(11) + field(12);
        }
    }
    total as f64 / ticks
}

struct Outcome {
    sent: u64,
    received: u64,
    wall: Duration,
    cpu: f64,
    lateness: (Duration, Duration, u64),
}

/// Offers `rate` datagrams a second from `send` to `to` for 2 s, paced
/// in 1 ms steps, while `recv` counts what arrives.
fn offer(
    send: UdpSocket,
    recv: UdpSocket,
    to: SocketAddr,
    rate: u64,
    clock: &ReleaseClock,
) -> Outcome {
    recv.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let received = Arc::new(AtomicU64::new(0));
    let counter = {
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while recv.recv(&mut buf).is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let cpu0 = forwarding_cpu();
    let start = Instant::now();
    let packet = [7u8; 100];
    let run = Duration::from_secs(2);
    let count = rate * 2;
    let mut sent = 0;
    while sent < count && start.elapsed() < run + Duration::from_secs(1) {
        // Due by now at `rate`: send up to it, then wait a millisecond.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(count) {
            if send.send_to(&packet, to).is_ok() {
                sent += 1;
            } else {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Until the last arrives (10 ms path) and the counter times out.
    let _ = counter.join();
    let wall = start.elapsed().saturating_sub(Duration::from_millis(200));
    let cpu = forwarding_cpu() - cpu0;
    let (p50, n) = clock.lateness(0.5);
    let (p99, _) = clock.lateness(0.99);
    Outcome {
        sent,
        received: received.load(Ordering::Relaxed),
        wall,
        cpu,
        lateness: (p50, p99, n),
    }
}

fn ten_ms() -> PathSpec {
    let d = DirectionSpec {
        delay: Duration::from_millis(10),
        ..DirectionSpec::default()
    };
    PathSpec {
        up: d.clone(),
        down: d,
    }
}

fn relay(rate: u64) -> Outcome {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let clock = ReleaseClock::start().expect("release thread");
    let spec = ten_ms();
    let relay = UdpRelay::start(
        "127.0.0.1:0".parse().expect("address"),
        sink.local_addr().expect("address"),
        Arc::new(Mutex::new(Direction::new(spec.up, 1))),
        Arc::new(Mutex::new(Direction::new(spec.down, 2))),
        clock.clone(),
    )
    .expect("relay");
    let send = UdpSocket::bind("127.0.0.1:0").expect("bind");
    offer(send, sink, relay.addr(), rate, &clock)
}

fn emulator(rate: u64) -> Result<Outcome, String> {
    let mut topo = Topology::new().map_err(|e| e.to_string())?;
    let a = topo.add_host("bench-a").map_err(|e| e.to_string())?;
    let b = topo.add_host("bench-b").map_err(|e| e.to_string())?;
    topo.link(a, b, &ten_ms(), 1);
    let clock = ReleaseClock::start().map_err(|e| e.to_string())?;
    let running = topo.start(clock.clone()).map_err(|e| e.to_string())?;
    let b_ip = running.addr(b);
    let recv = running
        .netns(b)
        .run(|| UdpSocket::bind((b_ip, 0)))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let to = recv.local_addr().map_err(|e| e.to_string())?;
    let send = running
        .netns(a)
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(offer(send, recv, to, rate, &clock))
}

fn row(name: &str, rate: u64, o: &Outcome) {
    let pps = o.received as f64 / o.wall.as_secs_f64();
    let per_core = if o.cpu > 0.0 {
        format!("{:.0}", o.received as f64 / o.cpu)
    } else {
        "n/a".into()
    };
    println!(
        "| {name} | {rate} | {} | {} ({:.1} %) | {pps:.0} | {:.2} s | {per_core} | {:.1} µs / {:.1} µs over {} |",
        o.sent,
        o.received,
        100.0 * o.received as f64 / o.sent.max(1) as f64,
        o.cpu,
        o.lateness.0.as_secs_f64() * 1e6,
        o.lateness.1.as_secs_f64() * 1e6,
        o.lateness.2
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let rates: &[u64] = if quick {
        &[5_000]
    } else {
        &[5_000, 10_000, 20_000, 40_000, 80_000]
    };
    println!(
        "100-byte UDP datagrams, 10 ms each way, no other impairment; each rate offered for 2 s\n"
    );
    println!("| mode | offered/s | sent | received | received/s | forwarding CPU | packets per CPU second | release lateness p50 / p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for &rate in rates {
        row("relay (loopback)", rate, &relay(rate));
    }
    for &rate in rates {
        match emulator(rate) {
            Ok(o) => row("emulator (namespaces, TUN)", rate, &o),
            Err(why) => {
                println!("| emulator (namespaces, TUN) | {rate} | not measured: {why} | | | | | |");
                break;
            }
        }
    }
}
