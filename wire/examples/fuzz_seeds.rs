//! Writes the fuzz targets' binary seed corpus (`fuzz/seeds/TARGET/`) from
//! the real encoders, so fuzzing starts from every message kind and both
//! batch versions instead of from nothing. Run again when a format changes:
//! `cargo run -p vantage-wire --example fuzz_seeds`.

use std::path::Path;
use std::time::Duration;
use vantage_wire::campaign::{
    encode_poll, CampaignAnswer, CampaignDoc, Heartbeat, PhaseSwitch, PollStatus,
};
use vantage_wire::echo::{EchoRequest, EchoResponse, EchoStatus};
use vantage_wire::photo::{PhotoReply, PhotoRequest, PhotoStatus};
use vantage_wire::stamp::{ErrorEstimate, NtpTimestamp, ReflectorPacket, SenderPacket};
use vantage_wire::upload::{encode_request, Ack, AckStatus};
use vantage_wire::{
    encode_histogram, encode_histogram_plain, new_latency_histogram, record_clamped, Batch,
    ErrorClass, Labels, Metric, Reason, Series, Target, Window,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)
    };

    let v1 = batch(false);
    let v2 = batch(true);
    write("batch_decode", "v1", &v1.encode()?)?;
    write("batch_decode", "v2", &v2.encode()?)?;
    write("batch_decode", "v4-traces", &traced(&v1).encode()?)?;
    write(
        "batch_decode",
        "empty",
        &Batch {
            series: vec![],
            ..v1.clone()
        }
        .encode()?,
    )?;
    write(
        "upload_messages",
        "request",
        &encode_request("vt_seed", &v2.encode()?),
    )?;
    write("upload_messages", "ack-stored", &ack(AckStatus::Stored, ""))?;
    write(
        "upload_messages",
        "ack-refused",
        &ack(AckStatus::Unavailable, "busy"),
    )?;

    let mut h = new_latency_histogram();
    for v in [1, 250, 40_000, 250_000, 1_000_000, 9_000_000] {
        record_clamped(&mut h, v);
    }
    let mut compressed = Vec::new();
    encode_histogram(&h, &mut compressed)?;
    let mut plain = Vec::new();
    encode_histogram_plain(&h, &mut plain)?;
    write("histogram_decode", "compressed", &compressed)?;
    write("histogram_decode", "plain", &plain)?;
    write("histogram_decode", "empty", &{
        let mut out = Vec::new();
        encode_histogram(&new_latency_histogram(), &mut out)?;
        out
    })?;

    let t = NtpTimestamp::from_unix(Duration::from_millis(1_700_000_000_123));
    let sender = SenderPacket {
        sequence: 7,
        timestamp: t,
        error_estimate: ErrorEstimate::UNSYNCHRONIZED,
    };
    let reflector = ReflectorPacket {
        sequence: 3,
        timestamp: t,
        error_estimate: ErrorEstimate::new(true, 10, 2),
        receive_timestamp: t,
        sender_sequence: 7,
        sender_timestamp: t,
        sender_error_estimate: ErrorEstimate::UNSYNCHRONIZED,
        sender_ttl: 255,
    };
    write("stamp_packets", "sender", &sender.encode())?;
    let mut padded = sender.encode().to_vec();
    padded.resize(1_000, 0);
    write("stamp_packets", "sender-padded", &padded)?;
    write("stamp_packets", "reflector", &reflector.encode())?;

    let request = EchoRequest {
        response_len: 1_000,
        padding_len: 100,
    };
    write("echo_messages", "request", &request.encode())?;
    for (name, status) in [("ok", EchoStatus::Ok), ("too-large", EchoStatus::TooLarge)] {
        let response = EchoResponse {
            status,
            server_time_ns: 12_345,
            body_len: 1_000,
        };
        write("echo_messages", name, &response.encode())?;
    }

    let upload = PhotoRequest::Upload {
        size: 3 << 20,
        crc32: 0xdead_beef,
    };
    let download = PhotoRequest::Download {
        size: 3 << 20,
        seed: 42,
    };
    write("photo_messages", "upload", &upload.encode())?;
    write("photo_messages", "download", &download.encode())?;
    for (name, status) in [
        ("ok", PhotoStatus::Ok),
        ("integrity", PhotoStatus::Integrity),
    ] {
        let reply = PhotoReply {
            status,
            bytes: 3 << 20,
            crc32: 0xdead_beef,
        };
        write("photo_messages", name, &reply.encode())?;
    }

    let mut labels = Labels::new();
    labels.insert("country", "IN")?;
    let beat = Heartbeat {
        probe_id: "in-1".into(),
        software: "0.1.0".into(),
        applied: Some(("move".into(), 3)),
        campaign_error: Some("line 2: unknown field".into()),
        backlog_batches: 4,
        backlog_bytes: 4_096,
        dropped_batches: 1,
        uptime_s: 3_600,
        clock_offset: Some((-1_500, 300)),
        labels,
        window_ms: 60_000,
    };
    write("poll_messages", "poll", &encode_poll("vt_seed", &beat))?;
    write("poll_messages", "heartbeat", beat.encode().as_bytes())?;
    let mut answer = CampaignAnswer::status(PollStatus::Campaign, "", 1_700_000_000_000_000);
    answer.campaign = Some(CampaignDoc {
        name: "move".into(),
        version: 4,
        phases: vec![PhaseSwitch {
            at_unix_ms: 1_700_000_000_000,
            phase: "after".into(),
        }],
        body: "window = \"60s\"\n[[target]]\nname = \"sg\"\naddress = \"127.0.0.1:4433\"\n".into(),
    });
    write(
        "poll_messages",
        "answer-campaign",
        answer.encode().as_bytes(),
    )?;
    let refused = CampaignAnswer::status(PollStatus::Forbidden, "not this probe's token", 1);
    write(
        "poll_messages",
        "answer-forbidden",
        refused.encode().as_bytes(),
    )?;
    println!("seeds written under {}", root.display());
    Ok(())
}

