//! Policy files: the validated model, the YAML loader, the live catalog it is checked against,
//! the stable hash, lint and regression cases.

mod cases;
mod catalog;
mod decl;
mod diff;
mod hash;
mod lint;
mod load;
mod model;
mod rate_limits;
mod yaml;

pub use cases::{
    coverage, load_cases, load_cases_str, render_cases_table, run_cases, Actual, Case, CaseOutcome,
    CaseReport, Cases, Coverage, CoverageItem, Expectation,
};
pub use catalog::{
    is_numeric_type, is_text_type, Catalog, CatalogError, ColumnInfo, ForeignKey, TableInfo,
    TableKind, TENANT_COLUMN_NAMES,
};
pub use decl::{
    FIELD_WRITE_TOOLS, JOIN_DEPTH_HARD_LIMIT, MAX_ROWS_KEYS, MODEL_TOOLS, READ_TOOLS, WRITE_TOOLS,
};
pub use diff::{diff, thousands, Change, Direction, PolicyDiff, Side};
pub use hash::{canonical_json, policy_hash};
pub use lint::{
    admin_policy_beside, lint, render_table, render_text, to_json as lint_json, LintFinding,
    LintRule, Severity, ADMIN_FIELD_PATTERNS, FREE_TEXT_PATTERNS, HIGH_STAKES_PATTERNS,
    PII_PATTERNS, SECRET_WILDCARDS,
};
pub use load::{load, load_str, resolve_field, DEFAULT_TENANT_SETTING, DEV_PRESET, PROD_PRESET};
pub use model::*;
pub use rate_limits::{RateLimit, RateLimits};
pub use yaml::{PolicyError, PolicyErrors};
