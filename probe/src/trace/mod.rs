//! `path_trace`'s bookkeeping: which TTL to probe next, what each hop
//! answered, and when a trace is over. Plain code: time comes in as an
//! argument; the sockets live in `measure::trace` (re-exported here:
//! [`run_trace`]).
//!
//! A trace probes TTL 1, 2, … with at most `probes_per_hop` probes each,
//! one in flight at a time and paced by `spacing`. It ends when the target
//! answers, at `max_hops`, or after `silent_limit` hops in a row answer
//! nothing (a target that filters every probe ends so: its hops are lost,
//! never an error of the probe).

use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use crate::measure::trace::{icmp_allowed, run_trace, TraceMethod};
pub use vantage_wire::trace::{End, HopRecord, Trace};

/// Most hops a trace may probe.
pub const MAX_HOPS: u8 = 30;
/// Most probes per hop.
pub const MAX_PROBES_PER_HOP: u8 = 3;

/// How a trace is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracePlan {
    /// Highest TTL probed (at most [`MAX_HOPS`]).
    pub max_hops: u8,
    /// Probes sent to each TTL (at most [`MAX_PROBES_PER_HOP`]).
    pub probes_per_hop: u8,
    /// How long a probe waits for its answer.
    pub probe_timeout: Duration,
    /// Least time between two probes.
    pub spacing: Duration,
    /// Hops in a row that answer nothing before the trace gives up.
    pub silent_limit: u8,
}

impl Default for TracePlan {
    fn default() -> Self {
        TracePlan {
            max_hops: MAX_HOPS,
            probes_per_hop: MAX_PROBES_PER_HOP,
            probe_timeout: Duration::from_secs(1),
            spacing: Duration::from_millis(50),
            silent_limit: 5,
        }
    }
}

impl TracePlan {
    /// The plan with its bounds enforced.
    pub fn bounded(self) -> Self {
        TracePlan {
            max_hops: self.max_hops.clamp(1, MAX_HOPS),
            probes_per_hop: self.probes_per_hop.clamp(1, MAX_PROBES_PER_HOP),
            silent_limit: self.silent_limit.max(1),
            ..self
        }
    }
}

/// What came back for a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// ICMP time exceeded: a router at this TTL.
    TimeExceeded {
        /// The router's address.
        from: IpAddr,
    },
    /// The target itself: ICMP port unreachable to a UDP probe, or an
    /// echo reply to an ICMP one.
    Reached {
        /// Who answered (the target).
        from: IpAddr,
    },
    /// ICMP destination unreachable other than the port: a router or the
    /// target refusing (net, host, administratively prohibited). Ends the
    /// trace: nothing farther can be reached.
    Unreachable {
        /// Who said so.
        from: IpAddr,
        /// The ICMP code.
        code: u8,
    },
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send a probe with this TTL now.
    Send {
        /// The TTL (hop limit).
        ttl: u8,
    },
    /// Wait for an answer, or the time, whichever comes first.
    Wait {
        /// When to call [`TraceSession::poll`] again at the latest.
        until: Instant,
    },
    /// The trace is over.
    Done,
}

/// One trace in progress.
#[derive(Debug)]
pub struct TraceSession {
    plan: TracePlan,
    hops: Vec<HopRecord>,
    /// The probe in flight: its TTL and when it left.
    in_flight: Option<(u8, Instant)>,
    last_sent: Option<Instant>,
    end: Option<End>,
}

impl TraceSession {
    /// A trace run by `plan` (bounded).
    pub fn new(plan: TracePlan) -> Self {
        TraceSession {
            plan: plan.bounded(),
            hops: Vec::new(),
            in_flight: None,
            last_sent: None,
            end: None,
        }
    }

