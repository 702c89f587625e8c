//! Database errors as the agent sees them: a stable code and a message written here, never the
//! server's text. A constraint violation's DETAIL can hold another tenant's value and a HINT can
//! describe the schema, so neither ever reaches the agent; unexpected errors become `internal`
//! with the call's trace id as a correlation id, and the server-side log gets the SQLSTATE and
//! the server's message (never DETAIL) for the operator.

use serde_json::json;
use sqlx::postgres::PgDatabaseError;

use crate::faults::{Fault, Faults};
use crate::gateway::{ErrorCode, ToolError};

/// What the mapping needs to know about the call.
pub(crate) struct ErrorContext<'a> {
    pub trace_id: &'a str,
    pub faults: &'a Faults,
    /// The statement timeout in force, for the `statement_timeout` message.
    pub timeout_ms: Option<u64>,
    /// The model read and the fields to suggest filtering on when a statement ran too long.
    pub model: Option<&'a str>,
    pub filter_fields: &'a [String],
}

/// An `internal` error carrying only the correlation id.
pub(crate) fn internal(trace_id: &str, what: &str) -> ToolError {
    ToolError::new(
        ErrorCode::Internal,
        format!("internal error while {what} (correlation id {trace_id})"),
        "retry once; if it persists, report the correlation id to the operator",
    )
    .with_details(json!({"correlation_id": trace_id}))
}

/// A server error as the mapping reads it, whichever driver reported it (sqlx here, the
/// pipelined read path's own driver in `pipeline.rs`).
pub(crate) struct ServerError<'e> {
    pub code: &'e str,
    pub message: &'e str,
    pub constraint: Option<&'e str>,
    pub detail: Option<&'e str>,
    pub hint: Option<&'e str>,
}

/// Maps a sqlx error to the agent-facing error.
pub(crate) fn map(e: &sqlx::Error, cx: &ErrorContext<'_>) -> ToolError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            map_server(
                &ServerError {
                    code: &code,
                    message: db.message(),
                    constraint: db.constraint(),
                    detail: pg.and_then(PgDatabaseError::detail),
                    hint: pg.and_then(PgDatabaseError::hint),
                },
                cx,
            )
        }
        sqlx::Error::PoolTimedOut => busy(cx.trace_id),
        other => {
            tracing::error!(trace_id = cx.trace_id, error = %other, "gateway call failed");
            internal(cx.trace_id, "talking to the database")
        }
    }
}

/// Maps an error the server reported to the agent-facing error.
pub(crate) fn map_server(db: &ServerError<'_>, cx: &ErrorContext<'_>) -> ToolError {
    tracing::warn!(
        trace_id = cx.trace_id,
        sqlstate = %db.code,
        message = %db.message,
        "database error in a gateway call"
    );
    let mut err = if is_rls_violation(db.code, db.message) {
        rls_refusal()
    } else {
        by_sqlstate(db.code, db.constraint, cx)
    };
    if cx.faults.has(Fault::ErrorDetailLeak) {
        // The failure this switch simulates: the server's text passed straight through.
        err.message = format!(
            "{}: {} DETAIL: {} HINT: {}",
            err.message,
            db.message,
            db.detail.unwrap_or(""),
            db.hint.unwrap_or("")
        );
    }
    err
}

/// No connection came free within the acquire timeout.
pub(crate) fn busy(trace_id: &str) -> ToolError {
    tracing::warn!(trace_id, "agent pool exhausted");
    ToolError::new(
        ErrorCode::Internal,
        format!("the database is busy (correlation id {trace_id})"),
        "retry in a few seconds",
    )
    .with_details(json!({"correlation_id": trace_id}))
}

/// Whether the server refused a written row under a row-level security policy (`WITH CHECK`).
/// SQLSTATE 42501 alone also means a missing privilege, which stays `internal`.
fn is_rls_violation(code: &str, message: &str) -> bool {
    code == "42501" && message.starts_with("new row violates row-level security policy")
}

/// The refusal for a row that row-level security kept out of the session's tenant: the layer let
/// something through that puts the row in another tenant, and the database stopped it.
fn rls_refusal() -> ToolError {
    ToolError::new(
        ErrorCode::TenantMismatch,
        "the change would place a row outside your tenant; the database refused it",
        "leave the tenant column out of data; every write stays in your own tenant",
    )
    .with_details(json!({"refused_by": "row_level_security"}))
}

