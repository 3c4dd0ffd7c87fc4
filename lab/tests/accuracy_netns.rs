//! The lab's accuracy in namespace mode: the probe and the responder each
//! in a namespace of their own, every IP packet through the packet
//! emulator, so TCP's handshake, retransmissions and queue meet the path
//! as they would a real one. The same checks as `accuracy.rs`, and the
//! ones only this mode can make. Needs root; one test at a time (they
//! measure time on two cores).

// Each test has its own runtime; the lock only orders whole tests.
#![allow(clippy::await_holding_lock)]

mod common;
use common::*;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use vantage_lab::netns::NsRuntime;
use vantage_lab::path::{DirectionSpec, Loss};
use vantage_lab::topology::{NsPath, RunningTopology, Topology};
use vantage_lab::{PathSpec, ReleaseClock};
use vantage_probe::{run, ProbeArgs, RunSummary};
use vantage_responder::{Responder, ResponderConfig};
use vantage_wire::Metric;

static SERIAL: Mutex<()> = Mutex::new(());

/// A probe namespace and a responder namespace joined by one path.
struct NsBench {
    responder: Option<Responder>,
    dc_rt: NsRuntime,
    probe_rt: NsRuntime,
    path: NsPath,
    clock: Arc<ReleaseClock>,
    dc: IpAddr,
    _topology: RunningTopology,
}

impl NsBench {
    async fn start(spec: &PathSpec, seed: u64) -> Self {
        let mut topo = Topology::new().unwrap();
        let probe = topo.add_host("acc-probe").unwrap();
        let dc = topo.add_host("acc-dc").unwrap();
        let path = topo.link(probe, dc, spec, seed);
        let clock = ReleaseClock::start().unwrap();
        let topology = topo.start(clock.clone()).unwrap();
        let dc_ip = topology.addr(dc);
        let dc_rt = topology.runtime(dc).unwrap();
        let probe_rt = topology.runtime(probe).unwrap();
        let config = ResponderConfig {
            bind: dc_ip,
            ..ResponderConfig::local().unwrap()
        };
        let responder = dc_rt
            .spawn(Responder::start(config))
            .await
            .unwrap()
            .unwrap();
        NsBench {
            responder: Some(responder),
            dc_rt,
            probe_rt,
            path,
            clock,
            dc: dc_ip,
            _topology: topology,
        }
    }

    fn responder(&self) -> &Responder {
        self.responder.as_ref().expect("running")
    }

    async fn probe(&self, f: impl FnOnce(&mut ProbeArgs)) -> RunSummary {
        let state = tempfile::tempdir().unwrap();
        let r = self.responder();
        let mut args = accuracy_args(
            (self.dc, r.quic_addr().port()).into(),
            r.stamp_addr().port(),
            r.fingerprint().to_string(),
            state.path(),
        );
        f(&mut args);
        let config = args.into_config().unwrap();
        let (_tx, stop) = watch::channel(false);
        self.probe_rt
            .spawn(async move { run(config, stop).await })
            .await
            .unwrap()
            .unwrap()
    }

    fn lateness(&self) -> String {
        let (p50, n) = self.clock.lateness(0.5);
        let (p99, _) = self.clock.lateness(0.99);
        format!("{n} releases, lateness p50 {p50:?}, p99 {p99:?}")
    }

    async fn stop(mut self) {
        if let Some(r) = self.responder.take() {
            let _ = self.dc_rt.spawn(r.shutdown()).await;
        }
    }
}

/// Injected one-way delays of 5, 40 and 150 ms: every metric takes the
/// round trips its protocol needs on top of the floor (the same metric
/// through a zero-delay path, before and after), `tcp_connect` included:
/// the SYN and SYN-ACK cross the path, one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn every_metric_takes_its_round_trips_tcp_connect_included() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cases = RoundTrips::default();
    for one_way_ms in [0u64, 5, 40, 150, 0] {
        let bench = NsBench::start(&symmetric(Duration::from_millis(one_way_ms)), 1).await;
        let summary = bench.probe(|a| delay_case(a, one_way_ms)).await;
        println!("{one_way_ms} ms one way: {}", bench.lateness());
        bench.stop().await;
        let metrics = [
            (Metric::UdpRtt, 1.0),
            (Metric::QuicHandshake, 1.0),
            (Metric::QuicRequest, 1.0),
            (Metric::QuicColdRequest, 2.0),
            (Metric::TcpConnect, 1.0),
            (Metric::TlsHandshake, 1.0),
            (Metric::HttpsRequest, 1.0),
        ];
        cases.add(
            format!("{one_way_ms} ms one way"),
            one_way_ms,
            &summary,
            &metrics,
        );
    }
    println!("{}", cases.check_all().join("\n"));
}

