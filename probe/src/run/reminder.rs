//! A trouble that lasts (a full spool or state filesystem) is said when it
//! begins, then once a minute while it lasts, with how many failures went
//! unsaid in between, and once more when it ends: loud enough to be seen
//! in a journal, never a line per window.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often a lasting trouble is said again.
pub(crate) const REPEAT: Duration = Duration::from_secs(60);

/// One kind of lasting trouble and when it was last said.
#[derive(Debug, Default)]
pub(crate) struct Reminder {
    last_said: Option<Instant>,
    /// Failures since it was last said.
    unsaid: u64,
    /// Failures since the trouble began.
    failures: u64,
}

/// Whether a failure is to be said now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Say {
    /// The first failure of an episode.
    Began,
    /// A minute since it was last said, with the failures since then,
    /// this one included.
    Again { failures: u64 },
    /// Said less than a minute ago.
    Quiet,
}

impl Reminder {
    /// Records a failure at `now` and says whether to log it.
    pub(crate) fn failed(&mut self, now: Instant) -> Say {
        self.failures += 1;
        self.unsaid += 1;
        let say = match self.last_said {
            None => Say::Began,
            Some(t) if now.saturating_duration_since(t) >= REPEAT => Say::Again {
                failures: self.unsaid,
            },
            Some(_) => return Say::Quiet,
        };
        self.last_said = Some(now);
        self.unsaid = 0;
        say
    }

    /// Records a success: the failures of the episode that just ended, if
    /// one did (say so), or `None`.
    pub(crate) fn succeeded(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        self.last_said = None;
        self.unsaid = 0;
        (failures > 0).then_some(failures)
    }

    /// The trouble is on now.
    #[cfg(test)]
    fn failing(&self) -> bool {
        self.failures > 0
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `dir`, if the system says.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is written by the
    // call before it is read, only when the call succeeds.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ by platform
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn said_when_it_begins_then_once_a_minute_with_what_went_unsaid() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = Reminder::default();
        assert_eq!(r.failed(at(0)), Say::Began);
        for s in 1..60 {
            assert_eq!(r.failed(at(s)), Say::Quiet, "at {s} s");
        }
        assert_eq!(r.failed(at(60)), Say::Again { failures: 60 });
        assert_eq!(r.failed(at(61)), Say::Quiet);
        assert_eq!(r.failed(at(125)), Say::Again { failures: 2 });
        assert!(r.failing());
        assert_eq!(r.succeeded(), Some(63));
        assert!(!r.failing());
        assert_eq!(r.succeeded(), None, "said once");
        // A new episode begins loudly again.
        assert_eq!(r.failed(at(130)), Say::Began);
    }

    #[test]
    fn free_bytes_of_a_real_directory_and_none_for_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some());
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }
}
