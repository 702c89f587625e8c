//! `preflight bench gateway` end to end with tiny sizes: one run measures the gateway without
//! and with the Postgres audit sink and puts both in the summary and its `--json`; the
//! `--transport` comparison does the same for its transports; bad flags exit 2. No timing is
//! asserted: this is a benchmark, not a timed test.

fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    super::bench_audit::run_bench("gateway", args)
}

fn metrics(json: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(json).expect("summary JSON written");
    let summary: serde_json::Value = serde_json::from_str(&text).expect("summary is JSON");
    assert_eq!(summary["bench"], "gateway", "{summary:#}");
    summary["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            assert!(l["floor"].as_f64().is_some(), "{l:#}");
            l["metric"].as_str().expect("metric").to_string()
        })
        .collect()
}

#[test]
fn audit_off_and_on_side_by_side_in_one_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("gateway.json");
    let (code, stdout, stderr) = bench(&[
        "--db",
        "local",
        "--rows",
        "2000",
        "--iterations",
        "10",
        "--warmup",
        "2",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    assert_eq!(
        metrics(&json),
        [
            "db_get p50, audit none",
            "db_query p50, audit none",
            "db_get p50, audit postgres",
            "db_query p50, audit postgres",
        ]
    );
    assert!(stdout.contains("summary (gateway bench)"), "{stdout}");

    let (code, stdout, stderr) = bench(&["--db", "local", "--audit", "sometimes"]);
    assert_eq!(code, Some(2), "{stderr}\n{stdout}");
    assert!(
        stderr.contains("expected none, postgres or both"),
        "{stderr}"
    );
}

#[test]
fn transport_comparison_has_summary_lines_and_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("transport.json");
    let (code, stdout, stderr) = bench(&[
        "--db",
        "local",
        "--rows",
        "2000",
        "--iterations",
        "10",
        "--warmup",
        "2",
        "--transport",
        "in-process,mcp-stdio",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    assert_eq!(
        metrics(&json),
        ["db_get p50 via mcp-stdio", "db_query p50 via mcp-stdio"]
    );
    assert!(stdout.contains("summary (gateway bench)"), "{stdout}");
}
