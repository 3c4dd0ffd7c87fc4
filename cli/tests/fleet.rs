//! A fleet on loopback with real processes: a `vantage collect`, a
//! `vantage serve`, and `vantage probe`s that have no target of their own
//! and take their campaign from the collector. A campaign change reaches
//! every probe within one poll interval; the cut-over labels every window
//! by its start; probes measure through a collector outage and a restart
//! of their own; a rollback, a campaign a probe cannot run and another
//! probe's token are refused; a silent probe is flagged.

mod common;

use common::{start, vantage, Running};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vantage_collector::SqliteStore;
use vantage_store::fleet::Fleet;
use vantage_store::{Selector, Store};

const POLL: &str = "2s";
const POLL_MS: u64 = 2_000;
const WINDOW_MS: u64 = 2_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The collector, its responder, and where everything is kept.
struct Lab {
    dir: PathBuf,
    db: String,
    collector: Option<Running>,
    collector_addr: String,
    collector_pin: String,
    _responder: Running,
    responder_addr: String,
    responder_pin: String,
}

impl Lab {
    fn new(dir: &Path) -> Lab {
        let mut responder_addr = String::new();
        let mut responder_pin = String::new();
        let responder = start(
            vantage()
                .args(["serve", "--port", "0", "--stamp-port", "0"])
                .arg("--cert-dir")
                .arg(dir.join("responder-cert")),
            |w| match w {
                ["quic", a, ..] => {
                    responder_addr = a.to_string();
                    false
                }
                ["probe", "with:", "--pin", p] => {
                    responder_pin = p.to_string();
                    true
                }
                _ => false,
            },
        );
        let mut lab = Lab {
            dir: dir.to_path_buf(),
            db: dir.join("fleet.db").display().to_string(),
            collector: None,
            collector_addr: "127.0.0.1:0".into(),
            collector_pin: String::new(),
            _responder: responder,
            responder_addr,
            responder_pin,
        };
        lab.start_collector();
        lab
    }

    /// Starts the collector (again on the same port and certificate).
    fn start_collector(&mut self) {
        let (mut addr, mut pin) = (String::new(), String::new());
        let running = start(
            vantage()
                .args([
                    "collect",
                    "--listen",
                    &self.collector_addr,
                    "--db",
                    &self.db,
                ])
                .arg("--cert-dir")
                .arg(self.dir.join("collector-cert")),
            |w| match w {
                ["quic", a, ..] => {
                    addr = a.to_string();
                    false
                }
                ["probe", "with:", _, p] => {
                    pin = p.to_string();
                    true
                }
                _ => false,
            },
        );
        self.collector = Some(running);
        self.collector_addr = addr;
        self.collector_pin = pin;
    }

    fn stop_collector(&mut self) {
        self.collector = None;
    }

