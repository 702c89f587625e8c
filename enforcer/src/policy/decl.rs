//! The policy file as declared: the first stage of loading, [`Decl`].
//!
//! This walks the YAML tree of a policy file (or of an embedded preset, which uses a subset of the
//! same grammar) and records what it says, with positions, collecting every syntax-level problem:
//! unknown keys, wrong types, bad enum words, bad durations, non-positive budgets. Nothing here
//! merges presets or consults the catalog; `load.rs` does that with the result.

use std::collections::BTreeMap;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;

use super::model::{
    AuditSinkConfig, BudgetStoreConfig, FieldAction, Preset, RelationKind, Retention, Span,
};
use super::yaml::{
    self, boolean, check_keys, duration, entries, expect_mapping, expect_sequence, get,
    int_at_least, is_null, join, key_span, number, one_of, string, string_list, Diag,
};

/// Whether a document is a user's policy file or an embedded preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    File,
    Preset,
}

/// `None`: the key is absent (inherit). `Some(None)`: explicitly `null` (no limit).
pub(crate) type Setting<T> = Option<Option<T>>;

#[derive(Clone, Debug, Default)]
pub(crate) struct PatternDecl {
    pub deny: Vec<(String, Span)>,
    pub mask: Vec<(String, Span)>,
    pub hash: Vec<(String, Span)>,
}

