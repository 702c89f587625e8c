//! Database provisioning, the probe catalogue and the runner.
//!
//! [`runner`] schedules [`families`]' probes against a [`target`] and judges them against
//! [`truth`] (the owner connection); [`selftest`] proves every probe can fail.

pub mod calls;
pub mod canary;
pub mod codes;
pub mod context;
pub mod controls;
pub mod db;
pub mod environment;
pub mod evidence;
pub mod families;
pub mod fingerprint;
pub mod runner;
pub mod scratch;
pub mod selftest;
pub mod session;
pub mod target;
pub mod truth;
