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

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

use super::canonical::{hash_matches, payload_with_id, PayloadWriter, GENESIS_HASH};
use super::jsonl::{parse_line, JsonlCut, JsonlLine};
use super::workers::{verify_threads, Workers};

/// How many records after an anomaly the classifier looks at.
const LOOKAHEAD: usize = 64;

/// A record reduced to what the chain check needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    pub id: i64,
    /// The canonical payload (its first field is the id).
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
    /// Whether `hash` is the hash of `prev_hash` and `payload`, computed once on construction
    /// (on a worker thread, see `audit::workers`).
    consistent: bool,
}

impl ChainRow {
    pub fn new(id: i64, payload: String, prev_hash: String, hash: String) -> Self {
        let consistent = hash_matches(&prev_hash, &payload, &hash);
        Self {
            id,
            payload,
            prev_hash,
            hash,
            consistent,
        }
    }

    fn self_consistent(&self) -> bool {
        self.consistent
    }

    /// Whether the record's hash matches its payload with `id` in place of its stored id.
    fn consistent_with_id(&self, id: i64) -> bool {
        payload_with_id(&self.payload, id)
            .is_some_and(|p| hash_matches(&self.prev_hash, &p, &self.hash))
    }

    /// The id this record was sealed with, if its stored id was changed (searched near `around`).
    fn original_id(&self, around: i64, span: i64) -> Option<i64> {
        (around - span..=around + span)
            .filter(|a| *a != self.id && *a > 0)
            .find(|a| self.consistent_with_id(*a))
    }
}

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

fn db(source: sqlx::Error) -> VerifyError {
    VerifyError::Database { source }
}

/// The streaming chain checker shared by both sources.
struct Engine {
    start: ChainStart,
    expected: i64,
    last_hash: String,
    before_last_hash: Option<String>,
    /// Hashes of the last few verified records, for reorder detection.
    recent: VecDeque<String>,
    records: u64,
    position: u64,
    checkpoint: Option<Checkpoint>,
    checkpoint_result: Option<CheckpointResult>,
    pending: Option<(ChainRow, u64, Vec<ChainRow>)>,
    result: Option<ChainBreak>,
}

impl Engine {
    fn new(start: ChainStart, checkpoint: Option<Checkpoint>) -> Self {
        let checkpoint_result = checkpoint.as_ref().and_then(|c| {
            (c.head_id <= start.after_id).then_some(CheckpointResult::BeforeStart {
                head_id: c.head_id,
                start_after: start.after_id,
            })
        });
        if let (Some(c), true) = (&checkpoint, start.after_id > 0) {
            // A checkpoint exactly at the cut can still be compared with the cut's hash.
            if c.head_id == start.after_id && c.head_hash != start.hash {
                return Self::with_break(
                    start.clone(),
                    ChainBreak {
                        kind: BreakKind::Edited,
                        id: c.head_id,
                        position: 0,
                        detail: format!(
                            "the prune cut's hash differs from checkpoint's hash for record {}",
                            c.head_id
                        ),
                    },
                );
            }
        }
        Self {
            expected: start.after_id + 1,
            last_hash: start.hash.clone(),
            before_last_hash: None,
            recent: VecDeque::with_capacity(LOOKAHEAD),
            records: 0,
            position: 0,
            checkpoint_result,
            checkpoint,
            pending: None,
            result: None,
            start,
        }
    }

    fn with_break(start: ChainStart, b: ChainBreak) -> Self {
        let mut e = Self::new(
            ChainStart {
                after_id: start.after_id,
                hash: start.hash.clone(),
                origin: start.origin.clone(),
            },
            None,
        );
        e.result = Some(b);
        e
    }

    fn done(&self) -> bool {
        self.result.is_some()
    }

    /// Feeds the next record; returns false once the outcome is known.
    fn push(&mut self, row: ChainRow) -> bool {
        if self.result.is_some() {
            return false;
        }
        self.position += 1;
        if let Some((_, _, look)) = &mut self.pending {
            look.push(row);
            if look.len() >= LOOKAHEAD {
                self.classify_pending();
                return false;
            }
            return true;
        }
        let ok =
            row.id == self.expected && row.prev_hash == self.last_hash && row.self_consistent();
        if ok {
            self.accept(row);
            true
        } else {
            self.pending = Some((row, self.position, Vec::new()));
            true
        }
    }

