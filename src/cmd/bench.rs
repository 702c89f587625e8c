//! `preflight bench`: benchmarks that print figures (never timed tests).

mod audit;
mod audit_log;
mod cpu;
mod fixtures;
mod floor;
mod gateway;
mod harness;
mod summary;
mod transport;

use clap::Subcommand;

use crate::error::CmdResult;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// db_get and a filtered db_query through the gateway vs the same raw sqlx query; or, with
    /// `--transport`, in-process vs over MCP stdio vs over streamable HTTP.
    Gateway(gateway::GatewayBenchArgs),
    /// Audit append throughput (Postgres, JSONL) and verify speed.
    Audit(audit::AuditBenchArgs),
    /// A realistic 90-day audit log through the real layer, with known plants, for `preflight
    /// review` (docs/review.md).
    AuditLog(audit_log::AuditLogBenchArgs),
    /// Harness overhead per step with the scripted model.
    Harness(harness::HarnessBenchArgs),
    /// How long the shop fixtures take to load at --rows orders per tenant (default 1,000,000),
    /// over --runs fresh databases.
    Fixtures(fixtures::FixturesBenchArgs),
}

pub async fn run(command: BenchCommand) -> CmdResult {
    match command {
        BenchCommand::Gateway(a) => gateway::run(a).await,
        BenchCommand::Audit(a) => audit::run(a).await,
        BenchCommand::AuditLog(a) => audit_log::run(a).await,
        BenchCommand::Harness(a) => harness::run(a).await,
        BenchCommand::Fixtures(a) => fixtures::run(a).await,
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An error and every cause, joined by `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
