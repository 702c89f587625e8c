//! The validated policy: what the loader produces and every other part reads.
//!
//! A [`Policy`] is built only by the loader (`policy::load`), which has already merged the preset
//! (`extends: prod|dev`), resolved wildcard patterns against the live catalog into one action per
//! column, and rejected every contradiction. Consumers therefore never re-interpret YAML, never
//! match patterns themselves, and never see an unresolved default.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A position in the policy file (1-based), so findings and SARIF results can point at the line
/// that governs them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Prod,
    Dev,
}

/// What happens to a field on every path: output, filters, ordering, grouping, aggregates,
/// includes and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAction {
    /// Returned as stored; filterable, orderable, aggregatable.
    Allow,
    /// Never returned, never usable in any argument; absent from `db_describe_schema`.
    Deny,
    /// Returned format-aware masked (emails keep their domain, phones their last digits); the
    /// only filter allowed on it is `is_null` (equality would be a one-guess-per-call oracle), and
    /// `count` the only aggregate; never order/group/range/prefix/min/max.
    Mask,
    /// Returned as a keyed HMAC, comparable but not reversible; same input restrictions as `Mask`.
    Hash,
}

/// Why a column has the action it has; lint and reports cite it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleSource {
    /// `fields: {email: mask}` on the model.
    Explicit { span: Span },
    /// A wildcard pattern such as `*password*` (model-level or global).
    Pattern { pattern: String, span: Span },
    /// The preset's default action for columns the policy does not mention.
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnPolicy {
    pub name: String,
    /// The catalog type, e.g. `text`, `numeric`, `timestamp with time zone`.
    pub pg_type: String,
    pub nullable: bool,
    pub action: FieldAction,
    pub source: RuleSource,
    /// Stated reason, e.g. why a PII column is denied rather than masked (RED-2).
    pub reason: Option<String>,
    /// Has an index whose first column is this one (used in scan-budget suggestions).
    pub indexed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// This model holds the foreign key (`orders.customer_id -> customers.id`).
    BelongsTo,
    /// The target holds the foreign key (`customers.id <- orders.customer_id`).
    HasMany,
}

/// A relation the agent may `include`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    pub name: String,
    pub target: String,
    pub kind: RelationKind,
    /// The column on this model (`BelongsTo`) or on the target (`HasMany`) holding the key.
    pub foreign_key: String,
    pub span: Span,
}

/// The budgets in force for one model (preset, then global `budgets:`, then the model's own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    /// Maximum rows a tool may return, per tool name (`db_query`, `db_aggregate`, ...).
    pub max_rows: BTreeMap<String, u64>,
    /// Estimated rows scanned (from EXPLAIN, summed over base relations) above which a read is
    /// refused before it runs.
    pub max_scan_rows: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
    pub max_join_depth: u32,
    pub max_writes_per_minute: Option<u32>,
    /// Maximum rows one write call may affect.
    pub max_affected_rows: Option<u64>,
}

