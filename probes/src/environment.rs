//! Facts about a run that its report records: the fixture set's hash, the start time, and the
//! database roles behind the connection strings (never the strings themselves).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// SHA-256 over the fixture files (names and contents, in load order): which data the run saw.
pub fn fixtures_hash(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        h.update([0]);
        h.update(std::fs::read(&f).unwrap_or_default());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Now, as RFC 3339 in UTC to the second.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The login role of a postgres URL.
pub fn login_role(url: &str) -> Option<String> {
    url.parse::<sqlx::postgres::PgConnectOptions>()
        .ok()
        .map(|o| o.get_username().to_string())
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_role_reads_the_user_only() {
        assert_eq!(
            login_role("postgres://preflight_agent:s3cret@127.0.0.1:5432/shop").as_deref(),
            Some("preflight_agent")
        );
        assert_eq!(login_role("not a url"), None);
    }

    #[test]
    fn fixtures_hash_changes_with_content() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("10_a.sql"), "select 1;").unwrap();
        let a = fixtures_hash(d.path());
        std::fs::write(d.path().join("10_a.sql"), "select 2;").unwrap();
        assert_ne!(a, fixtures_hash(d.path()));
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        assert_eq!(fixtures_hash(d.path()), fixtures_hash(d.path()));
    }
}