    fn accept(&mut self, row: ChainRow) {
        if let Some(c) = &self.checkpoint {
            if row.id == c.head_id {
                if row.hash == c.head_hash {
                    self.checkpoint_result = Some(CheckpointResult::Matched { head_id: row.id });
                } else {
                    self.checkpoint_result = Some(CheckpointResult::Failed { head_id: row.id });
                    self.result = Some(ChainBreak {
                        kind: BreakKind::Edited,
                        id: row.id,
                        position: self.position,
                        detail: format!(
                            "record {} does not have the hash the checkpoint saved: the history up to it was rewritten (edited and re-hashed)",
                            row.id
                        ),
                    });
                }
            }
        }
        self.records += 1;
        self.expected = row.id + 1;
        // Reuse the evicted hash's buffer: one allocation less per record.
        let mut kept = if self.recent.len() == LOOKAHEAD {
            self.recent.pop_front().unwrap_or_default()
        } else {
            String::with_capacity(row.hash.len())
        };
        kept.clear();
        kept.push_str(&row.hash);
        self.recent.push_back(kept);
        self.before_last_hash = Some(std::mem::replace(&mut self.last_hash, row.hash));
    }

    fn push_malformed(&mut self, position: u64, detail: String) {
        if self.result.is_some() {
            return;
        }
        self.position = position;
        if self.pending.is_some() {
            self.classify_pending();
            return;
        }
        self.result = Some(ChainBreak {
            kind: BreakKind::Malformed,
            id: self.expected,
            position,
            detail,
        });
    }

    fn fits_after_last(&self, r: &ChainRow) -> bool {
        r.prev_hash == self.last_hash
            && (r.self_consistent() && r.id == self.expected || r.consistent_with_id(self.expected))
    }

    fn classify_pending(&mut self) {
        let Some((c, position, look)) = self.pending.take() else {
            return;
        };
        let g_id = self.expected - 1;
        let in_look = |h: &str| look.iter().any(|r| r.hash == h);
        let in_recent = |h: &str| self.recent.iter().any(|r| r == h);
        let next = look.first();
        let (kind, id, detail) = if !c.self_consistent() {
            let span = LOOKAHEAD as i64 + 2;
            match c.original_id(self.expected, span) {
                Some(a) if Some(&c.prev_hash) == self.before_last_hash.as_ref() => (
                    BreakKind::Inserted,
                    g_id,
                    format!(
                        "record {g_id} was inserted: the record now numbered {} (originally {a}) links to the record before it",
                        c.id
                    ),
                ),
                Some(a) if c.prev_hash == self.last_hash => (
                    BreakKind::Edited,
                    c.id,
                    format!("record {} had its id changed (it was sealed as {a})", c.id),
                ),
                Some(a) if a > self.expected && !in_look(&c.prev_hash) => (
                    BreakKind::Deleted,
                    self.expected,
                    format!(
                        "{} record(s) from id {} were deleted and later records renumbered (the record now numbered {} was sealed as {a})",
                        a - self.expected,
                        self.expected,
                        c.id
                    ),
                ),
                Some(a) => (
                    BreakKind::Reordered,
                    c.id,
                    format!(
                        "records were reordered: the record at position {} was sealed as id {a}",
                        self.expected
                    ),
                ),
                None if next.is_some_and(|n| self.fits_after_last(n)) => (
                    BreakKind::Inserted,
                    c.id,
                    format!(
                        "record {} was inserted: the record after it links directly to record {g_id}",
                        c.id
                    ),
                ),
                None => (
                    BreakKind::Edited,
                    c.id,
                    format!(
                        "record {} was edited: its content no longer matches its hash",
                        c.id
                    ),
                ),
            }
        } else if c.prev_hash != self.last_hash {
            if Some(&c.prev_hash) == self.before_last_hash.as_ref() {
                (
                    BreakKind::Inserted,
                    g_id,
                    format!(
                        "record {g_id} was inserted: record {} links to the record before it",
                        c.id
                    ),
                )
            } else if c.id > self.expected {
                if look.iter().any(|r| r.id == self.expected) || in_look(&c.prev_hash) {
                    (
                        BreakKind::Reordered,
                        c.id,
                        format!(
                            "records were reordered: record {} appears where {} was expected",
                            c.id, self.expected
                        ),
                    )
                } else {
                    (
                        BreakKind::Deleted,
                        self.expected,
                        format!(
                            "record(s) {}..={} were deleted: record {} links to a hash that is missing",
                            self.expected,
                            c.id - 1,
                            c.id
                        ),
                    )
                }
            } else if c.id < self.expected {
                if in_recent(&c.prev_hash) || in_look(&c.prev_hash) {
                    (
                        BreakKind::Reordered,
                        c.id,
                        format!(
                            "records were reordered: record {} appears after record {g_id}",
                            c.id
                        ),
                    )
                } else {
                    (
                        BreakKind::Inserted,
                        c.id,
                        format!("a record with id {} was inserted after record {g_id}", c.id),
                    )
                }
            } else if next.is_some_and(|n| n.prev_hash == c.hash) {
                (
                    BreakKind::Edited,
                    g_id,
                    format!(
                        "record {g_id} was edited and re-hashed: record {} links to a different hash",
                        c.id
                    ),
                )
            } else if next.is_some_and(|n| self.fits_after_last(n)) {
                (
                    BreakKind::Inserted,
                    c.id,
                    format!(
                        "record {} was inserted: the record after it links directly to record {g_id}",
                        c.id
                    ),
                )
            } else if in_look(&c.prev_hash) {
                (
                    BreakKind::Reordered,
                    c.id,
                    format!("records were reordered around record {}", c.id),
                )
            } else {
                (
                    BreakKind::Edited,
                    c.id,
                    format!(
                        "record {} links to a hash that is not record {g_id}'s: its link or its predecessor was edited",
                        c.id
                    ),
                )
            }
        } else {
            (
                BreakKind::Edited,
                c.id,
                format!(
                    "record {} sits where id {} was expected and was re-hashed to match: its id was edited",
                    c.id, self.expected
                ),
            )
        };
        self.result = Some(ChainBreak {
            kind,
            id,
            position,
            detail,
        });
    }