    fn vantage(&self, args: &[&str]) -> String {
        let out = vantage()
            .args(args)
            .args(["--db", &self.db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vantage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Assigns `campaign` to every probe whose labels match `selector`.
    fn assign(&self, campaign: &str, selector: &str) {
        self.vantage(&[
            "campaign",
            "assign",
            "--campaign",
            campaign,
            "--labels",
            selector,
        ]);
    }

    fn token(&self, probe: &str) -> String {
        self.vantage(&["collect", "token", "add", "--probe", probe])
            .trim()
            .to_string()
    }

    /// A campaign measuring the responder, with `extra` TOML lines.
    fn campaign(&self, name: &str, extra: &str) -> u64 {
        let body = format!(
            "window = \"2s\"\nmetrics = [\"quic_request\"]\n{extra}\n[rates]\nquic_request = 10.0\n[[target]]\nname = \"singapore\"\naddress = \"{}\"\npin = \"{}\"\n",
            self.responder_addr, self.responder_pin
        );
        let file = self.dir.join(format!("{name}.toml"));
        std::fs::write(&file, body).unwrap();
        let out = self.vantage(&[
            "campaign",
            "set",
            "--campaign",
            name,
            "--file",
            file.to_str().unwrap(),
        ]);
        out.split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no version in `{out}`"))
    }

    /// A probe process with no target of its own.
    fn probe(&self, id: &str, token: &str, country: &str, run_for: &str) -> Running {
        let child = vantage()
            .args([
                "probe",
                "--probe-id",
                id,
                "--country",
                country,
                "--token",
                token,
            ])
            .args(["--collector", &self.collector_addr])
            .args(["--collector-pin", &self.collector_pin])
            .args(["--poll-every", POLL, "--duration", run_for, "--quiet"])
            .arg("--state-dir")
            .arg(self.state(id))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Running(child)
    }

    fn state(&self, id: &str) -> PathBuf {
        self.dir.join("probes").join(id)
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(Path::new(&self.db)).unwrap()
    }

    /// The campaign version each probe last reported applied.
    fn applied(&self, probe: &str) -> Option<u64> {
        let health = self.store().fleet_health().unwrap();
        health
            .into_iter()
            .find(|h| h.probe_id == probe)
            .and_then(|h| h.applied.map(|(_, v)| v))
    }

    /// The campaign version kept in a probe's state directory.
    fn kept(&self, probe: &str) -> Option<u64> {
        vantage_probe::fleet::load_campaign(&self.state(probe))
            .ok()
            .flatten()
            .map(|d| d.version)
    }
}

/// Copies a SQLite store whose writer is stopped, with its WAL.
fn copy_db(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let (f, t) = (
            PathBuf::from(format!("{}{suffix}", from.display())),
            PathBuf::from(format!("{}{suffix}", to.display())),
        );
        let _ = std::fs::remove_file(&t);
        if f.exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
}

/// Waits (bounded) until `done` holds; panics with `what` otherwise.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn five_probes_follow_a_change_and_cut_over_at_the_instant() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(dir.path());
    let ids: Vec<String> = (1..=5).map(|i| format!("vm-in-{i}")).collect();
    assert_eq!(
        lab.campaign("move", "[labels]\nphase = \"before\"\nstudy = \"one\""),
        1
    );
    lab.assign("move", "country=IN");
    let _probes: Vec<Running> = ids
        .iter()
        .map(|id| lab.probe(id, &lab.token(id), "IN", "60s"))
        .collect();
    wait_until(
        Duration::from_secs(30),
        "every probe runs version 1",
        || ids.iter().all(|id| lab.applied(id) == Some(1)),
    );

    // A change reaches every probe within one poll interval (plus the
    // time a poll takes on a busy machine).
    assert_eq!(
        lab.campaign("move", "[labels]\nphase = \"before\"\nstudy = \"two\""),
        2
    );
    let took = wait_until(Duration::from_secs(10), "every probe has version 2", || {
        ids.iter().all(|id| lab.kept(id) == Some(2))
    });
    assert!(
        took < Duration::from_millis(POLL_MS + 1_500),
        "took {took:?} with --poll-every {POLL}"
    );
    wait_until(
        Duration::from_secs(15),
        "every probe runs version 2",
        || ids.iter().all(|id| lab.applied(id) == Some(2)),
    );

    // The cut-over, 5 s from now; the probes run for 20 s more at least.
    let at = now_ms() + 5_000;
    let at_text =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)).to_string();
    lab.vantage(&[
        "campaign",
        "phase",
        "--campaign",
        "move",
        "--set",
        "after",
        "--at",
        &at_text,
    ]);
    std::thread::sleep(Duration::from_secs(12));
    wait_until(
        Duration::from_secs(20),
        "every probe's batches after the switch arrive",
        || {
            let rows = lab.store().select(&Selector::default()).unwrap();
            ids.iter().all(|id| {
                rows.iter()
                    .filter(|r| r.probe_id == *id && r.labels.get("phase") == Some("after"))
                    .count()
                    >= 2
            })
        },
    );
    let rows = lab.store().select(&Selector::default()).unwrap();
    let (mut before, mut after) = (0, 0);
    for r in &rows {
        let phase = r.labels.get("phase");
        if r.series.window.start_unix_ms >= at {
            assert_eq!(
                phase,
                Some("after"),
                "{} window {:?}",
                r.probe_id,
                r.series.window
            );
            after += 1;
        } else {
            assert_eq!(
                phase,
                Some("before"),
                "{} window {:?}",
                r.probe_id,
                r.series.window
            );
            before += 1;
        }
    }
    assert!(
        before >= 10 && after >= 10,
        "{before} before, {after} after"
    );
    // The second version's label reached the batches too.
    assert!(rows.iter().any(|r| r.labels.get("study") == Some("two")));
}

