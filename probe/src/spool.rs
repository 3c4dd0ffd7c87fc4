//! The spool: batches waiting for the collector, one file each, written
//! durably before they are sent and deleted only when the collector has
//! acknowledged them. It survives restarts and reboots; when it reaches its
//! size cap it drops the oldest batches and counts them, and the next batch
//! reports the count (`dropped_batches`).

use crate::state::{sync_dir, write_durably};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source} (check free space and permissions of --spool-dir)")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// One batch is larger than the whole spool.
    #[error(
        "a batch of {size} bytes does not fit a spool of {cap} bytes; raise --spool-max-bytes"
    )]
    TooBig {
        /// Batch size.
        size: u64,
        /// Spool cap.
        cap: u64,
    },
}

/// A directory of batches waiting for acknowledgement.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cap_bytes: u64,
    files: BTreeMap<u64, u64>,
    pending_drops: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, capped at `cap_bytes`.
    /// Leftovers of an interrupted write (`*.tmp`) are removed: they were
    /// never acknowledged by anyone, and their batch is still in memory or
    /// was never complete.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
            } else if let Some(seq) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let len = entry.metadata().map_err(io_err(&path))?.len();
                files.insert(seq, len);
            }
        }
        let drops_path = dir.join("dropped");
        let pending_drops = std::fs::read_to_string(&drops_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Spool {
            dir: dir.to_path_buf(),
            cap_bytes,
            files,
            pending_drops,
        })
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Drops not yet reported in a batch.
    pub fn pending_drops(&self) -> u64 {
        self.pending_drops
    }

    /// Keeps the count of drops not yet reported on disk, so it survives a
    /// restart. If that fails (a full disk) the count stays in memory and
    /// the next batch still reports it; only a restart before the disk
    /// frees up loses it, and that is said here.
    fn save_drops(&self) {
        let path = self.dir.join("dropped");
        if let Err(e) = write_durably(&path, self.pending_drops.to_string().as_bytes()) {
            tracing::warn!(
                error = %e,
                pending = self.pending_drops,
                "the spool's count of dropped batches was not saved (the next batch still reports it; a restart before the disk frees up would lose the count)"
            );
        }
    }

    /// Stores batch `seq` durably. `reported` is how many earlier drops the
    /// batch itself reports (its `dropped_batches`); they are cleared. If the
    /// spool is over its cap, the oldest batches are deleted first; returns
    /// how many, which the next batch will report.
    ///
    /// A batch that cannot be stored (a full disk, or larger than the whole
    /// spool) is counted as dropped too, with the oldest deleted for it, so
    /// the next batch spooled reports every batch the collector will never
    /// see; the drops this one reported stay to be reported.
    pub fn push(&mut self, seq: u64, bytes: &[u8], reported: u64) -> Result<u64, SpoolError> {
        let size = bytes.len() as u64;
        if size > self.cap_bytes {
            self.lost(0);
            return Err(SpoolError::TooBig {
                size,
                cap: self.cap_bytes,
            });
        }
        let mut dropped = 0;
        while self.bytes() + size > self.cap_bytes {
            let Some((&oldest, _)) = self.files.iter().next() else {
                break;
            };
            if let Err(e) = self.remove(oldest) {
                self.lost(dropped);
                return Err(e);
            }
            dropped += 1;
        }
        let path = self.path_of(seq);
        if let Err(source) = write_durably(&path, bytes) {
            // `write_durably` removed its temporary file.
            // Renamed into place but the directory not synced: it is spooled.
            let kept = std::fs::metadata(&path).is_ok_and(|m| m.len() == size);
            if !kept {
                self.lost(dropped);
                return Err(SpoolError::Io { path, source });
            }
            tracing::warn!(error = %source, sequence = seq, "spooled, but the spool directory could not be synced");
        }
        self.files.insert(seq, size);
        self.pending_drops = self.pending_drops.saturating_sub(reported) + dropped;
        self.save_drops();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                cap = self.cap_bytes,
                "spool full: dropped the oldest batches; the next batch reports them"
            );
        }
        Ok(dropped)
    }

    /// Counts `n` batches that never reached the spool (the probe could
    /// not number them): the next batch spooled reports them.
    pub fn count_dropped(&mut self, n: u64) {
        if n > 0 {
            self.pending_drops += n;
            self.save_drops();
        }
    }

    /// The batch being pushed was not stored, after `evicted` older ones
    /// were deleted for it: all of them are drops to report.
    fn lost(&mut self, evicted: u64) {
        self.pending_drops += evicted + 1;
        self.save_drops();
    }

    /// The oldest batch waiting, with its bytes.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let Some((&seq, _)) = self.files.iter().next() else {
            return Ok(None);
        };
        let path = self.path_of(seq);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        Ok(Some((seq, bytes)))
    }

    /// Deletes an acknowledged (or dropped) batch.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = self.path_of(seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::Io { path, source: e }),
        }
        self.files.remove(&seq);
        sync_dir(&self.dir).map_err(io_err(&self.dir))
    }

    /// Moves a batch the collector will never accept out of the way (kept
    /// in `rejected/`, not deleted, so nothing measured is lost silently).
    pub fn reject(&mut self, seq: u64) -> Result<(), SpoolError> {
        let rejected = self.dir.join("rejected");
        std::fs::create_dir_all(&rejected).map_err(io_err(&rejected))?;
        let from = self.path_of(seq);
        let to = rejected.join(format!("{seq:020}.batch"));
        std::fs::rename(&from, &to).map_err(io_err(&from))?;
        self.files.remove(&seq);
        sync_dir(&self.dir).map_err(io_err(&self.dir))
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.files.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push(2, b"two", 0).unwrap();
        s.push(1, b"one", 0).unwrap();
        std::fs::write(dir.path().join("00000000000000000003.batch.tmp"), b"half").unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.oldest().unwrap(), Some((1, b"one".to_vec())));
        s.remove(1).unwrap();
        assert_eq!(s.oldest().unwrap(), Some((2, b"two".to_vec())));
        assert!(!dir.path().join("00000000000000000003.batch.tmp").exists());
    }

    #[test]
    fn a_full_spool_drops_oldest_and_counts_for_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(s.push(1, b"aaaa", 0).unwrap(), 0);
        assert_eq!(s.push(2, b"bbbb", 0).unwrap(), 0);
        assert_eq!(s.push(3, b"cccc", 0).unwrap(), 1, "oldest dropped");
        assert_eq!(s.pending_drops(), 1);
        drop(s);
        let mut s = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(s.pending_drops(), 1, "the count survives a restart");
        assert_eq!(s.oldest().unwrap().unwrap().0, 2);
        // Batch 4 reports the one drop; pushing it drops batch 2.
        assert_eq!(s.push(4, b"dddd", 1).unwrap(), 1);
        assert_eq!(s.pending_drops(), 1);
        assert!(matches!(
            s.push(5, &[0; 11], 0),
            Err(SpoolError::TooBig { .. })
        ));
        assert_eq!(
            s.pending_drops(),
            2,
            "a batch too big to keep is a drop too"
        );
    }

    #[test]
    fn a_batch_that_cannot_be_written_is_counted_with_what_was_evicted_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10).unwrap();
        s.push(1, b"aaaa", 0).unwrap();
        s.push(2, b"bbbb", 0).unwrap();
        // The write of batch 3 fails (its temporary file's name is taken by
        // a directory): as a full disk fails it, after batch 1 was evicted.
        std::fs::create_dir(dir.path().join("00000000000000000003.batch.tmp")).unwrap();
        let err = s.push(3, b"cccc", 0).unwrap_err();
        assert!(err.to_string().contains("--spool-dir"), "{err}");
        assert_eq!(s.pending_drops(), 2, "batch 1 evicted and batch 3 lost");
        assert_eq!(s.len(), 1);
        // Batch 4 reports both; batch 3 reported nothing, so nothing of the
        // count was cleared by it.
        assert_eq!(s.push(4, b"dddd", 2).unwrap(), 0);
        assert_eq!(s.pending_drops(), 0);
        drop(s);
        assert_eq!(Spool::open(dir.path(), 10).unwrap().pending_drops(), 0);
    }

    #[test]
    fn a_batch_spooled_whose_drop_count_cannot_be_saved_is_still_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10).unwrap();
        std::fs::create_dir(dir.path().join("dropped.tmp")).unwrap();
        s.push(1, b"aaaa", 0).unwrap();
        s.push(2, b"bbbb", 0).unwrap();
        assert_eq!(
            s.push(3, b"cccc", 0).unwrap(),
            1,
            "spooled, batch 1 evicted"
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s.pending_drops(), 1, "the count kept in memory");
    }

    #[test]
    fn rejected_batches_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        s.push(7, b"bad", 0).unwrap();
        s.reject(7).unwrap();
        assert!(s.is_empty());
        assert!(dir
            .path()
            .join("rejected/00000000000000000007.batch")
            .exists());
    }
}
