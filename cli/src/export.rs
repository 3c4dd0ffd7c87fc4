//! `vantage export`: stored series, merged by group, as CSV, JSON lines or
//! an HdrHistogram interval log on stdout.

use crate::args::DbArgs;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use vantage_geo::{HopDatasets, SiteMap};
use vantage_store::export::{render_csv, render_hlog, render_json, GroupRow};
use vantage_store::{GroupMerger, Resolution, Selector, StoredSeries};

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
    /// A site map (CSV or a cloud provider's ranges, as `report --sites`);
    /// repeat for more. Series gain the keys `site` and `site_country`
    /// (to group by), and trace hops their site.
    #[arg(long = "sites", value_name = "FILE")]
    sites: Vec<PathBuf>,
    /// IP-to-country or IP-to-ASN data for trace hops (as `report
    /// --hop-data`); repeat for more.
    #[arg(long = "hop-data", value_name = "FILE")]
    hop_data: Vec<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    /// One row per group with count, loss and percentiles.
    Csv,
    /// The same rows as JSON lines.
    Json,
    /// The merged histograms as an HdrHistogram interval log.
    Hlog,
    /// Path traces, not merged: one CSV row per hop, with its country,
    /// network and site where the given data say (else `unknown`).
    Traces,
}

/// The columns of `--format traces`: a probe's `traces.csv`, then what
/// the given data say of the hop.
const TRACE_COLUMNS: [&str; 15] = [
    "probe_id",
    "sequence",
    "phase",
    "country",
    "target",
    "target_address",
    "started",
    "end",
    "ttl",
    "address",
    "rtts_us",
    "hop_country",
    "hop_asn",
    "hop_network",
    "hop_site",
];

/// The traces `selector` picks, a row per hop, as CSV.
fn export_traces(
    store: &mut dyn vantage_store::Store,
    selector: &Selector,
    sites: &SiteMap,
    hop_data: &HopDatasets,
) -> anyhow::Result<Vec<u8>> {
    use vantage_reports::serving::{hop_country, UNKNOWN};
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(TRACE_COLUMNS)?;
    let mut failed = None;
    store.select_traces(selector, &mut |t| {
        let rows = vantage_probe::output::trace_hop_rows(
            &t.probe_id,
            t.sequence,
            &t.labels,
            std::slice::from_ref(&t.trace),
        );
        for h in rows {
            let ip = h.address.parse().ok();
            let network = ip.and_then(|ip| hop_data.network_of(ip));
            let record = [
                h.probe_id,
                h.sequence.to_string(),
                h.phase,
                h.country,
                h.target,
                h.target_address,
                h.started,
                h.end,
                h.ttl.to_string(),
                h.address,
                h.rtts_us,
                ip.map_or(UNKNOWN.into(), |ip| hop_country(ip, sites, hop_data)),
                network.map_or(UNKNOWN.into(), |n| format!("AS{}", n.asn)),
                network.map_or(UNKNOWN.into(), |n| n.name.clone()),
                ip.and_then(|ip| sites.site_of(ip))
                    .map_or(UNKNOWN.into(), |s| s.name.clone()),
            ];
            if let Err(e) = w.write_record(&record) {
                failed.get_or_insert(e);
            }
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e).context("writing trace rows");
    }
    w.into_inner().context("writing trace rows")
}

/// Labels `row` with its site and the site's country (`unknown` when the
/// map has no range for its address), so they can be grouped by.
fn with_site(row: &StoredSeries, sites: &SiteMap) -> StoredSeries {
    let site = vantage_reports::serving::address_ip(&row.series.target.address)
        .and_then(|ip| sites.site_of(ip));
    let mut row = row.clone();
    let unknown = vantage_reports::serving::UNKNOWN;
    // Site names and country codes are label-safe (the site map checks
    // them); a failed insert leaves the key out, never a wrong value.
    let _ = row
        .labels
        .insert("site", site.map_or(unknown, |s| s.name.as_str()));
    let _ = row.labels.insert(
        "site_country",
        site.and_then(|s| s.country.as_deref()).unwrap_or(unknown),
    );
    row
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut store = args.store.open_existing()?;
    let selector = Selector {
        resolution: args.resolution,
        ..args.select.parse()?
    };
    let sites = SiteMap::load(&args.sites)?;
    if let ExportFormat::Traces = args.format {
        let hop_data = HopDatasets::load(&args.hop_data)?;
        let bytes = export_traces(store.as_mut(), &selector, &sites, &hop_data)?;
        return write_out(&bytes);
    }
    // Streamed: each row is merged into its group as it is read, so an
    // export over a month holds one series per group.
    let mut merger = GroupMerger::new(&args.group_by);
    let read = store.select_sparse(&selector, &mut |row, counts| {
        if sites.is_empty() {
            merger.add(row, counts);
        } else {
            merger.add(&with_site(row, &sites), counts);
        }
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
        ExportFormat::Traces => unreachable!("handled above"),
    };
    write_out(&bytes)
}

/// Writes the export to stdout; a reader that stops early is no error.
fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the export"),
    }
}
