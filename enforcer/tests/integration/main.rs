//! Integration tests for the enforcer crate: one binary, one module per area.

mod adversarial;
mod gateway_support;
mod policy;
mod reads;
mod redaction;
