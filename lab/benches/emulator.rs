//! Namespace mode's packet emulator next to the relay (#18 item 7): how
//! many packets per second each forwards per core of CPU its own threads
//! spend, and how late the release clock lets them go while it does.
//!
//! Each mode carries a bounded blast of 100-byte UDP datagrams (at most
//! 200,000, at most 10 s) over a path of 10 ms each way with no other
//! impairment, from a sender to a receiver that counts them. The CPU is
//! that of the forwarding threads only (`lab-*`, `udp-*`, read from
//! /proc), so the sender's and receiver's own cost is left out.
//!
//! `cargo bench -p vantage-lab --bench emulator` (the emulator needs
//! root: namespaces and TUN devices; without it the relay alone is
//! measured, and the output says so). `-- --quick` runs 20,000 packets.

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

/// Sends `count` datagrams from `send` to `to` as fast as the socket
/// takes them (for at most 10 s) while `recv` counts what arrives.
fn blast(
    send: UdpSocket,
    recv: UdpSocket,
    to: SocketAddr,
    count: u64,
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
    let mut sent = 0;
    while sent < count && start.elapsed() < Duration::from_secs(10) {
        if send.send_to(&packet, to).is_ok() {
            sent += 1;
        }
        // Let the forwarding threads keep up a little: bursts of 64.
        if sent % 64 == 0 {
            std::thread::yield_now();
        }
    }
    // Until the last arrives (10 ms path) and the counter times out.
    let _ = counter.join();
    let wall = start.elapsed() - Duration::from_millis(200);
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

fn relay(count: u64) -> Outcome {
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
    blast(send, sink, relay.addr(), count, &clock)
}

fn emulator(count: u64) -> Result<Outcome, String> {
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
    Ok(blast(send, recv, to, count, &clock))
}

fn row(name: &str, o: &Outcome) {
    let pps = o.received as f64 / o.wall.as_secs_f64();
    let per_core = if o.cpu > 0.0 {
        format!("{:.0}", o.received as f64 / o.cpu)
    } else {
        "n/a".into()
    };
    println!(
        "| {name} | {} | {} ({:.1} %) | {pps:.0} | {:.2} s | {per_core} | {:.1} µs / {:.1} µs over {} |",
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
    let count = if quick { 20_000 } else { 200_000 };
    println!("100-byte UDP datagrams, 10 ms each way, no other impairment; at most {count} sent, at most 10 s\n");
    println!("| mode | sent | received | received/s | forwarding CPU | packets per CPU second | release lateness p50 / p99 |");
    println!("|---|---|---|---|---|---|---|");
    row("relay (loopback)", &relay(count));
    match emulator(count) {
        Ok(o) => row("emulator (namespaces, TUN)", &o),
        Err(why) => println!("| emulator (namespaces, TUN) | not measured: {why} | | | | | |"),
    }
}
