//! Chain verification: recompute every hash, find the first broken link and say what broke.
//!
//! Both sources stream: Postgres through `COPY ... TO STDOUT` inside one repeatable-read
//! snapshot (so the chain head read beside it is consistent), JSONL line by line. Each record is
//! checked three ways: its own hash over `prev_hash` and its canonical payload, its link to the
//! previous record's hash, and its position (`id` = previous + 1). At the first anomaly the
//! verifier reads a short lookahead and classifies it:
//!
//! | kind | what the evidence looks like |
//! |---|---|
//! | `edited` | a record's content no longer matches its hash; or a record was re-hashed after an edit, so its successor links to a hash that no longer exists |
//! | `deleted` | a gap: the next record links to a hash that is nowhere, with a higher id (or renumbered from one) |
//! | `inserted` | a record that fits nowhere: the record after it links to the record before it |
//! | `reordered` | records that are all intact but out of order (or whose ids were swapped) |
//! | `truncated` | the chain is intact but ends before a checkpoint's (or the database's chain head's) last record |
//! | `malformed` | a line or row that cannot be read as a record |
//!
//! A checkpoint ([`Checkpoint`], `preflight audit checkpoint`) saves the head (id and hash) to a
//! file kept elsewhere; verifying against it detects a truncated tail and a rewritten history,
//! which a chain alone cannot (an attacker who deletes the last records leaves a valid chain).
//!
//! The module's parts: `report` holds what a verification returns (its report, the break,
//! checkpoints, errors); `engine` the streaming chain check and its classifier, shared by both
//! sources; `jsonl` and `postgres` read each source in batches, parse and hash them on worker
//! threads (`audit::workers`) and feed the engine in source order.

mod args;
mod engine;
mod jsonl;
mod line;
mod pgcopy;
mod postgres;
mod report;

pub use engine::ChainRow;
pub use jsonl::{jsonl_head, verify_jsonl};
pub use postgres::{postgres_head, verify_postgres};
pub use report::{
    BreakKind, ChainBreak, ChainStart, Checkpoint, CheckpointResult, VerifyError, VerifyReport,
    CHECKPOINT_FORMAT,
};
