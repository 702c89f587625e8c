//! Loading a policy file into a validated [`Policy`]: [`load`] and [`load_str`].
//!
//! Three stages, all collecting problems instead of stopping at the first:
//! 1. `decl.rs` walks the YAML into what the file declares (syntax, types, enum words);
//! 2. this file merges the preset (`extends:`), then the file's `defaults:`, then each model's own
//!    settings, and rejects contradictions (a field both writable and denied, a writable tenant
//!    column, an approval rule that can never apply, ...);
//! 3. with a catalog, every schema, table, column, key and relation is checked against the live
//!    database and each column gets its one resolved action.
//!
//! Without a catalog (e.g. `preflight policy hash`) the policy is loaded syntax-only: every check
//! that needs the database is skipped and `ModelPolicy::columns` is empty. The hash does not
//! depend on the catalog, so both ways give the same hash.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use super::catalog::{Catalog, TableInfo};
use super::decl::{
    self, BudgetsDecl, Decl, Mode, ModelDecl, PatternDecl, FIELD_WRITE_TOOLS, READ_TOOLS,
    WRITE_TOOLS,
};
use super::hash;
use super::model::*;
use super::yaml::{self, did_you_mean, Diag, PolicyErrors};

/// The production preset, embedded.
pub const PROD_PRESET: &str = include_str!("presets/prod.yaml");
/// The development preset, embedded.
pub const DEV_PRESET: &str = include_str!("presets/dev.yaml");

/// The setting row-level security reads when the policy names none.
pub const DEFAULT_TENANT_SETTING: &str = "app.tenant_id";

/// Reads and validates a policy file. `catalog`: check names against the live database and
/// resolve every column; `None`: syntax-only (see the module docs).
pub fn load(path: impl AsRef<Path>, catalog: Option<&Catalog>) -> Result<Policy, PolicyErrors> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors::whole_file(&shown, format!("cannot read the policy file: {e}"))
    })?;
    load_str(&text, &shown, catalog)
}

/// As [`load`], from text; `path` is used in messages and recorded in [`Policy::path`].
pub fn load_str(text: &str, path: &str, catalog: Option<&Catalog>) -> Result<Policy, PolicyErrors> {
    let root = yaml::parse(text, path, false)?;
    let mut d = Diag::new(path);
    let file = decl::walk(&mut d, &root, Mode::File);
    let (preset_kind, extends_span) = file.extends.unwrap_or((Preset::Prod, Span::default()));
    let preset = match preset_decl(preset_kind) {
        Ok(p) => p,
        Err(e) => {
            d.error(
                extends_span,
                "extends",
                format!("internal error: the embedded preset does not load: {e}"),
            );
            Decl::default()
        }
    };
    let built = build(
        &mut d,
        path,
        &file,
        &preset,
        preset_kind,
        extends_span,
        catalog,
    );
    d.finish()?;
    let mut policy = built.ok_or_else(|| {
        PolicyErrors::whole_file(
            path,
            "internal error: the policy was rejected without a reason",
        )
    })?;
    policy.hash = hash::policy_hash(&policy);
    Ok(policy)
}

/// The parsed preset.
pub(crate) fn preset_decl(preset: Preset) -> Result<Decl, PolicyErrors> {
    let (text, name) = match preset {
        Preset::Prod => (PROD_PRESET, "preset:prod"),
        Preset::Dev => (DEV_PRESET, "preset:dev"),
    };
    let root = yaml::parse(text, name, false)?;
    let mut d = Diag::new(name);
    let decl = decl::walk(&mut d, &root, Mode::Preset);
    d.finish()?;
    Ok(decl)
}

/// A compiled wildcard pattern.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    action: FieldAction,
    pattern: String,
    span: Span,
    matcher: GlobMatcher,
}

fn strength(a: FieldAction) -> u8 {
    match a {
        FieldAction::Deny => 3,
        FieldAction::Mask => 2,
        FieldAction::Hash => 1,
        FieldAction::Allow => 0,
    }
}

fn compile(set: &PatternSet, spans: &PatternSpans) -> Vec<Compiled> {
    let lists = [
        (FieldAction::Deny, &set.deny),
        (FieldAction::Mask, &set.mask),
        (FieldAction::Hash, &set.hash),
    ];
    let mut out = Vec::new();
    for (action, list) in lists {
        for p in list {
            // Patterns were validated while walking, so a failure here cannot happen; skipping
            // keeps this path panic-free regardless.
            if let Ok(g) = GlobBuilder::new(p).case_insensitive(true).build() {
                out.push(Compiled {
                    action,
                    pattern: p.clone(),
                    span: spans.get(&(action, p.clone())).copied().unwrap_or_default(),
                    matcher: g.compile_matcher(),
                });
            }
        }
    }
    out
}

/// The strongest matching pattern: deny beats mask beats hash; among equals, the first in sorted
/// order, so the choice never depends on file order.
fn strongest<'a>(patterns: &'a [Compiled], column: &str) -> Option<&'a Compiled> {
    patterns
        .iter()
        .filter(|c| c.matcher.is_match(column))
        .max_by(|a, b| {
            strength(a.action)
                .cmp(&strength(b.action))
                .then_with(|| b.pattern.cmp(&a.pattern))
        })
}

