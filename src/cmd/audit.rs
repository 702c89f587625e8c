//! `preflight audit verify | checkpoint | view | subject | prune`: the tamper-evident audit log
//! from the database (the owner connection, `--url` / `PREFLIGHT_AUDIT_DB_URL`) or a JSONL file
//! (`--jsonl`).
//!
//! Exit codes: 0 the chain verifies (and the command did what it says); 1 the chain is broken or
//! does not match the checkpoint (the first break is printed: kind, id, position, detail), also
//! when a prune or checkpoint is refused because of it; 2 bad flags, files or policy; 3 the
//! database cannot be reached.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use preflight_enforcer::audit::canonical::{now_text, GENESIS_HASH};
use preflight_enforcer::audit::prune::{self, PruneError, PrunePlan};
use preflight_enforcer::audit::render;
use preflight_enforcer::audit::subject::{
    resolve_subject, subject_jsonl, subject_postgres, SubjectError,
};
use preflight_enforcer::audit::verify::{VerifyError, CHECKPOINT_FORMAT};
use preflight_enforcer::audit::views::{self, SavedView, ViewError};
use preflight_enforcer::audit::{verify_jsonl, verify_postgres, Checkpoint, VerifyReport};
use preflight_enforcer::policy::Catalog;
use serde_json::json;

use crate::cmd::audit_args::{
    chain, connect, failure, print, print_json, status, Format, PolicyArg, Source, SourceArgs,
};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain and name the first broken link: an edited, deleted, inserted or
    /// reordered record, or a truncated tail (against --checkpoint, and for the database its
    /// own chain head).
    Verify(VerifyArgs),
    /// Verify the log, then save its head (record count and hash) to a file kept outside the
    /// database's reach; `verify --checkpoint FILE` then detects a truncated tail. An existing
    /// checkpoint file is verified against first and only replaced when the log still holds it.
    Checkpoint(CheckpointArgs),
    /// Show a saved view for the security team (without NAME: list them).
    View(ViewArgs),
    /// Every operation that involved a data subject (a data subject access request): by a value
    /// such as an email, resolved through the policy's sensitive columns, or by `model:id`.
    Subject(SubjectArgs),
    /// Remove the records the policy's retention lets go, keeping the chain verifiable (a
    /// checkpoint record at the cut); --dry-run shows what would go.
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// A checkpoint file saved by `preflight audit checkpoint`: the log must still hold its
    /// head record with the same hash.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Where the checkpoint goes (JSON).
    pub file: PathBuf,

    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args, Debug)]
pub struct ViewArgs {
    /// The view: denials_by_code, writes_with_reasons, cross_tenant_attempts, slowest_calls,
    /// subject_access. Without it, the views are listed.
    pub name: Option<String>,

    #[command(flatten)]
    pub source: SourceArgs,

    /// Show at most this many rows.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u64,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct SubjectArgs {
    /// The subject: a value (an email, a phone number) or a row as `model:id` (customers:17).
    pub value: String,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub policy: PolicyArg,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub policy: PolicyArg,

    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Archive the removed records to this new JSONL file first (it must not exist). Needed to
    /// remove records younger than the whole retention (hot + warm + cold); with it, records
    /// leave the live log after the hot tier.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// Keep this many days instead of what the retention implies (never fewer than the hot
    /// tier; fewer than the whole retention needs --archive).
    #[arg(long, value_name = "DAYS")]
    pub keep_days: Option<u32>,

    /// A note recorded with the prune in the log (database only).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn run(command: AuditCommand) -> CmdResult {
    match command {
        AuditCommand::Verify(args) => verify(args).await,
        AuditCommand::Checkpoint(args) => checkpoint(args).await,
        AuditCommand::View(args) => view(args).await,
        AuditCommand::Subject(args) => subject(args).await,
        AuditCommand::Prune(args) => prune(args).await,
    }
}

/// Runs file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::infra(format!("internal error: {e}")))?
}

fn verify_error(e: VerifyError) -> CliError {
    match &e {
        VerifyError::Database { .. } => failure(&e),
        VerifyError::CopyFormat { .. } => CliError::infra(chain(&e)),
        VerifyError::Io { .. }
        | VerifyError::BadCheckpoint { .. }
        | VerifyError::CheckpointFormat { .. }
        | VerifyError::CheckpointSource { .. } => CliError::config(chain(&e)),
    }
}

