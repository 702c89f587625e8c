//! Test support (not for production code paths): [`database()`] gives every crate's tests a
//! real Postgres with the shop fixtures, chosen by environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PREFLIGHT_TEST_DB` | `local` or `container` | `local` |
//! | `PREFLIGHT_PG_IMAGE` | the image for `container` | [`DEFAULT_PG_IMAGE`](super::DEFAULT_PG_IMAGE) |
//! | `PREFLIGHT_PG_BIN` | the bin folder for `local` | found like `--db local` does |
//! | `PREFLIGHT_TEST_ROWS` | orders per tenant | 20000 |
//! | `PREFLIGHT_FIXTURES` | the fixtures folder | `fixtures/shop` of the workspace |
//!
//! | `CI` | set (not `0`/`false`): a test whose prerequisite is missing fails ([`prerequisite_missing`]) | unset |
//!
//! It is not behind `cfg(test)` because other crates' tests call it.

use std::path::{Path, PathBuf};

use super::{default_image, provision, Database, Db, FixtureOptions};

/// Whether this is a CI run: `CI` is set to anything but empty, `0` or `false` (CI services
/// set `CI=true`).
pub fn in_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !(v.is_empty() || v == "0" || v == "false")
    })
}

/// Called by a test whose prerequisite (a container image, a model server, a browser, ...) is
/// missing, just before it returns without testing anything. Under CI ([`in_ci`]) it panics
/// with `reason`: a green CI run means every test ran. Elsewhere it prints a banner on the
/// process's real stderr, past the test harness's output capture, so a local skip is seen.
pub fn prerequisite_missing(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: a prerequisite is missing and CI does not skip tests: {reason}");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n******** SKIPPED {test}: {reason} (under CI=true this test fails instead) ********\n"
    );
}

/// A fresh database for one test, torn down when dropped. Panics with the full error when
/// provisioning fails: this is for tests only.
pub async fn database() -> Database {
    let db = match test_db() {
        Ok(db) => db,
        Err(message) => panic!("{message}"),
    };
    let options = match test_fixture_options() {
        Ok(options) => options,
        Err(message) => panic!("{message}"),
    };
    match provision(&db, &options).await {
        Ok(database) => database,
        Err(e) => panic!(
            "test database ({db:?}, fixtures {}) could not be provisioned:\n{}",
            options.dir.display(),
            e.report()
        ),
    }
}

/// The backend `PREFLIGHT_TEST_DB` asks for.
pub fn test_db() -> Result<Db, String> {
    let choice = std::env::var("PREFLIGHT_TEST_DB").unwrap_or_default();
    match choice.trim() {
        "" | "local" => Ok(Db::Local {
            bin_dir: std::env::var_os("PREFLIGHT_PG_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }),
        "container" => Ok(Db::Container {
            image: default_image(),
        }),
        other => Err(format!(
            "PREFLIGHT_TEST_DB={other:?}: expected `local` or `container`"
        )),
    }
}

/// The shop fixtures at `PREFLIGHT_TEST_ROWS` rows per tenant.
pub fn test_fixture_options() -> Result<FixtureOptions, String> {
    let rows = match std::env::var("PREFLIGHT_TEST_ROWS") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("PREFLIGHT_TEST_ROWS={v:?}: expected a whole number"))?,
        _ => FixtureOptions::DEFAULT_ROWS,
    };
    Ok(FixtureOptions {
        rows,
        ..FixtureOptions::new(fixtures_dir())
    })
}

/// `PREFLIGHT_FIXTURES`, else `fixtures/shop` in the workspace of the crate under test (found
/// from `CARGO_MANIFEST_DIR` upwards), else the one beside this crate's source.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PREFLIGHT_FIXTURES").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let from_manifest = std::env::var_os("CARGO_MANIFEST_DIR").and_then(|dir| {
        Path::new(&dir)
            .ancestors()
            .map(|a| a.join("fixtures/shop"))
            .find(|candidate| candidate.is_dir())
    });
    from_manifest.unwrap_or_else(|| workspace_root().join("fixtures/shop"))
}

/// The workspace root this crate was built in.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::means_ci;

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for v in ["true", "1", "yes", "TRUE", " true "] {
            assert!(means_ci(Some(v)), "{v:?}");
        }
        for v in [None, Some(""), Some("0"), Some("false"), Some("False")] {
            assert!(!means_ci(v), "{v:?}");
        }
    }
}
