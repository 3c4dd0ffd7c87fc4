//! `report.pdf` and `top.png`, made from `report.html` by headless
//! Chromium when it is installed. The report never depends on it: without
//! Chromium, [`print_report`] says how to get it and the HTML stands
//! alone. Each Chromium run is bounded in time and gets a profile
//! directory of its own, removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);
/// The width and height of `top.png`: a laptop's first screen.
pub const TOP_SIZE: (u32, u32) = (1280, 800);

/// What printing the report came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Printed {
    /// Both files were written.
    Written {
        /// `report.pdf`.
        pdf: PathBuf,
        /// `top.png`: the top of the page at [`TOP_SIZE`].
        top: PathBuf,
    },
    /// No Chromium on this machine; the note says how to get one.
    NoChromium(String),
    /// Chromium ran and failed; what it said.
    Failed(String),
}

/// The Chromium to use: `$VANTAGE_CHROMIUM`, else the first of
/// `chromium`, `chromium-browser`, `google-chrome` that runs.
pub fn find_chromium() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("VANTAGE_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(PathBuf::from))
        .collect();
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Writes `report.pdf` (every country unfolded) and `top.png` beside
/// `html`, with headless Chromium if there is one.
pub fn print_report(html: &Path) -> Printed {
    let Some(chromium) = find_chromium() else {
        return Printed::NoChromium(
            "no Chromium found, so no report.pdf: install it (Debian/Ubuntu: apt-get install chromium) \
or set VANTAGE_CHROMIUM to its path; report.html is complete without it"
                .into(),
        );
    };
    let dir = html.parent().unwrap_or(Path::new("."));
    let (pdf, top) = (dir.join("report.pdf"), dir.join("top.png"));
    let Ok(absolute) = std::fs::canonicalize(html) else {
        return Printed::Failed(format!("{} cannot be read", html.display()));
    };
    let url = format!("file://{}", absolute.display());
    let runs: [(Vec<String>, &Path); 2] = [
        (
            vec![
                format!("--print-to-pdf={}", pdf.display()),
                "--no-pdf-header-footer".into(),
                format!("{url}#print"),
            ],
            &pdf,
        ),
        (
            vec![
                format!("--window-size={},{}", TOP_SIZE.0, TOP_SIZE.1),
                "--hide-scrollbars".into(),
                format!("--screenshot={}", top.display()),
                url,
            ],
            &top,
        ),
    ];
    for (args, out) in runs {
        if let Err(why) = run_chromium(&chromium, &args, out) {
            return Printed::Failed(why);
        }
    }
    Printed::Written { pdf, top }
}

/// One headless run with a profile of its own, killed past
/// [`CHROMIUM_TIMEOUT`]; `out` must exist and not be empty after it.
fn run_chromium(chromium: &Path, args: &[String], out: &Path) -> Result<(), String> {
    let profile = std::env::temp_dir().join(format!(
        "vantage-chromium-{}-{}",
        std::process::id(),
        out.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    let _ = std::fs::remove_file(out);
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let result = match child {
        Err(e) => Err(format!("{} did not start: {e}", chromium.display())),
        Ok(mut child) => {
            let started = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break Ok(()),
                    Ok(None) if started.elapsed() > CHROMIUM_TIMEOUT => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(format!(
                            "Chromium took over {} s and was stopped",
                            CHROMIUM_TIMEOUT.as_secs()
                        ));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => break Err(e.to_string()),
                }
            }
        }
    };
    let _ = std::fs::remove_dir_all(&profile);
    result?;
    match std::fs::metadata(out) {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(format!("Chromium wrote no {}", out.display())),
    }
}
