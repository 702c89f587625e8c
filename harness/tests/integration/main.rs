//! Integration tests for the harness crate: one binary, one module per area.

mod faults;
mod isolation;
mod judge_db;
mod judge_evidence;
mod judge_run;
mod loop_mechanics;
mod replay;
mod scenario_files;
mod smoke;
mod support;
