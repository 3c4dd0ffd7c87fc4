//! Argument groups shared by several subcommands, flattened into each, so
//! a flag is spelled and documented once.

use anyhow::Context;
use std::path::PathBuf;
use vantage_tls::Identity;

/// The certificate a server presents: generated once and kept in a
/// directory, or loaded from PEM files.
#[derive(clap::Args, Debug)]
pub(crate) struct IdentityArgs {
    /// Directory where a generated certificate is kept (made on first start) [default: vantage-cert; for collect: vantage-collector-cert].
    #[arg(long, value_name = "DIR")]
    pub(crate) cert_dir: Option<PathBuf>,
    /// Certificate chain PEM file (instead of a generated one); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key PEM file for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// DNS names and IP addresses for a generated certificate; repeat for more.
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
    pub(crate) names: Vec<String>,
}

impl IdentityArgs {
    /// The certificate from `--cert`/`--key`, or the one kept in
    /// `--cert-dir` (or `default_dir`), generated there on first use.
    pub(crate) fn load(&self, default_dir: &str) -> anyhow::Result<Identity> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Identity::from_pem_files(cert, key).context("loading the certificate")
            }
            _ => {
                let dir = self
                    .cert_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(default_dir));
                Identity::load_or_generate(&dir, &self.names)
                    .with_context(|| format!("certificate in {}", dir.display()))
            }
        }
    }
}

/// The store a subcommand reads or writes.
#[derive(clap::Args, Debug)]
pub(crate) struct DbArgs {
    /// The store: a SQLite file (created if missing by collect and collect token add), or a PostgreSQL database as postgres://USER@HOST:PORT/DBNAME?sslmode=verify-full or 'host=/run/postgresql dbname=vantage'.
    #[arg(long, value_name = "FILE|URL", default_value = "vantage.db")]
    pub(crate) db: String,
    /// File whose first line is the PostgreSQL password (else the URL's, else $PGPASSWORD).
    #[arg(long, value_name = "FILE")]
    pub(crate) db_password_file: Option<PathBuf>,
}

impl DbArgs {
    /// Where the store is.
    pub(crate) fn location(&self) -> anyhow::Result<vantage_collector::StoreLocation> {
        Ok(vantage_collector::StoreLocation::parse(
            &self.db,
            self.db_password_file.as_deref(),
        )?)
    }

    /// Opens the store, creating it. A SQLite store made before roll-ups
    /// gains them first, with a progress bar on stderr while it does.
    pub(crate) fn open(&self) -> anyhow::Result<Box<dyn vantage_collector::Store>> {
        let path = match self.location()? {
            vantage_collector::StoreLocation::Sqlite(path) => path,
            postgres => return Ok(postgres.open()?),
        };
        let mut bar: Option<indicatif::ProgressBar> = None;
        let store = vantage_collector::SqliteStore::open_with_progress(
            &path,
            &mut |done, total| {
                let bar = bar.get_or_insert_with(|| {
                    eprintln!(
                    "{}: adding hourly and daily roll-ups to a store made before them (resumable if stopped)",
                    path.display()
                );
                    let bar = indicatif::ProgressBar::new(total);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:40} {pos}/{len} batches {eta}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar
                });
                bar.set_position(done);
            },
        )?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(Box::new(store))
    }

    /// Opens a store that must already exist (for reading).
    pub(crate) fn open_existing(&self) -> anyhow::Result<Box<dyn vantage_collector::Store>> {
        if let vantage_collector::StoreLocation::Sqlite(path) = self.location()? {
            if !path.exists() {
                anyhow::bail!(
                    "database {} does not exist (run `vantage collect --db …` first)",
                    path.display()
                );
            }
        }
        self.open()
    }

    /// Where the store is, for messages (never a password).
    pub(crate) fn place(&self) -> String {
        self.location()
            .map(|l| l.place())
            .unwrap_or_else(|_| self.db.clone())
    }
}

/// Runs until Ctrl-C / SIGTERM, or until `duration` has passed.
pub(crate) async fn run_until_stopped(duration: Option<std::time::Duration>) {
    let mut stop = vantage_probe::stop_on_signal();
    match duration {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.changed() => {}
            }
        }
        None => {
            let _ = stop.changed().await;
        }
    }
}

/// A rate flag (`--…-rate-per-…`): `per_second` with bursts of
/// `burst_factor` times it (at least one); 0 is no limit.
pub(crate) fn rate_flag(
    flag: &str,
    per_second: f64,
    burst_factor: f64,
) -> anyhow::Result<Option<vantage_wire::rate::SourceRate>> {
    if !(per_second.is_finite() && per_second >= 0.0) {
        anyhow::bail!("{flag} {per_second}: give a rate per second, 0 or more (0: no limit)");
    }
    Ok((per_second > 0.0).then(|| vantage_wire::rate::SourceRate {
        per_second,
        burst: (burst_factor * per_second).max(1.0),
    }))
}
