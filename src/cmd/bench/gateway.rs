//! `preflight bench gateway` (not built yet).

use clap::Args;

use crate::error::{CliError, CmdResult};

#[derive(Args, Debug)]
pub struct GatewayBenchArgs {}

pub async fn run(_args: GatewayBenchArgs) -> CmdResult {
    Err(CliError::config(
        "`preflight bench gateway` is not built yet",
    ))
}
