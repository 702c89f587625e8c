//! One file per subcommand; each turns its flags into a validated plan and runs it.

pub mod agent;
pub mod approvals;
pub mod audit;
pub mod audit_args;
pub mod bench;
pub mod db;
pub mod db_args;
pub mod policy;
pub mod probe;
pub mod probe_phases;
pub mod probe_qrt;
pub mod probe_review;
pub mod probe_served;
pub mod review;
pub mod serve;
pub mod target_args;
