//! The read compiler: typed arguments plus the policy become one SQL statement with binds.
//!
//! Shape of a `db_query` statement (includes are correlated subqueries in the select list, so the
//! whole read — includes too — is ONE statement that one `EXPLAIN` can price):
//!
//! ```sql
//! SELECT to_jsonb(r) FROM (
//!   SELECT t0."id" AS "id", t0."total"::text AS "total", ...,
//!          t0."id"::text AS "_pf_pk", t0."created_at"::text AS "_pf_o0",
//!          (SELECT coalesce(jsonb_agg(to_jsonb(r1) ORDER BY r1."_pf_s"), '[]'::jsonb)
//!             FROM (SELECT t1."id" AS "id", ..., t1."id" AS "_pf_s" FROM "public"."order_items" t1
//!                   WHERE t1."tenant_id" = CAST($1 AS text) AND t1."order_id" = t0."id"
//!                   ORDER BY t1."id" LIMIT $5) r1) AS "items"
//!   FROM "public"."orders" t0
//!   WHERE t0."tenant_id" = CAST($1 AS text) AND <filters> AND <keyset after the cursor>
//!   ORDER BY t0."created_at" DESC NULLS FIRST, t0."id" ASC NULLS LAST
//!   LIMIT $6) r
//! ```
//!
//! Every table gets the tenant predicate (unless the model is tenant-exempt) and the soft-delete
//! predicate; denied columns are never selected, so they never leave the database. `_pf_*`
//! columns are internal (primary key for audit subjects and cursors, order keys for the cursor)
//! and are stripped before the agent sees a row.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::audit::canonical_json;
use crate::faults::{Fault, Faults};
use crate::gateway::{ErrorCode, ToolError};
use crate::policy::{ColumnPolicy, FieldAction, ModelPolicy, Policy, Relation, RelationKind};

use super::access::{effective_action, resolve, TypeClass, Use};
use super::args::{invalid, AggFn, AggregateArgs, Condition, Dir, Named, Op, QueryArgs};
use super::sql::{check_text, scalar, Scalar, Sql};
use super::text::{ident, qualified, quote_for_message};
use super::tools::{row_cap, MAX_IN_VALUES, QUERY};

/// Prefix of internal result columns; the gateway refuses a policy with a real column named so.
pub(crate) const INTERNAL_PREFIX: &str = "_pf_";

/// Who is reading and which enforcement switches are off.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub policy: &'a Policy,
    pub tenant: &'a str,
    pub faults: &'a Faults,
}

/// One relation to embed, with what to embed under it.
#[derive(Clone, Debug)]
pub(crate) struct IncludeNode<'p> {
    pub relation: &'p Relation,
    pub target: &'p ModelPolicy,
    /// Most related rows embedded per parent row (has_many).
    pub cap: u64,
    pub children: Vec<IncludeNode<'p>>,
}

impl IncludeNode<'_> {
    fn any_has_many(nodes: &[IncludeNode<'_>]) -> bool {
        nodes
            .iter()
            .any(|n| n.relation.kind == RelationKind::HasMany || Self::any_has_many(&n.children))
    }
}

#[derive(Clone, Debug)]
enum CondValue {
    Null(bool),
    One(Scalar),
    List(Vec<Scalar>),
    Pair(Scalar, Scalar),
    Pattern(String),
}

#[derive(Clone, Debug)]
struct ResolvedCond<'p> {
    column: &'p ColumnPolicy,
    class: TypeClass,
    op: Op,
    value: CondValue,
}

/// Where the page starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Page {
    First,
    /// Keyset: the last row's order-key values (text, `None` for NULL), primary key last.
    After(Vec<Option<String>>),
    /// Plain offset (only with the `CursorUnsigned` fault).
    Offset(u64),
}

/// A resolved read, before the page is known.
pub(crate) struct Resolved<'p> {
    pub model: &'p ModelPolicy,
    pub columns: Vec<&'p ColumnPolicy>,
    pub includes: Vec<IncludeNode<'p>>,
    conditions: Vec<ResolvedCond<'p>>,
    /// Order keys, the primary key last (unless it is already a key).
    pub order: Vec<(&'p ColumnPolicy, Dir)>,
    /// `Some(n)` when the root rows are pinned by primary-key equality to at most `n` rows.
    pub pk_lookup: Option<u64>,
}

