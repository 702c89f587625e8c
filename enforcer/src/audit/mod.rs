//! Audit: the record every call yields, its sinks, sanitization, and chain verification.

mod record;
mod sanitize;

pub use record::*;
pub use sanitize::{arguments_sha256, canonical_json, sanitize_arguments};
