//! `path_trace` against the lab's namespace topology (#19): a probe, three
//! routers (the second silent) and a data centre, 40 ms each way. The
//! trace must find every answering router at its TTL with a round trip
//! within tolerance, mark the silent one, and reach the target; a target
//! that filters every probe gives lost hops, not an error. Needs root.

use std::net::IpAddr;
use std::time::Duration;
use vantage_lab::path::DirectionSpec;
use vantage_lab::topology::{HostId, RunningTopology, Topology};
use vantage_lab::{PathSpec, ReleaseClock};
use vantage_probe::trace::{run_trace, End, TraceMethod, TracePlan};

struct Chain {
    topology: RunningTopology,
    probe: HostId,
    routers: Vec<IpAddr>,
    dc: IpAddr,
}

/// Probe — r1 — r2 (silent) — r3 — data centre; the routers at a
/// quarter, half and three quarters of 40 ms each way.
fn chain() -> Chain {
    let mut topo = Topology::new().unwrap();
    let probe = topo.add_host("trace-probe").unwrap();
    let routers = [
        topo.add_router("trace-r1", false).unwrap(),
        topo.add_router("trace-r2", true).unwrap(),
        topo.add_router("trace-r3", false).unwrap(),
    ];
    let dc = topo.add_host("trace-dc").unwrap();
    let d = DirectionSpec {
        delay: Duration::from_millis(40),
        ..DirectionSpec::default()
    };
    let cuts = [0.25, 0.5, 0.75];
    let segments: Vec<PathSpec> = d
        .split(&cuts, false)
        .into_iter()
        .zip(d.split(&cuts, true))
        .map(|(up, down)| PathSpec { up, down })
        .collect();
    topo.link_via(probe, &routers, dc, &segments, 5);
    let routers = routers.iter().map(|r| topo.addr(*r)).collect();
    let dc_ip = topo.addr(dc);
    Chain {
        topology: topo.start(ReleaseClock::start().unwrap()).unwrap(),
        probe,
        routers,
        dc: dc_ip,
    }
}

fn plan() -> TracePlan {
    TracePlan {
        probe_timeout: Duration::from_millis(400),
        spacing: Duration::from_millis(20),
        silent_limit: 3,
        ..TracePlan::default()
    }
}

/// Lets the probe's namespace use ICMP datagram sockets (its
/// `ping_group_range` may hold no group by default).
fn allow_ping_sockets(c: &Chain) {
    c.topology
        .netns(c.probe)
        .run(|| std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"))
        .unwrap()
        .unwrap();
}

#[test]
#[ignore = "needs root"]
fn the_trace_finds_each_answering_router_at_its_ttl_and_reaches_the_target() {
    let c = chain();
    allow_ping_sockets(&c);
    for method in [TraceMethod::Udp { port_base: 33434 }, TraceMethod::Icmp] {
        let dc = c.dc;
        let trace = c
            .topology
            .netns(c.probe)
            .run(move || run_trace(dc, method, plan()))
            .unwrap()
            .unwrap();
        let text = format!("{method:?}: {trace:?}");
        assert_eq!(trace.end, End::Reached, "{text}");
        assert_eq!(trace.hops.len(), 4, "{text}");
        // TTL, who, the round trip due (ms): each hop at its share of the
        // path's 80 ms round trip; the silent router is a gap.
        let due = [
            (1, Some(c.routers[0]), 20.0),
            (2, None, 0.0),
            (3, Some(c.routers[2]), 60.0),
            (4, Some(c.dc), 80.0),
        ];
        for (hop, (ttl, who, ms)) in trace.hops.iter().zip(due) {
            assert_eq!((hop.ttl, hop.address), (ttl, who), "{text}");
            if who.is_some() {
                for rtt in hop.rtts.iter().flatten() {
                    let got = rtt.as_secs_f64() * 1e3;
                    assert!(
                        got >= ms && got < ms + 6.0,
                        "TTL {ttl}: {got} ms, due {ms}: {text}"
                    );
                }
                assert!(hop.rtts[0].is_some(), "{text}");
            } else {
                assert_eq!(hop.rtts, vec![None; 3], "{text}");
            }
        }
        assert_eq!(
            trace.fingerprint(),
            format!("{} * {} {}", c.routers[0], c.routers[2], c.dc)
        );
        let (sent, lost) = trace.sent_lost();
        assert_eq!((sent, lost), (3 + 3 + 3 + 1, 3), "{text}");
    }
}

#[test]
#[ignore = "needs root"]
fn a_target_that_filters_every_probe_gives_lost_hops_not_an_error() {
    let c = chain();
    // An address no host of the topology has: the emulator has no route
    // for it, so every probe vanishes, as into a filter.
    let nowhere: IpAddr = "198.18.200.200".parse().unwrap();
    let trace = c
        .topology
        .netns(c.probe)
        .run(move || run_trace(nowhere, TraceMethod::Udp { port_base: 33434 }, plan()))
        .unwrap()
        .expect("a filtered target is not an error");
    assert_eq!(trace.end, End::Silent, "{trace:?}");
    assert_eq!(trace.hops.len(), 3);
    assert_eq!(trace.hop_count(), 0);
    let (sent, lost) = trace.sent_lost();
    assert_eq!((sent, lost), (9, 9));
}
