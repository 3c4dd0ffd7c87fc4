//! The probe on a full disk, for real: a small tmpfs mounted for the test
//! (so it needs root; `.ci/run` runs it with `--include-ignored`).

use std::path::Path;
use vantage_probe::spool::Spool;

#[path = "support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs root"]
fn a_full_spool_disk_counts_every_batch_it_could_not_keep_and_leaves_no_partial_files() {
    let disk = Tmpfs::mount("128k");
    let mut spool = Spool::open(&disk.path(), 1 << 30).unwrap();
    let batch = vec![7u8; 10_000];
    let (mut kept, mut lost) = (0u64, 0u64);
    for seq in 1..=30 {
        match spool.push(seq, &batch, 0) {
            Ok(evicted) => {
                assert_eq!(evicted, 0, "far under the cap");
                kept += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("No space left"), "{e}");
                lost += 1;
            }
        }
    }
    assert!(
        kept > 0 && lost > 0,
        "the disk filled: {kept} kept, {lost} lost"
    );
    assert_eq!(
        spool.pending_drops(),
        lost,
        "every batch not kept is counted"
    );
    assert!(
        names(&disk.path()).iter().all(|n| !n.ends_with(".tmp")),
        "no partial files left: {:?}",
        names(&disk.path())
    );
    // Space comes back: the next batch is kept and reports every loss.
    disk.resize("1m");
    assert_eq!(spool.push(31, &batch, lost).unwrap(), 0);
    assert_eq!(spool.pending_drops(), 0);
    drop(spool);
    let spool = Spool::open(&disk.path(), 1 << 30).unwrap();
    assert_eq!(spool.len() as u64, kept + 1);
    assert_eq!(
        spool.pending_drops(),
        0,
        "nothing left to report after a restart"
    );
}

/// Fills `dir`'s filesystem with one file; returns its path.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

/// The batches in a spool directory, in file-name (sequence) order.
fn spooled(dir: &Path) -> Vec<vantage_wire::Batch> {
    names(dir)
        .iter()
        .filter(|n| n.ends_with(".batch"))
        .map(|n| vantage_wire::Batch::decode(&std::fs::read(dir.join(n)).unwrap()).unwrap())
        .collect()
}

/// Found by hand: a state directory on a full disk stopped the probe with
/// `probe state …/sequence.ID: No space left on device`, and the window in
/// progress never reached `--out`. Now the probe keeps measuring: every
/// window is in `--out` (sequence 0 while no number can be stored), waits
/// in memory for a number, and is spooled for the collector, numbered with
/// no gap and no repeat, once space returns.
#[test]
#[ignore = "needs root"]
fn a_full_state_directory_keeps_the_probe_measuring_and_loses_no_window() {
    let state = Tmpfs::mount("64k");
    let filler = fill(&state.path());
    let (out, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-probe"))
        .args(["--local", "--window", "1s", "--duration", "8s"])
        .args(["--probe-id", "full-state", "--metrics", "udp_rtt"])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--out")
        .arg(out.path())
        .arg("--spool-dir")
        .arg(spool.path())
        // A collector that is not there: batches stay in the spool.
        .args(["--collector", "127.0.0.1:9", "--token", "vt_test"])
        .args(["--collector-pin", &format!("sha256:{}", "0".repeat(64))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    std::fs::remove_file(&filler).unwrap();
    let done = probe.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "the probe kept running: {stderr}");
    assert_eq!(
        stderr.matches("no sequence number could be stored").count(),
        1,
        "said once, not per window: {stderr}"
    );
    assert!(stderr.contains("writable again"), "{stderr}");

    let csv = std::fs::read_to_string(out.path().join("series.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (seq_col, start_col) = (column("sequence"), column("window_start"));
    let rows: Vec<(u64, String)> = rows
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[seq_col].parse().unwrap(), r[start_col].to_string())
        })
        .collect();
    assert!(
        rows.iter().any(|(seq, _)| *seq == 0),
        "windows closed while the disk was full are in --out, unnumbered: {csv}"
    );
    assert!(rows.iter().any(|(seq, _)| *seq > 0), "{csv}");

    let batches = spooled(spool.path());
    let sequences: Vec<u64> = batches.iter().map(|b| b.sequence).collect();
    let expected: Vec<u64> = (1..=batches.len() as u64).collect();
    assert_eq!(sequences, expected, "numbered in order, no gap, no repeat");
    let mut in_out: Vec<&str> = rows.iter().map(|(_, start)| start.as_str()).collect();
    in_out.sort();
    in_out.dedup();
    let spooled_windows: Vec<u64> = batches
        .iter()
        .flat_map(|b| b.series.iter().map(|s| s.window.start_unix_ms))
        .collect();
    let mut distinct = spooled_windows.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        spooled_windows.len(),
        "each window spooled once"
    );
    assert_eq!(
        distinct.len(),
        in_out.len(),
        "every window in --out reaches the spool"
    );
    assert!(
        batches.iter().all(|b| b.dropped_batches == 0),
        "nothing dropped"
    );
    assert!(
        names(&state.path()).iter().all(|n| !n.ends_with(".tmp")),
        "no partial state files: {:?}",
        names(&state.path())
    );
}