async fn run_verify(
    source: &Source,
    checkpoint: Option<Checkpoint>,
) -> Result<VerifyReport, CliError> {
    match source {
        Source::Postgres { url } => {
            let mut conn = connect(url).await?;
            verify_postgres(&mut conn, checkpoint)
                .await
                .map_err(verify_error)
        }
        Source::Jsonl(path) => {
            let path = path.clone();
            blocking(move || verify_jsonl(&path, checkpoint).map_err(verify_error)).await
        }
    }
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint, CliError> {
    Checkpoint::read(path).map_err(verify_error)
}

async fn verify(args: VerifyArgs) -> CmdResult {
    let source = args.source.resolve()?;
    let checkpoint = args
        .checkpoint
        .as_deref()
        .map(read_checkpoint)
        .transpose()?;
    let report = run_verify(&source, checkpoint).await?;
    match args.format {
        Format::Table => print(&render::verify_text(&report, &source.shown()))?,
        Format::Json => {
            let mut v = serde_json::to_value(&report)
                .map_err(|e| CliError::infra(format!("cannot render JSON: {e}")))?;
            v["intact"] = json!(report.intact());
            v["location"] = json!(source.shown());
            print_json(&v)?;
        }
    }
    Ok(Outcome::from_all_passed(report.intact()))
}

async fn checkpoint(args: CheckpointArgs) -> CmdResult {
    let source = args.source.resolve()?;
    // An existing checkpoint is the previous head: the log must still hold it before the file
    // may move on, or a rolling checkpoint would bless a truncation.
    let previous = if args.file.exists() {
        Some(read_checkpoint(&args.file).map_err(|e| {
            CliError::config(format!(
                "{e}; remove it or choose another file for the new checkpoint"
            ))
        })?)
    } else {
        None
    };
    let had_previous = previous.is_some();
    let report = run_verify(&source, previous).await?;
    if !report.intact() {
        print(&render::verify_text(&report, &source.shown()))?;
        status(format!(
            "checkpoint not written: the log does not verify; {} is unchanged",
            args.file.display()
        ));
        return Ok(Outcome::Findings);
    }
    let (head_id, head_hash) = report.head.clone().unwrap_or((0, GENESIS_HASH.to_string()));
    let cp = Checkpoint {
        format: CHECKPOINT_FORMAT.to_string(),
        source: match source {
            Source::Postgres { .. } => "postgres",
            Source::Jsonl(_) => "jsonl",
        }
        .to_string(),
        head_id,
        head_hash: head_hash.clone(),
        created_at: now_text(),
    };
    write_checkpoint(&cp, &args.file)?;
    let mut text = format!(
        "checkpoint saved to {}: record {head_id}, hash {head_hash} ({} records verified)\n",
        args.file.display(),
        report.records
    );
    if had_previous {
        text.push_str("the previous checkpoint in that file matched the log\n");
    }
    text.push_str("keep it where the database's owner cannot change it\n");
    print(&text)?;
    Ok(Outcome::Passed)
}

/// Writes beside the target, then renames: a crash never leaves half a checkpoint.
fn write_checkpoint(cp: &Checkpoint, path: &Path) -> Result<(), CliError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    cp.write(&tmp)
        .map_err(|e| CliError::config(format!("cannot write the checkpoint: {}", chain(&e))))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::config(format!(
            "cannot write the checkpoint {}: {e}",
            path.display()
        ))
    })
}

fn view_list() -> String {
    let width = SavedView::ALL
        .iter()
        .map(|v| v.name().len())
        .max()
        .unwrap_or(0);
    SavedView::ALL
        .iter()
        .map(|v| format!("  {:width$}  {}\n", v.name(), v.about()))
        .collect()
}

fn view_error(e: ViewError) -> CliError {
    match &e {
        ViewError::Database { .. } => failure(&e),
        ViewError::Missing { .. }
        | ViewError::Shape { .. }
        | ViewError::Io { .. }
        | ViewError::Parse { .. } => CliError::config(chain(&e)),
    }
}

async fn view(args: ViewArgs) -> CmdResult {
    let Some(name) = &args.name else {
        print(&format!(
            "saved views (preflight audit view NAME):\n{}",
            view_list()
        ))?;
        return Ok(Outcome::Passed);
    };
    let Some(view) = SavedView::parse(name) else {
        return Err(CliError::config(format!(
            "unknown view {name:?}; the saved views are:\n{}",
            view_list().trim_end()
        )));
    };
    let source = args.source.resolve()?;
    let limit = args.limit;
    let rows = match &source {
        Source::Postgres { url } => {
            let mut conn = connect(url).await?;
            views::query_postgres(&mut conn, view, limit)
                .await
                .map_err(view_error)?
        }
        Source::Jsonl(path) => {
            let path = path.clone();
            blocking(move || views::query_jsonl(&path, view, limit).map_err(view_error)).await?
        }
    };
    match args.format {
        Format::Json => print_json(&rows)?,
        Format::Table => {
            let mut text = format!("{}: {}\n", view.name(), view.about());
            if rows.rows.is_empty() {
                text.push_str("no rows\n");
            } else {
                text.push_str(&render::view_table(&rows));
                text.push('\n');
                text.push_str(&format!("{} of {} rows\n", rows.rows.len(), rows.total));
            }
            print(&text)?;
        }
    }
    Ok(Outcome::Passed)
}

