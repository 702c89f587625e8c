//! The write tools: `db_create`, `db_update`, `db_delete`, `db_bulk_update`, `db_dry_run` and
//! `db_approval_status` (WRT-1..7).
//!
//! The pipeline (builtin/mod.rs) has already, before [`call`]: checked `model` against the
//! policy, validated the arguments against the tool's JSON Schema (NUL bytes included), and run
//! the budget hooks (write rate, quotas). Every write then goes through the same steps, in one
//! transaction with its audit record (no write without its record):
//!
//! 1. **reason** — required where the policy says (`reason_required`);
//! 2. **fields** — only `writable_fields`; the primary key and the tenant column never
//!    (`field_not_writable`); values converted for their column type (`validation_error`);
//!    on create the tenant column is set from the principal;
//! 3. **foreign keys** — every written single-column foreign key must name a row the principal
//!    can see: same tenant, not soft-deleted (`not_found`, worded the same whether the row is
//!    absent or another tenant's, so it is no existence oracle);
//! 4. **target rows** — located and locked with the read side's tenant, soft-delete and field
//!    policy on filters; none → `not_found`; more than `max_affected_rows` → `row_budget_exceeded`;
//! 5. **dry run** — above `writes.dry_run_required_above` rows, a `db_dry_run` receipt of the
//!    same payload by the same principal within the last 10 minutes is required;
//! 6. **approval** — a write that an approval rule gates is filed as a pending request bound to
//!    its exact payload and answered with `approval_required` (the request commits, the write does
//!    not); re-submitted with `approval_id` once approved, it consumes the approval exactly once
//!    and runs, recording the approver;
//! 7. **the statement** — `INSERT`/`UPDATE`/`DELETE` (soft delete where the policy says) on the
//!    locked rows only, returning the rows, redacted like reads, and their audit subjects.
//!
//! `db_dry_run` runs steps 2–4 and the statement inside a savepoint it rolls back, reports the
//! affected row count, a redacted sample and whether approval or a dry run would be needed, and
//! leaves a receipt (step 5).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sqlx::Row;

use crate::approvals::{self, ApprovalState, ConsumeOutcome, NewApproval};
use crate::audit::arguments_sha256;
use crate::faults::{Fault, Faults};
use crate::gateway::{CallContext, ErrorCode, ToolError};
use crate::policy::{ApprovalRule, ColumnPolicy, ModelPolicy, Policy};

use super::access::TypeClass;
use super::args::{conditions, invalid, Condition, Op};
use super::compile::{output_expr, visible, write_predicates, Scope, INTERNAL_PREFIX};
use super::errors::{self, ErrorContext};
use super::redact::Redactor;
use super::sql::{query, scalar, Bind, Scalar, Sql};
use super::text::{ident, qualified, quote_for_message};
use super::tools;
use super::tx::CallTx;
use super::validate::validate;
use super::CallOutcome;

/// Rows a write may affect when the policy sets no `max_affected_rows` (never unbounded).
const BUILTIN_MAX_AFFECTED: u64 = 1000;
/// Rows of a dry run's sample.
const SAMPLE_ROWS: usize = 5;
/// Affected keys listed in a bulk write's response.
const LISTED_KEYS: usize = 100;

/// Which write tool was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteTool {
    Create,
    Update,
    Delete,
    BulkUpdate,
    DryRun,
    ApprovalStatus,
}

impl WriteTool {
    pub(crate) fn parse(tool: &str) -> Option<WriteTool> {
        Some(match tool {
            tools::CREATE => WriteTool::Create,
            tools::UPDATE => WriteTool::Update,
            tools::DELETE => WriteTool::Delete,
            tools::BULK_UPDATE => WriteTool::BulkUpdate,
            tools::DRY_RUN => WriteTool::DryRun,
            tools::APPROVAL_STATUS => WriteTool::ApprovalStatus,
            _ => return None,
        })
    }
}

/// Everything a write call gets.
pub(crate) struct WriteCall<'a, 'c> {
    /// The call's transaction (opened on `tx.conn()`, with the tenant setting and timeout set).
    pub tx: &'a mut CallTx<'c>,
    pub policy: &'a Policy,
    /// The model named by `model` (`None` for `db_approval_status`, and for `db_dry_run`, whose
    /// model sits in `arguments.arguments.model`).
    pub model: Option<&'a ModelPolicy>,
    pub ctx: &'a CallContext,
    /// The schema-validated arguments.
    pub args: &'a Value,
    pub faults: &'a Faults,
    /// HMAC key for hashed fields (redacted dry-run samples).
    pub secret_key: &'a [u8; 32],
}

/// The four data-changing tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
    Delete,
    BulkUpdate,
}

impl Kind {
    fn tool(self) -> &'static str {
        match self {
            Kind::Create => tools::CREATE,
            Kind::Update => tools::UPDATE,
            Kind::Delete => tools::DELETE,
            Kind::BulkUpdate => tools::BULK_UPDATE,
        }
    }

    fn parse(tool: &str) -> Option<Kind> {
        match tool {
            tools::CREATE => Some(Kind::Create),
            tools::UPDATE => Some(Kind::Update),
            tools::DELETE => Some(Kind::Delete),
            tools::BULK_UPDATE => Some(Kind::BulkUpdate),
            _ => None,
        }
    }
}

/// Runs one write tool.
pub(crate) async fn call(
    tool: WriteTool,
    mut call: WriteCall<'_, '_>,
) -> Result<CallOutcome, ToolError> {
    let kind = match tool {
        WriteTool::ApprovalStatus => return approval_status(&mut call).await,
        WriteTool::DryRun => return dry_run(&mut call).await,
        WriteTool::Create => Kind::Create,
        WriteTool::Update => Kind::Update,
        WriteTool::Delete => Kind::Delete,
        WriteTool::BulkUpdate => Kind::BulkUpdate,
    };
    let Some(model) = call.model else {
        return Err(invalid(
            "model",
            "a write needs a model",
            "name the model to change",
        ));
    };
    let args = call.args;
    write(&mut call, kind, model, args, false).await
}

