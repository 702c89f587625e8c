//! The read tools: `db_query`, `db_get` and `db_aggregate`, from resolved arguments to the JSON
//! the agent gets. Every input check happens before the first statement; the scan budget is
//! checked from the planner's estimate before the read runs; rows are redacted in Rust on the way
//! out.

use serde_json::{json, Map, Value};
use sqlx::Row;

use crate::faults::{Fault, Faults};
use crate::gateway::{CallContext, ErrorCode, ToolError};
use crate::policy::{ModelPolicy, Policy};

use super::args::{aggregate_args, get_args, query_args, Limit};
use super::catalog::Catalog;
use super::compile::{
    compile_aggregate, emit_read, query_shape, resolve_get, resolve_query, Compiled, Page,
    Resolved, Scope, INTERNAL_PREFIX,
};
use super::cursor;
use super::errors::{self, ErrorContext};
use super::pipeline::{self, Pipeline};
use super::redact::Redactor;
use super::scan::{self, ExplainOutcome};
use super::text::{quote_for_message, thousands};
use super::tools::{row_cap, AGGREGATE, GET, QUERY};
use super::tx::CallTx;
use super::CallOutcome;

/// What the read tools share for one call.
pub(crate) struct ReadCx<'a> {
    pub policy: &'a Policy,
    pub ctx: &'a CallContext,
    pub faults: &'a Faults,
    pub key: &'a [u8; 32],
    pub catalog: &'a Catalog,
}

impl<'a> ReadCx<'a> {
    fn scope(&self) -> Scope<'a> {
        Scope {
            policy: self.policy,
            tenant: &self.ctx.principal.tenant,
            faults: self.faults,
        }
    }

    fn error_context<'b>(
        &'b self,
        tx: &CallTx<'_>,
        model: &'b str,
        fields: &'b [String],
    ) -> ErrorContext<'b> {
        ErrorContext {
            trace_id: &self.ctx.trace_id,
            faults: self.faults,
            timeout_ms: tx
                .timeout_ms()
                .filter(|_| !self.faults.has(Fault::TimeoutOff)),
            model: Some(model),
            filter_fields: fields,
        }
    }

    /// The row cap for `tool` on `model`, and the limit in force for this call.
    fn limit(
        &self,
        model: &ModelPolicy,
        tool: &str,
        requested: Option<Limit>,
    ) -> Result<Option<u64>, ToolError> {
        let cap = row_cap(self.policy, &model.name, tool);
        if self.faults.has(Fault::RowBudgetOff) {
            return Ok(requested.map(|l| l.0));
        }
        match requested {
            None => Ok(Some(cap)),
            Some(Limit(l)) if l <= cap => Ok(Some(l)),
            Some(Limit(l)) => Err(ToolError::new(
                ErrorCode::RowBudgetExceeded,
                format!(
                    "`limit`: {} rows were asked for; {tool} on {} returns at most {}",
                    if l == u64::MAX {
                        "more than 2^64".to_string()
                    } else {
                        thousands(l)
                    },
                    model.name,
                    thousands(cap)
                ),
                format!("lower limit to {cap} or less and page through the rest with next_cursor"),
            )
            .with_details(json!({"path": "limit", "max_rows": cap, "requested": l}))),
        }
    }

    /// Checks the scan budget (unless the statement is a bounded key lookup within it) and runs
    /// the statement, returning its rows as JSON objects.
    async fn run(
        &self,
        tx: &mut CallTx<'_>,
        model: &ModelPolicy,
        compiled: &Compiled,
        bounded: Option<u64>,
    ) -> Result<Vec<Map<String, Value>>, ToolError> {
        // Only needed for messages (scan budget, timeouts): computed when one is written.
        let fields = || self.catalog.filter_fields(model, self.faults);
        let budget = model
            .budgets
            .max_scan_rows
            .filter(|_| !self.faults.has(Fault::ScanBudgetOff));
        if let Some(pipeline) = tx.pipeline() {
            // A primary-key lookup of at most `budget` rows through belongs_to includes only
            // touches that many rows per table: no need to ask the planner.
            let explain = budget.filter(|b| bounded.is_none_or(|n| n > *b));
            // A budget-checked read whose catalog statistics are due for a refresh takes the
            // sqlx path, which refreshes them on its connection before pricing the plan.
            if explain.is_none() || !self.catalog.stale() {
                return self
                    .run_pipelined(pipeline, tx, model, compiled, explain)
                    .await;
            }
        }
        let conn = match tx.conn().await {
            Ok(c) => c,
            Err(e) => {
                let fields = fields();
                return Err(errors::map(
                    &e,
                    &self.error_context(tx, &model.name, &fields),
                ));
            }
        };
        let mut failure: Option<sqlx::Error> = None;
        let mut denial: Option<ToolError> = None;
        if let Some(budget) = budget {
            // A primary-key lookup of at most `budget` rows through belongs_to includes only
            // touches that many rows per table: no need to ask the planner.
            let skip = bounded.is_some_and(|n| n <= budget);
            if !skip {
                if self.catalog.stale() {
                    if let Err(e) = self.catalog.refresh(conn, self.policy).await {
                        failure = Some(e);
                    }
                }
                if failure.is_none() {
                    let catalog = self.catalog;
                    let tuples = |rel: &str| catalog.reltuples(rel);
                    match scan::check(conn, &compiled.sql, budget, &model.name, &fields(), &tuples)
                        .await
                    {
                        Ok(_) => {}
                        Err(ExplainOutcome::OverBudget(e)) => denial = Some(e),
                        Err(ExplainOutcome::Database(e)) => failure = Some(e),
                    }
                }
            }
        }
        let rows = match (failure, denial) {
            (Some(e), _) => Err(e),
            (None, Some(d)) => return Err(d),
            (None, None) => {
                super::sql::query(&compiled.sql.text, &compiled.sql.binds)
                    .fetch_all(&mut *conn)
                    .await
            }
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tx.poison();
                let fields = fields();
                return Err(errors::map(
                    &e,
                    &self.error_context(tx, &model.name, &fields),
                ));
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match row.try_get::<Value, _>(0) {
                Ok(Value::Object(m)) => out.push(m),
                Ok(_) | Err(_) => {
                    return Err(errors::internal(&self.ctx.trace_id, "reading the result"));
                }
            }
        }
        Ok(out)
    }
}