/// Resolves one column name: explicit field rule > model-level pattern > global pattern >
/// default action.
fn resolve(
    column: &str,
    explicit: Option<&ExplicitField>,
    model_patterns: &[Compiled],
    global_patterns: &[Compiled],
    default: FieldAction,
) -> (FieldAction, RuleSource, Option<String>) {
    if let Some(e) = explicit {
        return (
            e.action,
            RuleSource::Explicit { span: e.span },
            e.reason.clone(),
        );
    }
    for level in [model_patterns, global_patterns] {
        if let Some(c) = strongest(level, column) {
            return (
                c.action,
                RuleSource::Pattern {
                    pattern: c.pattern.clone(),
                    span: c.span,
                },
                None,
            );
        }
    }
    (default, RuleSource::Default, None)
}

/// How `column` of `model` resolves by name alone (no catalog needed): the action and the rule
/// that decides it. `None` when the model does not exist. Lint and consumers use this to explain
/// or predict an action for a column the policy names.
pub fn resolve_field(
    policy: &Policy,
    model: &str,
    column: &str,
) -> Option<(FieldAction, RuleSource)> {
    let rules = policy.field_rules.models.get(model)?;
    let spans = pattern_spans_from_policy(policy, Some(model));
    let global = compile(&policy.field_rules.global, &spans.0);
    let local = compile(&rules.patterns, &spans.1);
    let (a, s, _) = resolve(
        column,
        rules.explicit.get(column),
        &local,
        &global,
        policy.field_rules.default_action,
    );
    Some((a, s))
}

/// Where each pattern was written, keyed by action and pattern.
type PatternSpans = BTreeMap<(FieldAction, String), Span>;

/// Pattern positions recorded in `policy.spans` (global, model).
fn pattern_spans_from_policy(policy: &Policy, model: Option<&str>) -> (PatternSpans, PatternSpans) {
    let lookup = |prefix: &str, set: &PatternSet| {
        let mut m = BTreeMap::new();
        for (action, list, key) in [
            (FieldAction::Deny, &set.deny, "deny"),
            (FieldAction::Mask, &set.mask, "mask"),
            (FieldAction::Hash, &set.hash, "hash"),
        ] {
            for p in list {
                let span = policy
                    .spans
                    .get(&format!("{prefix}.{key}.{p}"))
                    .copied()
                    .or_else(|| policy.spans.get("extends").copied())
                    .unwrap_or_default();
                m.insert((action, p.clone()), span);
            }
        }
        m
    };
    let global = lookup("defaults.fields", &policy.field_rules.global);
    let local = match model.and_then(|m| policy.field_rules.models.get(m).map(|r| (m, r))) {
        Some((m, rules)) => lookup(&format!("models.{m}"), &rules.patterns),
        None => BTreeMap::new(),
    };
    (global, local)
}

fn pattern_set(decls: &[&PatternDecl]) -> PatternSet {
    let mut set = PatternSet::default();
    for d in decls {
        set.deny.extend(d.deny.iter().map(|(p, _)| p.clone()));
        set.mask.extend(d.mask.iter().map(|(p, _)| p.clone()));
        set.hash.extend(d.hash.iter().map(|(p, _)| p.clone()));
    }
    set
}

/// A pattern listed under two actions at one level is a contradiction the reader should resolve.
fn check_pattern_conflicts(d: &mut Diag, decl: &PatternDecl, path: &str) {
    let mut seen: BTreeMap<&str, FieldAction> = BTreeMap::new();
    for (action, p, span) in decl.all() {
        if let Some(prev) = seen.get(p.as_str()) {
            d.error(
                span,
                path,
                format!(
                    "pattern `{p}` is listed under both `{}` and `{}`",
                    action_word(*prev),
                    action_word(action)
                ),
            );
        } else {
            seen.insert(p, action);
        }
    }
}

pub(crate) fn action_word(a: FieldAction) -> &'static str {
    match a {
        FieldAction::Allow => "allow",
        FieldAction::Deny => "deny",
        FieldAction::Mask => "mask",
        FieldAction::Hash => "hash",
    }
}

/// Applies one level of declared budgets on top of `base`.
fn apply_budgets(base: &mut Budgets, decl: &BudgetsDecl) {
    match &decl.max_rows {
        None => {}
        Some(None) => base.max_rows.clear(),
        Some(Some(caps)) => {
            for (tool, cap) in caps {
                match cap {
                    Some(n) => {
                        base.max_rows.insert(tool.clone(), *n);
                    }
                    None => {
                        base.max_rows.remove(tool);
                    }
                }
            }
        }
    }
    if let Some(v) = decl.max_scan_rows {
        base.max_scan_rows = v;
    }
    if let Some(v) = decl.statement_timeout_ms {
        base.statement_timeout_ms = v;
    }
    if let Some(v) = decl.max_join_depth {
        base.max_join_depth = v;
    }
    if let Some(v) = decl.max_writes_per_minute {
        base.max_writes_per_minute = v;
    }
    if let Some(v) = decl.max_affected_rows {
        base.max_affected_rows = v;
    }
}