/// A value to store in one column.
#[derive(Clone, Debug)]
enum SetValue {
    Null,
    Scalar(Scalar),
    /// The principal's tenant (the tenant column on create).
    Tenant,
}

/// One single-column foreign key of the written table.
#[derive(Clone, Debug)]
struct ForeignKey {
    column: String,
    ref_schema: String,
    ref_table: String,
    ref_column: String,
    /// The referenced table has a column named like this model's tenant column.
    ref_has_tenant_column: bool,
}

fn reason_of(args: &Value) -> Option<&str> {
    args.get("reason")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

fn db_error(call: &mut WriteCall<'_, '_>, model: &ModelPolicy, e: &sqlx::Error) -> ToolError {
    call.tx.poison();
    errors::map(
        e,
        &ErrorContext {
            trace_id: &call.ctx.trace_id,
            faults: call.faults,
            timeout_ms: call.tx.timeout_ms(),
            model: Some(&model.name),
            filter_fields: &[],
        },
    )
}

/// What the write tools bind a dry run to: the tool and its arguments without `reason` and
/// `approval_id` (neither changes what the write does).
fn dry_run_payload_hash(tool: &str, args: &Value) -> String {
    let mut a = args.clone();
    if let Value::Object(m) = &mut a {
        m.remove("reason");
        m.remove("approval_id");
    }
    arguments_sha256(&json!({"tool": tool, "arguments": a}))
}

/// The approval rules that gate this write.
fn gating_rules<'p>(
    policy: &'p Policy,
    model: &ModelPolicy,
    kind: Kind,
    data: &Map<String, Value>,
) -> Vec<&'p ApprovalRule> {
    policy
        .approvals
        .iter()
        .filter(|r| r.model == model.name)
        .filter(|r| r.tools.is_empty() || r.tools.contains(kind.tool()))
        .filter(|r| {
            let by_fields = !r.fields.is_empty();
            let by_threshold = r.threshold.is_some();
            if !by_fields && !by_threshold {
                return true;
            }
            let fields_hit = r.fields.iter().any(|f| data.contains_key(f));
            let threshold_hit = r.threshold.as_ref().is_some_and(|t| {
                match data.get(&t.field) {
                    None | Some(Value::Null) => false,
                    Some(Value::Number(n)) => n.as_f64().is_none_or(|v| v > t.greater_than),
                    Some(Value::String(s)) => s
                        .trim()
                        .parse::<f64>()
                        // A value that does not parse is gated: fail safe.
                        .map_or(true, |v| !v.is_finite() || v > t.greater_than),
                    Some(_) => true,
                }
            });
            fields_hit || threshold_hit
        })
        .collect()
}

/// Checks and converts `data` for `model` (step 2).
fn resolve_data<'p>(
    call: &WriteCall<'_, '_>,
    model: &'p ModelPolicy,
    kind: Kind,
    data: &Map<String, Value>,
) -> Result<Vec<(&'p ColumnPolicy, SetValue)>, ToolError> {
    let faults = call.faults;
    let mut sets = Vec::new();
    let mut not_writable: Vec<String> = Vec::new();
    let mut tenant_written = false;
    for (field, value) in data {
        let path = format!("data.{field}");
        let Some(column) = model.column(field) else {
            return Err(ToolError::new(
                ErrorCode::ValidationError,
                format!(
                    "`{path}`: {} has no field {}",
                    model.name,
                    quote_for_message(field)
                ),
                format!(
                    "call db_describe_schema to see the fields of {}",
                    model.name
                ),
            )
            .with_details(json!({"path": path, "model": model.name})));
        };
        let is_tenant = model.tenant_column.as_deref() == Some(field.as_str());
        if is_tenant && !faults.has(Fault::TenantColumnWritable) {
            return Err(ToolError::new(
                ErrorCode::FieldNotWritable,
                format!(
                    "`{path}`: {}.{field} is the tenant column; it is set from your session and can never be written",
                    model.name
                ),
                format!("leave {field} out of data; every write stays in your own tenant"),
            )
            .with_details(json!({"path": path, "model": model.name, "fields": [field]})));
        }
        if is_tenant {
            tenant_written = true;
        } else if field == &model.primary_key
            || (!model.writable_fields.contains(field) && !faults.has(Fault::WritableFieldsOff))
        {
            // The primary key is never writable, whatever the policy or fault says.
            not_writable.push(field.clone());
            continue;
        }
        let class = TypeClass::of(&column.pg_type);
        let v = match value {
            // With the values check off, NULL goes to the database, whose NOT NULL decides.
            Value::Null if column.nullable || faults.has(Fault::ValuesUnchecked) => SetValue::Null,
            Value::Null => {
                return Err(invalid(
                    &path,
                    format!("{}.{field} cannot be empty", model.name),
                    "give a value",
                ))
            }
            v => SetValue::Scalar(scalar(class, v, &path, &format!("{}.{field}", model.name))?),
        };
        sets.push((column, v));
    }
    if !not_writable.is_empty() {
        let writable: Vec<&str> = model.writable_fields.iter().map(String::as_str).collect();
        return Err(ToolError::new(
            ErrorCode::FieldNotWritable,
            format!(
                "{} of {} may not be written: {}",
                if not_writable.len() == 1 {
                    "this field"
                } else {
                    "these fields"
                },
                model.name,
                not_writable.join(", ")
            ),
            if writable.is_empty() {
                format!("{} has no writable fields", model.name)
            } else {
                format!("writable fields of {}: {}", model.name, writable.join(", "))
            },
        )
        .with_details(json!({"model": model.name, "fields": not_writable})));
    }
    if kind == Kind::Create && !tenant_written {
        if let Some(tc) = &model.tenant_column {
            if let Some(column) = model.column(tc) {
                sets.push((column, SetValue::Tenant));
            }
        }
    }
    Ok(sets)
}

