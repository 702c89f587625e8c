//! Audit: the record every call yields, its sinks, sanitization, and chain verification.

mod record;

pub use record::*;
