//! `preflight policy hash | lint | test` end to end: output, exit codes (0 clean, 1 findings,
//! 2 malformed input, 3 database unreachable) and no secrets in messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn preflight() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.env_remove("PREFLIGHT_DB").stdin(Stdio::null());
    cmd
}

fn shop(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/shop")
        .join(file)
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run preflight");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write a temp file");
    path
}

#[test]
fn hash_prints_64_hex_digits_and_ignores_comments() {
    let (code, out, err) = run(preflight()
        .args(["policy", "hash"])
        .arg(shop("policy.yaml")));
    assert_eq!(code, Some(0), "{err}");
    let hash = out.trim();
    assert_eq!(hash.len(), 64, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shop("policy.yaml")).unwrap();
    let copy = temp_file(
        &dir,
        "copy.yaml",
        &format!("# another comment\n{text}\n# the end\n"),
    );
    let (_, out2, _) = run(preflight().args(["policy", "hash"]).arg(&copy));
    assert_eq!(out2.trim(), hash);
    let (_, canonical, _) = run(preflight()
        .args(["policy", "hash", "--canonical"])
        .arg(&copy));
    assert!(
        canonical.lines().nth(1).is_some_and(|l| l.starts_with('{')),
        "{canonical}"
    );
}

#[test]
fn lint_of_the_shipped_policy_is_clean_and_says_it_was_syntax_level() {
    let (code, out, err) = run(preflight()
        .args(["policy", "lint"])
        .arg(shop("policy.yaml")));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("no findings"), "{out}");
    assert!(out.contains("the catalog was not consulted"), "{out}");
}

#[test]
fn lint_findings_exit_1_and_render_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shop("policy.yaml"))
        .unwrap()
        .replacen("extends: prod", "extends: dev", 1);
    let p = temp_file(&dir, "dev.yaml", &text);
    let (code, out, err) = run(preflight()
        .args(["policy", "lint", "--format", "json"])
        .arg(&p));
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("lint JSON");
    assert_eq!(v["catalog_checked"], false);
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert!(rules.contains(&"lint.prod_preset"), "{out}");
    let (code, out, _) = run(preflight()
        .args(["policy", "lint", "--format", "text"])
        .arg(&p));
    assert_eq!(code, Some(1));
    assert!(
        out.contains("error[lint.prod_preset]") && out.contains("(OPS-1)"),
        "{out}"
    );
}

#[test]
fn a_warning_fails_only_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shop("policy.yaml"))
        .unwrap()
        .replacen("  sla: 30m ", "  # sla: 30m ", 1);
    let p = temp_file(&dir, "sla.yaml", &text);
    let (code, out, _) = run(preflight().args(["policy", "lint"]).arg(&p));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("lint.approval_sla"), "{out}");
    let (code, _, _) = run(preflight().args(["policy", "lint", "--strict"]).arg(&p));
    assert_eq!(code, Some(1));
}

#[test]
fn a_malformed_policy_exits_2_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = temp_file(
        &dir,
        "bad.yaml",
        "version: 1\nname: x\nextends: prod\nmodels:\n  orders:\n    tenant_colum: tenant_id\n    tools: [db_qery]\n",
    );
    for sub in ["hash", "lint"] {
        let (code, out, err) = run(preflight().args(["policy", sub]).arg(&p));
        assert_eq!(code, Some(2), "{sub}: {out}{err}");
        assert!(
            err.contains("bad.yaml:6:5: error: models.orders.tenant_colum: unknown key"),
            "{err}"
        );
        assert!(err.contains("bad.yaml:7:13: error: models.orders.tools: unknown tool `db_qery`; did you mean `db_query`?"), "{err}");
        assert!(err.contains("3 problems"), "{err}");
    }
    let (code, _, err) = run(preflight().args(["policy", "hash", "/nonexistent/p.yaml"]));
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read the policy file"), "{err}");
}

#[test]
fn an_unreachable_catalog_exits_3_without_the_password() {
    let (code, _, err) = run(preflight()
        .args([
            "policy",
            "lint",
            "--db",
            "postgres://agent:hunter2@127.0.0.1:1/shop",
        ])
        .arg(shop("policy.yaml")));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_malformed_cases_file_exits_2_before_any_database_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cases = temp_file(
        &dir,
        "cases.yaml",
        "version: 1\ncases:\n  - name: x\n    tool: db_query\n",
    );
    let (code, _, err) = run(preflight()
        .args(["policy", "test"])
        .arg(&cases)
        .arg("--policy")
        .arg(shop("policy.yaml"))
        .args(["--db", "postgres://nobody@127.0.0.1:1/none"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cases.yaml:3:5: error: cases[0]: missing `principal`"),
        "{err}"
    );
}

#[test]
fn cases_pass_exit_0_and_a_wrong_expectation_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let good = temp_file(
        &dir,
        "good.yaml",
        "version: 1
cases:
  - name: own customer
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 1}
    expect: allow
  - name: other tenant's customer
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 9}
    expect: {deny: not_found}
",
    );
    let (code, out, err) = run(preflight()
        .args(["policy", "test"])
        .arg(&good)
        .arg("--policy")
        .arg(shop("policy.yaml"))
        .args(["--db", "local", "--rows", "0", "--fixtures"])
        .arg(shop("")));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    assert!(out.contains("not exercised: model models.orders"), "{out}");

    let wrong = temp_file(
        &dir,
        "wrong.yaml",
        "version: 1
cases:
  - name: claims another tenant's customer is visible
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 9}
    expect: allow
",
    );
    let (code, out, err) = run(preflight()
        .args(["policy", "test", "--format", "json"])
        .arg(&wrong)
        .arg("--policy")
        .arg(shop("policy.yaml"))
        .args(["--db", "local", "--rows", "0", "--fixtures"])
        .arg(shop("")));
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("test JSON");
    assert_eq!(v["failed"], 1);
    assert_eq!(v["outcomes"][0]["actual"]["code"], "not_found");
}