/// Through a 20 Mbit/s bottleneck whose 32 KiB queue (13 ms of it, about
/// the path's bandwidth-delay product) drops what does not fit,
/// photo-sync goodput over HTTPS (three TCP connections at once, real
/// slow start and loss recovery) and over QUIC is at most the cap and
/// within 25 % below it; the queue did drop packets. (With a 128 KiB
/// queue TCP's windows fit in it on some runs and nothing dropped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn photo_sync_goodput_meets_the_cap_with_real_drops() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for transport in [
        vantage_probe::SyncTransport::Https,
        vantage_probe::SyncTransport::Quic,
    ] {
        let bench = NsBench::start(&capped(Duration::from_millis(5), 20, 32 * 1024), 3).await;
        let summary = bench
            .probe(|a| {
                photosync_args(a, transport);
                a.duration = Some(Duration::from_secs(1));
            })
            .await;
        let (up, _) = bench.path.counters();
        println!("{transport:?}: {}", bench.lateness());
        bench.stop().await;
        let goodput = series(&summary, Metric::PhotosyncGoodput);
        assert_eq!(goodput.histogram.len(), 1, "{transport:?}: {goodput:?}");
        assert_eq!(goodput.bytes, 6_000_000, "{transport:?}");
        let mbps = goodput.histogram.value_at_quantile(0.5) as f64 / 1000.0;
        println!(
            "{transport:?}: goodput {mbps:.2} Mbit/s through a 20 Mbit/s cap, {} packets dropped at the queue",
            up.queue_drops
        );
        assert!(
            (15.0..=20.0).contains(&mbps),
            "{transport:?}: {mbps:.2} Mbit/s, expected 15–20"
        );
        assert!(up.queue_drops > 0, "{transport:?}: the queue never dropped");
    }
}

/// Bufferbloat with a real TCP queue: while an HTTPS sync (TCP's own
/// congestion control) fills a 20 Mbit/s bottleneck's 100 kB queue (40 ms
/// of it), `loaded_rtt` rises above the idle `quic_request` by the queue's
/// delay: between half of it and all of it plus 5 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn loaded_rtt_shows_the_queue_a_tcp_sync_builds() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let queue = 100_000usize;
    let queue_ms = queue as f64 * 8.0 / 20e6 * 1e3;
    let bench = NsBench::start(&capped(Duration::from_millis(5), 20, queue), 4).await;
    let summary = bench
        .probe(|a| {
            photosync_args(a, vantage_probe::SyncTransport::Https);
            a.metrics.push("quic_request".into());
            a.rates = vec!["quic_request=20".into(), "loaded_rtt=20".into()];
            a.sync_every = Some(Duration::from_secs(5));
            a.sync_timeout = Some(Duration::from_secs(5));
            a.duration = Some(Duration::from_secs(8));
        })
        .await;
    bench.stop().await;
    let idle = p50_ms(series(&summary, Metric::QuicRequest));
    let loaded_series = series(&summary, Metric::LoadedRtt);
    let loaded = p50_ms(loaded_series);
    let rise = loaded - idle;
    println!(
        "idle quic_request p50 {idle:.1} ms, loaded_rtt p50 {loaded:.1} ms ({} samples), rise {rise:.1} ms, queue {queue_ms:.1} ms",
        loaded_series.histogram.len()
    );
    assert!(loaded_series.histogram.len() >= 20, "{loaded_series:?}");
    assert!(
        rise >= 0.5 * queue_ms && rise <= queue_ms + 5.0,
        "loaded_rtt rose {rise:.1} ms over idle; the queue holds {queue_ms:.1} ms"
    );
}

/// Loss on a TCP path shows as retransmission delay, not as loss: with
/// 3 % lost each way on a 40 ms round trip, every `https_request` is
/// answered (TCP retransmits), the median stays one round trip, and the
/// requests that met a loss wait for a retransmission, at least another
/// round trip. Without loss, none waits that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn tcp_loss_shows_as_retransmission_delay() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rtt = 40.0;
    let mut slow_share = Vec::new();
    for loss in [0.0, 0.03] {
        let d = DirectionSpec {
            delay: Duration::from_millis(20),
            loss: if loss > 0.0 {
                Loss::Bernoulli { p: loss }
            } else {
                Loss::None
            },
            ..Default::default()
        };
        let bench = NsBench::start(
            &PathSpec {
                up: d.clone(),
                down: d,
            },
            9,
        )
        .await;
        let summary = bench
            .probe(|a| {
                a.metrics = vec!["https_request".into()];
                a.rates = vec!["https_request=20".into()];
                a.duration = Some(Duration::from_secs(10));
            })
            .await;
        let (up, down) = bench.path.counters();
        bench.stop().await;
        let s = series(&summary, Metric::HttpsRequest);
        let h = &s.histogram;
        let n = h.len() as f64;
        assert!(n > 150.0, "{n} requests");
        assert_eq!(s.lost + s.error_total(), 0, "TCP recovers: {:?}", s.errors);
        let p50 = h.value_at_quantile(0.5) as f64 / 1000.0;
        assert!(
            (rtt..rtt + 5.0).contains(&p50),
            "https_request p50 {p50} ms on a {rtt} ms path with {loss} loss"
        );
        // Waited at least one more round trip than the request needs.
        let slow = h
            .iter_recorded()
            .filter(|v| v.value_iterated_to() as f64 / 1000.0 >= 2.0 * rtt)
            .map(|v| v.count_at_value())
            .sum::<u64>() as f64
            / n;
        println!(
            "loss {loss}: https_request p50 {p50:.1} ms, p99 {:.1} ms, {:.1} % waited a retransmission; path dropped {} up, {} down",
            h.value_at_quantile(0.99) as f64 / 1000.0,
            slow * 100.0,
            up.lost,
            down.lost
        );
        slow_share.push(slow);
    }
    assert!(slow_share[0] < 0.01, "no loss, yet {} slow", slow_share[0]);
    // A request and its response are a packet or two each way: about
    // 1 − 0.97² ≈ 6 % meet a loss.
    assert!(
        (0.02..0.15).contains(&slow_share[1]),
        "{} % of requests waited a retransmission with 3 % loss each way",
        slow_share[1] * 100.0
    );
}
