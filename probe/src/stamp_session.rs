//! The STAMP session-sender's bookkeeping: which packets are in flight, which
//! replies are duplicates or reordered, which packets are lost and in which
//! direction, and the delay variation between consecutive replies. Plain
//! code: time comes in as an argument; the socket lives in `measure`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use vantage_wire::stamp::{ErrorEstimate, NtpTimestamp, ReflectorPacket, SenderPacket};
use vantage_wire::PathStats;

/// What a reply meant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    /// A first reply to a packet in flight.
    Answered {
        /// When the packet was meant to be sent (decides its window).
        intended: Instant,
        /// When it was actually sent.
        started: Instant,
        /// Time the reflector held it (T3 − T2, both on its clock).
        reflector_time: Duration,
        /// Path statistics this reply reveals.
        path: PathStats,
        /// The delay each way, when the clocks allow it.
        one_way: OneWay,
    },
    /// A second reply to a packet already answered.
    Duplicate {
        /// The original packet's intended time.
        intended: Instant,
    },
    /// A reply to a packet already counted lost (past its timeout), or to
    /// no packet of this session.
    Unexpected,
}

/// The delay of a test packet each way, from STAMP's four timestamps:
/// T2 − T1 on the way there, T4 − T3 on the way back. Each difference
/// spans two clocks, so it means something only when both are known to
/// agree, within their stated errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OneWay {
    /// Both clocks are synchronised (or they are one clock).
    Measured {
        /// T2 − T1.
        forward: Duration,
        /// T4 − T3.
        backward: Duration,
        /// The two clocks' stated errors summed: each delay may be off by
        /// as much.
        error: Duration,
    },
    /// Not both synchronised, or the timestamps contradict the stated
    /// errors (a delay below minus the error): only the round trip holds.
    Unsynchronized,
}

