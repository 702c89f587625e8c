//! `preflight db up` end to end: the binary starts a database, prints masked URLs, and on
//! Ctrl-C removes everything and exits with 130; bad input exits 2 (configuration) or 3
//! (infrastructure) with a clear message.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn preflight() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.env_remove("PREFLIGHT_DB").stdin(Stdio::null());
    cmd
}

fn fixtures() -> PathBuf {
    std::env::var_os("PREFLIGHT_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/shop"))
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run preflight");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn a_missing_docker_daemon_exits_3() {
    let (code, _, stderr) = run(preflight()
        .args(["db", "up", "--db", "container", "--fixtures"])
        .arg(fixtures())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("error: no Docker daemon answered at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
}

#[test]
fn a_missing_fixtures_folder_exits_2() {
    let (code, _, stderr) = run(preflight().args([
        "db",
        "up",
        "--db",
        "local",
        "--fixtures",
        "/nonexistent/shop",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: fixtures folder /nonexistent/shop does not exist"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_exit_2_without_echoing_secrets() {
    let (code, _, stderr) =
        run(preflight().args(["db", "up", "--db", "mysql://root:hunter2@db/x"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("expected auto, container, local or a postgres:// URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let (code, _, stderr) = run(preflight().args(["db", "up", "--db", "local", "--allow-writes"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--allow-writes only applies to a postgres:// URL"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_url_exits_3_without_the_password() {
    let (code, _, stderr) =
        run(preflight().args(["db", "up", "--db", "postgres://me:sekrit@127.0.0.1:1/shop"]));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot connect to postgres://me:****@127.0.0.1:1/shop"),
        "{stderr}"
    );
    assert!(!stderr.contains("sekrit"), "{stderr}");
}

fn postgres_processes_in(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&needle))
        .count()
}

#[test]
fn db_up_prints_masked_urls_and_cleans_up_on_ctrl_c() {
    let mut child = preflight()
        .args(["db", "up", "--db", "local", "--rows", "0", "--fixtures"])
        .arg(fixtures())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn preflight db up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout line");
        let done = line.starts_with("Press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    let text = lines.join("\n");
    assert!(text.starts_with("database ready in "), "{text}");
    assert!(text.contains("  backend    local: "), "{text}");
    assert!(text.contains("  reason     requested"), "{text}");
    for role in [
        "owner      postgres://preflight_owner:****@127.0.0.1:",
        "agent      postgres://preflight_agent:****@127.0.0.1:",
        "audit      postgres://preflight_audit_writer:****@127.0.0.1:",
    ] {
        assert!(text.contains(role), "missing {role:?} in\n{text}");
    }
    assert!(text.contains("Passwords are masked"), "{text}");
    let dir = text
        .split("data in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no data dir in\n{text}"));
    assert!(
        dir.is_dir() && postgres_processes_in(&dir) > 0,
        "the database is not running:\n{text}"
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "preflight db up did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: removing 1 throwaway database(s)"),
        "{stderr}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_eq!(postgres_processes_in(&dir), 0, "postgres left running");
}

#[test]
fn show_secrets_prints_the_passwords() {
    let mut child = preflight()
        .args([
            "db",
            "up",
            "--db",
            "local",
            "--rows",
            "0",
            "--show-secrets",
            "--fixtures",
        ])
        .arg(fixtures())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn preflight db up");
    let stdout = child.stdout.take().expect("stdout");
    let mut agent = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout line");
        if let Some(rest) = line.trim_start().strip_prefix("agent") {
            agent = rest.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(130),
        "SIGTERM tears down and exits 130 too"
    );
    let agent = agent.expect("an agent line");
    let password = agent
        .split("://preflight_agent:")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .unwrap_or_default();
    assert_eq!(password.len(), 32, "{agent}");
    assert!(
        password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{agent}"
    );
}
