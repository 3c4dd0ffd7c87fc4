//! `vantage report`: a baseline compared with a candidate, from the store.

use crate::args::DbArgs;
use anyhow::Context;
use std::path::PathBuf;
use vantage_reports::claim::Claim;
use vantage_reports::serving::{gather_where, ShareClaim};
use vantage_reports::{Evidence, ReportOptions, ResolutionChoice, Role};
use vantage_store::Selector;

/// Flags of `vantage report`.
#[derive(clap::Args, Debug)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    store: DbArgs,
    /// Baseline selector, such as phase=before or target=beijing.
    #[arg(long)]
    baseline: String,
    /// Candidate selector, such as phase=after or target=singapore.
    #[arg(long)]
    candidate: String,
    /// Grouping keys besides the metric, comma separated. With more than one
    /// (country,network; or asn, device) each country is also reported whole,
    /// and a change that reverses within a stratum is flagged (Simpson's paradox).
    #[arg(long, value_delimiter = ',', default_values_t = ["country".to_string()])]
    group_by: Vec<String>,
    /// A claim to judge; repeat for more.
    #[arg(long = "claim", value_name = "CLAIM")]
    claims: Vec<String>,
    /// A file of claims, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    claims_file: Option<PathBuf>,
    /// A site map: CSV `cidr,site,provider,region,country[,latitude,longitude]`,
    /// or a provider's published ranges (AWS ip-ranges.json, Google Cloud
    /// cloud.json, Azure Service Tags JSON); repeat for more. Adds the
    /// "served by" tables.
    #[arg(long = "sites", value_name = "FILE")]
    sites: Vec<PathBuf>,
    /// An IP-to-country (`start,end,country`) or IP-to-ASN
    /// (`start,end,asn,name`) CSV, or an RIR delegated-stats file, for the
    /// countries traceroute hops are in; repeat for more. Adds the "path
    /// crosses" tables.
    #[arg(long = "hop-data", value_name = "FILE")]
    hop_data: Vec<PathBuf>,
    /// What to resample: 1m (the probes' windows), 1h or 1d (exact roll-ups),
    /// or auto, the coarsest at which every group keeps enough units.
    #[arg(long, default_value = "auto", value_name = "1m|1h|1d|auto")]
    resolution: ResolutionChoice,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Fewest distinct probes on each side for a claim's verdict; below it
    /// the verdict is "insufficient probes" and the interval is still shown.
    #[arg(long, default_value_t = ReportOptions::default().min_probes, value_name = "N")]
    min_probes: usize,
    /// Seed of the resampling (reports are reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory: report.html (self-contained), report.json, comparison.csv, summary.txt, charts/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// The claims of `--claim` and `--claims-file`, parsed: latency claims,
/// and share claims (`IN served_from CN share <= 1%`).
fn claims(args: &ReportArgs) -> anyhow::Result<(Vec<Claim>, Vec<ShareClaim>)> {
    let mut texts = args.claims.clone();
    if let Some(f) = &args.claims_file {
        let body = std::fs::read_to_string(f)
            .with_context(|| format!("reading claims from {}", f.display()))?;
        texts.extend(
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    let (share, latency): (Vec<&String>, Vec<&String>) =
        texts.iter().partition(|t| ShareClaim::is_share_claim(t));
    Ok((
        latency
            .iter()
            .map(|t| t.parse::<Claim>())
            .collect::<Result<Vec<_>, _>>()?,
        share
            .iter()
            .map(|t| t.parse::<ShareClaim>())
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

pub(crate) fn report(args: ReportArgs) -> anyhow::Result<()> {
    let mut store = args.store.open_existing()?;
    let (claims, share_claims) = claims(&args)?;
    let sites = vantage_geo::SiteMap::load(&args.sites)?;
    let hop_data = vantage_geo::HopDatasets::load(&args.hop_data)?;
    let baseline: Selector = args.baseline.parse()?;
    let candidate: Selector = args.candidate.parse()?;
    let min_units = ReportOptions::default().min_series;
    let evidence = Evidence::gather_at(
        store.as_mut(),
        &args.group_by,
        &baseline,
        &candidate,
        args.resolution,
        min_units,
    )?;
    let (nb, nc) = (
        evidence.series(Role::Baseline),
        evidence.series(Role::Candidate),
    );
    if nb == 0 || nc == 0 {
        anyhow::bail!(
            "nothing to compare: {nb} series match --baseline {}, {nc} match --candidate {}",
            args.baseline,
            args.candidate
        );
    }
    let options = ReportOptions {
        baseline: args.baseline.clone(),
        candidate: args.candidate.clone(),
        group_by: args.group_by.clone(),
        resamples: args.resamples,
        seed: args.seed,
        min_probes: args.min_probes,
        claims,
        ..Default::default()
    };
    let mut r = vantage_reports::build_report_from(&evidence, &options);
    if !args.sites.is_empty() || !args.hop_data.is_empty() || !share_claims.is_empty() {
        r.where_served = Some(gather_where(
            store.as_mut(),
            [&baseline, &candidate],
            &sites,
            &hop_data,
            &share_claims,
            options.confidence,
            options.min_probes,
        )?);
    }
    let written = vantage_reports::write_report_from(&r, &evidence, &args.out)
        .with_context(|| format!("writing the report into {}", args.out.display()))?;
    let printed = vantage_reports::print::print_report(&written.html);
    if !args.quiet {
        print!("{}", written.summary);
        println!(
            "written: {} (self-contained), report.json, comparison.csv, summary.txt, charts/ in {}",
            written.html.display(),
            args.out.display()
        );
        say_printed(&printed);
    }
    Ok(())
}

/// Says where the PDF and the screenshot are, or why there are none (the
/// report itself never fails for them).
pub(crate) fn say_printed(printed: &vantage_reports::print::Printed) {
    use vantage_reports::print::Printed;
    match printed {
        Printed::Written { pdf, top } => {
            println!(
                "printed: {} and {} (the top of the page)",
                pdf.display(),
                top.display()
            )
        }
        Printed::NoChromium(note) => eprintln!("note: {note}"),
        Printed::Failed(why) => eprintln!("note: no report.pdf: {why}; report.html is complete"),
    }
}
