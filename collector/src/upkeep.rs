//! What the store writer does between commits: fold stored batches into
//! the roll-ups and remove raw series past retention, in bounded steps, so
//! ingest never waits behind more than one step. Plain logic on a `now`
//! given by the writer thread (which owns the clock), tested with a fake one.

use std::time::Duration;
use vantage_store::RawRemoved;

/// Batches folded per step: one transaction of a few hundred ms.
pub const FOLD_CHUNK: usize = 512;
/// Unfolded batches past which a fold runs between commits even while
/// uploads keep arriving (otherwise folds wait for a quiet moment).
pub const FOLD_HIGH_WATER: u64 = 8 * FOLD_CHUNK as u64;
/// Longest a batch waits to be folded while the writer is idle. Folds are
/// put off so that each folds many windows of a probe: a fold writes every
/// roll-up it touches once, so folding each commit's few batches (one per
/// probe) would cost a roll-up write per series. Reads merge unfolded
/// batches in, so waiting changes no figure.
pub const FOLD_EVERY: Duration = Duration::from_secs(60);
/// Batches whose raw series one retention step removes.
pub const RETAIN_CHUNK: usize = 256;
/// How often retention looks for raw series past their time once it has
/// caught up (and how long upkeep waits after a failed step).
pub const RETAIN_EVERY: Duration = Duration::from_secs(60);

/// One bounded step of upkeep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fold up to [`FOLD_CHUNK`] batches into the roll-ups.
    Fold,
    /// Remove the raw series of up to [`RETAIN_CHUNK`] folded batches
    /// created before this instant (Unix ms).
    Retain {
        /// The cut-off, Unix ms.
        before_unix_ms: u64,
    },
}

/// How the writer keeps the store: what `vantage collect` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpkeepConfig {
    /// How long one-minute series are kept (`None`: forever).
    pub keep_raw: Option<Duration>,
    /// Longest a few unfolded batches wait while the writer is idle.
    pub fold_every: Duration,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        UpkeepConfig {
            keep_raw: None,
            fold_every: FOLD_EVERY,
        }
    }
}

/// The writer's upkeep state.
#[derive(Debug, Clone)]
pub struct Upkeep {
    keep_raw: Option<Duration>,
    fold_every: Duration,
    /// Batches stored and not yet folded, as far as the writer knows.
    unfolded: u64,
    /// When retention next runs, Unix ms.
    retain_at: u64,
    /// When the last fold ran, Unix ms.
    folded_at: u64,
    /// No step before this (after a failure), Unix ms.
    paused_until: u64,
    /// A fold is being read and merged off the writer; no other starts.
    planning: bool,
}

impl Upkeep {
    /// Upkeep as `config` says, for a store holding `unfolded` batches not
    /// yet folded.
    pub fn new(config: UpkeepConfig, unfolded: u64) -> Self {
        Upkeep {
            keep_raw: config.keep_raw,
            fold_every: config.fold_every,
            unfolded,
            retain_at: 0,
            folded_at: 0,
            paused_until: 0,
            planning: false,
        }
    }

    /// A fold's reading began (off the writer): no fold is due until it
    /// is written ([`Upkeep::folded`]), dropped or failed.
    pub fn planning(&mut self) {
        self.planning = true;
    }

    /// A planned fold was dropped unwritten (another fold came first, or
    /// it failed).
    pub fn plan_dropped(&mut self) {
        self.planning = false;
    }

    /// `n` new batches were committed.
    pub fn stored(&mut self, n: u64) {
        self.unfolded += n;
    }

    /// The step to take now, if any. `idle`: no upload is waiting.
    pub fn due(&self, now_unix_ms: u64, idle: bool) -> Option<Step> {
        if now_unix_ms < self.paused_until {
            return None;
        }
        if (!self.planning && self.unfolded >= FOLD_HIGH_WATER)
            || (idle && self.fold_at().is_some_and(|at| at <= now_unix_ms))
        {
            return Some(Step::Fold);
        }
        let keep = self.keep_raw?;
        (now_unix_ms >= self.retain_at).then(|| Step::Retain {
            before_unix_ms: now_unix_ms.saturating_sub(keep.as_millis() as u64),
        })
    }