impl Budgets {
    /// The row cap for `tool`, falling back to the `default` entry.
    pub fn max_rows_for(&self, tool: &str) -> Option<u64> {
        self.max_rows
            .get(tool)
            .or_else(|| self.max_rows.get("default"))
            .copied()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPolicy {
    /// The model name agents use (usually the table name).
    pub name: String,
    pub schema: String,
    pub table: String,
    pub primary_key: String,
    /// The tenant column; `None` only with `tenant_exempt_reason` (global reference data).
    pub tenant_column: Option<String>,
    pub tenant_exempt_reason: Option<String>,
    /// Every catalog column, in catalog order, with its resolved action.
    pub columns: Vec<ColumnPolicy>,
    pub relations: BTreeMap<String, Relation>,
    /// Which tools may touch this model at all (reads and writes).
    pub tools: BTreeSet<String>,
    pub writable_fields: BTreeSet<String>,
    pub require_reason: bool,
    /// `deleted_at`-style column: `db_delete` sets it instead of deleting, reads hide such rows.
    pub soft_delete_column: Option<String>,
    pub budgets: Budgets,
    pub span: Span,
}

impl ModelPolicy {
    pub fn column(&self, name: &str) -> Option<&ColumnPolicy> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn action(&self, column: &str) -> Option<FieldAction> {
        self.column(column).map(|c| c.action)
    }

    /// Columns an agent may see in output (allow, mask, hash), in catalog order.
    pub fn visible_columns(&self) -> impl Iterator<Item = &ColumnPolicy> {
        self.columns
            .iter()
            .filter(|c| c.action != FieldAction::Deny)
    }
}

/// When a write needs a person's approval before it runs (WRT-3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRule {
    pub name: String,
    pub model: String,
    /// Tools it applies to; empty means every write tool.
    pub tools: BTreeSet<String>,
    /// Gated when any of these fields is written; empty means "not by fields".
    pub fields: BTreeSet<String>,
    /// Gated when `field` of the written data is greater than `value` (e.g. refund amount > 1000).
    pub threshold: Option<Threshold>,
    /// Roles allowed to approve (`admin`, ...).
    pub approvers: BTreeSet<String>,
    pub sla_seconds: u64,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub field: String,
    pub greater_than: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WritePolicy {
    /// A dry run is required before any write that would touch more than this many rows (WRT-6).
    pub dry_run_required_above: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quotas {
    pub calls_per_hour: Option<u64>,
    pub rows_per_hour: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BudgetStoreConfig {
    Memory,
    Redis { url_env: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditSinkConfig {
    Postgres,
    /// `path` may carry [`JSONL_PLACEHOLDERS`] (see [`jsonl_path`]).
    Jsonl {
        path: String,
    },
    Tracing,
}

/// The placeholders a JSONL sink's path may carry, so that several `preflight serve` instances
/// sharing one policy each write their own hash-chained file (a JSONL file is locked by its one
/// writer): `{pid}`, the process id, and `{instance}`, the instance's name (`serve --instance`,
/// else the process id).
pub const JSONL_PLACEHOLDERS: [&str; 2] = ["pid", "instance"];

/// A JSONL sink's path with its placeholders filled in for this process: `{pid}` with its id,
/// `{instance}` with `instance` (the process id when `None`).
pub fn jsonl_path(template: &str, instance: Option<&str>) -> String {
    let pid = std::process::id().to_string();
    template
        .replace("{pid}", &pid)
        .replace("{instance}", instance.unwrap_or(&pid))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub hot_days: u32,
    pub warm_days: u32,
    pub cold_days: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPolicy {
    pub sinks: Vec<AuditSinkConfig>,
    pub retention: Option<Retention>,
    pub span: Span,
}

/// How the enforcement layer is deployed, as the policy declares it (`deployment: {instances: N}`).
/// Lint reads it: several instances need a shared budget store (BUD-6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// `None` when the policy does not say.
    pub instances: Option<u32>,
}

/// Wildcard patterns for one level (global or one model), sorted. Patterns are globs matched
/// case-insensitively against column names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternSet {
    pub deny: BTreeSet<String>,
    pub mask: BTreeSet<String>,
    pub hash: BTreeSet<String>,
}

/// A field rule as written under a model's `fields:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplicitField {
    pub action: FieldAction,
    pub reason: Option<String>,
    pub span: Span,
}

/// One model's declared field rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFieldRules {
    pub patterns: PatternSet,
    pub explicit: BTreeMap<String, ExplicitField>,
}

/// The field rules as declared (preset merged in), before they are resolved against the catalog
/// into [`ModelPolicy::columns`]. Kept so lint and the hash work the same with or without a
/// catalog, and so a column's action can be explained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRules {
    /// The action for a column no rule mentions (`prod`: deny, `dev`: allow).
    pub default_action: FieldAction,
    /// The preset's patterns and the file's `defaults.fields`, merged.
    pub global: PatternSet,
    pub models: BTreeMap<String, ModelFieldRules>,
}

impl Default for FieldRules {
    /// No declared rules and a deny default: what a policy built in code (tests) gets when it
    /// resolves its columns itself.
    fn default() -> Self {
        Self {
            default_action: FieldAction::Deny,
            global: PatternSet::default(),
            models: BTreeMap::new(),
        }
    }
}

/// The validated policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub extends: Preset,
    /// The file it came from, for messages and SARIF locations.
    pub path: String,
    /// The transaction-local setting that row-level security reads (default `app.tenant_id`).
    pub tenant_setting: String,
    pub models: BTreeMap<String, ModelPolicy>,
    pub approvals: Vec<ApprovalRule>,
    pub writes: WritePolicy,
    pub quotas: Quotas,
    pub budget_store: BudgetStoreConfig,
    pub audit: AuditPolicy,
    #[serde(default)]
    pub deployment: Deployment,
    /// Request rates a served layer enforces before the tools (`rate_limits:`); absent from the
    /// hash when the policy has none, so older policies keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<super::rate_limits::RateLimits>,
    #[serde(default)]
    pub field_rules: FieldRules,
    /// Where each top-level and model key sits in the file (`models.customers.fields.email`), so
    /// lint findings and SARIF results can cite the governing line.
    pub spans: BTreeMap<String, Span>,
    /// SHA-256 over the canonical form; appears in every audit row, report and health response.
    pub hash: String,
}

impl Policy {
    pub fn model(&self, name: &str) -> Option<&ModelPolicy> {
        self.models.get(name)
    }

    /// The span of a dotted key path, falling back to its nearest recorded ancestor.
    pub fn span_of(&self, path: &str) -> Option<Span> {
        let mut p = path;
        loop {
            if let Some(s) = self.spans.get(p) {
                return Some(*s);
            }
            p = &p[..p.rfind('.')?];
        }
    }
}
