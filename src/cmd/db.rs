//! `preflight db up`: starts a throwaway database with the fixtures, prints how to reach it
//! (passwords masked unless `--show-secrets`), and keeps it until Ctrl-C, which tears it down
//! and exits with status 130.

use std::io::Write as _;

use clap::{Args, Subcommand};
use preflight_probes::db::{provision, redact_url, Database, Role};

use crate::cmd::db_args::{db_error, DbArgs};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Start a database with the shop fixtures, print its connection URLs, and keep it until
    /// Ctrl-C (which stops and removes it).
    Up(UpArgs),
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Print the URLs with their passwords (they are masked otherwise).
    #[arg(long)]
    pub show_secrets: bool,
}

pub async fn run(command: DbCommand) -> CmdResult {
    match command {
        DbCommand::Up(args) => up(args).await,
    }
}

async fn up(args: UpArgs) -> CmdResult {
    let (db, fixtures) = args.db.to_db()?;
    eprintln!(
        "starting a database ({}) with the fixtures in {} ...",
        redact_url(args.db.db.trim()),
        fixtures.dir.display()
    );
    let database = provision(&db, &fixtures).await.map_err(db_error)?;
    let text = describe(&database, args.show_secrets);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::infra(format!("cannot write to stdout: {e}")))?;
    drop(stdout);
    // The interrupt handler the provisioning installed tears the database down and exits with
    // status 130; until then there is nothing to do.
    std::future::pending::<()>().await;
    drop(database);
    Ok(Outcome::Passed)
}

fn describe(database: &Database, show_secrets: bool) -> String {
    let info = database.info();
    let timings = database.timings();
    let url = |role: Role| {
        if show_secrets {
            database.url(role).to_string()
        } else {
            database.redacted_url(role)
        }
    };
    let mut out = String::new();
    let fixtures = match (timings.fixtures, database.rows()) {
        (Some(t), Some(rows)) => format!(
            ", fixtures {:.1} s with {rows} orders per tenant",
            t.as_secs_f64()
        ),
        _ => String::new(),
    };
    out.push_str(&format!(
        "database ready in {:.1} s (server {:.1} s{fixtures})\n",
        timings.total.as_secs_f64(),
        timings.server.as_secs_f64(),
    ));
    out.push_str(&format!("  backend    {}: {}\n", info.kind, info.detail));
    out.push_str(&format!("  reason     {}\n", info.reason));
    out.push_str(&format!(
        "  version    PostgreSQL {}\n",
        info.server_version
    ));
    out.push_str(&format!(
        "  owner      {}  (ground truth; bypasses RLS)\n",
        url(Role::Owner)
    ));
    out.push_str(&format!(
        "  agent      {}  (the enforcement layer's login)\n",
        url(Role::Agent)
    ));
    out.push_str(&format!(
        "  audit      {}  (insert-only audit writer)\n",
        url(Role::Audit)
    ));
    if let Some(superuser) = database.superuser_url() {
        let shown = if show_secrets {
            superuser.to_string()
        } else {
            redact_url(superuser)
        };
        out.push_str(&format!("  superuser  {shown}\n"));
    }
    if database.read_only() {
        out.push_str("  read-only: the owner connection refuses writes (pass --allow-writes to change that)\n");
    }
    if !show_secrets {
        out.push_str("Passwords are masked; pass --show-secrets to print them.\n");
    }
    out.push_str("Press Ctrl-C to stop");
    out.push_str(if database.footprint().is_some() {
        " and remove it.\n"
    } else {
        " (the database itself is left as it is).\n"
    });
    out
}
