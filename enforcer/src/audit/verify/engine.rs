//! The streaming chain check shared by both sources: [`Engine`] takes [`ChainRow`]s in source
//! order, checks each one's hash, link and position, and at the first anomaly reads a short
//! lookahead and names the kind of break (see the table in the module docs of `verify`).

use std::collections::VecDeque;
use std::time::Instant;

use super::report::{
    BreakKind, ChainBreak, ChainStart, Checkpoint, CheckpointResult, VerifyReport,
};
use crate::audit::canonical::{hash_matches, payload_with_id};

/// How many records after an anomaly the classifier looks at.
const LOOKAHEAD: usize = 64;

/// A record reduced to what the chain check needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    pub id: i64,
    /// The canonical payload (its first field is the id), kept only when `hash` does not match
    /// it: the break classifier then looks for the id it was sealed with. A consistent record's
    /// payload is dropped on the worker thread that rendered it, so it never crosses to the
    /// checking thread (freeing it there was a tenth of a JSONL verify's CPU).
    payload: Option<String>,
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
            payload: (!consistent).then_some(payload),
            prev_hash,
            hash,
            consistent,
        }
    }

    fn self_consistent(&self) -> bool {
        self.consistent
    }

    /// Whether the record's hash matches its payload with `id` in place of its stored id. For a
    /// consistent record that is exactly `id == self.id`: its hash matching a second payload
    /// would be a SHA-256 collision.
    fn consistent_with_id(&self, id: i64) -> bool {
        match &self.payload {
            None => self.consistent && id == self.id,
            Some(payload) => payload_with_id(payload, id)
                .is_some_and(|p| hash_matches(&self.prev_hash, &p, &self.hash)),
        }
    }

    /// The id this record was sealed with, if its stored id was changed (searched near `around`).
    fn original_id(&self, around: i64, span: i64) -> Option<i64> {
        (around - span..=around + span)
            .filter(|a| *a != self.id && *a > 0)
            .find(|a| self.consistent_with_id(*a))
    }
}

/// The streaming chain checker shared by both sources.
pub(super) struct Engine {
    start: ChainStart,
    expected: i64,
    last_hash: String,
    before_last_hash: Option<String>,
    /// Hashes of the last few verified records, for reorder detection.
    recent: VecDeque<String>,
    records: u64,
    pub(super) position: u64,
    pub(super) checkpoint: Option<Checkpoint>,
    checkpoint_result: Option<CheckpointResult>,
    pending: Option<(ChainRow, u64, Vec<ChainRow>)>,
    result: Option<ChainBreak>,
}

impl Engine {
    pub(super) fn new(start: ChainStart, checkpoint: Option<Checkpoint>) -> Self {
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

    pub(super) fn done(&self) -> bool {
        self.result.is_some()
    }

    /// Feeds the next record; returns false once the outcome is known.
    pub(super) fn push(&mut self, row: ChainRow) -> bool {
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

    pub(super) fn push_malformed(&mut self, position: u64, detail: String) {
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
    pub(super) fn finish(
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::audit::canonical::{chain_hash, now_text, ChainedRecord, GENESIS_HASH};
    use crate::audit::record::{AuditRecord, Decision};
    use crate::audit::verify::report::CHECKPOINT_FORMAT;
    use serde_json::json;

    /// A plain allowed `db_get` record with `arguments`, the verifier tests' building block.
    pub(crate) fn record(trace_id: String, arguments: serde_json::Value) -> AuditRecord {
        AuditRecord {
            trace_id,
            tenant_id: "acme".into(),
            user_id: "u".into(),
            roles: vec![],
            tool: "db_get".into(),
            arguments,
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
        }
    }

    pub(crate) fn records(n: usize) -> Vec<ChainedRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|i| {
                let rec = record(format!("t{i}"), json!({"id": i}));
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

    #[test]
    fn only_a_record_whose_hash_fails_keeps_its_payload() {
        let base = records(3);
        let r = &base[1];
        let good = ChainRow::new(r.id, r.payload(), r.prev_hash.clone(), r.hash.clone());
        assert!(good.payload.is_none());
        assert!(good.consistent_with_id(r.id));
        assert!(!good.consistent_with_id(r.id + 1));
        // Sealed as 2, stored as 7: the payload stays, and the classifier finds the 2 in it.
        let mut moved = r.clone();
        moved.id = 7;
        let bad = ChainRow::new(
            7,
            moved.payload(),
            moved.prev_hash.clone(),
            moved.hash.clone(),
        );
        assert!(bad.payload.is_some());
        assert!(!bad.consistent_with_id(7));
        assert!(bad.consistent_with_id(r.id));
        assert_eq!(bad.original_id(5, 4), Some(r.id));
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
}
