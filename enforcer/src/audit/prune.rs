//! Retention (AUD-6): remove only what the policy's retention allows, keep the chain verifiable.
//!
//! The live log (the Postgres table or the JSONL file) is the **hot** tier. Retention in the
//! policy is `hot / warm / cold` days. A record may leave the live log:
//! - after `hot_days`, only when it is first written to an archive (the warm copy): a JSONL
//!   file in the chained format, verified before anything is removed;
//! - after the whole retention (`hot + warm + cold` days), without an archive: nothing needs
//!   to keep it any more.
//!
//! Either way the cut is recorded where a verifier starts: Postgres records it in
//! `preflight_audit.chain_checkpoints` and appends an `audit_prune` record to the chain (see
//! `fixtures/shop/55_audit_retention.sql`); a pruned JSONL file starts with a checkpoint line
//! (`{"checkpoint": {"cut_id", "cut_hash", ...}}`) and the first kept record links to its hash.
//! An archive that does not start at the genesis starts with such a line too, so archives
//! verify on their own and chain onto each other.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

use super::canonical::{format_time, ChainedRecord, GENESIS_HASH};
use super::jsonl::{parse_line, JsonlCheckpointLine, JsonlCut, JsonlLine};
use super::subject::read_records;
use super::verify::{verify_jsonl, VerifyError};
use crate::policy::Retention;

/// What a prune may remove, decided from the policy's retention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// Records older than this many days leave the live log.
    pub keep_days: u32,
    /// Where they are archived first; required when `keep_days` is shorter than the whole
    /// retention.
    pub archive: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("the policy sets no audit retention; refusing to prune (set audit.retention)")]
    NoRetention,
    #[error(
        "records younger than the whole retention ({total} days) may only leave the live log through an archive; pass --archive FILE or keep {total} days"
    )]
    ArchiveRequired { total: u32 },
    #[error("keeping {keep} days would remove records still in the hot tier ({hot} days)")]
    InsideHotTier { keep: u32, hot: u32 },
    #[error("archive {path} already exists; choose a new file")]
    ArchiveExists { path: String },
    #[error("the log's chain is broken ({detail}); refusing to prune a log that does not verify")]
    Broken { detail: String },
    #[error("the archive {path} did not verify after writing; nothing was removed")]
    ArchiveUnverified { path: String },
    #[error("i/o on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the database refused the prune")]
    Database {
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{path}:{line}: not a valid audit record")]
    Parse {
        path: String,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PruneError + '_ {
    move |source| PruneError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Checks a requested plan against the policy's retention.
pub fn plan(
    retention: Option<&Retention>,
    keep_days: Option<u32>,
    archive: Option<PathBuf>,
) -> Result<PrunePlan, PruneError> {
    let r = retention.ok_or(PruneError::NoRetention)?;
    let total = r
        .hot_days
        .saturating_add(r.warm_days)
        .saturating_add(r.cold_days);
    let keep = keep_days.unwrap_or(if archive.is_some() { r.hot_days } else { total });
    if keep < r.hot_days {
        return Err(PruneError::InsideHotTier {
            keep,
            hot: r.hot_days,
        });
    }
    if keep < total && archive.is_none() {
        return Err(PruneError::ArchiveRequired { total });
    }
    Ok(PrunePlan {
        keep_days: keep.max(1),
        archive,
    })
}

/// What a prune did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneOutcome {
    /// The id of the last removed record, and its hash (the kept chain links to it).
    pub cut: Option<(i64, String)>,
    pub removed: i64,
    pub older_than: String,
    pub archived_to: Option<String>,
}

fn cutoff_text(keep_days: u32) -> (chrono::DateTime<chrono::Utc>, String) {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(keep_days));
    (cutoff, format_time(cutoff))
}

fn create_new(path: &Path) -> Result<File, PruneError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PruneError::ArchiveExists {
                    path: path.display().to_string(),
                }
            } else {
                PruneError::Io {
                    path: path.display().to_string(),
                    source: e,
                }
            }
        })
}

