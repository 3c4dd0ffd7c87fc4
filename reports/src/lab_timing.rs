//! The lab's own timing, as a report records it: how late the lab's
//! release clock let packets go, and whether that was late enough that
//! the figures cannot be taken as accurate. Plain code.

use serde::Serialize;
use std::time::Duration;

/// The smallest lateness bound: below 1 ms a release's error is small
/// against any path the lab emulates.
const FLOOR: Duration = Duration::from_millis(1);

/// The release clock's lateness over a lab run (release instant minus
/// intended instant, every datagram and stream chunk), and its verdict.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LabTiming {
    /// Median lateness, µs.
    pub lateness_p50_us: f64,
    /// 99th percentile of lateness, µs.
    pub lateness_p99_us: f64,
    /// Releases counted.
    pub releases: u64,
    /// The bound p99 is held to, µs: 1 ms, or 1 % of the smallest one-way
    /// path delay when that is more.
    pub bound_us: f64,
    /// p99 above the bound: the run's figures are not accurate (a busy
    /// machine, another build beside the lab), and every output says so.
    pub degraded: bool,
}

impl LabTiming {
    /// Judges a run's lateness (`p50`, `p99` over `releases`) against the
    /// bound for paths whose smallest one-way delay is `smallest_delay`.
    pub fn judge(
        p50: Duration,
        p99: Duration,
        releases: u64,
        smallest_delay: Option<Duration>,
    ) -> Self {
        let bound = smallest_delay.map_or(FLOOR, |d| (d / 100).max(FLOOR));
        LabTiming {
            lateness_p50_us: p50.as_secs_f64() * 1e6,
            lateness_p99_us: p99.as_secs_f64() * 1e6,
            releases,
            bound_us: bound.as_secs_f64() * 1e6,
            degraded: p99 > bound,
        }
    }

    /// One line for a terminal or a methods section.
    pub fn sentence(&self) -> String {
        let figures = format!(
            "the lab's release clock let packets go p50 {:.1} µs and p99 {:.1} µs late over {} releases (bound {:.0} µs)",
            self.lateness_p50_us, self.lateness_p99_us, self.releases, self.bound_us
        );
        if self.degraded {
            format!("LAB TIMING DEGRADED: {figures}; the emulated paths were not held to their delays, so these figures are not accurate. Rerun on a quiet machine.")
        } else {
            format!("Lab timing: {figures}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_above_the_bound_is_degraded() {
        let us = Duration::from_micros;
        let ms = Duration::from_millis;
        // Quiet, as measured here: 56 µs at p99.
        let quiet = LabTiming::judge(us(0), us(56), 21_367, Some(ms(5)));
        assert!(!quiet.degraded);
        assert_eq!(quiet.bound_us, 1000.0);
        assert!(quiet.sentence().starts_with("Lab timing:"));
        // Under a parallel cargo build: 89 ms at p99.
        let busy = LabTiming::judge(us(40), ms(89), 21_367, Some(ms(5)));
        assert!(busy.degraded);
        assert!(busy.sentence().starts_with("LAB TIMING DEGRADED"));
        // A 250 ms path tolerates 2.5 ms; 2 ms is within, 3 ms is not.
        assert!(!LabTiming::judge(us(0), ms(2), 10, Some(ms(250))).degraded);
        assert!(LabTiming::judge(us(0), ms(3), 10, Some(ms(250))).degraded);
        assert!(LabTiming::judge(us(0), ms(2), 10, None).degraded);
    }
}