/// The single-column foreign keys of `model`'s table, from the catalog.
async fn foreign_keys(
    call: &mut WriteCall<'_, '_>,
    model: &ModelPolicy,
) -> Result<Vec<ForeignKey>, ToolError> {
    let tenant_col = model.tenant_column.clone().unwrap_or_default();
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let rows = sqlx::query(
        "SELECT a.attname::text AS col, rn.nspname::text AS ref_schema, rc.relname::text AS ref_table, \
                ra.attname::text AS ref_col, \
                EXISTS (SELECT 1 FROM pg_catalog.pg_attribute x WHERE x.attrelid = k.confrelid \
                          AND x.attname = $3 AND x.attnum > 0 AND NOT x.attisdropped) AS ref_has_tenant \
         FROM pg_catalog.pg_constraint k \
         JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_class rc ON rc.oid = k.confrelid \
         JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] \
         JOIN pg_catalog.pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = k.confkey[1] \
         WHERE k.contype = 'f' AND cardinality(k.conkey) = 1 AND n.nspname = $1 AND c.relname = $2 \
         ORDER BY k.conname",
    )
    .bind(&model.schema)
    .bind(&model.table)
    .bind(&tenant_col)
    .fetch_all(conn)
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let mut out = Vec::new();
    for r in rows {
        let fk = (|| -> Result<ForeignKey, sqlx::Error> {
            Ok(ForeignKey {
                column: r.try_get("col")?,
                ref_schema: r.try_get("ref_schema")?,
                ref_table: r.try_get("ref_table")?,
                ref_column: r.try_get("ref_col")?,
                ref_has_tenant_column: r.try_get("ref_has_tenant")?,
            })
        })();
        match fk {
            Ok(fk) => out.push(fk),
            Err(e) => return Err(db_error(call, model, &e)),
        }
    }
    Ok(out)
}

/// The policy model over a table, if any.
fn model_of_table<'p>(policy: &'p Policy, schema: &str, table: &str) -> Option<&'p ModelPolicy> {
    policy
        .models
        .values()
        .find(|m| m.schema == schema && m.table == table)
}

/// Step 3: every written foreign key names a row the principal can see.
async fn check_foreign_keys(
    call: &mut WriteCall<'_, '_>,
    model: &ModelPolicy,
    fks: &[ForeignKey],
    sets: &[(&ColumnPolicy, SetValue)],
) -> Result<(), ToolError> {
    if call.faults.has(Fault::ForeignKeyUnchecked) {
        return Ok(());
    }
    for (column, value) in sets {
        let SetValue::Scalar(v) = value else {
            continue;
        };
        if model.tenant_column.as_deref() == Some(column.name.as_str()) {
            continue;
        }
        let Some(fk) = fks.iter().find(|f| f.column == column.name) else {
            continue;
        };
        let target = model_of_table(call.policy, &fk.ref_schema, &fk.ref_table);
        let ref_class = target
            .and_then(|t| t.column(&fk.ref_column))
            .map(|c| TypeClass::of(&c.pg_type))
            .unwrap_or(TypeClass::of(&column.pg_type));
        let mut sql = Sql::default();
        let mut preds = Vec::new();
        let val = sql.scalar(ref_class, v.clone());
        preds.push(format!("r.{} = {val}", ident(&fk.ref_column)));
        let tenant_col = match target {
            Some(t) => t.tenant_column.clone(),
            // A table the policy does not expose: scoped when it carries the same tenant column.
            None => model
                .tenant_column
                .clone()
                .filter(|_| fk.ref_has_tenant_column),
        };
        if let Some(tc) = &tenant_col {
            if !call.faults.has(Fault::NoTenantPredicate) {
                let p = sql.tenant(&call.ctx.principal.tenant);
                preds.push(format!("r.{}::text = {p}", ident(tc)));
            }
        }
        if let Some(sd) = target.and_then(|t| t.soft_delete_column.as_ref()) {
            preds.push(format!("r.{} IS NULL", ident(sd)));
        }
        sql.push(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} r WHERE {})",
            qualified(&fk.ref_schema, &fk.ref_table),
            preds.join(" AND ")
        ));
        let conn = match call.tx.conn().await {
            Ok(c) => c,
            Err(e) => return Err(db_error(call, model, &e)),
        };
        let found: Result<bool, sqlx::Error> = query(&sql.text, &sql.binds)
            .fetch_one(conn)
            .await
            .and_then(|r| r.try_get(0));
        let found = match found {
            Ok(f) => f,
            Err(e) => return Err(db_error(call, model, &e)),
        };
        if !found {
            let shown = target
                .map(|t| t.name.clone())
                .unwrap_or(fk.ref_table.clone());
            let v_text = match v {
                Scalar::Int(i) => i.to_string(),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Text(t) => t.clone(),
            };
            return Err(ToolError::new(
                ErrorCode::NotFound,
                format!(
                    "`data.{}`: {shown} has no row {} for you",
                    column.name,
                    quote_for_message(&v_text)
                ),
                format!("a reference must name a row of your own tenant; find it with db_query on {shown}"),
            )
            .with_details(json!({"path": format!("data.{}", column.name), "model": shown})));
        }
    }
    Ok(())
}