impl PatternDecl {
    pub fn all(&self) -> impl Iterator<Item = (FieldAction, &String, Span)> {
        self.deny
            .iter()
            .map(|(p, s)| (FieldAction::Deny, p, *s))
            .chain(self.mask.iter().map(|(p, s)| (FieldAction::Mask, p, *s)))
            .chain(self.hash.iter().map(|(p, s)| (FieldAction::Hash, p, *s)))
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct BudgetsDecl {
    /// Whole map `null` clears every cap; otherwise per-tool entries, each a cap or `null`.
    pub max_rows: Setting<Vec<(String, Option<u64>)>>,
    pub max_scan_rows: Setting<u64>,
    pub statement_timeout_ms: Setting<u64>,
    pub max_join_depth: Option<u32>,
    pub max_writes_per_minute: Setting<u32>,
    pub max_affected_rows: Setting<u64>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DefaultsDecl {
    pub default_action: Option<FieldAction>,
    pub patterns: PatternDecl,
    pub budgets: BudgetsDecl,
    pub require_reason: Option<bool>,
}

#[derive(Clone, Debug)]
pub(crate) struct ExplicitDecl {
    pub column: String,
    pub action: FieldAction,
    pub reason: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub(crate) struct RelationDecl {
    pub name: String,
    pub span: Span,
    pub model: Option<(String, Span)>,
    pub foreign_key: Option<(String, Span)>,
    pub kind: Option<RelationKind>,
}

#[derive(Clone, Debug)]
pub(crate) struct ModelDecl {
    pub name: String,
    pub span: Span,
    pub table: Option<(String, Span)>,
    pub schema: Option<(String, Span)>,
    pub primary_key: Option<(String, Span)>,
    pub tenant_column: Option<(String, Span)>,
    pub tenant_exempt: Option<(String, Span)>,
    pub tools: Option<Vec<(String, Span)>>,
    pub fields: Vec<ExplicitDecl>,
    pub patterns: PatternDecl,
    pub relations: Vec<RelationDecl>,
    pub writable_fields: Vec<(String, Span)>,
    pub require_reason: Option<bool>,
    pub soft_delete: Option<(String, Span)>,
    pub budgets: BudgetsDecl,
}

#[derive(Clone, Debug)]
pub(crate) struct ThresholdDecl {
    pub field: (String, Span),
    pub greater_than: f64,
}

#[derive(Clone, Debug)]
pub(crate) struct RuleDecl {
    pub name: String,
    pub span: Span,
    pub model: Option<(String, Span)>,
    pub tools: Option<Vec<(String, Span)>>,
    pub fields: Vec<(String, Span)>,
    pub when: Option<ThresholdDecl>,
    pub approvers: Option<Vec<(String, Span)>>,
    pub sla_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ApprovalsDecl {
    pub sla_seconds: Option<u64>,
    pub approvers: Option<Vec<(String, Span)>>,
    pub rules: Vec<RuleDecl>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct QuotasDecl {
    pub calls_per_hour: Setting<u64>,
    pub rows_per_hour: Setting<u64>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct AuditDecl {
    pub sinks: Vec<AuditSinkConfig>,
    pub retention: Option<Retention>,
    pub span: Span,
}

/// Everything one document says.
#[derive(Clone, Debug, Default)]
pub(crate) struct Decl {
    pub name: Option<String>,
    pub extends: Option<(Preset, Span)>,
    pub tenant_setting: Option<String>,
    pub tenant_column: Option<(String, Span)>,
    pub defaults: DefaultsDecl,
    pub models: Vec<ModelDecl>,
    pub dry_run_required_above: Option<u64>,
    pub approvals: ApprovalsDecl,
    pub quotas: QuotasDecl,
    pub budget_store: Option<BudgetStoreConfig>,
    pub audit: Option<AuditDecl>,
    pub deployment_instances: Option<u32>,
    pub rate_limits: Option<super::rate_limits::RateLimits>,
    /// Dotted key path → position, for everything lint and SARIF may cite.
    pub spans: BTreeMap<String, Span>,
}

/// Tools a model's `tools:` list may name. `db_describe_schema` and `db_approval_status` are not
/// per-model: every model with at least one tool appears in the schema description.
pub const MODEL_TOOLS: &[&str] = &[
    "db_query",
    "db_get",
    "db_aggregate",
    "db_create",
    "db_update",
    "db_delete",
    "db_bulk_update",
    "db_dry_run",
];

/// Tools that read.
pub const READ_TOOLS: &[&str] = &["db_query", "db_get", "db_aggregate"];

/// Tools that change rows.
pub const WRITE_TOOLS: &[&str] = &["db_create", "db_update", "db_delete", "db_bulk_update"];

/// Write tools that set field values (so `writable_fields` applies to them).
pub const FIELD_WRITE_TOOLS: &[&str] = &["db_create", "db_update", "db_bulk_update"];

/// Keys of `max_rows`.
pub const MAX_ROWS_KEYS: &[&str] = &["default", "db_query", "db_get", "db_aggregate"];

/// The longest join chain a policy may declare at all; lint wants three or fewer (BUD-4).
pub const JOIN_DEPTH_HARD_LIMIT: u32 = 10;

const ACTIONS: &[(&str, FieldAction)] = &[
    ("allow", FieldAction::Allow),
    ("deny", FieldAction::Deny),
    ("mask", FieldAction::Mask),
    ("hash", FieldAction::Hash),
];

const TOP_FILE: &[&str] = &[
    "version",
    "name",
    "extends",
    "tenant",
    "defaults",
    "models",
    "writes",
    "approvals",
    "quotas",
    "budget_store",
    "audit",
    "deployment",
    "rate_limits",
];
const TOP_PRESET: &[&str] = &["defaults", "writes", "approvals", "quotas", "budget_store"];

struct Walker<'d> {
    d: &'d mut Diag,
    spans: BTreeMap<String, Span>,
}

impl Walker<'_> {
    /// Records the key's position under `path` and returns the value.
    fn note(&mut self, path: &str, span: Span) {
        self.spans.entry(path.to_string()).or_insert(span);
    }

    /// Each `key: value` of a mapping, with the key's span recorded under its path.
    fn each<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        path: &str,
    ) -> Vec<(String, String, Span, &'n Node)> {
        entries(map)
            .map(|(k, v)| {
                let p = join(path, k.as_str());
                let s = key_span(k);
                self.note(&p, s);
                (k.as_str().to_string(), p, s, v)
            })
            .collect()
    }
}

/// Walks one document. In `Preset` mode only the preset subset is accepted.
pub(crate) fn walk(d: &mut Diag, root: &Node, mode: Mode) -> Decl {
    let mut w = Walker {
        d,
        spans: BTreeMap::new(),
    };
    let mut decl = Decl::default();
    let Some(map) = expect_mapping(w.d, root, "") else {
        return decl;
    };
    let allowed = match mode {
        Mode::File => TOP_FILE,
        Mode::Preset => TOP_PRESET,
    };
    check_keys(w.d, map, "", allowed);

    if mode == Mode::File {
        match get(map, "version") {
            Some((_, v)) => {
                if let Some(n) = yaml::integer(w.d, v, "version") {
                    if n != 1 {
                        w.d.error(
                            yaml::span(v),
                            "version",
                            format!("unsupported policy format version {n}; this preflight reads version 1"),
                        );
                    }
                }
            }
            None => w.d.error(
                yaml::span(root),
                "",
                "missing `version: 1` (the policy format version)",
            ),
        }
        match get(map, "name") {
            Some((_, v)) => decl.name = string(w.d, v, "name"),
            None => w.d.error(
                yaml::span(root),
                "",
                "missing `name` (what this policy is for)",
            ),
        }
        match get(map, "extends") {
            Some((_, v)) => {
                decl.extends = one_of(
                    w.d,
                    v,
                    "extends",
                    &[("prod", Preset::Prod), ("dev", Preset::Dev)],
                )
                .map(|p| (p, yaml::span(v)));
            }
            None => w.d.error(
                yaml::span(root),
                "",
                "missing `extends` (`prod` for production, `dev` for development)",
            ),
        }
    }

    for (key, path, _, value) in w.each(map, "") {
        match key.as_str() {
            "tenant" => walk_tenant(&mut w, value, &path, &mut decl),
            "defaults" => decl.defaults = walk_defaults(&mut w, value, &path),
            "models" => decl.models = walk_models(&mut w, value, &path),
            "writes" => {
                if let Some(m) = expect_mapping(w.d, value, &path) {
                    check_keys(w.d, m, &path, &["dry_run_required_above"]);
                    for (k, p, _, v) in w.each(m, &path) {
                        if k == "dry_run_required_above" {
                            decl.dry_run_required_above =
                                int_at_least(w.d, v, &p, 1, i128::from(u32::MAX));
                        }
                    }
                }
            }
            "approvals" => decl.approvals = walk_approvals(&mut w, value, &path, mode),
            "quotas" => decl.quotas = walk_quotas(&mut w, value, &path),
            "budget_store" => decl.budget_store = walk_budget_store(&mut w, value, &path),
            "audit" => decl.audit = walk_audit(&mut w, value, &path),
            "deployment" => {
                if let Some(m) = expect_mapping(w.d, value, &path) {
                    check_keys(w.d, m, &path, &["instances"]);
                    for (k, p, _, v) in w.each(m, &path) {
                        if k == "instances" {
                            decl.deployment_instances = int_at_least(w.d, v, &p, 1, 10_000)
                                .and_then(|n| u32::try_from(n).ok());
                        }
                    }
                }
            }
            "rate_limits" => decl.rate_limits = super::rate_limits::walk(w.d, value, &path),
            // version, name, extends were read above; unknown keys were reported by check_keys.
            _ => {}
        }
    }
    decl.spans = w.spans;
    decl
}

fn walk_tenant(w: &mut Walker<'_>, node: &Node, path: &str, decl: &mut Decl) {
    let Some(m) = expect_mapping(w.d, node, path) else {
        return;
    };
    check_keys(w.d, m, path, &["setting", "column"]);
    for (k, p, _, v) in w.each(m, path) {
        match k.as_str() {
            "setting" => {
                if let Some(s) = string(w.d, v, &p) {
                    if valid_setting_name(&s) {
                        decl.tenant_setting = Some(s);
                    } else {
                        w.d.error(
                            yaml::span(v),
                            &p,
                            format!(
                                "`{s}` is not a custom setting name: expected `prefix.name` in lowercase letters, digits and `_`, e.g. `app.tenant_id`"
                            ),
                        );
                    }
                }
            }
            "column" => decl.tenant_column = string(w.d, v, &p).map(|s| (s, yaml::span(v))),
            _ => {}
        }
    }
}

fn valid_setting_name(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if ok(a) && ok(b))
}

/// A name agents and tool schemas use: letters, digits and `_`, not starting with a digit.
pub(crate) fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn walk_defaults(w: &mut Walker<'_>, node: &Node, path: &str) -> DefaultsDecl {
    let mut out = DefaultsDecl::default();
    let Some(m) = expect_mapping(w.d, node, path) else {
        return out;
    };
    check_keys(w.d, m, path, &["fields", "budgets", "require_reason"]);
    for (k, p, _, v) in w.each(m, path) {
        match k.as_str() {
            "fields" => {
                if let Some(f) = expect_mapping(w.d, v, &p) {
                    check_keys(w.d, f, &p, &["default", "deny", "mask", "hash"]);
                    for (fk, fp, _, fv) in w.each(f, &p) {
                        match fk.as_str() {
                            "default" => {
                                out.default_action = one_of(
                                    w.d,
                                    fv,
                                    &fp,
                                    &[("allow", FieldAction::Allow), ("deny", FieldAction::Deny)],
                                );
                            }
                            "deny" => out.patterns.deny = patterns(w, fv, &fp),
                            "mask" => out.patterns.mask = patterns(w, fv, &fp),
                            "hash" => out.patterns.hash = patterns(w, fv, &fp),
                            _ => {}
                        }
                    }
                }
            }
            "budgets" => out.budgets = walk_budgets(w, v, &p),
            "require_reason" => out.require_reason = boolean(w.d, v, &p),
            _ => {}
        }
    }
    out
}

/// A list of glob patterns; each must compile.
fn patterns(w: &mut Walker<'_>, node: &Node, path: &str) -> Vec<(String, Span)> {
    let list = string_list(w.d, node, path);
    let mut out = Vec::new();
    for (p, s) in list {
        match globset::GlobBuilder::new(&p).case_insensitive(true).build() {
            Ok(_) => {
                w.note(&join(path, &p), s);
                out.push((p, s));
            }
            Err(e) => w.d.error(
                s,
                path,
                format!("`{p}` is not a valid glob pattern: {}", e.kind()),
            ),
        }
    }
    out
}

fn walk_budgets(w: &mut Walker<'_>, node: &Node, path: &str) -> BudgetsDecl {
    let mut out = BudgetsDecl::default();
    let Some(m) = expect_mapping(w.d, node, path) else {
        return out;
    };
    check_keys(
        w.d,
        m,
        path,
        &[
            "max_rows",
            "max_scan_rows",
            "statement_timeout_ms",
            "max_join_depth",
            "max_writes_per_minute",
            "max_affected_rows",
        ],
    );
    let big = i128::from(i64::MAX);
    for (k, p, _, v) in w.each(m, path) {
        match k.as_str() {
            "max_rows" => {
                if is_null(v) {
                    out.max_rows = Some(None);
                } else if let Some(rm) = expect_mapping(w.d, v, &p) {
                    check_keys(w.d, rm, &p, MAX_ROWS_KEYS);
                    let mut caps = Vec::new();
                    for (tool, tp, _, tv) in w.each(rm, &p) {
                        if !MAX_ROWS_KEYS.contains(&tool.as_str()) {
                            continue;
                        }
                        if is_null(tv) {
                            caps.push((tool, None));
                        } else if let Some(n) = int_at_least(w.d, tv, &tp, 1, big) {
                            caps.push((tool, Some(n)));
                        }
                    }
                    out.max_rows = Some(Some(caps));
                }
            }
            "max_scan_rows" => out.max_scan_rows = nullable_int(w, v, &p, big),
            "statement_timeout_ms" => {
                out.statement_timeout_ms = nullable_int(w, v, &p, i128::from(i32::MAX));
            }
            "max_join_depth" => {
                if is_null(v) {
                    w.d.error(
                        yaml::span(v),
                        &p,
                        "max_join_depth cannot be unlimited: give a depth (0 disables includes)",
                    );
                } else if let Some(n) = yaml::integer(w.d, v, &p) {
                    if n < 0 {
                        w.d.error(
                            yaml::span(v),
                            &p,
                            format!("expected a depth of 0 or more, found {n}"),
                        );
                    } else if n > i128::from(JOIN_DEPTH_HARD_LIMIT) {
                        w.d.error(
                            yaml::span(v),
                            &p,
                            format!("a join depth of {n} is beyond the hard limit of {JOIN_DEPTH_HARD_LIMIT} (lint wants 3 or less)"),
                        );
                    } else {
                        out.max_join_depth = u32::try_from(n).ok();
                    }
                }
            }
            "max_writes_per_minute" => {
                out.max_writes_per_minute = nullable_int(w, v, &p, i128::from(u32::MAX))
                    .map(|o| o.and_then(|n| u32::try_from(n).ok()));
            }
            "max_affected_rows" => out.max_affected_rows = nullable_int(w, v, &p, big),
            _ => {}
        }
    }
    out
}

/// A positive integer, or `null` for "no limit". An invalid value is reported and left unset.
fn nullable_int(w: &mut Walker<'_>, node: &Node, path: &str, max: i128) -> Setting<u64> {
    if is_null(node) {
        return Some(None);
    }
    int_at_least(w.d, node, path, 1, max).map(Some)
}

fn walk_models(w: &mut Walker<'_>, node: &Node, path: &str) -> Vec<ModelDecl> {
    let Some(m) = expect_mapping(w.d, node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, p, span, v) in w.each(m, path) {
        if !valid_identifier(&name) {
            w.d.error(
                span,
                &p,
                format!("model name `{name}` must be letters, digits and `_`, not starting with a digit"),
            );
            continue;
        }
        if let Some(model) = walk_model(w, name, span, v, &p) {
            out.push(model);
        }
    }
    out
}

const MODEL_KEYS: &[&str] = &[
    "table",
    "schema",
    "primary_key",
    "tenant_column",
    "tenant_exempt",
    "tools",
    "fields",
    "deny",
    "mask",
    "hash",
    "relations",
    "writable_fields",
    "require_reason",
    "soft_delete",
    "budgets",
];

fn walk_model(
    w: &mut Walker<'_>,
    name: String,
    span: Span,
    node: &Node,
    path: &str,
) -> Option<ModelDecl> {
    let m = expect_mapping(w.d, node, path)?;
    check_keys(w.d, m, path, MODEL_KEYS);
    let mut model = ModelDecl {
        name,
        span,
        table: None,
        schema: None,
        primary_key: None,
        tenant_column: None,
        tenant_exempt: None,
        tools: None,
        fields: Vec::new(),
        patterns: PatternDecl::default(),
        relations: Vec::new(),
        writable_fields: Vec::new(),
        require_reason: None,
        soft_delete: None,
        budgets: BudgetsDecl::default(),
    };
    for (k, p, _, v) in w.each(m, path) {
        let spanned = |w: &mut Walker<'_>| string(w.d, v, &p).map(|s| (s, yaml::span(v)));
        match k.as_str() {
            "table" => model.table = spanned(w),
            "schema" => model.schema = spanned(w),
            "primary_key" => model.primary_key = spanned(w),
            "tenant_column" => model.tenant_column = spanned(w),
            "tenant_exempt" => {
                if let Node::Scalar(_) = v {
                    model.tenant_exempt = spanned(w);
                } else {
                    w.d.error(
                        yaml::span(v),
                        &p,
                        format!(
                            "expected the reason this model needs no tenant scope, as a string; found {}",
                            yaml::describe(v)
                        ),
                    );
                }
            }
            "tools" => {
                let tools = string_list(w.d, v, &p);
                let mut ok = Vec::new();
                for (t, s) in tools {
                    if MODEL_TOOLS.contains(&t.as_str()) {
                        w.note(&join(&p, &t), s);
                        ok.push((t, s));
                    } else if t == "db_describe_schema" || t == "db_approval_status" {
                        w.d.error(
                            s,
                            &p,
                            format!("`{t}` is not a per-model tool: every model with at least one tool is described, and approval status is always available"),
                        );
                    } else {
                        let hint = yaml::did_you_mean(&t, MODEL_TOOLS.iter().copied())
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_else(|| {
                                format!("; expected one of: {}", MODEL_TOOLS.join(", "))
                            });
                        w.d.error(s, &p, format!("unknown tool `{t}`{hint}"));
                    }
                }
                model.tools = Some(ok);
            }
            "fields" => model.fields = walk_fields(w, v, &p),
            "deny" => model.patterns.deny = patterns(w, v, &p),
            "mask" => model.patterns.mask = patterns(w, v, &p),
            "hash" => model.patterns.hash = patterns(w, v, &p),
            "relations" => model.relations = walk_relations(w, v, &p),
            "writable_fields" => {
                model.writable_fields = string_list(w.d, v, &p);
                for (f, s) in &model.writable_fields {
                    w.note(&join(&p, f), *s);
                }
            }
            "require_reason" => model.require_reason = boolean(w.d, v, &p),
            "soft_delete" => model.soft_delete = spanned(w),
            "budgets" => model.budgets = walk_budgets(w, v, &p),
            _ => {}
        }
    }
    Some(model)
}

fn walk_fields(w: &mut Walker<'_>, node: &Node, path: &str) -> Vec<ExplicitDecl> {
    let Some(m) = expect_mapping(w.d, node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (column, p, span, v) in w.each(m, path) {
        match v {
            Node::Scalar(_) => {
                if let Some(action) = one_of(w.d, v, &p, ACTIONS) {
                    out.push(ExplicitDecl {
                        column,
                        action,
                        reason: None,
                        span,
                    });
                }
            }
            Node::Mapping(fm) => {
                check_keys(w.d, fm, &p, &["action", "reason"]);
                let action = match get(fm, "action") {
                    Some((_, av)) => one_of(w.d, av, &join(&p, "action"), ACTIONS),
                    None => {
                        w.d.error(span, &p, "missing `action` (allow, deny, mask or hash)");
                        None
                    }
                };
                let reason = get(fm, "reason").and_then(|(_, rv)| string(w.d, rv, &join(&p, "reason")));
                if let Some(action) = action {
                    out.push(ExplicitDecl {
                        column,
                        action,
                        reason,
                        span,
                    });
                }
            }
            Node::Sequence(_) => w.d.error(
                yaml::span(v),
                &p,
                "expected an action (allow, deny, mask, hash) or `{action: ..., reason: ...}`, found a list",
            ),
        }
    }
    out
}

fn walk_relations(w: &mut Walker<'_>, node: &Node, path: &str) -> Vec<RelationDecl> {
    let Some(m) = expect_mapping(w.d, node, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, p, span, v) in w.each(m, path) {
        if !valid_identifier(&name) {
            w.d.error(
                span,
                &p,
                format!("relation name `{name}` must be letters, digits and `_`"),
            );
            continue;
        }
        let Some(rm) = expect_mapping(w.d, v, &p) else {
            continue;
        };
        check_keys(w.d, rm, &p, &["model", "foreign_key", "kind"]);
        let mut rel = RelationDecl {
            name,
            span,
            model: None,
            foreign_key: None,
            kind: None,
        };
        for key in ["model", "foreign_key", "kind"] {
            if get(rm, key).is_none() {
                w.d.error(span, &p, format!("missing `{key}`"));
            }
        }
        for (k, kp, _, kv) in w.each(rm, &p) {
            match k.as_str() {
                "model" => rel.model = string(w.d, kv, &kp).map(|s| (s, yaml::span(kv))),
                "foreign_key" => {
                    rel.foreign_key = string(w.d, kv, &kp).map(|s| (s, yaml::span(kv)))
                }
                "kind" => {
                    rel.kind = one_of(
                        w.d,
                        kv,
                        &kp,
                        &[
                            ("belongs_to", RelationKind::BelongsTo),
                            ("has_many", RelationKind::HasMany),
                        ],
                    );
                }
                _ => {}
            }
        }
        out.push(rel);
    }
    out
}

fn walk_approvals(w: &mut Walker<'_>, node: &Node, path: &str, mode: Mode) -> ApprovalsDecl {
    let mut out = ApprovalsDecl::default();
    let Some(m) = expect_mapping(w.d, node, path) else {
        return out;
    };
    let keys: &[&str] = match mode {
        Mode::File => &["sla", "approvers", "rules"],
        Mode::Preset => &["sla"],
    };
    check_keys(w.d, m, path, keys);
    for (k, p, _, v) in w.each(m, path) {
        match k.as_str() {
            "sla" => out.sla_seconds = duration(w.d, v, &p, false),
            "approvers" => out.approvers = Some(approvers(w, v, &p)),
            "rules" if mode == Mode::File => {
                let Some(items) = expect_sequence(w.d, v, &p) else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    if let Some(rule) = walk_rule(w, item, &format!("{p}[{i}]")) {
                        if out.rules.iter().any(|r| r.name == rule.name) {
                            w.d.error(
                                rule.span,
                                &format!("{p}[{i}]"),
                                format!("rule name `{}` is used twice", rule.name),
                            );
                        } else {
                            out.rules.push(rule);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn approvers(w: &mut Walker<'_>, node: &Node, path: &str) -> Vec<(String, Span)> {
    let list = string_list(w.d, node, path);
    if list.is_empty() && matches!(node, Node::Sequence(_)) {
        w.d.error(
            yaml::span(node),
            path,
            "expected at least one approver role",
        );
    }
    list
}

fn walk_rule(w: &mut Walker<'_>, node: &Node, path: &str) -> Option<RuleDecl> {
    let m = expect_mapping(w.d, node, path)?;
    check_keys(
        w.d,
        m,
        path,
        &[
            "name",
            "model",
            "tools",
            "fields",
            "when",
            "approvers",
            "sla",
        ],
    );
    let name = match get(m, "name") {
        Some((_, v)) => string(w.d, v, &join(path, "name"))?,
        None => {
            w.d.error(
                yaml::span(node),
                path,
                "missing `name` (a short id such as `refund-over-1000`)",
            );
            return None;
        }
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        w.d.error(
            yaml::span(node),
            &join(path, "name"),
            format!("rule name `{name}` must be letters, digits, `-` and `_`"),
        );
        return None;
    }
    // Rules are cited by name, so later positions are recorded under it.
    let rpath = format!("approvals.rules.{name}");
    w.note(&rpath, yaml::span(node));
    let mut rule = RuleDecl {
        name,
        span: yaml::span(node),
        model: None,
        tools: None,
        fields: Vec::new(),
        when: None,
        approvers: None,
        sla_seconds: None,
    };
    if get(m, "model").is_none() {
        w.d.error(yaml::span(node), path, "missing `model`");
    }
    for (k, _, ks, v) in w.each(m, path) {
        let p = join(&rpath, &k);
        w.note(&p, ks);
        match k.as_str() {
            "model" => rule.model = string(w.d, v, &p).map(|s| (s, yaml::span(v))),
            "tools" => {
                let tools = string_list(w.d, v, &p);
                for (t, s) in &tools {
                    if !WRITE_TOOLS.contains(&t.as_str()) {
                        let hint = yaml::did_you_mean(t, WRITE_TOOLS.iter().copied())
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_default();
                        w.d.error(
                            *s,
                            &p,
                            format!(
                                "`{t}` is not a write tool; approval rules gate {}{hint}",
                                WRITE_TOOLS.join(", ")
                            ),
                        );
                    }
                }
                rule.tools = Some(
                    tools
                        .into_iter()
                        .filter(|(t, _)| WRITE_TOOLS.contains(&t.as_str()))
                        .collect(),
                );
            }
            "fields" => rule.fields = string_list(w.d, v, &p),
            "when" => {
                let Some(wm) = expect_mapping(w.d, v, &p) else {
                    continue;
                };
                check_keys(w.d, wm, &p, &["field", "greater_than"]);
                let field = match get(wm, "field") {
                    Some((_, fv)) => {
                        string(w.d, fv, &join(&p, "field")).map(|s| (s, yaml::span(fv)))
                    }
                    None => {
                        w.d.error(yaml::span(v), &p, "missing `field`");
                        None
                    }
                };
                let gt = match get(wm, "greater_than") {
                    Some((_, gv)) => number(w.d, gv, &join(&p, "greater_than")),
                    None => {
                        w.d.error(yaml::span(v), &p, "missing `greater_than`");
                        None
                    }
                };
                if let (Some(field), Some(greater_than)) = (field, gt) {
                    rule.when = Some(ThresholdDecl {
                        field,
                        greater_than,
                    });
                }
            }
            "approvers" => rule.approvers = Some(approvers(w, v, &p)),
            "sla" => rule.sla_seconds = duration(w.d, v, &p, false),
            _ => {}
        }
    }
    Some(rule)
}

fn walk_quotas(w: &mut Walker<'_>, node: &Node, path: &str) -> QuotasDecl {
    let mut out = QuotasDecl::default();
    let Some(m) = expect_mapping(w.d, node, path) else {
        return out;
    };
    check_keys(w.d, m, path, &["calls_per_hour", "rows_per_hour"]);
    let big = i128::from(i64::MAX);
    for (k, p, _, v) in w.each(m, path) {
        match k.as_str() {
            "calls_per_hour" => out.calls_per_hour = nullable_int(w, v, &p, big),
            "rows_per_hour" => out.rows_per_hour = nullable_int(w, v, &p, big),
            _ => {}
        }
    }
    out
}

fn walk_budget_store(w: &mut Walker<'_>, node: &Node, path: &str) -> Option<BudgetStoreConfig> {
    match node {
        Node::Scalar(_) => one_of(w.d, node, path, &[("memory", BudgetStoreConfig::Memory)]),
        Node::Mapping(m) => {
            check_keys(w.d, m, path, &["redis"]);
            let (_, rv) = get(m, "redis")?;
            let rp = join(path, "redis");
            let rm = expect_mapping(w.d, rv, &rp)?;
            check_keys(w.d, rm, &rp, &["url_env"]);
            if rm.keys().any(|k| k.as_str() == "url") {
                // check_keys already reported it; say why there is no `url` key.
                w.d.error(
                    yaml::span(rv),
                    &rp,
                    "the Redis URL is read from an environment variable so the policy never holds credentials: use `url_env: REDIS_URL`",
                );
            }
            let (_, uv) = get(rm, "url_env").or_else(|| {
                w.d.error(
                    yaml::span(rv),
                    &rp,
                    "missing `url_env` (the environment variable holding the Redis URL)",
                );
                None
            })?;
            let up = join(&rp, "url_env");
            let var = string(w.d, uv, &up)?;
            if !var
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                w.d.error(
                    yaml::span(uv),
                    &up,
                    format!(
                        "`{var}` is not an environment variable name (expected e.g. `REDIS_URL`)"
                    ),
                );
                return None;
            }
            Some(BudgetStoreConfig::Redis { url_env: var })
        }
        Node::Sequence(_) => {
            w.d.error(
                yaml::span(node),
                path,
                "expected `memory` or `{redis: {url_env: REDIS_URL}}`, found a list",
            );
            None
        }
    }
}

fn walk_audit(w: &mut Walker<'_>, node: &Node, path: &str) -> Option<AuditDecl> {
    let m = expect_mapping(w.d, node, path)?;
    check_keys(w.d, m, path, &["sinks", "retention"]);
    let mut out = AuditDecl {
        sinks: Vec::new(),
        retention: None,
        span: yaml::span(node),
    };
    for (k, p, _, v) in w.each(m, path) {
        match k.as_str() {
            "sinks" => {
                let Some(items) = expect_sequence(w.d, v, &p) else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{p}[{i}]");
                    let sink = match item {
                        Node::Scalar(_) => one_of(
                            w.d,
                            item,
                            &ip,
                            &[
                                ("postgres", Some(AuditSinkConfig::Postgres)),
                                ("tracing", Some(AuditSinkConfig::Tracing)),
                                ("jsonl", None),
                            ],
                        )
                        .and_then(|s| {
                            if s.is_none() {
                                w.d.error(
                                    yaml::span(item),
                                    &ip,
                                    "a JSONL sink needs a file: `{jsonl: path/to/audit.jsonl}`",
                                );
                            }
                            s
                        }),
                        Node::Mapping(sm) => {
                            check_keys(w.d, sm, &ip, &["jsonl"]);
                            get(sm, "jsonl").and_then(|(_, jv)| {
                                let jp = join(&ip, "jsonl");
                                let path = string(w.d, jv, &jp)?;
                                check_jsonl_placeholders(w.d, jv, &jp, &path);
                                Some(AuditSinkConfig::Jsonl { path })
                            })
                        }
                        Node::Sequence(_) => {
                            w.d.error(
                                yaml::span(item),
                                &ip,
                                "expected `postgres`, `tracing` or `{jsonl: path}`, found a list",
                            );
                            None
                        }
                    };
                    if let Some(sink) = sink {
                        let label = match &sink {
                            AuditSinkConfig::Postgres => "postgres",
                            AuditSinkConfig::Jsonl { .. } => "jsonl",
                            AuditSinkConfig::Tracing => "tracing",
                        };
                        w.note(&join(&p, label), yaml::span(item));
                        if out.sinks.contains(&sink) {
                            w.d.error(yaml::span(item), &ip, "this sink is listed twice");
                        } else {
                            out.sinks.push(sink);
                        }
                    }
                }
            }
            "retention" => {
                let Some(rm) = expect_mapping(w.d, v, &p) else {
                    continue;
                };
                check_keys(w.d, rm, &p, &["hot", "warm", "cold"]);
                let mut days = [None, None, None];
                for (i, tier) in ["hot", "warm", "cold"].iter().enumerate() {
                    match get(rm, tier) {
                        Some((_, tv)) => {
                            let tp = join(&p, tier);
                            if let Some(secs) = duration(w.d, tv, &tp, false) {
                                if secs % 86_400 != 0 {
                                    w.d.error(
                                        yaml::span(tv),
                                        &tp,
                                        "retention is counted in whole days (e.g. `90d`, `1y`)",
                                    );
                                } else {
                                    days[i] = u32::try_from(secs / 86_400).ok();
                                }
                            }
                        }
                        None => w.d.error(
                            yaml::span(v),
                            &p,
                            format!("missing `{tier}` (e.g. hot: 90d, warm: 365d, cold: 7y)"),
                        ),
                    }
                }
                if let [Some(hot), Some(warm), Some(cold)] = days {
                    if hot > warm || warm > cold {
                        w.d.error(
                            yaml::span(v),
                            &p,
                            format!("tiers are ages and must not decrease: hot {hot}d, warm {warm}d, cold {cold}d"),
                        );
                    } else {
                        out.retention = Some(Retention {
                            hot_days: hot,
                            warm_days: warm,
                            cold_days: cold,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// Every `{name}` in a JSONL sink's path must be one of [`super::JSONL_PLACEHOLDERS`].
fn check_jsonl_placeholders(d: &mut Diag, node: &Node, path: &str, value: &str) {
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            break;
        };
        let name = &after[..close];
        if !super::JSONL_PLACEHOLDERS.contains(&name) {
            let hint = super::yaml::did_you_mean(name, super::JSONL_PLACEHOLDERS.into_iter())
                .map(|c| format!("; did you mean `{{{c}}}`?"))
                .unwrap_or_default();
            d.error(
                super::yaml::span(node),
                path,
                format!(
                    "unknown placeholder `{{{name}}}` in the JSONL path (expected `{{pid}}` or `{{instance}}`){hint}"
                ),
            );
        }
        rest = &after[close + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names() {
        assert!(valid_setting_name("app.tenant_id"));
        assert!(!valid_setting_name("tenant_id"));
        assert!(!valid_setting_name("app.tenant.id"));
        assert!(!valid_setting_name("app.Tenant"));
        assert!(!valid_setting_name("app.tenant'; drop"));
    }

    #[test]
    fn identifiers() {
        assert!(valid_identifier("order_items"));
        assert!(!valid_identifier("1orders"));
        assert!(!valid_identifier("orders;--"));
        assert!(!valid_identifier(""));
    }
}
