//! Saved audit views (AUD-5): the security team's common questions, asked by name.
//!
//! Each [`SavedView`] is a SQL view in schema `preflight_audit` (see
//! `fixtures/shop/50_audit.sql`), readable by the owner. [`query_postgres`] reads one through
//! that view; [`query_jsonl`] answers the same question from a JSONL log with the same columns
//! and order, so a file copy of the log can be questioned too.
//!
//! | view | question |
//! |---|---|
//! | `denials_by_code` | which denials happen, per error code and tenant |
//! | `writes_with_reasons` | every write attempt with its reason and approver |
//! | `cross_tenant_attempts` | who asked for rows outside their tenant (`tenant_mismatch`, `not_found`) |
//! | `slowest_calls` | the slowest calls |
//! | `subject_access` | every operation per data subject (`model:id`) |

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use super::canonical::ChainedRecord;
use super::jsonl::{parse_line, JsonlLine};

/// A saved question about the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedView {
    DenialsByCode,
    WritesWithReasons,
    CrossTenantAttempts,
    SlowestCalls,
    SubjectAccess,
}

/// The write tools, as the `writes_with_reasons` view lists them.
const WRITE_TOOLS: [&str; 4] = ["db_create", "db_update", "db_delete", "db_bulk_update"];

/// The error codes the `cross_tenant_attempts` view counts.
const CROSS_TENANT_CODES: [&str; 2] = ["tenant_mismatch", "not_found"];

impl SavedView {
    pub const ALL: [SavedView; 5] = [
        SavedView::DenialsByCode,
        SavedView::WritesWithReasons,
        SavedView::CrossTenantAttempts,
        SavedView::SlowestCalls,
        SavedView::SubjectAccess,
    ];

    /// The view's name, which is also its SQL view's name in `preflight_audit`.
    pub fn name(self) -> &'static str {
        match self {
            SavedView::DenialsByCode => "denials_by_code",
            SavedView::WritesWithReasons => "writes_with_reasons",
            SavedView::CrossTenantAttempts => "cross_tenant_attempts",
            SavedView::SlowestCalls => "slowest_calls",
            SavedView::SubjectAccess => "subject_access",
        }
    }

    /// The question it answers, in one line.
    pub fn about(self) -> &'static str {
        match self {
            SavedView::DenialsByCode => "denied calls counted per error code and tenant, most first",
            SavedView::WritesWithReasons => {
                "every write attempt with its reason, approval and approver, newest first"
            }
            SavedView::CrossTenantAttempts => {
                "reads of rows outside the caller's tenant (tenant_mismatch, not_found) per tenant, user and tool, most first"
            }
            SavedView::SlowestCalls => "calls by duration, slowest first",
            SavedView::SubjectAccess => {
                "every operation per data subject (model:id), newest first"
            }
        }
    }

    /// By name; `-` may stand for `_`.
    pub fn parse(name: &str) -> Option<SavedView> {
        let name = name.trim().replace('-', "_");
        SavedView::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The columns, in the SQL view's order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            SavedView::DenialsByCode => &["code", "tenant", "count"],
            SavedView::WritesWithReasons => &[
                "id",
                "at",
                "trace_id",
                "tenant_id",
                "user_id",
                "tool",
                "decision",
                "error_code",
                "rows_affected",
                "reason",
                "approval_id",
                "approver",
                "subjects",
                "actor",
            ],
            SavedView::CrossTenantAttempts => &[
                "tenant_id",
                "user_id",
                "tool",
                "error_code",
                "count",
                "first_at",
                "last_at",
            ],
            SavedView::SlowestCalls => &[
                "id",
                "at",
                "trace_id",
                "tenant_id",
                "user_id",
                "tool",
                "decision",
                "error_code",
                "duration_ms",
                "rows_returned",
                "rows_affected",
            ],
            SavedView::SubjectAccess => &[
                "subject",
                "id",
                "at",
                "tool",
                "decision",
                "tenant_id",
                "user_id",
                "trace_id",
                "reason",
                "actor",
            ],
        }
    }

    /// The order rows are shown in (SQL over the view's own columns; constant text).
    fn order_by(self) -> &'static str {
        match self {
            SavedView::DenialsByCode => "count DESC, code, tenant",
            SavedView::WritesWithReasons => "id DESC",
            SavedView::CrossTenantAttempts => "count DESC, tenant_id, user_id, tool, error_code",
            SavedView::SlowestCalls => "duration_ms DESC, id",
            SavedView::SubjectAccess => "id DESC, subject",
        }
    }
}

