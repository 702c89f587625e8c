//! Integration tests for the probes crate: one binary, one module per area.

mod db;
mod families;
mod no_false_pass;
mod runner;
mod selftest;
mod variants;
