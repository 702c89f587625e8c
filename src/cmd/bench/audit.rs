//! `preflight bench audit` (not built yet).

use clap::Args;

use crate::error::{CliError, CmdResult};

#[derive(Args, Debug)]
pub struct AuditBenchArgs {}

pub async fn run(_args: AuditBenchArgs) -> CmdResult {
    Err(CliError::config("`preflight bench audit` is not built yet"))
}
