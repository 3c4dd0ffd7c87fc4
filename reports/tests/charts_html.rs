//! Charts and the HTML report from a generated store: every chart is
//! written as PNG, SVG and CSV, is not blank, and the page shows every
//! chart in a real browser (headless Chromium).

use rand::{Rng, SeedableRng};
use std::path::Path;
use vantage_reports::{build_report, write_report, ReportOptions};
use vantage_store::StoredSeries;
use vantage_wire::{Labels, Metric, Series, Target, Window};

/// Two countries, two phases, three probes, eight windows; request
/// latency drops after the move and photo sync gets 2.5× faster.
fn store() -> (Vec<StoredSeries>, Vec<StoredSeries>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut sides = (Vec::new(), Vec::new());
    for (phase, dc, base_ms, kbps, t0) in [
        ("before", "beijing", 450u64, 4_000u64, 0u64),
        ("after", "singapore", 120, 10_000, 8),
    ] {
        for country in ["IN", "MY"] {
            for p in 0..3 {
                for w in 0..8u64 {
                    let mut labels = Labels::new();
                    labels.insert("country", country).unwrap();
                    labels.insert("phase", phase).unwrap();
                    labels.insert("simulated", "true").unwrap();
                    let window = Window {
                        start_unix_ms: (t0 + w) * 60_000,
                        end_unix_ms: (t0 + w + 1) * 60_000,
                    };
                    let target = Target {
                        name: dc.into(),
                        address: "127.0.0.1:1".into(),
                    };
                    let mut series = Vec::new();
                    for (metric, scale) in [(Metric::QuicColdRequest, 1), (Metric::QuicRequest, 2)]
                    {
                        let mut s = Series::new(target.clone(), metric, window);
                        for _ in 0..40 {
                            let v = base_ms * 1000 / scale + rng.gen_range(0..20_000);
                            s.histogram.record(v).unwrap();
                        }
                        s.sent = 40;
                        series.push(s);
                    }
                    let mut g = Series::new(target.clone(), Metric::PhotosyncGoodput, window);
                    g.histogram
                        .record(kbps + rng.gen_range(0..kbps / 10))
                        .unwrap();
                    g.sent = 1;
                    series.push(g);
                    for s in series {
                        let row = StoredSeries {
                            probe_id: format!("{country}-{p}"),
                            sequence: w,
                            campaign: "t".into(),
                            labels: labels.clone(),
                            series: s,
                        };
                        if phase == "before" {
                            sides.0.push(row);
                        } else {
                            sides.1.push(row);
                        }
                    }
                }
            }
        }
    }
    sides
}

fn written(dir: &Path) -> vantage_reports::WrittenReport {
    let (b, c) = store();
    let options = ReportOptions {
        baseline: "phase=before".into(),
        candidate: "phase=after".into(),
        resamples: 200,
        claims: vec![
            "IN quic_cold_request p50 decreases by >= 300ms"
                .parse()
                .unwrap(),
            "MY photosync_goodput p50 ratio between 2 and 3"
                .parse()
                .unwrap(),
        ],
        ..Default::default()
    };
    let report = build_report(&b, &c, &options);
    write_report(&report, &b, &c, dir).unwrap()
}

