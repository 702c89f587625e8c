//! `preflight bench harness` (not built yet).

use clap::Args;

use crate::error::{CliError, CmdResult};

#[derive(Args, Debug)]
pub struct HarnessBenchArgs {}

pub async fn run(_args: HarnessBenchArgs) -> CmdResult {
    Err(CliError::config(
        "`preflight bench harness` is not built yet",
    ))
}
