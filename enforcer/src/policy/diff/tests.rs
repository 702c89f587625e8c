//! Tests of the policy diff: one pair of policies per kind of widening and narrowing, each
//! asserted as its exact sentence, and the reverse pair as its opposite.

use super::*;
use crate::policy::load_str;

const BASE: &str = r#"
version: 1
name: diff-base
extends: prod
tenant: {setting: app.tenant_id, column: tenant_id}
defaults:
  fields:
    deny: ["*notes*"]
models:
  customers:
    tools: [db_query, db_get, db_update]
    fields: {id: allow, email: mask, name: mask, ssn: deny}
    writable_fields: [name]
    relations:
      orders: {model: orders, foreign_key: customer_id, kind: has_many}
  orders:
    tools: [db_query, db_get]
    fields: {id: allow, customer_id: allow, total: allow}
  refunds:
    tools: [db_query, db_create]
    fields: {id: allow, order_id: allow, amount: allow}
    writable_fields: [order_id, amount]
writes: {dry_run_required_above: 10}
approvals:
  sla: 30m
  approvers: [admin]
  rules:
    - name: refund-over-1000
      model: refunds
      tools: [db_create]
      when: {field: amount, greater_than: 1000}
quotas: {calls_per_hour: 600, rows_per_hour: 20000}
budget_store: memory
audit:
  sinks: [postgres, {jsonl: audit/a.jsonl}]
  retention: {hot: 90d, warm: 365d, cold: 7y}
"#;

fn policy(text: &str) -> Policy {
    match load_str(text, "p.yaml", None) {
        Ok(p) => p,
        Err(e) => panic!("test policy does not load:\n{e}\n{text}"),
    }
}

fn edited(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

/// The diff base → edited has exactly `sentence` with `direction`, and the reverse diff has
/// `reverse` with the opposite direction.
fn check(from: &str, to: &str, direction: Direction, sentence: &str, reverse: &str) {
    let (a, b) = (policy(BASE), policy(&edited(from, to)));
    let forward = diff(&a, &b);
    let texts: Vec<(Direction, &str)> = forward
        .changes
        .iter()
        .map(|c| (c.direction, c.text.as_str()))
        .collect();
    assert_eq!(texts, vec![(direction, sentence)], "{from} -> {to}");
    assert_eq!(forward.widens(), direction == Direction::Widens);
    let back = diff(&b, &a);
    let opposite = match direction {
        Direction::Widens => Direction::Narrows,
        Direction::Narrows => Direction::Widens,
        Direction::Other => Direction::Other,
    };
    let texts: Vec<(Direction, &str)> = back
        .changes
        .iter()
        .map(|c| (c.direction, c.text.as_str()))
        .collect();
    assert_eq!(texts, vec![(opposite, reverse)], "{to} -> {from}");
}

#[test]
fn identical_policies_have_no_changes() {
    let d = diff(&policy(BASE), &policy(BASE));
    assert!(d.changes.is_empty());
    assert!(!d.widens());
    assert!(d.to_markdown().contains("No capability changes."));
}

#[test]
fn field_unmasked_widens() {
    check(
        "email: mask,",
        "email: allow,",
        Direction::Widens,
        "customers.email is now returned unmasked (was masked)",
        "customers.email is now returned masked (was returned unmasked)",
    );
}

#[test]
fn field_denied_narrows() {
    check(
        "email: mask,",
        "email: deny,",
        Direction::Narrows,
        "customers.email is now denied (was masked)",
        "customers.email is now returned masked (was denied)",
    );
}

#[test]
fn tool_gained_widens() {
    check(
        "tools: [db_query, db_get]\n    fields: {id: allow, customer_id",
        "tools: [db_query, db_get, db_aggregate]\n    fields: {id: allow, customer_id",
        Direction::Widens,
        "db_aggregate is now allowed on orders",
        "db_aggregate is no longer allowed on orders",
    );
}

#[test]
fn model_added_widens() {
    let b = format!("{BASE}\n").replacen(
        "writes: {dry_run",
        "  products:\n    tools: [db_query]\n    fields: {id: allow}\nwrites: {dry_run",
        1,
    );
    let d = diff(&policy(BASE), &policy(&b));
    let texts: Vec<&str> = d.changes.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, vec!["products is now reachable with db_query"]);
    assert!(d.widens());
    let r = diff(&policy(&b), &policy(BASE));
    assert_eq!(r.changes[0].text, "products is no longer reachable");
    assert!(!r.widens());
}

#[test]
fn relation_added_widens() {
    check(
        "    fields: {id: allow, customer_id: allow, total: allow}\n",
        "    fields: {id: allow, customer_id: allow, total: allow}\n    relations:\n      customer: {model: customers, foreign_key: customer_id, kind: belongs_to}\n",
        Direction::Widens,
        "orders can now include customer (customers)",
        "orders can no longer include customer",
    );
}