#[test]
fn probes_measure_through_a_collector_outage_and_their_own_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    lab.campaign("move", "");
    lab.assign("move", "country=MY");
    let (t1, t2) = (lab.token("vm-my-1"), lab.token("vm-my-2"));
    let _p1 = lab.probe("vm-my-1", &t1, "MY", "200s");
    let mut p2 = lab.probe("vm-my-2", &t2, "MY", "200s");
    wait_until(Duration::from_secs(30), "both probes run version 1", || {
        lab.applied("vm-my-1") == Some(1) && lab.applied("vm-my-2") == Some(1)
    });
    lab.stop_collector();
    let down_from = now_ms();
    // While the collector is down, one probe restarts: it runs the
    // campaign it kept.
    std::thread::sleep(Duration::from_secs(20));
    drop(p2);
    p2 = lab.probe("vm-my-2", &t2, "MY", "150s");
    std::thread::sleep(Duration::from_secs(100));
    let down_to = now_ms();
    lab.start_collector();
    wait_until(
        Duration::from_secs(60),
        "the outage's batches arrive",
        || {
            let rows = lab.store().select(&Selector::default()).unwrap();
            ["vm-my-1", "vm-my-2"].iter().all(|id| {
                rows.iter()
                    .any(|r| r.probe_id == *id && r.series.window.start_unix_ms >= down_to)
            })
        },
    );
    drop(p2);
    let rows = lab.store().select(&Selector::default()).unwrap();
    for id in ["vm-my-1", "vm-my-2"] {
        let mut starts: Vec<u64> = rows
            .iter()
            .filter(|r| r.probe_id == id)
            .map(|r| r.series.window.start_unix_ms)
            .collect();
        starts.sort();
        starts.dedup();
        // Windows through the outage, every one, apart from the few
        // seconds the restarted probe was not running.
        let during = starts
            .iter()
            .filter(|s| (down_from..down_to).contains(*s))
            .count() as u64;
        let expected = (down_to - down_from) / WINDOW_MS;
        assert!(
            during + 5 >= expected,
            "{id}: {during} windows of {expected} in the outage"
        );
        let gaps = starts
            .windows(2)
            .filter(|w| w[1] - w[0] > WINDOW_MS)
            .count();
        assert!(gaps <= usize::from(id == "vm-my-2"), "{id}: {gaps} gaps");
        // Every batch once: sequences run on without a hole.
        let mut seqs: Vec<u64> = rows
            .iter()
            .filter(|r| r.probe_id == id)
            .map(|r| r.sequence)
            .collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(
            seqs.last().copied(),
            Some(seqs.len() as u64),
            "{id}: {seqs:?}"
        );
    }
}

#[test]
fn refusals_are_reported_and_a_silent_probe_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    lab.campaign("move", "");
    lab.campaign("move", "[labels]\nstudy = \"two\"");
    lab.assign("move", "country=ID");
    let backup = dir.path().join("backup.db");
    let t1 = lab.token("vm-id-1");
    let t2 = lab.token("vm-id-2");
    lab.stop_collector();
    copy_db(Path::new(&lab.db), &backup);
    lab.start_collector();
    lab.campaign("move", "[labels]\nstudy = \"three\"");

    // Another probe's token: forbidden, and no campaign reaches it.
    let mut thief = vantage()
        .args([
            "probe",
            "--probe-id",
            "vm-id-2",
            "--country",
            "ID",
            "--token",
            &t1,
        ])
        .args([
            "--collector",
            &lab.collector_addr,
            "--collector-pin",
            &lab.collector_pin,
        ])
        .args(["--poll-every", POLL, "--duration", "3s"])
        .arg("--state-dir")
        .arg(lab.state("thief"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(thief.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    thief.wait().unwrap();
    assert!(
        stderr.contains("forbidden") && stderr.contains("vm-id-1"),
        "{stderr}"
    );
    assert_eq!(lab.kept("thief"), None);

    let p1 = lab.probe("vm-id-1", &t1, "ID", "120s");
    let _p2 = lab.probe("vm-id-2", &t2, "ID", "120s");
    wait_until(Duration::from_secs(30), "vm-id-1 runs version 3", || {
        lab.applied("vm-id-1") == Some(3)
    });

    // A campaign the probe cannot parse (stored past `campaign set`'s
    // check, as by another tool): refused, the reason in `vantage fleet`,
    // version 3 runs on.
    lab.store()
        .put_campaign("move", "window = \"2s\"\nmetricz = []\n", &[], now_ms())
        .unwrap();
    wait_until(Duration::from_secs(15), "the refusal is reported", || {
        lab.vantage(&["fleet"]).contains("campaign refused")
    });
    let table = lab.vantage(&["fleet"]);
    let line = table.lines().find(|l| l.starts_with("vm-id-1")).unwrap();
    assert!(
        line.contains("move v4") && line.contains("move v3"),
        "{table}"
    );
    assert!(
        line.contains("metricz") && line.contains("drift"),
        "{table}"
    );
    assert_eq!(lab.kept("vm-id-1"), Some(3));

    // The database restored from a backup made at version 2: a rollback.
    lab.stop_collector();
    copy_db(&backup, Path::new(&lab.db));
    lab.start_collector();
    wait_until(Duration::from_secs(15), "the rollback is refused", || {
        lab.vantage(&["fleet"]).contains("rollback is refused")
    });
    assert_eq!(lab.kept("vm-id-1"), Some(3));
    let before = lab.store().batch_count().unwrap();
    wait_until(Duration::from_secs(15), "version 3 measures on", || {
        lab.store().batch_count().unwrap() > before + 2
    });

    // A probe that stops sending is silent after three windows.
    drop(p1);
    std::thread::sleep(Duration::from_millis(4 * WINDOW_MS + 1_000));
    let json: serde_json::Value =
        serde_json::from_str(&lab.vantage(&["fleet", "--json", "--silent-after", "3"])).unwrap();
    let row = |id: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|r| r["probe_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("vm-id-1")["silent"], true, "{json}");
    assert_eq!(row("vm-id-2")["silent"], false, "{json}");
}