impl Resolved<'_> {
    /// Whether the statement is a bounded primary-key lookup end to end, so its scan cost is known
    /// without asking the planner: a pk-pinned root and only belongs_to includes (each itself a
    /// primary-key lookup per row).
    pub(crate) fn bounded_lookup(&self) -> Option<u64> {
        if IncludeNode::any_has_many(&self.includes) {
            None
        } else {
            self.pk_lookup
        }
    }
}

/// The statement to run and what the response builder needs to read its rows.
pub(crate) struct Compiled {
    pub sql: Sql,
    /// Rows to return; the statement fetches one more to know whether there is a next page.
    pub limit: Option<u64>,
}

fn column_expr(alias: &str, c: &ColumnPolicy) -> String {
    format!("{alias}.{}", ident(&c.name))
}

/// The expression a column is returned as: exact decimals as text (JSON numbers would round).
pub(crate) fn output_expr(alias: &str, c: &ColumnPolicy) -> String {
    match TypeClass::of(&c.pg_type) {
        TypeClass::Numeric => format!("{}::text", column_expr(alias, c)),
        _ => column_expr(alias, c),
    }
}

/// Columns an agent sees of `model` by default (allow, mask, hash after faults).
pub(crate) fn visible<'p>(model: &'p ModelPolicy, faults: &Faults) -> Vec<&'p ColumnPolicy> {
    model
        .columns
        .iter()
        .filter(|c| effective_action(c, faults) != FieldAction::Deny)
        .collect()
}

fn select_columns<'p>(
    scope: Scope<'_>,
    model: &'p ModelPolicy,
    select: Option<&[Named]>,
) -> Result<Vec<&'p ColumnPolicy>, ToolError> {
    let Some(names) = select.filter(|s| !s.is_empty()) else {
        return Ok(visible(model, scope.faults));
    };
    let mut out: Vec<&ColumnPolicy> = Vec::new();
    for n in names {
        let c = resolve(model, &n.name, Use::Select, scope.faults, &n.path)?;
        if !out.iter().any(|o| o.name == c.name) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses `include` paths (`items.product`) into a tree, checking each relation against the
/// policy and the depth against the root model's `max_join_depth`.
pub(crate) fn resolve_includes<'p>(
    scope: Scope<'p>,
    model: &'p ModelPolicy,
    include: &[Named],
) -> Result<Vec<IncludeNode<'p>>, ToolError> {
    let max_depth = model.budgets.max_join_depth as usize;
    let mut roots: Vec<IncludeNode<'p>> = Vec::new();
    for n in include {
        let segments: Vec<&str> = n.name.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(invalid(
                &n.path,
                "is not a relation path",
                "write relations as name or name.name",
            ));
        }
        if segments.len() > max_depth && !scope.faults.has(Fault::JoinDepthOff) {
            return Err(ToolError::new(
                ErrorCode::JoinDepthExceeded,
                format!(
                    "`{}`: {} goes {} relations deep; {} allows at most {max_depth}",
                    n.path,
                    quote_for_message(&n.name),
                    segments.len(),
                    model.name
                ),
                format!(
                    "include at most {max_depth} level(s), then fetch deeper rows with a separate db_query"
                ),
            )
            .with_details(json!({"path": n.path, "depth": segments.len(), "max_join_depth": max_depth})));
        }
        let mut level = &mut roots;
        let mut current = model;
        for seg in segments {
            let Some(relation) = current.relations.get(seg) else {
                return Err(relation_denied(&n.path, current, seg));
            };
            let Some(target) = scope
                .policy
                .model(&relation.target)
                .filter(|t| t.tools.contains(QUERY))
            else {
                return Err(relation_denied(&n.path, current, seg));
            };
            let pos = match level.iter().position(|x| x.relation.name == relation.name) {
                Some(p) => p,
                None => {
                    level.push(IncludeNode {
                        relation,
                        target,
                        cap: row_cap(scope.policy, &target.name, QUERY),
                        children: Vec::new(),
                    });
                    level.len() - 1
                }
            };
            current = target;
            level = &mut level[pos].children;
        }
    }
    Ok(roots)
}