fn did_you_mean_hint<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn build(
    d: &mut Diag,
    path: &str,
    file: &Decl,
    preset: &Decl,
    preset_kind: Preset,
    extends_span: Span,
    catalog: Option<&Catalog>,
) -> Option<Policy> {
    // Global settings: preset, then the file's `defaults:`.
    let mut global_budgets = Budgets {
        max_rows: BTreeMap::new(),
        max_scan_rows: None,
        statement_timeout_ms: None,
        max_join_depth: 2,
        max_writes_per_minute: None,
        max_affected_rows: None,
    };
    apply_budgets(&mut global_budgets, &preset.defaults.budgets);
    apply_budgets(&mut global_budgets, &file.defaults.budgets);

    let default_action = file
        .defaults
        .default_action
        .or(preset.defaults.default_action)
        .unwrap_or(FieldAction::Deny);
    let require_reason_default = file
        .defaults
        .require_reason
        .or(preset.defaults.require_reason)
        .unwrap_or(true);
    check_pattern_conflicts(d, &file.defaults.patterns, "defaults.fields");
    let global_set = pattern_set(&[&preset.defaults.patterns, &file.defaults.patterns]);
    let mut global_spans = BTreeMap::new();
    for (action, p, _) in preset.defaults.patterns.all() {
        global_spans.insert((action, p.clone()), extends_span);
    }
    for (action, p, span) in file.defaults.patterns.all() {
        global_spans.insert((action, p.clone()), span);
    }
    let global_compiled = compile(&global_set, &global_spans);

    if file.models.is_empty() && file.spans.contains_key("models") {
        d.error(
            file.spans["models"],
            "models",
            "no models: the agent could reach nothing (declare at least one model)",
        );
    }

    let mut models = BTreeMap::new();
    let mut field_rules_models = BTreeMap::new();
    for m in &file.models {
        let (model, rules) = build_model(
            d,
            m,
            file,
            &global_budgets,
            require_reason_default,
            default_action,
            &global_compiled,
            catalog,
        );
        field_rules_models.insert(m.name.clone(), rules);
        models.insert(m.name.clone(), model);
    }

    // Relations are checked once every model is known.
    let relations: Vec<(String, BTreeMap<String, Relation>)> = file
        .models
        .iter()
        .map(|m| (m.name.clone(), check_relations(d, m, &models, catalog)))
        .collect();
    for (name, rels) in relations {
        if let Some(model) = models.get_mut(&name) {
            model.relations = rels;
        }
    }

    let approvals = build_approvals(d, file, preset, &models);

    let mut quotas = Quotas {
        calls_per_hour: None,
        rows_per_hour: None,
    };
    for q in [&preset.quotas, &file.quotas] {
        if let Some(v) = q.calls_per_hour {
            quotas.calls_per_hour = v;
        }
        if let Some(v) = q.rows_per_hour {
            quotas.rows_per_hour = v;
        }
    }

    let audit = match &file.audit {
        Some(a) => AuditPolicy {
            sinks: a.sinks.clone(),
            retention: a.retention.clone(),
            span: a.span,
        },
        None => AuditPolicy {
            sinks: Vec::new(),
            retention: None,
            span: Span::default(),
        },
    };

    if d.has_errors() {
        return None;
    }
    Some(Policy {
        name: file.name.clone().unwrap_or_default(),
        extends: preset_kind,
        path: path.to_string(),
        tenant_setting: file
            .tenant_setting
            .clone()
            .unwrap_or_else(|| DEFAULT_TENANT_SETTING.to_string()),
        models,
        approvals,
        writes: WritePolicy {
            dry_run_required_above: file
                .dry_run_required_above
                .or(preset.dry_run_required_above)
                .unwrap_or(10),
        },
        quotas,
        budget_store: file
            .budget_store
            .clone()
            .or_else(|| preset.budget_store.clone())
            .unwrap_or(BudgetStoreConfig::Memory),
        audit,
        deployment: Deployment {
            instances: file.deployment_instances,
        },
        rate_limits: file.rate_limits.clone(),
        field_rules: FieldRules {
            default_action,
            global: global_set,
            models: field_rules_models,
        },
        spans: file.spans.clone(),
        hash: String::new(),
    })
}

