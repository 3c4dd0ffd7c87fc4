//! Where batches live, seen from every side that reads or writes them:
//! the [`Store`] trait, what goes in ([`Incoming`]) and comes out
//! ([`StoredSeries`]), the [`Selector`] that picks series, exact merges
//! ([`merge_groups`]) and the export renderings ([`export`]).
//!
//! Backends implement [`Store`] elsewhere (SQLite in `vantage-collector`),
//! so reports and exports link no database code: they see only the trait.
#![warn(missing_docs, unreachable_pub)]

pub mod export;
pub mod fleet;
mod resolution;
pub mod select;
pub mod trace;

pub use resolution::{Resolution, ResolutionError};
pub use trace::StoredTrace;

/// A fold read and merged by [`Store::plan_fold`], waiting to be written
/// by [`Store::apply_fold`]: opaque outside the backend that made it.
pub struct FoldPlan(PlanKind);

enum PlanKind {
    /// Nothing prepared: the apply folds up to this many batches itself.
    InApply(usize),
    /// The backend's own prepared rows.
    Prepared(Box<dyn std::any::Any + Send>),
}

impl FoldPlan {
    /// A plan that leaves the whole fold of up to `max_batches` to the apply.
    pub fn in_apply(max_batches: usize) -> Self {
        FoldPlan(PlanKind::InApply(max_batches))
    }

    /// A plan of rows a backend prepared.
    pub fn prepared(rows: Box<dyn std::any::Any + Send>) -> Self {
        FoldPlan(PlanKind::Prepared(rows))
    }

    /// The prepared rows, if this plan holds any (else how many batches
    /// the apply is to fold).
    pub fn into_prepared(self) -> Result<Box<dyn std::any::Any + Send>, usize> {
        match self.0 {
            PlanKind::InApply(max) => Err(max),
            PlanKind::Prepared(rows) => Ok(rows),
        }
    }
}
pub use select::{
    merge_counts_into, merge_groups, merge_into, Group, GroupMerger, Selector, SelectorError,
    StoredSeries,
};

use vantage_wire::{Batch, SparseCounts};

/// What storing one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// New: stored now.
    Stored,
    /// `(probe id, sequence)` was already stored: nothing written.
    Duplicate,
    /// The token the batch came with was revoked, or is not its probe's,
    /// when the transaction ran: nothing written.
    TokenRevoked,
}

/// One batch to store: decoded, as received, and each series' histogram
/// as plain V2 bytes (from `Batch::decode_with_plain_histograms`), so it
/// is stored without encoding it again. An empty `plain_histograms` makes
/// the store encode them.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The decoded batch.
    pub batch: &'a Batch,
    /// The bytes as received.
    pub raw: &'a [u8],
    /// Plain V2 histograms, one per series, or empty.
    pub plain_histograms: &'a [Vec<u8>],
    /// The hash of the token the batch was uploaded with, or `None` for a
    /// batch already accepted (a store copy). When given, the batch is
    /// stored only if, inside the transaction that stores it, the token is
    /// still its probe's and not revoked: a revoke that commits while the
    /// batch waits for the writer refuses it, on every collector.
    pub token_hash: Option<&'a str>,
}

/// A store failure. Ingest answers `unavailable`, so the probe retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation or could not be reached.
    #[error("database {place}: {source}")]
    Database {
        /// The database: a file path, or a URL without its password.
        place: String,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database's disk is full: nothing of the failed operation was
    /// kept, and it can succeed once space is freed.
    #[error("database {place}: its disk is full ({source}); free space there: nothing is lost meanwhile, probes keep their batches until they are stored")]
    Full {
        /// The database.
        place: String,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was made by a newer release, whose schema this one
    /// does not know: nothing is read or written.
    #[error("database {place} has Vantage schema version {found}; this vantage knows versions up to {known}: upgrade vantage here (every collector and reader of one database needs a release at least as new as the newest that wrote it)")]
    SchemaTooNew {
        /// The database.
        place: String,
        /// The version it has.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A stored row does not decode (the database was changed by hand, or is corrupt).
    #[error("database {place}: stored data is corrupt: {reason}")]
    Corrupt {
        /// The database.
        place: String,
        /// What failed.
        reason: String,
    },
}

/// A stored batch as `Store::batches_after` reads it, for copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// The probe.
    pub probe_id: String,
    /// Its sequence number.
    pub sequence: u64,
    /// When the collector received it.
    pub received_unix_ms: u64,
    /// The bytes as received; empty once retention removed them.
    pub body: Vec<u8>,
}

/// A probe token as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token, hex.
    pub hash: String,
    /// The probe it belongs to.
    pub probe_id: String,
    /// When it was revoked, if it was.
    pub revoked_unix_ms: Option<u64>,
}

