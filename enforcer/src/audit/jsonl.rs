//! The JSONL audit sink: one hash-chained JSON object per line, same canonical form as Postgres.
//!
//! Each line is a [`ChainedRecord`]: the sink assigns `id` (gapless, from 1), `at` (UTC,
//! microseconds) and `actor` (configured), and computes `hash` over `prev_hash` and the canonical
//! payload exactly as the database trigger does ([`super::canonical`]), so `preflight audit
//! verify --jsonl` checks a file with the same code as a table.
//!
//! Concurrency: any number of tasks in one process may append; a mutex orders them, so lines and
//! chain positions agree. Another process appending to the same file would fork the chain, so the
//! sink holds an exclusive advisory lock (`flock`) on the file while open and refuses to open a
//! file another sink holds.
//!
//! Durability ([`FsyncPolicy`]): every append has reached the kernel (`write(2)`) before it
//! returns, so a crash or SIGKILL of this process never loses an acknowledged record. Surviving
//! power loss needs `fdatasync`: `Always` (the default) syncs before acknowledging, with group
//! commit (one sync covers every record written before it, so concurrent writers share the
//! cost); `Interval(d)` syncs at most every `d` (records of the last `d` can be lost on power
//! loss); `Never` leaves flushing to the kernel.
//!
//! Recovery: a line torn by a crash mid-write was never acknowledged; opening the file truncates
//! it and logs a warning, and the chain continues from the last complete line.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::canonical::{normalized, now_text, ChainedRecord, GENESIS_HASH};
use super::record::{AuditError, AuditRecord, AuditSink, TxUse};

/// When the sink calls `fdatasync` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before acknowledging each record, shared by concurrent writers (group commit).
    #[default]
    Always,
    /// At most once per interval; a power loss can drop the records of the last interval.
    Interval(Duration),
    /// Never; the kernel flushes when it likes.
    Never,
}

/// The first line of a pruned JSONL log: where the kept chain starts (see `prune`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonlCheckpointLine {
    pub checkpoint: JsonlCut,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonlCut {
    /// The id of the last removed record.
    pub cut_id: i64,
    /// Its hash: the `prev_hash` of the first kept record.
    pub cut_hash: String,
    pub removed: i64,
    pub pruned_at: String,
    pub older_than: String,
}

/// One line of a JSONL log as read back.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonlLine {
    Record(Box<ChainedRecord>),
    Checkpoint(JsonlCut),
}

/// Whether a line is to be read as a prune checkpoint rather than a record.
pub(crate) fn is_checkpoint_line(line: &str) -> bool {
    line.starts_with("{\"checkpoint\"")
}

/// Parses one line: a checkpoint (only valid as the first line) or a record.
pub fn parse_line(line: &str) -> Result<JsonlLine, serde_json::Error> {
    if is_checkpoint_line(line) {
        let c: JsonlCheckpointLine = serde_json::from_str(line)?;
        return Ok(JsonlLine::Checkpoint(c.checkpoint));
    }
    Ok(JsonlLine::Record(Box::new(serde_json::from_str(line)?)))
}

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("cannot open audit log {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path} is in use by another writer (it holds the file lock)")]
    Locked { path: String },
    #[error("audit log {path}: the last line is not a valid record")]
    BadTail {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("audit log {path} is unusable after a failed write; reopen it")]
    Poisoned { path: String },
    #[error("writing audit log {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct State {
    file: File,
    /// Length of the file after the last complete line.
    len: u64,
    count: i64,
    head: String,
    /// Records written so far (for group commit).
    written: u64,
    poisoned: bool,
}

struct SyncState {
    file: File,
    synced: u64,
    last_sync: Instant,
}

/// Where a sink reads the time it stamps into `at`, in the canonical text form. The default is the
/// system clock; the audit-log generator injects a simulated one so a 90-day history can be
/// produced through the real layer in minutes, the chain hashed over the simulated times.
pub type Clock = Arc<dyn Fn() -> String + Send + Sync>;

struct Inner {
    path: PathBuf,
    actor: String,
    clock: Option<Clock>,
    fsync: FsyncPolicy,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
}

/// A hash-chained JSONL audit log (see the module docs).
#[derive(Clone)]
pub struct JsonlSink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JsonlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlSink")
            .field("path", &self.inner.path)
            .field("fsync", &self.inner.fsync)
            .finish()
    }
}

impl JsonlSink {
    /// Opens (or creates) the log at `path`, recovering the chain head from its last line.
    /// `actor` is recorded in every record, like the database's `session_user`.
    pub fn open(path: &Path, actor: &str, fsync: FsyncPolicy) -> Result<Self, JsonlError> {
        Self::open_with_clock(path, actor, fsync, None)
    }

