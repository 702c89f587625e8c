//! Terminal renderings of the audit commands' results: a verification report
//! ([`verify_text`]), subject-access hits ([`subject_table`]) and saved-view rows
//! ([`view_table`]). JSON output is the types' own serde form; these are for people.

use serde_json::Value;
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Modify, Style, Width};

use super::subject::SubjectHit;
use super::verify::{CheckpointResult, VerifyReport};
use super::views::ViewRows;

/// Columns whose free text is wrapped so a table stays readable.
const WRAPPED: [&str; 4] = ["reason", "subjects", "detail", "trace_id"];
const WRAP_AT: usize = 40;

/// One cell: strings as they are, arrays joined, `null` empty.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut b = Builder::default();
    b.push_record(header.iter().map(|h| h.to_string()));
    for r in rows {
        b.push_record(r);
    }
    let mut t = b.build();
    t.with(Style::sharp());
    for (i, h) in header.iter().enumerate() {
        if WRAPPED.contains(h) {
            t.with(Modify::new(Columns::one(i)).with(Width::wrap(WRAP_AT).keep_words(true)));
        }
    }
    t.to_string()
}

/// A verification report: where the chain starts, how far it verified, the checkpoint
/// comparison, and the first break (kind, id, position, detail) or `intact`.
pub fn verify_text(report: &VerifyReport, source: &str) -> String {
    let mut s = format!("audit log: {source}\n");
    s.push_str(&format!("chain starts at: {}", report.start.origin));
    if report.start.after_id > 0 {
        s.push_str(&format!(" (after record {})", report.start.after_id));
    }
    s.push('\n');
    let head = match &report.head {
        Some((id, hash)) => format!("record {id} ({})", short(hash)),
        None => "empty log".to_string(),
    };
    s.push_str(&format!(
        "records verified: {} in {:.2} s; head: {head}\n",
        report.records,
        report.elapsed.as_secs_f64()
    ));
    if let Some(c) = &report.checkpoint {
        let line = match c {
            CheckpointResult::Matched { head_id } => {
                format!("matched: record {head_id} has the saved hash")
            }
            CheckpointResult::BeforeStart {
                head_id,
                start_after,
            } => format!(
                "not compared: its head (record {head_id}) was pruned (the chain starts after record {start_after})"
            ),
            CheckpointResult::Failed { head_id } => {
                format!("MISMATCH at its head (record {head_id})")
            }
        };
        s.push_str(&format!("checkpoint: {line}\n"));
    }
    match &report.first_break {
        None => {
            s.push_str("intact: every record links to the one before it and matches its hash\n")
        }
        Some(b) => s.push_str(&format!(
            "BROKEN: {} at record {} (position {}): {}\n",
            b.kind.as_str(),
            b.id,
            b.position,
            b.detail
        )),
    }
    s
}

fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// Subject-access hits as a table, oldest first.
pub fn subject_table(hits: &[SubjectHit]) -> String {
    let header = [
        "id",
        "at",
        "tenant",
        "user",
        "tool",
        "decision",
        "error",
        "rows",
        "reason",
        "approver",
        "matched by",
    ];
    let rows = hits.iter().map(|h| {
        let rows = match (h.rows_returned, h.rows_affected) {
            (_, Some(a)) => format!("{a} affected"),
            (Some(r), None) => format!("{r} returned"),
            (None, None) => String::new(),
        };
        vec![
            h.id.to_string(),
            h.at.clone(),
            opt(&h.tenant_id),
            opt(&h.user_id),
            h.tool.clone(),
            h.decision.clone(),
            opt(&h.error_code),
            rows,
            opt(&h.reason),
            opt(&h.approver),
            h.matched_by.clone(),
        ]
    });
    table(&header, rows)
}

/// A saved view's rows as a table, in the view's column order.
pub fn view_table(rows: &ViewRows) -> String {
    let header: Vec<&str> = rows.columns.iter().map(String::as_str).collect();
    table(
        &header,
        rows.rows.iter().map(|r| r.iter().map(cell).collect()),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::audit::verify::{BreakKind, ChainBreak, ChainStart};

    fn report(first_break: Option<ChainBreak>) -> VerifyReport {
        VerifyReport {
            source: "postgres".into(),
            start: ChainStart::genesis(),
            records: 11,
            head: Some((11, "ab".repeat(32))),
            first_break,
            checkpoint: Some(CheckpointResult::Matched { head_id: 10 }),
            elapsed: Duration::from_millis(20),
        }
    }

    #[test]
    fn verify_text_names_the_break() {
        let ok = verify_text(&report(None), "postgres");
        assert!(ok.contains("records verified: 11"), "{ok}");
        assert!(ok.contains("head: record 11 (abababababab)"), "{ok}");
        assert!(ok.contains("checkpoint: matched: record 10"), "{ok}");
        assert!(ok.contains("intact"), "{ok}");
        let broken = verify_text(
            &report(Some(ChainBreak {
                kind: BreakKind::Edited,
                id: 12,
                position: 12,
                detail: "record 12 was edited".into(),
            })),
            "postgres",
        );
        assert!(
            broken.contains("BROKEN: edited at record 12 (position 12): record 12 was edited"),
            "{broken}"
        );
    }

    #[test]
    fn cells_and_tables() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!(["a:1", "b:2"])), "a:1, b:2");
        assert_eq!(cell(&json!(3.5)), "3.5");
        let t = table(&["id", "reason"], vec![vec!["1".into(), "x ".repeat(50)]]);
        assert!(t.lines().all(|l| l.chars().count() < 60), "{t}");
    }
}