fn relation_denied(path: &str, model: &ModelPolicy, name: &str) -> ToolError {
    let available: Vec<&str> = model.relations.keys().map(String::as_str).collect();
    ToolError::new(
        ErrorCode::RelationNotAllowed,
        format!(
            "`{path}`: {} has no relation {} you may include",
            model.name,
            quote_for_message(name)
        ),
        if available.is_empty() {
            format!("{} has no relations to include", model.name)
        } else {
            format!("relations of {}: {}", model.name, available.join(", "))
        },
    )
    .with_details(json!({"path": path, "model": model.name}))
}

fn resolve_conditions<'p>(
    scope: Scope<'_>,
    model: &'p ModelPolicy,
    conditions: &[Condition],
) -> Result<Vec<ResolvedCond<'p>>, ToolError> {
    let mut out = Vec::with_capacity(conditions.len());
    for c in conditions {
        let column = resolve(model, &c.field, Use::Filter(c.op), scope.faults, &c.path)?;
        let class = TypeClass::of(&column.pg_type);
        let vpath = format!("{}.value", c.path);
        let field = format!("{}.{}", model.name, column.name);
        let value = match c.op {
            Op::IsNull => match &c.value {
                None | Some(Value::Bool(true)) => CondValue::Null(true),
                Some(Value::Bool(false)) => CondValue::Null(false),
                Some(_) => {
                    return Err(invalid(
                        &vpath,
                        "is_null takes true (the field is empty) or false (it is not)",
                        "",
                    ))
                }
            },
            Op::In | Op::NotIn => {
                let Some(Value::Array(items)) = &c.value else {
                    return Err(invalid(
                        &vpath,
                        format!("{} takes a list of values", c.op.as_str()),
                        "e.g. {\"op\": \"in\", \"value\": [\"paid\", \"shipped\"]}",
                    ));
                };
                if items.is_empty() || items.len() as u64 > MAX_IN_VALUES {
                    return Err(invalid(
                        &vpath,
                        format!("takes 1 to {MAX_IN_VALUES} values, got {}", items.len()),
                        "",
                    ));
                }
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    list.push(scalar(class, item, &format!("{vpath}[{i}]"), &field)?);
                }
                CondValue::List(list)
            }
            Op::Between => match &c.value {
                Some(Value::Array(items)) if items.len() == 2 => CondValue::Pair(
                    scalar(class, &items[0], &format!("{vpath}[0]"), &field)?,
                    scalar(class, &items[1], &format!("{vpath}[1]"), &field)?,
                ),
                _ => {
                    return Err(invalid(
                        &vpath,
                        "between takes a list of exactly two values [low, high]",
                        "",
                    ))
                }
            },
            Op::Contains | Op::StartsWith | Op::EndsWith => match &c.value {
                Some(Value::String(s)) => {
                    check_text(s, &vpath)?;
                    let escaped = like_escape(s);
                    CondValue::Pattern(match c.op {
                        Op::Contains => format!("%{escaped}%"),
                        Op::StartsWith => format!("{escaped}%"),
                        _ => format!("%{escaped}"),
                    })
                }
                _ => {
                    return Err(invalid(
                        &vpath,
                        format!("{} takes a string", c.op.as_str()),
                        "",
                    ))
                }
            },
            Op::Eq | Op::Ne | Op::Lt | Op::Lte | Op::Gt | Op::Gte => match &c.value {
                None | Some(Value::Null) => {
                    return Err(invalid(
                        &vpath,
                        format!("{} needs a value", c.op.as_str()),
                        "to find empty fields use {\"op\": \"is_null\", \"value\": true}",
                    ))
                }
                Some(Value::Array(_)) => {
                    return Err(invalid(
                        &vpath,
                        format!("{} takes a single value, not a list", c.op.as_str()),
                        "use in / not_in for a list of values",
                    ))
                }
                // With the values check off, a value the layer would refuse goes to the
                // database as text, to be cast (and rejected) there.
                Some(v) if scope.faults.has(Fault::ValuesUnchecked) => {
                    CondValue::One(scalar(class, v, &vpath, &field).unwrap_or_else(|_| {
                        Scalar::Text(
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    }))
                }
                Some(v) => CondValue::One(scalar(class, v, &vpath, &field)?),
            },
        };
        if matches!(c.op, Op::Eq | Op::In) {
            check_tenant_filter(scope, model, column, &value, &c.path)?;
        }
        out.push(ResolvedCond {
            column,
            class,
            op: c.op,
            value,
        });
    }
    Ok(out)
}

