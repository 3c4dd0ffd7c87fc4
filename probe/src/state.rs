//! What a probe keeps between runs: its id and its next batch sequence
//! number, so `(probe_id, sequence)` stays unique across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The probe's persistent identity.
#[derive(Debug)]
pub struct ProbeState {
    dir: PathBuf,
    probe_id: String,
    next_sequence: u64,
}

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("probe state {path}: {source} (use --state-dir to choose a writable directory)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A state file holds something else.
    #[error("probe state {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A configured probe id with characters that cannot be used.
    #[error("probe id `{0}` is invalid: use 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadProbeId(String),
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Writes a file so that after a crash it holds either the old or the new
/// content, never a mix: temporary file, fsync, rename, fsync the directory.
/// The temporary file is `NAME.tmp` (the whole name kept, so two probe ids
/// that differ after a dot never share one), and it is removed when the
/// write fails before the rename: a full disk leaves nothing behind.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Where [`write_durably`] writes `path` before renaming it into place.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes a directory's entries (a rename, a removal) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl ProbeState {
    /// Opens (creating if needed) the state in `dir`. A configured id wins
    /// over the stored one; with neither, a random id is generated and kept.
    pub fn open(dir: &Path, configured_id: Option<&str>) -> Result<Self, StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let id_path = dir.join("probe_id");
        let probe_id = match configured_id {
            Some(id) if valid_id(id) => id.to_string(),
            Some(id) => return Err(StateError::BadProbeId(id.to_string())),
            None => match std::fs::read_to_string(&id_path) {
                Ok(s) => {
                    let id = s.trim().to_string();
                    if !valid_id(&id) {
                        return Err(StateError::Corrupt {
                            path: id_path,
                            reason: format!("`{id}` is not a probe id"),
                        });
                    }
                    id
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let id = format!("p-{:016x}", rand::random::<u64>());
                    write_durably(&id_path, id.as_bytes()).map_err(io(&id_path))?;
                    id
                }
                Err(e) => {
                    return Err(StateError::Io {
                        path: id_path,
                        source: e,
                    })
                }
            },
        };
        let seq_path = dir.join(format!("sequence.{probe_id}"));
        let next_sequence = match std::fs::read_to_string(&seq_path) {
            Ok(s) => s.trim().parse().map_err(|_| StateError::Corrupt {
                path: seq_path.clone(),
                reason: format!("`{}` is not a number", s.trim()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => {
                return Err(StateError::Io {
                    path: seq_path,
                    source: e,
                })
            }
        };
        Ok(ProbeState {
            dir: dir.to_path_buf(),
            probe_id,
            next_sequence,
        })
    }

    /// The probe id.
    pub fn probe_id(&self) -> &str {
        &self.probe_id
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the next sequence number. The one after it is on disk before
    /// this returns, so a crash can skip a number but never reuse one.
    pub fn take_sequence(&mut self) -> Result<u64, StateError> {
        let seq = self.next_sequence;
        let path = self.dir.join(format!("sequence.{}", self.probe_id));
        write_durably(&path, (seq + 1).to_string().as_bytes())
            .map_err(|source| StateError::Io { path, source })?;
        self.next_sequence = seq + 1;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_sequence_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = ProbeState::open(dir.path(), None).unwrap();
        assert_eq!(a.take_sequence().unwrap(), 1);
        assert_eq!(a.take_sequence().unwrap(), 2);
        let id = a.probe_id().to_string();
        drop(a);
        let mut b = ProbeState::open(dir.path(), None).unwrap();
        assert_eq!(b.probe_id(), id);
        assert_eq!(b.take_sequence().unwrap(), 3);
    }

    #[test]
    fn configured_ids_are_checked_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ProbeState::open(dir.path(), Some("a b")),
            Err(StateError::BadProbeId(_))
        ));
        let mut s = ProbeState::open(dir.path(), Some("vm-mumbai-1")).unwrap();
        assert_eq!(s.take_sequence().unwrap(), 1);
        std::fs::write(dir.path().join("sequence.vm-mumbai-1"), "garbage").unwrap();
        let err = ProbeState::open(dir.path(), Some("vm-mumbai-1")).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
