//! `preflight policy hash | lint | test | diff`: the policy file's stable hash, its lint against
//! the checklist, its regression cases, and the capabilities one version gains over another.
//!
//! Exit codes: 2 when the policy (or cases) file is malformed, 1 when lint reports an error (or a
//! warning with `--strict`), a case does not pass, or a diff widens capabilities, 3 when the
//! database cannot be reached.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{self, Catalog, CatalogError, Policy, Severity};
use preflight_probes::db::{provision, redact_url, Database, Db};

use crate::cmd::db_args::{db_error, DbArgs};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Print the policy's stable hash (SHA-256 of its canonical form; comments, key order and
    /// formatting do not change it). Needs no database.
    Hash(HashArgs),
    /// Check the policy against the production checklist; with --db, also against the live
    /// catalog (tables, columns, relations, every column's resolved action).
    Lint(LintArgs),
    /// Run a regression-cases file against the built-in enforcement layer with this policy.
    Test(TestArgs),
    /// What the agent can see and do under NEW that it could not under OLD, and the reverse, in
    /// words. Exit 1 when capabilities widen (ask for a security review), 0 when they only
    /// narrow or nothing changed. Needs no database.
    Diff(DiffArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// Markdown for a pull-request comment.
    Markdown,
    /// One JSON document.
    Json,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The old policy: a file, or a git revision of one (`main:policy.yaml`, read with `git show`).
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The new policy: a file, or a git revision of one.
    #[arg(value_name = "NEW")]
    pub new: String,
    #[arg(long, value_enum, default_value_t = DiffFormat::Markdown)]
    pub format: DiffFormat,
}

#[derive(Args, Debug)]
pub struct HashArgs {
    /// The policy file.
    pub file: PathBuf,
    /// Also print the canonical JSON the hash is computed over.
    #[arg(long)]
    pub canonical: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table, then a summary line.
    Table,
    /// rustc-style lines: `file:line:col: error[rule]: message (checklist ids)`.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The policy file.
    pub file: PathBuf,

    /// Check against a database's catalog: `auto`, `container`, `local` (a throwaway database
    /// with the fixtures) or a postgres:// URL (read-only). Without it, lint checks the rules as
    /// written and says that the catalog was not consulted.
    #[arg(
        long,
        env = "PREFLIGHT_DB",
        value_name = "auto|container|local|URL",
        hide_env_values = true
    )]
    pub db: Option<String>,

    /// The Postgres image for `--db container` and `auto`.
    #[arg(long, env = "PREFLIGHT_PG_IMAGE", default_value = preflight_probes::db::DEFAULT_PG_IMAGE, value_name = "IMAGE")]
    pub pg_image: String,

    /// The folder holding `initdb` and `postgres` for `--db local`.
    #[arg(long, env = "PREFLIGHT_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// The fixtures folder for a throwaway database [default: ./fixtures/shop].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The regression-cases file.
    pub cases: PathBuf,

    /// The policy file the cases test.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,

    #[command(flatten)]
    pub db: DbArgs,

    /// Print results as JSON instead of a table.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn run(command: PolicyCommand) -> CmdResult {
    match command {
        PolicyCommand::Hash(args) => hash(args),
        PolicyCommand::Lint(args) => lint(args).await,
        PolicyCommand::Test(args) => test(args).await,
        PolicyCommand::Diff(args) => diff(args),
    }
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::infra(format!("cannot write to stdout: {e}"))),
    }
}

/// Loads a policy, mapping every problem to a configuration error (exit 2).
fn load(file: &std::path::Path, catalog: Option<&Catalog>) -> Result<Policy, CliError> {
    policy::load(file, catalog).map_err(|e| {
        let n = e.len();
        CliError::config(format!(
            "the policy file is not valid ({} problem{}):\n{e}",
            n,
            if n == 1 { "" } else { "s" },
        ))
    })
}

