//! `vantage campaign`: campaigns in the store, in numbered versions, for
//! probes to pull from their collector; the cut-over as one command.

use crate::args::DbArgs;
use anyhow::Context;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use vantage_store::fleet::{Assignee, CampaignVersion};
use vantage_store::{Selector, Store};

/// `vantage campaign …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum CampaignCommand {
    /// Store a new version of a campaign from a TOML file (the probe configuration file's schema).
    #[command(
        after_help = "Example:\n  vantage campaign set --db vantage.db --campaign move --file campaign.toml\n\nThe file is checked as a probe would run it; one with an error is refused with its line\nand column, and nothing is stored. The phase switches of the last version are kept."
    )]
    Set(SetArgs),
    /// Assign a campaign to a probe, or to every probe whose own labels match.
    #[command(
        after_help = "Examples:\n  vantage campaign assign --db vantage.db --campaign move --probe vm-mumbai-1\n  vantage campaign assign --db vantage.db --campaign move --labels country=IN|MY\n\nA probe takes the campaign assigned to its id, else the latest assigned to labels it has."
    )]
    Assign(AssignArgs),
    /// Print a campaign's version (the latest by default), or the difference between two.
    #[command(
        after_help = "Examples:\n  vantage campaign show --db vantage.db\n  vantage campaign show --db vantage.db --campaign move --version 2\n  vantage campaign show --db vantage.db --campaign move --diff 1..3"
    )]
    Show(ShowArgs),
    /// Switch every probe of a campaign to a phase at an instant: the cut-over.
    #[command(
        after_help = "Examples:\n  vantage campaign phase --db vantage.db --campaign move --set after --at 2026-12-03T02:00:00Z\n  vantage campaign phase --db vantage.db --campaign move --set after --at now\n\nEvery probe labels its windows starting at or after the instant with the new phase (so the\nswitch lands on the first window boundary at or after it). The instant is kept in the store."
    )]
    Phase(PhaseArgs),
}

/// Flags of `vantage campaign set`.
#[derive(clap::Args, Debug)]
pub(crate) struct SetArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The campaign's name.
    #[arg(long)]
    campaign: String,
    /// The campaign's TOML.
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
}

/// Flags of `vantage campaign assign`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["probe", "labels"])))]
pub(crate) struct AssignArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The campaign's name.
    #[arg(long)]
    campaign: String,
    /// A probe id.
    #[arg(long)]
    probe: Option<String>,
    /// A label selector, such as country=IN,network=wifi (values with |).
    #[arg(long, value_name = "SELECTOR")]
    labels: Option<String>,
}

/// Flags of `vantage campaign show` (`--version` is a campaign's, not the program's).
#[derive(clap::Args, Debug)]
#[command(disable_version_flag = true)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The campaign's name (without it: every campaign and assignment).
    #[arg(long)]
    campaign: Option<String>,
    /// The version to print [default: the latest].
    #[arg(
        long = "version",
        id = "campaign_version",
        conflicts_with = "diff",
        requires = "campaign"
    )]
    version: Option<u64>,
    /// Two versions, A..B: what changed from A to B.
    #[arg(long, value_name = "A..B", requires = "campaign")]
    diff: Option<String>,
}

/// Flags of `vantage campaign phase`.
#[derive(clap::Args, Debug)]
pub(crate) struct PhaseArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The campaign's name.
    #[arg(long)]
    campaign: String,
    /// The phase label's new value, such as `after`.
    #[arg(long = "set", value_name = "PHASE")]
    phase: String,
    /// When: an RFC 3339 instant (2026-12-03T02:00:00Z) or `now`.
    #[arg(long)]
    at: String,
}

pub(crate) fn campaign(command: CampaignCommand) -> anyhow::Result<()> {
    match command {
        CampaignCommand::Set(a) => set(a),
        CampaignCommand::Assign(a) => assign(a),
        CampaignCommand::Show(a) => show(a),
        CampaignCommand::Phase(a) => phase(a),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn latest(store: &mut dyn Store, campaign: &str) -> anyhow::Result<CampaignVersion> {
    store.campaign_version(campaign, None)?.with_context(|| {
        format!("no campaign `{campaign}`: store one with `vantage campaign set --campaign {campaign} --file FILE`")
    })
}

fn set(args: SetArgs) -> anyhow::Result<()> {
    let body = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    vantage_probe::config::check_campaign(&args.campaign, &body).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}\nnothing stored: correct the file and run `vantage campaign set` again",
            args.file.display()
        )
    })?;
    let mut store = args.db.open()?;
    let version =
        vantage_store::fleet::set_campaign(store.as_mut(), &args.campaign, &body, now_unix_ms())?;
    println!("campaign `{}` version {version} stored", args.campaign);
    Ok(())
}

