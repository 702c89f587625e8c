//! [`write_all`]: renders the report files into a directory. Each file is written to a
//! temporary sibling and renamed into place, so a reader (a CI artifact upload, a browser
//! refresh) never sees a half-written report, and a failed run leaves the previous file intact.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checklist::Checklist;
use crate::model::Report;
use crate::redact::Scrubbed;
use crate::render;

/// The files [`write_all`] produces, in the order it returns them.
pub const REPORT_FILES: [&str; 7] = [
    "report.json",
    "report.md",
    "report.html",
    "junit.xml",
    "results.sarif",
    "checklist.md",
    "checklist.json",
];

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create the report directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot render {file}")]
    Render {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes every report file into `out_dir` (created if missing) with the embedded checklist.
pub fn write_all(report: &Report, out_dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    write_all_with(report, &Checklist::embedded(), out_dir)
}

/// Writes every report file, rendering `checklist.md`, `checklist.json` and the SARIF rule help from `checklist`.
pub fn write_all_with(
    report: &Report,
    checklist: &Checklist,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    // Scrub once for every file; each renderer takes only a scrubbed report.
    let report = Scrubbed::new(report);
    type Render = fn(&Scrubbed, &Checklist, &mut Vec<u8>) -> std::io::Result<()>;
    let renderers: [(&'static str, Render); 7] = [
        ("report.json", |r, _, w| render::json::render_scrubbed(r, w)),
        ("report.md", |r, _, w| {
            w.extend_from_slice(render::markdown::render_scrubbed(r).as_bytes());
            Ok(())
        }),
        ("report.html", |r, _, w| {
            w.extend_from_slice(render::html::render_scrubbed(r).as_bytes());
            Ok(())
        }),
        ("junit.xml", |r, _, w| {
            w.extend_from_slice(render::junit::render_scrubbed(r).as_bytes());
            Ok(())
        }),
        ("results.sarif", |r, c, w| {
            serde_json::to_writer_pretty(&mut *w, &render::sarif::to_value_scrubbed(r, c))?;
            w.push(b'\n');
            Ok(())
        }),
        ("checklist.md", |r, c, w| {
            w.extend_from_slice(render::checklist::render_scrubbed(r, c).as_bytes());
            Ok(())
        }),
        ("checklist.json", |r, c, w| {
            serde_json::to_writer_pretty(&mut *w, &render::checklist::to_json_scrubbed(r, c))?;
            w.push(b'\n');
            Ok(())
        }),
    ];
    let mut paths = Vec::with_capacity(renderers.len());
    for (file, render) in renderers {
        let mut buf: Vec<u8> = Vec::new();
        render(&report, checklist, &mut buf)
            .map_err(|source| ReportError::Render { file, source })?;
        let path = out_dir.join(file);
        write_atomically(&path, &buf).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        paths.push(path);
    }
    Ok(paths)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".preflight-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Reports are read by people and CI uploaders, not only by us: the temp file's 0600 would
    // make them unreadable to anyone else, unlike a file created the usual way.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
