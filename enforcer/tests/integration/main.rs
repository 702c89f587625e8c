//! Integration tests for the enforcer crate: one binary, one module per area.

mod adversarial;
mod approvals;
mod audit;
mod budget_store;
mod gateway_support;
mod pipeline;
mod policy;
mod reads;
mod redaction;
mod writes;
mod writes_support;
