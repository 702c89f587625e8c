//! The `sql` family: layers that give the agent one SQL tool (`execute_sql`) behind a guard — a
//! keyword allow-list, a SQL parser, a read-only transaction, a restricted role — rather than
//! structured tools. It runs only on a target whose profile names the tool (`sql:`); on any
//! other target it plans nothing and the report says it does not apply ([`applies`]).
//!
//! Every verdict comes from the database, never from the reply: each attempt of the escape
//! corpus (`probes/corpus/sql-escapes.yaml`, [`corpus`]) runs between two
//! [`ServerFingerprint`](crate::fingerprint::server::ServerFingerprint)s and beside a sentinel
//! backend, and any change is a `fail` with the diff; file reads are judged by content ground
//! truth knows is in the file (a canary file planted in the data directory, `PG_VERSION`). The
//! budget and exposure probes ([`checks`]) watch `pg_stat_activity`, count rows against ground
//! truth, and scan results for canaries and tenant columns.

mod checks;
pub mod corpus;
mod escape;

use std::sync::Arc;

use preflight_enforcer::policy::FieldAction;
use preflight_targets::profile::{Profile, SqlTool};
use serde_json::{json, Value};

use super::PlanInput;
use crate::codes::ProbeCode;
use crate::runner::{CallOutcome, Phase, Probe, ProbeCtx, ProbeOutcome};
use corpus::{Corpus, Kind};

/// `Ok` when the `sql` family applies to a target with `profile` (`None`: the built-in layer);
/// otherwise why not, for the report.
pub fn applies(profile: Option<&Profile>) -> Result<(), String> {
    match profile {
        None => Err("the built-in layer offers no SQL tool (only structured tools); the family applies to a target whose profile names one under `sql:`".to_string()),
        Some(p) if p.sql.is_none() => Err(format!(
            "the target profile {} names no SQL tool (`sql:`), so there is nothing to send SQL to",
            p.path
        )),
        Some(_) => Ok(()),
    }
}

/// The family's probes: one per corpus entry, and the budget, exposure and login checks.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let Some(tool) = input.sql else {
        return Vec::new();
    };
    let tool = Arc::new(tool.clone());
    // The last fingerprint an escape probe took: the next one starts from it (escape probes run
    // one at a time), so the tables are checksummed again only after something wrote.
    let last: escape::LastFingerprint = Arc::default();
    let mut out = Vec::new();
    for entry in Corpus::embedded().entries {
        let code = match entry.kind {
            Kind::Write => ProbeCode::SqlWriteEscape,
            Kind::Session => ProbeCode::SqlSessionEscape,
            Kind::Server => ProbeCode::SqlServerAccess,
        };
        let title = format!("{}: {}", entry.id, entry.tries);
        let checklist = entry.checklist.clone();
        let tool = Arc::clone(&tool);
        let entry = Arc::new(entry);
        let last = Arc::clone(&last);
        let mut probe = Probe::new(code, title, move |ctx| {
            escape::escape(
                ctx,
                Arc::clone(&tool),
                Arc::clone(&entry),
                Arc::clone(&last),
            )
        })
        .phase(Phase::Serial);
        probe.checklist = checklist;
        out.push(probe);
    }
    for what in [checks::Runaway::Sleep, checks::Runaway::CrossJoin] {
        let tool = Arc::clone(&tool);
        out.push(
            Probe::new(ProbeCode::SqlServerTimeout, what.title(), move |ctx| {
                checks::server_timeout(ctx, Arc::clone(&tool), what)
            })
            .phase(Phase::Serial),
        );
    }
    {
        let tool = Arc::clone(&tool);
        out.push(Probe::new(
            ProbeCode::SqlRowCap,
            "SELECT * of the largest table",
            move |ctx| checks::row_cap(ctx, Arc::clone(&tool)),
        ));
    }
    {
        let tool = Arc::clone(&tool);
        out.push(Probe::new(
            ProbeCode::SqlLoginRole,
            "the login the SQL runs as",
            move |ctx| checks::login_role(ctx, Arc::clone(&tool)),
        ));
    }
    for m in input.policy.models.values() {
        if m.tenant_column.is_some() {
            let tool = Arc::clone(&tool);
            let model = m.name.clone();
            out.push(
                Probe::new(
                    ProbeCode::SqlForeignRows,
                    format!("{} rows of {}", m.name, input.tenant_b),
                    move |ctx| checks::foreign_rows(ctx, Arc::clone(&tool), model.clone()),
                )
                .at(format!("models.{}", m.name)),
            );
        }
        let hidden: Vec<String> = m
            .columns
            .iter()
            .filter(|c| c.action != FieldAction::Allow)
            .filter(|c| {
                input
                    .truth
                    .canaries
                    .iter()
                    .any(|k| k.table == m.table && k.column == c.name)
            })
            .map(|c| c.name.clone())
            .collect();
        if !hidden.is_empty() {
            let tool = Arc::clone(&tool);
            let model = m.name.clone();
            out.push(
                Probe::new(
                    ProbeCode::SqlSecretColumns,
                    format!("{}: {}", m.name, hidden.join(", ")),
                    move |ctx| {
                        checks::secret_columns(
                            ctx,
                            Arc::clone(&tool),
                            model.clone(),
                            hidden.clone(),
                        )
                    },
                )
                .at(format!("models.{}", m.name)),
            );
        }
    }
    out
}