/// An equality (`eq`, `in`) on the tenant column naming another tenant is an attempt to cross
/// tenants: it is refused outright (and audited as such) rather than silently returning nothing.
/// Other operators on the tenant column are harmless (the tenant predicate still applies).
fn check_tenant_filter(
    scope: Scope<'_>,
    model: &ModelPolicy,
    column: &ColumnPolicy,
    value: &CondValue,
    path: &str,
) -> Result<(), ToolError> {
    if scope.faults.has(Fault::NoTenantPredicate)
        || model.tenant_column.as_deref() != Some(column.name.as_str())
    {
        return Ok(());
    }
    let other = |s: &Scalar| match s {
        Scalar::Text(t) => t != scope.tenant,
        Scalar::Int(i) => i.to_string() != scope.tenant,
        Scalar::Bool(_) => true,
    };
    let foreign = match value {
        CondValue::One(s) => other(s),
        CondValue::List(items) => items.iter().any(other),
        CondValue::Null(_) | CondValue::Pair(..) | CondValue::Pattern(_) => false,
    };
    if foreign {
        return Err(ToolError::new(
            ErrorCode::TenantMismatch,
            format!(
                "`{path}`: {}.{} may only name your own tenant",
                model.name, column.name
            ),
            "leave the tenant out of filters; every call is already limited to your tenant",
        )
        .with_details(json!({"path": path, "model": model.name, "field": column.name})));
    }
    Ok(())
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn resolve_order<'p>(
    scope: Scope<'_>,
    model: &'p ModelPolicy,
    keys: &[super::args::OrderKey],
) -> Result<Vec<(&'p ColumnPolicy, Dir)>, ToolError> {
    let mut out: Vec<(&ColumnPolicy, Dir)> = Vec::new();
    for k in keys {
        let c = resolve(model, &k.field, Use::Order, scope.faults, &k.path)?;
        if out.iter().any(|(o, _)| o.name == c.name) {
            return Err(invalid(
                &k.path,
                format!("{} appears twice in order_by", c.name),
                "",
            ));
        }
        out.push((c, k.dir));
    }
    if !out.iter().any(|(c, _)| c.name == model.primary_key) {
        let Some(pk) = model.column(&model.primary_key) else {
            return Err(ToolError::new(
                ErrorCode::Internal,
                "the policy names a primary key the model does not have",
                "report this to the operator",
            ));
        };
        out.push((pk, Dir::Asc));
    }
    Ok(out)
}

fn shape_hash(value: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(value).as_bytes()))
}

/// Resolves a `db_query` against the policy (every input check happens here, before SQL).
pub(crate) fn resolve_query<'p>(
    scope: Scope<'p>,
    model: &'p ModelPolicy,
    args: &QueryArgs,
) -> Result<Resolved<'p>, ToolError> {
    let columns = select_columns(scope, model, args.select.as_deref())?;
    let conditions = resolve_conditions(scope, model, &args.conditions)?;
    let order = resolve_order(scope, model, &args.order_by)?;
    let includes = resolve_includes(scope, model, &args.include)?;
    let pk_lookup = conditions
        .iter()
        .filter(|c| c.column.name == model.primary_key)
        .filter_map(|c| match (&c.op, &c.value) {
            (Op::Eq, _) => Some(1),
            (Op::In, CondValue::List(l)) => Some(l.len() as u64),
            _ => None,
        })
        .min();
    Ok(Resolved {
        model,
        columns,
        includes,
        conditions,
        order,
        pk_lookup,
    })
}

