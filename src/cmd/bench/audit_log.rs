//! `preflight bench audit-log`: a realistic 90-day audit log, produced through the real
//! built-in layer on a throwaway shop database, for `preflight review` to be run over (and
//! benchmarked on). The generator itself is `preflight_review::generate`; this file provisions
//! the database, loads the two policies against its catalog and prints what was planted.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use preflight_enforcer::policy::{self, Catalog};
use preflight_probes::db::provision;
use preflight_review::generate::{self, GenPlan, POLICY_AFTER, POLICY_BEFORE};

use super::{error_chain, thousands};
use crate::cmd::db_args::{db_error, DbArgs};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Args, Debug)]
// The calls need the shop's rows, not a large orders table.
#[command(mut_arg("rows", |a| a.default_value("1000")))]
pub struct AuditLogBenchArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Records to produce (each one a real call through the layer).
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub records: u64,

    /// Calls in flight at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,

    /// Seed of the schedule (which call, by whom, when).
    #[arg(long, default_value_t = 13)]
    pub seed: u64,

    /// The folder for audit.jsonl, policy-before.yaml, policy-after.yaml and planted.json
    /// (created; must not already hold an audit.jsonl).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub async fn run(args: AuditLogBenchArgs) -> CmdResult {
    if args.records < 2_000 {
        return Err(CliError::config(
            "--records: expected at least 2000 (the plants need room)",
        ));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| {
        CliError::config(format!(
            "--out {}: cannot create it: {e}",
            args.out.display()
        ))
    })?;
    let (db, fixtures) = args.db.to_db()?;
    eprintln!("provisioning a shop database ...");
    let database = provision(&db, &fixtures).await.map_err(db_error)?;
    let owner = database.owner_pool().await.map_err(db_error)?;
    let catalog = Catalog::read(&owner)
        .await
        .map_err(|e| CliError::infra(error_chain(&e)))?;
    let load = |text: String, name: &str| {
        let shown = args.out.join(name).display().to_string();
        policy::load_str(&text, &shown, Some(&catalog))
            .map(Arc::new)
            .map_err(|e| CliError::infra(format!("the generator's policy does not load: {e}")))
    };
    let before = load(generate::policy_before_text(), POLICY_BEFORE)?;
    let after = load(generate::policy_after_text(), POLICY_AFTER)?;
    let plan = GenPlan {
        records: args.records,
        seed: args.seed,
        concurrency: args.concurrency,
        ..GenPlan::default()
    };
    eprintln!(
        "generating {} records through the built-in layer ...",
        thousands(args.records)
    );
    let g = generate::generate(database.agent_url(), (before, after), &args.out, &plan)
        .await
        .map_err(|e| CliError::infra(e.to_string()))?;
    let p = &g.planted;
    println!(
        "wrote {} records to {} in {:.1} s ({:.0} calls/s)",
        thousands(p.records),
        g.log.display(),
        g.elapsed.as_secs_f64(),
        p.records as f64 / g.elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "policies: {} and {}",
        g.policy_before.display(),
        g.policy_after.display()
    );
    println!(
        "planted: top denial {} on {}.{} ({} of {} by {}/{}); slow tool {}; denial spike {} ({}); write spike {} ({}); sink gap {} – {}; policy change {}",
        p.top_denial.code,
        p.top_denial.model,
        p.top_denial.field,
        thousands(p.top_denial.by_principal),
        thousands(p.top_denial.count),
        p.top_denial.tenant,
        p.top_denial.user,
        p.slow_tool,
        p.denial_spike_hour,
        p.denial_spike_count,
        p.write_spike_hour,
        p.write_spike_count,
        p.gap_from,
        p.gap_to,
        p.policy_change_at
    );
    println!(
        "details: {}",
        args.out.join(generate::PLANTED_FILE).display()
    );
    drop(database);
    Ok(Outcome::Passed)
}
