//! `preflight review`: the quarterly review, computed from the audit log.
//!
//! Verifies the chain first (a log that does not verify is reported as such and not reviewed),
//! then writes `review.md`, `review.html` and `review.json` to `--out` with the sections of the
//! review (QRT-1 … QRT-5, OPS-8, drift); the logic lives in `preflight_review`.
//!
//! Exit codes: 0 nothing needs attention, 1 something does (or the chain does not verify),
//! 2 bad input, 3 the database cannot be reached.

use std::path::PathBuf;

use clap::Args;
use preflight_enforcer::policy::Policy;
use preflight_review::source::{review_jsonl, review_postgres, Since, SourceError};
use preflight_review::{render, Inputs, Review, SuiteResult};

use crate::cmd::audit_args::{connect, failure, status, Source, SourceArgs};
use crate::cmd::db_args::DbArgs;
use crate::cmd::policy::{load_spec, run_suite};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Args, Debug)]
// The regression suite needs the fixtures' schema, not a large orders table.
#[command(mut_arg("rows", |a| a.default_value("1000")))]
pub struct ReviewArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// The window: `90d` (days before the log's last record), a date `YYYY-MM-DD`, or an RFC
    /// 3339 time.
    #[arg(long, default_value = "90d", value_name = "90d|DATE")]
    pub since: String,

    /// The current policy (a file, or `REV:path`): its capabilities for the re-read (QRT-1),
    /// the field a denial concerned, and the regression suite's policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<String>,

    /// Earlier policy files whose hashes may appear in the log, so drift can say what changed
    /// (repeatable; files or `REV:path`).
    #[arg(long = "known-policy", value_name = "FILE")]
    pub known: Vec<String>,

    /// The policy's regression cases (QRT-5), run against the built-in layer on a throwaway
    /// database (`--db`). Without it the review says the suite was not run.
    #[arg(long, value_name = "FILE")]
    pub cases: Option<PathBuf>,

    #[command(flatten)]
    pub db: DbArgs,

    /// The folder for review.md, review.html and review.json.
    #[arg(long, default_value = "review", value_name = "DIR")]
    pub out: PathBuf,
}

pub async fn run(args: ReviewArgs) -> CmdResult {
    let since = Since::parse(&args.since).map_err(|e| CliError::config(format!("--since: {e}")))?;
    let source = args.source.resolve()?;
    let policy = args.policy.as_deref().map(load_spec).transpose()?;
    let mut known: Vec<Policy> = args
        .known
        .iter()
        .map(|k| load_spec(k))
        .collect::<Result<_, _>>()?;
    known.extend(policy.iter().cloned());
    let suite = match (&args.cases, &args.policy) {
        (Some(cases), Some(p)) => {
            status(format!(
                "running the regression suite {} ...",
                cases.display()
            ));
            let r = run_suite(cases, p, &args.db).await?;
            SuiteResult::Ran {
                cases: cases.display().to_string(),
                passed: r.passed() as u64,
                failed: r.failed() as u64,
                failures: r
                    .outcomes
                    .iter()
                    .filter(|o| !o.passed)
                    .map(|o| {
                        format!(
                            "line {}: {}: expected {}, got {}",
                            o.line, o.name, o.expected, o.actual
                        )
                    })
                    .collect(),
            }
        }
        (Some(_), None) => {
            return Err(CliError::config(
                "--cases needs --policy: the regression suite tests a policy",
            ))
        }
        (None, _) => {
            SuiteResult::NotRun("no regression cases given: pass --cases FILE with --policy".into())
        }
    };
    let inputs = Inputs {
        policy,
        known,
        suite,
    };
    status(format!("verifying and reviewing {} ...", source.shown()));
    let review = match &source {
        Source::Jsonl(path) => {
            let (path, since_text) = (path.clone(), args.since.clone());
            tokio::task::spawn_blocking(move || review_jsonl(&path, &since, &since_text, &inputs))
                .await
                .map_err(|e| CliError::infra(format!("the review task failed: {e}")))?
                .map_err(source_error)?
        }
        Source::Postgres { url } => {
            let mut conn = connect(url).await?;
            review_postgres(&mut conn, &since, &args.since, &inputs)
                .await
                .map_err(source_error)?
        }
    };
    let files = render::write_all(&review, &args.out).map_err(|e| {
        CliError::infra(format!(
            "cannot write the review to {}: {e}",
            args.out.display()
        ))
    })?;
    summary(&review, &files);
    Ok(Outcome::from_all_passed(!review.needs_attention()))
}

fn source_error(e: SourceError) -> CliError {
    match e {
        SourceError::Parse { .. } => CliError::config(e.to_string()),
        SourceError::Database(_) => failure(&e),
        SourceError::Io(_) | SourceError::Verify(_) => CliError::infra(e.to_string()),
    }
}

fn summary(r: &Review, files: &[PathBuf]) {
    let mut s = if r.chain.verified {
        format!(
            "chain verified ({} records); window {} – {}\n",
            r.chain.records, r.window.from, r.window.to
        )
    } else {
        format!(
            "the audit chain DOES NOT VERIFY: {}\n",
            r.chain.first_break.as_deref().unwrap_or("unknown break")
        )
    };
    if r.attention.is_empty() {
        s.push_str("nothing needs attention\n");
    } else {
        s.push_str(&format!("{} item(s) need attention:\n", r.attention.len()));
        for a in &r.attention {
            s.push_str(&format!("  - {a}\n"));
        }
    }
    for f in files {
        s.push_str(&format!("wrote {}\n", f.display()));
    }
    let _ = crate::cmd::audit_args::print(&s);
}