    /// Ends the stream: classifies a pending anomaly, then compares the head with the
    /// checkpoint and, for Postgres, the database's own chain head.
    fn finish(
        mut self,
        source: String,
        db_head: Option<(i64, String)>,
        t0: Instant,
    ) -> VerifyReport {
        if self.pending.is_some() {
            self.classify_pending();
        }
        let head = (self.records > 0 || self.start.after_id > 0)
            .then(|| (self.expected - 1, self.last_hash.clone()));
        if self.result.is_none() {
            if let Some(c) = &self.checkpoint {
                if c.head_id > self.expected - 1 {
                    self.checkpoint_result = Some(CheckpointResult::Failed { head_id: c.head_id });
                    self.result = Some(ChainBreak {
                        kind: BreakKind::Truncated,
                        id: self.expected,
                        position: self.position + 1,
                        detail: format!(
                            "the log ends at record {} but the checkpoint saw {}: the tail was removed",
                            self.expected - 1,
                            c.head_id
                        ),
                    });
                }
            }
        }
        if self.result.is_none() {
            if let Some((count, hash)) = db_head {
                let last = self.expected - 1;
                if count > last {
                    self.result = Some(ChainBreak {
                        kind: BreakKind::Truncated,
                        id: last + 1,
                        position: self.position + 1,
                        detail: format!(
                            "the database's chain head counts {count} records but the log ends at {last}: the tail was removed"
                        ),
                    });
                } else if count != last || hash != self.last_hash {
                    self.result = Some(ChainBreak {
                        kind: BreakKind::Edited,
                        id: last,
                        position: self.position,
                        detail: format!(
                            "the database's chain head (record {count}) does not match the last record ({last}): the head or the tail was edited"
                        ),
                    });
                }
            }
        }
        VerifyReport {
            source,
            start: self.start,
            records: self.records,
            head,
            first_break: self.result,
            checkpoint: self.checkpoint_result,
            elapsed: t0.elapsed(),
        }
    }
}

