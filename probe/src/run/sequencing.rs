//! Sequence numbers for closed windows when the state directory cannot
//! store the next one (a full disk, a read-only remount). The probe keeps
//! measuring: the window goes to `--out` and the terminal at once with
//! sequence 0 ("not numbered yet"), and its batch waits here, in memory,
//! for a number, so the collector gets every window once space returns.
//! Numbers are never handed out without being stored first: a restart
//! may skip one, never reuse one.

use crate::state::ProbeState;
use std::collections::VecDeque;
use vantage_wire::Batch;

/// Batches waiting for a number, at most this many (four hours of
/// one-minute windows); beyond it the oldest is dropped and counted.
pub(crate) const MAX_HELD: usize = 256;

/// Hands out sequence numbers and holds the batches that got none.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    held: VecDeque<Batch>,
    /// The state directory is failing: its error, said once per episode.
    failing: bool,
}

impl Sequencer {
    /// The next sequence number, stored before it is returned; `None`
    /// while the state directory cannot store it (logged once until it can).
    pub(crate) fn next(&mut self, state: &mut ProbeState) -> Option<u64> {
        match state.take_sequence() {
            Ok(seq) => {
                if self.failing {
                    self.failing = false;
                    // As loud as the failure, so whoever saw it sees it end.
                    tracing::warn!(
                        waiting = self.held.len(),
                        "recovered: probe state is writable again; held windows are numbered and spooled"
                    );
                }
                Some(seq)
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        error = %e,
                        "no sequence number could be stored: the probe keeps measuring, writes each window to --out with sequence 0, and holds it in memory for the collector until one can be stored (at most {MAX_HELD})"
                    );
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
    pub(crate) fn release(&mut self, state: &mut ProbeState) -> Vec<Batch> {
        let mut numbered = Vec::new();
        while !self.held.is_empty() {
            let Some(seq) = self.next(state) else { break };
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
