//! `vantage lab run` in namespace mode leaves nothing behind: Ctrl-C
//! removes every namespace it made, and one left by a killed run goes at
//! the next start. Needs root.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespaces process `pid` made.
fn namespaces_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&format!("vantage-lab-{pid}-")))
                .collect()
        })
        .unwrap_or_default()
}

fn lab_run(out: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vantage"))
        .args(["lab", "run", "--emulation", "netns", "--phase", "after"])
        .args(["--duration", "60s", "--window", "1s", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `pid` has made its namespaces (the default scenario: 12
/// probes and 2 data centres in the after phase).
fn wait_for_namespaces(pid: u32) -> Vec<String> {
    let start = Instant::now();
    loop {
        let names = namespaces_of(pid);
        if names.len() >= 14 {
            return names;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {names:?} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root"]
fn ctrl_c_removes_every_namespace_and_a_killed_runs_go_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();

    // Ctrl-C: the lab stops its probes and removes what it made.
    let child = lab_run(&dir.path().join("a"));
    let pid = child.id();
    let made = wait_for_namespaces(pid);
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lab: namespace mode"), "{stderr}");
    assert!(
        namespaces_of(pid).is_empty(),
        "left after Ctrl-C: {:?} (made {made:?})",
        namespaces_of(pid)
    );

    // SIGKILL: nothing can clean up, so the next start does.
    let mut killed = lab_run(&dir.path().join("b"));
    let pid = killed.id();
    wait_for_namespaces(pid);
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(
        !namespaces_of(pid).is_empty(),
        "a killed run leaves its namespaces"
    );
    let mut next = lab_run(&dir.path().join("c"));
    wait_for_namespaces(next.id());
    assert!(
        namespaces_of(pid).is_empty(),
        "the next start left the killed run's {:?}",
        namespaces_of(pid)
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(next.id() as i32, libc::SIGINT) };
    next.wait().unwrap();
    assert!(namespaces_of(next.id()).is_empty());
}
