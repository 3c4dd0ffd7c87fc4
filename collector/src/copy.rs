//! `vantage store copy`: moving a store (SQLite to PostgreSQL, say) batch
//! by batch. Every batch goes in through [`Store::insert_batches`], so the
//! destination's key makes the copy exactly-once: stopped at any point and
//! run again, the batches already there answer duplicate and nothing is
//! doubled. Roll-ups are made again in the destination from the batches.

use vantage_store::{Incoming, Inserted, Store, StoreError, StoredBatch};
use vantage_wire::Batch;

/// Batches read and committed per step.
pub const COPY_CHUNK: usize = 256;

/// How far a copy has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyProgress {
    /// Batches in the source when the copy began.
    pub total: u64,
    /// Batches read so far.
    pub read: u64,
    /// Of those, stored in the destination now.
    pub copied: u64,
    /// Of those, already there (an earlier, stopped copy, or the same batch
    /// uploaded to both).
    pub already: u64,
    /// Tokens added to the destination.
    pub tokens: u64,
}

/// Why a copy stopped. What it committed before stays, whole.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Either store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Retention removed a batch's raw bytes, so it cannot be copied.
    #[error("batch {sequence} of probe `{probe}` in {place} had its one-minute series removed by retention (--keep-raw); a copy moves whole batches, so copy a store before retention removes any (the batches before it were copied)")]
    RawRemoved {
        /// The source.
        place: String,
        /// The batch's probe.
        probe: String,
        /// Its sequence.
        sequence: u64,
    },
    /// A stored batch does not decode.
    #[error("batch {sequence} of probe `{probe}` in {place} does not decode: {reason}")]
    Corrupt {
        /// The source.
        place: String,
        /// The batch's probe.
        probe: String,
        /// Its sequence.
        sequence: u64,
        /// What failed.
        reason: String,
    },
    /// `progress` asked to stop.
    #[error("stopped after {} of {} batches (run it again to go on)", .0.read, .0.total)]
    Stopped(CopyProgress),
}

/// Copies every token and batch of `from` (at `from_place`) into `to`,
/// telling `progress` after each chunk; `progress` returning false stops
/// the copy after that chunk's commit.
pub fn copy_store(
    from: &mut dyn Store,
    from_place: &str,
    to: &mut dyn Store,
    progress: &mut dyn FnMut(&CopyProgress) -> bool,
) -> Result<CopyProgress, CopyError> {
    let mut done = CopyProgress {
        total: from.batch_count()?,
        ..CopyProgress::default()
    };
    let present: std::collections::HashSet<String> =
        to.tokens()?.into_iter().map(|t| t.hash).collect();
    for token in from.tokens()? {
        if present.contains(&token.hash) {
            continue;
        }
        to.import_token(&token)?;
        done.tokens += 1;
    }
    let mut after: Option<(String, u64)> = None;
    loop {
        let chunk =
            from.batches_after(after.as_ref().map(|(p, s)| (p.as_str(), *s)), COPY_CHUNK)?;
        let Some(last) = chunk.last() else {
            return Ok(done);
        };
        after = Some((last.probe_id.clone(), last.sequence));
        copy_chunk(&chunk, from_place, to, &mut done)?;
        if !progress(&done) {
            return Err(CopyError::Stopped(done));
        }
    }
}

/// Decodes one chunk and stores it, one transaction per run of batches
/// received at the same instant (a group commit in the source), so every
/// batch keeps its receive time.
fn copy_chunk(
    chunk: &[StoredBatch],
    place: &str,
    to: &mut dyn Store,
    done: &mut CopyProgress,
) -> Result<(), CopyError> {
    let mut decoded = Vec::with_capacity(chunk.len());
    for b in chunk {
        if b.body.is_empty() {
            return Err(CopyError::RawRemoved {
                place: place.to_string(),
                probe: b.probe_id.clone(),
                sequence: b.sequence,
            });
        }
        let corrupt = |reason: String| CopyError::Corrupt {
            place: place.to_string(),
            probe: b.probe_id.clone(),
            sequence: b.sequence,
            reason,
        };
        let (batch, plain) =
            Batch::decode_with_plain_histograms(&b.body).map_err(|e| corrupt(e.to_string()))?;
        if batch.probe_id != b.probe_id || batch.sequence != b.sequence {
            return Err(corrupt("its bytes name another batch".into()));
        }
        decoded.push((batch, plain));
    }
    let mut start = 0;
    while start < chunk.len() {
        let at = chunk[start].received_unix_ms;
        let end = start
            + chunk[start..]
                .iter()
                .take_while(|b| b.received_unix_ms == at)
                .count();
        let items: Vec<Incoming<'_>> = (start..end)
            .map(|n| Incoming {
                batch: &decoded[n].0,
                raw: &chunk[n].body,
                plain_histograms: &decoded[n].1,
                token_hash: None,
            })
            .collect();
        for outcome in to.insert_batches(&items, at)? {
            match outcome {
                Inserted::Stored => done.copied += 1,
                Inserted::Duplicate => done.already += 1,
                // Only a batch with a token hash is refused for its token,
                // and a copy carries none.
                Inserted::TokenRevoked => {}
            }
        }
        done.read += (end - start) as u64;
        start = end;
    }
    Ok(())
}
