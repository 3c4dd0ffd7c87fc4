//! Where a PostgreSQL store is: `--db` as given (a `postgres://` URL or
//! libpq's `key=value` form), the password from wherever it came, and how
//! the connection is encrypted.

use std::path::{Path, PathBuf};
use vantage_tls::{TlsClient, Trust};

/// How the connection to the database is protected (`sslmode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// `disable`: plain TCP (or a Unix socket, which never uses TLS).
    Off,
    /// `prefer` (the default) or `require`: TLS without checking the
    /// server's certificate, as libpq does; `prefer` falls back to plain.
    Unverified {
        /// `require`: refuse a server that does not speak TLS.
        required: bool,
    },
    /// `verify-full` (or `verify-ca`, checked as strictly): the
    /// certificate must chain to `sslrootcert` (or, without it, to the
    /// public web's roots) and name the host.
    Verified(Trust),
}

/// A parsed `--db` naming PostgreSQL.
#[derive(Clone)]
pub struct PgLocation {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: PgTls,
    place: String,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PgLocation")
            .field("place", &self.place)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Why `--db` does not name a usable PostgreSQL database.
#[derive(Debug, thiserror::Error)]
pub enum PgLocationError {
    /// tokio-postgres refused the connection string.
    #[error("PostgreSQL connection string: {0} (the form is postgres://user@host:port/dbname?sslmode=verify-full, or host=/run/postgresql dbname=vantage)")]
    Syntax(String),
    /// An `sslmode` this client does not know.
    #[error("sslmode `{0}`: use disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    /// The password file could not be read.
    #[error("password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built (an unreadable `sslrootcert`).
    #[error("TLS to the database: {0}")]
    Tls(#[from] vantage_tls::TrustError),
}

/// Whether `--db` names PostgreSQL rather than a SQLite file.
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://")
        || db.starts_with("postgresql://")
        || db.split_whitespace().next().is_some_and(|first| {
            first.split_once('=').is_some_and(|(key, _)| {
                [
                    "host",
                    "hostaddr",
                    "port",
                    "dbname",
                    "user",
                    "password",
                    "sslmode",
                    "options",
                    "application_name",
                    "connect_timeout",
                ]
                .contains(&key)
            })
        })
}

impl PgLocation {
    /// Parses `db`. The password comes from `password_file` if given (its
    /// first line), else from the string itself, else from `PGPASSWORD`
    /// (`env_password`, passed in so tests need not set the environment).
    pub fn parse(
        db: &str,
        password_file: Option<&Path>,
        env_password: Option<String>,
    ) -> Result<Self, PgLocationError> {
        let (rest, mode, root) = take_tls_options(db);
        let tls = match mode.as_deref() {
            None | Some("prefer") => PgTls::Unverified { required: false },
            Some("disable") => PgTls::Off,
            Some("require") => PgTls::Unverified { required: true },
            Some("verify-ca") | Some("verify-full") => PgTls::Verified(match root {
                Some(file) => Trust::CaFile(PathBuf::from(file)),
                None => Trust::PublicRoots,
            }),
            Some(other) => return Err(PgLocationError::SslMode(other.to_string())),
        };
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e: tokio_postgres::Error| {
                let mut text = e.to_string();
                if let Some(source) = std::error::Error::source(&e) {
                    text.push_str(&format!(": {source}"));
                }
                PgLocationError::Syntax(text)
            })?;
        config.ssl_mode(match tls {
            PgTls::Off => tokio_postgres::config::SslMode::Disable,
            PgTls::Unverified { required: false } => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if let Some(path) = password_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| PgLocationError::PasswordFile {
                    path: path.to_path_buf(),
                    source,
                })?;
            config.password(text.lines().next().unwrap_or("").trim_end());
        } else if config.get_password().is_none() {
            if let Some(p) = env_password.filter(|p| !p.is_empty()) {
                config.password(p);
            }
        }
        if config.get_application_name().is_none() {
            config.application_name("vantage");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let place = place_of(&config);
        let location = PgLocation { config, tls, place };
        location.rustls()?;
        Ok(location)
    }

