//! `preflight policy` (not built yet).

use clap::Subcommand;

use crate::error::{CliError, CmdResult};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Not built yet.
    Todo,
}

pub async fn run(_command: PolicyCommand) -> CmdResult {
    Err(CliError::config("`preflight policy` is not built yet"))
}
