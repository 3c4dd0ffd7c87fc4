//! Open-loop schedules: when each attempt is *meant* to start. Plain code:
//! time comes in as an argument, so tests drive it with a fake clock.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use std::time::{Duration, Instant};

/// How attempts are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spacing {
    /// Exponential gaps with this mean rate per second (a Poisson process),
    /// so probes do not synchronise with periodic network events (RFC 2330).
    Poisson {
        /// Mean attempts per second.
        rate_per_sec: f64,
    },
    /// Equal gaps.
    Fixed {
        /// The gap.
        interval: Duration,
    },
}

impl Spacing {
    /// Mean attempts per second.
    pub fn rate_per_sec(&self) -> f64 {
        match *self {
            Spacing::Poisson { rate_per_sec } => rate_per_sec,
            Spacing::Fixed { interval } => 1.0 / interval.as_secs_f64().max(1e-9),
        }
    }
}

/// An open-loop schedule: the intended start times of attempts, independent
/// of whether earlier attempts were answered.
#[derive(Debug)]
pub struct Schedule {
    spacing: Spacing,
    next: Instant,
    rng: StdRng,
    exp: Option<Exp<f64>>,
}

impl Schedule {
    /// A schedule whose first attempt is one gap after `start`.
    pub fn new(spacing: Spacing, start: Instant, seed: u64) -> Self {
        let exp = match spacing {
            Spacing::Poisson { rate_per_sec } if rate_per_sec > 0.0 => Exp::new(rate_per_sec).ok(),
            _ => None,
        };
        let mut s = Schedule {
            spacing,
            next: start,
            rng: StdRng::seed_from_u64(seed),
            exp,
        };
        s.next = start + s.gap();
        s
    }

    fn gap(&mut self) -> Duration {
        match (self.spacing, &self.exp) {
            (Spacing::Fixed { interval }, _) => interval,
            (Spacing::Poisson { .. }, Some(exp)) => {
                // Cap a single gap at an hour so a tiny rate cannot overflow.
                Duration::from_secs_f64(exp.sample(&mut self.rng).min(3600.0))
            }
            (Spacing::Poisson { .. }, None) => Duration::from_secs(3600),
        }
    }

    /// When the next attempt is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// The next intended start time if it is at or before `now`, advancing
    /// the schedule. Call until `None`: a late driver gets every attempt it
    /// missed, each with its own intended time, so a stall cannot hide.
    pub fn poll_due(&mut self, now: Instant) -> Option<Instant> {
        if self.next > now {
            return None;
        }
        let due = self.next;
        self.next = due + self.gap();
        Some(due)
    }
}

/// How much of a late start is forgiven as timer granularity.
///
/// tokio's timer fires up to about a millisecond late; charging that to the
/// network would add up to 1 ms to every sample on a path of 40 µs. A start
/// later than this is the probe stalling, and the excess is charged to the
/// sample, so coordinated omission is still corrected.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// The latency of an attempt meant to start at `intended`, actually started
/// at `started` and completed at `completed`: counted from
/// `min(started, intended + slack)`, i.e. from the intended time except for
/// at most `slack` of timer lateness.
pub fn latency_from(
    intended: Instant,
    started: Instant,
    completed: Instant,
    slack: Duration,
) -> Duration {
    let origin = started.min(intended + slack);
    completed.saturating_duration_since(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_rate_is_what_was_asked() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            Spacing::Poisson {
                rate_per_sec: 100.0,
            },
            t0,
            7,
        );
        let end = t0 + Duration::from_secs(100);
        let mut n = 0;
        let mut gaps = Vec::new();
        let mut last = t0;
        while let Some(t) = s.poll_due(end) {
            gaps.push((t - last).as_secs_f64());
            last = t;
            n += 1;
        }
        // 10 000 expected; Poisson sd = 100, so ±400 is 4 sd.
        assert!((9_600..=10_400).contains(&n), "{n}");
        // Exponential gaps: sd equals the mean (10 ms).
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn same_seed_same_schedule() {
        let t0 = Instant::now();
        let take = |seed| {
            let mut s = Schedule::new(Spacing::Poisson { rate_per_sec: 10.0 }, t0, seed);
            let mut v = Vec::new();
            while let Some(t) = s.poll_due(t0 + Duration::from_secs(5)) {
                v.push(t);
            }
            v
        };
        assert_eq!(take(1), take(1));
        assert_ne!(take(1), take(2));
    }

    #[test]
    fn a_late_driver_gets_every_missed_attempt_with_its_own_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(Spacing::Fixed { interval: ms(10) }, t0, 0);
        assert_eq!(s.poll_due(t0 + ms(5)), None);
        // The driver wakes 55 ms late: five attempts were due.
        let due: Vec<_> = std::iter::from_fn(|| s.poll_due(t0 + ms(55))).collect();
        assert_eq!(due, (1..=5).map(|i| t0 + ms(10 * i)).collect::<Vec<_>>());
        assert_eq!(s.next_due(), t0 + ms(60));
    }

    #[test]
    fn latency_forgives_timer_lateness_but_not_stalls() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // On time.
        assert_eq!(latency_from(t0, t0, t0 + ms(40), TIMER_SLACK), ms(40));
        // 1 ms of timer lateness is not charged.
        assert_eq!(
            latency_from(t0, t0 + ms(1), t0 + ms(41), TIMER_SLACK),
            ms(40)
        );
        // A 300 ms stall is charged, less the slack.
        assert_eq!(
            latency_from(t0, t0 + ms(300), t0 + ms(340), TIMER_SLACK),
            ms(338)
        );
    }
}