fn check_source(checkpoint: &Option<Checkpoint>, expected: &str) -> Result<(), VerifyError> {
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

/// Bytes of a JSONL log read per batch handed to a worker thread.
const JSONL_BATCH_BYTES: usize = 512 * 1024;

/// One line of a JSONL log, read back and hashed (on a worker thread).
enum PreparedLine {
    Record(ChainRow),
    Checkpoint(JsonlCut),
    Malformed { torn: bool, error: String },
}

/// A run of complete lines (each ending in `\n`), or the torn last line of the file.
struct LineBatch {
    bytes: Vec<u8>,
    torn: bool,
}

fn prepare_lines(batch: LineBatch) -> Vec<PreparedLine> {
    let text = if batch.torn {
        &batch.bytes[..]
    } else {
        // Every line of a complete batch ends in '\n': drop the last one so split yields no
        // empty tail.
        &batch.bytes[..batch.bytes.len().saturating_sub(1)]
    };
    text.split(|b| *b == b'\n')
        .map(|line| prepare_line(line, batch.torn))
        .collect()
}

fn prepare_line(line: &[u8], torn: bool) -> PreparedLine {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            return PreparedLine::Malformed {
                torn,
                error: format!("not UTF-8: {e}"),
            }
        }
    };
    match parse_line(text) {
        Ok(JsonlLine::Record(r)) => {
            let payload = r.payload();
            PreparedLine::Record(ChainRow::new(r.id, payload, r.prev_hash, r.hash))
        }
        Ok(JsonlLine::Checkpoint(cut)) => PreparedLine::Checkpoint(cut),
        Err(e) => PreparedLine::Malformed {
            torn,
            error: e.to_string(),
        },
    }
}

/// Verifies a JSONL log. A checkpoint line (written by a prune) may only come first.
///
/// Lines are read in batches and parsed and hashed on worker threads (`audit::workers`);
/// the chain itself is checked here, line by line in file order.
pub fn verify_jsonl(
    path: &Path,
    checkpoint: Option<Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    check_source(&checkpoint, "jsonl")?;
    let t0 = Instant::now();
    let io = |source| VerifyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut workers = Workers::new(verify_threads(), prepare_lines);
    let mut line_no: u64 = 0;
    let mut engine: Option<Engine> = None;
    let mut checkpoint = checkpoint;
    let mut pending: Vec<u8> = Vec::new();
    let mut eof = false;
    'outer: loop {
        // Keep every worker busy: read ahead until the pipeline is full or the file ends.
        while !eof && workers.in_flight() < workers.depth() {
            let filled = pending.len();
            pending.resize(filled + JSONL_BATCH_BYTES, 0);
            let n = read_some(&mut file, &mut pending[filled..]).map_err(io)?;
            pending.truncate(filled + n);
            if n == 0 {
                eof = true;
                if !pending.is_empty() {
                    let torn = !pending.ends_with(b"\n");
                    workers.submit(LineBatch {
                        bytes: std::mem::take(&mut pending),
                        torn,
                    });
                }
                break;
            }
            if let Some(last_nl) = pending.iter().rposition(|b| *b == b'\n') {
                let rest = pending.split_off(last_nl + 1);
                workers.submit(LineBatch {
                    bytes: std::mem::replace(&mut pending, rest),
                    torn: false,
                });
            }
        }
        let Some(lines) = workers.next() else {
            break;
        };
        for prepared in lines {
            line_no += 1;
            let e =
                engine.get_or_insert_with(|| Engine::new(ChainStart::genesis(), checkpoint.take()));
            match prepared {
                PreparedLine::Checkpoint(cut) if line_no == 1 => {
                    let start = ChainStart {
                        after_id: cut.cut_id,
                        hash: cut.cut_hash,
                        origin: format!(
                            "prune checkpoint: {} records older than {} removed at {}",
                            cut.removed, cut.older_than, cut.pruned_at
                        ),
                    };
                    let cp = e.checkpoint.take();
                    *e = Engine::new(start, cp);
                    e.position = 1;
                }
                PreparedLine::Checkpoint(_) => e.push_malformed(
                    line_no,
                    format!("line {line_no}: a prune checkpoint may only be the first line"),
                ),
                PreparedLine::Record(row) => {
                    e.push(row);
                }
                PreparedLine::Malformed { torn, error } => {
                    let what = if torn {
                        "a torn last line (left by a crash mid-write, or a cut)"
                    } else {
                        "not a valid audit record"
                    };
                    e.push_malformed(line_no, format!("line {line_no}: {what}: {error}"));
                }
            }
            if e.done() {
                break 'outer;
            }
        }
    }
    let engine = engine.unwrap_or_else(|| Engine::new(ChainStart::genesis(), checkpoint));
    Ok(engine.finish(format!("jsonl:{}", path.display()), None, t0))
}