    /// What to do at `now`: a probe in flight past its timeout is counted
    /// lost first.
    pub fn poll(&mut self, now: Instant) -> Next {
        if let Some((ttl, sent)) = self.in_flight {
            if now < sent + self.plan.probe_timeout {
                return Next::Wait {
                    until: sent + self.plan.probe_timeout,
                };
            }
            self.in_flight = None;
            self.record(ttl, None);
        }
        if self.end.is_some() {
            return Next::Done;
        }
        let ttl = self.next_ttl();
        if ttl > self.plan.max_hops {
            self.end = Some(End::MaxHops);
            return Next::Done;
        }
        if let Some(last) = self.last_sent {
            if now < last + self.plan.spacing {
                return Next::Wait {
                    until: last + self.plan.spacing,
                };
            }
        }
        Next::Send { ttl }
    }

    /// The driver sent the probe for `ttl` at `now`.
    pub fn sent(&mut self, ttl: u8, now: Instant) {
        self.in_flight = Some((ttl, now));
        self.last_sent = Some(now);
        if self.hops.last().is_none_or(|h| h.ttl != ttl) {
            self.hops.push(HopRecord {
                ttl,
                address: None,
                rtts: Vec::new(),
            });
        }
    }

    /// An answer to the probe in flight arrived at `now`; answers when
    /// none is in flight (late, for a probe already counted lost) are
    /// ignored.
    pub fn answered(&mut self, answer: Answer, now: Instant) {
        let Some((ttl, sent)) = self.in_flight.take() else {
            return;
        };
        let (from, end) = match answer {
            Answer::TimeExceeded { from } => (from, None),
            Answer::Reached { from } => (from, Some(End::Reached)),
            Answer::Unreachable { from, .. } => (from, Some(End::Unreachable)),
        };
        if let Some(hop) = self.hops.last_mut() {
            hop.address.get_or_insert(from);
        }
        self.record(ttl, Some(now.saturating_duration_since(sent)));
        if end.is_some() {
            self.end = end;
        }
    }

    /// The trace, once [`TraceSession::poll`] has said `Done`.
    pub fn finish(self) -> Trace {
        Trace {
            hops: self.hops,
            end: self.end.unwrap_or(End::MaxHops),
        }
    }

    fn record(&mut self, ttl: u8, rtt: Option<Duration>) {
        if let Some(hop) = self.hops.iter_mut().rev().find(|h| h.ttl == ttl) {
            hop.rtts.push(rtt);
        }
        // Silent hops in a row: the last `silent_limit` complete hops.
        let done_hops: Vec<&HopRecord> = self
            .hops
            .iter()
            .filter(|h| h.rtts.len() >= usize::from(self.plan.probes_per_hop))
            .collect();
        let silent_run = done_hops.iter().rev().take_while(|h| !h.answered()).count();
        if silent_run >= usize::from(self.plan.silent_limit) && self.end.is_none() {
            self.end = Some(End::Silent);
        }
    }

