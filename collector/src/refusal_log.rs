//! Refusals in the log, at most one line per reason a minute: an operator
//! sees that probes are being turned away (a revoked token, a clock far
//! ahead, a flood of garbage) without a flood turning into a log flood.
//! Plain state; the caller passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often one reason is logged at most.
pub(crate) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Per reason: when it was last logged, and how many went unlogged since.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    reasons: HashMap<&'static str, (Instant, u64)>,
}

impl RefusalLog {
    /// Whether to log a refusal for `reason` at `now`; `Some(n)` with the
    /// `n` refusals of that reason not logged since its last line.
    pub(crate) fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.reasons.get_mut(reason) {
            Some((last, quiet)) if now.saturating_duration_since(*last) < REFUSAL_LOG_EVERY => {
                *quiet += 1;
                None
            }
            Some((last, quiet)) => {
                *last = now;
                Some(std::mem::take(quiet))
            }
            None => {
                self.reasons.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_a_minute_with_what_went_unsaid() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.admit("unauthorized", t0), Some(0));
        assert_eq!(log.admit("unauthorized", t0 + Duration::from_secs(1)), None);
        assert_eq!(
            log.admit("invalid", t0 + Duration::from_secs(1)),
            Some(0),
            "each reason its own"
        );
        assert_eq!(
            log.admit("unauthorized", t0 + Duration::from_secs(59)),
            None
        );
        assert_eq!(log.admit("unauthorized", t0 + REFUSAL_LOG_EVERY), Some(2));
        assert_eq!(
            log.admit("unauthorized", t0 + REFUSAL_LOG_EVERY * 2),
            Some(0)
        );
    }
}