/// SHA-256 of a query's shape: everything that decides which rows it returns in which order
/// (model, select, where with its values, order, includes), not its limit or cursor. Cursors are
/// bound to it; only computed when a cursor is read or minted.
pub(crate) fn query_shape(resolved: &Resolved<'_>, args: &QueryArgs) -> String {
    let mut include_paths: Vec<&str> = args.include.iter().map(|n| n.name.as_str()).collect();
    include_paths.sort_unstable();
    shape_hash(&json!({
        "model": resolved.model.name,
        "select": resolved.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        "where": args.conditions.iter().map(|c| json!([c.field, c.op.as_str(), c.value])).collect::<Vec<_>>(),
        "order": resolved.order.iter().map(|(c, d)| json!([c.name, d.as_str()])).collect::<Vec<_>>(),
        "include": include_paths,
    }))
}

/// Resolves a `db_get`: the primary key as the one condition.
pub(crate) fn resolve_get<'p>(
    scope: Scope<'p>,
    model: &'p ModelPolicy,
    id: &Value,
    select: Option<&[Named]>,
    include: &[Named],
) -> Result<Resolved<'p>, ToolError> {
    let args = QueryArgs {
        model: model.name.clone(),
        select: select.map(<[Named]>::to_vec),
        conditions: vec![Condition {
            path: "id".to_string(),
            field: model.primary_key.clone(),
            op: Op::Eq,
            value: Some(id.clone()),
        }],
        order_by: Vec::new(),
        limit: None,
        cursor: None,
        include: include.to_vec(),
    };
    // The condition's path is `id.value` inside resolve_conditions; make messages say `id`.
    resolve_query(scope, model, &args).map_err(|mut e| {
        e.message = e.message.replace("`id.value`", "`id`");
        if let Some(p) = e.details.get_mut("path") {
            if p == "id.value" {
                *p = Value::String("id".to_string());
            }
        }
        e
    })
}

struct Emitter<'s> {
    scope: Scope<'s>,
    sql: Sql,
    aliases: usize,
}

