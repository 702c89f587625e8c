//! Where the review's records come from: a JSONL log or the Postgres table, verified first.
//!
//! [`review_jsonl`] and [`review_postgres`] verify the hash chain with the same code as
//! `preflight audit verify`; a chain that does not verify yields a [`Review`] that says so and
//! has no sections. Otherwise they stream the window's records into an [`Accumulator`].

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;

use preflight_enforcer::audit::jsonl::{parse_line, JsonlLine};
use preflight_enforcer::audit::subject::read_records;
use preflight_enforcer::audit::{verify_jsonl, verify_postgres, VerifyReport};
use sqlx::PgConnection;

use crate::analyze::{attention, parse_at, time_text, Accumulator, Inputs};
use crate::model::{ChainStatus, Review, Window};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Io(String),
    #[error("{path}:{line}: not an audit record: {detail}")]
    Parse {
        path: String,
        line: u64,
        detail: String,
    },
    #[error("verifying the chain: {0}")]
    Verify(String),
    #[error("reading the audit log from the database: {0}")]
    Database(String),
}

/// How far back the window reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// This many days before the last record.
    Days(i64),
    /// From this instant (microseconds since the epoch).
    From(i64),
}

impl Since {
    /// `90d`, or a date `YYYY-MM-DD`, or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<Since, String> {
        let s = s.trim();
        if let Some(d) = s.strip_suffix('d') {
            return match d.parse::<i64>() {
                Ok(n) if n > 0 => Ok(Since::Days(n)),
                _ => Err(format!(
                    "expected a positive number of days such as 90d, got {s:?}"
                )),
            };
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                return Ok(Since::From(t.and_utc().timestamp_micros()));
            }
        }
        parse_at(s).map(Since::From).ok_or_else(|| {
            format!("expected 90d, a date YYYY-MM-DD or an RFC 3339 time, got {s:?}")
        })
    }

    fn start_us(&self, last_us: i64) -> i64 {
        match self {
            Since::Days(n) => last_us - n * 24 * 3_600_000_000,
            Since::From(t) => *t,
        }
    }
}

fn chain(report: &VerifyReport) -> ChainStatus {
    ChainStatus {
        verified: report.intact(),
        records: report.records,
        first_break: report
            .first_break
            .as_ref()
            .map(|b| format!("record {}: {} ({})", b.id, b.kind.as_str(), b.detail)),
    }
}

fn broken(source: String, since: &str, chain: ChainStatus) -> Review {
    let why = format!(
        "the audit chain does not verify ({}): the log cannot be reviewed as sound; investigate the break first (`preflight audit verify`)",
        chain.first_break.as_deref().unwrap_or("unknown break")
    );
    Review {
        source,
        window: Window {
            from: String::new(),
            to: String::new(),
            since: since.to_string(),
        },
        chain,
        sections: None,
        attention: vec![why],
    }
}

/// The time of the last record of a JSONL log (read from its tail).
fn last_at_jsonl(path: &Path) -> Result<Option<i64>, SourceError> {
    let io = |e: std::io::Error| SourceError::Io(format!("reading {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).map_err(io)?;
    Ok(tail
        .lines()
        .rev()
        .filter_map(|l| match parse_line(l) {
            Ok(JsonlLine::Record(r)) => parse_at(&r.at),
            _ => None,
        })
        .next())
}

fn finish(
    source: String,
    since: &str,
    chain: ChainStatus,
    from: i64,
    to: i64,
    acc: Accumulator,
    inputs: &Inputs,
) -> Review {
    let sections = acc.finish(inputs);
    let attention = attention(&sections);
    Review {
        source,
        window: Window {
            from: time_text(from),
            to: time_text(to),
            since: since.to_string(),
        },
        chain,
        sections: Some(sections),
        attention,
    }
}

/// Verifies, then reviews, a JSONL log.
pub fn review_jsonl(
    path: &Path,
    since: &Since,
    since_text: &str,
    inputs: &Inputs,
) -> Result<Review, SourceError> {
    let source = format!("jsonl:{}", path.display());
    let report = verify_jsonl(path, None).map_err(|e| SourceError::Verify(error_chain(&e)))?;
    let status = chain(&report);
    if !status.verified {
        return Ok(broken(source, since_text, status));
    }
    let to = last_at_jsonl(path)?.unwrap_or(0);
    let from = since.start_us(to);
    let mut acc = Accumulator::new(from, to, inputs.policy.as_ref(), &inputs.known);
    let file = std::fs::File::open(path)
        .map_err(|e| SourceError::Io(format!("reading {}: {e}", path.display())))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| SourceError::Io(format!("reading {}: {e}", path.display())))?;
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(JsonlLine::Record(r)) => acc.add(&r),
            Ok(JsonlLine::Checkpoint(_)) => {}
            Err(e) => {
                return Err(SourceError::Parse {
                    path: path.display().to_string(),
                    line: n as u64 + 1,
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(finish(source, since_text, status, from, to, acc, inputs))
}

/// Verifies, then reviews, `preflight_audit.audit_log` (an owner connection).
pub async fn review_postgres(
    conn: &mut PgConnection,
    since: &Since,
    since_text: &str,
    inputs: &Inputs,
) -> Result<Review, SourceError> {
    let source = "postgres".to_string();
    let report = verify_postgres(conn, None)
        .await
        .map_err(|e| SourceError::Verify(error_chain(&e)))?;
    let status = chain(&report);
    if !status.verified {
        return Ok(broken(source, since_text, status));
    }
    let last: Option<String> = sqlx::query_scalar(
        "SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM preflight_audit.audit_log",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| SourceError::Database(e.to_string()))?;
    let to = last.as_deref().and_then(parse_at).unwrap_or(0);
    let from = since.start_us(to);
    let mut acc = Accumulator::new(from, to, inputs.policy.as_ref(), &inputs.known);
    let mut after = 0;
    loop {
        let page = read_records(conn, after, 10_000)
            .await
            .map_err(|e| SourceError::Database(e.to_string()))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in &page {
            acc.add(r);
        }
    }
    Ok(finish(source, since_text, status, from, to, acc, inputs))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}
