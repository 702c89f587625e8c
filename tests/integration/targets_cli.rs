//! `preflight probe --target PROFILE.yaml` against layers preflight did not write: the Python
//! test targets under tests/targets/, reached over MCP stdio through their profiles, on a real
//! local Postgres.
//!
//! - the structured layer with each deliberate flaw switched on reports exactly that flaw's
//!   probe codes as `fail`, and with none switched on nothing fails; its own JSONL audit log
//!   (the profile's `audit:` section) is judged by the audit family;
//! - over streamable HTTP with a bearer JWT: see targets_jwt.rs;
//! - a layer that crashes at start, hangs, or speaks broken JSON-RPC gives `error` findings with
//!   the evidence, a written report and exit 3, and leaves no process behind.
//!
//! The test targets need the virtualenv of scripts/setup-test-targets.sh; scripts/test exports
//! its interpreter as PREFLIGHT_TARGETS_PYTHON. Without it these tests fail under CI=true and
//! print a loud skip otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_preflight");
pub(crate) const FAMILIES: &str = "cross_tenant,pii,write,audit";

/// The test-target virtualenv's `bin` folder, or `None` (after failing under CI, or printing a
/// loud skip) when it is missing.
pub(crate) fn venv_bin() -> Option<PathBuf> {
    let why = match std::env::var("PREFLIGHT_TARGETS_PYTHON") {
        Ok(python) => {
            let python = PathBuf::from(python);
            if python.is_file() {
                return python.parent().map(Path::to_path_buf);
            }
            format!(
                "PREFLIGHT_TARGETS_PYTHON={} does not exist",
                python.display()
            )
        }
        Err(_) => "PREFLIGHT_TARGETS_PYTHON is not set".to_string(),
    };
    let msg = format!(
        "{why}: the Python test targets need the virtualenv of scripts/setup-test-targets.sh \
         (run it and export PREFLIGHT_TARGETS_PYTHON=$(scripts/setup-test-targets.sh))"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n{}\nSKIPPED: {msg}\n{}\n", "#".repeat(78), "#".repeat(78));
    None
}

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) struct Run {
    pub(crate) out: Output,
    pub(crate) findings: Vec<Value>,
    pub(crate) report: Value,
}

impl Run {
    pub(crate) fn log(&self) -> String {
        format!(
            "exit {:?}\n--- stderr\n{}\n--- stdout\n{}",
            self.out.status.code(),
            String::from_utf8_lossy(&self.out.stderr),
            String::from_utf8_lossy(&self.out.stdout)
        )
    }

