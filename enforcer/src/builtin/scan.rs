//! The scan budget (`max_scan_rows`, BUD-1), enforced BEFORE a statement runs, from the planner's
//! own estimate: `EXPLAIN (FORMAT JSON)` of the exact statement with the same binds.
//!
//! "Rows scanned" means the rows the statement's access paths make the executor visit, summed
//! over every base-relation scan in the plan, not the rows it returns:
//! - a sequential scan visits the whole table whatever its filter, so it counts the relation's
//!   estimated size (`pg_class.reltuples`), not the node's post-filter `Plan Rows`;
//! - an index scan with an index condition counts its `Plan Rows`; one without (a full index walk,
//!   typically to satisfy an ORDER BY) visits the whole table and counts `reltuples`;
//! - a bitmap heap scan counts the rows its bitmap selects (the bitmap index scans' estimate,
//!   summed under BitmapOr, the smallest under BitmapAnd), before any recheck or filter;
//! - the inner side of a nested loop runs once per outer row, and a correlated subplan (our
//!   includes) once per row of the node that evaluates it: both are multiplied accordingly.
//!
//! A `LIMIT` is deliberately NOT credited: it stops a scan early only when enough rows match in
//! the scan's order, and how soon that happens is exactly the estimate planners get wrong (the
//! matching rows may all sit at the far end of the index). An unbounded listing of a big table is
//! refused even with a small limit; filtering on an indexed field is the way to a cheap read.
//! Where a scan has an index condition AND a filter, the estimate is the post-filter row count (the
//! planner does not expose the pre-filter one): an under-estimate the statement timeout bounds.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::gateway::{ErrorCode, ToolError};

use super::sql::{query, Sql};
use super::text::{or_list, thousands};

/// Estimated rows scanned by a statement, in total and per relation.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ScanEstimate {
    pub total: f64,
    pub relations: BTreeMap<String, f64>,
}

impl ScanEstimate {
    fn add(&mut self, relation: &str, rows: f64) {
        self.total += rows;
        *self.relations.entry(relation.to_string()).or_default() += rows;
    }
}

fn rows_of(node: &Value) -> f64 {
    node.get("Plan Rows").and_then(Value::as_f64).unwrap_or(0.0)
}

fn children(node: &Value) -> &[Value] {
    node.get("Plans")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Rows a bitmap (index scan, BitmapAnd, BitmapOr) selects.
fn bitmap_rows(node: &Value) -> f64 {
    match node.get("Node Type").and_then(Value::as_str) {
        Some("BitmapOr") => children(node).iter().map(bitmap_rows).sum(),
        Some("BitmapAnd") => children(node)
            .iter()
            .map(bitmap_rows)
            .reduce(f64::min)
            .unwrap_or(0.0),
        _ => rows_of(node),
    }
}

/// Estimates rows scanned from an `EXPLAIN (FORMAT JSON)` document.
pub(crate) fn estimate(explain: &Value, reltuples: &dyn Fn(&str) -> Option<f64>) -> ScanEstimate {
    let mut est = ScanEstimate::default();
    let plans = explain.as_array().map(Vec::as_slice).unwrap_or(&[]);
    for p in plans {
        if let Some(plan) = p.get("Plan") {
            walk(plan, 1.0, None, 1.0, &mut est, reltuples);
        }
    }
    est
}

fn walk(
    node: &Value,
    loops: f64,
    cap: Option<f64>,
    workers: f64,
    est: &mut ScanEstimate,
    reltuples: &dyn Fn(&str) -> Option<f64>,
) {
    let ty = node.get("Node Type").and_then(Value::as_str).unwrap_or("");
    let rows = rows_of(node);
    let parallel = node.get("Parallel Aware").and_then(Value::as_bool) == Some(true);
    let per_node = if parallel { rows * workers } else { rows };
    if let Some(relation) = node.get("Relation Name").and_then(Value::as_str) {
        let whole = || reltuples(relation).unwrap_or(per_node).max(per_node);
        let read = match ty {
            "Seq Scan" | "Sample Scan" => whole(),
            "Index Scan" | "Index Only Scan" if node.get("Index Cond").is_none() => whole(),
            "Bitmap Heap Scan" => {
                let selected: f64 = children(node).iter().map(bitmap_rows).sum();
                selected.max(per_node)
            }
            _ => per_node,
        };
        est.add(relation, read * loops);
    }
    let child_workers = match ty {
        "Gather" | "Gather Merge" => {
            node.get("Workers Planned")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                + 1.0
        }
        _ => workers,
    };
    let outer_rows = children(node)
        .iter()
        .find(|c| c.get("Parent Relationship").and_then(Value::as_str) == Some("Outer"))
        .map(rows_of)
        .unwrap_or(1.0);
    // Rows this node actually produces when a Limit above it stops pulling early; only used to
    // count how often a subplan in its target list runs.
    let evaluations = cap.map_or(rows, |c| c.min(rows));
    for child in children(node) {
        let relationship = child
            .get("Parent Relationship")
            .and_then(Value::as_str)
            .unwrap_or("");
        let child_loops = match relationship {
            "Inner" if ty == "Nested Loop" => loops * outer_rows.max(1.0),
            "SubPlan" => loops * evaluations.max(1.0),
            _ => loops,
        };
        let child_cap = match ty {
            "Limit" => Some(cap.map_or(rows, |c| c.min(rows))),
            "Result" | "Subquery Scan" | "ProjectSet" => cap,
            _ => None,
        };
        walk(child, child_loops, child_cap, child_workers, est, reltuples);
    }
}

/// Runs `EXPLAIN (FORMAT JSON)` of `sql` with its binds and refuses the read when the estimate
/// exceeds `budget`. `model` and `fields` shape the suggestion.
pub(crate) async fn check(
    conn: &mut PgConnection,
    sql: &Sql,
    budget: u64,
    model: &str,
    fields: &[String],
    reltuples: &(dyn Fn(&str) -> Option<f64> + Sync),
) -> Result<ScanEstimate, ExplainOutcome> {
    let text = explain_text(sql);
    let plan: Value = query(&text, &sql.binds)
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| sqlx::Row::try_get::<Value, _>(&row, 0))
        .map_err(ExplainOutcome::Database)?;
    judge(&plan, budget, model, fields, reltuples).map_err(ExplainOutcome::OverBudget)
}

