//! `preflight bench`: benchmarks that print figures (never timed tests).

mod audit;
mod gateway;
mod harness;

use clap::Subcommand;

use crate::error::CmdResult;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// db_get and a filtered db_query through the gateway vs the same raw sqlx query.
    Gateway(gateway::GatewayBenchArgs),
    /// Audit append throughput (Postgres, JSONL) and verify speed.
    Audit(audit::AuditBenchArgs),
    /// Harness overhead per step with the scripted model.
    Harness(harness::HarnessBenchArgs),
}

pub async fn run(command: BenchCommand) -> CmdResult {
    match command {
        BenchCommand::Gateway(a) => gateway::run(a).await,
        BenchCommand::Audit(a) => audit::run(a).await,
        BenchCommand::Harness(a) => harness::run(a).await,
    }
}
