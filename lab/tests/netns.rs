//! Namespace mode: every IP packet between two namespaces crosses the
//! emulated path, the kernel's TCP handshake included, and every
//! namespace goes when the topology does. Needs root.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};
use vantage_lab::path::DirectionSpec;
use vantage_lab::topology::Topology;
use vantage_lab::{PathSpec, ReleaseClock};

fn one_way(ms: u64) -> DirectionSpec {
    DirectionSpec {
        delay: Duration::from_millis(ms),
        ..DirectionSpec::default()
    }
}

/// How far above the injected delay a figure may be: the release
/// thread's lateness and the kernel's own work, generous for a busy
/// 2-core VM.
const SLACK: Duration = Duration::from_millis(6);

#[test]
#[ignore = "needs root"]
fn udp_and_the_tcp_handshake_take_the_paths_round_trip_and_namespaces_go_after() {
    let mut topo = Topology::new().unwrap();
    let a = topo.add_host("test-probe").unwrap();
    let b = topo.add_host("test-dc").unwrap();
    // Asymmetric: 20 ms up, 30 ms down.
    let spec = PathSpec {
        up: one_way(20),
        down: one_way(30),
    };
    let path = topo.link(a, b, &spec, 7);
    let running = topo.start(ReleaseClock::start().unwrap()).unwrap();
    let names: Vec<String> = running.namespaces().into_iter().map(String::from).collect();
    assert_eq!(names.len(), 2);
    let b_ip: IpAddr = running.addr(b);
    let rtt = Duration::from_millis(50);

    // A UDP echo in b, a client in a.
    let echo = running
        .netns(b)
        .run(|| UdpSocket::bind((b_ip, 0)))
        .unwrap()
        .unwrap();
    let echo_addr = echo.local_addr().unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..10 {
            let Ok((n, from)) = echo.recv_from(&mut buf) else {
                return;
            };
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let client = running
        .netns(a)
        .run(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    for i in 0..10u8 {
        let sent = Instant::now();
        client.send_to(&[i; 64], echo_addr).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        let took = sent.elapsed();
        assert_eq!((n, from, buf[0]), (64, echo_addr, i));
        assert!(
            took >= rtt && took < rtt + SLACK,
            "UDP round trip {took:?}, path {rtt:?}"
        );
    }
    echo_thread.join().unwrap();

    // TCP: the SYN goes up, the SYN-ACK comes down, so connect() takes
    // one round trip; relay mode answered it at the relay in ~0.2 ms.
    let listener = running
        .netns(b)
        .run(|| TcpListener::bind((b_ip, 0)))
        .unwrap()
        .unwrap();
    let server: SocketAddr = listener.local_addr().unwrap();
    let accept = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        s.write_all(&got).unwrap();
    });
    let (connected, took) = running
        .netns(a)
        .run(move || {
            let start = Instant::now();
            let s = TcpStream::connect_timeout(&server, Duration::from_secs(3));
            (s, start.elapsed())
        })
        .unwrap();
    let mut stream = connected.unwrap();
    assert!(
        took >= rtt && took < rtt + SLACK,
        "TCP connect {took:?}, path {rtt:?}"
    );
    stream.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    accept.join().unwrap();

    let (up, down) = path.counters();
    assert!(up.delivered >= 10 + 3, "{up:?}");
    assert!(down.delivered >= 10 + 2, "{down:?}");
    assert_eq!(up.lost + up.queue_drops + down.lost + down.queue_drops, 0);

    drop(running);
    for name in names {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "{name} left behind"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn traceroute_finds_each_answering_router_at_its_share_of_the_delay() {
    // Probe — r1 — r2 (silent) — r3 — data centre, 40 ms each way, the
    // routers at a quarter, half and three quarters of it.
    let mut topo = Topology::new().unwrap();
    let a = topo.add_host("hops-probe").unwrap();
    let routers = [
        topo.add_router("hops-r1", false).unwrap(),
        topo.add_router("hops-r2", true).unwrap(),
        topo.add_router("hops-r3", false).unwrap(),
    ];
    let b = topo.add_host("hops-dc").unwrap();
    let path = PathSpec {
        up: one_way(40),
        down: one_way(40),
    };
    let segments: Vec<PathSpec> = path
        .up
        .split(&[0.25, 0.5, 0.75], false)
        .into_iter()
        .zip(path.down.split(&[0.25, 0.5, 0.75], true))
        .map(|(up, down)| PathSpec { up, down })
        .collect();
    topo.link_via(a, &routers, b, &segments, 3);
    let addrs: Vec<IpAddr> = routers.iter().map(|r| topo.addr(*r)).collect();
    let b_ip = topo.addr(b);
    let running = topo.start(ReleaseClock::start().unwrap()).unwrap();
    let probe_ns = running.netns(a).name().to_string();

    // Packets that outlive the routers cross the chain in one step: the
    // reply comes back with its TTL lowered by the three routers, after
    // the path's 80 ms.
    let ping = std::process::Command::new("ip")
        .args([
            "netns", "exec", &probe_ns, "ping", "-n", "-c", "5", "-i", "0.1",
        ])
        .arg(b_ip.to_string())
        .output()
        .expect("ping (apt-get install iputils-ping)");
    let text = String::from_utf8_lossy(&ping.stdout);
    let replies: Vec<&str> = text.lines().filter(|l| l.contains("bytes from")).collect();
    assert_eq!(replies.len(), 5, "{text}");
    for reply in replies {
        assert!(reply.contains("ttl=61"), "TTL not lowered by 3: {reply}");
        let ms: f64 = reply
            .split("time=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert!((80.0..86.0).contains(&ms), "{reply}");
    }
    let express = running
        .counters()
        .express
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(express >= 10, "{express} packets took the express route");

    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &probe_ns, "traceroute"])
        .args(["-n", "-q", "3", "-w", "1", "-m", "6"])
        .arg(b_ip.to_string())
        .output()
        .expect("traceroute (apt-get install traceroute)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // "TTL  ADDRESS  RTT ms  RTT ms  RTT ms", or "TTL  * * *".
    let hops: Vec<(u32, Option<IpAddr>, Vec<f64>)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ttl = words.next()?.parse().ok()?;
            let rest: Vec<&str> = words.collect();
            let addr = rest.first().and_then(|w| w.parse().ok());
            let rtts = rest
                .windows(2)
                .filter(|w| w[1] == "ms")
                .filter_map(|w| w[0].parse().ok())
                .collect();
            Some((ttl, addr, rtts))
        })
        .collect();
    let expect = [
        (1, Some(addrs[0]), 20.0),
        (2, None, 0.0),
        (3, Some(addrs[2]), 60.0),
        (4, Some(b_ip), 80.0),
    ];
    assert_eq!(hops.len(), expect.len(), "{text}");
    for ((ttl, addr, rtts), (want_ttl, want_addr, want_rtt)) in hops.iter().zip(expect) {
        assert_eq!((*ttl, *addr), (want_ttl, want_addr), "{text}");
        if want_addr.is_some() {
            assert_eq!(rtts.len(), 3, "every probe answered: {text}");
            for rtt in rtts {
                assert!(
                    *rtt >= want_rtt && *rtt < want_rtt + 6.0,
                    "TTL {ttl}: {rtt} ms, expected {want_rtt}: {text}"
                );
            }
        } else {
            assert!(rtts.is_empty(), "the silent router answered: {text}");
        }
    }
}