/// `read`, retried on interruption; 0 only at the end of the file.
fn read_some(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The columns of one row, in canonical order, then prev_hash and hash. Each is rendered as
/// the trigger renders it (jsonb text for `arguments` and the two lists, float8 text for the
/// duration); the payload around them is built here ([`COPY_KINDS`]), never by the database.
const COPY_QUERY: &str = "COPY (SELECT id, \
    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
    trace_id, tenant_id, user_id, to_jsonb(roles), tool, arguments, \
    arguments_sha256, decision, error_code, rows_returned, rows_affected, duration_ms, reason, \
    approval_id, approver, policy_hash, to_jsonb(subjects), actor, prev_hash, hash \
    FROM preflight_audit.audit_log WHERE id > $START ORDER BY id) TO STDOUT";

/// How each of the 20 payload columns of [`COPY_QUERY`] enters the payload.
#[derive(Clone, Copy)]
enum CopyKind {
    /// Text, written as a JSON string.
    Text,
    /// An integer or jsonb text, written as it is.
    Raw,
}

const COPY_KINDS: [CopyKind; 20] = {
    use CopyKind::{Raw, Text};
    [
        Raw, Text, Text, Text, Text, Raw, Text, Raw, Text, Text, Text, Raw, Raw, Text, Text, Text,
        Text, Text, Raw, Text,
    ]
};

/// Verifies `preflight_audit.audit_log` (the connection must be able to read it: the owner).
pub async fn verify_postgres(
    conn: &mut PgConnection,
    checkpoint: Option<Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    check_source(&checkpoint, "postgres")?;
    let t0 = Instant::now();
    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    // float8 text must be the shortest round-trip form the trigger used.
    sqlx::query("SET LOCAL extra_float_digits = 1")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let start = read_start(&mut tx).await?;
    let db_head: Option<(i64, String)> =
        sqlx::query_as("SELECT count, hash FROM preflight_audit.chain_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    let mut engine = Engine::new(start.clone(), checkpoint);
    // COPY cannot take bind parameters; the start id is an integer we read ourselves.
    let query = COPY_QUERY.replace("$START", &start.after_id.to_string());
    {
        let mut stream = tx.copy_out_raw(&query).await.map_err(db)?;
        // Rows are parsed and hashed on worker threads, batch by batch; the chain is checked
        // here in id order. Waiting for a batch blocks this task the way checking it inline
        // would.
        let mut workers = Workers::new(verify_threads(), prepare_copy_rows);
        let mut buf: Vec<u8> = Vec::with_capacity(COPY_BATCH_BYTES + (64 << 10));
        let mut position: u64 = 0;
        let mut ended = false;
        while !engine.done() {
            while !ended && workers.in_flight() < workers.depth() {
                match stream.next().await {
                    Some(chunk) => {
                        buf.extend_from_slice(&chunk.map_err(db)?);
                        if buf.len() >= COPY_BATCH_BYTES {
                            if let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') {
                                let rest = buf[last_nl + 1..].to_vec();
                                buf.truncate(last_nl + 1);
                                workers.submit(std::mem::replace(&mut buf, rest));
                            }
                        }
                    }
                    None => {
                        ended = true;
                        // COPY ends every row with a newline; anything after the last one
                        // is not a row.
                        if let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') {
                            buf.truncate(last_nl + 1);
                            workers.submit(std::mem::take(&mut buf));
                        }
                    }
                }
            }
            let Some(rows) = workers.next() else {
                break;
            };
            for row in rows {
                position += 1;
                let row = row.map_err(|detail| VerifyError::CopyFormat { position, detail })?;
                engine.push(row);
                if engine.done() {
                    break;
                }
            }
        }
    }
    let done_early = engine.done();
    let report = engine.finish(
        "postgres".to_string(),
        if done_early { None } else { db_head },
        t0,
    );
    // Read-only: nothing to keep, and a broken-off COPY leaves the transaction unusable anyway.
    let _ = tx.rollback().await;
    Ok(report)
}

/// The chain's start: the latest prune cut, cross-checked with the audit record the prune wrote.
async fn read_start(conn: &mut PgConnection) -> Result<ChainStart, VerifyError> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('preflight_audit.chain_checkpoints') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if !has_table {
        return Ok(ChainStart::genesis());
    }
    let row: Option<(i64, String, i64, String, String)> = sqlx::query_as(
        "SELECT cut_id, cut_hash, removed, \
                to_char(older_than AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                to_char(pruned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         FROM preflight_audit.chain_checkpoints ORDER BY cut_id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    Ok(match row {
        None => ChainStart::genesis(),
        Some((cut_id, cut_hash, removed, older_than, pruned_at)) => ChainStart {
            after_id: cut_id,
            hash: cut_hash,
            origin: format!(
                "prune checkpoint: {removed} records older than {older_than} removed at {pruned_at}"
            ),
        },
    })
}