fn subject_error(e: SubjectError) -> CliError {
    match &e {
        SubjectError::Database { .. } | SubjectError::Resolve { .. } => failure(&e),
        SubjectError::Io { .. } | SubjectError::Parse { .. } => CliError::config(chain(&e)),
    }
}

/// `customers:17`: a subject already named as a row.
fn is_row_ref(value: &str) -> bool {
    match value.split_once(':') {
        Some((model, id)) => {
            !model.is_empty()
                && model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !id.is_empty()
                && !id.contains(char::is_whitespace)
        }
        None => false,
    }
}

async fn subject(args: SubjectArgs) -> CmdResult {
    let value = args.value.trim().to_string();
    if value.is_empty() {
        return Err(CliError::config(
            "the subject is empty: give a value (an email, a phone number) or model:id",
        ));
    }
    let source = args.source.resolve()?;
    let (resolved, hits) = match &source {
        Source::Postgres { url } => {
            // A malformed policy is reported before connecting.
            args.policy.load(None)?;
            let mut conn = connect(url).await?;
            let catalog = Catalog::read_conn(&mut conn)
                .await
                .map_err(|e| failure(&e))?;
            let policy = args.policy.load(Some(&catalog))?;
            let resolved = resolve_subject(&mut conn, &policy, &value)
                .await
                .map_err(subject_error)?;
            let hits = subject_postgres(&mut conn, &value, &resolved)
                .await
                .map_err(subject_error)?;
            (Some(resolved), hits)
        }
        Source::Jsonl(path) => {
            if !is_row_ref(&value) {
                status(
                    "note: a JSONL log is searched without resolving the value to rows (that needs \
                     the database, --url); sensitive values are redacted in the log, so also ask \
                     for the subject's rows as model:id (e.g. customers:17)",
                );
            }
            let path = path.clone();
            let v = value.clone();
            let hits =
                blocking(move || subject_jsonl(&path, &v, &[]).map_err(subject_error)).await?;
            (None, hits)
        }
    };
    match args.format {
        Format::Json => print_json(&json!({
            "subject": value,
            "source": source.shown(),
            "resolved": resolved,
            "operations": hits,
        }))?,
        Format::Table => {
            let mut text = format!("subject: {value}\n");
            match &resolved {
                Some(r) if r.is_empty() => text.push_str(
                    "resolved: no row holds this value in a column the policy treats as sensitive\n",
                ),
                Some(r) => text.push_str(&format!(
                    "resolved through the policy's sensitive columns to: {}\n",
                    r.join(", ")
                )),
                None => {}
            }
            if hits.is_empty() {
                text.push_str("no audited operation involved this subject\n");
            } else {
                text.push_str(&render::subject_table(&hits));
                text.push('\n');
                text.push_str(&format!(
                    "{} operation{}\n",
                    hits.len(),
                    if hits.len() == 1 { "" } else { "s" }
                ));
            }
            print(&text)?;
        }
    }
    Ok(Outcome::Passed)
}

/// How a prune error ends the command: a broken chain is a finding (exit 1, nothing removed).
fn prune_failure(e: PruneError) -> CmdResult {
    match e {
        PruneError::Broken { .. } => {
            status(format!("refused: {}", chain(&e)));
            status("run `preflight audit verify` for the first broken link; nothing was removed");
            Ok(Outcome::Findings)
        }
        PruneError::Verify(v) => Err(verify_error(v)),
        PruneError::Database { .. } => Err(failure(&e)),
        PruneError::Io { .. } | PruneError::ArchiveUnverified { .. } => {
            Err(CliError::infra(chain(&e)))
        }
        PruneError::NoRetention
        | PruneError::ArchiveRequired { .. }
        | PruneError::InsideHotTier { .. }
        | PruneError::ArchiveExists { .. }
        | PruneError::Parse { .. } => Err(CliError::config(chain(&e))),
    }
}

fn describe_plan(plan: &PrunePlan) -> String {
    match &plan.archive {
        Some(a) => format!(
            "records older than {} days leave the live log, archived first to {}",
            plan.keep_days,
            a.display()
        ),
        None => format!(
            "records older than {} days (the whole retention) leave the live log",
            plan.keep_days
        ),
    }
}