impl Emitter<'_> {
    fn alias(&mut self) -> (String, String) {
        let n = self.aliases;
        self.aliases += 1;
        (format!("t{n}"), format!("r{n}"))
    }

    /// Tenant and soft-delete predicates for one table.
    fn scope_predicates(&mut self, model: &ModelPolicy, alias: &str) -> Vec<String> {
        let mut preds = Vec::new();
        if let Some(tc) = &model.tenant_column {
            if !self.scope.faults.has(Fault::NoTenantPredicate) {
                let p = self.sql.tenant(self.scope.tenant);
                let class = model
                    .column(tc)
                    .map(|c| TypeClass::of(&c.pg_type))
                    .unwrap_or(TypeClass::Text);
                preds.push(match class.cast() {
                    Some(t) => format!("{alias}.{} = CAST({p} AS {t})", ident(tc)),
                    None => format!("{alias}.{}::text = {p}", ident(tc)),
                });
            }
        }
        if let Some(sd) = &model.soft_delete_column {
            preds.push(format!("{alias}.{} IS NULL", ident(sd)));
        }
        preds
    }

    fn condition(&mut self, alias: &str, c: &ResolvedCond<'_>) -> String {
        let col = match c.class.cast() {
            Some(_) => column_expr(alias, c.column),
            None => format!("{}::text", column_expr(alias, c.column)),
        };
        match (&c.op, &c.value) {
            (_, CondValue::Null(true)) => format!("{col} IS NULL"),
            (_, CondValue::Null(false)) => format!("{col} IS NOT NULL"),
            (Op::In, CondValue::List(items)) => {
                let a = self.sql.array(c.class, items.clone());
                format!("{col} = ANY({a})")
            }
            (Op::NotIn, CondValue::List(items)) => {
                let a = self.sql.array(c.class, items.clone());
                format!("({col} IS NULL OR NOT ({col} = ANY({a})))")
            }
            (_, CondValue::Pair(lo, hi)) => {
                let lo = self.sql.scalar(c.class, lo.clone());
                let hi = self.sql.scalar(c.class, hi.clone());
                format!("{col} BETWEEN {lo} AND {hi}")
            }
            (_, CondValue::Pattern(p)) => {
                let b = self.sql.scalar(TypeClass::Text, Scalar::Text(p.clone()));
                format!("{col} ILIKE {b} ESCAPE E'\\\\'")
            }
            (op, CondValue::One(v)) => {
                let b = self.sql.scalar(c.class, v.clone());
                let sym = match op {
                    Op::Ne => "IS DISTINCT FROM",
                    Op::Lt => "<",
                    Op::Lte => "<=",
                    Op::Gt => ">",
                    Op::Gte => ">=",
                    _ => "=",
                };
                format!("{col} {sym} {b}")
            }
            // Shapes resolve_conditions never produces; refuse rather than guess.
            (_, CondValue::List(_)) => "FALSE".to_string(),
        }
    }

    /// `(k1 > v1 OR (k1 = v1 AND (k2 > v2 OR ...)))` honouring each key's direction and NULLs
    /// (ascending keys sort NULLs last, descending ones first, as Postgres does by default).
    fn keyset(
        &mut self,
        alias: &str,
        order: &[(&ColumnPolicy, Dir)],
        values: &[Option<String>],
    ) -> String {
        let mut acc: Option<String> = None;
        for ((col, dir), value) in order.iter().zip(values).rev() {
            let class = TypeClass::of(&col.pg_type);
            let c = column_expr(alias, col);
            let (greater, equal) = match (dir, value) {
                (Dir::Asc, Some(v)) => {
                    let b = self.sql.scalar(class, Scalar::Text(v.clone()));
                    let g = if col.nullable {
                        format!("({c} > {b} OR {c} IS NULL)")
                    } else {
                        format!("{c} > {b}")
                    };
                    (g, format!("{c} = {b}"))
                }
                (Dir::Asc, None) => ("FALSE".to_string(), format!("{c} IS NULL")),
                (Dir::Desc, Some(v)) => {
                    let b = self.sql.scalar(class, Scalar::Text(v.clone()));
                    (format!("{c} < {b}"), format!("{c} = {b}"))
                }
                (Dir::Desc, None) => (format!("{c} IS NOT NULL"), format!("{c} IS NULL")),
            };
            acc = Some(match acc {
                None => greater,
                Some(rest) => format!("({greater} OR ({equal} AND {rest}))"),
            });
        }
        acc.unwrap_or_else(|| "TRUE".to_string())
    }

    fn include_exprs(
        &mut self,
        parent_alias: &str,
        parent: &ModelPolicy,
        nodes: &[IncludeNode<'_>],
    ) -> Vec<String> {
        nodes
            .iter()
            .map(|n| {
                let e = self.include_expr(parent_alias, parent, n);
                format!("{e} AS {}", ident(&n.relation.name))
            })
            .collect()
    }

    fn include_expr(
        &mut self,
        parent_alias: &str,
        parent: &ModelPolicy,
        node: &IncludeNode<'_>,
    ) -> String {
        let (a, r) = self.alias();
        let target = node.target;
        let columns: Vec<&ColumnPolicy> = if self.scope.faults.has(Fault::IncludeUnredacted) {
            target.columns.iter().collect()
        } else {
            visible(target, self.scope.faults)
        };
        let mut select: Vec<String> = columns
            .iter()
            .map(|c| format!("{} AS {}", output_expr(&a, c), ident(&c.name)))
            .collect();
        select.push(format!(
            "{a}.{}::text AS \"{INTERNAL_PREFIX}pk\"",
            ident(&target.primary_key)
        ));
        select.extend(self.include_exprs(&a, target, &node.children));
        let mut preds = self.scope_predicates(target, &a);
        let table = qualified(&target.schema, &target.table);
        match node.relation.kind {
            RelationKind::BelongsTo => {
                preds.push(format!(
                    "{a}.{} = {parent_alias}.{}",
                    ident(&target.primary_key),
                    ident(&node.relation.foreign_key)
                ));
                format!(
                    "(SELECT to_jsonb({r}) FROM (SELECT {} FROM {table} {a} WHERE {} LIMIT 1) {r})",
                    select.join(", "),
                    preds.join(" AND ")
                )
            }
            RelationKind::HasMany => {
                preds.push(format!(
                    "{a}.{} = {parent_alias}.{}",
                    ident(&node.relation.foreign_key),
                    ident(&parent.primary_key)
                ));
                select.push(format!(
                    "{a}.{} AS \"{INTERNAL_PREFIX}s\"",
                    ident(&target.primary_key)
                ));
                let cap = self.sql.bind(super::sql::Bind::Int(
                    node.cap.saturating_add(1).min(i64::MAX as u64) as i64,
                ));
                format!(
                    "(SELECT coalesce(jsonb_agg(to_jsonb({r}) ORDER BY {r}.\"{INTERNAL_PREFIX}s\"), '[]'::jsonb) \
                     FROM (SELECT {} FROM {table} {a} WHERE {} ORDER BY {a}.{} LIMIT {cap}) {r})",
                    select.join(", "),
                    preds.join(" AND "),
                    ident(&target.primary_key)
                )
            }
        }
    }
}

