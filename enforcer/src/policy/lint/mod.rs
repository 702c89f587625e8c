//! Policy lint: checks a validated [`Policy`] against the production checklist and returns
//! [`LintFinding`]s that cite checklist item ids.
//!
//! Loading already rejects what is *malformed* (unknown keys, contradictions). Lint judges what is
//! well-formed but *unsafe or unexplained*: a tenant-exempt table that holds tenant data, a secret
//! column that some rule lets through, a budget switched off, writes without reasons. With a
//! catalog it checks every resolved column; without one it checks the rules as written (and the
//! caller should say that the catalog was not consulted).
//!
//! Each rule has a stable code (`lint.tenant_scope`, ...), which reports, SARIF rule ids and the
//! docs anchors in docs/policy.md use; a test keeps them unique.

mod admin;
mod render;
mod rules;

use std::collections::BTreeSet;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::catalog::{is_text_type, Catalog};
use super::decl::{FIELD_WRITE_TOOLS, WRITE_TOOLS};
use super::load::{action_word, resolve_field};
use super::model::*;

pub use admin::{admin_policy_beside, ADMIN_FIELD_PATTERNS};
pub use render::{render_table, render_text, to_json};
pub use rules::*;

fn globs(patterns: &[&str]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // The lists above are constants; a pattern that did not compile would only shrink a set.
        if let Ok(g) = Glob::new(p) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

/// Column-name classifiers for the lint rules.
struct Classes {
    secret: GlobSet,
    pii: GlobSet,
    free_text: GlobSet,
    high_stakes: GlobSet,
}

impl Classes {
    fn new() -> Self {
        Self {
            secret: globs(SECRET_WILDCARDS),
            pii: globs(PII_PATTERNS),
            free_text: globs(FREE_TEXT_PATTERNS),
            high_stakes: globs(HIGH_STAKES_PATTERNS),
        }
    }
}

/// A reason too thin to explain anything.
fn placeholder_reason(reason: &str) -> bool {
    let r = reason.trim().to_lowercase();
    r.chars().count() < 15
        || ["todo", "tbd", "fixme", "xxx"]
            .iter()
            .any(|p| r.starts_with(p))
        || [
            "n/a",
            "none",
            "global",
            "not needed",
            "no reason",
            "not applicable",
        ]
        .contains(&r.as_str())
}

/// A column as lint sees it: name, action, the rule behind it, its reason, and whether it is a
/// text column (`None` without a catalog).
type ColumnView = (
    String,
    FieldAction,
    RuleSource,
    Option<String>,
    Option<bool>,
);

struct Linter<'a> {
    p: &'a Policy,
    catalog: Option<&'a Catalog>,
    classes: Classes,
    out: Vec<LintFinding>,
}