    /// As [`open`](Self::open), stamping records with `clock` instead of the system clock. The
    /// clock is read under the sink's lock, so a clock that never goes back keeps `at` in chain
    /// order.
    pub fn open_with_clock(
        path: &Path,
        actor: &str,
        fsync: FsyncPolicy,
        clock: Option<Clock>,
    ) -> Result<Self, JsonlError> {
        let shown = path.display().to_string();
        let open_err = |source| JsonlError::Open {
            path: shown.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(open_err)?;
        lock_exclusive(&file).map_err(|e| match e {
            LockError::Busy => JsonlError::Locked {
                path: shown.clone(),
            },
            LockError::Io(source) => JsonlError::Open {
                path: shown.clone(),
                source,
            },
        })?;
        let (len, count, head) = recover_head(&mut file, &shown)?;
        let sync_file = file.try_clone().map_err(open_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                actor: actor.to_string(),
                clock,
                fsync,
                state: Mutex::new(State {
                    file,
                    len,
                    count,
                    head,
                    written: 0,
                    poisoned: false,
                }),
                sync: Mutex::new(SyncState {
                    file: sync_file,
                    synced: 0,
                    last_sync: Instant::now(),
                }),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The chain head: (records so far, hash of the last one).
    pub fn head(&self) -> (i64, String) {
        let st = lock(&self.inner.state);
        (st.count, st.head.clone())
    }

    /// Appends one record synchronously (blocking I/O, including the sync its policy asks for).
    pub fn append_blocking(&self, record: &AuditRecord) -> Result<ChainedRecord, JsonlError> {
        let (sealed, seq) = self.write_record(record)?;
        if self.sync_due() {
            self.sync_through(seq)?;
        }
        Ok(sealed)
    }

    /// Seals `record` as the next link and writes its line (to the page cache: fast, and enough
    /// to survive a crash of this process). Returns the record and its write sequence number
    /// for [`sync_through`](Self::sync_through).
    fn write_record(&self, record: &AuditRecord) -> Result<(ChainedRecord, u64), JsonlError> {
        let inner = &self.inner;
        let record = normalized(record);
        let mut st = lock(&inner.state);
        if st.poisoned {
            return Err(JsonlError::Poisoned {
                path: inner.path.display().to_string(),
            });
        }
        let sealed = ChainedRecord::seal(
            &record,
            st.count + 1,
            inner.clock.as_ref().map_or_else(now_text, |c| c()),
            inner.actor.clone(),
            st.head.clone(),
        );
        let mut line = serde_json::to_vec(&sealed).map_err(|e| JsonlError::Write {
            path: inner.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        if let Err(source) = st.file.write_all(&line) {
            // A partial line would corrupt every later record: cut it off, or refuse all
            // further appends if even that fails.
            let len = st.len;
            if st.file.set_len(len).is_err() {
                st.poisoned = true;
            }
            return Err(JsonlError::Write {
                path: inner.path.display().to_string(),
                source,
            });
        }
        st.len += line.len() as u64;
        st.count = sealed.id;
        st.head = sealed.hash.clone();
        st.written += 1;
        let seq = st.written;
        Ok((sealed, seq))
    }

    /// Whether the record just written must be synced before it is acknowledged.
    fn sync_due(&self) -> bool {
        match self.inner.fsync {
            FsyncPolicy::Never => false,
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => lock(&self.inner.sync).last_sync.elapsed() >= every,
        }
    }

    /// Group commit: whoever holds the sync lock syncs everything written so far; writers queued
    /// behind it then find their record already covered.
    fn sync_through(&self, seq: u64) -> Result<(), JsonlError> {
        let inner = &self.inner;
        let mut sy = lock(&inner.sync);
        if sy.synced >= seq {
            return Ok(());
        }
        let target = lock(&inner.state).written;
        sy.file.sync_data().map_err(|source| JsonlError::Write {
            path: inner.path.display().to_string(),
            source,
        })?;
        sy.synced = target;
        sy.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs every record written so far (used on shutdown and by tests).
    pub fn flush(&self) -> Result<(), JsonlError> {
        let seq = lock(&self.inner.state).written;
        self.sync_through(seq)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent state (the head is updated only after a
    // complete write), so a poisoned mutex is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum LockError {
    Busy,
    Io(std::io::Error),
}

fn lock_exclusive(file: &File) -> Result<(), LockError> {
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc_flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Err(LockError::Busy)
    } else {
        Err(LockError::Io(err))
    }
}

const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;

extern "C" {
    #[link_name = "flock"]
    fn libc_flock(fd: i32, operation: i32) -> i32;
}

/// Finds the last complete line, truncating a torn tail, and returns (length, count, head hash).
fn recover_head(file: &mut File, shown: &str) -> Result<(u64, i64, String), JsonlError> {
    let io = |source| JsonlError::Open {
        path: shown.to_string(),
        source,
    };
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Ok((0, 0, GENESIS_HASH.to_string()));
    }
    // Read backwards in chunks until the tail holds the start of the last complete line.
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    const CHUNK: u64 = 64 * 1024;
    loop {
        let start = pos.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(&mut buf).map_err(io)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        pos = start;
        let last_nl = tail.iter().rposition(|b| *b == b'\n');
        let complete_end = match last_nl {
            Some(i) => i,
            None if pos == 0 => {
                // No complete line at all: everything is a torn first line.
                truncate_torn(file, 0, len, shown)?;
                return Ok((0, 0, GENESIS_HASH.to_string()));
            }
            None => continue,
        };
        let prev_nl = tail[..complete_end].iter().rposition(|b| *b == b'\n');
        if prev_nl.is_none() && pos > 0 {
            continue;
        }
        let line_start = prev_nl.map(|i| i + 1).unwrap_or(0);
        let keep_len = pos + complete_end as u64 + 1;
        if keep_len < len {
            truncate_torn(file, keep_len, len, shown)?;
        }
        let line = String::from_utf8_lossy(&tail[line_start..complete_end]);
        let parsed = parse_line(&line).map_err(|source| JsonlError::BadTail {
            path: shown.to_string(),
            source,
        })?;
        let (count, head) = match parsed {
            JsonlLine::Record(r) => (r.id, r.hash),
            JsonlLine::Checkpoint(c) => (c.cut_id, c.cut_hash),
        };
        return Ok((keep_len, count, head));
    }
}

fn truncate_torn(file: &mut File, keep: u64, len: u64, shown: &str) -> Result<(), JsonlError> {
    ::tracing::warn!(
        path = shown,
        dropped_bytes = len - keep,
        "audit log ends with a torn, never-acknowledged line; truncating it"
    );
    file.set_len(keep).map_err(|source| JsonlError::Open {
        path: shown.to_string(),
        source,
    })?;
    file.seek(SeekFrom::End(0))
        .map_err(|source| JsonlError::Open {
            path: shown.to_string(),
            source,
        })?;
    Ok(())
}

#[async_trait]
impl AuditSink for JsonlSink {
    fn kind(&self) -> &'static str {
        "jsonl"
    }

    fn tx_use(&self) -> TxUse {
        TxUse::Unused
    }

    async fn append(
        &self,
        _tx: Option<&mut PgConnection>,
        record: &AuditRecord,
    ) -> Result<(), AuditError> {
        let to_err = |e: JsonlError| AuditError::Sink {
            sink: "jsonl",
            source: Box::new(e),
        };
        // The write goes to the page cache and takes microseconds, so it runs here; only a
        // sync, which can take milliseconds, leaves the executor thread.
        let (_, seq) = self.write_record(record).map_err(to_err)?;
        if !self.sync_due() {
            return Ok(());
        }
        let sink = self.clone();
        tokio::task::spawn_blocking(move || sink.sync_through(seq))
            .await
            .map_err(|e| AuditError::Sink {
                sink: "jsonl",
                source: Box::new(e),
            })?
            .map_err(to_err)
    }

    async fn health(&self) -> Result<String, AuditError> {
        let st = lock(&self.inner.state);
        if st.poisoned {
            return Err(AuditError::Sink {
                sink: "jsonl",
                source: Box::new(JsonlError::Poisoned {
                    path: self.inner.path.display().to_string(),
                }),
            });
        }
        Ok(format!(
            "ok ({} records, fsync {:?})",
            st.count, self.inner.fsync
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Decision;
    use serde_json::json;

    fn rec(i: usize) -> AuditRecord {
        AuditRecord {
            trace_id: format!("t{i}"),
            tenant_id: "acme".into(),
            user_id: "u1".into(),
            roles: vec!["support".into()],
            tool: "db_get".into(),
            arguments: json!({"model": "orders", "id": i}),
            arguments_sha256: "00".into(),
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 0.5,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "p".into(),
            subjects: vec![],
        }
    }

    #[test]
    fn chain_continues_across_reopen_and_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let sink = JsonlSink::open(&path, "tester", FsyncPolicy::Never).unwrap();
            for i in 0..3 {
                sink.append_blocking(&rec(i)).unwrap();
            }
            assert_eq!(sink.head().0, 3);
        }
        // Simulate a crash in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":4,\"at\":\"2").unwrap();
        drop(f);
        let sink = JsonlSink::open(&path, "tester", FsyncPolicy::Always).unwrap();
        assert_eq!(sink.head().0, 3);
        let r = sink.append_blocking(&rec(9)).unwrap();
        assert_eq!(r.id, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let mut prev = GENESIS_HASH.to_string();
        for l in lines {
            let JsonlLine::Record(r) = parse_line(l).unwrap() else {
                panic!("expected a record")
            };
            assert!(r.self_consistent());
            assert_eq!(r.prev_hash, prev);
            prev = r.hash.clone();
        }
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let _a = JsonlSink::open(&path, "a", FsyncPolicy::Never).unwrap();
        assert!(matches!(
            JsonlSink::open(&path, "b", FsyncPolicy::Never),
            Err(JsonlError::Locked { .. })
        ));
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonlSink::open(&path, "tester", FsyncPolicy::Always).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let sink = sink.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        sink.append_blocking(&rec(t * 1000 + i)).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let mut prev = GENESIS_HASH.to_string();
        for (n, l) in text.lines().enumerate() {
            let JsonlLine::Record(r) = parse_line(l).unwrap() else {
                panic!("expected a record")
            };
            assert_eq!(r.id, n as i64 + 1);
            assert_eq!(r.prev_hash, prev);
            assert!(r.self_consistent());
            prev = r.hash.clone();
        }
        assert_eq!(text.lines().count(), 200);
    }
}
