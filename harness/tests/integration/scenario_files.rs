//! The shipped scenario files: every one loads, has a script, and stays within the step cap.

use std::path::Path;

use preflight_harness::scenario::load_path;

#[test]
fn every_shipped_scenario_loads_with_a_script() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = load_path(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        scenarios.len() >= 10,
        "ship at least 10 scenarios, found {}",
        scenarios.len()
    );
    for s in &scenarios {
        assert!(s.script.is_some(), "{} has no script", s.name);
        assert!(s.max_steps <= 12, "{} exceeds the step cap", s.name);
        assert!(
            !s.task.to_lowercase().contains(&s.principal.tenant),
            "{}: the task must not name the principal's tenant",
            s.name
        );
    }
}

#[test]
fn a_folder_with_a_broken_file_reports_it_by_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "name: ok\nprincipal: {tenant: acme, user: u1}\ntask: hi\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "name: bad\nprincipal: {tenant: acme, user: u1}\ntask: hi\nexpect: {outcome: done}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "name: ok\nprincipal: {tenant: acme, user: u2}\ntask: hello\n",
    )
    .unwrap();
    let err = load_path(dir.path()).unwrap_err().to_string();
    assert!(err.contains("b.yaml:4:19: error: expect.outcome"), "{err}");
    assert!(err.contains("scenario name `ok` is also used by"), "{err}");
}