/// Step 4: locks the rows an update, delete or bulk update targets; returns their keys (text).
async fn target_keys(
    call: &mut WriteCall<'_, '_>,
    model: &ModelPolicy,
    kind: Kind,
    args: &Value,
    cap: u64,
) -> Result<Vec<String>, ToolError> {
    let conds: Vec<Condition> = match kind {
        Kind::BulkUpdate => conditions(args)?,
        _ => vec![Condition {
            path: "id".to_string(),
            field: model.primary_key.clone(),
            op: Op::Eq,
            value: args.get("id").cloned(),
        }],
    };
    if kind == Kind::BulkUpdate && conds.is_empty() {
        return Err(invalid(
            "where",
            "a bulk update needs at least one condition",
            "filter the rows to change, e.g. [{\"field\": \"category\", \"op\": \"eq\", \"value\": \"toys\"}]",
        ));
    }
    let scope = Scope {
        policy: call.policy,
        tenant: &call.ctx.principal.tenant,
        faults: call.faults,
    };
    let (preds, mut sql) =
        write_predicates(scope, model, &conds, "t", Sql::default()).map_err(|mut e| {
            // resolve_conditions names the id condition `id.value`.
            e.message = e.message.replace("`id.value`", "`id`");
            e
        })?;
    let limit = sql.bind(Bind::Int(cap.saturating_add(1).min(i64::MAX as u64) as i64));
    let pk = ident(&model.primary_key);
    let mut text = format!(
        "SELECT t.{pk}::text FROM {} t",
        qualified(&model.schema, &model.table)
    );
    if !preds.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&preds.join(" AND "));
    }
    text.push_str(&format!(" ORDER BY t.{pk} LIMIT {limit} FOR UPDATE OF t"));
    sql.push(&text);
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let keys: Result<Vec<String>, sqlx::Error> = query(&sql.text, &sql.binds)
        .fetch_all(conn)
        .await
        .and_then(|rows| rows.iter().map(|r| r.try_get::<String, _>(0)).collect());
    match keys {
        Ok(k) => Ok(k),
        Err(e) => Err(db_error(call, model, &e)),
    }
}

