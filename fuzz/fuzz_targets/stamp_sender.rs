//! The STAMP session-sender's bookkeeping under any sequence of sends,
//! failed sends, replies (right, duplicated, reordered, forged) and clock
//! steps: never a panic, every packet sent is answered, lost or forgotten
//! exactly once, and nothing is counted lost before its timeout.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vantage_probe::{Reply, StampSender};
use vantage_wire::stamp::{ErrorEstimate, NtpTimestamp, ReflectorPacket};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Send a packet meant for now, sent `late_us` later.
    Send { late_us: u16 },
    /// The socket refused the packet of the n-th send (mod sends made).
    SendFailed { nth: u16 },
    /// A reply for sender sequence `sequence`, reflector sequence `reflected`.
    Reply {
        sequence: u32,
        reflected: u32,
        held_us: u32,
    },
    /// A reply for the n-th packet sent (mod sends made).
    ReplyTo { nth: u16, reflected: u32 },
    /// Time passes.
    Advance { us: u32 },
    /// The driver asks which packets timed out.
    Expire,
}

const TIMEOUT: Duration = Duration::from_millis(500);

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let mut now = start;
    // One clock for both ends, so the one-way delays are computed too.
    let mut sender = StampSender::new(TIMEOUT, true);
    let mut sent: Vec<(u32, Instant)> = Vec::new();
    let mut open: BTreeSet<u32> = BTreeSet::new();
    for op in ops.into_iter().take(4096) {
        match op {
            Op::Send { late_us } => {
                let started = now + Duration::from_micros(u64::from(late_us));
                let p = sender.on_send(
                    now,
                    started,
                    (
                        Duration::from_secs(1_700_000_000),
                        ErrorEstimate::UNSYNCHRONIZED,
                    ),
                );
                assert!(
                    open.insert(p.sequence),
                    "sequence {} reused while open",
                    p.sequence
                );
                sent.push((p.sequence, now));
            }
            Op::SendFailed { nth } => {
                if let Some(&(seq, _)) = nth_of(&sent, nth) {
                    sender.on_send_failed(seq);
                    open.remove(&seq);
                }
            }
            Op::Reply {
                sequence,
                reflected,
                held_us,
            } => {
                reply(&mut sender, &mut open, sequence, reflected, held_us, now);
            }
            Op::ReplyTo { nth, reflected } => {
                if let Some(&(seq, _)) = nth_of(&sent, nth) {
                    reply(&mut sender, &mut open, seq, reflected, 0, now);
                }
            }
            Op::Advance { us } => now += Duration::from_micros(u64::from(us)),
            Op::Expire => {
                for intended in sender.poll_expired(now) {
                    assert!(intended + TIMEOUT <= now, "lost before its timeout");
                    let seq = sent
                        .iter()
                        .find(|(s, t)| *t == intended && open.contains(s))
                        .map(|(s, _)| *s)
                        .expect("a lost packet was open");
                    open.remove(&seq);
                }
                if let Some(next) = sender.next_expiry() {
                    assert!(next > now, "a packet past its timeout is still in flight");
                }
            }
        }
        assert_eq!(sender.in_flight(), open.len());
    }
});

fn nth_of<T>(items: &[T], nth: u16) -> Option<&T> {
    (!items.is_empty()).then(|| &items[usize::from(nth) % items.len()])
}

fn reply(
    sender: &mut StampSender,
    open: &mut BTreeSet<u32>,
    sequence: u32,
    reflected: u32,
    held_us: u32,
    now: Instant,
) {
    let t2 = NtpTimestamp::from_unix(Duration::from_secs(1_700_000_000));
    let t3 = NtpTimestamp::from_unix(
        Duration::from_secs(1_700_000_000) + Duration::from_micros(u64::from(held_us)),
    );
    let packet = ReflectorPacket {
        sequence: reflected,
        timestamp: t3,
        error_estimate: ErrorEstimate::UNSYNCHRONIZED,
        receive_timestamp: t2,
        sender_sequence: sequence,
        sender_timestamp: t2,
        sender_error_estimate: ErrorEstimate::UNSYNCHRONIZED,
        sender_ttl: 64,
    };
    let t4 = Duration::from_secs(1_700_000_000) + Duration::from_micros(u64::from(held_us) * 2);
    match sender.on_reply(&packet, now, t4) {
        Reply::Answered { path, .. } => {
            assert!(open.remove(&sequence), "answered a packet not in flight");
            assert!(path.forward_lost + path.backward_lost <= u64::from(u32::MAX));
        }
        Reply::Duplicate { .. } | Reply::Unexpected => {
            assert!(
                !open.contains(&sequence),
                "a packet in flight was not answered"
            );
        }
    }
}
