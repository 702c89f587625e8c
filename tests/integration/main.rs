//! Integration tests of the `preflight` binary: one binary, one module per subcommand.

mod bench_audit;
mod db;
mod policy;
mod probe_cli;