fn assign(args: AssignArgs) -> anyhow::Result<()> {
    let assignee = match (args.probe, args.labels) {
        (Some(p), _) => Assignee::Probe(p),
        (None, Some(l)) => {
            l.parse::<Selector>()?;
            Assignee::Labels(l)
        }
        (None, None) => anyhow::bail!("give --probe ID or --labels SELECTOR"),
    };
    let mut store = args.db.open_existing()?;
    latest(store.as_mut(), &args.campaign)?;
    store.assign(&args.campaign, &assignee, now_unix_ms())?;
    let (kind, who) = assignee.parts();
    println!("campaign `{}` assigned to {kind} {who}", args.campaign);
    Ok(())
}

/// A version as `show` prints it: a header, its phase switches, its TOML.
fn rendering(v: &CampaignVersion) -> String {
    let mut out = format!(
        "# campaign {} version {} ({})\n",
        v.campaign,
        v.version,
        vantage_store::fleet::rfc3339_seconds(v.created_unix_ms)
    );
    for p in &v.phases {
        out.push_str(&format!(
            "# phase {} from {}\n",
            p.phase,
            vantage_store::fleet::rfc3339_seconds(p.at_unix_ms)
        ));
    }
    out.push_str(&v.body);
    if !v.body.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let mut store = args.db.open_existing()?;
    let Some(campaign) = args.campaign else {
        let assignments = store.assignments()?;
        for (name, version) in store.campaigns()? {
            let to: Vec<String> = assignments
                .iter()
                .filter(|a| a.campaign == name)
                .map(|a| {
                    let (kind, who) = a.assignee.parts();
                    format!("{kind} {who}")
                })
                .collect();
            let to = if to.is_empty() {
                "assigned to no probe".to_string()
            } else {
                format!("assigned to {}", to.join(", "))
            };
            println!("{name}\tversion {version}\t{to}");
        }
        return Ok(());
    };
    let version = |store: &mut dyn Store, v: u64| {
        store
            .campaign_version(&campaign, Some(v))?
            .with_context(|| format!("campaign `{campaign}` has no version {v}"))
    };
    if let Some(diff) = args.diff {
        let (a, b) = diff
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .with_context(|| {
                format!("--diff `{diff}`: expected two versions, A..B, such as 1..3")
            })?;
        let (a, b) = (version(store.as_mut(), a)?, version(store.as_mut(), b)?);
        let (old, new) = (rendering(&a), rendering(&b));
        let diff = similar::TextDiff::from_lines(&old, &new);
        print!(
            "{}",
            diff.unified_diff().header(
                &format!("version {}", a.version),
                &format!("version {}", b.version)
            )
        );
        return Ok(());
    }
    let shown = match args.version {
        Some(v) => version(store.as_mut(), v)?,
        None => latest(store.as_mut(), &campaign)?,
    };
    print!("{}", rendering(&shown));
    Ok(())
}

/// `--at`: `now`, or an RFC 3339 instant.
fn parse_at(at: &str, now_unix_ms: u64) -> anyhow::Result<u64> {
    if at == "now" {
        return Ok(now_unix_ms);
    }
    let t = humantime::parse_rfc3339_weak(at).with_context(|| {
        format!("--at `{at}`: expected an RFC 3339 instant such as 2026-12-03T02:00:00Z, or `now`")
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

fn phase(args: PhaseArgs) -> anyhow::Result<()> {
    let now = now_unix_ms();
    let at = parse_at(&args.at, now)?;
    let mut store = args.db.open_existing()?;
    let version =
        vantage_store::fleet::switch_phase(store.as_mut(), &args.campaign, &args.phase, at, now)
            .map_err(|e| match e {
                vantage_store::fleet::PhaseError::InPast(_) => anyhow::anyhow!("--at {e}"),
                e => anyhow::Error::from(e),
            })?;
    println!(
        "campaign `{}` version {version}: phase `{}` from {} (each probe at its first window starting then or later)",
        args.campaign,
        args.phase,
        vantage_store::fleet::rfc3339_seconds(at)
    );
    Ok(())
}
