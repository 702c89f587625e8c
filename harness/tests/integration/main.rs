//! Integration tests for the harness crate: one binary, one module per area.
