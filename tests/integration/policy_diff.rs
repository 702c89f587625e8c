//! `preflight policy diff OLD NEW` end to end: exit 1 when capabilities widen, 0 when they only
//! narrow or nothing changed, 2 with the file:line of a malformed policy, and `REV:path` read
//! through `git show`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn preflight() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.stdin(Stdio::null());
    cmd
}

fn shop_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/shop/policy.yaml"))
        .expect("read the shop policy")
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run preflight");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write a temp file");
    p
}

/// The shop policy with customers.email unmasked and the refund approval threshold raised.
fn widened() -> String {
    let text = shop_policy();
    let out = text
        .replacen(
            "      email: mask\n      phone: mask",
            "      email: allow\n      phone: mask",
            1,
        )
        .replacen("greater_than: 1000}", "greater_than: 5000}", 1);
    assert_ne!(out, text);
    out
}

#[test]
fn widening_exits_1_with_the_sentences_and_narrowing_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(&dir, "old.yaml", &shop_policy());
    let new = write(&dir, "new.yaml", &widened());
    let (code, out, err) = run(preflight().args(["policy", "diff"]).arg(&old).arg(&new));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("- customers.email is now returned unmasked (was masked)\n"),
        "{out}"
    );
    assert!(
        out.contains("- approval threshold of rule refund-over-1000 (refunds.amount) raised from 1,000 to 5,000\n"),
        "{out}"
    );
    let (code, out, err) = run(preflight()
        .args(["policy", "diff", "--format", "json"])
        .arg(&new)
        .arg(&old));
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["widens"], false);
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(2), "{out}");
    let (code, out, _) = run(preflight().args(["policy", "diff"]).arg(&old).arg(&old));
    assert_eq!(code, Some(0));
    assert!(out.contains("No capability changes."), "{out}");
}

#[test]
fn malformed_policy_exits_2_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(&dir, "old.yaml", &shop_policy());
    let bad = write(
        &dir,
        "bad.yaml",
        &shop_policy().replacen(
            "budget_store: memory",
            "budget_store: memory\nbudgetz: {}",
            1,
        ),
    );
    let (code, out, err) = run(preflight().args(["policy", "diff"]).arg(&old).arg(&bad));
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("budgetz"), "{err}");
    let (code, _, err) = run(preflight()
        .args(["policy", "diff"])
        .arg(&old)
        .arg(dir.path().join("missing.yaml")));
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn old_side_may_be_a_git_revision() {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let s = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("run git");
        assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    write(&dir, "policy.yaml", &shop_policy());
    git(&["add", "policy.yaml"]);
    git(&["commit", "-q", "-m", "policy"]);
    write(&dir, "policy.yaml", &widened());
    let (code, out, err) = run(preflight().current_dir(dir.path()).args([
        "policy",
        "diff",
        "main:policy.yaml",
        "policy.yaml",
    ]));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("old: `main:policy.yaml`"), "{out}");
    let (code, _, err) = run(preflight().current_dir(dir.path()).args([
        "policy",
        "diff",
        "nosuchrev:policy.yaml",
        "policy.yaml",
    ]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("git show failed"), "{err}");
}