fn by_sqlstate(code: &str, constraint: Option<&str>, cx: &ErrorContext<'_>) -> ToolError {
    match code {
        // query_canceled: the statement timeout (or an operator's cancel) stopped it.
        "57014" => {
            let limit = cx
                .timeout_ms
                .map(|ms| format!(" of {ms} ms"))
                .unwrap_or_default();
            let suggestion = match (cx.model, cx.filter_fields) {
                (Some(m), [first, ..]) => format!(
                    "narrow the read: filter {m} on an indexed field such as {first}, lower limit, \
                     or drop includes"
                ),
                _ => "narrow the read with more selective filters or a lower limit".to_string(),
            };
            ToolError::new(
                ErrorCode::StatementTimeout,
                format!("the statement ran past the statement timeout{limit} and was stopped"),
                suggestion,
            )
            .with_details(json!({"statement_timeout_ms": cx.timeout_ms}))
        }
        // Data exceptions: a value the type or range of its field cannot take.
        c if c.starts_with("22") => ToolError::new(
            ErrorCode::ValidationError,
            "a value does not fit the type or range of its field",
            "check the field types with db_describe_schema (dates as YYYY-MM-DD, timestamps as ISO 8601, numbers in range)",
        )
        .with_details(json!({"sqlstate_class": "22"})),
        // Integrity constraints (writes): which constraint, never the offending values.
        c if c.starts_with("23") => ToolError::new(
            ErrorCode::ValidationError,
            match constraint {
                Some(name) => format!("the change violates the database constraint {name}"),
                None => "the change violates a database constraint".to_string(),
            },
            "check the values against db_describe_schema; a referenced row must exist in your tenant",
        )
        .with_details(json!({"constraint": constraint})),
        "40001" | "40P01" => ToolError::new(
            ErrorCode::Internal,
            format!(
                "the call conflicted with a concurrent change (correlation id {})",
                cx.trace_id
            ),
            "retry the call",
        )
        .with_details(json!({"correlation_id": cx.trace_id})),
        _ => internal(cx.trace_id, "running the statement"),
    }
}

/// The answer of [`Fault::MalformedInputTraceback`]: the validator's violations as an unhandled
/// exception would carry them, with a backtrace. Only a positive control ever builds this.
pub(crate) fn traceback_of(tool: &str, violations: &[super::validate::Violation]) -> ToolError {
    let report: Vec<String> = violations.iter().map(|v| v.render()).collect();
    ToolError::new(
        ErrorCode::ValidationError,
        format!(
            "thread 'gateway' panicked at enforcer/src/builtin/validate.rs:124:9:\n\
             invalid arguments for {tool}: {}\n\
             stack backtrace:\n   0: preflight_enforcer::builtin::validate::check\n   \
             1: preflight_enforcer::builtin::BuiltinGateway::call",
            report.join("; ")
        ),
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(faults: &Faults) -> ErrorContext<'_> {
        ErrorContext {
            trace_id: "trace-1",
            faults,
            timeout_ms: Some(250),
            model: Some("orders"),
            filter_fields: &[],
        }
    }

    #[test]
    fn sqlstates_map_to_codes() {
        let f = Faults::none();
        assert_eq!(
            by_sqlstate("57014", None, &cx(&f)).code,
            ErrorCode::StatementTimeout
        );
        assert!(by_sqlstate("57014", None, &cx(&f))
            .message
            .contains("250 ms"));
        assert_eq!(
            by_sqlstate("22P02", None, &cx(&f)).code,
            ErrorCode::ValidationError
        );
        let e = by_sqlstate("23505", Some("customers_tenant_email_key"), &cx(&f));
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(e.message.contains("customers_tenant_email_key"));
        let e = by_sqlstate("XX000", None, &cx(&f));
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("trace-1"));
    }

    #[test]
    fn row_level_security_refusals_are_tenant_mismatches() {
        assert!(is_rls_violation(
            "42501",
            "new row violates row-level security policy for table \"refunds\""
        ));
        assert!(is_rls_violation(
            "42501",
            "new row violates row-level security policy (USING expression) for table \"customers\""
        ));
        assert!(!is_rls_violation(
            "42501",
            "permission denied for table refunds"
        ));
        assert!(!is_rls_violation(
            "23514",
            "new row violates row-level security policy"
        ));
        let e = rls_refusal();
        assert_eq!(e.code, ErrorCode::TenantMismatch);
        assert!(!e.suggestion.is_empty());
    }

    #[test]
    fn non_database_errors_are_internal_with_correlation() {
        let f = Faults::none();
        let e = map(&sqlx::Error::PoolTimedOut, &cx(&f));
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.details["correlation_id"], "trace-1");
        let e = map(&sqlx::Error::Protocol("boom at line 3".into()), &cx(&f));
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("boom"));
    }
}