/// The planner question for `sql`, taking the same binds.
pub(crate) fn explain_text(sql: &Sql) -> String {
    format!("EXPLAIN (FORMAT JSON) {}", sql.text)
}

/// Prices a plan (`EXPLAIN (FORMAT JSON)` output) against the budget: the estimate when it fits,
/// the `scan_budget_exceeded` denial when it does not.
pub(crate) fn judge(
    plan: &Value,
    budget: u64,
    model: &str,
    fields: &[String],
    reltuples: &(dyn Fn(&str) -> Option<f64> + Sync),
) -> Result<ScanEstimate, ToolError> {
    let est = estimate(plan, reltuples);
    if est.total > budget as f64 {
        return Err(over_budget(&est, budget, model, fields));
    }
    Ok(est)
}

/// Why the scan check did not pass.
#[derive(Debug)]
pub(crate) enum ExplainOutcome {
    OverBudget(ToolError),
    Database(sqlx::Error),
}

fn over_budget(est: &ScanEstimate, budget: u64, model: &str, fields: &[String]) -> ToolError {
    let estimated = est.total.min(u64::MAX as f64).round() as u64;
    let per: Vec<String> = est
        .relations
        .iter()
        .map(|(r, n)| format!("{r}: ~{}", thousands(n.round() as u64)))
        .collect();
    let suggestion = if fields.is_empty() {
        format!(
            "narrow the read with more selective filters; it may scan at most {} rows",
            thousands(budget)
        )
    } else {
        format!(
            "filter {model} on an indexed field — {} — with an equality or a narrow range \
             (e.g. a short {} range), and do not order by non-indexed fields; the read may scan at \
             most {} rows",
            or_list(fields),
            fields[0],
            thousands(budget)
        )
    };
    ToolError::new(
        ErrorCode::ScanBudgetExceeded,
        format!(
            "this read would scan about {} rows ({}); the budget is {}",
            thousands(estimated),
            per.join(", "),
            thousands(budget)
        ),
        suggestion,
    )
    .with_details(json!({
        "estimated_rows": estimated,
        "max_scan_rows": budget,
        "relations": est.relations.iter().map(|(k, v)| (k.clone(), json!(v.round() as u64))).collect::<serde_json::Map<_, _>>(),
        "indexed_fields": fields,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuples(rel: &str) -> Option<f64> {
        match rel {
            "orders" => Some(60090.0),
            "order_items" => Some(60180.0),
            _ => None,
        }
    }

    #[test]
    fn seq_scan_counts_the_whole_table_despite_filter_and_limit() {
        let plan = json!([{"Plan": {"Node Type": "Limit", "Plan Rows": 100, "Plans": [
            {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "orders",
             "Plan Rows": 3, "Filter": "(total = 1.00)"}]}}]);
        assert_eq!(estimate(&plan, &tuples).total, 60090.0);
    }

    #[test]
    fn index_scan_without_condition_is_a_full_walk() {
        let plan = json!([{"Plan": {"Node Type": "Limit", "Plan Rows": 100, "Plans": [
            {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Relation Name": "orders",
             "Index Name": "orders_pkey", "Plan Rows": 20252, "Filter": "(tenant_id = 'acme'::text)"}]}}]);
        assert_eq!(estimate(&plan, &tuples).total, 60090.0);
        let plan = json!([{"Plan": {"Node Type": "Index Scan", "Relation Name": "orders",
             "Index Cond": "(id = 5)", "Plan Rows": 1}}]);
        assert_eq!(estimate(&plan, &tuples).total, 1.0);
    }

    #[test]
    fn bitmap_scans_count_the_bitmap() {
        let plan = json!([{"Plan": {"Node Type": "Bitmap Heap Scan", "Relation Name": "orders", "Plan Rows": 10,
            "Plans": [{"Node Type": "BitmapOr", "Parent Relationship": "Outer", "Plan Rows": 0, "Plans": [
                {"Node Type": "Bitmap Index Scan", "Parent Relationship": "Member", "Index Name": "a", "Plan Rows": 400},
                {"Node Type": "Bitmap Index Scan", "Parent Relationship": "Member", "Index Name": "b", "Plan Rows": 600}]}]}}]);
        assert_eq!(estimate(&plan, &tuples).total, 1000.0);
    }

    #[test]
    fn subplans_run_once_per_row_under_the_limit() {
        // The shape our includes produce: Limit -> Result(subplan) -> Sort -> Index Scan.
        let plan = json!([{"Plan": {"Node Type": "Limit", "Plan Rows": 100, "Plans": [
            {"Node Type": "Result", "Parent Relationship": "Outer", "Plan Rows": 371, "Plans": [
                {"Node Type": "Sort", "Parent Relationship": "Outer", "Plan Rows": 371, "Plans": [
                    {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Relation Name": "orders",
                     "Index Cond": "(tenant_id = 'acme')", "Plan Rows": 371}]},
                {"Node Type": "Aggregate", "Parent Relationship": "SubPlan", "Plan Rows": 1, "Plans": [
                    {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Relation Name": "order_items",
                     "Index Cond": "(order_id = t.id)", "Plan Rows": 2}]}]}]}}]);
        let e = estimate(&plan, &tuples);
        assert_eq!(e.relations["orders"], 371.0);
        assert_eq!(e.relations["order_items"], 200.0);
    }

    #[test]
    fn nested_loop_inner_runs_per_outer_row() {
        let plan = json!([{"Plan": {"Node Type": "Nested Loop", "Plan Rows": 50, "Plans": [
            {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Relation Name": "orders", "Index Cond": "x", "Plan Rows": 50},
            {"Node Type": "Index Scan", "Parent Relationship": "Inner", "Relation Name": "order_items", "Index Cond": "y", "Plan Rows": 3}]}}]);
        assert_eq!(estimate(&plan, &tuples).total, 50.0 + 150.0);
    }

    #[test]
    fn over_budget_error_names_indexed_fields() {
        let mut est = ScanEstimate::default();
        est.add("orders", 60090.0);
        let e = over_budget(
            &est,
            10000,
            "orders",
            &["created_at".into(), "customer_id".into(), "id".into()],
        );
        assert_eq!(e.code, ErrorCode::ScanBudgetExceeded);
        assert!(e.message.contains("60,090"), "{}", e.message);
        assert!(
            e.suggestion.contains("created_at, customer_id or id"),
            "{}",
            e.suggestion
        );
        assert_eq!(e.details["max_scan_rows"], 10000);
    }
}
