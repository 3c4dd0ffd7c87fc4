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
