//! `vantage access`: the keys and tokens of responders that require one
//! for heavy requests (`vantage serve --require-token`).

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_tls::access::AccessSigner;

/// Subcommands of `vantage access`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum AccessCommand {
    /// Make a signing key (access.key, private) and its public half (access.pub, for responders).
    #[command(
        after_help = "Example:\n  vantage access keygen --dir /etc/vantage/access\n  (then on each responder: vantage serve --require-token /etc/vantage/access/access.pub)"
    )]
    Keygen {
        /// Directory to write access.key and access.pub in.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace a key already there (tokens signed by the old one stop
        /// working wherever only the new public key is given).
        #[arg(long)]
        force: bool,
    },
    /// Print a token for one probe, signed by the key; give it to the probe with --access-token.
    #[command(
        after_help = "Example:\n  vantage access issue --key /etc/vantage/access/access.key --probe vm-mumbai-1 --valid 30d\n  vantage probe … --access-token vt1.vm-mumbai-1.…"
    )]
    Issue {
        /// The signing key (access.key from `vantage access keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The probe id the token is for.
        #[arg(long, value_name = "ID")]
        probe: String,
        /// How long the token is valid from now.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        valid: Duration,
    },
}

pub(crate) fn access(command: AccessCommand) -> anyhow::Result<()> {
    match command {
        AccessCommand::Keygen { dir, force } => keygen(&dir, force),
        AccessCommand::Issue { key, probe, valid } => {
            let signer = AccessSigner::load(&key)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .context("the system clock is before 1970")?;
            let expires = now.saturating_add(valid).as_secs();
            println!("{}", signer.issue(&probe, expires)?);
            Ok(())
        }
    }
}

fn keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    let key = dir.join("access.key");
    let public = dir.join("access.pub");
    if key.exists() && !force {
        anyhow::bail!(
            "{} already exists; give --force to replace it (tokens it signed then stop working)",
            key.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (signer, private) = AccessSigner::generate()?;
    write_private(&key, &private)?;
    std::fs::write(&public, signer.public_text())
        .with_context(|| format!("writing {}", public.display()))?;
    println!("signing key  {} (keep it private)", key.display());
    println!("public key   {}", public.display());
    println!(
        "responders:  vantage serve --require-token {}",
        public.display()
    );
    Ok(())
}

/// Writes the private key readable by its owner only, created so from
/// the start (never briefly world-readable).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file replaced with --force keeps its mode unless set again.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
