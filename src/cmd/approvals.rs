//! `preflight approvals` (not built yet).

use clap::Subcommand;

use crate::error::{CliError, CmdResult};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// Not built yet.
    Todo,
}

pub async fn run(_command: ApprovalsCommand) -> CmdResult {
    Err(CliError::config("`preflight approvals` is not built yet"))
}