#[test]
fn every_chart_is_written_three_ways_and_is_not_blank() {
    let dir = tempfile::tempdir().unwrap();
    let w = written(dir.path());
    let stems: Vec<&str> = w.charts.iter().map(|c| c.stem.as_str()).collect();
    for want in [
        "spectrum_quic_cold_request",
        "cdf_quic_cold_request",
        "bars_quic_cold_request",
        "timeline_quic_cold_request",
        "spectrum_quic_request",
        "speedup_photosync_goodput",
        "matrix_quic_request",
    ] {
        assert!(stems.contains(&want), "{want} missing from {stems:?}");
    }
    let charts = dir.path().join("charts");
    for c in &w.charts {
        let png = image::open(charts.join(format!("{}.png", c.stem)))
            .unwrap_or_else(|e| panic!("{}: {e}", c.stem))
            .to_rgb8();
        // Not blank: many distinct colours, and text (dark pixels) drawn.
        let distinct: std::collections::HashSet<[u8; 3]> = png.pixels().map(|p| p.0).collect();
        assert!(
            distinct.len() > 20,
            "{}: {} colours",
            c.stem,
            distinct.len()
        );
        let dark = png.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count();
        assert!(dark > 500, "{}: {dark} dark pixels: no text?", c.stem);
        let svg = std::fs::read_to_string(charts.join(format!("{}.svg", c.stem))).unwrap();
        assert!(svg.starts_with("<svg"), "{}", c.stem);
        assert!(svg.contains("<text"), "{}: SVG has no text", c.stem);
        let csv = std::fs::read_to_string(charts.join(format!("{}.csv", c.stem))).unwrap();
        assert!(csv.lines().count() >= 3, "{}: {csv}", c.stem);
    }
    // The spectrum labels the tail where the data reaches it (960
    // samples a side: 99 %, not 99.9 %).
    let spectrum = std::fs::read_to_string(charts.join("spectrum_quic_request.svg")).unwrap();
    assert!(
        spectrum.contains("\n99%\n"),
        "no 99 % label on the spectrum"
    );
    assert!(
        !spectrum.contains("\n99.9%\n"),
        "a 99.9 % label beyond the data"
    );
    // The speed-up CSV holds the interval the report computed (about 2.5×).
    let speed = std::fs::read_to_string(charts.join("speedup_photosync_goodput.csv")).unwrap();
    let my: Vec<f64> = speed
        .lines()
        .find(|l| l.starts_with("MY,"))
        .unwrap()
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        my[1] <= my[0] && my[0] <= my[2] && (2.2..2.8).contains(&my[0]),
        "{my:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&charts)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn html_report_is_self_contained_with_verdicts_first() {
    let dir = tempfile::tempdir().unwrap();
    let w = written(dir.path());
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(html.contains("id=\"simulated\""), "simulated banner");
    let verdicts = html.find("id=\"verdicts\"").unwrap();
    let summary = html.find("id=\"summary\"").unwrap();
    let charts = html.find("id=\"charts\"").unwrap();
    let methods = html.find("id=\"methods\"").unwrap();
    let first = html.find("id=\"in-one-minute\"").unwrap();
    assert!(first < verdicts && verdicts < summary && summary < charts && charts < methods);
    assert_eq!(
        html.matches("src=\"data:image/png;base64,").count(),
        w.charts.len(),
        "every chart inlined"
    );
    for needle in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "src=\"//",
    ] {
        assert!(!html.contains(needle), "outside request: {needle}");
    }
    assert!(html.contains("IN quic_cold_request p50 decreases by &gt;= 300ms"));
    assert!(
        html.contains("badge holds"),
        "the IN claim holds on this data"
    );
    assert!(
        html.contains("(probe, window) series"),
        "methods explain the resampling"
    );
}

/// Debian's Chromium (installed by `.ci/run`); the test fails, never
/// skips, without it.
fn chromium() -> std::path::PathBuf {
    vantage_reports::print::find_chromium().expect(
        "headless Chromium is needed for this test: apt-get install chromium (.ci/run does)",
    )
}

const COMMON: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
];