#[test]
fn writable_field_added_widens() {
    check(
        "writable_fields: [name]",
        "writable_fields: [name, email]",
        Direction::Widens,
        "customers.email is now writable",
        "customers.email is no longer writable",
    );
}

#[test]
fn reason_no_longer_required_widens() {
    check(
        "    writable_fields: [name]\n",
        "    writable_fields: [name]\n    require_reason: false\n",
        Direction::Widens,
        "writes to customers no longer need a reason",
        "writes to customers now need a reason",
    );
}

#[test]
fn approval_rule_removed_widens() {
    check(
        "  rules:\n    - name: refund-over-1000\n      model: refunds\n      tools: [db_create]\n      when: {field: amount, greater_than: 1000}\n",
        "  rules: []\n",
        Direction::Widens,
        "writes to refunds with amount above 1,000 (by db_create) no longer need approval (rule refund-over-1000 removed)",
        "writes to refunds with amount above 1,000 (by db_create) now need approval (rule refund-over-1000 added)",
    );
}

#[test]
fn approval_threshold_raised_widens() {
    check(
        "greater_than: 1000}",
        "greater_than: 5000}",
        Direction::Widens,
        "approval threshold of rule refund-over-1000 (refunds.amount) raised from 1,000 to 5,000",
        "approval threshold of rule refund-over-1000 (refunds.amount) lowered from 5,000 to 1,000",
    );
}

#[test]
fn scan_budget_raised_widens_on_every_model() {
    check(
        "  fields:\n    deny: [\"*notes*\"]\n",
        "  fields:\n    deny: [\"*notes*\"]\n  budgets: {max_scan_rows: 1000000}\n",
        Direction::Widens,
        "max_scan_rows raised from 10,000 to 1,000,000 on every model",
        "max_scan_rows lowered from 1,000,000 to 10,000 on every model",
    );
}

#[test]
fn budget_removed_is_unlimited() {
    check(
        "    writable_fields: [order_id, amount]\n",
        "    writable_fields: [order_id, amount]\n    budgets: {statement_timeout_ms: null}\n",
        Direction::Widens,
        "statement_timeout_ms removed: now unlimited (was 2,000) on refunds",
        "statement_timeout_ms set to 2,000 (was unlimited) on refunds",
    );
}

#[test]
fn quota_lowered_narrows() {
    check(
        "calls_per_hour: 600,",
        "calls_per_hour: 100,",
        Direction::Narrows,
        "calls_per_hour lowered from 600 to 100",
        "calls_per_hour raised from 100 to 600",
    );
}

#[test]
fn tenant_exemption_widens() {
    check(
        "    tools: [db_query, db_get]\n    fields: {id: allow, customer_id",
        "    tenant_exempt: \"shared reference data\"\n    tools: [db_query, db_get]\n    fields: {id: allow, customer_id",
        Direction::Widens,
        "orders is no longer scoped by tenant (was by tenant_id; exempt: shared reference data)",
        "orders is now scoped by tenant column tenant_id (was tenant-exempt)",
    );
}

#[test]
fn audit_sink_removed_widens() {
    check(
        "sinks: [postgres, {jsonl: audit/a.jsonl}]",
        "sinks: [postgres]",
        Direction::Widens,
        "audit sink jsonl (audit/a.jsonl) removed",
        "audit sink jsonl (audit/a.jsonl) added",
    );
}

#[test]
fn pattern_removed_widens() {
    check(
        "    deny: [\"*notes*\"]\n",
        "    deny: []\n",
        Direction::Widens,
        "columns matching *notes* on every model are no longer denied by pattern",
        "columns matching *notes* on every model are now denied by pattern",
    );
}

#[test]
fn approvers_change_is_other() {
    check(
        "approvers: [admin]",
        "approvers: [admin, lead]",
        Direction::Other,
        "approvers of rule refund-over-1000 are now admin, lead (were admin)",
        "approvers of rule refund-over-1000 are now admin (were admin, lead)",
    );
}

#[test]
fn markdown_and_json_name_the_verdict() {
    let d = diff(
        &policy(BASE),
        &policy(&edited("email: mask,", "email: allow,")),
    );
    let md = d.to_markdown();
    assert!(md.contains("## Widened: the agent can see or do more than before (1)"));
    assert!(md.contains("- customers.email is now returned unmasked (was masked)"));
    assert!(md.contains("**Capabilities widen: ask for a security review.**"));
    let j = d.to_json();
    assert_eq!(j["widens"], true);
    assert_eq!(j["changes"][0]["direction"], "widens");
    assert_eq!(j["changes"][0]["kind"], "field");
}