/// Bytes of COPY output handed to a worker thread at a time.
const COPY_BATCH_BYTES: usize = 512 * 1024;

/// Parses and hashes a run of complete COPY rows (on a worker thread).
fn prepare_copy_rows(batch: Vec<u8>) -> Vec<Result<ChainRow, String>> {
    // Every batch is non-empty and ends with its last row's newline.
    let rows = batch.strip_suffix(b"\n").unwrap_or(&batch);
    rows.split(|b| *b == b'\n').map(parse_copy_row).collect()
}

/// Parses one COPY text-format row into a [`ChainRow`] (22 columns, see [`COPY_QUERY`]).
fn parse_copy_row(line: &[u8]) -> Result<ChainRow, String> {
    let mut fields: [&[u8]; 22] = [&[]; 22];
    let mut n = 0;
    for f in line.split(|b| *b == b'\t') {
        if n == 22 {
            return Err("more than 22 columns".to_string());
        }
        fields[n] = f;
        n += 1;
    }
    if n != 22 {
        return Err(format!("{n} columns, expected 22"));
    }
    let mut payload = String::with_capacity(line.len() + 64);
    let mut p = PayloadWriter::new(&mut payload);
    let mut scratch: Vec<u8> = Vec::with_capacity(256);
    for (f, kind) in fields[..20].iter().zip(COPY_KINDS) {
        if *f == b"\\N" {
            p.raw(None);
            continue;
        }
        // Most columns have no COPY escape: use them in place.
        let bytes: &[u8] = if f.contains(&b'\\') {
            scratch.clear();
            unescape_copy(f, &mut scratch);
            &scratch
        } else {
            f
        };
        let text = std::str::from_utf8(bytes).map_err(|_| "a column is not UTF-8".to_string())?;
        match kind {
            CopyKind::Text => p.text(Some(text)),
            CopyKind::Raw => p.raw(Some(text)),
        }
    }
    p.finish();
    let id_text = std::str::from_utf8(fields[0]).map_err(|_| "bad id".to_string())?;
    let id: i64 = id_text.parse().map_err(|_| format!("bad id {id_text:?}"))?;
    let text = |f: &[u8]| -> Result<String, String> {
        let mut out = Vec::with_capacity(f.len());
        unescape_copy(f, &mut out);
        String::from_utf8(out).map_err(|_| "hash is not UTF-8".to_string())
    };
    Ok(ChainRow::new(
        id,
        payload,
        text(fields[20])?,
        text(fields[21])?,
    ))
}