/// One SQL call and what it amounted to.
pub(crate) struct SqlCall {
    pub call: CallOutcome,
    /// Why the layer refused (an error result, or a refusal inside a successful one); `None`:
    /// it answered.
    pub refused: Option<String>,
    /// The call never got an answer (transport fault, timeout): nothing is known of it.
    pub fault: bool,
    /// The row objects of an answer.
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// An answer whose rows were not where the profile says.
    pub unreadable: bool,
}

impl SqlCall {
    /// The response as text, for content checks.
    pub fn text(&self) -> String {
        self.call.response().to_string()
    }

    /// One line for evidence.
    pub fn describe(&self) -> String {
        if self.fault {
            return "no answer (a fault of the target)".to_string();
        }
        match &self.refused {
            Some(why) => format!("refused ({})", crate::runner::excerpt(why, 160)),
            None if self.unreadable => "answered, rows not found where the profile says".into(),
            None => format!("answered with {} row(s)", self.rows.len()),
        }
    }
}

/// Sends `sql` to the layer's SQL tool as tenant A.
pub(crate) async fn run_sql(ctx: &ProbeCtx, tool: &SqlTool, sql: &str) -> SqlCall {
    let a = ctx.principals.a.clone();
    let mut args = serde_json::Map::new();
    args.insert(tool.argument.clone(), json!(sql));
    let call = ctx.call(&a, &tool.tool, Value::Object(args)).await;
    let mut out = SqlCall {
        refused: None,
        fault: false,
        rows: Vec::new(),
        unreadable: false,
        call,
    };
    match &out.call.result {
        Err(e) => {
            out.fault = e.details.get("target_fault").and_then(Value::as_bool) == Some(true);
            // A denial the profile maps no code for is still a refusal here: its raw text is
            // what the layer said.
            out.refused = Some(match e.details.get("raw").and_then(Value::as_str) {
                Some(raw) => raw.to_string(),
                None => format!("{}: {}", e.code, e.message),
            });
        }
        Ok(v) => {
            let flagged = tool
                .refusal_path
                .as_deref()
                .and_then(|p| at_path(v, p))
                .filter(|x| !x.is_null());
            let text = v.to_string();
            if let Some(x) = flagged {
                out.refused = Some(x.to_string());
            } else if let Some(re) = tool.refusal_patterns.iter().find(|re| re.is_match(&text)) {
                out.refused = Some(format!("matches `{}`", re.as_str()));
            } else {
                match at_path(v, &tool.rows).and_then(Value::as_array) {
                    Some(items) => {
                        out.rows = items
                            .iter()
                            .filter_map(|r| r.as_object().cloned())
                            .collect()
                    }
                    None => out.unreadable = true,
                }
            }
        }
    }
    out
}

/// The value at a dotted path (`""`: the value itself).
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |cur, k| match cur {
        Value::Array(items) => k.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => cur.get(k),
    })
}

/// The control every verdict rests on: the layer answers a plain `SELECT` with rows where its
/// profile says. Without it a refusal proves nothing (the layer might refuse everything, or be
/// driven wrongly).
pub(crate) async fn control(ctx: &ProbeCtx, tool: &SqlTool) -> Result<SqlCall, ProbeOutcome> {
    let call = run_sql(
        ctx,
        tool,
        "SELECT 1 AS preflight_control, current_user AS current_user, session_user AS session_user",
    )
    .await;
    if call.refused.is_none() && !call.unreadable && !call.rows.is_empty() {
        return Ok(call);
    }
    Err(ProbeOutcome::error(format!(
        "the layer's SQL tool `{}` did not answer the control `SELECT 1 AS preflight_control` with a row ({}), so a refusal of any attempt would prove nothing; check the profile's `sql:` section (tool, argument, rows)",
        tool.tool,
        call.describe()
    ))
    .with_call(ctx, &call.call))
}

/// The control call as evidence: its answer and which roles the SQL ran as.
pub(crate) fn control_fact(control: &SqlCall) -> String {
    let row = control.rows.first();
    let name = |k: &str| {
        row.and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "control `SELECT 1, current_user, session_user` → {}; the SQL runs as session_user = {}, current_user = {}",
        control.describe(),
        name("session_user"),
        name("current_user")
    )
}

/// A SQL string literal of `s` (quotes doubled): for the text of attempts sent to the layer,
/// never for queries ground truth runs.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Tables that grow by design while the layer runs: a foreign layer's own audit table.
pub(crate) fn growing_tables(ctx: &ProbeCtx) -> Vec<(String, String)> {
    use preflight_targets::profile::AuditSource;
    ctx.foreign
        .as_ref()
        .and_then(|f| f.profile.audit.as_ref())
        .and_then(|a| match &a.source {
            AuditSource::Table { schema, table } => Some(vec![(schema.clone(), table.clone())]),
            AuditSource::Jsonl { .. } => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reach_nested_rows() {
        let v = json!({"result": {"rows": [{"a": 1}]}});
        assert_eq!(at_path(&v, "result.rows").unwrap(), &json!([{"a": 1}]));
        assert_eq!(at_path(&v, "").unwrap(), &v);
        assert!(at_path(&v, "result.nope").is_none());
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn the_family_does_not_apply_without_a_sql_tool() {
        let why = applies(None).unwrap_err();
        assert!(why.contains("built-in layer offers no SQL tool"), "{why}");
    }
}
