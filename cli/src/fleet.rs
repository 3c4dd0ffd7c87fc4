//! `vantage fleet`: one row per probe, from the store any collector of the
//! fleet writes: last seen, campaign assigned against applied (drift),
//! backlog, clock offset, run rate, and a `silent` mark.

use crate::args::DbArgs;
use std::time::{SystemTime, UNIX_EPOCH};
use vantage_store::fleet::{fleet_view, render_fleet_json, render_fleet_table};

/// Flags of `vantage fleet`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  vantage fleet --db vantage.db\n  vantage fleet --db 'postgres://vantage@db.example.net/vantage?sslmode=verify-full' --json\n\nA probe is silent after --silent-after windows with no stored batch (or when it was never\nseen); drift is a probe running another campaign version than the latest assigned to it."
)]
pub(crate) struct FleetArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Mark a probe silent after this many windows with no stored batch.
    #[arg(long, value_name = "N", default_value_t = 3)]
    silent_after: u64,
    /// JSON instead of the table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn fleet(args: FleetArgs) -> anyhow::Result<()> {
    let mut store = args.db.open_existing()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let health = store.fleet_health()?;
    let known: Vec<String> = store
        .tokens()?
        .into_iter()
        .filter(|t| t.revoked_unix_ms.is_none())
        .map(|t| t.probe_id)
        .collect();
    let assignments = store.assignments()?;
    let latest = store.campaigns()?;
    let rows = fleet_view(
        &health,
        &known,
        &assignments,
        &latest,
        &mut |id, limit| store.recent_batches(id, limit),
        now,
        args.silent_after,
    )?;
    if args.json {
        print!("{}", render_fleet_json(&rows)?);
    } else {
        print!("{}", render_fleet_table(&rows, now));
    }
    Ok(())
}
