//! The campaign poll against a real collector, with a real probe's
//! uploader, over QUIC and over HTTPS, on SQLite and on PostgreSQL: the
//! assigned version comes back until the probe has it, then `current`; a
//! token is checked as for batches; each heartbeat is kept as the probe's
//! health and counted in `/metrics`.

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/collector.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{add_token, setup, setup_on, tcp_only_forwarder, uploader, Setup};
use vantage_collector::StoreLocation;
use vantage_store::fleet::{Assignee, PhaseSwitch};
use vantage_wire::campaign::{CampaignAnswer, Heartbeat, PollStatus};
use vantage_wire::Labels;

const BODY: &str = "window = \"60s\"\nmetrics = [\"udp_rtt\"]\n";

fn heartbeat(probe: &str, country: &str) -> Heartbeat {
    let mut labels = Labels::new();
    labels.insert("country", country).unwrap();
    Heartbeat {
        probe_id: probe.into(),
        software: "vantage 0.1.0".into(),
        backlog_batches: 4,
        backlog_bytes: 40_000,
        uptime_s: 61,
        clock_offset: Some((-1_500, 200)),
        labels,
        window_ms: 60_000,
        ..Heartbeat::default()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_polls_its_campaign_over_quic_and_https() {
    poll_cases(setup().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_polls_its_campaign_on_postgres() {
    let server = pg::TestPostgres::start();
    let db = StoreLocation::Postgres(Box::new(server.location("vantage")));
    poll_cases(setup_on(db, tempfile::tempdir().unwrap()).await).await;
}

async fn poll_cases(s: Setup) {
    let t1 = add_token(&s.db, "vm-in-1");
    let t2 = add_token(&s.db, "vm-my-1");
    {
        let mut store = s.db.open().unwrap();
        let switch = PhaseSwitch {
            at_unix_ms: 1_796_256_000_000,
            phase: "after".into(),
        };
        store.put_campaign("move", BODY, &[], 1).unwrap();
        store.put_campaign("move", BODY, &[switch], 2).unwrap();
        store
            .assign("move", &Assignee::Labels("country=IN".into()), 3)
            .unwrap();
    }
    let https_only = tcp_only_forwarder(s.collector.https_addr()).await;
    for (transport, port) in [
        ("QUIC", s.collector.quic_addr().port()),
        ("HTTPS", https_only),
    ] {
        let mut probe = uploader(&s, port, &t1);
        let before = now_us();
        let a: CampaignAnswer = probe
            .poll(&heartbeat("vm-in-1", "IN"), Instant::now())
            .await
            .unwrap();
        assert_eq!(a.status, PollStatus::Campaign, "{transport}: {a:?}");
        assert!(
            (before..=now_us()).contains(&a.collector_unix_us),
            "{transport}: the collector's clock is in the answer"
        );
        let doc = a.campaign.unwrap();
        assert_eq!((doc.name.as_str(), doc.version), ("move", 2));
        assert_eq!(doc.body, BODY);
        assert_eq!(doc.phases.len(), 1, "{transport}");

        let mut has_it = heartbeat("vm-in-1", "IN");
        has_it.applied = Some(("move".into(), 2));
        let a = probe.poll(&has_it, Instant::now()).await.unwrap();
        assert_eq!(a.status, PollStatus::Current, "{transport}: {a:?}");
        assert!(a.campaign.is_none());
        let mut old = heartbeat("vm-in-1", "IN");
        old.applied = Some(("move".into(), 1));
        let a = probe.poll(&old, Instant::now()).await.unwrap();
        assert_eq!(a.status, PollStatus::Campaign, "{transport}: behind");

        // Another probe's id with this token; no token a store knows;
        // labels no assignment matches.
        let a = probe
            .poll(&heartbeat("vm-my-1", "MY"), Instant::now())
            .await
            .unwrap();
        assert_eq!(a.status, PollStatus::Forbidden, "{transport}: {a:?}");
        assert!(a.reason.contains("vm-in-1"), "{}", a.reason);
        let a = uploader(&s, port, "vt_wrong")
            .poll(&heartbeat("vm-in-1", "IN"), Instant::now())
            .await
            .unwrap();
        assert_eq!(a.status, PollStatus::Unauthorized, "{transport}: {a:?}");
        let a = uploader(&s, port, &t2)
            .poll(&heartbeat("vm-my-1", "MY"), Instant::now())
            .await
            .unwrap();
        assert_eq!(a.status, PollStatus::Unassigned, "{transport}: {a:?}");
    }

    // The health kept is the last heartbeat of each probe that proved
    // who it is; a refused poll keeps nothing.
    let health = s.db.open().unwrap().fleet_health().unwrap();
    let ids: Vec<&str> = health.iter().map(|h| h.probe_id.as_str()).collect();
    assert_eq!(ids, ["vm-in-1", "vm-my-1"]);
    let h = &health[0];
    assert_eq!(h.applied, Some(("move".into(), 1)));
    assert_eq!(
        (h.backlog_batches, h.uptime_s, h.window_ms),
        (4, 61, 60_000)
    );
    assert_eq!(h.clock_offset, Some((-1_500, 200)));
    assert_eq!(h.labels, "country=IN");
    assert!(h.seen_unix_ms.abs_diff(now_us() / 1_000) < 60_000);

    let text = s.collector.metrics().render();
    for line in [
        "vantage_collector_campaign_polls_total{status=\"campaign\"} 4",
        "vantage_collector_campaign_polls_total{status=\"current\"} 2",
        "vantage_collector_campaign_polls_total{status=\"forbidden\"} 2",
        "vantage_collector_campaign_polls_total{status=\"unauthorized\"} 2",
        "vantage_collector_campaign_polls_total{status=\"unassigned\"} 2",
        "vantage_collector_probe_backlog_batches{probe=\"vm-in-1\"} 4.0",
        "vantage_collector_probe_campaign_version{probe=\"vm-in-1\",campaign=\"move\"} 1",
        "vantage_collector_probe_campaign_assigned_version{probe=\"vm-in-1\",campaign=\"move\"} 2",
        "vantage_collector_probe_window_seconds{probe=\"vm-in-1\"} 60.0",
        // The cut-over, for the dashboard's annotation.
        "vantage_campaign_phase_start_seconds{campaign=\"move\",phase=\"after\"} 1796256000.0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    tokio::time::timeout(Duration::from_secs(10), s.collector.shutdown())
        .await
        .unwrap();
}
