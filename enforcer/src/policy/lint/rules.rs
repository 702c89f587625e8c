//! The lint rules as data: their codes, the checklist items they verify, their titles, the
//! findings they produce and the name patterns they classify columns by.

use std::fmt;

use serde::Serialize;

use crate::policy::Span;

/// How much a finding matters: errors fail `preflight policy lint` (exit 1), warnings are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One lint rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LintRule {
    TenantScope,
    RelationTenant,
    AdminSeparation,
    SecretWildcards,
    PiiMasked,
    FreeText,
    ScanBudget,
    StatementTimeout,
    MaxRows,
    JoinDepth,
    TenantQuotas,
    SharedBudgetStore,
    ProdPreset,
    WriteReason,
    ApprovalGate,
    ApprovalSla,
    WriteRate,
    AuditSink,
    AuditRetention,
    Explained,
}

impl LintRule {
    pub const ALL: [LintRule; 20] = [
        LintRule::TenantScope,
        LintRule::RelationTenant,
        LintRule::AdminSeparation,
        LintRule::SecretWildcards,
        LintRule::PiiMasked,
        LintRule::FreeText,
        LintRule::ScanBudget,
        LintRule::StatementTimeout,
        LintRule::MaxRows,
        LintRule::JoinDepth,
        LintRule::TenantQuotas,
        LintRule::SharedBudgetStore,
        LintRule::ProdPreset,
        LintRule::WriteReason,
        LintRule::ApprovalGate,
        LintRule::ApprovalSla,
        LintRule::WriteRate,
        LintRule::AuditSink,
        LintRule::AuditRetention,
        LintRule::Explained,
    ];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            LintRule::TenantScope => "lint.tenant_scope",
            LintRule::RelationTenant => "lint.relation_tenant",
            LintRule::AdminSeparation => "lint.admin_separation",
            LintRule::SecretWildcards => "lint.secret_wildcards",
            LintRule::PiiMasked => "lint.pii_masked",
            LintRule::FreeText => "lint.free_text",
            LintRule::ScanBudget => "lint.scan_budget",
            LintRule::StatementTimeout => "lint.statement_timeout",
            LintRule::MaxRows => "lint.max_rows",
            LintRule::JoinDepth => "lint.join_depth",
            LintRule::TenantQuotas => "lint.tenant_quotas",
            LintRule::SharedBudgetStore => "lint.shared_budget_store",
            LintRule::ProdPreset => "lint.prod_preset",
            LintRule::WriteReason => "lint.write_reason",
            LintRule::ApprovalGate => "lint.approval_gate",
            LintRule::ApprovalSla => "lint.approval_sla",
            LintRule::WriteRate => "lint.write_rate",
            LintRule::AuditSink => "lint.audit_sink",
            LintRule::AuditRetention => "lint.audit_retention",
            LintRule::Explained => "lint.explained",
        }
    }

    /// The checklist items (checklist.yaml) the rule verifies.
    pub fn checklist(self) -> &'static [&'static str] {
        match self {
            LintRule::TenantScope => &["ISO-2"],
            LintRule::RelationTenant => &["ISO-4"],
            LintRule::AdminSeparation => &["ISO-6"],
            LintRule::SecretWildcards => &["RED-1"],
            LintRule::PiiMasked => &["RED-2"],
            LintRule::FreeText => &["RED-3"],
            LintRule::ScanBudget => &["BUD-1"],
            LintRule::StatementTimeout => &["BUD-2"],
            LintRule::MaxRows => &["BUD-3"],
            LintRule::JoinDepth => &["BUD-4"],
            LintRule::TenantQuotas => &["BUD-5"],
            LintRule::SharedBudgetStore => &["BUD-6"],
            LintRule::ProdPreset => &["OPS-1"],
            LintRule::WriteReason => &["WRT-1"],
            LintRule::ApprovalGate => &["WRT-3"],
            LintRule::ApprovalSla => &["WRT-4"],
            LintRule::WriteRate => &["WRT-7"],
            LintRule::AuditSink => &["AUD-1"],
            LintRule::AuditRetention => &["AUD-6"],
            LintRule::Explained => &["CMP-1"],
        }
    }

    /// One line on what the rule wants.
    pub fn title(self) -> &'static str {
        match self {
            LintRule::TenantScope => "every multi-tenant model is tenant-scoped",
            LintRule::RelationTenant => {
                "every relation target carries a tenant column or a real exemption"
            }
            LintRule::AdminSeparation => {
                "no admin or cross-tenant capability; an admin policy has its own audit channel"
            }
            LintRule::SecretWildcards => "secret-looking fields are denied by wildcard",
            LintRule::PiiMasked => {
                "personal data is masked rather than returned or silently denied"
            }
            LintRule::FreeText => "free-text fields are denied or hashed",
            LintRule::ScanBudget => "max_scan_rows is set",
            LintRule::StatementTimeout => "the policy sets a statement timeout",
            LintRule::MaxRows => "max_rows is set for every read tool",
            LintRule::JoinDepth => "max_join_depth is 3 or less",
            LintRule::TenantQuotas => "per-tenant quotas are set",
            LintRule::SharedBudgetStore => "several instances share one budget store",
            LintRule::ProdPreset => "the policy extends the production preset",
            LintRule::WriteReason => "every write-enabled model requires a reason",
            LintRule::ApprovalGate => "high-stakes writes go through an approval",
            LintRule::ApprovalSla => "approvals have a deliberate SLA",
            LintRule::WriteRate => "max_writes_per_minute is 20 or less",
            LintRule::AuditSink => "an audit sink is configured",
            LintRule::AuditRetention => "audit retention is set",
            LintRule::Explained => "every exception to the defaults is explained",
        }
    }
}

