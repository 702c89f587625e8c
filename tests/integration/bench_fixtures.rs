//! `preflight bench fixtures` end to end with a tiny load: it loads into a fresh local database,
//! exits 0 and prints the goal/figure summary and writes it with `--json`; bad flags exit 2. No
//! timing is asserted: this is a benchmark, not a timed test.

fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    super::bench_audit::run_bench("fixtures", args)
}

#[test]
fn tiny_load_prints_goal_and_figure_and_writes_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("fixtures.json");
    let (code, stdout, stderr) = bench(&[
        "--db",
        "local",
        "--rows",
        "50",
        "--runs",
        "1",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    // 50 bulk orders for each of the 3 tenants, plus the 90 seed orders.
    assert!(stdout.contains("240 orders in all"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("fixture load, 50 orders/tenant"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    assert!(line.contains("<= 60.0 s"), "{line}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("--json file written"))
            .expect("the --json file is JSON");
    assert_eq!(summary["bench"], "fixtures");
    let l = &summary["lines"][0];
    let figure = l["figure"].as_f64().expect("a figure");
    assert!(figure > 0.0, "{l}");
    assert_eq!(l["goal"], 60.0);
    assert_eq!(l["met"].as_bool().unwrap(), figure <= 60.0, "{l}");
}

#[test]
fn bad_flags_exit_2() {
    let (code, _, stderr) = bench(&["--runs", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--runs"), "{stderr}");
    let (code, _, stderr) = bench(&["--db", "postgres://bench:hunter2@db.invalid/shop"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("throwaway"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
