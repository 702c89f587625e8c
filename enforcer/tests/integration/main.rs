//! Integration tests for the enforcer crate: one binary, one module per area.

mod approvals;
mod audit;
mod budget_store;
mod writes_support;