#[allow(clippy::too_many_arguments)]
fn build_model(
    d: &mut Diag,
    m: &ModelDecl,
    file: &Decl,
    global_budgets: &Budgets,
    require_reason_default: bool,
    default_action: FieldAction,
    global_compiled: &[Compiled],
    catalog: Option<&Catalog>,
) -> (ModelPolicy, ModelFieldRules) {
    let path = format!("models.{}", m.name);
    let p = |k: &str| format!("{path}.{k}");
    let schema = m
        .schema
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| "public".into());
    let table = m
        .table
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| m.name.clone());
    let primary_key = m
        .primary_key
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| "id".into());

    // Tenant scope: the model's own column, an exemption with a reason, or the file's default.
    let (tenant_column, tenant_exempt_reason) = match (&m.tenant_column, &m.tenant_exempt) {
        (Some((c, _)), None) => (Some(c.clone()), None),
        (None, Some((r, _))) => (None, Some(r.clone())),
        (Some(_), Some((_, s))) => {
            d.error(
                *s,
                &p("tenant_exempt"),
                "a model has either `tenant_column` or `tenant_exempt`, not both",
            );
            (None, None)
        }
        (None, None) => match &file.tenant_column {
            Some((c, _)) => (Some(c.clone()), None),
            None => {
                d.error(
                    m.span,
                    &path,
                    "no tenant scope: set `tenant_column: <column>` (or `tenant.column` for every model), or `tenant_exempt: \"why this model holds no tenant's rows\"` (ISO-2)",
                );
                (None, None)
            }
        },
    };

    // Tools: reads by default; a write tool brings its dry run along (WRT-6).
    let mut tools: BTreeSet<String> = match &m.tools {
        Some(list) => list.iter().map(|(t, _)| t.clone()).collect(),
        None => READ_TOOLS.iter().map(|t| t.to_string()).collect(),
    };
    if tools.iter().any(|t| WRITE_TOOLS.contains(&t.as_str())) {
        tools.insert("db_dry_run".into());
    } else if tools.contains("db_dry_run") {
        if let Some((_, s)) = m.tools.iter().flatten().find(|(t, _)| t == "db_dry_run") {
            d.error(
                *s,
                &p("tools"),
                "`db_dry_run` plans a write, but this model allows no write tool",
            );
        }
    }

    let mut budgets = global_budgets.clone();
    apply_budgets(&mut budgets, &m.budgets);

    // Field rules as declared.
    check_pattern_conflicts(d, &m.patterns, &path);
    let patterns = pattern_set(&[&m.patterns]);
    let mut local_spans = BTreeMap::new();
    for (action, pat, span) in m.patterns.all() {
        local_spans.insert((action, pat.clone()), span);
    }
    let local_compiled = compile(&patterns, &local_spans);
    let explicit: BTreeMap<String, ExplicitField> = m
        .fields
        .iter()
        .map(|f| {
            (
                f.column.clone(),
                ExplicitField {
                    action: f.action,
                    reason: f.reason.clone(),
                    span: f.span,
                },
            )
        })
        .collect();

    // Writes: what may be written, and whether anything can be.
    let writable: BTreeSet<String> = m.writable_fields.iter().map(|(f, _)| f.clone()).collect();
    let field_writes = tools
        .iter()
        .any(|t| FIELD_WRITE_TOOLS.contains(&t.as_str()));
    if !writable.is_empty() && !field_writes {
        d.error(
            m.writable_fields[0].1,
            &p("writable_fields"),
            format!(
                "writable_fields has no effect: the model allows none of {} (add one to `tools` or remove writable_fields)",
                FIELD_WRITE_TOOLS.join(", ")
            ),
        );
    }
    if field_writes && writable.is_empty() {
        let tool = tools
            .iter()
            .find(|t| FIELD_WRITE_TOOLS.contains(&t.as_str()))
            .cloned()
            .unwrap_or_default();
        let span = m
            .tools
            .iter()
            .flatten()
            .find(|(t, _)| *t == tool)
            .map(|(_, s)| *s)
            .unwrap_or(m.span);
        d.error(
            span,
            &p("tools"),
            format!(
                "`{tool}` can change no field: list the fields it may set in `writable_fields`"
            ),
        );
    }
    for (f, s) in &m.writable_fields {
        let wp = format!("{}.{f}", p("writable_fields"));
        if tenant_column.as_deref() == Some(f.as_str()) {
            d.error(
                *s,
                &wp,
                format!("`{f}` is the tenant column: the enforcement layer sets it from the session, it is never writable"),
            );
        }
        if *f == primary_key {
            d.error(
                *s,
                &wp,
                format!("`{f}` is the primary key and cannot be writable"),
            );
        }
        if m.soft_delete.as_ref().is_some_and(|(c, _)| c == f) {
            d.error(
                *s,
                &wp,
                format!("`{f}` is the soft-delete column: only `db_delete` sets it (an agent could otherwise undelete rows)"),
            );
        }
        let (action, source, _) = resolve(
            f,
            explicit.get(f),
            &local_compiled,
            global_compiled,
            default_action,
        );
        if action == FieldAction::Deny {
            let by = match source {
                RuleSource::Explicit { span } => format!("`fields.{f}` at line {}", span.line),
                RuleSource::Pattern { pattern, .. } => format!("pattern `{pattern}`"),
                RuleSource::Default => {
                    "the default action, since no rule mentions it; add a field rule".to_string()
                }
            };
            d.error(
                *s,
                &wp,
                format!("`{f}` is both writable and denied (denied by {by})"),
            );
        }
    }
    if let Some((c, s)) = &m.soft_delete {
        if tenant_column.as_deref() == Some(c.as_str()) || *c == primary_key {
            d.error(
                *s,
                &p("soft_delete"),
                format!("`{c}` cannot be the soft-delete column"),
            );
        }
    }

    // The catalog: names must exist, and every column gets its resolved action.
    let mut columns = Vec::new();
    if let Some(catalog) = catalog {
        if let Some(t) = check_table(d, m, &schema, &table, catalog) {
            check_columns(
                d,
                m,
                t,
                &primary_key,
                tenant_column.as_deref(),
                &explicit,
                &local_compiled,
            );
            for c in &t.columns {
                let (action, source, reason) = resolve(
                    &c.name,
                    explicit.get(&c.name),
                    &local_compiled,
                    global_compiled,
                    default_action,
                );
                columns.push(ColumnPolicy {
                    name: c.name.clone(),
                    pg_type: c.pg_type.clone(),
                    nullable: c.nullable,
                    action,
                    source,
                    reason,
                    indexed: t.indexed_columns.contains(&c.name),
                });
            }
        }
    }

    let model = ModelPolicy {
        name: m.name.clone(),
        schema,
        table,
        primary_key,
        tenant_column,
        tenant_exempt_reason,
        columns,
        relations: BTreeMap::new(),
        tools,
        writable_fields: writable,
        require_reason: m.require_reason.unwrap_or(require_reason_default),
        soft_delete_column: m.soft_delete.as_ref().map(|s| s.0.clone()),
        budgets,
        span: m.span,
    };
    (model, ModelFieldRules { patterns, explicit })
}