/// Opens the report in Chromium as a person would, on a laptop (1280 px)
/// and on a phone (390 px): every chart image decodes, no table cell's
/// content overflows it, no number breaks from its unit (measured in the
/// DOM by the page's own check), the first summary sentence is on screen
/// before any scrolling, and the screenshot is not blank.
#[test]
fn html_report_renders_in_headless_chromium() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let w = written(dir.path());
    let url = format!("file://{}", w.html.display());
    for (width, height) in [(1280, 800), (390, 844)] {
        let profile = dir.path().join(format!("profile-{width}"));
        let size = format!("--window-size={width},{height}");
        let dom = std::process::Command::new(&chromium)
            .args(COMMON)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&size)
            .arg("--virtual-time-budget=5000")
            .arg("--dump-dom")
            .arg(&url)
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        let attr = |name: &str| -> Option<String> {
            let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
            dom[at..].split('"').next().map(str::to_string)
        };
        let n = w.charts.len().to_string();
        assert_eq!(
            attr("data-charts-total"),
            Some(n.clone()),
            "{width} px: the page's check did not run"
        );
        assert_eq!(
            attr("data-charts-loaded"),
            Some(n),
            "{width} px: every chart image decoded"
        );
        assert_eq!(
            attr("data-cells-overflowing").as_deref(),
            Some("0"),
            "{width} px: a cell's content overflows it"
        );
        assert_eq!(
            attr("data-numbers-broken").as_deref(),
            Some("0"),
            "{width} px: a number breaks from its unit"
        );
        assert_eq!(
            attr("data-summary-above-fold").as_deref(),
            Some("yes"),
            "{width} px: the first summary sentence is below the fold"
        );
        let shot = dir.path().join(format!("shot-{width}.png"));
        let status = std::process::Command::new(&chromium)
            .args(COMMON)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&size)
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let img = image::open(&shot).unwrap().to_rgb8();
        assert_eq!(img.width(), width, "the screenshot is the window's width");
        let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert!(
            distinct.len() > 50,
            "{width} px: screenshot nearly blank: {} colours",
            distinct.len()
        );
        // The simulated banner's yellow is on screen.
        assert!(
            img.pixels().any(|p| p.0 == [0xff, 0xf3, 0xcd]),
            "{width} px: the simulated banner is not visible"
        );
    }
    // The check can fail: the same page with numbers free to wrap, at a
    // phone's width, has broken numbers.
    let html = std::fs::read_to_string(&w.html).unwrap();
    let loose = html
        .replace("white-space:nowrap", "white-space:normal")
        .replace("&nbsp;", " ");
    let loose_path = dir.path().join("loose.html");
    std::fs::write(&loose_path, loose).unwrap();
    let dom = std::process::Command::new(&chromium)
        .args(COMMON)
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile-loose").display()
        ))
        .args([
            "--window-size=390,844",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", loose_path.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        !dom.contains("data-numbers-broken=\"0\"") && dom.contains("data-numbers-broken=\""),
        "the layout check finds nothing even where numbers wrap"
    );
}

/// `report.pdf` from Chromium's print: pages, searchable text with the
/// summary sentence and every country unfolded, and the charts in it,
/// read back with poppler-utils (`pdfinfo`, `pdftotext`, `pdfimages`,
/// installed by `.ci/run`); and `top.png`, the top of the page.
#[test]
fn the_report_prints_to_a_searchable_pdf_with_its_charts() {
    chromium();
    let dir = tempfile::tempdir().unwrap();
    let w = written(dir.path());
    let printed = vantage_reports::print::print_report(&w.html);
    let vantage_reports::print::Printed::Written { pdf, top } = printed else {
        panic!("not printed: {printed:?}");
    };
    let tool = |name: &str, args: &[&str]| -> String {
        let out = std::process::Command::new(name)
            .args(args)
            .arg(&pdf)
            .args(if name == "pdftotext" {
                &["-"][..]
            } else {
                &[][..]
            })
            .output()
            .unwrap_or_else(|e| {
                panic!("{name} is needed: apt-get install poppler-utils (.ci/run does): {e}")
            });
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let info = tool("pdfinfo", &[]);
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(pages >= 2, "{info}");
    let text = tool("pdftotext", &[]);
    assert!(text.contains("In one minute"), "{text}");
    assert!(text.contains("India: opening the app"), "{text}");
    assert!(text.contains("SIMULATED DATA"), "{text}");
    // Both countries' folded tables are printed open.
    for country in ["India", "Malaysia"] {
        assert!(
            text.contains(&format!("{country} (")),
            "{country} folded away: {text}"
        );
    }
    assert!(text.matches("quic_handshake").count() + text.matches("quic_request").count() >= 2);
    let images = tool("pdfimages", &["-list"]);
    let listed = images
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        listed >= w.charts.len(),
        "{listed} images for {} charts:\n{images}",
        w.charts.len()
    );
    let shot = image::open(&top).unwrap().to_rgb8();
    assert_eq!(
        (shot.width(), shot.height()),
        vantage_reports::print::TOP_SIZE
    );
}
