//! What a verification returns: [`VerifyReport`] with the first [`ChainBreak`] and where the
//! chain started ([`ChainStart`]), saved chain heads ([`Checkpoint`]) and [`VerifyError`] for a
//! verification that could not run.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::canonical::GENESIS_HASH;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    Edited,
    Deleted,
    Inserted,
    Reordered,
    Truncated,
    Malformed,
}

impl BreakKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Edited => "edited",
            BreakKind::Deleted => "deleted",
            BreakKind::Inserted => "inserted",
            BreakKind::Reordered => "reordered",
            BreakKind::Truncated => "truncated",
            BreakKind::Malformed => "malformed",
        }
    }
}

/// The first broken link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    pub kind: BreakKind,
    /// The id of the record the break is attributed to.
    pub id: i64,
    /// 1-based position in the source (row number, or line number for JSONL) where it showed.
    pub position: u64,
    pub detail: String,
}

/// Where the verified chain starts: the genesis, or the cut of a retention prune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStart {
    /// The id before the first record (0 at genesis).
    pub after_id: i64,
    pub hash: String,
    /// `genesis` or `prune checkpoint ...`.
    pub origin: String,
}

impl ChainStart {
    pub fn genesis() -> Self {
        Self {
            after_id: 0,
            hash: GENESIS_HASH.to_string(),
            origin: "genesis".to_string(),
        }
    }
}

/// A saved chain head, kept outside the system that holds the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `preflight-audit-checkpoint/1`.
    pub format: String,
    /// `postgres` or `jsonl`.
    pub source: String,
    /// Id of the last record when the checkpoint was taken (= records ever appended).
    pub head_id: i64,
    pub head_hash: String,
    pub created_at: String,
}

pub const CHECKPOINT_FORMAT: &str = "preflight-audit-checkpoint/1";

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Self, VerifyError> {
        let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let c: Checkpoint =
            serde_json::from_str(&text).map_err(|source| VerifyError::BadCheckpoint {
                path: path.display().to_string(),
                source,
            })?;
        if c.format != CHECKPOINT_FORMAT {
            return Err(VerifyError::CheckpointFormat {
                path: path.display().to_string(),
                found: c.format,
            });
        }
        Ok(c)
    }

    pub fn write(&self, path: &Path) -> Result<(), VerifyError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| VerifyError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// What a checkpoint comparison found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CheckpointResult {
    /// The checkpoint's head record is present with the same hash.
    Matched { head_id: i64 },
    /// The checkpoint's head precedes the chain's start (pruned since): nothing to compare.
    BeforeStart { head_id: i64, start_after: i64 },
    /// Reported as the chain break.
    Failed { head_id: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `postgres` or `jsonl:<path>`.
    pub source: String,
    pub start: ChainStart,
    /// Records read and verified up to the first break (all of them when intact).
    pub records: u64,
    /// The last verified record (id, hash).
    pub head: Option<(i64, String)>,
    pub first_break: Option<ChainBreak>,
    pub checkpoint: Option<CheckpointResult>,
    #[serde(with = "duration_secs")]
    pub elapsed: Duration,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }

    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(secs.max(0.0)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint file {path} is not a preflight checkpoint")]
    BadCheckpoint {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint file {path} has format {found:?}, expected {CHECKPOINT_FORMAT:?}")]
    CheckpointFormat { path: String, found: String },
    #[error("checkpoint was taken from {found}, but this log is {expected}")]
    CheckpointSource { found: String, expected: String },
    #[error("reading the audit log from the database")]
    Database {
        #[source]
        source: sqlx::Error,
    },
    #[error("the database returned an unreadable audit row at position {position}: {detail}")]
    CopyFormat { position: u64, detail: String },
}

pub(super) fn db(source: sqlx::Error) -> VerifyError {
    VerifyError::Database { source }
}

pub(super) fn check_source(
    checkpoint: &Option<Checkpoint>,
    expected: &str,
) -> Result<(), VerifyError> {
    if let Some(c) = checkpoint {
        if c.source != expected {
            return Err(VerifyError::CheckpointSource {
                found: c.source.clone(),
                expected: expected.to_string(),
            });
        }
    }
    Ok(())
}
