//! Integration tests for the enforcer crate: one binary, one module per area.

mod policy;