fn not_found(model: &ModelPolicy, args: &Value) -> ToolError {
    let id_text = match args.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    ToolError::new(
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
    .with_details(json!({"model": model.name}))
}

/// The data-changing statement over the locked `keys` (or the new row), returning each row's
/// visible columns, key and foreign keys as JSON.
fn statement(
    call: &WriteCall<'_, '_>,
    model: &ModelPolicy,
    kind: Kind,
    sets: &[(&ColumnPolicy, SetValue)],
    keys: &[String],
    fks: &[ForeignKey],
) -> Result<Sql, ToolError> {
    let mut sql = Sql::default();
    let table = qualified(&model.schema, &model.table);
    let pk_col = model
        .column(&model.primary_key)
        .ok_or_else(|| errors::internal(&call.ctx.trace_id, "resolving the primary key"))?;
    let pk = ident(&model.primary_key);
    let mut exprs: Vec<(String, String)> = Vec::new();
    for (column, value) in sets {
        let class = TypeClass::of(&column.pg_type);
        let e = match value {
            SetValue::Null => "NULL".to_string(),
            SetValue::Scalar(s) => sql.scalar(class, s.clone()),
            SetValue::Tenant => {
                let p = sql.tenant(&call.ctx.principal.tenant);
                match class.cast() {
                    Some(t) => format!("CAST({p} AS {t})"),
                    None => p,
                }
            }
        };
        exprs.push((ident(&column.name), e));
    }
    let key_filter = |sql: &mut Sql| -> Result<String, ToolError> {
        let class = TypeClass::of(&pk_col.pg_type);
        let mut items = Vec::with_capacity(keys.len());
        for k in keys {
            items.push(scalar(
                class,
                &Value::String(k.clone()),
                "id",
                &model.primary_key,
            )?);
        }
        let arr = sql.array(class, items);
        Ok(match class.cast() {
            Some(_) => format!("t.{pk} = ANY({arr})"),
            None => format!("t.{pk}::text = ANY({arr})"),
        })
    };
    // The tenant predicate again on the statement itself: defence in depth over the locked keys.
    let tenant_pred = |sql: &mut Sql| -> Option<String> {
        let tc = model.tenant_column.as_ref()?;
        if call.faults.has(Fault::NoTenantPredicate) {
            return None;
        }
        let p = sql.tenant(&call.ctx.principal.tenant);
        Some(format!("t.{}::text = {p}", ident(tc)))
    };
    let body = match kind {
        Kind::Create => {
            let (cols, vals): (Vec<String>, Vec<String>) = exprs.into_iter().unzip();
            if cols.is_empty() {
                format!("INSERT INTO {table} AS t DEFAULT VALUES RETURNING t.*")
            } else {
                format!(
                    "INSERT INTO {table} AS t ({}) VALUES ({}) RETURNING t.*",
                    cols.join(", "),
                    vals.join(", ")
                )
            }
        }
        Kind::Update | Kind::BulkUpdate => {
            let set: Vec<String> = exprs.iter().map(|(c, e)| format!("{c} = {e}")).collect();
            let mut preds = vec![key_filter(&mut sql)?];
            preds.extend(tenant_pred(&mut sql));
            format!(
                "UPDATE {table} AS t SET {} WHERE {} RETURNING t.*",
                set.join(", "),
                preds.join(" AND ")
            )
        }
        Kind::Delete => {
            let mut preds = vec![key_filter(&mut sql)?];
            preds.extend(tenant_pred(&mut sql));
            match model
                .soft_delete_column
                .as_ref()
                .and_then(|sd| model.column(sd))
            {
                Some(sd) => {
                    let mark = match TypeClass::of(&sd.pg_type) {
                        TypeClass::Bool => "true",
                        _ => "now()",
                    };
                    format!(
                        "UPDATE {table} AS t SET {} = {mark} WHERE {} RETURNING t.*",
                        ident(&sd.name),
                        preds.join(" AND ")
                    )
                }
                None => format!(
                    "DELETE FROM {table} AS t WHERE {} RETURNING t.*",
                    preds.join(" AND ")
                ),
            }
        }
    };
    // Only visible columns leave the database (denied ones stay inside the CTE).
    let mut select: Vec<String> = visible(model, call.faults)
        .iter()
        .map(|c| format!("{} AS {}", output_expr("w", c), ident(&c.name)))
        .collect();
    select.push(format!("w.{pk}::text AS \"{INTERNAL_PREFIX}pk\""));
    for (i, fk) in fks.iter().enumerate() {
        select.push(format!(
            "w.{}::text AS \"{INTERNAL_PREFIX}fk{i}\"",
            ident(&fk.column)
        ));
    }
    sql.push(&format!(
        "WITH w AS ({body}) SELECT to_jsonb(x) FROM (SELECT {} FROM w ORDER BY w.{pk}) x",
        select.join(", ")
    ));
    Ok(sql)
}

/// Runs the statement; returns the rows (redacted) and the audit subjects.
async fn execute(
    call: &mut WriteCall<'_, '_>,
    model: &ModelPolicy,
    sql: &Sql,
    fks: &[ForeignKey],
) -> Result<(Vec<Value>, Vec<String>), ToolError> {
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let rows: Result<Vec<Value>, sqlx::Error> = query(&sql.text, &sql.binds)
        .fetch_all(conn)
        .await
        .and_then(|rows| rows.iter().map(|r| r.try_get::<Value, _>(0)).collect());
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let columns = visible(model, call.faults);
    let mut redactor = Redactor::new(call.faults, call.secret_key);
    let mut out = Vec::with_capacity(rows.len());
    let mut related = Vec::new();
    for row in rows {
        let Value::Object(map) = row else { continue };
        for (i, fk) in fks.iter().enumerate() {
            if let Some(Value::String(v)) = map.get(&format!("{INTERNAL_PREFIX}fk{i}")) {
                if model.tenant_column.as_deref() == Some(fk.column.as_str()) {
                    continue;
                }
                let name = model_of_table(call.policy, &fk.ref_schema, &fk.ref_table)
                    .map(|m| m.name.clone())
                    .unwrap_or(fk.ref_table.clone());
                related.push(format!("{name}:{v}"));
            }
        }
        out.push(Value::Object(redactor.row(
            model,
            &columns,
            &[],
            map,
            false,
            "",
        )));
    }
    let mut subjects = redactor.subjects;
    for r in related {
        if !subjects.contains(&r) {
            subjects.push(r);
        }
    }
    Ok((out, subjects))
}

/// A write (or, with `dry`, its plan): the steps in the module docs.
async fn write(
    call: &mut WriteCall<'_, '_>,
    kind: Kind,
    model: &ModelPolicy,
    args: &Value,
    dry: bool,
) -> Result<CallOutcome, ToolError> {
    let tool = kind.tool();
    let reason = reason_of(args);
    if !dry
        && model.require_reason
        && reason.is_none()
        && !call.faults.has(Fault::ReasonNotRequired)
    {
        return Err(ToolError::new(
            ErrorCode::ReasonRequired,
            format!("{tool} on {} needs a reason", model.name),
            "add \"reason\": a sentence saying why this change is made (it goes into the audit log)",
        )
        .with_details(json!({"model": model.name})));
    }
    let empty = Map::new();
    let data = match args.get("data") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err(invalid("data", "expected an object of field values", "")),
        None if kind == Kind::Delete => &empty,
        None => {
            return Err(invalid(
                "data",
                "is required",
                "give the field values to write",
            ))
        }
    };
    let sets = resolve_data(call, model, kind, data)?;
    let fks = foreign_keys(call, model).await?;
    check_foreign_keys(call, model, &fks, &sets).await?;
    let cap = if call.faults.has(Fault::RowBudgetOff) {
        u64::MAX - 1
    } else {
        model
            .budgets
            .max_affected_rows
            .unwrap_or(BUILTIN_MAX_AFFECTED)
            .max(1)
    };
    let keys = match kind {
        Kind::Create => Vec::new(),
        _ => target_keys(call, model, kind, args, cap).await?,
    };
    if kind != Kind::Create && keys.is_empty() && kind != Kind::BulkUpdate {
        return Err(not_found(model, args));
    }
    if kind == Kind::BulkUpdate && keys.is_empty() && !dry {
        // Nothing matches: nothing to approve, dry-run or change.
        return Ok(CallOutcome {
            rows_affected: Some(0),
            ..CallOutcome::ok(json!({"model": model.name, "rows_affected": 0, "keys": []}))
        });
    }
    let affected = if kind == Kind::Create {
        1
    } else {
        keys.len() as u64
    };
    if affected > cap {
        return Err(ToolError::new(
            ErrorCode::RowBudgetExceeded,
            format!(
                "{tool} on {} would change more than {cap} rows (the most one call may change)",
                model.name
            ),
            format!("narrow the where conditions so that at most {cap} rows match, and change the rest in further calls"),
        )
        .with_details(json!({"max_affected_rows": cap})));
    }
    let threshold = call.policy.writes.dry_run_required_above;
    let payload_hash = dry_run_payload_hash(tool, args);
    let rules = if call.faults.has(Fault::ApprovalsBypassed) {
        Vec::new()
    } else {
        gating_rules(call.policy, model, kind, data)
    };
    if dry {
        return finish_dry_run(
            call,
            kind,
            model,
            &sets,
            &keys,
            &fks,
            affected,
            threshold,
            &payload_hash,
            &rules,
        )
        .await;
    }
    if affected > threshold {
        let principal = call.ctx.principal.user.clone();
        let conn = match call.tx.conn().await {
            Ok(c) => c,
            Err(e) => return Err(db_error(call, model, &e)),
        };
        let has =
            approvals::has_recent_dry_run(conn, &principal, &payload_hash, approvals::DRY_RUN_TTL)
                .await;
        match has {
            Ok(true) => {}
            Ok(false) => {
                return Err(ToolError::new(
                    ErrorCode::ValidationError,
                    format!(
                        "{tool} on {} would change {affected} rows; above {threshold} rows a dry run of the same call must come first",
                        model.name
                    ),
                    format!(
                        "call db_dry_run with {{\"tool\": \"{tool}\", \"arguments\": <these arguments>}}, check the count and sample, then repeat this call unchanged within {} minutes",
                        approvals::DRY_RUN_TTL.as_secs() / 60
                    ),
                )
                .with_details(json!({"dry_run_required": true, "affected_rows": affected, "threshold": threshold})));
            }
            Err(e) => return Err(db_error(call, model, &e)),
        }
    }
    let mut approval: Option<(String, Option<String>)> = None;
    if !rules.is_empty() {
        match args.get("approval_id").and_then(Value::as_str) {
            None => return file_approval(call, kind, model, args, &rules, reason).await,
            Some(id) => {
                let approver = use_approval(call, model, kind, args, id).await?;
                approval = Some((id.to_string(), approver));
            }
        }
    }
    let sql = statement(call, model, kind, &sets, &keys, &fks)?;
    let (rows, subjects) = execute(call, model, &sql, &fks).await?;
    let n = rows.len() as u64;
    if kind != Kind::Create && kind != Kind::BulkUpdate && n == 0 {
        return Err(not_found(model, args));
    }
    let mut value = json!({"model": model.name, "rows_affected": n});
    match kind {
        Kind::BulkUpdate => {
            let listed: Vec<Value> = rows
                .iter()
                .take(LISTED_KEYS)
                .filter_map(|r| r.get(&model.primary_key).cloned())
                .collect();
            value["keys"] = Value::Array(listed);
            if n as usize > LISTED_KEYS {
                value["keys_truncated"] = json!(true);
            }
        }
        Kind::Delete => {
            value["soft_deleted"] = json!(model.soft_delete_column.is_some());
        }
        Kind::Create | Kind::Update => {
            if let Some(row) = rows.into_iter().next() {
                value["row"] = row;
            }
        }
    }
    let (approval_id, approver) = match approval {
        Some((id, who)) => {
            value["approval_id"] = json!(id);
            (Some(id), who)
        }
        None => (None, None),
    };
    Ok(CallOutcome {
        rows_affected: Some(n as i64),
        approval_id,
        approver,
        subjects,
        ..CallOutcome::ok(value)
    })
}

