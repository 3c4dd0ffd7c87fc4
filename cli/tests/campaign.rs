//! `vantage campaign` as an operator runs it: a file checked before it is
//! stored (an error with its line and column stores nothing), numbered
//! versions and their difference, assignments, and the cut-over as one
//! command that keeps the body and refuses a switch in the past.

use std::path::Path;
use std::process::{Command, Output};
use vantage_collector::SqliteStore;
use vantage_store::fleet::{Assignee, Fleet};

const CAMPAIGN: &str = r#"window = "60s"
metrics = ["udp_rtt", "quic_request"]
[labels]
study = "move"
[[target]]
name = "singapore"
address = "127.0.0.1:4433"
pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
"#;

/// `vantage campaign SUB --db DB REST…`.
fn campaign(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(["campaign", args[0], "--db", db])
        .args(&args[1..])
        .output()
        .expect("runs vantage")
}

fn ok(db: &str, args: &[&str]) -> String {
    let out = campaign(db, args);
    assert!(
        out.status.success(),
        "vantage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(db: &str, args: &[&str]) -> String {
    let out = campaign(db, args);
    assert!(!out.status.success(), "vantage {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_campaign_is_checked_versioned_assigned_and_switched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db").display().to_string();

    // A typo is refused where it is, and nothing is stored.
    let typo = write(
        dir.path(),
        "typo.toml",
        &CAMPAIGN.replace("metrics", "metricz"),
    );
    let e = refused(&db, &["set", "--campaign", "move", "--file", &typo]);
    assert!(
        e.contains("line 2") && e.contains("column 1") && e.contains("metricz"),
        "{e}"
    );
    assert!(e.contains("nothing stored"), "{e}");
    let no_target = write(dir.path(), "empty.toml", "window = \"60s\"\n");
    let e = refused(&db, &["set", "--campaign", "move", "--file", &no_target]);
    assert!(e.contains("no target"), "{e}");
    let mut store = SqliteStore::open(Path::new(&db)).unwrap();
    assert_eq!(store.campaigns().unwrap(), []);

    // Two versions; the second is printed by default, the first on asking.
    let one = write(dir.path(), "one.toml", CAMPAIGN);
    let out = ok(&db, &["set", "--campaign", "move", "--file", &one]);
    assert!(out.contains("version 1"), "{out}");
    let two = write(dir.path(), "two.toml", &CAMPAIGN.replace("60s", "30s"));
    let out = ok(&db, &["set", "--campaign", "move", "--file", &two]);
    assert!(out.contains("version 2"), "{out}");
    let shown = ok(&db, &["show", "--campaign", "move"]);
    assert!(
        shown.contains("version 2") && shown.contains("\"30s\""),
        "{shown}"
    );
    let shown = ok(&db, &["show", "--campaign", "move", "--version", "1"]);
    assert!(
        shown.contains("version 1") && shown.contains("\"60s\""),
        "{shown}"
    );
    let diff = ok(&db, &["show", "--campaign", "move", "--diff", "1..2"]);
    assert!(
        diff.contains("\n-window = \"60s\"\n") && diff.contains("\n+window = \"30s\"\n"),
        "{diff}"
    );
    assert!(!diff.contains("-metrics"), "only what changed: {diff}");
    let e = refused(&db, &["show", "--campaign", "move", "--version", "3"]);
    assert!(e.contains("no version 3"), "{e}");

    // Assignments, to a probe and to labels; a bad selector and an unknown
    // campaign are refused.
    ok(&db, &["assign", "--campaign", "move", "--probe", "vm-1"]);
    ok(
        &db,
        &["assign", "--campaign", "move", "--labels", "country=IN|MY"],
    );
    let e = refused(&db, &["assign", "--campaign", "nope", "--probe", "vm-1"]);
    assert!(e.contains("no campaign `nope`"), "{e}");
    refused(
        &db,
        &["assign", "--campaign", "move", "--labels", "country"],
    );
    let assigned: Vec<Assignee> = store
        .assignments()
        .unwrap()
        .into_iter()
        .map(|a| a.assignee)
        .collect();
    assert_eq!(assigned.len(), 2, "{assigned:?}");
    assert!(assigned.contains(&Assignee::Probe("vm-1".into())));
    assert!(assigned.contains(&Assignee::Labels("country=IN|MY".into())));
    let list = ok(&db, &["show"]);
    assert!(list.contains("move\tversion 2\tassigned to "), "{list}");
    assert!(list.contains("probe vm-1"), "{list}");

    // The cut-over: a new version with the same body and the switch; one in
    // the past, or before the last switch, is refused.
    let in_an_hour = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    )
    .to_string();
    let out = ok(
        &db,
        &[
            "phase",
            "--campaign",
            "move",
            "--set",
            "after",
            "--at",
            &in_an_hour,
        ],
    );
    assert!(out.contains("version 3"), "{out}");
    let v3 = store.campaign_version("move", None).unwrap().unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(
        v3.body,
        store
            .campaign_version("move", Some(2))
            .unwrap()
            .unwrap()
            .body
    );
    assert_eq!(v3.phases.len(), 1);
    assert_eq!(v3.phases[0].phase, "after");
    let e = refused(
        &db,
        &[
            "phase",
            "--campaign",
            "move",
            "--set",
            "before",
            "--at",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert!(e.contains("in the past"), "{e}");
    let e = refused(
        &db,
        &["phase", "--campaign", "move", "--set", "x", "--at", "now"],
    );
    assert!(e.contains("already switches to `after`"), "{e}");
    let e = refused(
        &db,
        &[
            "phase",
            "--campaign",
            "move",
            "--set",
            "a b=c",
            "--at",
            "now",
        ],
    );
    assert!(e.contains("one word"), "{e}");
    // A later body keeps the switch.
    let out = ok(&db, &["set", "--campaign", "move", "--file", &one]);
    assert!(out.contains("version 4"), "{out}");
    let v4 = store.campaign_version("move", None).unwrap().unwrap();
    assert_eq!(v4.phases, v3.phases);
    let shown = ok(&db, &["show", "--campaign", "move"]);
    assert!(shown.contains("# phase after from "), "{shown}");
}