impl fmt::Display for LintRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One lint finding: which rule, how bad, what, and the line of the policy that governs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LintFinding {
    pub rule: LintRule,
    pub severity: Severity,
    pub message: String,
    /// Dotted key path in the policy (`models.customers.fields.email`), or empty for the file.
    pub key_path: String,
    /// Where in the policy file; `None` when the finding is about something the file lacks
    /// entirely (e.g. no `audit:` section).
    pub span: Option<Span>,
    pub model: Option<String>,
}

impl LintFinding {
    pub fn rule_code(&self) -> &'static str {
        self.rule.code()
    }

    pub fn checklist(&self) -> &'static [&'static str] {
        self.rule.checklist()
    }

    pub fn span(&self) -> Option<Span> {
        self.span
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn severity(&self) -> Severity {
        self.severity
    }
}

/// Secret wildcards every production policy must deny (RED-1).
pub const SECRET_WILDCARDS: &[&str] = &[
    "*password*",
    "*secret*",
    "*token*",
    "*api_key*",
    "*private_key*",
];

/// Column names that hold personal data (RED-2).
pub const PII_PATTERNS: &[&str] = &[
    "*email*",
    "*phone*",
    "*ssn*",
    "*birth*",
    "dob",
    "*address*",
    "*full_name*",
    "first_name",
    "last_name",
    "*passport*",
    "*national_id*",
    "*tax_id*",
];

/// Names of text columns that hold free text (RED-3).
pub const FREE_TEXT_PATTERNS: &[&str] = &[
    "body",
    "*_body",
    "*notes*",
    "note",
    "*description*",
    "*comment*",
    "*message*",
    "*reason*",
    "subject",
];

/// Writable fields whose change needs a person's approval (WRT-3).
pub const HIGH_STAKES_PATTERNS: &[&str] = &[
    "*price*",
    "*amount*",
    "role",
    "roles",
    "*_role",
    "*permission*",
    "*balance*",
    "*credit*",
    "*discount*",
    "*salary*",
    "is_admin",
];

/// An approval SLA longer than this is not an SLA (WRT-4).
pub const MAX_APPROVAL_SLA_SECONDS: u64 = 24 * 3600;
/// WRT-7's ceiling.
pub const MAX_WRITES_PER_MINUTE: u32 = 20;
/// BUD-4's ceiling.
pub const MAX_LINT_JOIN_DEPTH: u32 = 3;