impl ReadCx<'_> {
    /// [`ReadCx::run`] on the pipelined path: BEGIN, the context and the first statement (the
    /// read, or its EXPLAIN when the scan budget must price it) in one round trip, then the read
    /// if the plan fits. The transaction stays open for the audit record and COMMIT.
    async fn run_pipelined(
        &self,
        pipeline: &Pipeline,
        tx: &mut CallTx<'_>,
        model: &ModelPolicy,
        compiled: &Compiled,
        explain: Option<u64>,
    ) -> Result<Vec<Map<String, Value>>, ToolError> {
        let fields = || self.catalog.filter_fields(model, self.faults);
        let settings = tx.settings();
        let sql = &compiled.sql;
        let first_text = match explain {
            Some(_) => scan::explain_text(sql),
            None => sql.text.clone(),
        };
        let (pipe, first) = pipeline
            .begin(&settings, &first_text, &sql.binds)
            .await
            .map_err(|e| e.to_tool_error(&self.ctx.trace_id))?;
        tx.adopt(pipe);
        let failed = |tx: &mut CallTx<'_>, e: pipeline::Error| {
            tx.abandon_pipe();
            let fields = fields();
            pipeline::map_error(&e, &self.error_context(tx, &model.name, &fields))
        };
        let first = match first {
            Ok(rows) => rows,
            Err(e) => return Err(failed(tx, e)),
        };
        let rows = match explain {
            None => first,
            Some(budget) => {
                let Some(plan) = first.first() else {
                    tx.abandon_pipe();
                    return Err(errors::internal(&self.ctx.trace_id, "reading the plan"));
                };
                let catalog = self.catalog;
                let tuples = |rel: &str| catalog.reltuples(rel);
                // Over budget: the read never runs; the transaction stays open and unpoisoned for
                // the denial's record, as on the sqlx path.
                scan::judge(plan, budget, &model.name, &fields(), &tuples)?;
                let read = match tx.pipe() {
                    Some(pipe) => pipe.query(&sql.text, &sql.binds).await,
                    None => Err(pipeline::Error::Finished),
                };
                match read {
                    Ok(rows) => rows,
                    Err(e) => return Err(failed(tx, e)),
                }
            }
        };
        rows.into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(errors::internal(&self.ctx.trace_id, "reading the result")),
            })
            .collect()
    }
}

