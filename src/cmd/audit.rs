//! `preflight audit` (not built yet).

use clap::Subcommand;

use crate::error::{CliError, CmdResult};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Not built yet.
    Todo,
}

pub async fn run(_command: AuditCommand) -> CmdResult {
    Err(CliError::config("`preflight audit` is not built yet"))
}