/// The rows of one view, at most `limit` of `total`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ViewRows {
    pub view: SavedView,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Rows the view holds in all.
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(
        "the database has no saved view preflight_audit.{view} (load fixtures/shop/50_audit.sql)"
    )]
    Missing { view: &'static str },
    #[error("preflight_audit.{view} has no column {column}: the view differs from fixtures/shop/50_audit.sql")]
    Shape { view: &'static str, column: String },
    #[error("querying preflight_audit.{view}")]
    Database {
        view: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a valid audit record")]
    Parse {
        path: String,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a saved view through the owner connection, in a read-only transaction with UTC times.
pub async fn query_postgres(
    conn: &mut PgConnection,
    view: SavedView,
    limit: u64,
) -> Result<ViewRows, ViewError> {
    let name = view.name();
    let db = |source| ViewError::Database { view: name, source };
    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query("SET LOCAL TimeZone = 'UTC'")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("preflight_audit.{name}"))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    if !exists {
        return Err(ViewError::Missing { view: name });
    }
    // The view name and the ordering are constants of this module, never input.
    let total: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM preflight_audit.\"{name}\""))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    let rows: Vec<Value> = sqlx::query_scalar(&format!(
        "SELECT row_to_json(v) FROM preflight_audit.\"{name}\" v ORDER BY {} LIMIT $1",
        view.order_by()
    ))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let _ = tx.rollback().await;
    let columns = view.columns();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut cells = Vec::with_capacity(columns.len());
        for c in columns {
            let v = row.get(*c).ok_or_else(|| ViewError::Shape {
                view: name,
                column: c.to_string(),
            })?;
            cells.push(normalize_time(c, v.clone()));
        }
        out.push(cells);
    }
    Ok(ViewRows {
        view,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: out,
        total: total.max(0) as u64,
    })
}

/// Postgres renders a UTC `timestamptz` in JSON as `...+00:00`; the log's own form ends in `Z`.
fn normalize_time(column: &str, v: Value) -> Value {
    let is_time = column == "at" || column.ends_with("_at");
    match v {
        Value::String(s) if is_time => match s.strip_suffix("+00:00") {
            Some(utc) => Value::String(format!("{utc}Z")),
            None => Value::String(s),
        },
        other => other,
    }
}

/// Answers a saved view from a JSONL log (checkpoint lines are skipped), streaming it once.
pub fn query_jsonl(path: &Path, view: SavedView, limit: u64) -> Result<ViewRows, ViewError> {
    let file = std::fs::File::open(path).map_err(|source| ViewError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut acc = Accumulator::new(view, limit);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ViewError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(JsonlLine::Record(r)) => acc.push(&r),
            Ok(JsonlLine::Checkpoint(_)) => {}
            Err(source) => {
                return Err(ViewError::Parse {
                    path: path.display().to_string(),
                    line: n as u64 + 1,
                    source,
                })
            }
        }
    }
    Ok(acc.finish())
}

/// Group key of `cross_tenant_attempts`: tenant, user, tool, code.
type AttemptKey = (Option<String>, Option<String>, String, Option<String>);

/// The JSONL twin of each view, keeping only what the answer needs (`limit` rows for the
/// row views, one entry per group for the grouped ones).
struct Accumulator {
    view: SavedView,
    limit: usize,
    total: u64,
    /// Newest-first views: the last `limit` rows seen.
    recent: VecDeque<Vec<Value>>,
    /// `slowest_calls`: the `limit` slowest, as (duration, id, row).
    slowest: Vec<(f64, i64, Vec<Value>)>,
    denials: BTreeMap<(Option<String>, Option<String>), u64>,
    attempts: BTreeMap<AttemptKey, (u64, String, String)>,
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| json!(s))
}

impl Accumulator {
    fn new(view: SavedView, limit: usize) -> Self {
        Self {
            view,
            limit,
            total: 0,
            recent: VecDeque::new(),
            slowest: Vec::new(),
            denials: BTreeMap::new(),
            attempts: BTreeMap::new(),
        }
    }

    fn keep_recent(&mut self, row: Vec<Value>) {
        self.total += 1;
        if self.limit == 0 {
            return;
        }
        if self.recent.len() == self.limit {
            self.recent.pop_front();
        }
        self.recent.push_back(row);
    }

