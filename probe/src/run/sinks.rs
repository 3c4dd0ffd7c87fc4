//! Where a run's batches go: the spool for the collector, the files of
//! `--out`, and the terminal (JSON lines, or the summary table). Each is a
//! [`Sink`]; the run hands every batch to each in turn.

use super::reminder::{free_bytes, Reminder, Say};
use super::RunError;
use crate::config::Display;
use crate::output::{render_json_line, render_table, LocalOutput, OutputError, SeriesRow};
use crate::spool::Spool;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;
use vantage_wire::{Batch, Series};

/// One destination of batches.
pub(crate) trait Sink: Send {
    /// Takes one closed window's batch. An error stops the run; a sink
    /// that can keep going (the spool) logs instead.
    fn put(&mut self, batch: &Batch) -> Result<(), RunError>;

    /// The sink needs the batch's sequence number (the spool: the
    /// collector stores each (probe, sequence) once), so it gets a batch
    /// only once it has one; the others take sequence 0 ("not numbered yet").
    fn needs_sequence(&self) -> bool {
        false
    }

    /// The run's totals so far, or at the end (`last`), for sinks that
    /// show them.
    fn totals(&mut self, _totals: &[&Series], _last: bool) -> Result<(), RunError> {
        Ok(())
    }
}

/// Batches kept for the collector until it acknowledges them.
pub(crate) struct SpoolSink {
    pub(crate) spool: Arc<Mutex<Spool>>,
    /// Wakes the uploader.
    pub(crate) notify: Arc<Notify>,
    /// Batches the spool cannot keep: said when that begins, once a
    /// minute while it lasts, and when it ends (each is counted dropped).
    pub(crate) trouble: Reminder,
}

impl Sink for SpoolSink {
    fn needs_sequence(&self) -> bool {
        true
    }

    fn put(&mut self, batch: &Batch) -> Result<(), RunError> {
        let bytes = match batch.encode() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "batch could not be encoded");
                return Ok(());
            }
        };
        let pushed = self
            .spool
            .lock()
            .map_err(|_| ("spool lock poisoned".to_string(), None))
            .and_then(|mut s| {
                s.push(batch.sequence, &bytes, batch.dropped_batches)
                    .map_err(|e| (e.to_string(), free_bytes(s.dir())))
            });
        match pushed {
            Ok(_) => {
                if let Some(failures) = self.trouble.succeeded() {
                    tracing::warn!(
                        failures,
                        "recovered: the spool keeps batches again; those it could not keep reach the collector as dropped_batches"
                    );
                }
                self.notify.notify_one();
            }
            // Keep measuring: local output still has the batch, and the
            // spool counted it as dropped.
            Err((error, free)) => {
                let free = free.map_or("unknown".to_string(), |b| format!("{b} bytes"));
                let need = bytes.len();
                match self.trouble.failed(Instant::now()) {
                    Say::Began => tracing::error!(
                        sequence = batch.sequence,
                        error,
                        free,
                        need,
                        "batch not spooled for the collector (it is in --out); counted in dropped_batches, which the collector gets once the spool keeps batches again"
                    ),
                    Say::Again { failures } => tracing::error!(
                        sequence = batch.sequence,
                        error,
                        free,
                        need,
                        failures,
                        "still no batch can be spooled for the collector; each is counted in dropped_batches"
                    ),
                    Say::Quiet => {}
                }
            }
        }
        Ok(())
    }
}

impl Sink for LocalOutput {
    fn put(&mut self, batch: &Batch) -> Result<(), RunError> {
        Ok(self.write_batch(batch)?)
    }
}

/// Standard output: one JSON line per series, or the summary table (drawn
/// over itself on a terminal, printed once at the end otherwise).
pub(crate) struct Terminal {
    pub(crate) display: Display,
    /// Stdout is a terminal showing the table: redraw it as the run goes.
    pub(crate) live: bool,
    /// A banner over the table (`--insecure`).
    pub(crate) note: Option<&'static str>,
    drawn_lines: usize,
}

impl Terminal {
    pub(crate) fn new(display: Display, live: bool, note: Option<&'static str>) -> Self {
        Terminal {
            display,
            live,
            note,
            drawn_lines: 0,
        }
    }

    fn write(&mut self, text: &str) -> Result<(), RunError> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    RunError::BrokenPipe
                } else {
                    RunError::Stdout(e)
                }
            })
    }

    fn draw_live(&mut self, table: &str) -> Result<(), RunError> {
        let mut text = String::new();
        if self.drawn_lines > 0 {
            // Move up over the previous table and clear to the end of the screen.
            text.push_str(&format!("\x1b[{}A\x1b[J", self.drawn_lines));
        }
        text.push_str(table);
        self.drawn_lines = table.lines().count();
        self.write(&text)
    }
}

impl Sink for Terminal {
    fn put(&mut self, batch: &Batch) -> Result<(), RunError> {
        if self.display != Display::Json {
            return Ok(());
        }
        let text: String = batch
            .series
            .iter()
            .map(|s| render_json_line(&SeriesRow::new(batch, s)))
            .collect::<Result<_, _>>()
            .map_err(OutputError::from)?;
        self.write(&text)
    }

    fn totals(&mut self, totals: &[&Series], last: bool) -> Result<(), RunError> {
        if self.display != Display::Table || !(self.live || last) {
            return Ok(());
        }
        let table = render_table(totals.iter().copied(), self.note);
        if self.live {
            self.draw_live(&table)
        } else {
            self.write(&table)
        }
    }
}
