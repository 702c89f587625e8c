//! `review.html` in a real browser (headless Chromium): it loads without console errors under
//! its own Content-Security-Policy, and a screenshot renders.
//!
//! Chromium is required: without it the test fails with how to install it, unless
//! `PREFLIGHT_SKIP_BROWSER=1` (which CI, `CI=true`, does not honour).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::audit::canonical::format_time;
use preflight_enforcer::audit::{
    arguments_sha256, AuditRecord, Clock, Decision, FsyncPolicy, JsonlSink,
};
use preflight_probes::db::testing;
use preflight_review::source::{review_jsonl, Since};
use preflight_review::{render, Inputs, SuiteResult};
use serde_json::json;

const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

fn browser() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("PREFLIGHT_CHROMIUM") {
        return Some(PathBuf::from(explicit));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = CANDIDATES.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = format!("headless Chromium ({CANDIDATES:?} on PATH, or PREFLIGHT_CHROMIUM) is needed; install it with `apt-get install -y chromium`");
        if std::env::var("PREFLIGHT_SKIP_BROWSER").is_ok_and(|v| v == "1") {
            testing::prerequisite_missing("review_html_opens_in_chromium", &why);
            return None;
        }
        panic!("{why}, or set PREFLIGHT_SKIP_BROWSER=1 to skip (not under CI=true)");
    }
    found
}

fn run(bin: &Path, args: &[String], work: &Path) -> (String, String) {
    let mut child = Command::new(bin)
        .args([
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("profile").display()
        ))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let e = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not finish within 120 s", bin.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (o.join().unwrap(), e.join().unwrap())
}

/// A small log over 20 days with denials, writes and one slow tool, written by the real sink
/// with a stepping clock.
fn small_log(path: &Path) {
    let start = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
        .unwrap()
        .timestamp_micros();
    let now = Arc::new(AtomicI64::new(start));
    let n2 = now.clone();
    let clock: Clock = Arc::new(move || {
        format_time(chrono::DateTime::from_timestamp_micros(n2.load(Ordering::SeqCst)).unwrap())
    });
    let sink = JsonlSink::open_with_clock(path, "test", FsyncPolicy::Never, Some(clock)).unwrap();
    for i in 0..600i64 {
        now.store(start + i * 2_880_000_000, Ordering::SeqCst);
        let (tool, args, decision, code, ms, reason) = match i % 6 {
            0 => (
                "db_query",
                json!({"model": "customers", "where": [{"field": "ssn", "op": "eq", "value": "x"}]}),
                Decision::Deny,
                Some("field_denied"),
                1.5,
                None,
            ),
            1 => (
                "db_update",
                json!({"model": "support_tickets", "id": i, "data": {"status": "closed"}}),
                Decision::Allow,
                None,
                4.0,
                Some(if i % 4 == 1 {
                    "n/a".to_string()
                } else {
                    format!("Closing ticket {i}: solved")
                }),
            ),
            2 => (
                "db_describe_schema",
                json!({}),
                Decision::Allow,
                None,
                60.0 + (i % 7) as f64,
                None,
            ),
            3 => (
                "db_query",
                json!({"model": "order_items"}),
                Decision::Deny,
                Some("model_not_allowed"),
                0.8,
                None,
            ),
            _ => (
                "db_get",
                json!({"model": "orders", "id": i}),
                Decision::Allow,
                None,
                1.0 + (i % 3) as f64,
                None,
            ),
        };
        let r = AuditRecord {
            trace_id: format!("t{i}"),
            tenant_id: "acme".into(),
            user_id: format!("agent-{:02}", i % 9),
            roles: vec!["support".into()],
            tool: tool.into(),
            arguments_sha256: arguments_sha256(&args),
            arguments: args,
            decision,
            error_code: code.map(str::to_string),
            rows_returned: None,
            rows_affected: None,
            duration_ms: ms,
            reason,
            approval_id: None,
            approver: None,
            policy_hash: "a".repeat(64),
            subjects: Vec::new(),
        };
        sink.append_blocking(&r).unwrap();
    }
}

#[test]
fn review_html_opens_in_chromium_without_console_errors() {
    let Some(bin) = browser() else { return };
    let dir = tempfile::Builder::new()
        .prefix("review-browser-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let log = dir.path().join("audit.jsonl");
    small_log(&log);
    let inputs = Inputs {
        policy: None,
        known: Vec::new(),
        suite: SuiteResult::NotRun("not part of this test".into()),
    };
    let review = review_jsonl(&log, &Since::Days(90), "90d", &inputs).unwrap();
    let s = review.sections.as_ref().expect("sections");
    assert_eq!(
        s.charts.days.len(),
        91,
        "the window is 90 days before the last record"
    );
    render::write_all(&review, dir.path()).unwrap();
    let html = dir.path().join("review.html");
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text.matches("<svg").count(), 3, "three charts");
    assert!(!text.contains("<script"), "no script in the page");

    let (dom, stderr) = run(
        &bin,
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", html.display()),
        ],
        dir.path(),
    );
    assert!(
        dom.contains("QRT-2: most common denials"),
        "the page did not load"
    );
    assert!(dom.contains("denials per day by code"));
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Content Security Policy"))
        .collect();
    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("review-html-screenshot.png");
    let _ = std::fs::remove_file(&png);
    run(
        &bin,
        &[
            "--window-size=1280,1600".into(),
            format!("--screenshot={}", png.display()),
            format!("file://{}", html.display()),
        ],
        dir.path(),
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot: {e}"));
    // A blank page compresses to a few kilobytes; the rendered review with charts is larger.
    assert!(
        bytes.len() > 40_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());
}
