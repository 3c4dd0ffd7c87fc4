//! Photo sync against a real responder on 127.0.0.1: uploads and downloads
//! over QUIC and HTTPS, receipts, integrity faults and batch timeouts.

use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use vantage_probe::{run, ProbeArgs, RunSummary, SyncDirection, SyncTransport};
use vantage_responder::{PhotoFault, Responder, ResponderConfig};
use vantage_wire::{ErrorClass, Metric, Series};

const PHOTO: u64 = 300_000;

fn sync_args(responder: &Responder, state: &Path, transport: SyncTransport) -> ProbeArgs {
    ProbeArgs {
        targets: vec![format!("dc=127.0.0.1:{}", responder.quic_addr().port())],
        stamp_port: Some(responder.stamp_addr().port()),
        pins: vec![responder.fingerprint().to_string()],
        state_dir: Some(state.to_path_buf()),
        quiet: true,
        seed: Some(5),
        metrics: vantage_probe::PHOTOSYNC_METRICS
            .map(|m| m.name().to_string())
            .to_vec(),
        window: Some(Duration::from_secs(1)),
        timeout: Some(Duration::from_secs(1)),
        sync_every: Some(Duration::from_secs(30)),
        sync_photos: Some(4),
        sync_concurrency: Some(2),
        sync_photo_bytes: Some(PHOTO),
        sync_size_sigma: Some(0.0),
        sync_direction: Some(SyncDirection::Both),
        sync_transport: Some(transport),
        // A loopback batch can end within ~30 ms (the QUIC one here took
        // ~70 ms): at 50 per second loaded_rtt sometimes sent nothing in
        // it (a CI run had no loaded_rtt series at all); at 400, ~10 even then.
        rates: vec!["loaded_rtt=400".into()],
        ..ProbeArgs::default()
    }
}

fn total(summary: &RunSummary, metric: Metric) -> Series {
    summary
        .totals
        .iter()
        .find(|s| s.metric == metric)
        .cloned()
        .unwrap_or_else(|| panic!("no {metric} series in {:?}", summary.totals))
}

async fn run_for(args: ProbeArgs, duration: Duration) -> RunSummary {
    let mut args = args;
    args.duration = Some(duration);
    let (_tx, stop) = watch::channel(false);
    run(args.into_config().unwrap(), stop).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_moves_every_photo_both_ways_with_receipts() {
    for transport in [SyncTransport::Quic, SyncTransport::Https] {
        let dir = tempfile::tempdir().unwrap();
        let responder = Responder::start(ResponderConfig::local().unwrap())
            .await
            .unwrap();
        let summary = run_for(
            sync_args(&responder, dir.path(), transport),
            Duration::from_millis(1500),
        )
        .await;
        let stats = responder.stats();
        responder.shutdown().await;

        for metric in [Metric::PhotosyncUpload, Metric::PhotosyncDownload] {
            let s = total(&summary, metric);
            assert_eq!(s.sent, 4, "{transport:?} {metric}: {s:?}");
            assert_eq!(s.histogram.len(), 4, "{transport:?} {metric}: {s:?}");
            assert_eq!(s.bytes, 4 * PHOTO, "{transport:?} {metric}");
            assert!(s.check().is_ok());
        }
        let goodput = total(&summary, Metric::PhotosyncGoodput);
        assert_eq!(
            (goodput.sent, goodput.histogram.len()),
            (1, 1),
            "{goodput:?}"
        );
        assert_eq!(goodput.bytes, 8 * PHOTO, "acknowledged both ways");
        assert!(
            goodput.histogram.value_at_quantile(0.5) > 1000,
            "goodput on loopback above 1 Mbit/s: {} kbit/s",
            goodput.histogram.value_at_quantile(0.5)
        );
        let loaded = total(&summary, Metric::LoadedRtt);
        assert!(loaded.sent >= 1, "loaded_rtt measured during the batch");
        assert_eq!(loaded.sent, loaded.histogram.len(), "{loaded:?}");
        assert_eq!(
            stats.photos_received, 4,
            "{transport:?}: the sink receipted 4"
        );
        assert_eq!(stats.photos_sent, 4, "{transport:?}: the source sent 4");
        assert_eq!(stats.photos_damaged, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_photos_are_errors_never_throughput() {
    for transport in [SyncTransport::Quic, SyncTransport::Https] {
        for fault in [PhotoFault::FlipByte, PhotoFault::CutShort] {
            let dir = tempfile::tempdir().unwrap();
            let responder = Responder::start(ResponderConfig::local().unwrap())
                .await
                .unwrap();
            responder.inject_photo_fault(Some(fault));
            let summary = run_for(
                sync_args(&responder, dir.path(), transport),
                Duration::from_millis(1500),
            )
            .await;
            let stats = responder.stats();
            responder.shutdown().await;
            let case = format!("{transport:?} {fault:?}");
            for metric in [Metric::PhotosyncUpload, Metric::PhotosyncDownload] {
                let s = total(&summary, metric);
                assert_eq!(s.sent, 4, "{case} {metric}: {s:?}");
                assert_eq!(
                    s.histogram.len(),
                    0,
                    "{case} {metric}: no photo counted as good"
                );
                assert_eq!(s.bytes, 0, "{case} {metric}: no bytes counted");
                assert_eq!(s.error_total() + s.lost, 4, "{case} {metric}: {s:?}");
                if fault == PhotoFault::FlipByte {
                    assert_eq!(
                        s.errors.get(&ErrorClass::Integrity),
                        Some(&4),
                        "{case} {metric}: a flipped byte is an integrity error: {s:?}"
                    );
                }
            }
            let goodput = total(&summary, Metric::PhotosyncGoodput);
            assert_eq!(goodput.sent, 1, "{case}");
            assert_eq!(
                goodput.histogram.len(),
                0,
                "{case}: no goodput from a damaged batch"
            );
            assert_eq!(goodput.bytes, 0, "{case}");
            assert_eq!(
                stats.photos_received, 0,
                "{case}: the sink receipted nothing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_timeout_is_lost_and_the_next_runs_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let responder = Responder::start(ResponderConfig::local().unwrap())
        .await
        .unwrap();
    let mut args = sync_args(&responder, dir.path(), SyncTransport::Quic);
    args.sync_every = Some(Duration::from_secs(2));
    args.sync_timeout = Some(Duration::from_millis(800));
    args.sync_direction = Some(SyncDirection::Upload);
    // The first batch meets a responder that holds its answers for 1.5 s.
    responder.inject_stall(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let summary = run_for(args, Duration::from_millis(3000)).await;
    let elapsed = started.elapsed();
    responder.shutdown().await;

    let goodput = total(&summary, Metric::PhotosyncGoodput);
    assert_eq!(goodput.sent, 2, "batches at 0 s and 2 s: {goodput:?}");
    assert_eq!(goodput.lost, 1, "the stalled batch is lost: {goodput:?}");
    assert_eq!(goodput.histogram.len(), 1, "the second batch measured");
    assert_eq!(goodput.bytes, 4 * PHOTO, "only the second batch's bytes");
    let upload = total(&summary, Metric::PhotosyncUpload);
    assert_eq!(upload.sent, 8);
    assert_eq!(
        upload.lost, 4,
        "two photos in flight at the first deadline, two never started"
    );
    assert_eq!(upload.histogram.len(), 4);
    // On schedule: the second batch's photos are not delayed by the first.
    assert!(
        upload.histogram.max() < 500_000,
        "photos of the second batch took up to {} µs",
        upload.histogram.max()
    );
    assert!(elapsed < Duration::from_secs(5), "run ended in {elapsed:?}");
}
