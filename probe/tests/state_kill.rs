//! The probe's state under SIGKILL: a process taking sequence numbers as
//! fast as it can (each a temporary file, fsync, rename, fsync of the
//! directory) is killed at random instants, again and again, and restarted
//! on the same state directory. No number is ever handed out twice, the
//! state always opens, and the id never changes.
//!
//! The killed process is this test binary itself, started again with
//! [`CHILD`] set: it then runs [`take_sequences`] instead of the test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vantage_probe::ProbeState;

/// Set in the child: the state directory it takes numbers from.
const CHILD: &str = "VANTAGE_STATE_KILL_CHILD";
const TEST: &str = "sigkill_during_state_writes_never_reuses_a_sequence_number";

/// The child's loop: take a number, then say it (so every number printed
/// was taken, and durable, before the kill could land).
fn take_sequences(dir: &Path) {
    let mut state = ProbeState::open(dir, None).expect("the state opens after any kill");
    // Own lines, but libtest may start the first one with its test name.
    println!("\nstate-id={}", state.probe_id());
    for _ in 0..1_000_000 {
        let seq = state.take_sequence().expect("a sequence number is stored");
        println!("state-seq={seq}");
    }
}

#[test]
fn sigkill_during_state_writes_never_reuses_a_sequence_number() {
    if let Some(dir) = std::env::var_os(CHILD) {
        take_sequences(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let (mut taken, mut ids, mut mid_write) = (Vec::<u64>::new(), Vec::new(), 0);
    const ROUNDS: usize = 40;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait for the first number: the child is in its loop.
        let mut first = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some((_, id)) = line.split_once("state-id=") {
                ids.push(id.to_string());
            } else if let Some(n) = line.strip_prefix("state-seq=") {
                first = Some(n.parse::<u64>().unwrap());
                break;
            }
        }
        let first = first.unwrap_or_else(|| panic!("round {round}: the child took no number"));
        taken.push(first);
        // Kill after 0-9.9 ms: some lines, a few writes, mid-way through one.
        std::thread::sleep(Duration::from_micros(rand::random::<u64>() % 10_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("state-seq=") {
                // A line cut by the kill has no number to parse.
                if let Ok(n) = n.parse::<u64>() {
                    taken.push(n);
                }
            }
        }
        let leftover = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
        mid_write += usize::from(leftover);
    }
    assert_eq!(ids.len(), ROUNDS);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the id changed: {ids:?}"
    );
    // Strictly increasing across every run: nothing reused, nothing
    // handed out out of order.
    for pair in taken.windows(2) {
        assert!(
            pair[0] < pair[1],
            "sequence {} followed by {}",
            pair[0],
            pair[1]
        );
    }
    // The kills did land inside writes (a temporary file left behind).
    assert!(
        mid_write > 0,
        "no kill landed between a write and its rename"
    );
    println!(
        "{} numbers taken over {ROUNDS} kills, {mid_write} of them mid-write, last {}",
        taken.len(),
        taken.last().unwrap()
    );
}
