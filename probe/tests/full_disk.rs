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