/// A batch store; it also keeps the fleet ([`fleet::Fleet`]).
pub trait Store: fleet::Fleet + Send {
    /// Stores every batch not yet stored, in one durable transaction, and
    /// says for each whether it was new. `raw` is the batch as received.
    fn insert_batches(
        &mut self,
        batches: &[Incoming<'_>],
        received_unix_ms: u64,
    ) -> Result<Vec<Inserted>, StoreError>;
    /// The probe a token hash belongs to, if it exists and is not revoked.
    fn token_probe(&mut self, hash: &str) -> Result<Option<String>, StoreError>;
    /// Adds a token hash for a probe.
    fn add_token(&mut self, probe_id: &str, hash: &str, now_unix_ms: u64)
        -> Result<(), StoreError>;
    /// Adds a token as another store holds it, revoked or not, in one
    /// statement (so a revoked token is never live here, even briefly).
    fn import_token(&mut self, token: &TokenRecord) -> Result<(), StoreError>;
    /// Revokes every token of a probe; returns how many were live.
    fn revoke_tokens(&mut self, probe_id: &str, now_unix_ms: u64) -> Result<usize, StoreError>;
    /// Every token, for listing.
    fn tokens(&mut self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Hands each stored series matching `selector` to `each`, in (probe,
    /// sequence) order, with its histogram as sparse counts: the series'
    /// own `histogram` is left empty. What a caller that aggregates wants:
    /// no dense histogram is made, and the backend may reuse one row for
    /// all. An error from `each` stops it; returns how many were handed.
    fn select_sparse(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(&StoredSeries, &SparseCounts) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError>;
    /// Hands each stored series matching `selector` to `each`, one at a
    /// time in (probe, sequence) order, its histogram decoded, so a caller
    /// never holds the whole selection; an error from `each` stops it.
    fn select_each(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(StoredSeries) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        self.select_sparse(selector, &mut |row, counts| {
            let mut row = row.clone();
            row.series.histogram = counts.to_histogram();
            each(row)
        })
    }
    /// Stored series matching `selector`.
    fn select(&mut self, selector: &Selector) -> Result<Vec<StoredSeries>, StoreError> {
        let mut out = Vec::new();
        self.select_each(selector, &mut |row| {
            out.push(row);
            Ok(())
        })?;
        Ok(out)
    }
    /// Whether any stored series matches `selector` (to say which
    /// resolutions a selection exists at). A backend may stop at the first.
    fn any(&mut self, selector: &Selector) -> Result<bool, StoreError> {
        Ok(self.select_sparse(selector, &mut |_, _| Ok(()))? > 0)
    }
    /// Hands each stored trace matching `selector` to `each` (its
    /// resolution aside: traces are kept as the probes sent them), in
    /// (probe, sequence) order; an error from `each` stops it. Returns how
    /// many were handed.
    fn select_traces(
        &mut self,
        selector: &Selector,
        each: &mut dyn FnMut(StoredTrace) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError>;
    /// Batches stored.
    fn batch_count(&mut self) -> Result<u64, StoreError>;
    /// The raw bytes of a stored batch, as received (`None` if it is not
    /// stored, or retention removed them).
    fn batch_bytes(&mut self, probe_id: &str, sequence: u64)
        -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` stored batches after `after` (exclusive; `None`: from
    /// the start), in (probe, sequence) order: what `store copy` reads.
    fn batches_after(
        &mut self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<StoredBatch>, StoreError>;
    /// A cheap query, for health checks.
    fn ping(&mut self) -> Result<(), StoreError>;
    /// Folds up to `max_batches` stored batches not yet folded into the
    /// hourly and daily roll-ups, in one transaction; returns how many (0:
    /// none were waiting). Roll-ups read whole either way (a backend merges
    /// unfolded batches in as it reads); folding keeps that merge small and
    /// must come before a batch's raw series are removed.
    fn fold_rollups(&mut self, max_batches: usize) -> Result<u64, StoreError>;
    /// Reads and merges the next fold of up to `max_batches` batches
    /// without writing anything, on a handle of its own: the collector runs
    /// it off its writer thread, so ingest waits only for [`Store::apply_fold`].
    /// A backend without that split leaves the whole fold to the apply.
    fn plan_fold(&mut self, max_batches: usize) -> Result<FoldPlan, StoreError> {
        Ok(FoldPlan::in_apply(max_batches))
    }
    /// Writes a fold that [`Store::plan_fold`] made on a handle of the same
    /// store, in one transaction; returns how many batches it folded, or
    /// `None` when another fold wrote first (the plan is dropped unwritten,
    /// its batches stay pending: nothing is lost or counted twice).
    fn apply_fold(&mut self, plan: FoldPlan) -> Result<Option<u64>, StoreError> {
        match plan.into_prepared() {
            Err(max) => self.fold_rollups(max).map(Some),
            // Another backend's plan: not this one's to write.
            Ok(_) => Ok(None),
        }
    }
    /// Batches stored but not yet folded into the roll-ups.
    fn unfolded_batches(&mut self) -> Result<u64, StoreError>;
    /// Removes the one-minute series and raw bytes of up to `max_batches`
    /// folded batches created before `before_unix_ms`, in one transaction.
    /// The batch keys stay (a late duplicate is still known) and so do the
    /// roll-ups.
    fn remove_raw_before(
        &mut self,
        before_unix_ms: u64,
        max_batches: usize,
    ) -> Result<RawRemoved, StoreError>;
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRemoved {
    /// Batches whose raw series and bytes were removed.
    pub batches: u64,
    /// One-minute series rows removed.
    pub series: u64,
}
