//! `preflight review` (not built yet).

use clap::Args;

use crate::error::{CliError, CmdResult};

#[derive(Args, Debug)]
pub struct ReviewArgs {}

pub async fn run(_args: ReviewArgs) -> CmdResult {
    Err(CliError::config("`preflight review` is not built yet"))
}
