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
    assert!(verdicts < summary && summary < charts && charts < methods);
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

/// Opens the report in Debian's Chromium (installed by `.ci/run`): the page
/// loads every chart image and its screenshot is not blank.
#[test]
fn html_report_renders_in_headless_chromium() {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "headless Chromium is needed for this test: apt-get install chromium (.ci/run does)",
        );
    let dir = tempfile::tempdir().unwrap();
    let w = written(dir.path());
    let profile = dir.path().join("chromium-profile");
    let url = format!("file://{}", w.html.display());
    let common = [
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
    let dom = std::process::Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=5000")
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let attr = |name: &str| -> Option<usize> {
        let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
        dom[at..].split('"').next()?.parse().ok()
    };
    assert_eq!(
        attr("data-charts-total"),
        Some(w.charts.len()),
        "the page's check did not run or saw other images"
    );
    assert_eq!(
        attr("data-charts-loaded"),
        Some(w.charts.len()),
        "every chart image decoded in the browser"
    );
    let shot = dir.path().join("shot.png");
    let status = std::process::Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,2400")
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
    let distinct: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        distinct.len() > 50,
        "screenshot nearly blank: {} colours",
        distinct.len()
    );
    // The simulated banner's yellow is on screen.
    assert!(
        img.pixels().any(|p| p.0 == [0xff, 0xf3, 0xcd]),
        "the simulated banner is not visible"
    );
}