fn write_line<T: Serialize>(w: &mut impl Write, v: &T, path: &Path) -> Result<(), PruneError> {
    let mut line = serde_json::to_vec(v).map_err(|e| PruneError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    line.push(b'\n');
    w.write_all(&line).map_err(io(path))
}

/// A log that does not verify is never pruned (nor previewed): the cut would hide the evidence.
fn refuse_broken(report: &super::verify::VerifyReport) -> Result<(), PruneError> {
    match &report.first_break {
        Some(b) => Err(PruneError::Broken {
            detail: b.detail.clone(),
        }),
        None => Ok(()),
    }
}

/// Prunes `preflight_audit.audit_log` through `preflight_audit.prune` (owner connection).
pub async fn prune_postgres(
    conn: &mut PgConnection,
    plan: &PrunePlan,
    policy_hash: &str,
    note: Option<&str>,
) -> Result<PruneOutcome, PruneError> {
    let db = |source| PruneError::Database { source };
    let (cutoff, older_than) = cutoff_text(plan.keep_days);
    // Refuse to prune a log that does not verify: the cut would hide the evidence.
    let report = super::verify::verify_postgres(conn, None).await?;
    refuse_broken(&report)?;
    let mut max_cut: Option<i64> = None;
    let mut archived_to = None;
    if let Some(path) = &plan.archive {
        // Archive every record the prune could remove, then bound the prune to them.
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT max(id) FROM preflight_audit.audit_log WHERE at < $1 \
               AND id < coalesce((SELECT min(id) FROM preflight_audit.audit_log WHERE at >= $1), 9223372036854775807)",
        )
        .bind(cutoff)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        let Some(last) = last else {
            return Ok(PruneOutcome {
                cut: None,
                removed: 0,
                older_than,
                archived_to: None,
            });
        };
        let start: (i64, String) = if report.start.after_id > 0 {
            (report.start.after_id, report.start.hash.clone())
        } else {
            (0, GENESIS_HASH.to_string())
        };
        let file = create_new(path)?;
        let mut w = BufWriter::new(file);
        if start.0 > 0 {
            write_line(
                &mut w,
                &JsonlCheckpointLine {
                    checkpoint: JsonlCut {
                        cut_id: start.0,
                        cut_hash: start.1.clone(),
                        removed: start.0,
                        pruned_at: super::canonical::now_text(),
                        older_than: "an earlier prune".to_string(),
                    },
                },
                path,
            )?;
        }
        let mut after = start.0;
        loop {
            let batch = read_records(conn, after, 10_000).await.map_err(db)?;
            let mut done = batch.is_empty();
            for r in batch {
                if r.id > last {
                    done = true;
                    break;
                }
                after = r.id;
                write_line(&mut w, &r, path)?;
            }
            if done || after >= last {
                break;
            }
        }
        let file = w.into_inner().map_err(|e| PruneError::Io {
            path: path.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(path))?;
        let check = verify_jsonl(path, None)?;
        if !check.intact() || check.head.as_ref().map(|h| h.0) != Some(last) {
            return Err(PruneError::ArchiveUnverified {
                path: path.display().to_string(),
            });
        }
        max_cut = Some(last);
        archived_to = Some(path.display().to_string());
    }
    let mut tx = conn.begin().await.map_err(db)?;
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT cut_id, cut_hash, removed FROM preflight_audit.prune(make_interval(days => $1), $2, $3, $4)",
    )
    .bind(plan.keep_days as i32)
    .bind(policy_hash)
    .bind(note)
    .bind(max_cut)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(match row {
        Some((cut_id, cut_hash, removed)) => PruneOutcome {
            cut: Some((cut_id, cut_hash)),
            removed,
            older_than,
            archived_to,
        },
        None => PruneOutcome {
            cut: None,
            removed: 0,
            older_than,
            archived_to,
        },
    })
}