impl OneWay {
    /// The one-way delays of a reply: our send (T1) and receive (T4)
    /// times and our clock's estimate when we sent, the reflector's
    /// times and estimate, and whether it keeps our very clock.
    pub fn of(
        (t1, t4): (Duration, Duration),
        ours: ErrorEstimate,
        reply: &ReflectorPacket,
        shared_clock: bool,
    ) -> OneWay {
        let error = if shared_clock {
            Duration::ZERO
        } else if ours.synchronized() && reply.error_estimate.synchronized() {
            ours.error() + reply.error_estimate.error()
        } else {
            return OneWay::Unsynchronized;
        };
        let (t2, t3) = (reply.receive_timestamp.to_unix(), reply.timestamp.to_unix());
        // A delay below zero by more than the stated error says the
        // clocks are not where they claim to be.
        let delay = |from: Duration, to: Duration| -> Option<Duration> {
            match to.checked_sub(from) {
                Some(d) => Some(d),
                None if from - to <= error => Some(Duration::ZERO),
                None => None,
            }
        };
        match (delay(t1, t2), delay(t3, t4)) {
            (Some(forward), Some(backward)) => OneWay::Measured {
                forward,
                backward,
                error,
            },
            _ => OneWay::Unsynchronized,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    intended: Instant,
    started: Instant,
    /// T1, and our clock's estimate when we sent.
    t1: Duration,
    estimate: ErrorEstimate,
}

/// One STAMP session seen from the sender.
#[derive(Debug)]
pub struct StampSender {
    timeout: Duration,
    next_sequence: u32,
    in_flight: BTreeMap<u32, InFlight>,
    answered: BTreeMap<u32, Instant>,
    expired: BTreeSet<u32>,
    highest_answered: Option<u32>,
    /// Last in-order reply: (sender seq, reflector seq, rtt).
    last: Option<(u32, u32, Duration)>,
    /// Whether a reply has shown the reflector keeps a count of its own
    /// (its sequence number differed from ours). Until then its numbers
    /// may mirror ours, as a stateless reflector's do, and a gap cannot be
    /// split by direction.
    reflector_counts: bool,
    /// The reflector keeps our clock: one-way delays need no sync.
    shared_clock: bool,
}

/// How many answered sequence numbers are remembered to spot duplicates.
const REMEMBERED: usize = 4096;

impl StampSender {
    /// A session whose packets are lost after `timeout`; `shared_clock`
    /// when the reflector keeps this host's very clock.
    pub fn new(timeout: Duration, shared_clock: bool) -> Self {
        StampSender {
            timeout,
            next_sequence: 0,
            in_flight: BTreeMap::new(),
            answered: BTreeMap::new(),
            expired: BTreeSet::new(),
            highest_answered: None,
            last: None,
            reflector_counts: false,
            shared_clock,
        }
    }

    /// Makes the next test packet, sent at `started` for the attempt meant
    /// for `intended`; `wall` is the wall-clock time for its T1 timestamp
    /// and `estimate` how well that clock is synchronised now.
    pub fn on_send(
        &mut self,
        intended: Instant,
        started: Instant,
        (wall, estimate): (Duration, ErrorEstimate),
    ) -> SenderPacket {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.in_flight.insert(
            sequence,
            InFlight {
                intended,
                started,
                t1: wall,
                estimate,
            },
        );
        SenderPacket {
            sequence,
            timestamp: NtpTimestamp::from_unix(wall),
            error_estimate: estimate,
        }
    }

    /// Forgets a packet that could not be sent at all (counted by the caller).
    pub fn on_send_failed(&mut self, sequence: u32) {
        self.in_flight.remove(&sequence);
    }

    /// Accounts for a reply received at `now`, `wall` on the wall clock (T4).
    pub fn on_reply(&mut self, reply: &ReflectorPacket, now: Instant, wall: Duration) -> Reply {
        let seq = reply.sender_sequence;
        let Some(sent) = self.in_flight.remove(&seq) else {
            return match self.answered.get(&seq) {
                Some(&intended) => Reply::Duplicate { intended },
                None => Reply::Unexpected,
            };
        };
        let rtt = now.saturating_duration_since(sent.started);
        // A stateful reflector numbers what it received, so its count
        // falls behind ours at the first packet lost on the way there; a
        // stateless one copies our number (RFC 8762 §4.2.1). Until the two
        // differ once, a gap could be either, and its direction is unknown.
        if reply.sequence != seq {
            self.reflector_counts = true;
        }
        let mut path = PathStats::default();
        if matches!(self.highest_answered, Some(h) if h > seq) {
            path.reordered = 1;
        } else {
            if let Some((last_s, last_r, last_rtt)) = self.last {
                let gap_sent = seq.wrapping_sub(last_s).wrapping_sub(1);
                let gap_reflected = reply
                    .sequence
                    .wrapping_sub(last_r)
                    .wrapping_sub(1)
                    .min(gap_sent);
                if self.reflector_counts {
                    // Packets between the two replies that the reflector
                    // saw came back lost; the others never reached it.
                    path.backward_lost = u64::from(gap_reflected);
                    path.forward_lost = u64::from(gap_sent - gap_reflected);
                } else {
                    path.unknown_direction_lost = u64::from(gap_sent);
                }
                if gap_sent == 0 {
                    path.ipdv_sum_us = rtt.abs_diff(last_rtt).as_micros() as u64;
                    path.ipdv_pairs = 1;
                }
            }
            self.last = Some((seq, reply.sequence, rtt));
            self.highest_answered = Some(seq);
        }
        self.answered.insert(seq, sent.intended);
        while self.answered.len() > REMEMBERED {
            self.answered.pop_first();
        }
        let reflector_time = reply
            .timestamp
            .to_unix()
            .saturating_sub(reply.receive_timestamp.to_unix());
        Reply::Answered {
            intended: sent.intended,
            started: sent.started,
            reflector_time,
            path,
            one_way: OneWay::of((sent.t1, wall), sent.estimate, reply, self.shared_clock),
        }
    }

    /// Packets whose timeout has passed at `now`: each is lost, returned
    /// with its intended time, once.
    pub fn poll_expired(&mut self, now: Instant) -> Vec<Instant> {
        let timeout = self.timeout;
        let gone: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.intended + timeout <= now)
            .map(|(s, _)| *s)
            .collect();
        gone.into_iter()
            .filter_map(|s| {
                self.expired.insert(s);
                if self.expired.len() > REMEMBERED {
                    self.expired.pop_first();
                }
                self.in_flight.remove(&s).map(|f| f.intended)
            })
            .collect()
    }

    /// When the earliest packet in flight times out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .map(|f| f.intended + self.timeout)
            .min()
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_wire::stamp;

    fn reflect(p: &SenderPacket, reflector_seq: u32) -> ReflectorPacket {
        let bytes = stamp::reflect(
            &p.encode(),
            reflector_seq,
            NtpTimestamp::from_unix(Duration::from_secs(10)),
            NtpTimestamp::from_unix(Duration::from_secs(10) + Duration::from_micros(30)),
            ErrorEstimate::UNSYNCHRONIZED,
            64,
        )
        .unwrap();
        ReflectorPacket::decode(&bytes).unwrap()
    }

    #[test]
    fn loss_direction_duplicates_reordering_and_jitter() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = StampSender::new(ms(1000), false);
        let p: Vec<_> = (0..6u64)
            .map(|i| {
                s.on_send(
                    t0 + ms(10 * i),
                    t0 + ms(10 * i),
                    (Duration::ZERO, ErrorEstimate::UNSYNCHRONIZED),
                )
            })
            .collect();
        // 0 answered (reflector seq 0) after 5 ms.
        let r = s.on_reply(&reflect(&p[0], 0), t0 + ms(5), Duration::ZERO);
        let Reply::Answered {
            reflector_time,
            path,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(path, PathStats::default());
        assert!(reflector_time.abs_diff(Duration::from_micros(30)) < Duration::from_micros(1));
        // 1 answered after 7 ms: IPDV 2 ms.
        let Reply::Answered { path, .. } =
            s.on_reply(&reflect(&p[1], 1), t0 + ms(17), Duration::ZERO)
        else {
            panic!()
        };
        assert_eq!((path.ipdv_sum_us, path.ipdv_pairs), (2000, 1));
        // 2 never reaches the reflector; 3 reaches it (seq 2) but its reply is
        // lost; 4 comes back with reflector seq 3.
        let Reply::Answered { path, .. } =
            s.on_reply(&reflect(&p[4], 3), t0 + ms(45), Duration::ZERO)
        else {
            panic!()
        };
        assert_eq!((path.forward_lost, path.backward_lost), (1, 1));
        assert_eq!(path.ipdv_pairs, 0, "not consecutive");
        // 4 again: a duplicate.
        assert!(matches!(
            s.on_reply(&reflect(&p[4], 4), t0 + ms(46), Duration::ZERO),
            Reply::Duplicate { .. }
        ));
        // 2 and 3 time out, 5 is still in flight.
        assert_eq!(
            s.poll_expired(t0 + ms(1035)),
            vec![t0 + ms(20), t0 + ms(30)]
        );
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.next_expiry(), Some(t0 + ms(1050)));
        // A late reply for 2 is not counted again.
        assert_eq!(
            s.on_reply(&reflect(&p[2], 5), t0 + ms(1040), Duration::ZERO),
            Reply::Unexpected
        );
    }