impl Linter<'_> {
    fn push(
        &mut self,
        rule: LintRule,
        severity: Severity,
        path: &str,
        model: Option<&str>,
        message: String,
    ) {
        let span = if path.is_empty() {
            None
        } else {
            self.p.span_of(path)
        };
        self.out.push(LintFinding {
            rule,
            severity,
            message,
            key_path: path.to_string(),
            span,
            model: model.map(str::to_string),
        });
    }

    /// The columns of a model with their actions: resolved ones with a catalog, else the columns
    /// the policy names explicitly (resolved by name).
    fn columns(&self, m: &ModelPolicy) -> Vec<ColumnView> {
        if !m.columns.is_empty() {
            return m
                .columns
                .iter()
                .map(|c| {
                    let is_text = Some(is_text_type(&c.pg_type));
                    (
                        c.name.clone(),
                        c.action,
                        c.source.clone(),
                        c.reason.clone(),
                        is_text,
                    )
                })
                .collect();
        }
        let Some(rules) = self.p.field_rules.models.get(&m.name) else {
            return Vec::new();
        };
        rules
            .explicit
            .iter()
            .map(|(name, e)| {
                (
                    name.clone(),
                    e.action,
                    RuleSource::Explicit { span: e.span },
                    e.reason.clone(),
                    None,
                )
            })
            .collect()
    }

    fn has_writes(m: &ModelPolicy) -> bool {
        m.tools.iter().any(|t| WRITE_TOOLS.contains(&t.as_str()))
    }

    fn has_reads(m: &ModelPolicy) -> bool {
        m.tools
            .iter()
            .any(|t| matches!(t.as_str(), "db_query" | "db_get" | "db_aggregate"))
    }

    fn tenancy(&mut self) {
        let p = self.p;
        for m in p.models.values() {
            let mp = format!("models.{}", m.name);
            if let Some(reason) = &m.tenant_exempt_reason {
                if let Some((catalog, t)) = self
                    .catalog
                    .and_then(|c| c.table(&m.schema, &m.table).map(|t| (c, t)))
                {
                    if catalog.is_multi_tenant(t) {
                        let why = match t.tenant_looking_column() {
                            Some(c) => format!("it has a `{}` column", c.name),
                            None => {
                                let refs: Vec<String> = t
                                    .foreign_keys
                                    .iter()
                                    .filter(|fk| {
                                        catalog
                                            .table(&fk.ref_schema, &fk.ref_table)
                                            .is_some_and(|r| r.tenant_looking_column().is_some())
                                    })
                                    .map(|fk| {
                                        format!("`{}` → `{}`", fk.columns.join(", "), fk.ref_table)
                                    })
                                    .collect();
                                format!("its rows belong to tenant rows ({})", refs.join(", "))
                            }
                        };
                        self.push(
                            LintRule::TenantScope,
                            Severity::Error,
                            &format!("{mp}.tenant_exempt"),
                            Some(&m.name),
                            format!(
                                "model `{}` is exempt from tenant scope, but `{}` holds tenant data: {why}; scope it with `tenant_column`",
                                m.name,
                                t.qualified_name()
                            ),
                        );
                    }
                }
                if placeholder_reason(reason) {
                    self.push(
                        LintRule::Explained,
                        Severity::Warning,
                        &format!("{mp}.tenant_exempt"),
                        Some(&m.name),
                        format!(
                            "the tenant exemption of `{}` gives no real reason (\"{reason}\")",
                            m.name
                        ),
                    );
                }
            }
            for r in m.relations.values() {
                let Some(target) = p.models.get(&r.target) else {
                    continue;
                };
                let rp = format!("{mp}.relations.{}", r.name);
                let Some(reason) = &target.tenant_exempt_reason else {
                    continue;
                };
                if placeholder_reason(reason) {
                    self.push(
                        LintRule::RelationTenant,
                        Severity::Error,
                        &rp,
                        Some(&m.name),
                        format!(
                            "relation `{}.{}` joins `{}`, which has no tenant column and no real reason for it (\"{reason}\")",
                            m.name, r.name, target.name
                        ),
                    );
                } else if let Some(c) = self.catalog {
                    if c.table(&target.schema, &target.table)
                        .is_some_and(|t| c.is_multi_tenant(t))
                    {
                        self.push(
                            LintRule::RelationTenant,
                            Severity::Error,
                            &rp,
                            Some(&m.name),
                            format!(
                                "relation `{}.{}` joins `{}`, which is exempt from tenant scope but holds tenant data: included rows would cross tenants",
                                m.name, r.name, target.name
                            ),
                        );
                    }
                }
            }
        }
    }

    fn secrets(&mut self) {
        let p = self.p;
        let missing: Vec<&str> = SECRET_WILDCARDS
            .iter()
            .copied()
            .filter(|w| !p.field_rules.global.deny.contains(*w))
            .collect();
        if !missing.is_empty() {
            self.push(
                LintRule::SecretWildcards,
                Severity::Error,
                "defaults.fields",
                None,
                format!(
                    "global deny patterns lack {}; add them under `defaults.fields.deny` (or extend prod)",
                    missing.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        for m in p.models.values() {
            for (name, action, source, _, _) in self.columns(m) {
                if !self.classes.secret.is_match(&name) || action == FieldAction::Deny {
                    continue;
                }
                let path = rule_path(m, &name, &source);
                self.push(
                    LintRule::SecretWildcards,
                    Severity::Error,
                    &path,
                    Some(&m.name),
                    format!(
                        "`{}.{name}` looks like a secret but is `{}` ({}); secrets must be denied",
                        m.name,
                        action_word(action),
                        describe_source(&source)
                    ),
                );
            }
        }
    }

    fn personal_data(&mut self) {
        let p = self.p;
        let g = &p.field_rules.global;
        for w in ["*email*", "*phone*"] {
            if !g.mask.contains(w) && !g.hash.contains(w) && !g.deny.contains(w) {
                self.push(
                    LintRule::PiiMasked,
                    Severity::Warning,
                    "defaults.fields",
                    None,
                    format!("no global pattern masks `{w}`; columns added later with such names would not be masked"),
                );
            }
        }
        for m in p.models.values() {
            for (name, action, source, reason, _) in self.columns(m) {
                if !self.classes.pii.is_match(&name) || self.classes.secret.is_match(&name) {
                    continue;
                }
                let path = rule_path(m, &name, &source);
                match action {
                    FieldAction::Allow if reason.is_none() => self.push(
                        LintRule::PiiMasked,
                        Severity::Error,
                        &path,
                        Some(&m.name),
                        format!(
                            "`{}.{name}` looks like personal data and is returned raw ({}); mask it, or give a reason",
                            m.name,
                            describe_source(&source)
                        ),
                    ),
                    FieldAction::Deny if reason.is_none() => self.push(
                        LintRule::PiiMasked,
                        Severity::Warning,
                        &path,
                        Some(&m.name),
                        format!(
                            "`{}.{name}` looks like personal data and is denied ({}) without a reason; mask it so the agent can still confirm it, or say why not",
                            m.name,
                            describe_source(&source)
                        ),
                    ),
                    FieldAction::Allow | FieldAction::Deny | FieldAction::Mask | FieldAction::Hash => {}
                }
            }
        }
    }

    fn free_text(&mut self) {
        let p = self.p;
        for m in p.models.values() {
            for (name, action, source, _, is_text) in self.columns(m) {
                if is_text == Some(false) || !self.classes.free_text.is_match(&name) {
                    continue;
                }
                if matches!(action, FieldAction::Allow | FieldAction::Mask) {
                    let path = rule_path(m, &name, &source);
                    self.push(
                        LintRule::FreeText,
                        Severity::Error,
                        &path,
                        Some(&m.name),
                        format!(
                            "`{}.{name}` is free text (it can hold anyone's personal data or instructions to the agent) and is `{}`; deny or hash it",
                            m.name,
                            action_word(action)
                        ),
                    );
                }
            }
        }
    }

    fn budgets(&mut self) {
        let p = self.p;
        for m in p.models.values() {
            let bp = format!("models.{}.budgets", m.name);
            let b = &m.budgets;
            if Self::has_reads(m) && b.max_scan_rows.is_none() {
                self.push(
                    LintRule::ScanBudget,
                    Severity::Error,
                    &format!("{bp}.max_scan_rows"),
                    Some(&m.name),
                    format!(
                        "`{}` has no max_scan_rows: one unfiltered read can scan the whole table",
                        m.name
                    ),
                );
            }
            if !m.tools.is_empty() && b.statement_timeout_ms.is_none() {
                self.push(
                    LintRule::StatementTimeout,
                    Severity::Error,
                    &format!("{bp}.statement_timeout_ms"),
                    Some(&m.name),
                    format!("`{}` has no statement_timeout_ms (the database role's timeout is checked by a probe)", m.name),
                );
            }
            let uncapped: Vec<&str> = ["db_query", "db_aggregate"]
                .into_iter()
                .filter(|t| m.tools.contains(*t) && b.max_rows_for(t).is_none())
                .collect();
            if !uncapped.is_empty() {
                self.push(
                    LintRule::MaxRows,
                    Severity::Error,
                    &format!("{bp}.max_rows"),
                    Some(&m.name),
                    format!("`{}` has no max_rows for {}", m.name, uncapped.join(", ")),
                );
            }
            if b.max_join_depth > MAX_LINT_JOIN_DEPTH {
                self.push(
                    LintRule::JoinDepth,
                    Severity::Error,
                    &format!("{bp}.max_join_depth"),
                    Some(&m.name),
                    format!(
                        "`{}` allows joins {} deep (at most {MAX_LINT_JOIN_DEPTH}): every level multiplies the rows a call can touch",
                        m.name, b.max_join_depth
                    ),
                );
            }
            if Self::has_writes(m) {
                match b.max_writes_per_minute {
                    None => self.push(
                        LintRule::WriteRate,
                        Severity::Error,
                        &format!("{bp}.max_writes_per_minute"),
                        Some(&m.name),
                        format!("`{}` allows writes with no max_writes_per_minute", m.name),
                    ),
                    Some(n) if n > MAX_WRITES_PER_MINUTE => self.push(
                        LintRule::WriteRate,
                        Severity::Error,
                        &format!("{bp}.max_writes_per_minute"),
                        Some(&m.name),
                        format!(
                            "`{}` allows {n} writes a minute (at most {MAX_WRITES_PER_MINUTE} unless measured)",
                            m.name
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        let q = &p.quotas;
        match (q.calls_per_hour, q.rows_per_hour) {
            (None, None) => self.push(
                LintRule::TenantQuotas,
                Severity::Error,
                "quotas",
                None,
                "no per-tenant quotas: one tenant's agent can use the whole service".into(),
            ),
            (None, Some(_)) => self.push(
                LintRule::TenantQuotas,
                Severity::Warning,
                "quotas",
                None,
                "no calls_per_hour quota".into(),
            ),
            (Some(_), None) => self.push(
                LintRule::TenantQuotas,
                Severity::Warning,
                "quotas",
                None,
                "no rows_per_hour quota".into(),
            ),
            (Some(_), Some(_)) => {}
        }
        if let (Some(n), BudgetStoreConfig::Memory) = (p.deployment.instances, &p.budget_store) {
            if n > 1 {
                self.push(
                    LintRule::SharedBudgetStore,
                    Severity::Error,
                    "budget_store",
                    None,
                    format!("{n} instances each keep their own in-memory counters, so every limit is {n} times looser; use `budget_store: {{redis: {{url_env: REDIS_URL}}}}`"),
                );
            }
        }
    }

    fn operations(&mut self) {
        let p = self.p;
        if p.extends != Preset::Prod {
            self.push(
                LintRule::ProdPreset,
                Severity::Error,
                "extends",
                None,
                "the policy extends the development preset; production policies extend `prod`"
                    .into(),
            );
        }
    }

    fn writes(&mut self) {
        let p = self.p;
        for m in p.models.values() {
            if !Self::has_writes(m) {
                continue;
            }
            let mp = format!("models.{}", m.name);
            if !m.require_reason {
                self.push(
                    LintRule::WriteReason,
                    Severity::Error,
                    &format!("{mp}.require_reason"),
                    Some(&m.name),
                    format!("`{}` allows writes without a reason", m.name),
                );
            }
            let field_tools: BTreeSet<&str> = m
                .tools
                .iter()
                .map(String::as_str)
                .filter(|t| FIELD_WRITE_TOOLS.contains(t))
                .collect();
            for f in &m.writable_fields {
                if !self.classes.high_stakes.is_match(f) {
                    continue;
                }
                let mut uncovered = field_tools.clone();
                for r in p.approvals.iter().filter(|r| r.model == m.name) {
                    let covers_field =
                        r.fields.contains(f) || r.threshold.as_ref().is_some_and(|t| t.field == *f);
                    if covers_field {
                        if r.tools.is_empty() {
                            uncovered.clear();
                        } else {
                            uncovered.retain(|t| !r.tools.contains(*t));
                        }
                    }
                }
                if !uncovered.is_empty() {
                    self.push(
                        LintRule::ApprovalGate,
                        Severity::Error,
                        &format!("{mp}.writable_fields.{f}"),
                        Some(&m.name),
                        format!(
                            "`{}.{f}` is a high-stakes field the agent can write with {} and no approval rule gates it",
                            m.name,
                            uncovered.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
        }
        for r in &p.approvals {
            let rp = format!("approvals.rules.{}", r.name);
            let declared =
                p.spans.contains_key(&format!("{rp}.sla")) || p.spans.contains_key("approvals.sla");
            if r.sla_seconds > MAX_APPROVAL_SLA_SECONDS {
                self.push(
                    LintRule::ApprovalSla,
                    Severity::Error,
                    &format!("{rp}.sla"),
                    None,
                    format!(
                        "approval rule `{}` waits {} before auto-denying; an SLA over 24h leaves writes pending for days",
                        r.name,
                        human_seconds(r.sla_seconds)
                    ),
                );
            } else if !declared {
                self.push(
                    LintRule::ApprovalSla,
                    Severity::Warning,
                    &rp,
                    None,
                    format!(
                        "approval rule `{}` uses the preset's SLA ({}); set `approvals.sla` deliberately",
                        r.name,
                        human_seconds(r.sla_seconds)
                    ),
                );
            }
        }
    }

    fn audit(&mut self) {
        let p = self.p;
        if p.audit.sinks.is_empty() {
            self.push(
                LintRule::AuditSink,
                Severity::Error,
                "audit",
                None,
                "no audit sink: calls would leave no record (add `audit: {sinks: [postgres]}`)"
                    .into(),
            );
        }
        if p.audit.retention.is_none() {
            self.push(
                LintRule::AuditRetention,
                Severity::Error,
                "audit",
                None,
                "no audit retention: set `audit.retention` (e.g. hot: 90d, warm: 365d, cold: 7y)"
                    .into(),
            );
        }
    }

    fn explained(&mut self) {
        let p = self.p;
        for m in p.models.values() {
            let Some(rules) = p.field_rules.models.get(&m.name) else {
                continue;
            };
            // An explicit rule that is weaker than what the patterns alone would give is an
            // exception; exceptions carry reasons.
            for (name, e) in &rules.explicit {
                if e.reason.is_some() {
                    continue;
                }
                let without = pattern_action(self.p, &m.name, name);
                if let Some((pattern_action, pattern)) = without {
                    if strength(e.action) < strength(pattern_action) {
                        self.push(
                            LintRule::Explained,
                            Severity::Warning,
                            &format!("models.{}.fields.{name}", m.name),
                            Some(&m.name),
                            format!(
                                "`{}.{name}: {}` overrides pattern `{pattern}` ({}) without a reason",
                                m.name,
                                action_word(e.action),
                                action_word(pattern_action)
                            ),
                        );
                    }
                }
            }
            let unreviewed: Vec<&str> = m
                .columns
                .iter()
                .filter(|c| c.action == FieldAction::Allow && c.source == RuleSource::Default)
                .map(|c| c.name.as_str())
                .collect();
            if !unreviewed.is_empty() {
                self.push(
                    LintRule::Explained,
                    Severity::Warning,
                    &format!("models.{}", m.name),
                    Some(&m.name),
                    format!(
                        "`{}` returns columns no rule mentions (default action allow): {}",
                        m.name,
                        unreviewed.join(", ")
                    ),
                );
            }
        }
        if self.catalog.is_none() && p.field_rules.default_action == FieldAction::Allow {
            self.push(
                LintRule::Explained,
                Severity::Warning,
                "defaults.fields.default",
                None,
                "columns no rule mentions are returned (default action allow); the policy does not say what the agent sees".into(),
            );
        }
    }
}

fn strength(a: FieldAction) -> u8 {
    match a {
        FieldAction::Deny => 3,
        FieldAction::Mask => 2,
        FieldAction::Hash => 1,
        FieldAction::Allow => 0,
    }
}

/// What the patterns alone would make of a column (ignoring its explicit rule and the default).
fn pattern_action(p: &Policy, model: &str, column: &str) -> Option<(FieldAction, String)> {
    let mut without = p.clone();
    let rules = without.field_rules.models.get_mut(model)?;
    rules.explicit.remove(column);
    match resolve_field(&without, model, column)? {
        (action, RuleSource::Pattern { pattern, .. }) => Some((action, pattern)),
        (_, RuleSource::Explicit { .. } | RuleSource::Default) => None,
    }
}

fn rule_path(m: &ModelPolicy, column: &str, source: &RuleSource) -> String {
    match source {
        RuleSource::Explicit { .. } => format!("models.{}.fields.{column}", m.name),
        RuleSource::Pattern { .. } | RuleSource::Default => format!("models.{}", m.name),
    }
}

fn describe_source(source: &RuleSource) -> String {
    match source {
        RuleSource::Explicit { span } => format!("by its field rule at line {}", span.line),
        RuleSource::Pattern { pattern, .. } => format!("by pattern `{pattern}`"),
        RuleSource::Default => "by the default action".to_string(),
    }
}

fn human_seconds(s: u64) -> String {
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Lints a validated policy. With `catalog`, every resolved column and every exemption is checked
/// against the database; without, the rules as written. Findings come sorted by line.
pub fn lint(policy: &Policy, catalog: Option<&Catalog>) -> Vec<LintFinding> {
    let mut l = Linter {
        p: policy,
        catalog,
        classes: Classes::new(),
        out: Vec::new(),
    };
    l.tenancy();
    l.admin_separation();
    l.secrets();
    l.personal_data();
    l.free_text();
    l.budgets();
    l.operations();
    l.writes();
    l.audit();
    l.explained();
    let mut out = l.out;
    out.sort_by(|a, b| {
        let key = |f: &LintFinding| {
            (
                f.span
                    .map(|s| (s.line, s.column))
                    .unwrap_or((usize::MAX, 0)),
                f.rule,
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.message.cmp(&b.message))
    });
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_unique_and_cite_the_checklist() {
        let mut seen = HashSet::new();
        for r in LintRule::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert!(r.code().starts_with("lint."));
            assert!(!r.checklist().is_empty());
        }
    }

    #[test]
    fn classifiers() {
        let c = Classes::new();
        assert!(c.secret.is_match("password_hash"));
        assert!(c.secret.is_match("card_token"));
        assert!(c.pii.is_match("email"));
        assert!(c.pii.is_match("date_of_birth"));
        assert!(c.pii.is_match("shipping_address"));
        assert!(!c.pii.is_match("name"));
        assert!(c.free_text.is_match("body"));
        assert!(c.free_text.is_match("notes"));
        assert!(!c.free_text.is_match("somebody_id"));
        assert!(c.high_stakes.is_match("price"));
        assert!(c.high_stakes.is_match("role"));
        assert!(c.high_stakes.is_match("amount"));
        assert!(!c.high_stakes.is_match("status"));
    }

    #[test]
    fn placeholder_reasons() {
        assert!(placeholder_reason("n/a"));
        assert!(placeholder_reason("todo: later"));
        assert!(placeholder_reason("global"));
        assert!(placeholder_reason("TODO write a reason for this one"));
        assert!(!placeholder_reason(
            "global reference data shared by every tenant"
        ));
    }
}