/// Prunes a JSONL log: removed records go to the archive (when given), the kept ones are
/// rewritten after a checkpoint line into a temporary file that atomically replaces the log.
/// The log must not be open in a sink meanwhile (the sink's file lock makes this fail then).
pub fn prune_jsonl(path: &Path, plan: &PrunePlan) -> Result<PruneOutcome, PruneError> {
    let (_, older_than) = cutoff_text(plan.keep_days);
    let report = verify_jsonl(path, None)?;
    refuse_broken(&report)?;
    // Hold the writer lock while rewriting, so no sink appends to the old file meanwhile.
    let _guard = super::jsonl::JsonlSink::open(path, "preflight-prune", super::FsyncPolicy::Always)
        .map_err(|e| PruneError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    let reader = BufReader::new(File::open(path).map_err(io(path))?);
    let mut records: Vec<ChainedRecord> = Vec::new();
    let mut start: Option<JsonlCut> = None;
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.is_empty() {
            continue;
        }
        match parse_line(&line).map_err(|source| PruneError::Parse {
            path: path.display().to_string(),
            line: n as u64 + 1,
            source,
        })? {
            JsonlLine::Checkpoint(c) => start = Some(c),
            JsonlLine::Record(r) => records.push(*r),
        }
    }
    // `at` only grows along the chain; the cut is the longest prefix older than the cutoff.
    let cut_len = records.iter().take_while(|r| r.at < older_than).count();
    if cut_len == 0 {
        return Ok(PruneOutcome {
            cut: None,
            removed: 0,
            older_than,
            archived_to: None,
        });
    }
    let last = &records[cut_len - 1];
    let mut archived_to = None;
    if let Some(archive) = &plan.archive {
        let file = create_new(archive)?;
        let mut w = BufWriter::new(file);
        if let Some(s) = &start {
            write_line(
                &mut w,
                &JsonlCheckpointLine {
                    checkpoint: s.clone(),
                },
                archive,
            )?;
        }
        for r in &records[..cut_len] {
            write_line(&mut w, r, archive)?;
        }
        let file = w.into_inner().map_err(|e| PruneError::Io {
            path: archive.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(archive))?;
        let check = verify_jsonl(archive, None)?;
        if !check.intact() {
            return Err(PruneError::ArchiveUnverified {
                path: archive.display().to_string(),
            });
        }
        archived_to = Some(archive.display().to_string());
    }
    let previously = start.as_ref().map(|s| s.removed).unwrap_or(0);
    let cut = JsonlCut {
        cut_id: last.id,
        cut_hash: last.hash.clone(),
        removed: previously + cut_len as i64,
        pruned_at: super::canonical::now_text(),
        older_than: older_than.clone(),
    };
    let tmp = path.with_extension("jsonl.prune-tmp");
    {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let mut w = BufWriter::new(file);
        write_line(
            &mut w,
            &JsonlCheckpointLine {
                checkpoint: cut.clone(),
            },
            &tmp,
        )?;
        for r in &records[cut_len..] {
            write_line(&mut w, r, &tmp)?;
        }
        let file = w.into_inner().map_err(|e| PruneError::Io {
            path: tmp.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io(&tmp))?;
    }
    let check = verify_jsonl(&tmp, None)?;
    if !check.intact() {
        let _ = std::fs::remove_file(&tmp);
        return Err(PruneError::Broken {
            detail: "the rewritten log did not verify".to_string(),
        });
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
    Ok(PruneOutcome {
        cut: Some((cut.cut_id, cut.cut_hash)),
        removed: cut_len as i64,
        older_than,
        archived_to,
    })
}

/// What a prune with a plan would remove now (`preflight audit prune --dry-run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePreview {
    /// The cutoff: records older than this may go.
    pub older_than: String,
    /// Records that would leave the live log.
    pub removed: i64,
    /// The first and the last of them (id, time).
    pub first: Option<(i64, String)>,
    pub last: Option<(i64, String)>,
    /// Records that would stay (before the prune's own `audit_prune` record, for Postgres).
    pub kept: i64,
    /// Where they would be archived first.
    pub archive: Option<String>,
}

/// Previews [`prune_postgres`] without changing anything: the same refusal of a log that does
/// not verify, the same cut (the longest run of records older than the cutoff from the start).
pub async fn preview_postgres(
    conn: &mut PgConnection,
    plan: &PrunePlan,
) -> Result<PrunePreview, PruneError> {
    let db = |source| PruneError::Database { source };
    let (cutoff, older_than) = cutoff_text(plan.keep_days);
    let report = super::verify::verify_postgres(conn, None).await?;
    refuse_broken(&report)?;
    let (removed, first_id, first_at, last_id, last_at, total): (
        i64,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<String>,
        i64,
    ) = sqlx::query_as(
        "WITH bound AS ( \
           SELECT coalesce((SELECT min(id) - 1 FROM preflight_audit.audit_log WHERE at >= $1), \
                           (SELECT max(id) FROM preflight_audit.audit_log)) AS cut), \
         gone AS (SELECT a.id, a.at FROM preflight_audit.audit_log a, bound WHERE a.id <= bound.cut) \
         SELECT (SELECT count(*) FROM gone), \
                (SELECT min(id) FROM gone), \
                (SELECT to_char(min(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM gone), \
                (SELECT max(id) FROM gone), \
                (SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM gone), \
                (SELECT count(*) FROM preflight_audit.audit_log)",
    )
    .bind(cutoff)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    Ok(PrunePreview {
        older_than,
        removed,
        first: first_id.zip(first_at),
        last: last_id.zip(last_at),
        kept: total - removed,
        archive: plan.archive.as_ref().map(|p| p.display().to_string()),
    })
}

/// Previews [`prune_jsonl`] without changing anything.
pub fn preview_jsonl(path: &Path, plan: &PrunePlan) -> Result<PrunePreview, PruneError> {
    let (_, older_than) = cutoff_text(plan.keep_days);
    let report = verify_jsonl(path, None)?;
    refuse_broken(&report)?;
    let reader = BufReader::new(File::open(path).map_err(io(path))?);
    let (mut removed, mut kept) = (0i64, 0i64);
    let (mut first, mut last) = (None, None);
    let mut cutting = true;
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.is_empty() {
            continue;
        }
        let parsed = parse_line(&line).map_err(|source| PruneError::Parse {
            path: path.display().to_string(),
            line: n as u64 + 1,
            source,
        })?;
        let JsonlLine::Record(r) = parsed else {
            continue;
        };
        // `at` only grows along the chain; the cut is the longest prefix older than the cutoff.
        if cutting && r.at < older_than {
            removed += 1;
            if first.is_none() {
                first = Some((r.id, r.at.clone()));
            }
            last = Some((r.id, r.at));
        } else {
            cutting = false;
            kept += 1;
        }
    }
    Ok(PrunePreview {
        older_than,
        removed,
        first,
        last,
        kept,
        archive: plan.archive.as_ref().map(|p| p.display().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Retention {
        Retention {
            hot_days: 90,
            warm_days: 365,
            cold_days: 2555,
        }
    }

    #[test]
    fn plan_follows_retention() {
        assert!(matches!(
            plan(None, None, None),
            Err(PruneError::NoRetention)
        ));
        assert_eq!(plan(Some(&r()), None, None).unwrap().keep_days, 3010);
        assert!(matches!(
            plan(Some(&r()), Some(100), None),
            Err(PruneError::ArchiveRequired { total: 3010 })
        ));
        assert!(matches!(
            plan(Some(&r()), Some(30), Some("a".into())),
            Err(PruneError::InsideHotTier { .. })
        ));
        assert_eq!(
            plan(Some(&r()), None, Some("a".into())).unwrap().keep_days,
            90
        );
    }
}
