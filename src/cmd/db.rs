//! `preflight db` (not built yet).

use clap::Subcommand;

use crate::error::{CliError, CmdResult};

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Not built yet.
    Todo,
}

pub async fn run(_command: DbCommand) -> CmdResult {
    Err(CliError::config("`preflight db` is not built yet"))
}
