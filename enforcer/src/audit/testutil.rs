//! Test support for the audit unit tests: a small hand-built policy.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::*;

fn col(name: &str, action: FieldAction) -> ColumnPolicy {
    ColumnPolicy {
        name: name.into(),
        pg_type: "text".into(),
        nullable: true,
        action,
        source: RuleSource::Default,
        reason: None,
        indexed: false,
    }
}

fn model(name: &str, columns: Vec<ColumnPolicy>) -> ModelPolicy {
    ModelPolicy {
        name: name.into(),
        schema: "public".into(),
        table: name.into(),
        primary_key: "id".into(),
        tenant_column: Some("tenant_id".into()),
        tenant_exempt_reason: None,
        columns,
        relations: BTreeMap::new(),
        tools: BTreeSet::new(),
        writable_fields: BTreeSet::new(),
        require_reason: true,
        soft_delete_column: None,
        budgets: Budgets {
            max_rows: BTreeMap::new(),
            max_scan_rows: None,
            statement_timeout_ms: None,
            max_join_depth: 2,
            max_writes_per_minute: None,
            max_affected_rows: None,
        },
        span: Span::default(),
    }
}

/// customers (name/phone/email masked, ssn denied) and orders (shipping_address denied).
pub fn tiny_policy() -> Policy {
    use FieldAction::*;
    let mut customers = model(
        "customers",
        vec![
            col("id", Allow),
            col("tenant_id", Allow),
            col("name", Mask),
            col("email", Mask),
            col("phone", Mask),
            col("ssn", Deny),
            col("status", Allow),
        ],
    );
    customers.relations.insert(
        "orders".into(),
        Relation {
            name: "orders".into(),
            target: "orders".into(),
            kind: RelationKind::HasMany,
            foreign_key: "customer_id".into(),
            span: Span::default(),
        },
    );
    let orders = model(
        "orders",
        vec![
            col("id", Allow),
            col("tenant_id", Allow),
            col("status", Allow),
            col("shipping_address", Deny),
        ],
    );
    Policy {
        name: "tiny".into(),
        extends: Preset::Prod,
        path: "tiny.yaml".into(),
        tenant_setting: "app.tenant_id".into(),
        models: BTreeMap::from([("customers".into(), customers), ("orders".into(), orders)]),
        approvals: vec![],
        writes: WritePolicy {
            dry_run_required_above: 10,
        },
        quotas: Quotas {
            calls_per_hour: None,
            rows_per_hour: None,
        },
        budget_store: BudgetStoreConfig::Memory,
        audit: AuditPolicy {
            sinks: vec![],
            retention: None,
            span: Span::default(),
        },
        spans: BTreeMap::new(),
        deployment: Default::default(),
        rate_limits: None,
        field_rules: FieldRules {
            default_action: FieldAction::Deny,
            global: Default::default(),
            models: Default::default(),
        },
        hash: "tinyhash".into(),
    }
}