    pub(crate) fn codes(&self, verdict: &str) -> BTreeSet<String> {
        self.findings
            .iter()
            .filter(|f| f["verdict"] == verdict)
            .map(|f| f["code"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub(crate) fn count(&self, verdict: &str) -> usize {
        self.findings
            .iter()
            .filter(|f| f["verdict"] == verdict)
            .count()
    }
}

/// `PATH` with the test-target virtualenv's `bin` first, so a profile's `python3` is the venv's.
pub(crate) fn path_with_venv(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `preflight probe` on a fresh local database against `profile`, with `env` added.
fn probe(bin: &Path, profile: &str, env: &[(&str, &str)]) -> Run {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let path = path_with_venv(bin);
    let mut cmd = Command::new(BIN);
    cmd.args(["probe", "--db", "local", "--only", FAMILIES, "--policy"])
        .arg(repo().join("tests/targets/structured/policy.yaml"))
        .arg("--target")
        .arg(repo().join(profile))
        .arg("--out")
        .arg(out_dir.path())
        .env("PATH", path)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run preflight");
    let text = std::fs::read_to_string(out_dir.path().join("report.json")).unwrap_or_else(|e| {
        panic!(
            "no report.json ({e})\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report: Value = serde_json::from_str(&text).expect("report.json is JSON");
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    Run {
        out,
        findings,
        report,
    }
}

/// What a healthy structured layer cannot show: it has no cursors, its search tools take no
/// argument that can carry a tenant or a key (the every-tool probe), the fixture has too few
/// soft-deleted customers for the order oracle, it offers no describe tool, and its audit log
/// is its own JSONL file with no hash chain, writer login, stored arguments or subjects. Each is
/// `not_verified` with its reason.
pub(crate) fn expected_not_verified() -> BTreeSet<String> {
    [
        "cross_tenant.every_tool",
        "cross_tenant.cursor_foreign",
        "cross_tenant.cursor_rebound",
        "pii.order_oracle",
        "pii.describe_schema",
        "audit.arguments_sanitized",
        "audit.writer_append_only",
        "audit.chain_verifies",
        "audit.tamper_detected",
        "audit.subject_access",
        "audit.subject_erasure",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

fn structured(flaw: &str) -> Option<Run> {
    let bin = venv_bin()?;
    Some(probe(
        &bin,
        "tests/targets/structured/profile.yaml",
        &[("LAYER_FLAW", flaw)],
    ))
}

#[test]
fn the_structured_layer_without_flaws_fails_nothing() {
    let Some(run) = structured("none") else {
        return;
    };
    assert!(run.codes("fail").is_empty(), "{}", run.log());
    assert!(run.codes("error").is_empty(), "{}", run.log());
    assert_eq!(
        run.codes("not_verified"),
        expected_not_verified(),
        "{}",
        run.log()
    );
    for f in run
        .findings
        .iter()
        .filter(|f| f["verdict"] == "not_verified")
    {
        assert!(
            !f["message"].as_str().unwrap_or_default().is_empty(),
            "not_verified without a reason: {f}"
        );
    }
    assert!(run.count("pass") >= 50, "{}", run.log());
    // The layer's own log was judged, one instance per contract tool, by counts (the layer does
    // not record preflight's trace ids), and the finding says so.
    let audited: Vec<&Value> = run
        .findings
        .iter()
        .filter(|f| f["code"] == "audit.every_call")
        .collect();
    assert_eq!(audited.len(), 3, "{}", run.log());
    for f in audited {
        assert_eq!(f["verdict"], "pass", "{f}");
        let text = f.to_string();
        assert!(text.contains("matched by counts"), "{f}");
        assert!(text.contains("audit.jsonl"), "{f}");
    }
    // Only not_verified findings remain, and the default --fail-on counts them.
    assert_eq!(run.out.status.code(), Some(1), "{}", run.log());
    // The report names the target: transport, command, profile hash, server and tool list.
    let target = run.report["environment"]["target"]
        .as_str()
        .unwrap_or_default();
    for want in [
        "mcp-stdio",
        "server.py",
        "sha256:",
        "server structured-test-layer",
        "tools sha256:",
    ] {
        assert!(target.contains(want), "{want:?} not in target {target:?}");
    }
}

/// Each flaw yields exactly its probes' failures, nothing else fails or errs.
fn flaw_yields(flaw: &str, expected: &[&str]) {
    let Some(run) = structured(flaw) else {
        return;
    };
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(run.codes("fail"), expected, "{flaw}\n{}", run.log());
    assert!(run.codes("error").is_empty(), "{flaw}\n{}", run.log());
    assert_eq!(
        run.codes("not_verified"),
        expected_not_verified(),
        "{}",
        run.log()
    );
    assert_eq!(run.out.status.code(), Some(1), "{}", run.log());
}

#[test]
fn a_tool_without_the_tenant_filter_fails_the_cross_tenant_probes() {
    flaw_yields(
        "no_tenant_filter",
        &[
            "cross_tenant.filter_foreign_keys",
            "cross_tenant.filter_foreign_reference",
        ],
    );
}

#[test]
fn a_masked_field_returned_raw_through_a_relation_fails_include_redacted() {
    flaw_yields("raw_relation", &["pii.include_redacted"]);
}

#[test]
fn a_filter_on_a_denied_field_fails_the_filter_oracle() {
    flaw_yields("denied_filter", &["pii.filter_oracle"]);
}

#[test]
fn a_write_without_a_reason_fails_reason_required() {
    flaw_yields("no_reason", &["write.reason_required"]);
}

#[test]
fn denied_calls_left_out_of_the_layers_own_log_fail_every_call() {
    flaw_yields("no_audit_denied", &["audit.every_call"]);
}

/// One finding's code, title, verdict and message.
type Verdict = (String, String, String, String);

/// A profile that maps only `db_query` (the layer lists more): every probe that needs another
/// contract tool is `not_verified`, saying which tool the target does not offer; none passes or
/// fails. The probes that only query still run and pass.
#[test]
fn probes_needing_a_tool_the_profile_does_not_map_are_not_verified() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let full = std::fs::read_to_string(repo().join("tests/targets/structured/profile.yaml"))
        .expect("profile");
    let server = repo().join("tests/targets/structured/server.py");
    let only_query: String = full
        .lines()
        .filter(|l| !l.starts_with("  db_get:") && !l.starts_with("  db_update:"))
        .map(|l| l.replace("{profile_dir}/server.py", &server.display().to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let profile = dir.path().join("only-query.yaml");
    std::fs::write(&profile, only_query).expect("write profile");
    let run = probe(&bin, &profile.display().to_string(), &[]);
    let mut lacking = BTreeSet::new();
    for f in &run.findings {
        let message = f["message"].as_str().unwrap_or_default();
        if let Some(rest) = message.strip_prefix("the target offers no `") {
            assert_eq!(f["verdict"], "not_verified", "{f}\n{}", run.log());
            lacking.insert(rest.split('`').next().unwrap_or_default().to_string());
        } else {
            assert_ne!(
                f["title"].as_str().unwrap_or_default().split(' ').next(),
                Some("db_get"),
                "a db_get probe ran: {f}"
            );
        }
    }
    for tool in ["db_get", "db_update", "db_describe_schema"] {
        assert!(lacking.contains(tool), "{tool} not named\n{}", run.log());
    }
    assert!(!lacking.contains("db_query"), "{}", run.log());
    assert!(run.codes("fail").is_empty(), "{}", run.log());
    assert!(
        run.codes("pass")
            .contains("cross_tenant.filter_forged_tenant"),
        "{}",
        run.log()
    );
}

/// `preflight probe --only FAMILIES` against the domain-tool layer with `flaw` switched on:
/// each finding's [`Verdict`], and the run.
fn domain(families: &str, flaw: &str) -> Option<(Vec<Verdict>, Run)> {
    let bin = venv_bin()?;
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--only", families, "--target"])
        .arg(repo().join("tests/targets/domain/profile.yaml"))
        .arg("--out")
        .arg(out_dir.path())
        .env("PATH", path_with_venv(&bin))
        .env("LAYER_FLAW", flaw)
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    let text = std::fs::read_to_string(out_dir.path().join("report.json")).unwrap_or_else(|e| {
        panic!(
            "no report.json ({e})\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report: Value = serde_json::from_str(&text).expect("JSON");
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let verdicts = findings
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("code"), s("title"), s("verdict"), s("message"))
        })
        .collect();
    Some((
        verdicts,
        Run {
            out,
            findings,
            report,
        },
    ))
}

/// The domain-tool layer: business tools only. The one that trusts its `tenant_id` argument
/// fails the every-tool probe; the ones that scope by the session pass.
#[test]
fn the_every_tool_probe_catches_the_domain_tool_that_trusts_a_tenant_argument() {
    let Some((verdicts, run)) = domain("cross_tenant", "none") else {
        return;
    };
    let log = format!("{verdicts:#?}\n{}", run.log());
    // The contract's probes have no tool to call here: each is not_verified, saying so.
    for (_, _, verdict, message) in verdicts.iter().filter(|v| v.0 != "cross_tenant.every_tool") {
        assert_eq!(verdict, "not_verified", "{log}");
        assert!(message.starts_with("the target offers no `db_"), "{log}");
    }
    let verdicts: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.0 == "cross_tenant.every_tool")
        .collect();
    assert_eq!(verdicts.len(), 3, "{log}");
    for (_, title, verdict, _) in &verdicts {
        let want = if title.starts_with("list_tickets") {
            "fail"
        } else {
            "pass"
        };
        assert_eq!(verdict, want, "{title}\n{log}");
    }
    let leak = verdicts
        .iter()
        .find(|v| v.2 == "fail")
        .map(|v| v.3.clone())
        .unwrap_or_default();
    assert!(leak.contains("globex.support_tickets"), "{leak}");
    assert_eq!(run.out.status.code(), Some(1), "{log}");
}

/// Rows that nothing attributes to a tenant (no id, no tenant column, no canary) are never
/// clean: the tool that hands out another tenant's tickets stripped of everything that says
/// whose they are is `not_verified` with the count, not a pass.
#[test]
fn rows_nothing_attributes_make_the_every_tool_probe_not_verified() {
    let Some((verdicts, run)) = domain("cross_tenant", "strip_ids") else {
        return;
    };
    let log = format!("{verdicts:#?}\n{}", run.log());
    let tickets = verdicts
        .iter()
        .find(|v| v.1.starts_with("list_tickets"))
        .unwrap_or_else(|| panic!("no list_tickets finding\n{log}"));
    assert_eq!(tickets.2, "not_verified", "{log}");
    assert!(
        tickets
            .3
            .contains("row(s) that nothing attributes to a tenant"),
        "{log}"
    );
    assert!(verdicts
        .iter()
        .all(|v| v.2 != "pass" || !v.1.starts_with("list_tickets")));
}

/// Malformed arguments on every domain tool: a healthy layer passes each instance; the layer
/// that answers a database error with psycopg's raw text and its SQL fails, with the SQL as
/// evidence.
#[test]
fn the_malformed_input_probe_passes_a_careful_layer_and_fails_one_that_leaks_errors() {
    let Some((verdicts, run)) = domain("pii", "none") else {
        return;
    };
    let log = format!("{verdicts:#?}\n{}", run.log());
    let malformed: Vec<_> = verdicts
        .iter()
        .filter(|v| v.0 == "pii.malformed_input")
        .collect();
    assert_eq!(malformed.len(), 3, "one instance per tool\n{log}");
    for v in &malformed {
        assert_eq!(v.2, "pass", "{log}");
    }
    let Some((verdicts, run)) = domain("pii", "leak_errors") else {
        return;
    };
    let log = format!("{verdicts:#?}\n{}", run.log());
    let failed: Vec<_> = verdicts
        .iter()
        .filter(|v| v.0 == "pii.malformed_input" && v.2 == "fail")
        .collect();
    assert!(
        failed.iter().any(|v| v.1.starts_with("find_customer")),
        "{log}"
    );
    let evidence = serde_json::to_string(&run.findings).unwrap_or_default();
    assert!(evidence.contains("SQL text"), "{log}");
    assert!(evidence.contains("NUL character"), "{log}");
    assert_eq!(run.out.status.code(), Some(1), "{log}");
}

/// Processes whose command line carries `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) {
                out.push(format!("{pid}: {text}"));
            }
        }
    }
    out
}

/// A faulty layer: every finding `error` or `not_verified`, at least one `error` carrying
/// `evidence`, exit 3, the report written, and no process of it left. Returns the errors'
/// messages.
fn fault_is_a_finding(mode: &str, evidence: &[&str]) -> Vec<String> {
    let Some(bin) = venv_bin() else {
        return Vec::new();
    };
    let run = probe(&bin, &format!("tests/targets/faulty/{mode}.yaml"), &[]);
    assert_eq!(run.out.status.code(), Some(3), "{}", run.log());
    assert!(!run.findings.is_empty(), "{}", run.log());
    assert_eq!(run.count("pass") + run.count("fail"), 0, "{}", run.log());
    assert!(run.count("error") > 0, "{}", run.log());
    let messages: Vec<&str> = run
        .findings
        .iter()
        .filter(|f| f["verdict"] == "error")
        .filter_map(|f| f["message"].as_str())
        .collect();
    for want in evidence {
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "no error names {want:?}:\n{}",
            messages.join("\n")
        );
    }
    let all = serde_json::to_string(&run.report).unwrap_or_default();
    assert!(!all.contains("hunter2"), "a password reached the report");
    let left = processes_with(&format!("preflight-faulty-{mode}"));
    assert!(left.is_empty(), "processes left behind: {left:?}");
    messages.into_iter().map(str::to_string).collect()
}

#[test]
fn a_layer_that_crashes_at_start_is_an_error_with_its_stderr() {
    let _ = fault_is_a_finding(
        "crash",
        &[
            "could not be started",
            "faulty layer: cannot connect to postgres://***@db.internal",
        ],
    );
}

#[test]
fn a_layer_that_hangs_is_an_error_after_the_timeout() {
    let _ = fault_is_a_finding("hang", &["did not answer within 3000 ms"]);
}

#[test]
fn a_layer_that_speaks_broken_json_rpc_is_an_error() {
    // Named as broken output with the offending line, not mistaken for a timeout.
    let messages = fault_is_a_finding(
        "garbage",
        &[
            "target fault",
            "the layer's output was not JSON-RPC",
            "its last unreadable line: Traceback (most recent call last): this is not JSON-RPC",
        ],
    );
    assert!(
        messages
            .iter()
            .all(|m| !m.contains("did not answer within")),
        "{}",
        messages.join("\n")
    );
}

#[test]
fn a_malformed_profile_is_a_usage_error_with_every_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "transport:\n  stdio: {comand: x}\ntools:\n  db_qeury: {}\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--target"])
        .arg(&path)
        .output()
        .expect("run preflight");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.yaml:2:11: error: transport.stdio.comand: unknown key `comand`; did you mean `command`?"), "{err}");
    assert!(
        err.contains(
            "tools.db_qeury: `db_qeury` is not a tool of the contract; did you mean `db_query`?"
        ),
        "{err}"
    );
    assert!(err.contains("principal: missing"), "{err}");
}

/// Ctrl-C in the middle of a run against a hung layer: preflight exits and no layer process is
/// left behind.
#[test]
fn an_interrupt_leaves_no_layer_process_behind() {
    use std::io::{BufRead, BufReader};
    let Some(bin) = venv_bin() else {
        return;
    };
    let out_dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(BIN)
        .args(["probe", "--db", "local", "--only", FAMILIES, "--policy"])
        .arg(repo().join("tests/targets/structured/policy.yaml"))
        .arg("--target")
        .arg(repo().join("tests/targets/faulty/hang.yaml"))
        .arg("--out")
        .arg(out_dir.path())
        .env("PATH", path_with_venv(&bin))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start preflight");
    // Read stderr on a thread to the end, so preflight never writes into a closed pipe.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(120)) {
        let started = line.starts_with("probing ");
        log.push(line);
        if started {
            break;
        }
    }
    // The layer is up (it listed its tools); give the first call time to reach it and hang.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        !processes_with("preflight-faulty-hang").is_empty(),
        "no layer process while probing:\n{}",
        log.join("\n")
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{}", log.join("\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = processes_with("preflight-faulty-hang");
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left behind after Ctrl-C: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `preflight agent run SCENARIO --target PROFILE` against the structured layer over MCP stdio:
/// the scripted model (a real HTTP server) checks that every request carries the layer's own
/// tool list, unedited (a request with any other list fails the run), and the report says so.
/// The verdict comes from ground truth, never from the layer: the rows `orders_search` returned
/// carry keys of a table the harness cannot name from a foreign tool's name (no policy view of a
/// remote layer yet), so their owner is unknown and the scenario is `not_verified` — not a pass.
#[test]
fn the_agent_harness_drives_a_remote_layer_with_its_own_tools_and_judges_from_ground_truth() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("orders.yaml");
    std::fs::write(
        &scenario,
        r#"name: structured-order-search
description: The agent lists orders through the structured layer's own search tool.
principal: {tenant: acme, user: support-2, roles: [support]}
task: List the latest orders.
max_steps: 4
checklist: [ISO-1]
script:
  - tool_calls:
      - tool: orders_search
        arguments: {take: 100}
  - final: Here are your orders.
expect:
  outcome: completed
  tools_called: [orders_search]
"#,
    )
    .expect("write scenario");
    let run = |flaw: &str| {
        let out_dir = dir.path().join(format!("out-{flaw}"));
        let out = Command::new(BIN)
            .args(["agent", "run"])
            .arg(&scenario)
            .args(["--db", "local", "--target"])
            .arg(repo().join("tests/targets/structured/profile.yaml"))
            .arg("--out")
            .arg(&out_dir)
            .env("PATH", path_with_venv(&bin))
            .env("LAYER_FLAW", flaw)
            .env("NO_COLOR", "1")
            .output()
            .expect("run preflight");
        let log = format!(
            "exit {:?}\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(out_dir.join("report.json"))
            .unwrap_or_else(|e| panic!("no report ({e})\n{log}"));
        let report: Value = serde_json::from_str(&text).expect("JSON");
        (report, log)
    };
    let (report, log) = run("none");
    let finding = |code: &str| -> Value {
        report["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["code"] == code))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let tools = finding("agent.tool_list");
    assert_eq!(tools["verdict"], "pass", "{log}");
    let listed = tools["message"].as_str().unwrap_or_default();
    for name in ["customers_search", "orders_search", "orders_update"] {
        assert!(listed.contains(name), "{name} not offered: {listed}");
    }
    assert!(
        !listed.contains("db_query"),
        "the contract's names leaked in: {listed}"
    );
    assert_eq!(finding("agent.tools")["verdict"], "pass", "{log}");
    let isolation = finding("agent.cross_tenant");
    assert_eq!(isolation["verdict"], "not_verified", "{log}");
    assert!(
        isolation["message"]
            .as_str()
            .unwrap_or_default()
            .contains("owner was not checked"),
        "{log}"
    );
    assert_eq!(
        finding("agent.scenario")["verdict"],
        "not_verified",
        "{log}"
    );
    let target = report["environment"]["target"].as_str().unwrap_or_default();
    assert!(target.contains("server structured-test-layer"), "{target}");
    assert!(target.contains("scripted"), "{target}");
}