    fn next_ttl(&self) -> u8 {
        match self.hops.last() {
            None => 1,
            Some(h) if h.rtts.len() < usize::from(self.plan.probes_per_hop) => h.ttl,
            Some(h) => h.ttl.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Runs a session against a scripted path: `answer(ttl)` says who
    /// answers a probe of that TTL and after how long, or `None`.
    fn run(plan: TracePlan, answer: impl Fn(u8) -> Option<(Answer, Duration)>) -> Trace {
        let mut s = TraceSession::new(plan);
        let mut now = Instant::now();
        for _ in 0..1000 {
            match s.poll(now) {
                Next::Send { ttl } => {
                    s.sent(ttl, now);
                    if let Some((a, after)) = answer(ttl) {
                        now += after;
                        s.answered(a, now);
                    }
                }
                Next::Wait { until } => now = until,
                Next::Done => return s.finish(),
            }
        }
        panic!("the trace never ended")
    }

    fn plan() -> TracePlan {
        TracePlan {
            probes_per_hop: 2,
            ..TracePlan::default()
        }
    }

    #[test]
    fn a_trace_finds_each_router_a_silent_one_and_the_target() {
        let t = run(plan(), |ttl| match ttl {
            1 => Some((
                Answer::TimeExceeded {
                    from: ip("10.0.0.1"),
                },
                Duration::from_millis(10),
            )),
            2 => None,
            3 => Some((
                Answer::TimeExceeded {
                    from: ip("10.0.0.3"),
                },
                Duration::from_millis(30),
            )),
            _ => Some((
                Answer::Reached {
                    from: ip("10.0.0.9"),
                },
                Duration::from_millis(40),
            )),
        });
        assert_eq!(t.end, End::Reached);
        assert!(t.reached());
        assert_eq!(t.hops.len(), 4);
        assert_eq!(t.hops[0].rtts, vec![Some(Duration::from_millis(10)); 2]);
        assert_eq!(t.hops[1].rtts, vec![None, None]);
        assert!(!t.hops[1].answered());
        // The target answered its first probe: the trace ends there.
        assert_eq!(t.hops[3].rtts, vec![Some(Duration::from_millis(40))]);
        assert_eq!(t.hop_count(), 4);
        assert_eq!(t.fingerprint(), "10.0.0.1 * 10.0.0.3 10.0.0.9");
        assert_eq!(t.sent_lost(), (7, 2));
    }

    #[test]
    fn a_target_that_filters_everything_ends_silent_with_lost_hops() {
        let t = run(plan(), |ttl| {
            (ttl == 1).then(|| {
                (
                    Answer::TimeExceeded {
                        from: ip("10.0.0.1"),
                    },
                    Duration::from_millis(5),
                )
            })
        });
        assert_eq!(t.end, End::Silent);
        // Hop 1, then five silent hops.
        assert_eq!(t.hops.len(), 6);
        assert_eq!(t.hop_count(), 1);
        assert_eq!(t.fingerprint(), "10.0.0.1");
        assert_eq!(t.sent_lost(), (12, 10));
    }

    #[test]
    fn bounds_hold_and_probes_are_paced() {
        let plan = TracePlan {
            max_hops: 200,
            probes_per_hop: 9,
            silent_limit: 0,
            ..TracePlan::default()
        }
        .bounded();
        assert_eq!(
            (plan.max_hops, plan.probes_per_hop, plan.silent_limit),
            (30, 3, 1)
        );
        // Every router answers, the target never: it ends at 30 hops.
        let t = run(
            TracePlan {
                silent_limit: 5,
                ..plan
            },
            |ttl| {
                Some((
                    Answer::TimeExceeded {
                        from: ip(&format!("10.0.1.{ttl}")),
                    },
                    Duration::from_millis(1),
                ))
            },
        );
        assert_eq!((t.end, t.hops.len()), (End::MaxHops, 30));
        assert!(t.hops.iter().all(|h| h.rtts.len() == 3));
        // Pacing: the second probe waits for the spacing.
        let mut s = TraceSession::new(TracePlan::default());
        let t0 = Instant::now();
        assert_eq!(s.poll(t0), Next::Send { ttl: 1 });
        s.sent(1, t0);
        s.answered(
            Answer::TimeExceeded {
                from: ip("10.0.0.1"),
            },
            t0 + Duration::from_millis(2),
        );
        assert_eq!(
            s.poll(t0 + Duration::from_millis(2)),
            Next::Wait {
                until: t0 + Duration::from_millis(50)
            }
        );
        // An answer with nothing in flight (a late one) changes nothing.
        s.answered(
            Answer::Reached {
                from: ip("10.0.0.9"),
            },
            t0 + Duration::from_millis(3),
        );
        assert_eq!(
            s.poll(t0 + Duration::from_millis(60)),
            Next::Send { ttl: 1 }
        );
    }

    #[test]
    fn an_unreachable_answer_ends_the_trace() {
        let t = run(plan(), |ttl| match ttl {
            1 => Some((
                Answer::TimeExceeded {
                    from: ip("10.0.0.1"),
                },
                Duration::from_millis(5),
            )),
            _ => Some((
                Answer::Unreachable {
                    from: ip("10.0.0.2"),
                    code: 13,
                },
                Duration::from_millis(9),
            )),
        });
        assert_eq!(t.end, End::Unreachable);
        assert!(!t.reached());
        assert_eq!(t.fingerprint(), "10.0.0.1 10.0.0.2");
    }
}
