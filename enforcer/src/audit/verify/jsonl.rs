//! Verifying a JSONL log: [`verify_jsonl`] reads the file in batches of whole lines, parses and
//! hashes them on worker threads and checks the chain here, line by line in file order.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use super::engine::{ChainRow, Engine};
use super::line::LineRecord;
use super::report::{
    check_source, ChainStart, Checkpoint, VerifyError, VerifyReport, CHECKPOINT_FORMAT,
};
use crate::audit::canonical::GENESIS_HASH;
use crate::audit::jsonl::{is_checkpoint_line, parse_line, JsonlCut, JsonlLine};
use crate::audit::workers::{verify_threads, Workers};

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
    let malformed = |e: serde_json::Error| PreparedLine::Malformed {
        torn,
        error: e.to_string(),
    };
    if is_checkpoint_line(text) {
        return match parse_line(text) {
            Ok(JsonlLine::Checkpoint(cut)) => PreparedLine::Checkpoint(cut),
            Ok(JsonlLine::Record(r)) => {
                PreparedLine::Record(ChainRow::new(r.id, r.payload(), r.prev_hash, r.hash))
            }
            Err(e) => malformed(e),
        };
    }
    match LineRecord::parse(text) {
        Ok(r) => {
            let mut payload = String::with_capacity(text.len());
            r.write_payload(&mut payload);
            PreparedLine::Record(ChainRow::new(
                r.id,
                payload,
                r.prev_hash().to_owned(),
                r.hash().to_owned(),
            ))
        }
        Err(e) => malformed(e),
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
            created_at: crate::audit::canonical::now_text(),
        },
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify::engine::tests::{record, records};
    use crate::audit::verify::BreakKind;
    use serde_json::json;

    #[test]
    fn jsonl_over_many_batches_finds_the_break_at_its_line() {
        use crate::audit::jsonl::{FsyncPolicy, JsonlSink};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonlSink::open(&path, "tester", FsyncPolicy::Never).unwrap();
        for r in records(3000) {
            // Long enough that the file spans several read batches.
            let rec = record(
                r.trace_id.clone(),
                json!({"id": r.id, "pad": "x".repeat(300)}),
            );
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
    fn malformed_lines_are_named_at_their_line_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let good: Vec<String> = records(3)
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let cut = &good[2][..good[2].len() / 2];
        for bad in [
            "",
            "{",
            "[]",
            "null",
            "{\"id\": \"three\"}",
            &good[2].replace("\"hash\":", "\"hash\": 7, \"x\":"),
            &good[2].replacen("{", "{\"id\": 3, ", 1),
            &format!("{cut}\u{1}"),
            &format!("{} trailing", good[2]),
        ] {
            let text = format!("{}\n{}\n{bad}\n", good[0], good[1]);
            std::fs::write(&path, text).unwrap();
            let b = verify_jsonl(&path, None)
                .unwrap()
                .first_break
                .unwrap_or_else(|| panic!("no break for {bad:?}"));
            assert_eq!(
                (b.kind, b.id, b.position),
                (BreakKind::Malformed, 3, 3),
                "{bad:?}"
            );
            assert!(
                b.detail.starts_with("line 3: not a valid audit record: "),
                "{bad:?}: {}",
                b.detail
            );
        }
    }
}