/// Emits the `db_query`/`db_get` statement for `resolved` starting at `page`, returning at most
/// `limit` rows (`None`: no limit, only with the `RowBudgetOff` fault).
pub(crate) fn emit_read(
    scope: Scope<'_>,
    resolved: &Resolved<'_>,
    page: &Page,
    limit: Option<u64>,
) -> Compiled {
    let mut e = Emitter {
        scope,
        sql: Sql::default(),
        aliases: 0,
    };
    let (a, _) = e.alias();
    let model = resolved.model;
    let mut select: Vec<String> = resolved
        .columns
        .iter()
        .map(|c| format!("{} AS {}", output_expr(&a, c), ident(&c.name)))
        .collect();
    select.push(format!(
        "{a}.{}::text AS \"{INTERNAL_PREFIX}pk\"",
        ident(&model.primary_key)
    ));
    for (i, (c, _)) in resolved.order.iter().enumerate() {
        if c.name != model.primary_key {
            select.push(format!(
                "{}::text AS \"{INTERNAL_PREFIX}o{i}\"",
                column_expr(&a, c)
            ));
        }
    }
    select.extend(e.include_exprs(&a, model, &resolved.includes));
    let mut preds = e.scope_predicates(model, &a);
    for c in &resolved.conditions {
        let p = e.condition(&a, c);
        preds.push(p);
    }
    if let Page::After(values) = page {
        let k = e.keyset(&a, &resolved.order, values);
        preds.push(k);
    }
    let order: Vec<String> = resolved
        .order
        .iter()
        .map(|(c, d)| match d {
            Dir::Asc => format!("{} ASC NULLS LAST", column_expr(&a, c)),
            Dir::Desc => format!("{} DESC NULLS FIRST", column_expr(&a, c)),
        })
        .collect();
    let mut inner = format!(
        "SELECT {} FROM {} {a}",
        select.join(", "),
        qualified(&model.schema, &model.table)
    );
    if !preds.is_empty() {
        inner.push_str(" WHERE ");
        inner.push_str(&preds.join(" AND "));
    }
    inner.push_str(" ORDER BY ");
    inner.push_str(&order.join(", "));
    if let Some(l) = limit {
        let p = e.sql.bind(super::sql::Bind::Int(
            l.saturating_add(1).min(i64::MAX as u64) as i64,
        ));
        inner.push_str(&format!(" LIMIT {p}"));
    }
    if let Page::Offset(o) = page {
        let p = e
            .sql
            .bind(super::sql::Bind::Int((*o).min(i64::MAX as u64) as i64));
        inner.push_str(&format!(" OFFSET {p}"));
    }
    e.sql.push(&format!("SELECT to_jsonb(r) FROM ({inner}) r"));
    Compiled { sql: e.sql, limit }
}

/// A resolved `db_aggregate`.
pub(crate) struct AggPlan<'p> {
    pub model: &'p ModelPolicy,
    pub group: Vec<&'p ColumnPolicy>,
    pub compiled: Compiled,
}

