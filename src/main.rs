//! The `preflight` command line: parses flags into a plan and hands it to the library crates.
//! Only this package knows clap; every subcommand lives in its own file under `cmd/`.

mod cmd;
mod error;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{exit_code, CliError};

/// Proves that an LLM agent's database enforcement layer holds before it meets production.
///
/// Exit codes: 0 all verified and passed, 1 findings, 2 usage or configuration error,
/// 3 infrastructure could not be reached.
#[derive(Parser, Debug)]
#[command(name = "preflight", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log verbosity for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "PREFLIGHT_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every probe against an enforcement layer and write the report (the CI job).
    Probe(cmd::probe::ProbeArgs),
    /// Run agent scenarios with a real tool-calling loop.
    #[command(subcommand)]
    Agent(cmd::agent::AgentCommand),
    /// Start a throwaway database with the fixtures.
    #[command(subcommand)]
    Db(cmd::db::DbCommand),
    /// Hash, lint and regression-test a policy file.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Verify, checkpoint, query and prune the audit log.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Act on the approval queue.
    #[command(subcommand)]
    Approvals(cmd::approvals::ApprovalsCommand),
    /// The quarterly review, computed from the audit log.
    Review(cmd::review::ReviewArgs),
    /// Serve the built-in layer over MCP (stdio, or streamable HTTP with bearer JWTs).
    Serve(cmd::serve::ServeArgs),
    /// Measure the gateway against raw queries.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Probe(args) => cmd::probe::run(args).await,
            Command::Agent(c) => cmd::agent::run(c).await,
            Command::Db(c) => cmd::db::run(c).await,
            Command::Policy(c) => cmd::policy::run(c).await,
            Command::Audit(c) => cmd::audit::run(c).await,
            Command::Approvals(c) => cmd::approvals::run(c).await,
            Command::Review(args) => cmd::review::run(args).await,
            Command::Bench(c) => cmd::bench::run(c).await,
            Command::Serve(args) => cmd::serve::run(args).await,
        }
    });
    if let Err(e) = &result {
        report_error(e);
    }
    exit_code(&result)
}

fn report_error(e: &CliError) {
    eprintln!("error: {e}");
}

fn init_tracing(level: &str) {
    // Quietened by default, because each is expected in a passing run and reads as alarm in a
    // user's terminal (an explicit directive for the crate in the level still wins):
    // - sqlx warns about every statement over a second (CREATE DATABASE, the fixture load, the
    //   probes' own slow-statement checks);
    // - sqlx's pool warns when a connection it returns was cut, which the health probe does on
    //   purpose (it terminates the layer's backends; the run reports real outages itself);
    // - rmcp's HTTP client logs an ERROR when closing a session is refused, which the rate-limit
    //   probes cause on purpose (the close is cleanup: the probes judge the answers).
    let mut directives = level.to_string();
    if !level.contains("sqlx") {
        directives.push_str(",sqlx::query=error,sqlx_core::pool=error");
    }
    if !level.contains("rmcp") {
        directives.push_str(",rmcp::transport::streamable_http_client=off");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
