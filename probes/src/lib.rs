//! Database provisioning, the probe catalogue and the runner.

pub mod db;
