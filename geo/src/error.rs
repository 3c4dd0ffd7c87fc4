//! Why a site map or dataset file was refused: always the file, and where
//! in it, and what to do.

use std::path::{Path, PathBuf};

/// A site-map or dataset file's text.
pub(crate) fn read_text(file: &Path) -> Result<String, GeoError> {
    std::fs::read_to_string(file).map_err(|source| GeoError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// The lines of a file that hold data, numbered from 1 and trimmed:
/// blank lines and `#` comments skipped.
pub(crate) fn data_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, raw)| (i as u64 + 1, raw.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// Not readable.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A line (or an entry) that cannot be parsed.
    #[error("{}:{line}: {reason}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// Its line, from 1.
        line: u64,
        /// What is wrong, and what is expected.
        reason: String,
    },
    /// Two ranges of a site map share addresses.
    #[error("{}:{} and {}:{}: ranges {} and {} overlap; a site map gives each address one site (split or remove one)", .first.1.display(), .first.2, .second.1.display(), .second.2, .first.0, .second.0)]
    Overlap {
        /// The first range, its file and line.
        first: (String, PathBuf, u64),
        /// The second.
        second: (String, PathBuf, u64),
    },
    /// A file of no format this reads.
    #[error("{}: {reason}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// What was expected.
        reason: String,
    },
}
