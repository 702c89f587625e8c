//! Integration tests for the `preflight` binary: one binary, one module per command.

mod probe_cli;