    /// The case found against a stateless reflector: 10 % dropped each
    /// way (20 and 20 of 200). Its sequence number mirrors ours, so the 40
    /// lost are of unknown direction, never put on the way back.
    #[test]
    fn a_stateless_reflector_leaves_the_direction_unknown() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = StampSender::new(ms(1000), false);
        let mut total = PathStats::default();
        for i in 0..200u32 {
            let at = t0 + ms(u64::from(i) * 10);
            let p = s.on_send(at, at, (Duration::ZERO, ErrorEstimate::UNSYNCHRONIZED));
            // Every tenth lost on the way there, every tenth (offset by
            // five) on the way back.
            if i % 10 == 3 || i % 10 == 8 {
                continue;
            }
            // Stateless: the reflector's number is the sender's.
            let r = s.on_reply(&reflect(&p, p.sequence), at + ms(5), Duration::ZERO);
            let Reply::Answered { path, .. } = r else {
                panic!("{r:?}")
            };
            total.add(&path);
        }
        assert_eq!(
            (
                total.forward_lost,
                total.backward_lost,
                total.unknown_direction_lost
            ),
            (0, 0, 40)
        );
    }

    /// A stateful reflector that lost nothing on the way there also echoes
    /// our numbers at first; once one packet is lost going out, its count
    /// falls behind and from then on each gap is split by direction.
    #[test]
    fn a_stateful_reflector_is_recognised_at_its_first_forward_loss() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = StampSender::new(ms(1000), false);
        let p: Vec<_> = (0..8u64)
            .map(|i| {
                s.on_send(
                    t0 + ms(10 * i),
                    t0 + ms(10 * i),
                    (Duration::ZERO, ErrorEstimate::UNSYNCHRONIZED),
                )
            })
            .collect();
        let answered = |r: Reply| match r {
            Reply::Answered { path, .. } => path,
            other => panic!("{other:?}"),
        };
        // 0 answered; 1's reply lost on the way back (the reflector counted
        // it: 1); 2 answered with reflector seq 2 — equal to ours, so the
        // gap of one is of unknown direction.
        answered(s.on_reply(&reflect(&p[0], 0), t0 + ms(5), Duration::ZERO));
        let path = answered(s.on_reply(&reflect(&p[2], 2), t0 + ms(25), Duration::ZERO));
        assert_eq!(
            (
                path.forward_lost,
                path.backward_lost,
                path.unknown_direction_lost
            ),
            (0, 0, 1)
        );
        // 3 never reaches it; 4 comes back as its 3rd: the count differs,
        // so this gap is forward, and later ones are split too.
        let path = answered(s.on_reply(&reflect(&p[4], 3), t0 + ms(45), Duration::ZERO));
        assert_eq!(
            (
                path.forward_lost,
                path.backward_lost,
                path.unknown_direction_lost
            ),
            (1, 0, 0)
        );
        // 5's reply lost (reflector seq 4); 6 comes back as 5.
        let path = answered(s.on_reply(&reflect(&p[6], 5), t0 + ms(65), Duration::ZERO));
        assert_eq!(
            (
                path.forward_lost,
                path.backward_lost,
                path.unknown_direction_lost
            ),
            (0, 1, 0)
        );
    }

    #[test]
    fn reordered_replies_are_counted() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = StampSender::new(ms(1000), false);
        let a = s.on_send(t0, t0, (Duration::ZERO, ErrorEstimate::UNSYNCHRONIZED));
        let b = s.on_send(
            t0 + ms(1),
            t0 + ms(1),
            (Duration::ZERO, ErrorEstimate::UNSYNCHRONIZED),
        );
        assert!(matches!(
            s.on_reply(&reflect(&b, 1), t0 + ms(3), Duration::ZERO),
            Reply::Answered {
                path: PathStats { reordered: 0, .. },
                ..
            }
        ));
        assert!(matches!(
            s.on_reply(&reflect(&a, 0), t0 + ms(4), Duration::ZERO),
            Reply::Answered {
                path: PathStats { reordered: 1, .. },
                ..
            }
        ));
    }

    /// A reflector's reply with T2, T3 and its clock's estimate.
    fn reply_at(
        t1: Duration,
        t2: Duration,
        t3: Duration,
        theirs: ErrorEstimate,
    ) -> ReflectorPacket {
        let sent = SenderPacket {
            sequence: 0,
            timestamp: NtpTimestamp::from_unix(t1),
            error_estimate: ErrorEstimate::UNSYNCHRONIZED,
        };
        let bytes = stamp::reflect(
            &sent.encode(),
            0,
            NtpTimestamp::from_unix(t2),
            NtpTimestamp::from_unix(t3),
            theirs,
            64,
        )
        .unwrap();
        ReflectorPacket::decode(&bytes).unwrap()
    }

    #[test]
    fn one_way_delays_only_when_the_clocks_agree() {
        let ms = Duration::from_millis;
        let (t1, t2, t3, t4) = (ms(10_000), ms(10_010), ms(10_011), ms(10_051));
        let near = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_micros(2);
        // One clock (the lab, an in-process responder): 10 ms there, 40
        // back, no error.
        let unsynced = ErrorEstimate::UNSYNCHRONIZED;
        let r = reply_at(t1, t2, t3, unsynced);
        let OneWay::Measured {
            forward,
            backward,
            error,
        } = OneWay::of((t1, t4), unsynced, &r, true)
        else {
            panic!("a shared clock needs no sync")
        };
        assert!(
            near(forward, ms(10)) && near(backward, ms(40)),
            "{forward:?} {backward:?}"
        );
        assert_eq!(error, Duration::ZERO);
        // Two synchronised clocks: their errors add.
        let ours = ErrorEstimate::from_error(true, ms(1));
        let theirs = ErrorEstimate::from_error(true, ms(2));
        let r = reply_at(t1, t2, t3, theirs);
        let OneWay::Measured { error, .. } = OneWay::of((t1, t4), ours, &r, false) else {
            panic!("both synchronised")
        };
        assert!(
            error >= ms(3) && error < ms(3) + Duration::from_micros(100),
            "{error:?}"
        );
        // Either one unsynchronised: no one-way delay.
        assert_eq!(
            OneWay::of((t1, t4), unsynced, &r, false),
            OneWay::Unsynchronized
        );
        let r_unsynced = reply_at(t1, t2, t3, unsynced);
        assert_eq!(
            OneWay::of((t1, t4), ours, &r_unsynced, false),
            OneWay::Unsynchronized
        );
        // T2 before T1: within the 3 ms stated error it reads 0; by more
        // than that, the clocks are not where they claim.
        let early = reply_at(t1, t1 - ms(2), t3, theirs);
        let OneWay::Measured { forward, .. } = OneWay::of((t1, t4), ours, &early, false) else {
            panic!("within the error")
        };
        assert_eq!(forward, Duration::ZERO);
        let wrong = reply_at(t1, t1 - ms(50), t3, theirs);
        assert_eq!(
            OneWay::of((t1, t4), ours, &wrong, false),
            OneWay::Unsynchronized
        );
    }
}
