//! Integration tests for the probes crate: one binary, one module per area.

mod db;
mod families;
mod runner;
mod selftest;