fn ack(status: AckStatus, reason: &str) -> Vec<u8> {
    Ack {
        status,
        reason: reason.into(),
    }
    .encode()
}

/// `batch` with a trace through a silent hop, which makes the encoder
/// write version 4.
fn traced(batch: &Batch) -> Batch {
    use std::time::Duration;
    use vantage_wire::trace::{End, HopRecord, PathTrace, Trace};
    let hop = |ttl, address: Option<&str>| HopRecord {
        ttl,
        address: address.and_then(|a| a.parse().ok()),
        rtts: vec![address.map(|_| Duration::from_micros(5_000)), None],
    };
    Batch {
        traces: vec![PathTrace {
            target: batch.series[0].target.clone(),
            started_unix_ms: 1_700_000_001_000,
            trace: Trace {
                hops: vec![
                    hop(1, Some("198.18.0.1")),
                    hop(2, None),
                    hop(3, Some("2001:db8::9")),
                ],
                end: End::Reached,
            },
        }],
        ..batch.clone()
    }
}

/// A batch of two series; with `v2`, reasons and HTTP statuses too, which
/// makes the encoder write version 2.
fn batch(v2: bool) -> Batch {
    let mut labels = Labels::new();
    labels.insert("country", "IN").expect("a valid label");
    labels.insert("phase", "before").expect("a valid label");
    let window = Window {
        start_unix_ms: 1_700_000_000_000,
        end_unix_ms: 1_700_000_060_000,
    };
    let series = [Metric::all().next(), Metric::all().nth(3)]
        .into_iter()
        .flatten()
        .map(|metric| {
            let target = Target {
                name: "sg".into(),
                address: "127.0.0.1:4433".into(),
            };
            let mut s = Series::new(target, metric, window);
            for v in [900, 1_200, 250_000] {
                record_clamped(&mut s.histogram, v);
            }
            s.sent = 5;
            s.lost = 1;
            s.errors.insert(ErrorClass::Refused, 1);
            if v2 {
                s.reasons.insert(Reason::TlsExpired, 1);
                s.statuses.insert(503, 1);
            }
            s.path.reordered = 1;
            s.bytes = 4_096;
            s
        })
        .collect();
    Batch {
        probe_id: "in-1".into(),
        sequence: 42,
        campaign: "move".into(),
        labels,
        created_unix_ms: 1_700_000_061_000,
        dropped_batches: 2,
        traces: Vec::new(),
        series,
    }
}