fn model_of<'p>(policy: &'p Policy, args: &Value) -> Result<&'p ModelPolicy, ToolError> {
    // The pipeline checked the model before dispatch; this only guards against misuse.
    let name = args
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    policy.model(name).ok_or_else(|| {
        ToolError::new(
            ErrorCode::ModelNotAllowed,
            format!("model {} is not available", quote_for_message(name)),
            "call db_describe_schema to see the models you may use",
        )
    })
}

fn order_key_values(row: &Map<String, Value>, resolved: &Resolved<'_>) -> Vec<Option<String>> {
    resolved
        .order
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            let key = if c.name == resolved.model.primary_key {
                format!("{INTERNAL_PREFIX}pk")
            } else {
                format!("{INTERNAL_PREFIX}o{i}")
            };
            match row.get(&key) {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            }
        })
        .collect()
}

pub(crate) async fn query(
    cx: &ReadCx<'_>,
    tx: &mut CallTx<'_>,
    args: &Value,
) -> Result<CallOutcome, ToolError> {
    let args = query_args(args)?;
    let model = model_of(cx.policy, &json!({"model": args.model}))?;
    let scope = cx.scope();
    let resolved = resolve_query(scope, model, &args)?;
    let limit = cx.limit(model, QUERY, args.limit)?;
    let tenant = &cx.ctx.principal.tenant;
    let mut shape: Option<String> = None;
    let page = match &args.cursor {
        None => Page::First,
        Some(c) if cx.faults.has(Fault::CursorUnsigned) => cursor::parse_unsigned(c)?,
        Some(c) => cursor::verify(
            cx.key,
            tenant,
            &model.name,
            shape.get_or_insert_with(|| query_shape(&resolved, &args)),
            c,
            resolved.order.len(),
        )?,
    };
    let compiled = emit_read(scope, &resolved, &page, limit);
    let mut rows = cx
        .run(tx, model, &compiled, resolved.bounded_lookup())
        .await?;

    let has_more = limit.is_some_and(|l| rows.len() as u64 > l);
    if let Some(l) = limit {
        rows.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let next_cursor = match (has_more, rows.last()) {
        (true, Some(last)) => Some(if cx.faults.has(Fault::CursorUnsigned) {
            let start = match page {
                Page::Offset(o) => o,
                Page::First | Page::After(_) => 0,
            };
            cursor::unsigned(start + rows.len() as u64)
        } else {
            let shape = shape.get_or_insert_with(|| query_shape(&resolved, &args));
            cursor::sign(
                cx.key,
                tenant,
                &model.name,
                shape,
                &order_key_values(last, &resolved),
            )
        }),
        _ => None,
    };
    let mut redactor = Redactor::new(cx.faults, cx.key);
    let out_rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            Value::Object(redactor.row(model, &resolved.columns, &resolved.includes, r, false, ""))
        })
        .collect();
    let mut redacted = Map::new();
    redactor.describe(&resolved.columns, &resolved.includes, "", &mut redacted);
    let count = out_rows.len();
    let mut result = json!({
        "model": model.name,
        "rows": out_rows,
        "row_count": count,
        "has_more": has_more,
        "next_cursor": next_cursor,
    });
    if !redacted.is_empty() {
        result["redacted_fields"] = Value::Object(redacted);
    }
    if !redactor.truncated.is_empty() {
        result["truncated_includes"] = json!(redactor.truncated);
    }
    Ok(CallOutcome {
        rows_returned: Some(count as i64),
        subjects: redactor.subjects,
        ..CallOutcome::ok(result)
    })
}