    /// How long the idle writer may wait for an upload before a step is due
    /// (`None`: until one comes).
    pub fn wait(&self, now_unix_ms: u64) -> Option<Duration> {
        let retain = self.keep_raw.map(|_| self.retain_at);
        let next = match (self.fold_at(), retain) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let next = next.max(self.paused_until);
        Some(Duration::from_millis(next.saturating_sub(now_unix_ms)))
    }

    /// When an idle writer should next fold, if anything is unfolded: at
    /// once when a chunk is waiting, else [`FOLD_EVERY`] after the last.
    fn fold_at(&self) -> Option<u64> {
        if self.planning {
            return None;
        }
        match self.unfolded {
            0 => None,
            n if n >= FOLD_CHUNK as u64 => Some(0),
            _ => Some(self.folded_at + self.fold_every.as_millis() as u64),
        }
    }

    /// A fold at `now` asked for `asked` batches and folded `folded`.
    pub fn folded(&mut self, now_unix_ms: u64, asked: usize, folded: u64) {
        self.planning = false;
        self.folded_at = now_unix_ms;
        if folded > 0 {
            // Newly folded batches may be past retention.
            self.retain_at = self.retain_at.min(now_unix_ms);
        }
        self.unfolded = if folded < asked as u64 {
            0
        } else {
            self.unfolded.saturating_sub(folded)
        };
    }

    /// A retention step asked for `asked` batches and removed `removed`:
    /// when it found fewer, it has caught up until [`RETAIN_EVERY`] from now.
    pub fn retained(&mut self, now_unix_ms: u64, asked: usize, removed: RawRemoved) {
        if removed.batches < asked as u64 {
            self.retain_at = now_unix_ms + RETAIN_EVERY.as_millis() as u64;
        }
    }

