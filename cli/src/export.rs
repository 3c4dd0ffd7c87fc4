//! `vantage export`: stored series, merged by group, as CSV, JSON lines or
//! an HdrHistogram interval log on stdout.

use crate::args::DbArgs;
use anyhow::Context;
use std::io::Write;
use vantage_store::export::{render_csv, render_hlog, render_json, GroupRow};
use vantage_store::{GroupMerger, Resolution, Selector};

/// Flags of `vantage export`.
#[derive(clap::Args, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: DbArgs,
    /// Which series: key=value[,key=value…] over labels and probe, campaign, target, metric.
    #[arg(long, default_value = "")]
    select: String,
    /// Grouping keys, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["country".to_string(), "target".to_string(), "metric".to_string()])]
    group_by: Vec<String>,
    /// Which stored series: 1m (the probes' windows), or the exact 1h or 1d roll-ups.
    #[arg(long, default_value = "1m", value_name = "1m|1h|1d")]
    resolution: Resolution,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: ExportFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    /// One row per group with count, loss and percentiles.
    Csv,
    /// The same rows as JSON lines.
    Json,
    /// The merged histograms as an HdrHistogram interval log.
    Hlog,
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut store = args.store.open_existing()?;
    let selector = Selector {
        resolution: args.resolution,
        ..args.select.parse()?
    };
    // Streamed: each row is merged into its group as it is read, so an
    // export over a month holds one series per group.
    let mut merger = GroupMerger::new(&args.group_by);
    let read = store.select_sparse(&selector, &mut |row, counts| {
        merger.add(row, counts);
        Ok(())
    })?;
    if read == 0 {
        let available: Vec<&str> = Resolution::ALL
            .into_iter()
            .filter(|r| *r != args.resolution)
            .filter_map(|r| {
                let other = Selector {
                    resolution: r,
                    ..selector.clone()
                };
                match store.any(&other) {
                    Ok(true) => Some(Ok(r.name())),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .collect::<Result<_, _>>()?;
        if !available.is_empty() {
            anyhow::bail!(
                "no series at resolution {} match --select; the store has them at {}: use --resolution with one of those",
                args.resolution,
                available.join(", ")
            );
        }
    }
    let groups = merger.finish();
    let bytes = match args.format {
        ExportFormat::Csv | ExportFormat::Json => {
            let rows: Vec<_> = groups
                .iter()
                .map(|g| GroupRow::new(&args.group_by, g))
                .collect();
            if matches!(args.format, ExportFormat::Csv) {
                render_csv(&rows)?
            } else {
                render_json(&rows)?
            }
        }
        ExportFormat::Hlog => render_hlog(&args.group_by, &groups)?,
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the export"),
    }
}
