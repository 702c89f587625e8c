//! Integration tests of the `preflight` binary: one binary, one module per subcommand.

mod db;
mod probe_cli;