    fn push(&mut self, r: &ChainedRecord) {
        match self.view {
            SavedView::DenialsByCode => {
                if r.decision == "deny" {
                    *self
                        .denials
                        .entry((r.error_code.clone(), r.tenant_id.clone()))
                        .or_default() += 1;
                }
            }
            SavedView::WritesWithReasons => {
                if WRITE_TOOLS.contains(&r.tool.as_str()) {
                    self.keep_recent(vec![
                        json!(r.id),
                        json!(r.at),
                        json!(r.trace_id),
                        opt(&r.tenant_id),
                        opt(&r.user_id),
                        json!(r.tool),
                        json!(r.decision),
                        opt(&r.error_code),
                        json!(r.rows_affected),
                        opt(&r.reason),
                        opt(&r.approval_id),
                        opt(&r.approver),
                        json!(r.subjects),
                        json!(r.actor),
                    ]);
                }
            }
            SavedView::CrossTenantAttempts => {
                let code = r.error_code.as_deref().unwrap_or("");
                if CROSS_TENANT_CODES.contains(&code) {
                    let e = self
                        .attempts
                        .entry((
                            r.tenant_id.clone(),
                            r.user_id.clone(),
                            r.tool.clone(),
                            r.error_code.clone(),
                        ))
                        .or_insert_with(|| (0, r.at.clone(), r.at.clone()));
                    e.0 += 1;
                    // The canonical time text sorts like the time it names.
                    if r.at < e.1 {
                        e.1 = r.at.clone();
                    }
                    if r.at > e.2 {
                        e.2 = r.at.clone();
                    }
                }
            }
            SavedView::SlowestCalls => {
                let Some(d) = r.duration_ms else { return };
                self.total += 1;
                if self.limit == 0 {
                    return;
                }
                let row = vec![
                    json!(r.id),
                    json!(r.at),
                    json!(r.trace_id),
                    opt(&r.tenant_id),
                    opt(&r.user_id),
                    json!(r.tool),
                    json!(r.decision),
                    opt(&r.error_code),
                    json!(d),
                    json!(r.rows_returned),
                    json!(r.rows_affected),
                ];
                self.slowest.push((d, r.id, row));
                // Trim now and then, so memory stays near `limit` rows on any log size.
                if self.slowest.len() >= self.limit.saturating_mul(2).max(64) {
                    self.sort_slowest();
                    self.slowest.truncate(self.limit);
                }
            }
            SavedView::SubjectAccess => {
                // Pushed largest first, so a record cut by the limit keeps its smallest
                // subjects, as `ORDER BY id DESC, subject LIMIT n` does.
                let mut subjects: Vec<&String> = r.subjects.iter().collect();
                subjects.sort_unstable_by(|a, b| b.cmp(a));
                for s in subjects {
                    self.keep_recent(vec![
                        json!(s),
                        json!(r.id),
                        json!(r.at),
                        json!(r.tool),
                        json!(r.decision),
                        opt(&r.tenant_id),
                        opt(&r.user_id),
                        json!(r.trace_id),
                        opt(&r.reason),
                        json!(r.actor),
                    ]);
                }
            }
        }
    }

    fn sort_slowest(&mut self) {
        self.slowest.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
    }

    fn finish(mut self) -> ViewRows {
        let view = self.view;
        let rows: Vec<Vec<Value>> = match view {
            SavedView::DenialsByCode => {
                self.total = self.denials.len() as u64;
                let mut groups: Vec<_> = self.denials.into_iter().collect();
                // count DESC, then code and tenant ascending (NULLs last, as in Postgres).
                groups.sort_by(|a, b| {
                    b.1.cmp(&a.1)
                        .then(nulls_last(&a.0 .0, &b.0 .0))
                        .then(nulls_last(&a.0 .1, &b.0 .1))
                });
                groups
                    .into_iter()
                    .take(self.limit)
                    .map(|((code, tenant), n)| vec![opt(&code), opt(&tenant), json!(n)])
                    .collect()
            }
            SavedView::CrossTenantAttempts => {
                self.total = self.attempts.len() as u64;
                let mut groups: Vec<_> = self.attempts.into_iter().collect();
                groups.sort_by(|a, b| {
                    b.1 .0
                        .cmp(&a.1 .0)
                        .then(nulls_last(&a.0 .0, &b.0 .0))
                        .then(nulls_last(&a.0 .1, &b.0 .1))
                        .then(a.0 .2.cmp(&b.0 .2))
                        .then(nulls_last(&a.0 .3, &b.0 .3))
                });
                groups
                    .into_iter()
                    .take(self.limit)
                    .map(|((tenant, user, tool, code), (n, first, last))| {
                        vec![
                            opt(&tenant),
                            opt(&user),
                            json!(tool),
                            opt(&code),
                            json!(n),
                            json!(first),
                            json!(last),
                        ]
                    })
                    .collect()
            }
            SavedView::SlowestCalls => {
                self.sort_slowest();
                self.slowest.truncate(self.limit);
                self.slowest.into_iter().map(|(_, _, row)| row).collect()
            }
            SavedView::WritesWithReasons => self.recent.into_iter().rev().collect(),
            SavedView::SubjectAccess => {
                // Newest record first; a record's subjects in ascending order.
                let mut rows: Vec<Vec<Value>> = self.recent.into_iter().collect();
                rows.sort_by(|a, b| {
                    let id = |r: &Vec<Value>| r[1].as_i64().unwrap_or(0);
                    id(b).cmp(&id(a)).then(a[0].as_str().cmp(&b[0].as_str()))
                });
                rows
            }
        };
        ViewRows {
            view,
            columns: view.columns().iter().map(|c| c.to_string()).collect(),
            rows,
            total: self.total,
        }
    }
}

