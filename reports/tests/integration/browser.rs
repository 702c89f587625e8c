//! `report.html` in a real browser (headless Chromium): the page loads without console errors,
//! its script runs under the page's own Content-Security-Policy, the filters show exactly the
//! findings they should (checked by the page's `?selftest` mode against counts computed here),
//! the URL hash restores a filter, and a screenshot renders.
//!
//! Chromium is required: without it these tests fail with a message saying how to install it,
//! unless `PREFLIGHT_SKIP_BROWSER=1` (which CI, `CI=true`, does not honour).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_reports::testutil::sample_report;
use preflight_reports::{write_all, Report, Verdict};

const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The browser binary, or `None` when the tests may be skipped (`PREFLIGHT_SKIP_BROWSER=1`,
/// never under `CI=true`).
fn browser() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("PREFLIGHT_CHROMIUM") {
        return Some(PathBuf::from(explicit));
    }
    if let Some(found) = CANDIDATES.iter().find_map(|n| find_on_path(n)) {
        return Some(found);
    }
    if std::env::var("PREFLIGHT_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        // CI never skips: a green CI run means the report was rendered in a real browser.
        // (The same rule as `preflight_probes::db::testing::prerequisite_missing`, which this
        // crate cannot depend on.)
        let ci = std::env::var("CI").is_ok_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            !(v.is_empty() || v == "0" || v == "false")
        });
        assert!(
            !ci,
            "the browser tests need headless Chromium ({CANDIDATES:?} on PATH, or PREFLIGHT_CHROMIUM); \
             PREFLIGHT_SKIP_BROWSER=1 does not apply under CI=true"
        );
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n******** SKIPPED the browser test: no chromium on PATH and PREFLIGHT_SKIP_BROWSER=1 (under CI=true this test fails instead) ********\n"
        );
        return None;
    }
    panic!(
        "headless Chromium is needed for the report.html tests but none of {CANDIDATES:?} is on PATH: \
         install it with `apt-get install -y chromium` (Debian), or set PREFLIGHT_SKIP_BROWSER=1 to skip"
    );
}

struct Output {
    stdout: String,
    stderr: String,
}

/// Runs the browser with a private profile and a deadline.
fn run(bin: &Path, args: &[String], work: &Path) -> Output {
    let profile = work.join("profile");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless=new",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-sync",
        "--mute-audio",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_reader =
        std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait().unwrap() {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not finish within 120 s", bin.display());
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Output {
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// A fresh directory under target/ holding the six report files for `report`.
fn written(report: &Report, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    write_all(report, dir.path()).unwrap();
    let html = dir.path().join("report.html");
    (dir, html)
}

fn url(path: &Path, suffix: &str) -> String {
    format!("file://{}{suffix}", path.display())
}

/// Console messages (logs, uncaught exceptions, CSP violations) that came from `page`.
fn console_messages<'a>(stderr: &'a str, page: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") && l.contains(page))
        .collect()
}

fn selftest_lines(dom: &str) -> Vec<String> {
    let start = dom.find("<pre id=\"selftest-output\">").unwrap_or_else(|| {
        panic!(
            "the page's selftest did not run; DOM tail:\n{}",
            &dom[dom.len().saturating_sub(2000)..]
        )
    });
    let body = &dom[start + "<pre id=\"selftest-output\">".len()..];
    let end = body.find("</pre>").unwrap();
    body[..end].lines().map(str::to_string).collect()
}

fn expected_visible(report: &Report, family: &str, verdict: &str) -> usize {
    report
        .findings
        .iter()
        .filter(|f| family == "all" || f.family == family)
        .filter(|f| match verdict {
            "all" => true,
            "non_pass" => f.verdict != Verdict::Pass,
            v => f.verdict.as_str() == v,
        })
        .count()
}

#[test]
fn filters_work_and_the_console_stays_clean() {
    let Some(bin) = browser() else { return };
    let report = sample_report();
    let (dir, html) = written(&report, "browser-filters-");
    let out = run(
        &bin,
        &[
            "--virtual-time-budget=10000".into(),
            "--dump-dom".into(),
            url(&html, "?selftest&q=hygiene.rls_forced"),
        ],
        dir.path(),
    );
    let dom = &out.stdout;
    assert!(
        dom.contains("data-selftest=\"done\""),
        "selftest did not finish"
    );

    let console = console_messages(&out.stderr, "report.html");
    assert!(
        console.is_empty(),
        "console messages from the page:\n{}",
        console.join("\n")
    );

    let lines = selftest_lines(dom);
    let families: Vec<String> = report
        .summary()
        .families
        .into_iter()
        .map(|f| f.family)
        .collect();
    let verdicts = ["all", "non_pass", "fail", "error", "not_verified", "pass"];
    let mut checked = 0;
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[0] != "filter" {
            continue;
        }
        let (family, verdict, visible) = (parts[1], parts[2], parts[3].parse::<usize>().unwrap());
        let expected = expected_visible(&report, family, verdict);
        assert_eq!(
            visible, expected,
            "{family} × {verdict}: {visible} rendered, {expected} expected"
        );
        assert_eq!(
            parts[4],
            format!("label={expected}"),
            "the count label disagrees: {line}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        (families.len() + 1) * verdicts.len(),
        "not every combination ran:\n{}",
        lines.join("\n")
    );
    assert!(lines.contains(&"search 1".to_string()), "{lines:?}");
    assert!(
        lines.contains(&format!(
            "total-button pass {}",
            report.count(Verdict::Pass)
        )),
        "{lines:?}"
    );
    let first = &families[0];
    assert!(
        lines.contains(&format!(
            "family-link {first} {}",
            expected_visible(&report, first, "all")
        )),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!("expanded {}", report.findings.len())),
        "{lines:?}"
    );
    assert!(lines.contains(&"collapsed 0".to_string()), "{lines:?}");

    // The hostile title stayed text: the only script element is the page's own.
    assert_eq!(
        dom.matches("<script").count(),
        1,
        "an injected script element exists"
    );
    assert!(!dom.contains("<img"), "an injected element exists");
}

#[test]
fn the_url_hash_restores_a_filter() {
    let Some(bin) = browser() else { return };
    let report = sample_report();
    let (dir, html) = written(&report, "browser-hash-");
    let out = run(
        &bin,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url(&html, "#family=pii&verdict=fail"),
        ],
        dir.path(),
    );
    // Count list items the script left visible (no `hidden` attribute).
    let visible: Vec<&str> = out
        .stdout
        .split("<li class=\"finding ")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .filter(|attrs| !attrs.contains("hidden"))
        .collect();
    assert_eq!(
        visible.len(),
        expected_visible(&report, "pii", "fail"),
        "{visible:?}"
    );
    assert!(visible[0].contains("data-family=\"pii\" data-verdict=\"fail\""));
    let label = format!(
        "{} of {} findings</span>",
        visible.len(),
        report.findings.len()
    );
    assert!(out.stdout.contains(&label), "count label missing: {label}");
}

