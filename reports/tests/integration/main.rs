//! Integration tests for the reports crate: one binary, one module per area.

mod browser;
mod write_all;
