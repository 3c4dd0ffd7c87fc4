//! A real PostgreSQL for a test: Debian's `postgresql` package, `initdb`
//! into a temporary directory as an unprivileged user (`postgres` when the
//! test runs as root), `pg_ctl start` on a loopback port and a socket in
//! that directory, and `pg_ctl stop` when dropped. Password authentication
//! over TCP (SCRAM), so the tests go through the password path.
//!
//! Shared by test crates with `#[path = ".../support/postgres.rs"] mod …;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The password of the test role `vantage`.
pub const PASSWORD: &str = "vantage-test-password";

/// A running server, stopped and removed on drop.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<&'static str>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// Server options beyond the port and socket (`-c …`).
    extra: std::cell::RefCell<String>,
}

/// The directory holding `initdb` and `pg_ctl`: the newest PostgreSQL
/// that Debian's package installed.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql: install Debian's package \
             (apt-get install postgresql); .ci/run does"
        ),
    }
}

/// A free loopback port below the kernel's ephemeral range. A port from
/// that range (what binding port 0 gives) can be taken as the source port of
/// some other test's outgoing connection in the seconds initdb takes, and
/// the server would then fail to start with "Address already in use".
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TRIES: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u32, low.max(10_100));
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..1000 {
        let n = TRIES.fetch_add(1, Ordering::Relaxed);
        let port = from + (seed.wrapping_add(n.wrapping_mul(7919)) % (to - from));
        let port = port as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {from} and {to}");
}

impl TestPostgres {
    /// initdb, start, and create database `vantage` owned by role `vantage`.
    pub fn start() -> Self {
        let bin = bin_dir();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc_geteuid() } == 0;
        let run_as = root.then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("vantage-pg-")
            .tempdir()
            .expect("temporary directory");
        if root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {} to postgres", dir.path().display());
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        if root {
            let _ = Command::new("chown").arg("postgres").arg(&pwfile).status();
        }
        let pg = TestPostgres {
            port: free_port(),
            dir,
            bin,
            run_as,
            extra: std::cell::RefCell::new(String::new()),
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "vantage",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        pg.start_again();
        pg.run(
            "createdb",
            &[
                "-h",
                &pg.socket_dir(),
                "-p",
                &pg.port.to_string(),
                "-U",
                "vantage",
                "vantage",
            ],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// `--db` for database `name` over TCP, without the password.
    pub fn url_of(&self, name: &str) -> String {
        format!(
            "postgres://vantage@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// `--db` for database `vantage` over TCP, without the password.
    pub fn url(&self) -> String {
        self.url_of("vantage")
    }

    /// The same database in libpq's keyword form, over the Unix socket.
    pub fn socket_conninfo(&self) -> String {
        format!(
            "host={} port={} user=vantage dbname=vantage",
            self.socket_dir(),
            self.port
        )
    }

    /// Makes another empty database.
    pub fn create_database(&self, name: &str) -> String {
        self.run(
            "createdb",
            &[
                "-h",
                &self.socket_dir(),
                "-p",
                &self.port.to_string(),
                "-U",
                "vantage",
                name,
            ],
        );
        self.url_of(name)
    }

    /// Runs SQL through psql on database `db`; returns what it printed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.run(
            "psql",
            &[
                "-h",
                &self.socket_dir(),
                "-p",
                &self.port.to_string(),
                "-U",
                "vantage",
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
    }

    /// A location for `db` with the test password.
    pub fn location(&self, db: &str) -> vantage_collector::PgLocation {
        vantage_collector::PgLocation::parse(&self.url_of(db), None, Some(PASSWORD.into()))
            .expect("test location")
    }

    /// `pg_ctl stop -m immediate`: as if the database host lost power.
    pub fn stop_immediate(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=on {}",
            self.port,
            self.socket_dir(),
            self.extra.borrow()
        );
        let log = self.dir.path().join("log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-l",
            &log.display().to_string(),
            "-o",
            &options,
        ]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let path = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // Out of the way of whatever directory the test runs in.
        cmd.args(args).current_dir(self.dir.path());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            panic!(
                "{tool} {args:?} failed: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Restarts the server with TLS on (this certificate chain and key, as
    /// PEM) and TCP connections accepted only over TLS, so a connection
    /// that gets in was encrypted.
    pub fn require_tls(&self, cert_pem: &[u8], key_pem: &[u8]) {
        let (cert, key) = (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        );
        std::fs::write(&cert, cert_pem).expect("server certificate");
        std::fs::write(&key, key_pem).expect("server key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
        let hba = self.data().join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        if self.run_as.is_some() {
            for f in [&cert, &key, &hba] {
                let _ = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(f)
                    .status();
            }
        }
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
        *self.extra.borrow_mut() = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        self.start_again();
    }

    /// The temporary directory (data, log, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let path = self.bin.join("pg_ctl");
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let _ = cmd
            .args(["-D", &data, "stop", "-m", "immediate", "-w"])
            .current_dir(self.dir.path())
            .output();
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
