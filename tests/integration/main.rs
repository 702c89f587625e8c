//! Integration tests of the `preflight` binary: one binary, one module per subcommand.

mod agent_cli;
mod audit_cli;
mod bench_audit;
mod bench_fixtures;
mod bench_gateway;
mod checklist_cli;
mod db;
mod policy;
mod policy_diff;
mod probe_cli;
mod probe_qrt;
mod probe_served;
mod review_cli;
mod serve_cli;
mod serve_http;
mod serve_probes;
mod targets_cli;
mod targets_http;
mod targets_jwt;
mod targets_sql;
