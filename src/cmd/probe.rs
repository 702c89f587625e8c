//! `preflight probe` (not built yet).

use clap::Args;

use crate::error::{CliError, CmdResult};

#[derive(Args, Debug)]
pub struct ProbeArgs {}

pub async fn run(_args: ProbeArgs) -> CmdResult {
    Err(CliError::config("`preflight probe` is not built yet"))
}
