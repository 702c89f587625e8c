//! The `sql` probe family against the SQL test layers of tests/targets/sql/ (MCP stdio, real
//! local Postgres): each guard fails on exactly the escapes its design lets through, named
//! here one by one; the sound layer passes everything or is honestly `not_verified`; a layer
//! driven wrongly (every call refused, the control too) gets no pass at all; and the built-in
//! layer, which has no SQL tool, gets no `sql` finding and a report that says why.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::targets_cli::{repo, venv_bin, Run, BIN};

/// `preflight probe --only sql` on a fresh local database against `profile`.
fn sql_probe(profile: &str) -> Option<Run> {
    sql_probe_with(profile, "sql", &[])
}

/// `preflight probe --only FAMILIES` against `profile`, with `env` added.
fn sql_probe_with(profile: &str, families: &str, env: &[(&str, &str)]) -> Option<Run> {
    let bin = venv_bin()?;
    let out_dir = tempfile::tempdir().expect("temp dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--only", families, "--target"])
        .arg(repo().join(profile))
        .arg("--out")
        .arg(out_dir.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run preflight");
    let text = std::fs::read_to_string(out_dir.path().join("report.json")).unwrap_or_else(|e| {
        panic!(
            "no report.json ({e})\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    Some(Run {
        out,
        findings,
        report,
    })
}

/// The corpus entry ids (`write.cte_delete`) of the escape findings with `verdict`.
fn escapes(run: &Run, verdict: &str) -> BTreeSet<String> {
    run.findings
        .iter()
        .filter(|f| f["verdict"] == verdict)
        .filter(|f| {
            let code = f["code"].as_str().unwrap_or_default();
            code.ends_with("_escape") || code == "sql.server_access"
        })
        .map(|f| {
            let title = f["title"].as_str().unwrap_or_default();
            title.split(':').next().unwrap_or_default().to_string()
        })
        .collect()
}

/// `code: title` of the non-escape findings with `verdict`.
fn checks(run: &Run, verdict: &str) -> BTreeSet<String> {
    run.findings
        .iter()
        .filter(|f| f["verdict"] == verdict)
        .filter(|f| {
            let code = f["code"].as_str().unwrap_or_default();
            !(code.ends_with("_escape") || code == "sql.server_access")
        })
        .map(|f| {
            format!(
                "{}: {}",
                f["code"].as_str().unwrap_or_default(),
                f["title"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// The finding whose title starts with `prefix` (an escape's `id:`).
fn titled<'a>(run: &'a Run, prefix: &str) -> &'a serde_json::Value {
    run.findings
        .iter()
        .find(|f| f["title"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no finding titled {prefix}…\n{}", run.log()))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Every finding is a verdict of the family, and nothing is an `error`.
fn sane(run: &Run) {
    assert!(
        run.findings.len() > 60,
        "only {} findings\n{}",
        run.findings.len(),
        run.log()
    );
    assert!(run.findings.iter().all(|f| f["family"] == "sql"));
    let errors: Vec<String> = run
        .findings
        .iter()
        .filter(|f| f["verdict"] == "error")
        .map(|f| format!("{} {}: {}", f["code"], f["title"], f["message"]))
        .collect();
    assert!(
        errors.is_empty(),
        "errors:\n{}\n{}",
        errors.join("\n"),
        run.log()
    );
}

/// The escapes that get past a guard that reads only the first word, with the schema owner's
/// login behind it: a leading comment, writing CTEs, SELECT INTO, EXPLAIN ANALYZE, DO, PREPARE,
/// several statements, COMMIT first, functions that write (nextval, setval, advisory locks,
/// large objects), and cancelling the owner's other sessions.
const KEYWORD_GUARD_ESCAPES: &[&str] = &[
    "write.update",
    "write.delete",
    "write.insert",
    "write.insert_select",
    "write.upsert",
    "write.merge",
    "write.update_from",
    "write.truncate",
    "write.create_table",
    "write.create_view",
    "write.create_function",
    "write.create_schema_sequence",
    "write.alter_table",
    "write.disable_rls",
    "write.drop",
    "write.grant",
    "write.alter_role_set",
    "write.cte_delete",
    "write.cte_update",
    "write.cte_insert",
    "write.select_into",
    "write.explain_analyze",
    "write.create_temp_as",
    "write.nextval",
    "write.setval",
    "write.advisory_lock",
    "write.lo_create",
    "write.set_config_read_write",
    "write.function_volatile",
    "session.commit_then_write",
    "session.rollback_then_write",
    "session.set_transaction_read_write",
    "session.set_session_characteristics",
    "session.begin_write_commit",
    "session.multi_statement",
    "session.reset_all",
    "session.do_block",
    "session.do_dynamic_sql",
    "session.do_commit",
    "session.prepare_execute",
    "session.prepare_across_calls",
    "session.statement_timeout_off",
    "server.pg_terminate_backend",
    "server.pg_cancel_backend",
];

#[test]
fn the_keyword_guard_fails_on_exactly_the_escapes_past_its_first_word() {
    let Some(run) = sql_probe("tests/targets/sql/profile-keyword_guard.yaml") else {
        return;
    };
    sane(&run);
    assert_eq!(
        escapes(&run, "fail"),
        set(KEYWORD_GUARD_ESCAPES),
        "{}",
        run.log()
    );
    // The plain spellings are refused: the finding names the spellings that got through.
    let update = titled(&run, "write.update:");
    let facts = update["evidence"]["facts"].to_string();
    assert!(facts.contains("spelling 4"), "{facts}");
    assert!(!facts.contains("spelling 1 "), "{facts}");
    assert!(facts.contains("data public.orders"), "{facts}");
    // The owner login: tenant isolation and hidden columns rest on the guard alone.
    let failing = checks(&run, "fail");
    assert!(
        failing.contains("sql.login_role: the login the SQL runs as"),
        "{failing:?}"
    );
    assert!(
        failing
            .iter()
            .any(|c| c.starts_with("sql.foreign_rows: orders")),
        "{failing:?}"
    );
    assert!(
        failing
            .iter()
            .any(|c| c.starts_with("sql.secret_columns: customers")),
        "{failing:?}"
    );
    // No row cap or timeout declared: not_verified, never a pass.
    let nv = checks(&run, "not_verified");
    assert!(nv.iter().any(|c| c.starts_with("sql.row_cap")), "{nv:?}");
    assert_eq!(
        nv.iter()
            .filter(|c| c.starts_with("sql.server_timeout"))
            .count(),
        2,
        "{nv:?}"
    );
    assert!(!run.out.status.success());
}

/// What gets out of a read-only transaction that accepts several statements: ending it
/// (COMMIT, ROLLBACK, a savepoint dance) before the write, switching it to read-write before its
/// first query (`SET TRANSACTION READ WRITE`, `START TRANSACTION READ WRITE`) and committing,
/// and session state it does not roll back (advisory locks).
const READONLY_GUARD_ESCAPES: &[&str] = &[
    "write.advisory_lock",
    "session.begin_write_commit",
    "session.commit_then_write",
    "session.rollback_then_write",
    "session.set_transaction_read_write",
    "session.set_session_characteristics",
    "session.reset_all",
    "session.prepare_across_calls",
    "session.savepoint_release",
    "session.statement_timeout_off",
    "server.pg_terminate_backend",
    "server.pg_cancel_backend",
];

#[test]
fn the_read_only_transaction_guard_fails_on_commit_and_what_outlives_its_rollback() {
    let Some(run) = sql_probe("tests/targets/sql/profile-readonly_guard.yaml") else {
        return;
    };
    sane(&run);
    assert_eq!(
        escapes(&run, "fail"),
        set(READONLY_GUARD_ESCAPES),
        "{}",
        run.log()
    );
    let commit = titled(&run, "session.commit_then_write:");
    assert_eq!(commit["checklist"], serde_json::json!(["PRE-4", "WRT-1"]));
    assert!(commit["evidence"]["sql"][0]
        .as_str()
        .is_some_and(|s| s.to_uppercase().contains("COMMIT")));
}

/// A superuser login behind the keyword guard: the server's files and processes are reachable.
#[test]
fn a_superuser_login_fails_the_server_file_and_process_escapes() {
    let Some(run) = sql_probe("tests/targets/sql/profile-keyword_guard-superuser.yaml") else {
        return;
    };
    sane(&run);
    let failing = escapes(&run, "fail");
    for id in [
        "server.pg_read_file",
        "server.pg_read_binary_file",
        "server.pg_ls_dir",
        "server.pg_stat_file_select",
        "server.pg_stat_file_from",
        "server.copy_to_program",
        "server.copy_from_program",
        "server.lo_import",
        "server.pg_terminate_backend",
        "server.pg_reload_conf",
        "server.settings",
    ] {
        assert!(failing.contains(id), "{id} did not fail: {failing:?}");
    }
    let read = titled(&run, "server.pg_read_file:");
    let facts = read["evidence"]["facts"].to_string();
    assert!(facts.contains("canary file"), "{facts}");
    assert!(facts.contains("PG_VERSION"), "{facts}");
}

#[test]
fn the_sound_layer_passes_every_probe_or_says_why_not() {
    let Some(run) = sql_probe("tests/targets/sql/profile-sound.yaml") else {
        return;
    };
    sane(&run);
    let not_pass: Vec<String> = run
        .findings
        .iter()
        .filter(|f| f["verdict"] != "pass")
        .map(|f| {
            format!(
                "{} {} {}: {}",
                f["verdict"], f["code"], f["title"], f["message"]
            )
        })
        .collect();
    assert!(
        not_pass.is_empty(),
        "{}\n{}",
        not_pass.join("\n"),
        run.log()
    );
    // The passes rest on evidence: the budgets ran on the server, the cap was exercised.
    let timeout = checks(&run, "pass");
    assert_eq!(
        timeout
            .iter()
            .filter(|c| c.starts_with("sql.server_timeout"))
            .count(),
        2
    );
    assert!(timeout.iter().any(|c| c.starts_with("sql.row_cap")));
    assert_eq!(run.out.status.code(), Some(0), "{}", run.log());
}

#[test]
fn the_sql_family_does_not_apply_to_the_built_in_layer() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--only", "sql,hygiene", "--out"])
        .arg(out_dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    let text = std::fs::read_to_string(out_dir.path().join("report.json")).expect("report.json");
    let report: Value = serde_json::from_str(&text).expect("JSON");
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    assert!(!findings.is_empty());
    assert!(findings.iter().all(|f| f["family"] != "sql"));
    let notes = report["environment"]["not_applicable"].to_string();
    assert!(
        notes.contains("sql: the built-in layer offers no SQL tool"),
        "{notes}"
    );
    let md = std::fs::read_to_string(out_dir.path().join("report.md")).expect("report.md");
    assert!(md.contains("Not applicable: sql:"), "{md}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A profile that drives the layer wrongly (the SQL goes in an argument the tool does not
/// take, so every call is refused): no escape may pass on refusals that prove nothing. The
/// control `SELECT 1` is refused too, so every probe is an `error` or `not_verified`.
#[test]
fn refusals_that_prove_nothing_are_never_a_pass() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = dir.path().join("wrong-argument.yaml");
    std::fs::write(
        &profile,
        format!(
            "name: keyword guard driven wrongly\ntransport:\n  stdio:\n    command: python3\n    args: [\"{}\"]\ntimeout: 20s\ndatabase: {{login: owner}}\nprincipal:\n  env: {{LAYER_TENANT: \"{{tenant}}\"}}\ntools: {{}}\nsql: {{tool: execute_sql, argument: query, rows: rows}}\n",
            repo().join("tests/targets/sql/keyword_guard.py").display()
        ),
    )
    .expect("write profile");
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--only", "sql", "--target"])
        .arg(&profile)
        .arg("--out")
        .arg(&out_dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    let text = std::fs::read_to_string(out_dir.join("report.json")).expect("report.json");
    let report: Value = serde_json::from_str(&text).expect("JSON");
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    assert!(
        findings.len() > 60,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passes: Vec<String> = findings
        .iter()
        .filter(|f| f["verdict"] == "pass")
        .map(|f| format!("{} {}", f["code"], f["title"]))
        .collect();
    assert!(passes.is_empty(), "false passes: {passes:?}");
    let escape = findings
        .iter()
        .find(|f| {
            f["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("write.update:"))
        })
        .expect("write.update finding");
    assert_eq!(escape["verdict"], "error");
    assert!(
        escape["message"]
            .as_str()
            .is_some_and(|m| m.contains("a refusal of any attempt would prove nothing")),
        "{escape}"
    );
    assert_ne!(out.status.code(), Some(0));
}

/// The audit family judges a SQL layer's own log for its SQL tool: every attempt, refused or
/// not, has its record; a layer that leaves refused calls out fails.
#[test]
fn every_sql_attempt_must_have_a_record_in_the_layers_audit_log() {
    let every_call = |run: &Run| {
        run.findings
            .iter()
            .find(|f| {
                f["code"] == "audit.every_call"
                    && f["title"]
                        .as_str()
                        .is_some_and(|t| t.contains("execute_sql"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no audit.every_call for execute_sql\n{}", run.log()))
    };
    let Some(run) = sql_probe_with(
        "tests/targets/sql/profile-sound-audit.yaml",
        "sql,audit",
        &[],
    ) else {
        return;
    };
    let f = every_call(&run);
    assert_eq!(f["verdict"], "pass", "{f}");
    assert!(f["checklist"].to_string().contains("PRE-6"), "{f}");
    let Some(run) = sql_probe_with(
        "tests/targets/sql/profile-sound-audit.yaml",
        "sql,audit",
        &[("LAYER_FLAW", "no_audit_denied")],
    ) else {
        return;
    };
    let f = every_call(&run);
    assert_eq!(f["verdict"], "fail", "{f}");
    assert!(
        f["evidence"].to_string().contains("without a record"),
        "{f}"
    );
    // Without an `audit:` section the claim cannot be judged: not_verified, never a pass.
    let Some(run) = sql_probe_with("tests/targets/sql/profile-sound.yaml", "audit", &[]) else {
        return;
    };
    let f = every_call(&run);
    assert_eq!(f["verdict"], "not_verified", "{f}");
}
