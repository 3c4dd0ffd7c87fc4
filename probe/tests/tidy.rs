//! Rules about the probe's source that a reviewer would otherwise have to
//! remember, checked by reading it (as rust-analyzer's tidy tests do).

use std::path::{Path, PathBuf};

/// The driver layer: the only code that may read a clock or sleep. The
/// rest of the probe takes `now` as an argument, so it is tested with
/// made-up instants.
const DRIVERS: [&str; 3] = ["src/run/", "src/measure/", "src/main.rs"];

/// What reading a clock or sleeping looks like in Rust source.
const CLOCK_READS: [&str; 5] = [
    "Instant::now(",
    "SystemTime::now(",
    "sleep(",
    "sleep_until(",
    "time::interval(",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part of a file that is not its unit tests: tests may use a real clock.
fn non_test_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

#[test]
fn clock_reads_and_sleeps_live_only_in_the_driver_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 10, "found the sources: {files:?}");
    let mut offenders = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        if DRIVERS.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read source");
        for (n, line) in non_test_code(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(read) = CLOCK_READS.iter().find(|r| code.contains(*r)) {
                offenders.push(format!("{rel}:{}: {read} in `{}`", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "clock reads and sleeps belong in {DRIVERS:?}; pass `now` in instead:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_rule_sees_a_clock_read() {
    // The scan itself must be able to fail.
    let code = "fn f() { let t = std::time::Instant::now(); }\n#[cfg(test)]\nmod tests { fn g() { std::thread::sleep(d); } }";
    let body = non_test_code(code);
    assert!(CLOCK_READS.iter().any(|r| body.contains(r)));
    assert!(!body.contains("thread::sleep"), "unit tests are left out");
}
