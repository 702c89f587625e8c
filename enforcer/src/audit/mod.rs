//! Audit: the record every call yields, its sinks, sanitization, and chain verification.
//!
//! - [`record`]: the contract ([`AuditRecord`], [`AuditSink`]).
//! - [`canonical`]: the chain's canonical form, computed exactly as the database trigger does.
//! - sinks: [`PostgresSink`], [`JsonlSink`], [`TracingSink`].
//! - [`sanitize`]: arguments sanitized by field policy and value patterns (AUD-7).
//! - [`verify`]: recompute a chain, name the first broken link, checkpoints (the per-record
//!   work on a few threads, `workers`).
//! - [`subject`]: every operation involving a data subject (CMP-3).
//! - [`prune`]: retention that keeps the chain verifiable (AUD-6).
//! - [`views`]: the saved questions of the security team (AUD-5), from Postgres or JSONL.
//! - [`render`]: terminal tables and text for the `preflight audit` commands.

pub mod canonical;
pub mod jsonl;
mod pgtext;
pub mod postgres;
pub mod prune;
mod record;
pub mod render;
pub mod sanitize;
pub mod subject;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tracing;
pub mod verify;
pub mod views;
mod workers;

pub use canonical::{arguments_sha256, canonical_json, ChainedRecord};
pub use jsonl::{Clock, FsyncPolicy, JsonlSink};
pub use postgres::PostgresSink;
pub use record::*;
pub use sanitize::{sanitize_arguments, sanitize_arguments_by_key_only, sanitize_text};
pub use tracing::TracingSink;
pub use verify::{verify_jsonl, verify_postgres, BreakKind, ChainBreak, Checkpoint, VerifyReport};
