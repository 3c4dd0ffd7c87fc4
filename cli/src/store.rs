//! `vantage store copy`: move a store from one database to another.

use crate::args::DbArgs;

/// `vantage store …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum StoreCommand {
    /// Copy every batch and token from one store into another, exactly once; run it again after a stop to go on.
    #[command(
        after_help = "Examples:\n  vantage store copy --from vantage.db --to 'postgres://vantage@db.example.net/vantage?sslmode=verify-full' --to-password-file /etc/vantage/db-password\n  vantage store copy --from vantage.db --to 'host=/run/postgresql dbname=vantage'\n\nThe destination's (probe, sequence) key makes it exactly-once: a batch already there is skipped.\nRoll-ups are made again in the destination. A source whose one-minute series retention\n(--keep-raw) has removed cannot be copied whole, and the copy says so."
    )]
    Copy(CopyArgs),
}

/// Flags of `vantage store copy`.
#[derive(clap::Args, Debug)]
pub(crate) struct CopyArgs {
    /// The store to copy from (a SQLite file or a PostgreSQL URL).
    #[arg(long, value_name = "FILE|URL")]
    from: String,
    /// File whose first line is the source's PostgreSQL password.
    #[arg(long, value_name = "FILE")]
    from_password_file: Option<std::path::PathBuf>,
    /// The store to copy into (created if missing).
    #[arg(long, value_name = "FILE|URL")]
    to: String,
    /// File whose first line is the destination's PostgreSQL password.
    #[arg(long, value_name = "FILE")]
    to_password_file: Option<std::path::PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) fn store(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy(args) => copy(args),
    }
}

fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let from = DbArgs {
        db: args.from.clone(),
        db_password_file: args.from_password_file.clone(),
    };
    let to = DbArgs {
        db: args.to.clone(),
        db_password_file: args.to_password_file.clone(),
    };
    if from.place() == to.place() {
        anyhow::bail!("--from and --to name the same store ({})", from.place());
    }
    let mut source = from.open_existing()?;
    let mut destination = to.open()?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} batches {per_sec} {eta}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let done = vantage_collector::copy::copy_store(
        source.as_mut(),
        &from.place(),
        destination.as_mut(),
        &mut |p| {
            bar.set_length(p.total);
            bar.set_position(p.read);
            bar.set_message(format!("{} copied, {} already there", p.copied, p.already));
            true
        },
    )?;
    bar.finish_and_clear();
    if !args.quiet {
        println!(
            "copied {} batches from {} to {} ({} were already there; {} tokens added); the roll-ups fold in the destination as collectors run, or at the next open",
            done.copied,
            from.place(),
            to.place(),
            done.already,
            done.tokens
        );
    }
    Ok(())
}