fn check_table<'c>(
    d: &mut Diag,
    m: &ModelDecl,
    schema: &str,
    table: &str,
    catalog: &'c Catalog,
) -> Option<&'c TableInfo> {
    let path = format!("models.{}", m.name);
    if !catalog.has_schema(schema) {
        let span = m.schema.as_ref().map(|s| s.1).unwrap_or(m.span);
        d.error(
            span,
            &format!("{path}.schema"),
            format!("schema `{schema}` has no tables in the database"),
        );
        return None;
    }
    match catalog.table(schema, table) {
        Some(t) => Some(t),
        None => {
            let span = m.table.as_ref().map(|s| s.1).unwrap_or(m.span);
            let names: Vec<&str> = catalog.tables_in(schema).map(|t| t.name.as_str()).collect();
            let hint = did_you_mean_hint(table, names.iter().copied());
            let how = if m.table.is_none() {
                " (the model name is used as the table name; set `table:` if they differ)"
            } else {
                ""
            };
            d.error(
                span,
                &format!("{path}.table"),
                format!("table `{schema}.{table}` does not exist in the database{hint}{how}"),
            );
            None
        }
    }
}

fn unknown_column(d: &mut Diag, t: &TableInfo, column: &str, span: Span, path: &str, what: &str) {
    let hint = did_you_mean_hint(column, t.columns.iter().map(|c| c.name.as_str()));
    d.error(
        span,
        path,
        format!(
            "{what} `{column}` is not a column of `{}`{hint}",
            t.qualified_name()
        ),
    );
}

#[allow(clippy::too_many_arguments)]
fn check_columns(
    d: &mut Diag,
    m: &ModelDecl,
    t: &TableInfo,
    primary_key: &str,
    tenant_column: Option<&str>,
    explicit: &BTreeMap<String, ExplicitField>,
    local: &[Compiled],
) {
    let path = format!("models.{}", m.name);
    let p = |k: &str| format!("{path}.{k}");

    let pk_span = m.primary_key.as_ref().map(|s| s.1).unwrap_or(m.span);
    match t.column(primary_key) {
        None => unknown_column(d, t, primary_key, pk_span, &p("primary_key"), "primary key"),
        Some(_) => {
            // Views carry no constraints, so uniqueness cannot be checked there.
            let is_view = matches!(
                t.kind,
                super::catalog::TableKind::View | super::catalog::TableKind::MaterializedView
            );
            if !is_view && !t.unique_columns.contains(primary_key) {
                let actual = if t.primary_key.is_empty() {
                    "the table has no primary key".to_string()
                } else {
                    format!("the table's primary key is ({})", t.primary_key.join(", "))
                };
                d.error(
                    pk_span,
                    &p("primary_key"),
                    format!("`{primary_key}` is not unique in `{}` ({actual}); db_get needs a single unique column", t.qualified_name()),
                );
            }
        }
    }
    if let Some(tc) = tenant_column {
        if t.column(tc).is_none() {
            let span = m.tenant_column.as_ref().map(|s| s.1).unwrap_or(m.span);
            unknown_column(d, t, tc, span, &p("tenant_column"), "tenant column");
        }
    }
    for (column, rule) in explicit {
        if t.column(column).is_none() {
            unknown_column(
                d,
                t,
                column,
                rule.span,
                &format!("{path}.fields.{column}"),
                "field",
            );
        }
    }
    for (f, s) in &m.writable_fields {
        if t.column(f).is_none() {
            unknown_column(d, t, f, *s, &p("writable_fields"), "writable field");
        }
    }
    if let Some((c, s)) = &m.soft_delete {
        match t.column(c) {
            None => unknown_column(d, t, c, *s, &p("soft_delete"), "soft-delete column"),
            Some(col) => {
                if !col.nullable || !(col.is_temporal() || col.pg_type == "boolean") {
                    d.error(
                        *s,
                        &p("soft_delete"),
                        format!(
                            "`{c}` ({}{}) cannot mark soft deletes: expected a nullable timestamp or boolean column",
                            col.pg_type,
                            if col.nullable { "" } else { ", not null" }
                        ),
                    );
                }
            }
        }
    }
    // A model-level pattern that matches nothing is most likely a typo, and a rule that silently
    // does nothing is exactly what an auditor cannot see.
    for c in local {
        if !t.columns.iter().any(|col| c.matcher.is_match(&col.name)) {
            d.error(
                c.span,
                &format!("{path}.{}", action_word(c.action)),
                format!(
                    "pattern `{}` matches no column of `{}`, so it would do nothing",
                    c.pattern,
                    t.qualified_name()
                ),
            );
        }
    }
}

