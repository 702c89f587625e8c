//! The stable probe codes ([`ProbeCode`]): one per claim a probe family can prove or break.
//!
//! A code is a public identifier: it is the SARIF rule id, the JUnit class name, the anchor of its
//! section in `docs/probes/FAMILY.md` and the key of the self-test's detection matrix. A code never
//! changes meaning once released; instances of one code (one per model, tool or relation) differ
//! by their finding title.

use preflight_reports::Severity;
use serde::Serialize;

/// The families probes are grouped in; each has a module under `families/` and a docs page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    CrossTenant,
    Pii,
    Budget,
    Write,
    Approval,
    Audit,
    Hygiene,
    Lint,
    Server,
    Sql,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::CrossTenant,
        Family::Pii,
        Family::Budget,
        Family::Write,
        Family::Approval,
        Family::Audit,
        Family::Hygiene,
        Family::Lint,
        Family::Sql,
        Family::Server,
    ];

    /// The families a run selects by default for a layer not reached by URL: every one but
    /// `server`, which needs a layer reached by URL (see families/server.rs). `sql` plans nothing
    /// on a layer without a SQL tool, and the report says so.
    pub const IN_PROCESS: [Family; 9] = [
        Family::CrossTenant,
        Family::Pii,
        Family::Budget,
        Family::Write,
        Family::Approval,
        Family::Audit,
        Family::Hygiene,
        Family::Lint,
        Family::Sql,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::CrossTenant => "cross_tenant",
            Family::Pii => "pii",
            Family::Budget => "budget",
            Family::Write => "write",
            Family::Approval => "approval",
            Family::Audit => "audit",
            Family::Hygiene => "hygiene",
            Family::Lint => "lint",
            Family::Server => "server",
            Family::Sql => "sql",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every probe code. Lint findings are not here: their codes come from the policy linter's rules
/// (`lint.<rule>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ProbeCode {
    // cross_tenant
    GetForeignRow,
    FilterForgedTenant,
    FilterForeignKeys,
    FilterForeignReference,
    IncludeForeign,
    AggregateForgedTenant,
    CursorForeign,
    CursorRebound,
    WriteForgedTenant,
    WriteForeignRow,
    WriteForeignReference,
    EveryTool,
    // pii
    GetRedacted,
    QueryRedacted,
    IncludeRedacted,
    DescribeSchema,
    FilterOracle,
    OrderOracle,
    AggregateOracle,
    ErrorLeak,
    MalformedInput,
    // budget
    UnboundedScan,
    RowLimit,
    JoinDepth,
    StatementTimeout,
    Quota,
    // write
    ReasonRequired,
    WritableFields,
    TenantColumn,
    DryRun,
    RateLimit,
    // approval
    ApprovalPending,
    ApprovalExecutesOnce,
    ApprovalReplay,
    ApprovalExpiry,
    // audit
    EveryCallAudited,
    WriterAppendOnly,
    ChainVerifies,
    TamperDetected,
    ArgumentsSanitized,
    SubjectAccess,
    SubjectErasure,
    // hygiene
    RlsForced,
    AgentRole,
    RoleStatementTimeout,
    AuditGrants,
    JoinTargetsScoped,
    SavedViews,
    // server
    TokenForgery,
    HealthFields,
    HealthDbDown,
    RateLimitPerPrincipal,
    RateLimitPerIp,
    // sql
    SqlWriteEscape,
    SqlSessionEscape,
    SqlServerAccess,
    SqlServerTimeout,
    SqlRowCap,
    SqlForeignRows,
    SqlSecretColumns,
    SqlLoginRole,
}