pub(crate) async fn get(
    cx: &ReadCx<'_>,
    tx: &mut CallTx<'_>,
    args: &Value,
) -> Result<CallOutcome, ToolError> {
    let args = get_args(args)?;
    let model = model_of(cx.policy, &json!({"model": args.model}))?;
    let scope = cx.scope();
    let resolved = resolve_get(
        scope,
        model,
        &args.id,
        args.select.as_deref(),
        &args.include,
    )?;
    let compiled = emit_read(scope, &resolved, &Page::First, Some(1));
    let rows = cx
        .run(tx, model, &compiled, resolved.bounded_lookup())
        .await?;
    let Some(row) = rows.into_iter().next() else {
        // Absent and out of scope look exactly the same (the tenant predicate and RLS make the
        // other tenant's row invisible, so the gateway cannot tell them apart either).
        let id_text = match &args.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Err(ToolError::new(
            ErrorCode::NotFound,
            format!(
                "{} has no row with {} {}",
                model.name,
                model.primary_key,
                quote_for_message(&id_text)
            ),
            format!(
                "check the id, or find the row with db_query on {}",
                model.name
            ),
        )
        .with_details(json!({"model": model.name})));
    };
    let mut redactor = Redactor::new(cx.faults, cx.key);
    let out = redactor.row(model, &resolved.columns, &resolved.includes, row, false, "");
    let mut redacted = Map::new();
    redactor.describe(&resolved.columns, &resolved.includes, "", &mut redacted);
    let mut result = json!({"model": model.name, "row": out});
    if !redacted.is_empty() {
        result["redacted_fields"] = Value::Object(redacted);
    }
    if !redactor.truncated.is_empty() {
        result["truncated_includes"] = json!(redactor.truncated);
    }
    Ok(CallOutcome {
        rows_returned: Some(1),
        subjects: redactor.subjects,
        ..CallOutcome::ok(result)
    })
}

pub(crate) async fn aggregate(
    cx: &ReadCx<'_>,
    tx: &mut CallTx<'_>,
    args: &Value,
) -> Result<CallOutcome, ToolError> {
    let args = aggregate_args(args)?;
    let model = model_of(cx.policy, &json!({"model": args.model}))?;
    let limit = cx.limit(model, AGGREGATE, args.limit)?;
    let plan = compile_aggregate(cx.scope(), model, &args, limit)?;
    let mut rows = cx.run(tx, model, &plan.compiled, None).await?;
    let has_more = plan.compiled.limit.is_some_and(|l| rows.len() as u64 > l);
    if let Some(l) = plan.compiled.limit {
        rows.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let redactor = Redactor::new(cx.faults, cx.key);
    let out: Vec<Value> = rows
        .into_iter()
        .map(|mut r| {
            // Group keys follow the field policy like any output (masked fields can only be
            // grouped with the oracle check off); aggregate values are computed over allowed
            // fields only.
            let mut o = Map::new();
            for c in &plan.group {
                if let Some(v) = r.remove(&c.name) {
                    if let Some(v) = redactor.field(c, v) {
                        o.insert(c.name.clone(), v);
                    }
                }
            }
            for a in &args.aggregates {
                if let Some(v) = r.remove(&a.alias) {
                    o.insert(a.alias.clone(), v);
                }
            }
            Value::Object(o)
        })
        .collect();
    let count = out.len();
    Ok(CallOutcome {
        rows_returned: Some(count as i64),
        ..CallOutcome::ok(json!({
            "model": plan.model.name,
            "rows": out,
            "row_count": count,
            "has_more": has_more,
        }))
    })
}

/// Which read tool a name is.
pub(crate) fn is_read_tool(tool: &str) -> bool {
    matches!(tool, QUERY | GET | AGGREGATE | super::tools::DESCRIBE)
}
