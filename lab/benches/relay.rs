//! The lab relay's per-packet cost (issue "Benches"): the path model's
//! decision for one datagram (no IO), and one datagram's loopback transit
//! through a `UdpRelay` with no impairment next to the same datagram sent
//! straight to its destination.
//!
//! `cargo bench -p vantage-lab --bench relay`; CI runs it with `--test`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vantage_lab::path::{Direction, DirectionSpec, Jitter, Loss};
use vantage_lab::{ReleaseClock, UdpRelay};

fn decision(c: &mut Criterion) {
    let spec = DirectionSpec {
        delay: Duration::from_millis(80),
        jitter: Jitter::Uniform {
            half_width: Duration::from_millis(5),
        },
        loss: Loss::Bernoulli { p: 0.005 },
        rate_bps: Some(20_000_000),
        ..DirectionSpec::default()
    };
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("path decision for one 1200-byte datagram", |b| {
        let mut d = Direction::new(spec.clone(), 1);
        let start = Instant::now();
        let mut i = 0u64;
        b.iter(|| {
            // 1200 bytes every 480 µs: the 20 Mbit/s cap, never a queue build-up.
            i += 1;
            d.handle_datagram(start + Duration::from_micros(480 * i), black_box(1200))
        })
    });
    g.finish();
}

fn transit(c: &mut Criterion) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sink.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let clock = ReleaseClock::start().expect("release thread");
    let open = || Arc::new(Mutex::new(Direction::new(DirectionSpec::default(), 1)));
    let relay = UdpRelay::start(
        "127.0.0.1:0".parse().expect("address"),
        sink.local_addr().expect("address"),
        open(),
        open(),
        clock,
    )
    .expect("relay");
    let packet = [7u8; 100];
    let mut buf = [0u8; 2048];
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    for (name, to) in [
        (
            "100-byte datagram straight to its destination",
            sink.local_addr().expect("address"),
        ),
        (
            "100-byte datagram through the relay, no impairment",
            relay.addr(),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                client.send_to(&packet, to).expect("send");
                let n = sink.recv(&mut buf).expect("datagram arrives");
                assert_eq!(n, packet.len());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decision, transit);
criterion_main!(benches);