/// Resolves and emits a `db_aggregate` statement.
pub(crate) fn compile_aggregate<'p>(
    scope: Scope<'p>,
    model: &'p ModelPolicy,
    args: &AggregateArgs,
    limit: Option<u64>,
) -> Result<AggPlan<'p>, ToolError> {
    let mut group: Vec<&ColumnPolicy> = Vec::new();
    for g in &args.group_by {
        let c = resolve(model, &g.name, Use::Group, scope.faults, &g.path)?;
        if !group.iter().any(|x| x.name == c.name) {
            group.push(c);
        }
    }
    let mut aggs: Vec<(String, &ColumnPolicy, AggFn, String)> = Vec::new();
    let mut count_star: Vec<String> = Vec::new();
    for a in &args.aggregates {
        match &a.field {
            None => count_star.push(a.alias.clone()),
            Some(f) => {
                let c = resolve(
                    model,
                    f,
                    Use::Aggregate(a.function),
                    scope.faults,
                    &format!("{}.field", a.path),
                )?;
                aggs.push((a.path.clone(), c, a.function, a.alias.clone()));
            }
        }
    }
    let conditions = resolve_conditions(scope, model, &args.conditions)?;

    let mut e = Emitter {
        scope,
        sql: Sql::default(),
        aliases: 0,
    };
    let (t, _) = e.alias();
    let mut select: Vec<String> = group
        .iter()
        .map(|c| format!("{} AS {}", output_expr(&t, c), ident(&c.name)))
        .collect();
    for alias in &count_star {
        select.push(format!("count(*) AS {}", ident(alias)));
    }
    for (_, c, f, alias) in &aggs {
        let col = column_expr(&t, c);
        let class = TypeClass::of(&c.pg_type);
        let expr = match f {
            AggFn::Count => format!("count({col})"),
            AggFn::Sum | AggFn::Avg if class == TypeClass::Float => {
                format!("{}({col})", f.as_str())
            }
            // sum/avg of integers and decimals are exact decimals: returned as text.
            AggFn::Sum | AggFn::Avg => format!("{}({col})::text", f.as_str()),
            AggFn::Min | AggFn::Max if class == TypeClass::Numeric => {
                format!("{}({col})::text", f.as_str())
            }
            AggFn::Min | AggFn::Max => format!("{}({col})", f.as_str()),
        };
        select.push(format!("{expr} AS {}", ident(alias)));
    }
    let mut preds = e.scope_predicates(model, &t);
    for c in &conditions {
        let p = e.condition(&t, c);
        preds.push(p);
    }
    let mut inner = format!(
        "SELECT {} FROM {} {t}",
        select.join(", "),
        qualified(&model.schema, &model.table)
    );
    if !preds.is_empty() {
        inner.push_str(" WHERE ");
        inner.push_str(&preds.join(" AND "));
    }
    let effective_limit = if group.is_empty() { None } else { limit };
    if !group.is_empty() {
        let keys: Vec<String> = group.iter().map(|c| column_expr(&t, c)).collect();
        inner.push_str(&format!(" GROUP BY {}", keys.join(", ")));
        let order: Vec<String> = keys.iter().map(|k| format!("{k} ASC NULLS LAST")).collect();
        inner.push_str(&format!(" ORDER BY {}", order.join(", ")));
        if let Some(l) = effective_limit {
            let p = e.sql.bind(super::sql::Bind::Int(
                l.saturating_add(1).min(i64::MAX as u64) as i64,
            ));
            inner.push_str(&format!(" LIMIT {p}"));
        }
    }
    e.sql.push(&format!("SELECT to_jsonb(r) FROM ({inner}) r"));
    Ok(AggPlan {
        model,
        group,
        compiled: Compiled {
            sql: e.sql,
            limit: effective_limit,
        },
    })
}

/// The predicates that select the rows of `model` a write targets, for table alias `alias`:
/// tenant scope and soft delete (exactly as reads get them), then `conditions` under the same
/// field policy as a read's filters. Binds go into `sql`. Used by `write.rs`.
pub(crate) fn write_predicates(
    scope: Scope<'_>,
    model: &ModelPolicy,
    conditions: &[Condition],
    alias: &str,
    sql: Sql,
) -> Result<(Vec<String>, Sql), ToolError> {
    let resolved = resolve_conditions(scope, model, conditions)?;
    let mut e = Emitter {
        scope,
        sql,
        aliases: 0,
    };
    let mut preds = e.scope_predicates(model, alias);
    for c in &resolved {
        let p = e.condition(alias, c);
        preds.push(p);
    }
    Ok((preds, e.sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
    }
}