/// The text of `spec` and the name it is reported under: a file when one exists at that path,
/// else `REV:PATH` through `git show`.
fn spec_text(spec: &str) -> Result<(String, String), CliError> {
    let path = std::path::Path::new(spec);
    match spec.split_once(':') {
        Some((rev, file)) if !path.exists() && !rev.is_empty() && !file.is_empty() => {
            let out = std::process::Command::new("git")
                .args(["show", spec])
                .output()
                .map_err(|e| CliError::config(format!("{spec}: cannot run git show: {e}")))?;
            if !out.status.success() {
                return Err(CliError::config(format!(
                    "{spec}: git show failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8(out.stdout)
                .map_err(|_| CliError::config(format!("{spec}: the file is not UTF-8")))?;
            Ok((text, spec.to_string()))
        }
        _ => std::fs::read_to_string(path)
            .map(|t| (t, spec.to_string()))
            .map_err(|e| CliError::config(format!("{spec}: cannot read the policy file: {e}"))),
    }
}

/// Loads `spec` (a file or `REV:PATH`), against `catalog` when given; every problem is a
/// usage error (exit 2) with its file:line:col.
pub(crate) fn load_spec_with(spec: &str, catalog: Option<&Catalog>) -> Result<Policy, CliError> {
    let (text, shown) = spec_text(spec)?;
    policy::load_str(&text, &shown, catalog).map_err(|e| {
        let n = e.len();
        CliError::config(format!(
            "the policy file is not valid ({} problem{}):\n{e}",
            n,
            if n == 1 { "" } else { "s" },
        ))
    })
}

pub(crate) fn load_spec(spec: &str) -> Result<Policy, CliError> {
    load_spec_with(spec, None)
}

fn diff(args: DiffArgs) -> CmdResult {
    let old = load_spec(&args.old)?;
    let new = load_spec(&args.new)?;
    let d = policy::diff(&old, &new);
    let text = match args.format {
        DiffFormat::Markdown => d.to_markdown(),
        DiffFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&d.to_json()).unwrap_or_default()
        ),
    };
    print(&text)?;
    Ok(Outcome::from_all_passed(!d.widens()))
}

fn hash(args: HashArgs) -> CmdResult {
    let p = load(&args.file, None)?;
    let mut text = format!("{}\n", p.hash);
    if args.canonical {
        text.push_str(&policy::canonical_json(&p));
        text.push('\n');
    }
    print(&text)?;
    Ok(Outcome::Passed)
}

/// Where lint's catalog came from.
enum CatalogSource {
    /// A throwaway database with the fixtures, torn down when dropped.
    Throwaway(Box<Database>),
    /// An existing database, by URL (shown redacted).
    Url(String),
}

/// Reads the catalog of the database `--db` names: a URL is only read (one connection, no
/// fixtures, no other roles needed); anything else starts a throwaway database with the fixtures.
async fn catalog_from(db: DbArgs) -> Result<(CatalogSource, Catalog), CliError> {
    let (db_choice, fixtures) = db.to_db()?;
    if let Db::Url { url, .. } = &db_choice {
        eprintln!("reading the catalog of {} ...", redact_url(url));
        let catalog = Catalog::read_url(url).await.map_err(catalog_error)?;
        return Ok((CatalogSource::Url(redact_url(url)), catalog));
    }
    eprintln!(
        "starting a throwaway database ({}) with the fixtures in {} to read its catalog ...",
        db.db.trim(),
        fixtures.dir.display()
    );
    let database = provision(&db_choice, &fixtures).await.map_err(db_error)?;
    let pool = database.owner_pool().await.map_err(db_error)?;
    let catalog = Catalog::read(&pool).await.map_err(catalog_error)?;
    Ok((CatalogSource::Throwaway(Box::new(database)), catalog))
}

fn catalog_error(e: CatalogError) -> CliError {
    let cause = source_text(&e);
    CliError::infra(format!("{e}: {cause}"))
}

fn source_text(e: &dyn std::error::Error) -> String {
    e.source()
        .map(|s| preflight_probes::db::redact(&s.to_string()))
        .unwrap_or_default()
}

async fn lint(args: LintArgs) -> CmdResult {
    // A throwaway database only needs the schema, not the bulk rows.
    let db = args.db.as_ref().map(|choice| DbArgs {
        db: choice.clone(),
        pg_image: args.pg_image.clone(),
        pg_bin: args.pg_bin.clone(),
        rows: 0,
        fixtures: args.fixtures.clone(),
        allow_writes: false,
        load_fixtures: false,
        agent_url: None,
        audit_url: None,
        superuser_url: None,
    });
    // Malformed policies are reported before any database is started.
    load(&args.file, None)?;
    let (source, catalog) = match db {
        Some(db) => {
            let (source, catalog) = catalog_from(db).await?;
            (Some(source), Some(catalog))
        }
        None => (None, None),
    };
    let p = load(&args.file, catalog.as_ref())?;
    let findings = policy::lint(&p, catalog.as_ref());
    let shown = args.file.display().to_string();
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let scope = match &source {
        Some(CatalogSource::Throwaway(d)) => format!(
            "checked against the catalog of a throwaway {} database with the fixtures",
            d.info().kind
        ),
        Some(CatalogSource::Url(url)) => format!("checked against the catalog of {url}"),
        None => "syntax-level: the catalog was not consulted (pass --db to check tables, columns and relations)".to_string(),
    };
    let text = match args.format {
        Format::Json => {
            let v = policy::lint_json(&shown, &p.hash, catalog.is_some(), &findings);
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Text => format!(
            "{}{shown}: {errors} error(s), {warnings} warning(s); {scope}\n",
            policy::render_text(&shown, &findings)
        ),
        Format::Table => {
            let mut s = format!(
                "policy {shown} (hash {})\n{scope}\n",
                &p.hash[..12.min(p.hash.len())]
            );
            if findings.is_empty() {
                s.push_str("no findings\n");
            } else {
                s.push_str(&policy::render_table(&findings));
                s.push('\n');
            }
            s.push_str(&format!("{errors} error(s), {warnings} warning(s)\n"));
            s
        }
    };
    print(&text)?;
    drop(source);
    Ok(Outcome::from_all_passed(
        errors == 0 && (!args.strict || warnings == 0),
    ))
}

/// Runs `cases` against the built-in layer with the policy `policy_spec` on the database `db`
/// (the review's QRT-5). Malformed inputs are usage errors (exit 2).
pub(crate) async fn run_suite(
    cases: &std::path::Path,
    policy_spec: &str,
    db: &DbArgs,
) -> Result<policy::CaseReport, CliError> {
    let cases = policy::load_cases(cases).map_err(|e| {
        CliError::config(format!(
            "the cases file is not valid ({} problem{}):\n{e}",
            e.len(),
            if e.len() == 1 { "" } else { "s" }
        ))
    })?;
    load_spec(policy_spec)?;
    let (db_choice, fixtures) = db.to_db()?;
    let database = provision(&db_choice, &fixtures).await.map_err(db_error)?;
    let pool = database.owner_pool().await.map_err(db_error)?;
    let catalog = Catalog::read(&pool).await.map_err(catalog_error)?;
    let p = Arc::new(load_spec_with(policy_spec, Some(&catalog))?);
    let gateway =
        BuiltinGateway::connect(p.clone(), database.agent_url(), BuiltinOptions::default())
            .await
            .map_err(|e| CliError::infra(format!("{e}: {}", source_text(&e))))?;
    let report = policy::run_cases(&gateway, &cases).await;
    drop(gateway);
    drop(database);
    Ok(report)
}

async fn test(args: TestArgs) -> CmdResult {
    // Malformed inputs are reported before any database is started.
    let cases = policy::load_cases(&args.cases).map_err(|e| {
        CliError::config(format!(
            "the cases file is not valid ({} problem{}):\n{e}",
            e.len(),
            if e.len() == 1 { "" } else { "s" }
        ))
    })?;
    load(&args.policy, None)?;
    let (db_choice, fixtures) = args.db.to_db()?;
    eprintln!(
        "starting the database ({}) for {} cases ...",
        redact_url(args.db.db.trim()),
        cases.cases.len()
    );
    let database = provision(&db_choice, &fixtures).await.map_err(db_error)?;
    let pool = database.owner_pool().await.map_err(db_error)?;
    let catalog = Catalog::read(&pool).await.map_err(catalog_error)?;
    let p = Arc::new(load(&args.policy, Some(&catalog))?);
    let gateway =
        BuiltinGateway::connect(p.clone(), database.agent_url(), BuiltinOptions::default())
            .await
            .map_err(|e| CliError::infra(format!("{e}: {}", source_text(&e))))?;
    let report = policy::run_cases(&gateway, &cases).await;
    let coverage = policy::coverage(&p, &cases);
    let text = match args.format {
        Format::Json => {
            let v = serde_json::json!({
                "cases": cases.path,
                "policy": args.policy.display().to_string(),
                "policy_hash": p.hash,
                "passed": report.passed(),
                "failed": report.failed(),
                "outcomes": report.outcomes,
                "coverage": coverage.items,
            });
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Table | Format::Text => render_test(&report, &coverage, &p),
    };
    print(&text)?;
    drop(gateway);
    drop(database);
    Ok(Outcome::from_all_passed(report.all_passed()))
}

fn render_test(report: &policy::CaseReport, coverage: &policy::Coverage, p: &Policy) -> String {
    let mut s = policy::render_cases_table(report);
    s.push('\n');
    for o in report.outcomes.iter().filter(|o| !o.passed) {
        s.push_str(&format!(
            "FAIL line {}: {}: expected {}, got {}{}\n",
            o.line,
            o.name,
            o.expected,
            o.actual,
            if o.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.detail)
            }
        ));
    }
    let unexercised: Vec<&policy::CoverageItem> = coverage.unexercised().collect();
    s.push_str(&format!(
        "coverage: {} of {} policy rules exercised\n",
        coverage.exercised_count(),
        coverage.items.len()
    ));
    for i in &unexercised {
        s.push_str(&format!("  not exercised: {} {}\n", i.kind, i.key));
    }
    s.push_str(&format!(
        "{} passed, {} failed (policy {}, hash {})\n",
        report.passed(),
        report.failed(),
        p.name,
        &p.hash[..12.min(p.hash.len())]
    ));
    s
}
