//! Where a store is, as `--db` names it: a SQLite file, or a PostgreSQL
//! database (a `postgres://` URL or libpq's `key=value` form).

use crate::postgres::{is_postgres, PgLocation, PgLocationError, PgStore};
use crate::sqlite::SqliteStore;
use std::path::{Path, PathBuf};
use vantage_store::{Store, StoreError};

/// A store's location.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// An embedded SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by any number of collectors.
    Postgres(Box<PgLocation>),
}

impl StoreLocation {
    /// Parses `--db`. A PostgreSQL password comes from `password_file`,
    /// else the string, else the `PGPASSWORD` environment variable.
    pub fn parse(db: &str, password_file: Option<&Path>) -> Result<Self, PgLocationError> {
        if is_postgres(db) {
            let env = std::env::var("PGPASSWORD").ok();
            let location = PgLocation::parse(db, password_file, env)?;
            Ok(StoreLocation::Postgres(Box::new(location)))
        } else {
            Ok(StoreLocation::Sqlite(PathBuf::from(db)))
        }
    }

    /// Opens the store, creating (or migrating) its schema.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            StoreLocation::Postgres(location) => Box::new(PgStore::open(location)?),
        })
    }

    /// The store for messages (a PostgreSQL password never shows).
    pub fn place(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(location) => location.place().to_string(),
        }
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> Self {
        StoreLocation::Sqlite(path)
    }
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> Self {
        StoreLocation::Sqlite(path.to_path_buf())
    }
}