    /// A step failed: pause upkeep for [`RETAIN_EVERY`] (ingest goes on).
    pub fn failed(&mut self, now_unix_ms: u64) {
        self.paused_until = now_unix_ms + RETAIN_EVERY.as_millis() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn keep(d: Duration) -> UpkeepConfig {
        UpkeepConfig {
            keep_raw: Some(d),
            ..UpkeepConfig::default()
        }
    }

    #[test]
    fn folds_a_chunk_when_idle_or_far_behind_and_a_few_batches_after_a_while() {
        let minute = FOLD_EVERY.as_millis() as u64;
        let mut u = Upkeep::new(UpkeepConfig::default(), 0);
        assert_eq!(u.due(0, true), None, "nothing to do");
        assert_eq!(u.wait(0), None, "so wait for an upload");
        u.stored(10);
        assert_eq!(u.due(minute, false), None, "uploads waiting: they go first");
        assert_eq!(
            u.due(minute, true),
            Some(Step::Fold),
            "a while since the last fold"
        );
        u.folded(minute, FOLD_CHUNK, 10);
        u.stored(10);
        assert_eq!(u.due(minute + 1, true), None, "a few batches wait for more");
        assert_eq!(
            u.wait(minute + 1),
            Some(FOLD_EVERY - Duration::from_millis(1))
        );
        assert_eq!(u.due(2 * minute, true), Some(Step::Fold));
        u.stored(FOLD_CHUNK as u64);
        assert_eq!(
            u.due(minute + 2, true),
            Some(Step::Fold),
            "a chunk is waiting"
        );
        assert_eq!(u.wait(minute + 2), Some(Duration::ZERO));
        u.folded(minute + 2, FOLD_CHUNK, 7);
        assert_eq!(
            u.due(minute + 2, true),
            None,
            "fewer than asked: all folded"
        );
        u.stored(FOLD_HIGH_WATER);
        assert_eq!(
            u.due(minute + 2, false),
            Some(Step::Fold),
            "too far behind: fold anyway"
        );
        u.folded(minute + 2, FOLD_CHUNK, FOLD_CHUNK as u64);
        assert!(u.unfolded < FOLD_HIGH_WATER);
        assert_eq!(
            u.due(minute + 2, false),
            None,
            "one step, then ingest again"
        );
    }

    #[test]
    fn retention_cuts_at_now_minus_keep_and_rests_once_caught_up() {
        let now = 30 * DAY;
        let mut u = Upkeep::new(keep(Duration::from_millis(14 * DAY)), 0);
        assert_eq!(
            u.due(now, false),
            Some(Step::Retain {
                before_unix_ms: 16 * DAY
            })
        );
        u.retained(
            now,
            RETAIN_CHUNK,
            RawRemoved {
                batches: RETAIN_CHUNK as u64,
                series: 9,
            },
        );
        assert!(u.due(now, true).is_some(), "more to remove: keep going");
        u.retained(
            now,
            RETAIN_CHUNK,
            RawRemoved {
                batches: 3,
                series: 9,
            },
        );
        assert_eq!(u.due(now + 1, true), None, "caught up");
        assert_eq!(
            u.wait(now + 1),
            Some(RETAIN_EVERY - Duration::from_millis(1))
        );
        let later = now + RETAIN_EVERY.as_millis() as u64;
        assert!(matches!(u.due(later, true), Some(Step::Retain { .. })));
        // Folding comes first: only folded batches may lose their raw series.
        u.stored(FOLD_CHUNK as u64);
        assert_eq!(u.due(later, true), Some(Step::Fold));
        // And what it folded may be past retention: looked at at once.
        u.retained(later, RETAIN_CHUNK, RawRemoved::default());
        u.folded(later + 5, FOLD_CHUNK, 3);
        assert!(matches!(u.due(later + 5, true), Some(Step::Retain { .. })));
    }

    #[test]
    fn one_fold_is_planned_at_a_time_and_retention_goes_on_meanwhile() {
        let mut u = Upkeep::new(keep(Duration::from_millis(DAY)), FOLD_HIGH_WATER);
        assert_eq!(u.due(10 * DAY, false), Some(Step::Fold));
        u.planning();
        assert!(
            matches!(u.due(10 * DAY, true), Some(Step::Retain { .. })),
            "no second fold while one is being read"
        );
        u.retained(10 * DAY, RETAIN_CHUNK, RawRemoved::default());
        assert_eq!(u.due(10 * DAY, true), None);
        u.failed(10 * DAY);
        assert_eq!(
            u.due(10 * DAY + RETAIN_EVERY.as_millis() as u64, true),
            Some(Step::Retain {
                before_unix_ms: 9 * DAY + RETAIN_EVERY.as_millis() as u64
            }),
            "a failed retention step does not end the fold being planned"
        );
        u.plan_dropped();
        assert_eq!(
            u.due(11 * DAY, false),
            Some(Step::Fold),
            "dropped: planned again"
        );
        u.planning();
        u.folded(11 * DAY, FOLD_CHUNK, FOLD_CHUNK as u64);
        assert!(
            matches!(u.due(11 * DAY, false), Some(Step::Retain { .. })),
            "written: what it folded may be past retention"
        );
        assert_eq!(
            u.due(11 * DAY, true),
            Some(Step::Fold),
            "idle with a chunk still waiting: the next fold"
        );
    }

    #[test]
    fn a_failed_step_pauses_upkeep_but_not_ingest() {
        let mut u = Upkeep::new(keep(Duration::from_secs(1)), FOLD_CHUNK as u64);
        u.failed(1000);
        assert_eq!(u.due(1000, true), None);
        assert_eq!(u.wait(1000), Some(RETAIN_EVERY));
        assert_eq!(
            u.due(1000 + RETAIN_EVERY.as_millis() as u64, true),
            Some(Step::Fold)
        );
    }
}
