//! `preflight agent` (not built yet).

use clap::Subcommand;

use crate::error::{CliError, CmdResult};

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Not built yet.
    Todo,
}

pub async fn run(_command: AgentCommand) -> CmdResult {
    Err(CliError::config("`preflight agent` is not built yet"))
}