/// COPY text format: `\N` is NULL (rendered as ''), backslash escapes otherwise.
fn unescape_copy(f: &[u8], out: &mut Vec<u8>) {
    if f == b"\\N" {
        return;
    }
    if !f.contains(&b'\\') {
        out.extend_from_slice(f);
        return;
    }
    let mut i = 0;
    while i < f.len() {
        let b = f[i];
        if b != b'\\' || i + 1 == f.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = f[i + 1];
        i += 2;
        match e {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v: u32 = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + (f[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v: u32 = 0;
                let mut k = 0;
                while k < 2 && i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + (f[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
}

/// Reads the current head of the Postgres log for a checkpoint.
pub async fn postgres_head(conn: &mut PgConnection) -> Result<Checkpoint, VerifyError> {
    let (count, hash): (i64, String) =
        sqlx::query_as("SELECT count, hash FROM preflight_audit.chain_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    Ok(Checkpoint {
        format: CHECKPOINT_FORMAT.to_string(),
        source: "postgres".to_string(),
        head_id: count,
        head_hash: hash,
        created_at: super::canonical::now_text(),
    })
}

/// Verifies a JSONL log completely and returns its head as a checkpoint; refuses a broken chain
/// (a checkpoint must never bless tampering).
pub fn jsonl_head(path: &Path) -> Result<(Checkpoint, VerifyReport), VerifyError> {
    let report = verify_jsonl(path, None)?;
    let (head_id, head_hash) = report.head.clone().unwrap_or((0, GENESIS_HASH.to_string()));
    Ok((
        Checkpoint {
            format: CHECKPOINT_FORMAT.to_string(),
            source: "jsonl".to_string(),
            head_id,
            head_hash,
            created_at: super::canonical::now_text(),
        },
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::canonical::{chain_hash, now_text, ChainedRecord};
    use crate::audit::record::{AuditRecord, Decision};
    use serde_json::json;

    fn records(n: usize) -> Vec<ChainedRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|i| {
                let rec = AuditRecord {
                    trace_id: format!("t{i}"),
                    tenant_id: "acme".into(),
                    user_id: "u".into(),
                    roles: vec![],
                    tool: "db_get".into(),
                    arguments: json!({"id": i}),
                    arguments_sha256: "x".into(),
                    decision: Decision::Allow,
                    error_code: None,
                    rows_returned: Some(1),
                    rows_affected: None,
                    duration_ms: 1.0,
                    reason: None,
                    approval_id: None,
                    approver: None,
                    policy_hash: "p".into(),
                    subjects: vec![],
                };
                let r = ChainedRecord::seal(&rec, i as i64, now_text(), "a".into(), prev.clone());
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn run(rows: &[ChainedRecord], cp: Option<Checkpoint>) -> VerifyReport {
        let mut e = Engine::new(ChainStart::genesis(), cp);
        for r in rows {
            let row = ChainRow::new(r.id, r.payload(), r.prev_hash.clone(), r.hash.clone());
            if !e.push(row) {
                break;
            }
        }
        e.finish("test".into(), None, Instant::now())
    }

    fn kind(r: &VerifyReport) -> Option<(BreakKind, i64)> {
        r.first_break.as_ref().map(|b| (b.kind, b.id))
    }

    fn reseal(r: &mut ChainedRecord) {
        r.hash = chain_hash(&r.prev_hash, &r.payload());
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = records(100);
        let rep = run(&rows, None);
        assert!(rep.intact(), "{:?}", rep.first_break);
        assert_eq!(rep.records, 100);
        assert_eq!(rep.head.as_ref().map(|h| h.0), Some(100));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let base = records(100);

        let mut edited = base.clone();
        edited[41].tool = "db_delete".into();
        assert_eq!(kind(&run(&edited, None)), Some((BreakKind::Edited, 42)));

        let mut rehashed = base.clone();
        rehashed[41].tool = "db_delete".into();
        reseal(&mut rehashed[41]);
        assert_eq!(kind(&run(&rehashed, None)), Some((BreakKind::Edited, 42)));

        let mut deleted = base.clone();
        deleted.remove(41);
        assert_eq!(kind(&run(&deleted, None)), Some((BreakKind::Deleted, 42)));

        // Deleted, later rows renumbered (ids are in the payload, so their hashes break).
        let mut renumbered = base.clone();
        renumbered.remove(41);
        for r in renumbered.iter_mut().skip(41) {
            r.id -= 1;
        }
        assert_eq!(
            kind(&run(&renumbered, None)),
            Some((BreakKind::Deleted, 42))
        );

        // A forged record, properly linked and hashed, with later rows renumbered.
        let mut inserted = base.clone();
        let mut forged = base[41].clone();
        forged.tool = "db_forged".into();
        reseal(&mut forged);
        inserted.insert(41, forged);
        for r in inserted.iter_mut().skip(42) {
            r.id += 1;
        }
        assert_eq!(kind(&run(&inserted, None)), Some((BreakKind::Inserted, 42)));

        // A forged line dropped in without renumbering and without a valid hash.
        let mut sloppy = base.clone();
        let mut forged = base[41].clone();
        forged.tool = "db_forged".into();
        sloppy.insert(41, forged);
        assert_eq!(kind(&run(&sloppy, None)), Some((BreakKind::Inserted, 42)));

        // Two lines swapped (JSONL).
        let mut swapped = base.clone();
        swapped.swap(41, 42);
        assert_eq!(
            kind(&run(&swapped, None)).map(|k| k.0),
            Some(BreakKind::Reordered)
        );

        // Two rows' ids swapped (Postgres order is by id).
        let mut id_swapped = base.clone();
        id_swapped.swap(41, 42);
        id_swapped[41].id = 42;
        id_swapped[42].id = 43;
        assert_eq!(
            kind(&run(&id_swapped, None)).map(|k| k.0),
            Some(BreakKind::Reordered)
        );
    }

    #[test]
    fn checkpoint_detects_truncated_tail_and_rewrites() {
        let base = records(50);
        let cp = Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            source: "jsonl".into(),
            head_id: 50,
            head_hash: base[49].hash.clone(),
            created_at: now_text(),
        };
        let rep = run(&base, Some(cp.clone()));
        assert!(rep.intact());
        assert_eq!(
            rep.checkpoint,
            Some(CheckpointResult::Matched { head_id: 50 })
        );

        let truncated = &base[..45];
        assert_eq!(
            kind(&run(truncated, Some(cp.clone()))),
            Some((BreakKind::Truncated, 46))
        );

        // Everything re-hashed from record 10 on: the chain is valid, the checkpoint is not.
        let mut rewritten = base.clone();
        rewritten[9].tool = "db_delete".into();
        for i in 9..rewritten.len() {
            if i > 9 {
                rewritten[i].prev_hash = rewritten[i - 1].hash.clone();
            }
            reseal(&mut rewritten[i]);
        }
        assert!(run(&rewritten, None).intact());
        assert_eq!(
            kind(&run(&rewritten, Some(cp))),
            Some((BreakKind::Edited, 50))
        );
    }

    #[test]
    fn jsonl_over_many_batches_finds_the_break_at_its_line() {
        use crate::audit::jsonl::{FsyncPolicy, JsonlSink};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonlSink::open(&path, "tester", FsyncPolicy::Never).unwrap();
        for r in records(3000) {
            let rec = AuditRecord {
                trace_id: r.trace_id.clone(),
                tenant_id: "acme".into(),
                user_id: "u".into(),
                roles: vec![],
                tool: "db_get".into(),
                // Long enough that the file spans several read batches.
                arguments: json!({"id": r.id, "pad": "x".repeat(300)}),
                arguments_sha256: "x".into(),
                decision: Decision::Allow,
                error_code: None,
                rows_returned: Some(1),
                rows_affected: None,
                duration_ms: 1.0,
                reason: None,
                approval_id: None,
                approver: None,
                policy_hash: "p".into(),
                subjects: vec![],
            };
            sink.append_blocking(&rec).unwrap();
        }
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() > 3 * JSONL_BATCH_BYTES, "{} bytes", text.len());
        let rep = verify_jsonl(&path, None).unwrap();
        assert!(rep.intact(), "{:?}", rep.first_break);
        assert_eq!(rep.records, 3000);

        let lines: Vec<&str> = text.lines().collect();
        let write = |lines: &[String]| std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[2499] = edited[2499].replace("\"db_get\"", "\"db_delete\"");
        write(&edited);
        let rep = verify_jsonl(&path, None).unwrap();
        let b = rep.first_break.expect("a break");
        assert_eq!((b.kind, b.id, b.position), (BreakKind::Edited, 2500, 2500));
        assert_eq!(rep.records, 2499);

        // A line that is not UTF-8 is a malformed record at its line, not an I/O error.
        let mut bytes = lines[..1800].join("\n").into_bytes();
        bytes.extend_from_slice(b"\n{\"id\": \xff}\n");
        std::fs::write(&path, &bytes).unwrap();
        let b = verify_jsonl(&path, None)
            .unwrap()
            .first_break
            .expect("a break");
        assert_eq!((b.kind, b.position), (BreakKind::Malformed, 1801));
        assert!(
            b.detail.contains("line 1801: not a valid audit record"),
            "{}",
            b.detail
        );

        // A torn last line, cut mid-record.
        let torn = format!("{}\n{}", lines[..2000].join("\n"), &lines[2000][..40]);
        std::fs::write(&path, torn).unwrap();
        let b = verify_jsonl(&path, None)
            .unwrap()
            .first_break
            .expect("a break");
        assert_eq!((b.kind, b.position), (BreakKind::Malformed, 2001));
        assert!(b.detail.contains("torn last line"), "{}", b.detail);
    }

    #[test]
    fn copy_unescape() {
        let mut out = Vec::new();
        unescape_copy(br"a\tb\\c\nd\101\x41", &mut out);
        assert_eq!(out, b"a\tb\\c\ndAA");
        out.clear();
        unescape_copy(br"\N", &mut out);
        assert!(out.is_empty());
    }
}