#[test]
fn an_empty_report_loads_cleanly() {
    let Some(bin) = browser() else { return };
    let mut report = sample_report();
    report.findings.clear();
    let (dir, html) = written(&report, "browser-empty-");
    let out = run(
        &bin,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            url(&html, "?selftest"),
        ],
        dir.path(),
    );
    let console = console_messages(&out.stderr, "report.html");
    assert!(
        console.is_empty(),
        "console messages from the page:\n{}",
        console.join("\n")
    );
    let lines = selftest_lines(&out.stdout);
    assert!(
        lines.iter().any(|l| l == "filter all all 0 label=0"),
        "{lines:?}"
    );
    assert!(out.stdout.contains("No probes ran"));
    // "No findings match" is for filters; with nothing to filter it stays hidden.
    assert!(out
        .stdout
        .contains("<p id=\"no-match\" class=\"empty\" hidden=\"\">"));
}

#[test]
fn console_errors_are_detected() {
    // Positive control for the check above: a page that throws must be caught.
    let Some(bin) = browser() else { return };
    let dir = tempfile::Builder::new()
        .prefix("browser-control-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><p>x</p><script>missingFunction();</script>",
    )
    .unwrap();
    let out = run(
        &bin,
        &[
            "--virtual-time-budget=2000".into(),
            "--dump-dom".into(),
            url(&page, ""),
        ],
        dir.path(),
    );
    let console = console_messages(&out.stderr, "broken.html");
    assert!(
        console.iter().any(|l| l.contains("missingFunction")),
        "the uncaught error was not seen in:\n{}",
        out.stderr
    );
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn screenshot_renders() {
    let Some(bin) = browser() else { return };
    let report = sample_report();
    let (dir, html) = written(&report, "browser-shot-");
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-html-screenshot.png");
    let _ = std::fs::remove_file(&png);
    run(
        &bin,
        &[
            "--window-size=1280,1600".into(),
            "--virtual-time-budget=5000".into(),
            format!("--screenshot={}", png.display()),
            url(&html, ""),
        ],
        dir.path(),
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(png_size(&bytes), (1280, 1600));
    // A blank or unstyled page compresses to a few kilobytes; the styled report is far larger.
    assert!(
        bytes.len() > 60_000,
        "screenshot is only {} bytes: the page did not render",
        bytes.len()
    );
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());
}