/// Validates a model's relations; returns the valid ones. Run once every model is known, since a
/// relation may point at a model declared further down.
fn check_relations(
    d: &mut Diag,
    m: &ModelDecl,
    models: &BTreeMap<String, ModelPolicy>,
    catalog: Option<&Catalog>,
) -> BTreeMap<String, Relation> {
    let mut relations = BTreeMap::new();
    for r in &m.relations {
        let rp = format!("models.{}.relations.{}", m.name, r.name);
        let (Some((target, target_span)), Some((fk, fk_span)), Some(kind)) =
            (&r.model, &r.foreign_key, r.kind)
        else {
            continue;
        };
        let Some(target_model) = models.get(target) else {
            let hint = did_you_mean_hint(target, models.keys().map(String::as_str));
            d.error(
                *target_span,
                &format!("{rp}.model"),
                format!("unknown model `{target}`{hint}: a relation must point at a model of this policy"),
            );
            continue;
        };
        if let (Some(catalog), Some(this_model)) = (catalog, models.get(&m.name)) {
            let this_t = catalog.table(&this_model.schema, &this_model.table);
            let target_t = catalog.table(&target_model.schema, &target_model.table);
            if let (Some(this_t), Some(target_t)) = (this_t, target_t) {
                if this_t.column(&r.name).is_some() {
                    d.error(
                        r.span,
                        &rp,
                        format!("relation `{}` has the name of a column of `{}`; included rows would collide with it", r.name, this_t.qualified_name()),
                    );
                }
                // belongs_to: the key is on this table and points at the target; has_many: the
                // key is on the target and points back here.
                let (holder, referenced) = match kind {
                    RelationKind::BelongsTo => (this_t, target_t),
                    RelationKind::HasMany => (target_t, this_t),
                };
                match holder.column(fk) {
                    // The key is on the other side: most likely the kind is the wrong way round.
                    None if referenced.column(fk).is_some() => {
                        let (kind_word, flipped) = match kind {
                            RelationKind::BelongsTo => ("belongs_to", "has_many"),
                            RelationKind::HasMany => ("has_many", "belongs_to"),
                        };
                        d.error(
                            *fk_span,
                            &format!("{rp}.foreign_key"),
                            format!(
                                "a `{kind_word}` relation's key is a column of `{}`, which has no `{fk}`; `{}` has it: is the kind `{flipped}`?",
                                holder.qualified_name(),
                                referenced.qualified_name()
                            ),
                        );
                    }
                    None => unknown_column(
                        d,
                        holder,
                        fk,
                        *fk_span,
                        &format!("{rp}.foreign_key"),
                        "foreign key",
                    ),
                    Some(_) => {
                        let linked = holder.foreign_key_on(fk).is_some_and(|k| {
                            k.ref_schema == referenced.schema && k.ref_table == referenced.name
                        });
                        if !linked {
                            let (verb, hint) = match kind {
                                RelationKind::BelongsTo => ("belongs_to", "has_many"),
                                RelationKind::HasMany => ("has_many", "belongs_to"),
                            };
                            let other = holder.foreign_key_on(fk).map(|k| {
                                format!(" (it references `{}.{}`)", k.ref_schema, k.ref_table)
                            });
                            d.error(
                                *fk_span,
                                &format!("{rp}.foreign_key"),
                                format!(
                                    "no foreign key constraint `{}.{fk}` → `{}` in the database{}; a `{verb}` relation needs one (is the kind `{hint}`?)",
                                    holder.qualified_name(),
                                    referenced.qualified_name(),
                                    other.unwrap_or_default()
                                ),
                            );
                        }
                    }
                }
            }
        }
        relations.insert(
            r.name.clone(),
            Relation {
                name: r.name.clone(),
                target: target.clone(),
                kind,
                foreign_key: fk.clone(),
                span: r.span,
            },
        );
    }
    relations
}