impl ProbeCode {
    pub const ALL: [ProbeCode; 61] = [
        ProbeCode::GetForeignRow,
        ProbeCode::FilterForgedTenant,
        ProbeCode::FilterForeignKeys,
        ProbeCode::FilterForeignReference,
        ProbeCode::IncludeForeign,
        ProbeCode::AggregateForgedTenant,
        ProbeCode::CursorForeign,
        ProbeCode::CursorRebound,
        ProbeCode::WriteForgedTenant,
        ProbeCode::WriteForeignRow,
        ProbeCode::WriteForeignReference,
        ProbeCode::EveryTool,
        ProbeCode::GetRedacted,
        ProbeCode::QueryRedacted,
        ProbeCode::IncludeRedacted,
        ProbeCode::DescribeSchema,
        ProbeCode::FilterOracle,
        ProbeCode::OrderOracle,
        ProbeCode::AggregateOracle,
        ProbeCode::ErrorLeak,
        ProbeCode::MalformedInput,
        ProbeCode::UnboundedScan,
        ProbeCode::RowLimit,
        ProbeCode::JoinDepth,
        ProbeCode::StatementTimeout,
        ProbeCode::Quota,
        ProbeCode::ReasonRequired,
        ProbeCode::WritableFields,
        ProbeCode::TenantColumn,
        ProbeCode::DryRun,
        ProbeCode::RateLimit,
        ProbeCode::ApprovalPending,
        ProbeCode::ApprovalExecutesOnce,
        ProbeCode::ApprovalReplay,
        ProbeCode::ApprovalExpiry,
        ProbeCode::EveryCallAudited,
        ProbeCode::WriterAppendOnly,
        ProbeCode::ChainVerifies,
        ProbeCode::TamperDetected,
        ProbeCode::ArgumentsSanitized,
        ProbeCode::SubjectAccess,
        ProbeCode::SubjectErasure,
        ProbeCode::RlsForced,
        ProbeCode::AgentRole,
        ProbeCode::RoleStatementTimeout,
        ProbeCode::AuditGrants,
        ProbeCode::JoinTargetsScoped,
        ProbeCode::SavedViews,
        ProbeCode::TokenForgery,
        ProbeCode::HealthFields,
        ProbeCode::HealthDbDown,
        ProbeCode::RateLimitPerPrincipal,
        ProbeCode::RateLimitPerIp,
        ProbeCode::SqlWriteEscape,
        ProbeCode::SqlSessionEscape,
        ProbeCode::SqlServerAccess,
        ProbeCode::SqlServerTimeout,
        ProbeCode::SqlRowCap,
        ProbeCode::SqlForeignRows,
        ProbeCode::SqlSecretColumns,
        ProbeCode::SqlLoginRole,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeCode::GetForeignRow => "cross_tenant.get_foreign_row",
            ProbeCode::FilterForgedTenant => "cross_tenant.filter_forged_tenant",
            ProbeCode::FilterForeignKeys => "cross_tenant.filter_foreign_keys",
            ProbeCode::FilterForeignReference => "cross_tenant.filter_foreign_reference",
            ProbeCode::IncludeForeign => "cross_tenant.include_foreign",
            ProbeCode::AggregateForgedTenant => "cross_tenant.aggregate_forged_tenant",
            ProbeCode::CursorForeign => "cross_tenant.cursor_foreign",
            ProbeCode::CursorRebound => "cross_tenant.cursor_rebound",
            ProbeCode::WriteForgedTenant => "cross_tenant.write_forged_tenant",
            ProbeCode::WriteForeignRow => "cross_tenant.write_foreign_row",
            ProbeCode::WriteForeignReference => "cross_tenant.write_foreign_reference",
            ProbeCode::EveryTool => "cross_tenant.every_tool",
            ProbeCode::GetRedacted => "pii.get_redacted",
            ProbeCode::QueryRedacted => "pii.query_redacted",
            ProbeCode::IncludeRedacted => "pii.include_redacted",
            ProbeCode::DescribeSchema => "pii.describe_schema",
            ProbeCode::FilterOracle => "pii.filter_oracle",
            ProbeCode::OrderOracle => "pii.order_oracle",
            ProbeCode::AggregateOracle => "pii.aggregate_oracle",
            ProbeCode::ErrorLeak => "pii.error_leak",
            ProbeCode::MalformedInput => "pii.malformed_input",
            ProbeCode::UnboundedScan => "budget.unbounded_scan",
            ProbeCode::RowLimit => "budget.row_limit",
            ProbeCode::JoinDepth => "budget.join_depth",
            ProbeCode::StatementTimeout => "budget.statement_timeout",
            ProbeCode::Quota => "budget.quota",
            ProbeCode::ReasonRequired => "write.reason_required",
            ProbeCode::WritableFields => "write.writable_fields",
            ProbeCode::TenantColumn => "write.tenant_column",
            ProbeCode::DryRun => "write.dry_run",
            ProbeCode::RateLimit => "write.rate_limit",
            ProbeCode::ApprovalPending => "approval.pending",
            ProbeCode::ApprovalExecutesOnce => "approval.executes_once",
            ProbeCode::ApprovalReplay => "approval.replay_refused",
            ProbeCode::ApprovalExpiry => "approval.expiry",
            ProbeCode::EveryCallAudited => "audit.every_call",
            ProbeCode::WriterAppendOnly => "audit.writer_append_only",
            ProbeCode::ChainVerifies => "audit.chain_verifies",
            ProbeCode::TamperDetected => "audit.tamper_detected",
            ProbeCode::ArgumentsSanitized => "audit.arguments_sanitized",
            ProbeCode::SubjectAccess => "audit.subject_access",
            ProbeCode::SubjectErasure => "audit.subject_erasure",
            ProbeCode::RlsForced => "hygiene.rls_forced",
            ProbeCode::AgentRole => "hygiene.agent_role",
            ProbeCode::RoleStatementTimeout => "hygiene.role_statement_timeout",
            ProbeCode::AuditGrants => "hygiene.audit_grants",
            ProbeCode::JoinTargetsScoped => "hygiene.join_targets_scoped",
            ProbeCode::SavedViews => "hygiene.saved_views",
            ProbeCode::TokenForgery => "server.token_forgery",
            ProbeCode::HealthFields => "server.health_fields",
            ProbeCode::HealthDbDown => "server.health_db_down",
            ProbeCode::RateLimitPerPrincipal => "server.rate_limit_per_principal",
            ProbeCode::RateLimitPerIp => "server.rate_limit_per_ip",
            ProbeCode::SqlWriteEscape => "sql.write_escape",
            ProbeCode::SqlSessionEscape => "sql.session_escape",
            ProbeCode::SqlServerAccess => "sql.server_access",
            ProbeCode::SqlServerTimeout => "sql.server_timeout",
            ProbeCode::SqlRowCap => "sql.row_cap",
            ProbeCode::SqlForeignRows => "sql.foreign_rows",
            ProbeCode::SqlSecretColumns => "sql.secret_columns",
            ProbeCode::SqlLoginRole => "sql.login_role",
        }
    }

    pub fn parse(s: &str) -> Option<ProbeCode> {
        ProbeCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn family(self) -> Family {
        use ProbeCode::*;
        match self {
            GetForeignRow
            | FilterForgedTenant
            | FilterForeignKeys
            | FilterForeignReference
            | IncludeForeign
            | AggregateForgedTenant
            | CursorForeign
            | CursorRebound
            | WriteForgedTenant
            | WriteForeignRow
            | WriteForeignReference
            | EveryTool => Family::CrossTenant,
            GetRedacted | QueryRedacted | IncludeRedacted | DescribeSchema | FilterOracle
            | OrderOracle | AggregateOracle | ErrorLeak | MalformedInput => Family::Pii,
            UnboundedScan | RowLimit | JoinDepth | StatementTimeout | Quota => Family::Budget,
            ReasonRequired | WritableFields | TenantColumn | DryRun | RateLimit => Family::Write,
            ApprovalPending | ApprovalExecutesOnce | ApprovalReplay | ApprovalExpiry => {
                Family::Approval
            }
            EveryCallAudited | WriterAppendOnly | ChainVerifies | TamperDetected
            | ArgumentsSanitized | SubjectAccess | SubjectErasure => Family::Audit,
            RlsForced | AgentRole | RoleStatementTimeout | AuditGrants | JoinTargetsScoped
            | SavedViews => Family::Hygiene,
            TokenForgery | HealthFields | HealthDbDown | RateLimitPerPrincipal | RateLimitPerIp => {
                Family::Server
            }
            SqlWriteEscape | SqlSessionEscape | SqlServerAccess | SqlServerTimeout | SqlRowCap
            | SqlForeignRows | SqlSecretColumns | SqlLoginRole => Family::Sql,
        }
    }

    /// The checklist items a finding of this code proves (pass) or breaks (fail).
    pub fn checklist(self) -> &'static [&'static str] {
        use ProbeCode::*;
        match self {
            GetForeignRow
            | FilterForgedTenant
            | FilterForeignKeys
            | FilterForeignReference
            | AggregateForgedTenant => &["PRE-1", "ISO-1", "ISO-3"],
            IncludeForeign => &["PRE-1", "ISO-3", "ISO-4"],
            CursorForeign => &["PRE-1", "ISO-1"],
            CursorRebound => &["ISO-1"],
            WriteForgedTenant | WriteForeignRow => &["PRE-1", "ISO-1", "ISO-3"],
            WriteForeignReference => &["PRE-1", "ISO-1"],
            EveryTool => &["PRE-1", "ISO-1", "ISO-3"],
            GetRedacted => &["PRE-2", "RED-1", "RED-2", "RED-5"],
            QueryRedacted => &["PRE-2", "RED-1", "RED-2", "RED-3", "RED-5"],
            IncludeRedacted => &["PRE-2", "RED-6"],
            DescribeSchema => &["RED-4"],
            FilterOracle | OrderOracle | AggregateOracle => &["PRE-2", "RED-2", "RED-5"],
            ErrorLeak => &["RED-5"],
            MalformedInput => &["RED-5"],
            UnboundedScan => &["PRE-3", "BUD-1", "BUD-7"],
            RowLimit => &["BUD-3", "BUD-7"],
            JoinDepth => &["BUD-4", "BUD-7"],
            StatementTimeout => &["BUD-2", "BUD-7"],
            Quota => &["BUD-5", "BUD-7"],
            ReasonRequired => &["PRE-4", "WRT-1"],
            WritableFields => &["WRT-2"],
            TenantColumn => &["WRT-2", "ISO-1"],
            DryRun => &["WRT-6"],
            RateLimit => &["WRT-7"],
            ApprovalPending => &["PRE-5", "WRT-3"],
            ApprovalExecutesOnce => &["WRT-3", "WRT-5"],
            ApprovalReplay => &["WRT-3"],
            ApprovalExpiry => &["WRT-4"],
            EveryCallAudited => &["PRE-6", "AUD-1", "AUD-3"],
            WriterAppendOnly => &["AUD-2", "AUD-4"],
            ChainVerifies | TamperDetected => &["AUD-4"],
            ArgumentsSanitized => &["AUD-7", "RED-5"],
            SubjectAccess => &["CMP-3"],
            SubjectErasure => &["CMP-4"],
            RlsForced | AgentRole => &["ISO-5"],
            RoleStatementTimeout => &["BUD-2"],
            AuditGrants => &["AUD-2"],
            JoinTargetsScoped => &["ISO-4"],
            SavedViews => &["AUD-5", "CMP-2"],
            TokenForgery => &["ISO-1"],
            HealthFields | HealthDbDown => &["OPS-4"],
            RateLimitPerPrincipal | RateLimitPerIp => &["OPS-6"],
            // Escape instances cite their corpus entry's items (a subset of these).
            SqlWriteEscape => &["PRE-4", "WRT-1", "WRT-2"],
            SqlSessionEscape => &["PRE-4", "WRT-1", "ISO-1", "ISO-5"],
            SqlServerAccess => &["RED-5", "ISO-5"],
            SqlServerTimeout => &["BUD-2"],
            SqlRowCap => &["BUD-3"],
            SqlForeignRows => &["PRE-1", "ISO-1", "ISO-3"],
            SqlSecretColumns => &["PRE-2", "RED-1", "RED-2", "RED-5"],
            SqlLoginRole => &["ISO-5", "BUD-2"],
        }
    }

    pub fn severity(self) -> Severity {
        use ProbeCode::*;
        match self {
            GetForeignRow
            | FilterForgedTenant
            | FilterForeignKeys
            | FilterForeignReference
            | IncludeForeign
            | AggregateForgedTenant
            | WriteForgedTenant
            | WriteForeignRow
            | EveryTool
            | GetRedacted
            | QueryRedacted
            | IncludeRedacted
            | AgentRole
            | TokenForgery
            | SqlWriteEscape
            | SqlSessionEscape
            | SqlServerAccess
            | SqlForeignRows
            | SqlSecretColumns => Severity::Critical,
            CursorForeign
            | WriteForeignReference
            | FilterOracle
            | OrderOracle
            | AggregateOracle
            | ErrorLeak
            | MalformedInput
            | UnboundedScan
            | ReasonRequired
            | WritableFields
            | TenantColumn
            | ApprovalPending
            | ApprovalExecutesOnce
            | ApprovalReplay
            | EveryCallAudited
            | WriterAppendOnly
            | ChainVerifies
            | TamperDetected
            | ArgumentsSanitized
            | SubjectAccess
            | SubjectErasure
            | RlsForced
            | AuditGrants
            | SqlServerTimeout
            | SqlLoginRole => Severity::High,
            CursorRebound
            | DescribeSchema
            | RowLimit
            | JoinDepth
            | StatementTimeout
            | Quota
            | DryRun
            | RateLimit
            | ApprovalExpiry
            | RoleStatementTimeout
            | JoinTargetsScoped
            | HealthFields
            | HealthDbDown
            | RateLimitPerPrincipal
            | RateLimitPerIp
            | SqlRowCap => Severity::Medium,
            SavedViews => Severity::Low,
        }
    }

    /// The contract tools every instance of this code calls. Codes whose instances differ in
    /// the tool they call (a create or an update) have none here; their planners name the tool
    /// per instance ([`crate::runner::Probe::needs`]).
    pub fn tools(self) -> &'static [&'static str] {
        use crate::calls::{AGGREGATE, BULK_UPDATE, DESCRIBE, GET, QUERY, UPDATE};
        use ProbeCode::*;
        match self {
            GetForeignRow | GetRedacted | Quota => &[GET],
            FilterForgedTenant
            | FilterForeignKeys
            | FilterForeignReference
            | IncludeForeign
            | CursorForeign
            | CursorRebound
            | QueryRedacted
            | IncludeRedacted
            | FilterOracle
            | OrderOracle
            | RowLimit
            | JoinDepth => &[QUERY],
            AggregateForgedTenant | AggregateOracle | StatementTimeout => &[AGGREGATE],
            DescribeSchema => &[DESCRIBE],
            TenantColumn | RateLimit => &[UPDATE],
            DryRun => &[BULK_UPDATE],
            WriteForgedTenant
            | WriteForeignRow
            | WriteForeignReference
            | ErrorLeak
            | UnboundedScan
            | ReasonRequired
            | WritableFields => &[],
            // Every layer's own tools, under their own names; or tools decided at run time.
            EveryTool | MalformedInput | ApprovalPending | ApprovalExecutesOnce
            | ApprovalReplay | ApprovalExpiry | EveryCallAudited | WriterAppendOnly
            | ChainVerifies | TamperDetected | ArgumentsSanitized | SubjectAccess
            | SubjectErasure | RlsForced | AgentRole | RoleStatementTimeout | AuditGrants
            | JoinTargetsScoped | SavedViews => &[],
            // The server probes call the layer raw, below the contract's tools (see
            // families/server.rs); a profile without `db_query` makes them not_verified there.
            TokenForgery | HealthFields | HealthDbDown | RateLimitPerPrincipal | RateLimitPerIp => {
                &[]
            }
            // The layer's SQL tool, under its own name (the profile's `sql.tool`).
            SqlWriteEscape | SqlSessionEscape | SqlServerAccess | SqlServerTimeout | SqlRowCap
            | SqlForeignRows | SqlSecretColumns | SqlLoginRole => &[],
        }
    }

    /// One sentence: the claim the probe tests.
    pub fn claim(self) -> &'static str {
        use ProbeCode::*;
        match self {
            GetForeignRow => "db_get with another tenant's primary key returns not_found and none of that tenant's data",
            FilterForgedTenant => "a filter on the tenant column naming another tenant returns only the caller's rows",
            FilterForeignKeys => "a filter listing another tenant's primary keys returns none of those rows",
            FilterForeignReference => "a filter on a foreign key pointing at another tenant's row returns none of that tenant's rows",
            IncludeForeign => "an include never returns another tenant's row, even through a cross-tenant reference",
            AggregateForgedTenant => "aggregates and group-bys count only the caller's rows, whatever the filter says",
            CursorForeign => "a cursor minted for another tenant is refused and yields none of its rows",
            CursorRebound => "a cursor is bound to the query it came from; reusing it on another query is refused",
            WriteForgedTenant => "a create naming another tenant in its data is refused and creates nothing",
            WriteForeignRow => "an update or delete of another tenant's row changes nothing",
            WriteForeignReference => "a write whose foreign key points at another tenant's row is refused and changes nothing",
            EveryTool => "every tool the layer lists, called with the other tenant's id in every tenant-like argument and its keys in every id-like one, returns none of that tenant's data",
            GetRedacted => "db_get returns masked fields masked and denied fields absent, never a raw canary",
            QueryRedacted => "db_query returns masked fields masked and denied fields absent, never a raw canary",
            IncludeRedacted => "included (joined) rows are redacted exactly like direct reads",
            DescribeSchema => "db_describe_schema lists only models and fields the policy lets the principal see",
            FilterOracle => "filters on masked or denied fields cannot be used to test guesses about their values",
            OrderOracle => "ordering by a masked or denied field is refused or reveals nothing about its values",
            AggregateOracle => "min, max and group-by on masked or denied fields are refused or reveal no raw value",
            ErrorLeak => "error responses carry no canary and no database internals (DETAIL lines, SQL text)",
            MalformedInput => "every tool answers wrong-typed, oversized, unicode-edge and missing arguments without a stack trace, SQL text, database detail, connection string or canary, and keeps answering",
            UnboundedScan => "a read that would scan more than max_scan_rows is refused before it runs, with a structured error naming an indexed column",
            RowLimit => "no read returns more than the tool's max_rows",
            JoinDepth => "an include nested deeper than max_join_depth is refused",
            StatementTimeout => "a statement running past the policy's statement_timeout_ms is cut off with a statement_timeout error",
            Quota => "per-tenant call quotas are enforced with quota_exceeded",
            ReasonRequired => "every write tool refuses a write without a reason and changes nothing",
            WritableFields => "fields outside writable_fields cannot be written",
            TenantColumn => "the tenant column is never writable",
            DryRun => "bulk writes above the threshold need a dry run first, and a dry run changes nothing",
            RateLimit => "max_writes_per_minute is enforced with write_rate_exceeded",
            ApprovalPending => "an approval-gated write enters the pending state and changes nothing",
            ApprovalExecutesOnce => "an approved write is applied exactly once, and the approver is recorded in its audit record",
            ApprovalReplay => "an approval cannot be replayed or used for a different payload",
            ApprovalExpiry => "a pending approval past its SLA expires and its write is refused",
            EveryCallAudited => "every tool call, allowed or denied, has exactly one audit record with the right principal, tool, decision and trace id",
            WriterAppendOnly => "the audit writer role cannot update, delete or truncate audit records",
            ChainVerifies => "the audit hash chain verifies end to end and matches its head",
            TamperDetected => "editing an audit record is refused, and an edit forced through the owner breaks the chain at that record",
            ArgumentsSanitized => "audit records hold sanitized arguments (no canary) and the SHA-256 of the raw arguments",
            SubjectAccess => "after calls that touch a data subject, a subject-access query of the audit log (`preflight audit subject model:id`) finds every one of them",
            SubjectErasure => "after a data subject is written and deleted, the audit trail still names the subject (so erasure and retention can reach it), holds none of the personal values written in clear, and expires under the policy's retention",
            RlsForced => "row-level security is enabled and forced on the tables that have tenant policies",
            AgentRole => "the agent's database role is not superuser, cannot bypass RLS and owns nothing",
            RoleStatementTimeout => "the agent's database role carries its own statement_timeout",
            AuditGrants => "the audit writer role may only INSERT into the audit log",
            JoinTargetsScoped => "every relation target has a tenant column or a stated exemption",
            SavedViews => "the saved audit views the security team relies on exist and answer",
            TokenForgery => "a forged bearer token (unsigned, wrongly signed, tenant claim edited, expired) is refused and no data comes back",
            HealthFields => "the health endpoint reports the layer's version, policy hash and audit sink status",
            HealthDbDown => "the health endpoint turns unhealthy when the layer loses its database, and healthy again when it comes back",
            RateLimitPerPrincipal => "a burst from one principal is cut off at the declared per-principal request rate, with 429 and Retry-After or a rate-limit code",
            RateLimitPerIp => "a burst from one client address is cut off at the declared per-IP request rate, with 429 and Retry-After or a rate-limit code",
            SqlWriteEscape => "SQL that writes (DML, DDL, writing CTEs, SELECT INTO, writes hidden in functions) changes nothing in the database, in any spelling",
            SqlSessionEscape => "transaction and session control (COMMIT, SET ROLE, SET TRANSACTION READ WRITE, DO, PREPARE, several statements) neither writes nor changes who the SQL runs as",
            SqlServerAccess => "the server's files and processes are out of reach: no file content comes back, no backend is signalled, no configuration is reloaded",
            SqlServerTimeout => "a statement past the layer's timeout is stopped on the server, not only abandoned by the client",
            SqlRowCap => "SELECT * of the largest table returns no more rows than the layer's declared cap",
            SqlForeignRows => "SQL naming another tenant's rows returns none of them",
            SqlSecretColumns => "SQL selecting secret and PII columns returns none of their raw values",
            SqlLoginRole => "the SQL runs as a login that is not superuser, cannot bypass row-level security, owns nothing and carries its own statement_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_unique_prefixed_by_family_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ProbeCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
            assert!(
                code.as_str()
                    .starts_with(&format!("{}.", code.family().as_str())),
                "{} not under its family",
                code.as_str()
            );
            assert_eq!(ProbeCode::parse(code.as_str()), Some(code));
            assert!(!code.checklist().is_empty());
            assert!(!code.claim().is_empty());
        }
    }

    #[test]
    fn every_code_has_a_section_in_its_family_page() {
        for code in ProbeCode::ALL {
            let page = format!(
                "{}/../docs/probes/{}.md",
                env!("CARGO_MANIFEST_DIR"),
                code.family().as_str()
            );
            let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(
                text.contains(&format!("### {}\n", code.as_str())),
                "{page} has no section for {}",
                code.as_str()
            );
        }
    }

    #[test]
    fn families_round_trip() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.as_str()), Some(f));
            assert_eq!(Family::IN_PROCESS.contains(&f), f != Family::Server);
        }
    }
}