/// Files the pending request and answers `approval_required` (the request row commits).
async fn file_approval(
    call: &mut WriteCall<'_, '_>,
    kind: Kind,
    model: &ModelPolicy,
    args: &Value,
    rules: &[&ApprovalRule],
    reason: Option<&str>,
) -> Result<CallOutcome, ToolError> {
    let tool = kind.tool();
    let sla = rules
        .iter()
        .map(|r| r.sla_seconds)
        .min()
        .unwrap_or(1800)
        .max(1);
    let req = NewApproval {
        tenant: call.ctx.principal.tenant.clone(),
        requested_by: call.ctx.principal.user.clone(),
        tool: tool.to_string(),
        model: model.name.clone(),
        payload: approvals::payload(tool, args),
        rules: rules
            .iter()
            .map(|r| (r.name.clone(), r.approvers.iter().cloned().collect()))
            .collect::<BTreeMap<_, _>>(),
        reason: reason.map(crate::audit::sanitize_text),
        trace_id: call.ctx.trace_id.clone(),
        sla_seconds: sla,
    };
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let filed = match approvals::create(conn, &req).await {
        Ok(a) => a,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    let id = filed.id.to_string();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let denial = ToolError::new(
        ErrorCode::ApprovalRequired,
        format!(
            "{tool} on {} needs a person's approval ({}); nothing was changed yet",
            model.name,
            names.join(", ")
        ),
        format!(
            "tell the user the change awaits approval {id}; check it with db_approval_status, and once it is approved repeat this exact call with \"approval_id\": \"{id}\" (it expires in {} minutes if nobody decides)",
            sla.div_ceil(60)
        ),
    )
    .with_details(json!({
        "approval_id": id,
        "state": "pending",
        "rules": names,
        "expires_at": filed.expires_at.to_rfc3339(),
    }));
    Ok(CallOutcome {
        approval_id: Some(id.clone()),
        denial: Some(denial),
        subjects: vec![format!(
            "{}:{}",
            model.name,
            args.get("id").map(value_text).unwrap_or_default()
        )]
        .into_iter()
        .filter(|s| !s.ends_with(':'))
        .collect(),
        ..CallOutcome::ok(json!({"approval_id": id, "state": "pending"}))
    })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn approval_refused(id: &str, state: &str, message: String, suggestion: &str) -> ToolError {
    ToolError::new(ErrorCode::ApprovalRequired, message, suggestion)
        .with_details(json!({"approval_id": id, "state": state}))
}

/// Consumes an approval for exactly this write; returns the approver.
async fn use_approval(
    call: &mut WriteCall<'_, '_>,
    model: &ModelPolicy,
    kind: Kind,
    args: &Value,
    id: &str,
) -> Result<Option<String>, ToolError> {
    let unknown = || {
        ToolError::new(
            ErrorCode::NotFound,
            format!("no approval request {} for you", quote_for_message(id)),
            "use the approval id from the approval_required error, or submit the write without approval_id to request approval",
        )
        .with_details(json!({"approval_id": id}))
    };
    let Ok(uuid) = approvals::parse_id(id) else {
        return Err(unknown());
    };
    let payload = approvals::payload(kind.tool(), args);
    let user = call.ctx.principal.user.clone();
    let replay = call.faults.has(Fault::ApprovalReplay);
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    if replay {
        // The broken behaviour this switch simulates: any approved (or already executed)
        // request authorises any payload, any number of times.
        return match approvals::status(conn, uuid).await {
            Ok(Some(a)) if matches!(a.state, ApprovalState::Approved | ApprovalState::Executed) => {
                Ok(a.decided_by)
            }
            Ok(Some(a)) => Err(approval_refused(
                id,
                a.state.as_str(),
                format!("approval {id} is {}", a.state),
                "wait for the decision",
            )),
            Ok(None) => Err(unknown()),
            Err(e) => Err(db_error(call, model, &e)),
        };
    }
    let outcome = match approvals::consume(conn, uuid, &payload, &user).await {
        Ok(o) => o,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    match outcome {
        ConsumeOutcome::Ok { approver, .. } => Ok(approver),
        ConsumeOutcome::NotFound => Err(unknown()),
        ConsumeOutcome::Pending => Err(approval_refused(
            id,
            "pending",
            format!("approval {id} has not been decided yet; nothing was changed"),
            "wait and check db_approval_status; repeat the call once it is approved",
        )),
        ConsumeOutcome::Rejected => Err(approval_refused(
            id,
            "rejected",
            format!("approval {id} was rejected; the change must not be made"),
            "tell the user the change was rejected; do not retry it",
        )),
        ConsumeOutcome::Expired => Err(approval_refused(
            id,
            "expired",
            format!("approval {id} expired before it was used; nothing was changed"),
            "submit the write again without approval_id to request a new approval",
        )),
        ConsumeOutcome::Executed => Err(approval_refused(
            id,
            "executed",
            format!("approval {id} was already used; an approval runs its change exactly once"),
            "the approved change has been made; a further change needs a new approval",
        )),
        ConsumeOutcome::RequesterMismatch => Err(approval_refused(
            id,
            "approved",
            format!("approval {id} was requested by someone else"),
            "submit the write without approval_id to request your own approval",
        )),
        ConsumeOutcome::PayloadMismatch => Err(approval_refused(
            id,
            "approved",
            format!("approval {id} was granted for a different change; only the exact approved call may run"),
            "repeat the exact arguments that were approved, or submit the new change without approval_id to request approval for it",
        )),
    }
}

/// Runs a fixed savepoint statement.
async fn savepoint(
    call: &mut WriteCall<'_, '_>,
    model: &ModelPolicy,
    stmt: &'static str,
) -> Result<(), ToolError> {
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    match sqlx::query(stmt).execute(conn).await {
        Ok(_) => Ok(()),
        Err(e) => Err(db_error(call, model, &e)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish_dry_run(
    call: &mut WriteCall<'_, '_>,
    kind: Kind,
    model: &ModelPolicy,
    sets: &[(&ColumnPolicy, SetValue)],
    keys: &[String],
    fks: &[ForeignKey],
    affected: u64,
    threshold: u64,
    payload_hash: &str,
    rules: &[&ApprovalRule],
) -> Result<CallOutcome, ToolError> {
    let sql = statement(call, model, kind, sets, keys, fks)?;
    let keep = call.faults.has(Fault::DryRunWrites);
    savepoint(call, model, "SAVEPOINT preflight_dry_run").await?;
    let ran = if kind == Kind::BulkUpdate && keys.is_empty() {
        Ok((Vec::new(), Vec::new()))
    } else {
        execute(call, model, &sql, fks).await
    };
    let (rows, _) = match ran {
        Ok(r) => r,
        Err(e) => {
            // Undo the failed statement so the receipt-less denial can still be audited.
            let _ = savepoint(call, model, "ROLLBACK TO SAVEPOINT preflight_dry_run").await;
            return Err(e);
        }
    };
    if keep {
        savepoint(call, model, "RELEASE SAVEPOINT preflight_dry_run").await?;
    } else {
        savepoint(call, model, "ROLLBACK TO SAVEPOINT preflight_dry_run").await?;
    }
    let principal = call.ctx.principal.user.clone();
    let tenant = call.ctx.principal.tenant.clone();
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => return Err(db_error(call, model, &e)),
    };
    if let Err(e) =
        approvals::record_dry_run(conn, &tenant, &principal, payload_hash, affected).await
    {
        return Err(db_error(call, model, &e));
    }
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let sample: Vec<Value> = rows.into_iter().take(SAMPLE_ROWS).collect();
    Ok(CallOutcome {
        rows_affected: Some(0),
        ..CallOutcome::ok(json!({
            "tool": kind.tool(),
            "model": model.name,
            "affected_rows": affected,
            "sample": sample,
            "changed": keep,
            "requires_approval": names,
            "dry_run_required": affected > threshold,
            "note": format!(
                "nothing was changed; this dry run is valid for {} minutes for the same call",
                approvals::DRY_RUN_TTL.as_secs() / 60
            ),
        }))
    })
}

/// `db_dry_run`: the inner write, validated like the real call, planned and rolled back.
async fn dry_run(call: &mut WriteCall<'_, '_>) -> Result<CallOutcome, ToolError> {
    let tool_name = call.args.get("tool").and_then(Value::as_str).unwrap_or("");
    let Some(kind) = Kind::parse(tool_name) else {
        return Err(invalid(
            "tool",
            format!("{} is not a write tool", quote_for_message(tool_name)),
            "use db_create, db_update, db_delete or db_bulk_update",
        ));
    };
    let inner = call.args.get("arguments").cloned().unwrap_or(Value::Null);
    let Some(spec) = tools::spec(call.policy, kind.tool()) else {
        return Err(errors::internal(&call.ctx.trace_id, "planning the dry run"));
    };
    let violations = validate(&spec.input_schema, &inner);
    if !violations.is_empty() && call.faults.has(Fault::MalformedInputTraceback) {
        return Err(errors::traceback_of(kind.tool(), &violations));
    }
    if !violations.is_empty() {
        let rendered: Vec<String> = violations
            .iter()
            .map(|v| format!("arguments.{}", v.render()))
            .collect();
        return Err(ToolError::new(
            ErrorCode::ValidationError,
            format!("invalid arguments for {}: {}", kind.tool(), rendered.join("; ")),
            "pass exactly the arguments the write tool takes (see its JSON Schema)",
        )
        .with_details(json!({"errors": violations.iter().map(|v| json!({"path": format!("arguments.{}", v.path), "message": v.message})).collect::<Vec<_>>()})));
    }
    let model_name = inner.get("model").and_then(Value::as_str).unwrap_or("");
    let allowed = tools::models_for(call.policy, kind.tool());
    let Some(model) = call
        .policy
        .model(model_name)
        .filter(|_| allowed.iter().any(|m| m == model_name))
    else {
        return Err(ToolError::new(
            ErrorCode::ModelNotAllowed,
            format!(
                "`arguments.model`: {} is not available for {}",
                quote_for_message(model_name),
                kind.tool()
            ),
            if allowed.is_empty() {
                format!("{} is not enabled for any model", kind.tool())
            } else {
                format!("models for {}: {}", kind.tool(), allowed.join(", "))
            },
        )
        .with_details(json!({"path": "arguments.model"})));
    };
    call.tx.set_timeout(model.budgets.statement_timeout_ms);
    write(call, kind, model, &inner, true)
        .await
        .map_err(|mut e| {
            // Paths inside the planned write are under `arguments`.
            if let Some(Value::String(p)) = e.details.get_mut("path") {
                *p = format!("arguments.{p}");
            }
            e
        })
}

/// `db_approval_status`.
async fn approval_status(call: &mut WriteCall<'_, '_>) -> Result<CallOutcome, ToolError> {
    let id = call
        .args
        .get("approval_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let unknown = ToolError::new(
        ErrorCode::NotFound,
        format!("no approval request {} for you", quote_for_message(id)),
        "use the approval id from the approval_required error",
    )
    .with_details(json!({"approval_id": id}));
    let Ok(uuid) = approvals::parse_id(id) else {
        return Err(unknown);
    };
    let conn = match call.tx.conn().await {
        Ok(c) => c,
        Err(e) => {
            call.tx.poison();
            return Err(errors::map(
                &e,
                &ErrorContext {
                    trace_id: &call.ctx.trace_id,
                    faults: call.faults,
                    timeout_ms: call.tx.timeout_ms(),
                    model: None,
                    filter_fields: &[],
                },
            ));
        }
    };
    let found = approvals::status(conn, uuid).await;
    let a = match found {
        Ok(Some(a)) => a,
        Ok(None) => return Err(unknown),
        Err(e) => {
            call.tx.poison();
            return Err(errors::map(
                &e,
                &ErrorContext {
                    trace_id: &call.ctx.trace_id,
                    faults: call.faults,
                    timeout_ms: call.tx.timeout_ms(),
                    model: None,
                    filter_fields: &[],
                },
            ));
        }
    };
    let next = match a.state {
        ApprovalState::Pending => "wait for a person to decide; check again later",
        ApprovalState::Approved => "repeat the exact same call with this approval_id",
        ApprovalState::Rejected => "do not make the change; tell the user it was rejected",
        ApprovalState::Expired => {
            "nobody decided in time; submit the write again without approval_id to request a new approval"
        }
        ApprovalState::Executed => "the approved change has been made",
    };
    Ok(CallOutcome::ok(json!({
        "approval_id": a.id.to_string(),
        "state": a.state.as_str(),
        "tool": a.tool,
        "model": a.model,
        "rules": a.rule.split(',').collect::<Vec<_>>(),
        "requested_by": a.requested_by,
        "created_at": a.created_at.to_rfc3339(),
        "expires_at": a.expires_at.to_rfc3339(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.map(|t| t.to_rfc3339()),
        "executed_at": a.executed_at.map(|t| t.to_rfc3339()),
        "next": next,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn rule(fields: &[&str], threshold: Option<(&str, f64)>, tools: &[&str]) -> ApprovalRule {
        ApprovalRule {
            name: "r".into(),
            model: "m".into(),
            tools: tools.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
            threshold: threshold.map(|(f, v)| crate::policy::Threshold {
                field: f.into(),
                greater_than: v,
            }),
            approvers: BTreeSet::from(["admin".to_string()]),
            sla_seconds: 60,
            span: Default::default(),
        }
    }

    #[test]
    fn dry_run_binding_ignores_reason_and_approval_only() {
        let a = json!({"model": "p", "where": [{"field": "x", "op": "eq", "value": 1}], "data": {"y": 2}, "reason": "a"});
        let b = json!({"model": "p", "where": [{"field": "x", "op": "eq", "value": 1}], "data": {"y": 2}, "reason": "b", "approval_id": "z"});
        let c = json!({"model": "p", "where": [{"field": "x", "op": "eq", "value": 1}], "data": {"y": 3}});
        assert_eq!(
            dry_run_payload_hash("db_bulk_update", &a),
            dry_run_payload_hash("db_bulk_update", &b)
        );
        assert_ne!(
            dry_run_payload_hash("db_bulk_update", &a),
            dry_run_payload_hash("db_bulk_update", &c)
        );
        assert_ne!(
            dry_run_payload_hash("db_bulk_update", &a),
            dry_run_payload_hash("db_update", &a)
        );
    }

    #[test]
    fn approval_rules_match_by_tool_field_and_threshold() {
        let mut p = crate::audit::testutil::tiny_policy();
        p.approvals = vec![
            ApprovalRule {
                name: "price".into(),
                model: "orders".into(),
                ..rule(&["status"], None, &["db_update"])
            },
            ApprovalRule {
                name: "big".into(),
                model: "orders".into(),
                ..rule(&[], Some(("total", 1000.0)), &[])
            },
        ];
        let m = p.model("orders").unwrap().clone();
        let names = |kind, data: Value| -> Vec<String> {
            gating_rules(&p, &m, kind, data.as_object().unwrap())
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        assert_eq!(names(Kind::Update, json!({"status": "x"})), vec!["price"]);
        assert!(names(Kind::BulkUpdate, json!({"status": "x"})).is_empty());
        assert_eq!(names(Kind::Create, json!({"total": 1000.5})), vec!["big"]);
        assert_eq!(
            names(Kind::Create, json!({"total": "2500.00"})),
            vec!["big"]
        );
        assert!(names(Kind::Create, json!({"total": 1000})).is_empty());
        assert_eq!(names(Kind::Create, json!({"total": "lots"})), vec!["big"]);
        assert!(names(Kind::Delete, json!({})).is_empty());
    }
}
