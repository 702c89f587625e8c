//! Policy files end to end: malformed files (every error kind, all at once, at the right line and
//! column), catalog validation against a real shop database, hash stability, lint (the shipped
//! policy is clean; every rule fires on a policy that breaks it) and the shipped regression cases
//! through the built-in gateway.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{
    self, Catalog, FieldAction, LintRule, PolicyErrors, RuleSource, Severity,
};
use preflight_enforcer::ErrorCode;
use preflight_probes::db::testing;

fn shop_dir() -> PathBuf {
    testing::fixtures_dir()
}

fn shop_policy_text() -> String {
    std::fs::read_to_string(shop_dir().join("policy.yaml")).expect("read the shop policy")
}

/// The shop policy with `from` replaced by `to` (which must occur exactly once, so a test never
/// silently checks an unchanged policy).
fn shop_with(from: &str, to: &str) -> String {
    let text = shop_policy_text();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur once in the shop policy"
    );
    text.replacen(from, to, 1)
}

fn errors_of(text: &str, catalog: Option<&Catalog>) -> PolicyErrors {
    match policy::load_str(text, "p.yaml", catalog) {
        Ok(_) => panic!("the policy loaded, but it is invalid:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts that an error at `line:col` mentions every fragment.
fn has_error(e: &PolicyErrors, line: usize, col: usize, fragments: &[&str]) {
    let found = e.iter().any(|err| {
        let text = err.to_string();
        err.span.is_some_and(|s| s.line == line && s.column == col)
            && fragments.iter().all(|f| text.contains(f))
    });
    assert!(
        found,
        "no error at {line}:{col} with {fragments:?} in:\n{e}"
    );
}

// --- Malformed files -----------------------------------------------------------------------------

#[test]
fn every_syntax_problem_is_reported_at_once_with_its_position() {
    let text = "\
version: 2
name: x
extends: production
tenant: {colum: tenant_id, setting: tenant_id}
defaults:
  fields: {default: mask, deny: [\"[unclosed\"]}
  budgets: {max_scan_rows: 0, max_join_depth: 11, statement_timeout_ms: -5, max_rows: {db_qery: 5, default: \"10\"}}
models:
  customers:
    tenant_column: tenant_id
    tools: [db_query, db_updat, db_describe_schema]
    fields: {email: allow, ssn: {action: maks}, notes: [deny]}
    require_reason: yes
    relations:
      orders: {model: orders}
  9lives: {tenant_exempt: cats}
approvals:
  sla: soon
  rules:
    - {name: r1, model: customers, tools: [db_query], when: {field: amount}}
    - {model: customers}
budget_store: {redis: {url: \"redis://user:pw@host\"}}
audit: {sinks: [postgres, jsonl, s3], retention: {hot: 400d, warm: 365d, cold: 7y}}
deployment: {instances: 0}
colour: blue
";
    let e = errors_of(text, None);
    has_error(
        &e,
        1,
        10,
        &["version", "unsupported policy format version 2"],
    );
    has_error(&e, 3, 10, &["extends", "`production`"]);
    has_error(&e, 4, 10, &["tenant.colum", "did you mean `column`?"]);
    has_error(&e, 4, 37, &["tenant.setting", "not a custom setting name"]);
    has_error(
        &e,
        6,
        21,
        &[
            "defaults.fields.default",
            "expected one of `allow` or `deny`",
        ],
    );
    has_error(&e, 6, 34, &["not a valid glob pattern"]);
    has_error(&e, 7, 28, &["max_scan_rows", "positive integer"]);
    has_error(&e, 7, 47, &["max_join_depth", "hard limit of 10"]);
    has_error(&e, 7, 73, &["statement_timeout_ms", "found -5"]);
    has_error(&e, 7, 88, &["max_rows.db_qery", "did you mean `db_query`?"]);
    has_error(&e, 7, 109, &["max_rows.default", "remove the quotes"]);
    has_error(
        &e,
        11,
        23,
        &["unknown tool `db_updat`", "did you mean `db_update`?"],
    );
    has_error(
        &e,
        11,
        33,
        &["`db_describe_schema` is not a per-model tool"],
    );
    has_error(&e, 12, 42, &["fields.ssn.action", "`maks`"]);
    has_error(&e, 12, 56, &["fields.notes", "found a list"]);
    has_error(
        &e,
        13,
        21,
        &["require_reason", "expected true or false, found `yes`"],
    );
    has_error(&e, 15, 7, &["relations.orders", "missing `foreign_key`"]);
    has_error(&e, 15, 7, &["relations.orders", "missing `kind`"]);
    has_error(&e, 16, 3, &["model name `9lives`"]);
    has_error(&e, 18, 8, &["approvals.sla", "expected a duration"]);
    has_error(&e, 20, 44, &["`db_query` is not a write tool"]);
    has_error(&e, 20, 61, &["missing `greater_than`"]);
    has_error(&e, 21, 7, &["missing `name`"]);
    has_error(&e, 22, 24, &["url_env"]);
    has_error(&e, 23, 27, &["a JSONL sink needs a file"]);
    has_error(&e, 23, 34, &["`s3`"]);
    has_error(&e, 23, 50, &["tiers are ages and must not decrease"]);
    has_error(&e, 24, 25, &["deployment.instances", "positive integer"]);
    has_error(&e, 25, 1, &["unknown key `colour`"]);
    // Every line of the display is rustc-style.
    for line in e.to_string().lines() {
        assert!(
            line.starts_with("p.yaml:") && line.contains(": error: "),
            "{line}"
        );
    }
}

#[test]
fn yaml_errors_and_missing_keys() {
    let e = errors_of(
        "version: 1\nname: x\nname: y\nextends: prod\nmodels: {}\n",
        None,
    );
    has_error(&e, 3, 1, &["duplicate key `name`", "line 2"]);
    let e = errors_of("version: 1\nmodels: [\n", None);
    assert!(e.to_string().contains("invalid YAML"), "{e}");
    let e = errors_of("- a\n- b\n", None);
    assert!(e.to_string().contains("must be a mapping"), "{e}");
    let e = errors_of("base: &b {x: 1}\nother: *b\n", None);
    assert!(
        e.to_string()
            .contains("anchors and aliases are not supported"),
        "{e}"
    );
    let e = errors_of("{}\n", None);
    for want in [
        "missing `version: 1`",
        "missing `name`",
        "missing `extends`",
    ] {
        assert!(e.to_string().contains(want), "{want} missing in:\n{e}");
    }
    let e = policy::load("/nonexistent/policy.yaml", None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/policy.yaml: error: cannot read the policy file"),
        "{e}"
    );
}

#[test]
fn contradictions_are_errors() {
    // A denied field that is also writable, the tenant column and the primary key as writable.
    let text = shop_with(
        "    writable_fields: [name, email, phone]",
        "    writable_fields: [name, ssn, tenant_id, id, deleted_at]",
    );
    let e = errors_of(&text, None);
    let line = text
        .lines()
        .position(|l| l.contains("writable_fields: [name, ssn"))
        .unwrap()
        + 1;
    has_error(
        &e,
        line,
        29,
        &["`ssn` is both writable and denied", "fields.ssn"],
    );
    has_error(&e, line, 34, &["tenant column", "never writable"]);
    has_error(&e, line, 45, &["primary key"]);
    has_error(&e, line, 49, &["soft-delete column"]);

    // Both a tenant column and an exemption; neither (with no file default).
    let text = shop_with(
        "    tenant_exempt: \"global reference data",
        "    tenant_column: tenant_id\n    tenant_exempt: \"global reference data",
    );
    assert!(errors_of(&text, None)
        .to_string()
        .contains("either `tenant_column` or `tenant_exempt`, not both"));
    let text = shop_with("  column: tenant_id\n", "");
    let e = errors_of(&text, None);
    assert!(
        e.to_string().contains("models.users: no tenant scope"),
        "{e}"
    );

    // Writes that can do nothing, and writable fields without a write tool.
    let text = shop_with("    tools: [db_query, db_get, db_aggregate, db_update]\n    fields:\n      id: allow\n      email: mask", "    tools: [db_query, db_get]\n    fields:\n      id: allow\n      email: mask");
    assert!(errors_of(&text, None)
        .to_string()
        .contains("writable_fields has no effect"));
    let text = shop_with("    writable_fields: [status]\n", "");
    assert!(errors_of(&text, None)
        .to_string()
        .contains("`db_update` can change no field"));

    // Approval rules that can never apply.
    let text = shop_with("      fields: [role]", "      fields: [email]");
    assert!(errors_of(&text, None)
        .to_string()
        .contains("`email` is not in `models.users.writable_fields`"));
    let text = shop_with("      tools: [db_create]\n", "      tools: [db_delete]\n");
    assert!(errors_of(&text, None)
        .to_string()
        .contains("model `refunds` does not allow `db_delete`"));
    let text = shop_with("  approvers: [admin]\n", "");
    assert!(errors_of(&text, None).to_string().contains("no approvers"));

    // A relation to a model the policy does not have.
    let text = shop_with(
        "      items: {model: order_items,",
        "      items: {model: order_item,",
    );
    assert!(errors_of(&text, None)
        .to_string()
        .contains("unknown model `order_item` (did you mean `order_items`?)"));

    // The same pattern under two actions at one level.
    let text = shop_with(
        "    deny: [\"*notes*\", \"*body*\", \"*comment*\"]",
        "    deny: [\"*notes*\", \"*body*\", \"*comment*\"]\n    mask: [\"*notes*\"]",
    );
    assert!(errors_of(&text, None)
        .to_string()
        .contains("listed under both `deny` and `mask`"));
}

// --- The hash ------------------------------------------------------------------------------------

#[test]
fn the_hash_ignores_form_and_follows_meaning() {
    let base = policy::load_str(&shop_policy_text(), "a.yaml", None)
        .unwrap()
        .hash;
    assert_eq!(base.len(), 64);
    assert!(base
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    // Comments, blank lines, key order, flow vs block style, quoting, the path: same hash.
    let reformatted = "\
# a different file, the same policy
name: shop-support-agent
version: 1

extends: \"prod\"
budget_store: memory
deployment: {instances: 1}
audit:
  retention: {cold: 7y, warm: 365d, hot: 90d}
  sinks: [{jsonl: audit/shop-audit.jsonl}, postgres]
quotas: {rows_per_hour: 20000, calls_per_hour: 600}
";
    let text = shop_policy_text();
    let mut body: Vec<&str> = Vec::new();
    let mut skip = false;
    for line in text.lines() {
        let top = !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty();
        if top {
            skip = [
                "version:",
                "name:",
                "extends:",
                "budget_store:",
                "deployment:",
                "audit:",
                "quotas:",
            ]
            .iter()
            .any(|k| line.starts_with(k));
        }
        if !skip && !line.trim_start().starts_with('#') {
            body.push(line);
        }
    }
    // Approval rules in another order.
    let body = body.join("\n");
    let rules_at = body.find("    - name: refund-over-1000").unwrap();
    let (head, rules) = body.split_at(rules_at);
    // The rules end at the next top-level key (quotas, rate_limits, ...).
    let rules_end = rules
        .match_indices('\n')
        .map(|(i, _)| i)
        .find(|&i| rules[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(rules.len());
    let (rules, tail) = rules.split_at(rules_end);
    let mut blocks: Vec<String> = rules
        .split("    - name: ")
        .filter(|b| !b.trim().is_empty())
        .map(|b| format!("    - name: {b}"))
        .collect();
    blocks.reverse();
    let reordered = format!("{reformatted}{head}{}\n{tail}", blocks.join("\n"));
    let same = policy::load_str(&reordered, "b/other.yaml", None)
        .unwrap_or_else(|e| panic!("{e}\n{reordered}"));
    assert_eq!(
        same.hash, base,
        "reformatting changed the hash:\n{reordered}"
    );

    // Meaning changes: an action, a budget, a reason, a tool, the preset.
    for (from, to) in [
        ("      email: mask\n      phone: mask", "      email: hash\n      phone: mask"),
        ("  dry_run_required_above: 10", "  dry_run_required_above: 11"),
        ("no support task needs a national id", "no support task needs a national ID"),
        ("    tools: [db_query, db_get]\n    fields:\n      id: allow\n      name: allow\n      tracking", "    tools: [db_query]\n    fields:\n      id: allow\n      name: allow\n      tracking"),
        ("extends: prod", "extends: dev"),
    ] {
        let changed = policy::load_str(&shop_with(from, to), "a.yaml", None).unwrap();
        assert_ne!(changed.hash, base, "changing {from:?} to {to:?} kept the hash");
    }
}

// --- Lint ----------------------------------------------------------------------------------------

fn rules_of(text: &str, catalog: Option<&Catalog>) -> BTreeSet<LintRule> {
    let p = policy::load_str(text, "p.yaml", catalog).unwrap_or_else(|e| panic!("{e}"));
    policy::lint(&p, catalog)
        .into_iter()
        .map(|f| f.rule)
        .collect()
}

#[test]
fn the_shipped_policy_lints_clean_without_a_catalog() {
    let p = policy::load(shop_dir().join("policy.yaml"), None).unwrap();
    let findings = policy::lint(&p, None);
    assert!(
        findings.is_empty(),
        "{}",
        policy::render_text("policy.yaml", &findings)
    );
}

/// Every rule, and a change to the shop policy that must make it fire (and only what is expected).
#[test]
fn every_lint_rule_fires_on_a_policy_that_breaks_it() {
    let cases: Vec<(LintRule, String)> = vec![
        (
            LintRule::RelationTenant,
            shop_with(
                "global reference data shared by every tenant: carrier names and public tracking URL templates, no customer data",
                "n/a",
            ),
        ),
        (
            LintRule::SecretWildcards,
            shop_with("      # card_token: denied by the preset's *token* pattern.", "      card_token: mask"),
        ),
        (LintRule::PiiMasked, shop_with("      email: mask\n      full_name: mask", "      email: allow\n      full_name: mask")),
        (LintRule::FreeText, shop_with("      subject:\n        action: deny", "      subject:\n        action: mask")),
        (LintRule::ScanBudget, shop_with("    tools: [db_query, db_get, db_aggregate, db_update]\n    fields:\n      id: allow\n      customer_id", "    budgets: {max_scan_rows: null}\n    tools: [db_query, db_get, db_aggregate, db_update]\n    fields:\n      id: allow\n      customer_id")),
        (LintRule::StatementTimeout, shop_with("    deny: [\"*notes*\", \"*body*\", \"*comment*\"]", "    deny: [\"*notes*\", \"*body*\", \"*comment*\"]\n  budgets: {statement_timeout_ms: null}")),
        (LintRule::MaxRows, shop_with("    deny: [\"*notes*\", \"*body*\", \"*comment*\"]", "    deny: [\"*notes*\", \"*body*\", \"*comment*\"]\n  budgets: {max_rows: null}")),
        (LintRule::JoinDepth, shop_with("    deny: [\"*notes*\", \"*body*\", \"*comment*\"]", "    deny: [\"*notes*\", \"*body*\", \"*comment*\"]\n  budgets: {max_join_depth: 4}")),
        (LintRule::TenantQuotas, shop_with("  calls_per_hour: 600\n  rows_per_hour: 20000", "  calls_per_hour: null\n  rows_per_hour: null")),
        (LintRule::SharedBudgetStore, shop_with("  instances: 1 ", "  instances: 3 ")),
        (LintRule::WriteReason, shop_with("    tools: [db_query, db_get, db_aggregate, db_create]", "    require_reason: false\n    tools: [db_query, db_get, db_aggregate, db_create]")),
        (LintRule::ApprovalGate, shop_with("      tools: [db_update, db_bulk_update]\n", "      tools: [db_update]\n")),
        (LintRule::ApprovalSla, shop_with("  sla: 30m ", "  sla: 3d ")),
        (LintRule::WriteRate, shop_with("    deny: [\"*notes*\", \"*body*\", \"*comment*\"]", "    deny: [\"*notes*\", \"*body*\", \"*comment*\"]\n  budgets: {max_writes_per_minute: 50}")),
        (LintRule::AuditSink, shop_with("  sinks:\n    - postgres                         # preflight_audit.audit_log, hash-chained, same transaction\n    - jsonl: audit/shop-audit.jsonl    # the long-term, hash-chained copy\n", "  sinks: []\n")),
        (LintRule::AuditRetention, shop_with("  retention: {hot: 90d, warm: 365d, cold: 7y}\n", "")),
        (LintRule::Explained, shop_with("      email: mask\n      phone: mask", "      email: {action: hash}\n      phone: mask")),
        // ISO-6: writes on the carriers every tenant shares.
        (LintRule::AdminSeparation, shop_with("    tools: [db_query, db_get]\n    fields:\n      id: allow\n      name: allow\n      tracking", "    tools: [db_query, db_get, db_update]\n    writable_fields: [name]\n    fields:\n      id: allow\n      name: allow\n      tracking")),
        // ISO-6: role changes no approval gates.
        (LintRule::AdminSeparation, shop_with("    - name: user-role-change\n      model: users\n      tools: [db_update]\n      fields: [role]\n", "")),
    ];
    let mut covered: BTreeSet<LintRule> = BTreeSet::new();
    for (rule, text) in &cases {
        let fired = rules_of(text, None);
        assert!(
            fired.contains(rule),
            "{} did not fire; fired: {fired:?}",
            rule.code()
        );
        covered.insert(*rule);
    }
    // OPS-1: a development policy (the dev preset also brings other findings).
    let dev = rules_of(&shop_with("extends: prod", "extends: dev"), None);
    for r in [
        LintRule::ProdPreset,
        LintRule::WriteReason,
        LintRule::WriteRate,
        LintRule::Explained,
    ] {
        assert!(
            dev.contains(&r),
            "{} did not fire on the dev preset: {dev:?}",
            r.code()
        );
    }
    covered.insert(LintRule::ProdPreset);
    // ISO-2 needs the catalog: see `lint_with_the_catalog`.
    covered.insert(LintRule::TenantScope);
    let all: BTreeSet<LintRule> = LintRule::ALL.into_iter().collect();
    assert_eq!(covered, all, "a lint rule has no test that makes it fire");
}

/// ISO-6: an admin policy beside the agent's is found by its name, and fails lint when it shares
/// the agent's audit channel or configures none; with a channel of its own it passes.
#[test]
fn an_admin_policy_beside_the_agents_must_have_its_own_audit_channel() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("policy.yaml");
    std::fs::write(&agent, shop_policy_text()).unwrap();
    let admin_rules = |admin_text: Option<&str>| -> Vec<String> {
        let admin = dir.path().join("admin-policy.yaml");
        match admin_text {
            Some(t) => std::fs::write(&admin, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(&admin);
            }
        }
        let p = policy::load(&agent, None).unwrap();
        policy::lint(&p, None)
            .into_iter()
            .filter(|f| f.rule == LintRule::AdminSeparation)
            .map(|f| f.message)
            .collect()
    };
    assert!(
        admin_rules(None).is_empty(),
        "no admin policy: nothing to say"
    );
    assert_eq!(
        policy::admin_policy_beside(&agent),
        None,
        "the agent's own file is not its admin policy"
    );

    // The shop policy copied as the admin one: the same postgres table and JSONL file.
    let shared = admin_rules(Some(&shop_with(
        "name: shop-support-agent",
        "name: shop-admin",
    )));
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert!(
        shared[0].contains("admin-policy.yaml")
            && shared[0].contains("preflight_audit.audit_log")
            && shared[0].contains("audit/shop-audit.jsonl"),
        "{shared:?}"
    );

    let sinks = "  sinks:\n    - postgres                         # preflight_audit.audit_log, hash-chained, same transaction\n    - jsonl: audit/shop-audit.jsonl    # the long-term, hash-chained copy\n";
    let none = admin_rules(Some(&shop_with(sinks, "  sinks: []\n")));
    assert!(
        none.len() == 1 && none[0].contains("no audit sink"),
        "{none:?}"
    );

    let broken = admin_rules(Some("version: 1\nname: admin\nextends: nope\n"));
    assert!(
        broken.len() == 1 && broken[0].contains("does not load"),
        "{broken:?}"
    );

    let own = admin_rules(Some(&shop_with(
        sinks,
        "  sinks:\n    - jsonl: audit/shop-admin-audit.jsonl\n",
    )));
    assert!(own.is_empty(), "{own:?}");
}

#[test]
fn lint_findings_cite_lines_and_render() {
    let text = shop_with(
        "      email: mask\n      full_name: mask",
        "      email: allow\n      full_name: mask",
    );
    let p = policy::load_str(&text, "p.yaml", None).unwrap();
    let findings = policy::lint(&p, None);
    let f = findings
        .iter()
        .find(|f| f.rule == LintRule::PiiMasked)
        .unwrap();
    let line = text
        .lines()
        .position(|l| l == "      email: allow")
        .unwrap()
        + 1;
    assert_eq!(f.span().map(|s| (s.line, s.column)), Some((line, 7)));
    assert_eq!(f.checklist(), &["RED-2"]);
    assert_eq!(f.rule_code(), "lint.pii_masked");
    assert_eq!(f.severity(), Severity::Error);
    assert!(f.message().contains("users.email"));
    let rendered = policy::render_text("p.yaml", &findings);
    assert!(
        rendered.contains(&format!("p.yaml:{line}:7: error[lint.pii_masked]:")),
        "{rendered}"
    );
    let json = policy::lint_json("p.yaml", &p.hash, false, &findings);
    assert_eq!(json["errors"], 1);
    assert_eq!(json["findings"][0]["checklist"][0], "RED-2");
    let table = policy::render_table(&findings);
    assert!(
        table.contains("lint.pii_masked") && table.contains("RED-2"),
        "{table}"
    );
}

// --- Against the real shop database ---------------------------------------------------------------

#[tokio::test]
async fn catalog_checks_and_resolution_on_the_shop_database() {
    let db = testing::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let catalog = Catalog::read(&owner).await.expect("read the catalog");

    // The catalog itself.
    let orders = catalog.table("public", "orders").expect("orders");
    assert_eq!(orders.primary_key, vec!["id"]);
    assert!(orders.indexed_columns.contains("customer_id"));
    assert!(orders
        .foreign_key_on("customer_id")
        .is_some_and(|fk| fk.ref_table == "customers"));
    assert!(catalog.table("public", "customers").unwrap().rls_forced);
    assert!(catalog.table("preflight_meta", "canaries").is_some());
    assert!(catalog.is_multi_tenant(orders));
    assert!(!catalog.is_multi_tenant(catalog.table("public", "carriers").unwrap()));

    // The shipped policy loads, resolves every column, hashes as without a catalog, lints clean.
    let p = policy::load(shop_dir().join("policy.yaml"), Some(&catalog))
        .unwrap_or_else(|e| panic!("{e}"));
    let bare = policy::load(shop_dir().join("policy.yaml"), None).unwrap();
    assert_eq!(p.hash, bare.hash);
    let customers = p.model("customers").unwrap();
    let col = |m: &str, c: &str| {
        p.model(m)
            .unwrap()
            .column(c)
            .unwrap_or_else(|| panic!("{m}.{c}"))
            .clone()
    };
    assert_eq!(customers.columns.len(), 13);
    assert_eq!(col("customers", "api_key").action, FieldAction::Deny);
    assert!(
        matches!(col("customers", "api_key").source, RuleSource::Pattern { ref pattern, .. } if pattern == "*api_key*")
    );
    assert!(
        matches!(col("customers", "notes").source, RuleSource::Pattern { ref pattern, .. } if pattern == "*notes*")
    );
    assert_eq!(col("customers", "email").action, FieldAction::Mask);
    assert_eq!(col("customers", "tenant_id").action, FieldAction::Deny);
    assert_eq!(col("customers", "tenant_id").source, RuleSource::Default);
    assert_eq!(col("refunds", "reason").action, FieldAction::Hash);
    assert_eq!(
        col("payment_methods", "card_token").action,
        FieldAction::Deny
    );
    assert!(col("orders", "created_at").indexed || col("orders", "customer_id").indexed);
    assert_eq!(col("orders", "total").pg_type, "numeric(12,2)");
    let findings = policy::lint(&p, Some(&catalog));
    assert!(
        findings.is_empty(),
        "{}",
        policy::render_text("policy.yaml", &findings)
    );

    // Names checked against the live catalog, every problem at once.
    let text = shop_policy_text()
        .replacen("      date_of_birth:\n", "      birth_date:\n", 1)
        .replacen("  carriers:\n", "  carriers:\n    table: carrier\n", 1)
        .replacen("    soft_delete: deleted_at\n    fields:\n      id: allow\n      name: mask", "    soft_delete: created_at\n    fields:\n      id: allow\n      name: mask", 1)
        .replacen("      customer: {model: customers, foreign_key: customer_id, kind: belongs_to}\n      carrier:", "      customer: {model: customers, foreign_key: customer_id, kind: has_many}\n      carrier:", 1)
        .replacen("  tenants:\n    # The tenants registry: each tenant sees only its own row (its id is the tenant id).\n    tenant_column: id\n", "  tenants:\n    tenant_column: tenant\n    primary_key: name\n", 1)
        .replacen("  payment_methods:\n", "  payment_methods:\n    deny: [\"*cvv*\"]\n", 1);
    let e = errors_of(&text, Some(&catalog));
    let s = e.to_string();
    for want in [
        "field `birth_date` is not a column of `public.customers` (did you mean `date_of_birth`?)",
        "table `public.carrier` does not exist in the database (did you mean `carriers`?)",
        "`created_at` (timestamp with time zone, not null) cannot mark soft deletes",
        "a `has_many` relation's key is a column of `public.customers`, which has no `customer_id`; `public.orders` has it: is the kind `belongs_to`?",
        "tenant column `tenant` is not a column of `public.tenants`",
        "`name` is not unique in `public.tenants`",
        "pattern `*cvv*` matches no column of `public.payment_methods`",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    assert_eq!(e.len(), 7, "{s}");

    // ISO-2 with the catalog: exempting a table that holds tenant data.
    let text = shop_policy_text().replacen(
        "  order_items:\n",
        "  order_items:\n    tenant_exempt: \"items are reached through their orders, which are scoped\"\n",
        1,
    );
    let p = policy::load_str(&text, "p.yaml", Some(&catalog)).unwrap_or_else(|e| panic!("{e}"));
    let findings = policy::lint(&p, Some(&catalog));
    let iso2: Vec<_> = findings
        .iter()
        .filter(|f| f.rule == LintRule::TenantScope)
        .collect();
    assert_eq!(
        iso2.len(),
        1,
        "{}",
        policy::render_text("p.yaml", &findings)
    );
    assert!(
        iso2[0].message().contains("has a `tenant_id` column"),
        "{}",
        iso2[0].message()
    );
    // ... and ISO-4 for the relations that join it.
    assert!(findings
        .iter()
        .any(|f| f.rule == LintRule::RelationTenant && f.message().contains("orders.items")));
    // Without the catalog neither can be known.
    let bare = policy::load_str(&text, "p.yaml", None).unwrap();
    assert!(!policy::lint(&bare, None)
        .iter()
        .any(|f| f.rule == LintRule::TenantScope));

    // RED-3 with the catalog: a free-text column that only the default would deny is fine, one
    // that a rule lets through is not.
    let text = shop_with(
        "      # body: denied as free text above.",
        "      body: allow",
    );
    assert!(rules_of(&text, Some(&catalog)).contains(&LintRule::FreeText));
}

#[tokio::test]
async fn the_shipped_cases_pass_on_the_builtin_gateway() {
    let db = testing::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let catalog = Catalog::read(&owner).await.expect("read the catalog");
    let p = Arc::new(
        policy::load(shop_dir().join("policy.yaml"), Some(&catalog))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let cases =
        policy::load_cases(shop_dir().join("policy-cases.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.cases.len() >= 60, "only {} cases", cases.cases.len());
    let codes: BTreeSet<_> = cases
        .cases
        .iter()
        .filter_map(|c| match c.expect {
            policy::Expectation::Deny { code } => Some(code),
            policy::Expectation::Allow => None,
        })
        .collect();
    for code in [
        ErrorCode::ModelNotAllowed,
        ErrorCode::FieldDenied,
        ErrorCode::RelationNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::RowBudgetExceeded,
        ErrorCode::ScanBudgetExceeded,
        ErrorCode::JoinDepthExceeded,
        ErrorCode::ValidationError,
        ErrorCode::ReasonRequired,
        ErrorCode::FieldNotWritable,
        ErrorCode::ApprovalRequired,
    ] {
        assert!(codes.contains(&code), "no case expects {code}");
    }

    let gateway = BuiltinGateway::connect(p.clone(), db.agent_url(), BuiltinOptions::default())
        .await
        .expect("gateway connects");
    let report = policy::run_cases(&gateway, &cases).await;
    // Every case is judged, the write cases included: a layer whose write tools are missing
    // fails them, it does not get them dropped.
    assert_eq!(report.outcomes.len(), cases.cases.len(), "every case runs");
    let write_tools = [
        "db_create",
        "db_update",
        "db_delete",
        "db_bulk_update",
        "db_dry_run",
    ];
    let write_cases = report
        .outcomes
        .iter()
        .filter(|o| write_tools.contains(&o.tool.as_str()))
        .count();
    assert!(write_cases >= 25, "only {write_cases} write cases ran");
    let mut failures = Vec::new();
    for o in &report.outcomes {
        if !o.passed {
            failures.push(format!(
                "line {}: {}: expected {}, got {} ({})",
                o.line, o.name, o.expected, o.actual, o.detail
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        report.passed() >= 60,
        "only {} cases passed",
        report.passed()
    );

    // Coverage: most rules are exercised, and what is not is reported by key.
    let coverage = policy::coverage(&p, &cases);
    let unexercised: Vec<String> = coverage.unexercised().map(|i| i.key.clone()).collect();
    for key in [
        "models.customers",
        "models.customers.fields.ssn",
        "models.orders.relations.items",
        "approvals.rules.refund-over-1000",
        "budgets.max_scan_rows",
    ] {
        assert!(
            !unexercised.contains(&key.to_string()),
            "{key} is not exercised"
        );
    }
    assert!(unexercised.contains(&"budgets.statement_timeout_ms".to_string()));
}

/// A case that expects the wrong outcome fails, with the reason.
#[tokio::test]
async fn a_wrong_expectation_is_a_failure() {
    let db = testing::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let catalog = Catalog::read(&owner).await.expect("read the catalog");
    let p = Arc::new(policy::load(shop_dir().join("policy.yaml"), Some(&catalog)).unwrap());
    let cases = policy::load_cases_str(
        "
version: 1
cases:
  - name: claims another tenant's customer is visible
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 9}
    expect: allow
  - name: claims secrets are readable
    principal: {tenant: acme, user: u}
    tool: db_query
    arguments: {model: customers, select: [api_key]}
    expect: allow
  - name: claims the wrong code
    principal: {tenant: acme, user: u}
    tool: db_query
    arguments: {model: orders}
    expect: {deny: row_budget_exceeded}
  - name: claims a row count
    principal: {tenant: acme, user: u}
    tool: db_query
    arguments: {model: products}
    expect: allow
    expect_rows: 5
    expect_absent: [price]
",
        "wrong.yaml",
    )
    .unwrap();
    let gateway = BuiltinGateway::connect(p, db.agent_url(), BuiltinOptions::default())
        .await
        .unwrap();
    let report = policy::run_cases(&gateway, &cases).await;
    assert_eq!(
        report.failed(),
        4,
        "{}",
        policy::render_cases_table(&report)
    );
    let detail = |i: usize| report.outcomes[i].detail.clone();
    assert!(detail(0).contains("denied with not_found"), "{}", detail(0));
    assert!(
        detail(1).contains("denied with field_denied"),
        "{}",
        detail(1)
    );
    assert!(
        detail(2).contains("expected row_budget_exceeded, got scan_budget_exceeded"),
        "{}",
        detail(2)
    );
    assert!(
        detail(3).contains("expected 5 rows, got 6") && detail(3).contains("has `price`"),
        "{}",
        detail(3)
    );
}
