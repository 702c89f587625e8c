//! The records the audit bench writes: what a `db_get` or filtered `db_query` call leaves.

use super::*;

pub(super) const POLICY_HASH: &str =
    "5f1b0e3c9a7d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468";

/// The `i`-th record of the bench: what a `db_get` or filtered `db_query` call leaves, with the
/// same shape the Postgres loader gives its rows (a tenant, a user, one role, arguments with a
/// filter, a subject), so both chains hold records of about the same size.
pub(super) fn bench_record(i: u64) -> AuditRecord {
    let arguments = if i.is_multiple_of(3) {
        json!({"model": "orders", "id": i})
    } else {
        json!({"model": "orders", "where": [{"field": "customer_id", "op": "eq", "value": i % 1000}], "limit": 50})
    };
    let denied = i.is_multiple_of(10);
    AuditRecord {
        trace_id: format!(
            "{:032x}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        ),
        tenant_id: if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        }
        .to_string(),
        user_id: format!("bench-user-{}", i % 8),
        roles: vec!["support".to_string()],
        tool: if i.is_multiple_of(3) {
            "db_get"
        } else {
            "db_query"
        }
        .to_string(),
        arguments_sha256: arguments_sha256(&arguments),
        arguments,
        decision: if denied {
            Decision::Deny
        } else {
            Decision::Allow
        },
        error_code: denied.then(|| "field_denied".to_string()),
        rows_returned: (!denied).then_some((i % 50) as i64),
        rows_affected: None,
        duration_ms: 0.25 + (i % 1000) as f64 / 100.0,
        reason: None,
        approval_id: None,
        approver: None,
        policy_hash: POLICY_HASH.to_string(),
        subjects: vec![format!("customers:{}", i % 1000)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_records_are_distinct_and_well_formed() {
        let a = bench_record(1);
        let b = bench_record(2);
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.trace_id.len(), 32);
        assert_eq!(bench_record(10).decision, Decision::Deny);
        assert_eq!(bench_record(10).error_code.as_deref(), Some("field_denied"));
        assert_eq!(a.arguments_sha256, arguments_sha256(&a.arguments));
    }
}