async fn prune(args: PruneArgs) -> CmdResult {
    let source = args.source.resolve()?;
    let policy = args.policy.load(None)?;
    let plan = match prune::plan(
        policy.audit.retention.as_ref(),
        args.keep_days,
        args.archive.clone(),
    ) {
        Ok(p) => p,
        Err(e) => return prune_failure(e),
    };
    if let Some(a) = &plan.archive {
        if a.exists() {
            return Err(CliError::config(format!(
                "--archive {}: the file exists; an archive is always a new file",
                a.display()
            )));
        }
    }
    if args.note.is_some() && matches!(source, Source::Jsonl(_)) {
        return Err(CliError::config(
            "--note is recorded in the database's audit_prune record; a JSONL prune has no place for it",
        ));
    }
    status(format!("{}: {}", source.shown(), describe_plan(&plan)));
    if args.dry_run {
        let preview = match &source {
            Source::Postgres { url } => {
                let mut conn = connect(url).await?;
                prune::preview_postgres(&mut conn, &plan).await
            }
            Source::Jsonl(path) => {
                let path = path.clone();
                let plan = plan.clone();
                tokio::task::spawn_blocking(move || prune::preview_jsonl(&path, &plan))
                    .await
                    .map_err(|e| CliError::infra(format!("internal error: {e}")))?
            }
        };
        let preview = match preview {
            Ok(p) => p,
            Err(e) => return prune_failure(e),
        };
        match args.format {
            Format::Json => print_json(&json!({"dry_run": true, "preview": preview}))?,
            Format::Table => {
                let mut text = format!(
                    "dry run: nothing is removed\ncutoff: {}\n",
                    preview.older_than
                );
                match (&preview.first, &preview.last) {
                    (Some((a, at_a)), Some((b, at_b))) => text.push_str(&format!(
                        "would remove {} record{} (ids {a}..={b}, {at_a} to {at_b}){}\n",
                        preview.removed,
                        if preview.removed == 1 { "" } else { "s" },
                        preview
                            .archive
                            .as_ref()
                            .map(|p| format!(", archived first to {p}"))
                            .unwrap_or_default()
                    )),
                    _ => {
                        text.push_str("would remove nothing: no record is older than the cutoff\n")
                    }
                }
                text.push_str(&format!(
                    "would keep {} record{}\n",
                    preview.kept,
                    if preview.kept == 1 { "" } else { "s" }
                ));
                print(&text)?;
            }
        }
        return Ok(Outcome::Passed);
    }
    let (outcome, report) = match &source {
        Source::Postgres { url } => {
            let mut conn = connect(url).await?;
            let outcome =
                match prune::prune_postgres(&mut conn, &plan, &policy.hash, args.note.as_deref())
                    .await
                {
                    Ok(o) => o,
                    Err(e) => return prune_failure(e),
                };
            let report = verify_postgres(&mut conn, None)
                .await
                .map_err(verify_error)?;
            (outcome, report)
        }
        Source::Jsonl(path) => {
            let path = path.clone();
            let plan = plan.clone();
            let done = tokio::task::spawn_blocking(move || {
                prune::prune_jsonl(&path, &plan).map(|o| (o, verify_jsonl(&path, None)))
            })
            .await
            .map_err(|e| CliError::infra(format!("internal error: {e}")))?;
            match done {
                Ok((o, r)) => (o, r.map_err(verify_error)?),
                Err(e) => return prune_failure(e),
            }
        }
    };
    match args.format {
        Format::Json => print_json(&json!({
            "dry_run": false,
            "outcome": outcome,
            "verified_after": {"intact": report.intact(), "report": report},
        }))?,
        Format::Table => {
            let mut text = match &outcome.cut {
                Some((cut_id, cut_hash)) => format!(
                    "removed {} record{} older than {} (through record {cut_id}; the kept chain links to its hash {cut_hash}){}\n",
                    outcome.removed,
                    if outcome.removed == 1 { "" } else { "s" },
                    outcome.older_than,
                    outcome
                        .archived_to
                        .as_ref()
                        .map(|a| format!("; archived to {a}"))
                        .unwrap_or_default()
                ),
                None => format!(
                    "removed nothing: no record is older than {}\n",
                    outcome.older_than
                ),
            };
            text.push_str(&format!(
                "after the prune:\n{}",
                render::verify_text(&report, &source.shown())
            ));
            print(&text)?;
        }
    }
    Ok(Outcome::from_all_passed(report.intact()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_refs() {
        assert!(is_row_ref("customers:17"));
        assert!(is_row_ref("order_items:3"));
        assert!(!is_row_ref("alice@example.com"));
        assert!(!is_row_ref(":17"));
        assert!(!is_row_ref("customers:"));
    }

    #[test]
    fn the_view_list_names_every_view() {
        let list = view_list();
        for v in SavedView::ALL {
            assert!(list.contains(v.name()), "{list}");
        }
    }
}
