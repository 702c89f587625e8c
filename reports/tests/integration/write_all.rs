//! `write_all` end to end: every report file lands in the directory, atomically, readable, free of
//! secrets, and a bad directory is a precise error.

use preflight_reports::testutil::{sample_report, PLANTED_PASSWORD, PLANTED_TOKEN};
use preflight_reports::{write_all, Report, ReportError, REPORT_FILES};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("write-all-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

#[test]
fn writes_every_report_file_and_nothing_else() {
    let dir = tempdir();
    let out = dir.path().join("nested/reports");
    let paths = write_all(&sample_report(), &out).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, REPORT_FILES);
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = REPORT_FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(on_disk, expected, "no temporary files left behind");
    for p in &paths {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() > 500, "{} is nearly empty", p.display());
        assert!(
            !text.contains(PLANTED_PASSWORD),
            "{} leaks the password",
            p.display()
        );
        assert!(
            !text.contains(PLANTED_TOKEN),
            "{} leaks the token",
            p.display()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{}", p.display());
        }
    }
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(back.findings.len(), sample_report().findings.len());
}

#[test]
fn rewrites_replace_previous_files() {
    let dir = tempdir();
    write_all(&sample_report(), dir.path()).unwrap();
    let mut smaller = sample_report();
    smaller.findings.truncate(1);
    write_all(&smaller, dir.path()).unwrap();
    let back: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(back.findings.len(), 1);
}

#[test]
fn a_file_in_the_way_is_a_create_dir_error() {
    let dir = tempdir();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let err = write_all(&sample_report(), &blocker.join("out")).unwrap_err();
    match &err {
        ReportError::CreateDir { path, .. } => assert_eq!(path, &blocker.join("out")),
        other => panic!("expected CreateDir, got {other:?}"),
    }
    assert!(err.to_string().contains("not-a-dir/out"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_directory_where_a_report_goes_is_a_write_error() {
    let dir = tempdir();
    // Renaming a file over a non-empty directory fails for every user, root included.
    std::fs::create_dir_all(dir.path().join("report.html/keep")).unwrap();
    let err = write_all(&sample_report(), dir.path()).unwrap_err();
    match &err {
        ReportError::Write { path, .. } => assert_eq!(path, &dir.path().join("report.html")),
        other => panic!("expected Write, got {other:?}"),
    }
    // Files before it were written; the failed one left no temporary file behind.
    assert!(dir.path().join("report.md").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