    /// The database for messages: user, hosts, ports and name, never the password.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// How the connection is protected.
    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// The rustls configuration for [`PgTls::Unverified`] and [`PgTls::Verified`].
    pub(super) fn rustls(&self) -> Result<Option<rustls::ClientConfig>, PgLocationError> {
        let trust = match &self.tls {
            PgTls::Off => return Ok(None),
            PgTls::Unverified { .. } => Trust::Insecure,
            PgTls::Verified(trust) => trust.clone(),
        };
        let client = TlsClient::for_web(&trust, &[])?;
        Ok(Some((*client.config).clone()))
    }
}

/// `db` without its `sslmode` and `sslrootcert` options (read here: tokio-
/// postgres knows neither verify mode nor root files), and their values.
fn take_tls_options(db: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_string());
            true
        }
        _ => false,
    };
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        let Some((base, query)) = db.split_once('?') else {
            return (db.to_string(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, &percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode, root);
    }
    let kept: Vec<&str> = db
        .split_whitespace()
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            !take(k.trim(), v.trim_matches('\''))
        })
        .collect();
    (kept.join(" "), mode, root)
}

/// `%XX` escapes of a URL query value decoded (a root file path may have them).
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn place_of(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(n, h)| {
            let port = config
                .get_ports()
                .get(n)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => vantage_wire::host_port(name, port),
                #[cfg(unix)]
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keyword_strings_name_postgres_and_files_do_not() {
        for db in [
            "postgres://vantage@db.example:5432/vantage",
            "postgresql://localhost/v",
            "host=/run/postgresql dbname=vantage",
            "host=127.0.0.1 port=5433 user=vantage dbname=vantage",
        ] {
            assert!(is_postgres(db), "{db}");
        }
        for db in [
            "vantage.db",
            "/var/lib/vantage/vantage.db",
            "./a=b/x.db",
            "data/run.db",
        ] {
            assert!(!is_postgres(db), "{db}");
        }
    }

    #[test]
    fn the_password_comes_from_the_file_then_the_string_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\nignored\n").unwrap();
        let pw = |l: &PgLocation| l.config.get_password().map(|p| p.to_vec());
        let url = "postgres://v:from-url@127.0.0.1:5433/v";
        let l = PgLocation::parse(url, Some(&file), Some("from-env".into())).unwrap();
        assert_eq!(pw(&l), Some(b"from-file".to_vec()));
        let l = PgLocation::parse(url, None, Some("from-env".into())).unwrap();
        assert_eq!(pw(&l), Some(b"from-url".to_vec()));
        let l =
            PgLocation::parse("postgres://v@127.0.0.1/v", None, Some("from-env".into())).unwrap();
        assert_eq!(pw(&l), Some(b"from-env".to_vec()));
        // Never in messages.
        assert_eq!(l.place(), "postgres://v@127.0.0.1:5432/v");
        assert!(!format!("{l:?}").contains("from-env"));
        let missing = PgLocation::parse(url, Some(&dir.path().join("nope")), None).unwrap_err();
        assert!(missing.to_string().contains("password file"), "{missing}");
    }

    #[test]
    fn sslmode_picks_how_the_certificate_is_checked() {
        let at = |q: &str| PgLocation::parse(&format!("postgres://v@h/v{q}"), None, None);
        assert_eq!(at("").unwrap().tls, PgTls::Unverified { required: false });
        assert_eq!(at("?sslmode=disable").unwrap().tls, PgTls::Off);
        assert_eq!(
            at("?sslmode=require&connect_timeout=3").unwrap().tls,
            PgTls::Unverified { required: true }
        );
        assert_eq!(
            at("?sslmode=verify-full").unwrap().tls,
            PgTls::Verified(Trust::PublicRoots)
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let e = at(&format!(
            "?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        let e = at("?sslmode=sometimes").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
        let kw =
            PgLocation::parse("host=/run/postgresql dbname=v sslmode=disable", None, None).unwrap();
        assert_eq!(kw.tls, PgTls::Off);
        assert_eq!(kw.place(), "postgres://@/run/postgresql/.s.PGSQL.5432/v");
        let e = PgLocation::parse("postgres://v@h/v?colour=blue", None, None).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
