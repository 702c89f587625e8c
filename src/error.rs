//! The binary's one error type and its documented exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | everything ran, was verified and passed |
//! | 1 | findings: a probe, lint rule, case or scenario did not pass (fail, error or not verified) |
//! | 2 | usage or configuration error (bad flags, malformed policy/scenario/case file) |
//! | 3 | infrastructure could not be reached (database, Docker, model server) |

use std::process::ExitCode;

/// How a command that ran to the end came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything verified and passed.
    Passed,
    /// At least one finding is not a pass.
    Findings,
}

#[allow(dead_code)]
impl Outcome {
    pub fn from_all_passed(all_passed: bool) -> Self {
        if all_passed {
            Outcome::Passed
        } else {
            Outcome::Findings
        }
    }
}

/// Why a command could not run to the end.
#[derive(Debug, thiserror::Error)]
#[allow(dead_code)] // constructors are used as subcommands land
pub enum CliError {
    /// Bad flags or a malformed input file; the message names the file, line and field.
    #[error("{0}")]
    Config(String),
    /// A database, Docker daemon or model server could not be reached.
    #[error("{0}")]
    Infra(String),
}

#[allow(dead_code)]
impl CliError {
    pub fn config(e: impl std::fmt::Display) -> Self {
        CliError::Config(e.to_string())
    }

    pub fn infra(e: impl std::fmt::Display) -> Self {
        CliError::Infra(e.to_string())
    }
}

pub type CmdResult = Result<Outcome, CliError>;

pub fn exit_code(result: &CmdResult) -> ExitCode {
    match result {
        Ok(Outcome::Passed) => ExitCode::from(0),
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(CliError::Config(_)) => ExitCode::from(2),
        Err(CliError::Infra(_)) => ExitCode::from(3),
    }
}
