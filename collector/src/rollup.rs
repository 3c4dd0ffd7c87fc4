//! Hourly and daily roll-ups as both backends make and read them: one
//! merged series per (probe, campaign, labels, target, address, metric)
//! and UTC block, kept beside the one-minute series. Merges are exact
//! (histograms add, counts sum), so a report from roll-ups gives the same
//! percentiles as one from the raw series.
//!
//! The transaction that stores a batch also enters it in `rollup_pending`:
//! its share of the roll-ups, written with it, once (a duplicate is not
//! stored, so it is not entered either). Folding moves pending batches into
//! the `rollups` rows, a bounded chunk per transaction that also deletes
//! their pending entries, so a batch is counted in the roll-ups exactly
//! once at every instant: pending, or folded, never both and never neither.
//! Reads merge the pending batches' series into the folded rows
//! ([`Unfolded`]), so a roll-up read is whole whether or not its batches
//! are folded yet.
//!
//! Why not update `rollups` in the ingest transaction itself: a batch adds
//! to one row per (target, metric) and resolution, each in its own place
//! in the table, so every commit wrote dozens of scattered pages and ingest
//! ran at a fraction of its former rate. A fold touches each row once per
//! chunk (60 one-minute batches of a probe fold into one hourly write).
//!
//! This module holds the merging; each backend's SQL is its own.

use crate::row::labels_text;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use vantage_store::{merge_counts_into, Resolution, StoreError, StoredSeries};
use vantage_wire::{CountsScratch, Labels, Series, SparseCounts};

/// Batches folded per transaction while a store is opened.
pub(crate) const OPEN_FOLD_CHUNK: usize = 2000;

/// The identity of one roll-up row: its primary key in both backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) resolution: Resolution,
    pub(crate) probe_id: String,
    pub(crate) campaign: String,
    pub(crate) labels: String,
    pub(crate) target: String,
    pub(crate) address: String,
    pub(crate) metric: &'static str,
    pub(crate) block_start: u64,
}

impl Key {
    /// The roll-up at `resolution` that a stored series belongs to.
    pub(crate) fn of(resolution: Resolution, row: &StoredSeries) -> Self {
        Key {
            resolution,
            probe_id: row.probe_id.clone(),
            campaign: row.campaign.clone(),
            labels: labels_text(&row.labels),
            target: row.series.target.name.clone(),
            address: row.series.target.address.clone(),
            metric: row.series.metric.name(),
            block_start: resolution.block_start(row.series.window.start_unix_ms),
        }
    }

    /// The key of a folded row as read (the block start rides in `sequence`).
    pub(crate) fn as_read(resolution: Resolution, row: &StoredSeries) -> Self {
        Key {
            block_start: row.sequence,
            ..Key::of(resolution, row)
        }
    }
}

/// One roll-up being made: its labels, the merged series (all but the
/// histogram), its series' histograms as sparse counts (summed once, when
/// it is written) and how many series it holds.
pub(crate) struct Part {
    pub(crate) labels: Labels,
    pub(crate) series: Series,
    pieces: Vec<Rc<SparseCounts>>,
    pub(crate) count: u64,
}

impl Part {
    /// Adds the stored row this roll-up already has (`count` series).
    pub(crate) fn absorb(&mut self, stored: &Series, counts: SparseCounts, count: u64) {
        merge_counts_into(&mut self.series, stored);
        self.pieces.push(Rc::new(counts));
        self.count += count;
    }

    /// The merged histogram as plain V2 bytes, into `out`.
    pub(crate) fn histogram(&self, scratch: &mut CountsScratch, out: &mut Vec<u8>) {
        out.clear();
        scratch.sum_plain(self.pieces.iter().map(|p| &**p), out);
    }
}

/// Roll-ups being merged in memory, for one fold.
#[derive(Default)]
pub(crate) struct Folding {
    pub(crate) rows: HashMap<Key, Part>,
}

impl Folding {
    /// Adds one stored series (its histogram as `counts`) to its hourly
    /// and daily roll-ups.
    pub(crate) fn add(&mut self, row: &StoredSeries, counts: &SparseCounts) {
        // One copy of the counts, shared by both roll-ups.
        let counts = Rc::new(counts.clone());
        let hour = Key::of(Resolution::Hour, row);
        let day = Key {
            resolution: Resolution::Day,
            block_start: Resolution::Day.block_start(row.series.window.start_unix_ms),
            ..hour.clone()
        };
        for key in [hour, day] {
            match self.rows.get_mut(&key) {
                Some(part) => {
                    merge_counts_into(&mut part.series, &row.series);
                    part.pieces.push(counts.clone());
                    part.count += 1;
                }
                None => {
                    self.rows.insert(
                        key,
                        Part {
                            labels: row.labels.clone(),
                            series: row.series.clone(),
                            pieces: vec![counts.clone()],
                            count: 1,
                        },
                    );
                }
            }
        }
    }
}

/// The pending batches' series of one read, merged by roll-up (histograms
/// as sparse counts; the series' own stay empty), in key order: merged
/// with the folded rows (which come in the same order) as they stream,
/// so a read hands the same rows in the same order however far the folds
/// have come.
pub(crate) struct Unfolded {
    resolution: Resolution,
    rows: BTreeMap<Key, (StoredSeries, SparseCounts)>,
}

/// Where a read hands its rows.
pub(crate) type Emit<'a> = dyn FnMut(&StoredSeries, &SparseCounts) -> Result<(), StoreError> + 'a;

impl Unfolded {
    /// Nothing pending yet, for a read at `resolution`.
    pub(crate) fn new(resolution: Resolution) -> Self {
        Unfolded {
            resolution,
            rows: BTreeMap::new(),
        }
    }

    /// Adds one pending series.
    pub(crate) fn add(&mut self, row: &StoredSeries, counts: &SparseCounts) {
        let key = Key::of(self.resolution, row);
        match self.rows.get_mut(&key) {
            Some((merged, merged_counts)) => {
                merge_counts_into(&mut merged.series, &row.series);
                merged_counts.merge(counts);
            }
            None => {
                self.rows.insert(key, (row.clone(), counts.clone()));
            }
        }
    }

    /// Hands one folded row (its block start in `sequence`) to `emit`,
    /// merged with what its pending batches add, after the roll-ups that
    /// exist only as pending batches and come before it; its sequence
    /// reads as 0. Folded rows must come in key order.
    pub(crate) fn emit_folded(
        &mut self,
        row: &mut StoredSeries,
        counts: &SparseCounts,
        emit: &mut Emit<'_>,
    ) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            row.sequence = 0;
            return emit(row, counts);
        }
        let key = Key::as_read(self.resolution, row);
        while let Some(entry) = self.rows.first_entry() {
            if *entry.key() >= key {
                break;
            }
            let (mut before, before_counts) = entry.remove();
            before.sequence = 0;
            emit(&before, &before_counts)?;
        }
        let more = self.rows.remove(&key);
        row.sequence = 0;
        match more {
            None => emit(row, counts),
            Some((more, more_counts)) => {
                // A copy: the caller's row is reused as read.
                let mut row = row.clone();
                let mut counts = counts.clone();
                merge_counts_into(&mut row.series, &more.series);
                counts.merge(&more_counts);
                emit(&row, &counts)
            }
        }
    }

    /// Hands the roll-ups that exist only as pending batches and come
    /// after every folded row to `emit`, in key order.
    pub(crate) fn emit_rest(self, emit: &mut Emit<'_>) -> Result<(), StoreError> {
        for (_, (mut row, counts)) in self.rows {
            row.sequence = 0;
            emit(&row, &counts)?;
        }
        Ok(())
    }
}
