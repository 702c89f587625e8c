//! Dry-run receipts: a write above the policy's dry-run threshold must have been planned with
//! `db_dry_run` first, for the same payload, by the same principal, recently.
//!
//! Receipts live in `preflight_ops.dry_runs` (tenant-scoped by RLS), so several gateway
//! instances honour each other's dry runs. They are written in the dry run's own transaction,
//! beside its audit record.

use std::time::Duration;

use sqlx::PgConnection;

/// How long a dry run stays valid for the write it planned.
pub const DRY_RUN_TTL: Duration = Duration::from_secs(600);

/// Records that `principal` dry-ran the write with `payload_sha256`.
pub async fn record_dry_run(
    conn: &mut PgConnection,
    tenant: &str,
    principal: &str,
    payload_sha256: &str,
    affected: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO preflight_ops.dry_runs (tenant_id, principal, payload_sha256, affected) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant)
    .bind(principal)
    .bind(payload_sha256)
    .bind(i64::try_from(affected).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `principal` dry-ran exactly this payload within `ttl`.
pub async fn has_recent_dry_run(
    conn: &mut PgConnection,
    principal: &str,
    payload_sha256: &str,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM preflight_ops.dry_runs \
           WHERE principal = $1 AND payload_sha256 = $2 \
             AND created_at > now() - make_interval(secs => $3))",
    )
    .bind(principal)
    .bind(payload_sha256)
    .bind(ttl.as_secs_f64())
    .fetch_one(conn)
    .await
}
