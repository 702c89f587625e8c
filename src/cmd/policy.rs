//! `preflight policy hash | lint | test`: the policy file's stable hash, its lint against the
//! checklist, and its regression cases.
//!
//! Exit codes: 2 when the policy (or cases) file is malformed, 1 when lint reports an error (or a
//! warning with `--strict`) or a case does not pass, 3 when the database cannot be reached.

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
