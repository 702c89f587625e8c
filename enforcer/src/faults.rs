//! Deliberate faults for positive controls.
//!
//! `preflight probe --self-test` runs every probe against variants of the built-in layer with one
//! enforcement switched off, and every fault must be caught by at least one probe. A fault set is
//! part of the built-in gateway's configuration; production construction never sets one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One enforcement the built-in layer can be told to skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// No tenant predicate is added to reads, includes or writes.
    NoTenantPredicate,
    /// The tenant setting for row-level security is not set (the gateway connects with a role
    /// that the runner has made able to see every row, or RLS has been disabled on the tables).
    RlsDisabled,
    /// Masked and hashed fields are returned raw.
    MaskOff,
    /// Wildcard deny/mask patterns are ignored (only explicit field rules apply).
    PatternsIgnored,
    /// Denied fields are treated as allowed, whatever denies them (a field rule, a pattern, the
    /// preset's default for unmentioned columns).
    DenyIgnored,
    /// Filters, ordering, grouping and min/max on denied or masked fields are accepted.
    OracleCheckOff,
    /// Included (joined) rows are returned without redaction.
    IncludeUnredacted,
    /// `db_describe_schema` lists denied fields.
    DescribeShowsDenied,
    /// Database error messages, DETAIL lines included, are passed to the agent.
    ErrorDetailLeak,
    /// Filter and write values reach the database without the layer's own type and NOT NULL
    /// checks, so the database's errors decide (paired with `ErrorDetailLeak` by the self-test).
    ValuesUnchecked,
    /// Cursors are plain offsets, unsigned.
    CursorUnsigned,
    /// `max_scan_rows` is not checked before execution.
    ScanBudgetOff,
    /// `max_rows` is not applied.
    RowBudgetOff,
    /// `max_join_depth` is not applied.
    JoinDepthOff,
    /// No statement timeout is set on the call's transaction.
    TimeoutOff,
    /// Per-tenant quotas are not applied.
    QuotaOff,
    /// Writes are accepted without a reason.
    ReasonNotRequired,
    /// `writable_fields` is not applied.
    WritableFieldsOff,
    /// The tenant column may be written on create and update.
    TenantColumnWritable,
    /// Foreign keys are not checked to point inside the tenant.
    ForeignKeyUnchecked,
    /// Approval-gated writes run at once.
    ApprovalsBypassed,
    /// An approved request can be executed again, or with a changed payload.
    ApprovalReplay,
    /// `max_writes_per_minute` is not applied.
    RateLimitOff,
    /// Dry runs change data.
    DryRunWrites,
    /// No audit record is written.
    AuditSkipped,
    /// Audit arguments are sanitized by key name only, so secret values under innocent keys leak.
    AuditSanitizeByKeyOnly,
    /// Audit records carry no subject ids (`model:id` of the rows a call touched), so a
    /// subject-access request or an erasure cannot find them.
    AuditSubjectsDropped,
    /// Arguments that break the tool's JSON Schema are answered with the validator's raw report
    /// and a backtrace, as a layer that hands its unhandled exceptions to the agent does.
    MalformedInputTraceback,
    /// Denials are audited without their error code (only `deny`), so the quarterly review
    /// cannot tell which denial is the most common (QRT-2).
    AuditErrorCodeDropped,
    /// Calls are audited with a duration of zero (the layer does not time them), so the
    /// quarterly review cannot find the slow tools (QRT-3).
    AuditDurationUnmeasured,
    /// Writes are audited without their reason, so the quarterly review cannot check it (QRT-4).
    AuditReasonDropped,
}

impl Fault {
    pub const ALL: [Fault; 31] = [
        Fault::NoTenantPredicate,
        Fault::RlsDisabled,
        Fault::MaskOff,
        Fault::PatternsIgnored,
        Fault::DenyIgnored,
        Fault::OracleCheckOff,
        Fault::IncludeUnredacted,
        Fault::DescribeShowsDenied,
        Fault::ErrorDetailLeak,
        Fault::ValuesUnchecked,
        Fault::CursorUnsigned,
        Fault::ScanBudgetOff,
        Fault::RowBudgetOff,
        Fault::JoinDepthOff,
        Fault::TimeoutOff,
        Fault::QuotaOff,
        Fault::ReasonNotRequired,
        Fault::WritableFieldsOff,
        Fault::TenantColumnWritable,
        Fault::ForeignKeyUnchecked,
        Fault::ApprovalsBypassed,
        Fault::ApprovalReplay,
        Fault::RateLimitOff,
        Fault::DryRunWrites,
        Fault::AuditSkipped,
        Fault::AuditSanitizeByKeyOnly,
        Fault::AuditSubjectsDropped,
        Fault::MalformedInputTraceback,
        Fault::AuditErrorCodeDropped,
        Fault::AuditDurationUnmeasured,
        Fault::AuditReasonDropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::NoTenantPredicate => "no_tenant_predicate",
            Fault::RlsDisabled => "rls_disabled",
            Fault::MaskOff => "mask_off",
            Fault::PatternsIgnored => "patterns_ignored",
            Fault::DenyIgnored => "deny_ignored",
            Fault::OracleCheckOff => "oracle_check_off",
            Fault::IncludeUnredacted => "include_unredacted",
            Fault::DescribeShowsDenied => "describe_shows_denied",
            Fault::ErrorDetailLeak => "error_detail_leak",
            Fault::ValuesUnchecked => "values_unchecked",
            Fault::CursorUnsigned => "cursor_unsigned",
            Fault::ScanBudgetOff => "scan_budget_off",
            Fault::RowBudgetOff => "row_budget_off",
            Fault::JoinDepthOff => "join_depth_off",
            Fault::TimeoutOff => "timeout_off",
            Fault::QuotaOff => "quota_off",
            Fault::ReasonNotRequired => "reason_not_required",
            Fault::WritableFieldsOff => "writable_fields_off",
            Fault::TenantColumnWritable => "tenant_column_writable",
            Fault::ForeignKeyUnchecked => "foreign_key_unchecked",
            Fault::ApprovalsBypassed => "approvals_bypassed",
            Fault::ApprovalReplay => "approval_replay",
            Fault::RateLimitOff => "rate_limit_off",
            Fault::DryRunWrites => "dry_run_writes",
            Fault::AuditSkipped => "audit_skipped",
            Fault::AuditSanitizeByKeyOnly => "audit_sanitize_by_key_only",
            Fault::AuditSubjectsDropped => "audit_subjects_dropped",
            Fault::MalformedInputTraceback => "malformed_input_traceback",
            Fault::AuditErrorCodeDropped => "audit_error_code_dropped",
            Fault::AuditDurationUnmeasured => "audit_duration_unmeasured",
            Fault::AuditReasonDropped => "audit_reason_dropped",
        }
    }
}

/// The faults switched on for one gateway instance (empty in production).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults(BTreeSet<Fault>);

impl Faults {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn one(fault: Fault) -> Self {
        Self(BTreeSet::from([fault]))
    }

    /// Whether `fault` is switched on; enforcement code asks `if !faults.has(X) { enforce }`.
    pub fn has(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The faults switched on, in order.
    pub fn iter(&self) -> impl Iterator<Item = Fault> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Fault> for Faults {
    fn from_iter<I: IntoIterator<Item = Fault>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_unique() {
        let names: BTreeSet<_> = Fault::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), Fault::ALL.len());
    }
}
