//! Sequence numbers for closed windows when the state directory cannot
//! store the next one (a full disk, a read-only remount). The probe keeps
//! measuring: the window goes to `--out` and the terminal at once with
//! sequence 0 ("not numbered yet"), and its batch waits here, in memory,
//! for a number, so the collector gets every window once space returns.
//! Numbers are never handed out without being stored first: a restart
//! may skip one, never reuse one.

use super::reminder::{free_bytes, Reminder, Say};
use crate::state::ProbeState;
use std::collections::VecDeque;
use std::time::Instant;
use vantage_wire::Batch;

/// Batches waiting for a number, at most this many (four hours of
/// one-minute windows); beyond it the oldest is dropped and counted.
pub(crate) const MAX_HELD: usize = 256;

/// Hands out sequence numbers and holds the batches that got none.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    held: VecDeque<Batch>,
    /// The state directory is failing: said when it begins, once a
    /// minute while it lasts, and when it ends.
    trouble: Reminder,
}

impl Sequencer {
    /// The next sequence number, stored before it is returned; `None`
    /// while the state directory cannot store it (said when that begins,
    /// then once a minute at `now`, and when it ends).
    pub(crate) fn next(&mut self, state: &mut ProbeState, now: Instant) -> Option<u64> {
        match state.take_sequence() {
            Ok(seq) => {
                if let Some(failures) = self.trouble.succeeded() {
                    // As loud as the failure, so whoever saw it sees it end.
                    tracing::warn!(
                        waiting = self.held.len(),
                        failures,
                        "recovered: probe state is writable again; held windows are numbered and spooled"
                    );
                }
                Some(seq)
            }
            Err(e) => {
                let free = free_bytes(state.dir());
                let free = free.map_or("unknown".to_string(), |b| format!("{b} bytes"));
                let waiting = self.held.len() + 1;
                match self.trouble.failed(now) {
                    Say::Began => tracing::warn!(
                        error = %e,
                        free,
                        "no sequence number could be stored (it needs under 32 bytes in the state directory): the probe keeps measuring, writes each window to --out with sequence 0, and holds it in memory for the collector until one can be stored (at most {MAX_HELD})"
                    ),
                    Say::Again { failures } => tracing::warn!(
                        error = %e,
                        free,
                        failures,
                        waiting,
                        "still no sequence number can be stored (it needs under 32 bytes in the state directory); windows wait in memory for the collector (at most {MAX_HELD})"
                    ),
                    Say::Quiet => {}
                }
                None
            }
        }
    }

    /// Holds a batch that got no number; returns how many older ones were
    /// dropped to keep within [`MAX_HELD`] (count them as lost).
    pub(crate) fn hold(&mut self, batch: Batch) -> u64 {
        self.held.push_back(batch);
        let mut dropped = 0;
        while self.held.len() > MAX_HELD {
            self.held.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// The held batches that now get a number, oldest first, numbered in
    /// that order; stops at the first that cannot be numbered.
    pub(crate) fn release(&mut self, state: &mut ProbeState, now: Instant) -> Vec<Batch> {
        let mut numbered = Vec::new();
        while !self.held.is_empty() {
            let Some(seq) = self.next(state, now) else {
                break;
            };
            if let Some(mut batch) = self.held.pop_front() {
                batch.sequence = seq;
                numbered.push(batch);
            }
        }
        numbered
    }

    /// Batches waiting for a number.
    pub(crate) fn waiting(&self) -> usize {
        self.held.len()
    }
}