fn build_approvals(
    d: &mut Diag,
    file: &Decl,
    preset: &Decl,
    models: &BTreeMap<String, ModelPolicy>,
) -> Vec<ApprovalRule> {
    let mut out = Vec::new();
    for r in &file.approvals.rules {
        let rp = format!("approvals.rules.{}", r.name);
        let approvers: BTreeSet<String> = r
            .approvers
            .as_ref()
            .or(file.approvals.approvers.as_ref())
            .map(|l| l.iter().map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        if approvers.is_empty() {
            d.error(
                r.span,
                &rp,
                "no approvers: set `approvers:` on the rule or under `approvals:` (roles such as `admin`)",
            );
        }
        let Some(sla_seconds) = r
            .sla_seconds
            .or(file.approvals.sla_seconds)
            .or(preset.approvals.sla_seconds)
        else {
            d.error(
                r.span,
                &rp,
                "no SLA: set `sla:` (e.g. `30m`) on the rule or under `approvals:`",
            );
            continue;
        };
        let Some((model_name, model_span)) = &r.model else {
            continue;
        };
        let Some(model) = models.get(model_name) else {
            let hint = did_you_mean_hint(model_name, models.keys().map(String::as_str));
            d.error(
                *model_span,
                &format!("{rp}.model"),
                format!("unknown model `{model_name}`{hint}"),
            );
            continue;
        };
        let model_writes: BTreeSet<String> = model
            .tools
            .iter()
            .filter(|t| WRITE_TOOLS.contains(&t.as_str()))
            .cloned()
            .collect();
        let tools: BTreeSet<String> = match &r.tools {
            Some(list) => {
                for (t, s) in list {
                    if !model_writes.contains(t) {
                        d.error(
                            *s,
                            &format!("{rp}.tools"),
                            format!("model `{model_name}` does not allow `{t}`, so this rule would never apply to it"),
                        );
                    }
                }
                list.iter().map(|(t, _)| t.clone()).collect()
            }
            None => {
                if model_writes.is_empty() {
                    d.error(
                        r.span,
                        &rp,
                        format!("model `{model_name}` allows no write tool, so this rule can never apply"),
                    );
                }
                BTreeSet::new()
            }
        };
        for (f, s) in &r.fields {
            if !model.writable_fields.contains(f) {
                d.error(
                    *s,
                    &format!("{rp}.fields"),
                    format!("`{f}` is not in `models.{model_name}.writable_fields`, so no write can set it and the rule can never apply"),
                );
            }
        }
        let threshold = r.when.as_ref().map(|w| {
            let (field, span) = &w.field;
            if !model.writable_fields.contains(field) {
                d.error(
                    *span,
                    &format!("{rp}.when.field"),
                    format!("`{field}` is not in `models.{model_name}.writable_fields`, so the threshold can never be reached"),
                );
            } else if let Some(col) = model.column(field) {
                if !super::catalog::is_numeric_type(&col.pg_type) {
                    d.error(
                        *span,
                        &format!("{rp}.when.field"),
                        format!("`{field}` is `{}`, not a number, so `greater_than` cannot compare it", col.pg_type),
                    );
                }
            }
            Threshold {
                field: field.clone(),
                greater_than: w.greater_than,
            }
        });
        out.push(ApprovalRule {
            name: r.name.clone(),
            model: model_name.clone(),
            tools,
            fields: r.fields.iter().map(|(f, _)| f.clone()).collect(),
            threshold,
            approvers,
            sla_seconds,
            span: r.span,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_load() {
        for p in [Preset::Prod, Preset::Dev] {
            if let Err(e) = preset_decl(p) {
                panic!("preset {p:?} does not load:\n{e}");
            }
        }
    }

    #[test]
    fn shop_policy_loads_syntax_only() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/shop/policy.yaml");
        let p = match load(&path, None) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(p.extends, Preset::Prod);
        assert!(p.models.values().all(|m| m.columns.is_empty()));
        assert_eq!(p.models["orders"].budgets.max_scan_rows, Some(10_000));
        assert_eq!(p.hash.len(), 64);
    }

    fn catalog() -> Catalog {
        use super::super::catalog::{ColumnInfo, TableKind};
        let cols = [
            "id",
            "tenant_id",
            "email",
            "user_email",
            "secret_email",
            "api_token",
            "note_hash_me",
            "status",
        ];
        Catalog::from_tables([TableInfo {
            schema: "public".into(),
            name: "things".into(),
            kind: TableKind::Table,
            columns: cols
                .iter()
                .map(|c| ColumnInfo {
                    name: (*c).into(),
                    pg_type: "text".into(),
                    nullable: true,
                })
                .collect(),
            primary_key: vec!["id".into()],
            foreign_keys: Vec::new(),
            indexed_columns: ["tenant_id".to_string()].into_iter().collect(),
            unique_columns: ["id".to_string()].into_iter().collect(),
            estimated_rows: 10.0,
            rls_enabled: false,
            rls_forced: false,
        }])
    }

    fn things(extra_model: &str, extra_top: &str) -> Policy {
        let text = format!(
            "version: 1\nname: t\nextends: prod\n{extra_top}models:\n  things:\n    tenant_column: tenant_id\n{extra_model}"
        );
        match load_str(&text, "t.yaml", Some(&catalog())) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    fn action(p: &Policy, column: &str) -> (FieldAction, RuleSource) {
        let c = p.models["things"].column(column).unwrap();
        (c.action, c.source.clone())
    }

    #[test]
    fn resolution_order_explicit_then_model_then_global_then_default() {
        let p = things(
            "    fields: {email: allow}\n    hash: [\"*email*\"]\n",
            "defaults:\n  fields:\n    mask: [\"*hash_me\"]\n",
        );
        // Explicit beats every pattern.
        assert!(matches!(
            action(&p, "email"),
            (FieldAction::Allow, RuleSource::Explicit { .. })
        ));
        // A model-level pattern beats the global one (the preset masks *email*).
        assert!(
            matches!(action(&p, "user_email"), (FieldAction::Hash, RuleSource::Pattern { ref pattern, .. }) if pattern == "*email*")
        );
        // A global pattern from the file, then the preset's.
        assert!(
            matches!(action(&p, "note_hash_me"), (FieldAction::Mask, RuleSource::Pattern { ref pattern, .. }) if pattern == "*hash_me")
        );
        assert!(
            matches!(action(&p, "api_token"), (FieldAction::Deny, RuleSource::Pattern { ref pattern, .. }) if pattern == "*token*")
        );
        // Nothing matches: the preset's default (deny in prod).
        assert_eq!(
            action(&p, "status"),
            (FieldAction::Deny, RuleSource::Default)
        );
        assert!(p.models["things"].column("tenant_id").unwrap().indexed);
    }

    #[test]
    fn deny_beats_mask_beats_hash_at_one_level() {
        // secret_email matches the preset's *secret* (deny) and *email* (mask).
        let p = things("    fields: {id: allow}\n", "");
        assert!(
            matches!(action(&p, "secret_email"), (FieldAction::Deny, RuleSource::Pattern { ref pattern, .. }) if pattern == "*secret*")
        );
        let p = things("    mask: [\"user_*\"]\n    hash: [\"*_email\"]\n", "");
        assert!(
            matches!(action(&p, "user_email"), (FieldAction::Mask, RuleSource::Pattern { ref pattern, .. }) if pattern == "user_*")
        );
    }

    #[test]
    fn budgets_merge_preset_then_defaults_then_model_and_null_removes() {
        let p = things(
            "    budgets: {max_rows: {db_aggregate: 7}, statement_timeout_ms: null}\n",
            "defaults:\n  budgets: {max_rows: {db_query: 50}, max_scan_rows: 500}\n",
        );
        let b = &p.models["things"].budgets;
        assert_eq!(b.max_rows_for("db_query"), Some(50));
        assert_eq!(b.max_rows_for("db_aggregate"), Some(7));
        assert_eq!(b.max_rows_for("db_get"), Some(100));
        assert_eq!(b.max_scan_rows, Some(500));
        assert_eq!(b.statement_timeout_ms, None);
        assert_eq!(b.max_join_depth, 2);
        assert_eq!(b.max_writes_per_minute, Some(10));
        assert_eq!(p.quotas.calls_per_hour, Some(1000));
        assert_eq!(p.writes.dry_run_required_above, 10);
        assert!(p.models["things"].require_reason);
    }

    #[test]
    fn write_tools_bring_their_dry_run_and_reads_are_the_default() {
        let p = things(
            "    tools: [db_update]\n    fields: {status: allow}\n    writable_fields: [status]\n",
            "",
        );
        let tools: Vec<&str> = p.models["things"]
            .tools
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(tools, ["db_dry_run", "db_update"]);
        let p = things("", "");
        let tools: Vec<&str> = p.models["things"]
            .tools
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(tools, ["db_aggregate", "db_get", "db_query"]);
    }

    #[test]
    fn resolve_field_needs_no_catalog() {
        let text = "version: 1\nname: t\nextends: dev\nmodels:\n  things:\n    tenant_column: tenant_id\n    fields: {email: hash}\n";
        let p = load_str(text, "t.yaml", None).unwrap();
        assert!(p.models["things"].columns.is_empty());
        assert!(matches!(
            resolve_field(&p, "things", "email"),
            Some((FieldAction::Hash, RuleSource::Explicit { .. }))
        ));
        assert!(matches!(
            resolve_field(&p, "things", "password"),
            Some((FieldAction::Deny, RuleSource::Pattern { .. }))
        ));
        assert_eq!(
            resolve_field(&p, "things", "status"),
            Some((FieldAction::Allow, RuleSource::Default))
        );
        assert_eq!(resolve_field(&p, "nothing", "status"), None);
    }
}