fn nulls_last(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: i64, tool: &str, decision: &str, code: Option<&str>, ms: f64) -> ChainedRecord {
        ChainedRecord {
            id,
            at: format!("2026-01-01T00:00:{:02}.000000Z", id),
            trace_id: format!("t{id}"),
            tenant_id: Some(if id % 2 == 0 { "acme" } else { "globex" }.into()),
            user_id: Some("u".into()),
            roles: None,
            tool: tool.into(),
            arguments: json!({}),
            arguments_sha256: "x".into(),
            decision: decision.into(),
            error_code: code.map(String::from),
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: Some(ms),
            reason: Some(format!("r{id}")),
            approval_id: None,
            approver: None,
            policy_hash: "p".into(),
            subjects: vec![format!("customers:{id}"), "orders:1".into()],
            actor: "a".into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn run(view: SavedView, limit: usize, records: &[ChainedRecord]) -> ViewRows {
        let mut acc = Accumulator::new(view, limit);
        for r in records {
            acc.push(r);
        }
        acc.finish()
    }

    fn log() -> Vec<ChainedRecord> {
        vec![
            rec(1, "db_get", "deny", Some("not_found"), 5.0),
            rec(2, "db_update", "allow", None, 9.0),
            rec(3, "db_get", "deny", Some("not_found"), 1.0),
            rec(4, "db_query", "deny", Some("field_denied"), 7.0),
            rec(5, "db_delete", "deny", Some("reason_required"), 2.0),
        ]
    }

    #[test]
    fn names_parse_and_columns_match_the_sql_views() {
        for v in SavedView::ALL {
            assert_eq!(SavedView::parse(v.name()), Some(v));
            assert_eq!(SavedView::parse(&v.name().replace('_', "-")), Some(v));
            assert!(!v.columns().is_empty());
        }
        assert_eq!(SavedView::parse("nope"), None);
        // Every column the module expects is in the SQL view definition.
        let sql = include_str!("../../../fixtures/shop/50_audit.sql");
        for v in SavedView::ALL {
            let start = sql
                .find(&format!("CREATE VIEW preflight_audit.{} AS", v.name()))
                .unwrap_or_else(|| panic!("{} is not in 50_audit.sql", v.name()));
            let body = &sql[start..start + sql[start..].find(';').unwrap()];
            for c in v.columns() {
                assert!(body.contains(c), "{}: column {c}", v.name());
            }
        }
    }

    #[test]
    fn grouped_views_count_and_order() {
        let d = run(SavedView::DenialsByCode, 10, &log());
        assert_eq!(d.total, 3);
        assert_eq!(
            d.rows[0],
            vec![json!("not_found"), json!("globex"), json!(2)]
        );
        let c = run(SavedView::CrossTenantAttempts, 10, &log());
        assert_eq!(c.rows.len(), 1);
        assert_eq!(c.rows[0][4], json!(2));
        assert_eq!(c.rows[0][5], json!(log()[0].at));
        assert_eq!(c.rows[0][6], json!(log()[2].at));
    }

    #[test]
    fn row_views_order_and_limit() {
        let w = run(SavedView::WritesWithReasons, 10, &log());
        assert_eq!(w.total, 2);
        assert_eq!(w.rows[0][0], json!(5));
        assert_eq!(w.rows[1][0], json!(2));
        let s = run(SavedView::SlowestCalls, 2, &log());
        assert_eq!(s.total, 5);
        let ids: Vec<_> = s.rows.iter().map(|r| r[0].clone()).collect();
        assert_eq!(ids, vec![json!(2), json!(4)]);
        let a = run(SavedView::SubjectAccess, 3, &log());
        assert_eq!(a.total, 10);
        assert_eq!(a.rows.len(), 3);
        assert_eq!(a.rows[0][0], json!("customers:5"));
        assert_eq!(a.rows[1][0], json!("orders:1"));
        assert_eq!(
            (&a.rows[2][0], &a.rows[2][1]),
            (&json!("customers:4"), &json!(4))
        );
    }

    #[test]
    fn postgres_times_end_in_z() {
        assert_eq!(
            normalize_time("at", json!("2026-01-01T10:00:00.5+00:00")),
            json!("2026-01-01T10:00:00.5Z")
        );
        assert_eq!(normalize_time("tool", json!("x+00:00")), json!("x+00:00"));
    }
}
