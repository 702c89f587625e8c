//! `preflight bench gateway`: what the built-in gateway costs over the raw query it runs.
//!
//! Provisions a shop database (1,000,000 orders per tenant by default), then times, call by
//! call and interleaved, `db_get` of a random order and a filtered `db_query` (one day of one
//! tenant's orders, 100 rows) through the gateway, against the equivalent raw sqlx query on the
//! SAME pool (same connections, same settings), and prints p50/p99 of each and the gateway/raw
//! ratio. The gateway's path includes everything it does per call: argument validation, the
//! transaction with its statement timeout and tenant setting, the scan-budget EXPLAIN where one
//! is needed, redaction and the audit record (when a sink is configured).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use preflight_enforcer::audit::{AuditSink, PostgresSink};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{
    self, AuditPolicy, BudgetStoreConfig, Budgets, Catalog, ColumnPolicy, FieldAction, ModelPolicy,
    Policy, Preset, Quotas, RuleSource, Span, WritePolicy,
};
use preflight_enforcer::{CallContext, Gateway, Principal};
use preflight_probes::db::provision;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};

use super::summary::{Better, Line, Summary, SummaryArgs};
use super::{error_chain, thousands};
use crate::cmd::db_args::{db_error, DbArgs};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Args, Debug)]
// The setup: a table of a million rows per tenant (pass --rows for a quicker run).
#[command(mut_arg("rows", |a| a.default_value("1000000")))]
pub struct GatewayBenchArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Timed calls per workload and path.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub iterations: u32,

    /// Untimed calls per workload and path first (prepared statements, caches, buffers).
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub warmup: u32,

    /// A policy file to run the gateway under; its `orders` model must allow db_get and
    /// db_query [default: a built-in policy for orders alone, shipping address masked].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Audit sink on the gateway's path: `none`, `postgres` (one INSERT into
    /// preflight_audit.audit_log inside every call's transaction, then COMMIT), or `both`: the
    /// gateway measured without and with the sink, side by side.
    #[arg(long, default_value = "both", value_name = "none|postgres|both")]
    pub audit: String,

    /// Keeps the gateway's reads on the sqlx path (one round trip per statement), to compare
    /// with the pipelined path on the same build.
    #[arg(long)]
    pub no_pipeline: bool,

    /// Compares transports instead of gateway vs raw SQL: `in-process`, `mcp-stdio`, `mcp-http`
    /// (repeat the flag, list them comma-separated, or say `all`). The same layer and policy
    /// file on the same database, in this process and through `preflight serve` children, side
    /// by side. The policy file's own audit sinks apply (`--audit` does not).
    #[arg(long, value_name = "TRANSPORT")]
    pub transport: Vec<String>,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

/// Gateway p50 over raw sqlx p50 the issue allows.
const GOAL_RATIO: f64 = 1.5;

pub(super) const TENANT: &str = "acme";

pub async fn run(args: GatewayBenchArgs) -> CmdResult {
    if args.iterations < 10 {
        return Err(CliError::config("--iterations: expected at least 10"));
    }
    let transports = super::transport::Transport::parse_all(&args.transport)?;
    let audits: &[&str] = match args.audit.as_str() {
        "none" => &["none"],
        "postgres" => &["postgres"],
        "both" => &["none", "postgres"],
        other => {
            return Err(CliError::config(format!(
                "--audit: expected none, postgres or both, got {other:?}"
            )))
        }
    };
    let (db, fixtures) = args.db.to_db()?;
    eprintln!(
        "provisioning a shop database with {} orders per tenant ...",
        fixtures.rows
    );
    let database = provision(&db, &fixtures).await.map_err(db_error)?;
    let owner = database.owner_pool().await.map_err(db_error)?;
    if !database.read_only() {
        // Set hint bits and fresh statistics once, so the first timed scans are not the ones
        // that pay for them (see fixtures/shop/README.md).
        eprintln!("vacuum (analyze) of orders ...");
        sqlx::raw_sql("VACUUM (ANALYZE) public.orders")
            .execute(&owner)
            .await
            .map_err(|e| CliError::infra(format!("vacuum of orders failed: {e}")))?;
    }
    let policy = match &args.policy {
        None => bench_policy(&owner).await?,
        Some(path) => {
            let catalog = Catalog::read(&owner)
                .await
                .map_err(|e| CliError::infra(error_chain(&e)))?;
            let p = policy::load(path, Some(&catalog)).map_err(CliError::config)?;
            let usable = p
                .model("orders")
                .is_some_and(|m| m.tools.contains("db_get") && m.tools.contains("db_query"));
            if !usable {
                return Err(CliError::config(format!(
                    "{}: the benchmark needs a model `orders` that allows db_get and db_query",
                    path.display()
                )));
            }
            p
        }
    };
    let policy = Arc::new(policy);

    // A spread of the tenant's own ids (another tenant's would be not_found on one path only).
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM public.orders WHERE tenant_id = $1 AND id % 37 = 0 ORDER BY id LIMIT 50000",
    )
    .bind(TENANT)
    .fetch_all(&owner)
    .await
    .map_err(|e| CliError::infra(format!("cannot read the order ids: {e}")))?;
    if ids.is_empty() {
        return Err(CliError::config(
            "the orders table has no rows for the benchmark tenant",
        ));
    }
    let total_orders: i64 = sqlx::query_scalar("SELECT count(*) FROM public.orders")
        .fetch_one(&owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot count orders: {e}")))?;

    if !transports.is_empty() {
        println!(
            "preflight bench gateway --transport: {} orders ({} per tenant), backend {} ({}), {} timed calls per transport after {} warm-up calls, one client, sequential",
            thousands(total_orders as u64),
            thousands(fixtures.rows),
            database.info().kind,
            database.info().server_version,
            args.iterations,
            args.warmup
        );
        println!(
            "policy {}",
            args.policy
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in (orders)".to_string())
        );
        println!();
        let served = super::transport::Transports::start(
            &transports,
            args.policy.as_deref(),
            database.agent_url(),
        )
        .await?;
        let result = super::transport::compare(&served, &ids, args.warmup, args.iterations).await;
        served.stop().await;
        owner.close().await;
        Summary::new("gateway", result?).emit(&args.summary)?;
        return Ok(Outcome::Passed);
    }

    let mut lines = Vec::new();
    for audit in audits {
        lines.extend(bench_gateway(&args, &database, &policy, audit, &ids, total_orders).await?);
    }
    owner.close().await;
    Summary::new("gateway", lines).emit(&args.summary)?;
    Ok(Outcome::Passed)
}

/// Times both workloads through a gateway with the `audit` sink (`none` or `postgres`) against
/// raw SQL, prints the table and returns the summary lines.
async fn bench_gateway(
    args: &GatewayBenchArgs,
    database: &preflight_probes::db::Database,
    policy: &Arc<Policy>,
    audit: &str,
    ids: &[i64],
    total_orders: i64,
) -> Result<Vec<Line>, CliError> {
    let fixtures_rows = args.db.rows;
    let sinks: Vec<Arc<dyn AuditSink>> = match audit {
        "postgres" => vec![Arc::new(PostgresSink::in_transaction())],
        _ => Vec::new(),
    };
    let options = BuiltinOptions {
        audit: sinks,
        pipeline: !args.no_pipeline,
        ..BuiltinOptions::default()
    };
    let gw = BuiltinGateway::connect(policy.clone(), database.agent_url(), options)
        .await
        .map_err(|e| CliError::infra(error_chain(&e)))?;
    let pool = gw.pool().clone();

    let ctx = CallContext::new(Principal {
        tenant: TENANT.to_string(),
        user: "bench".to_string(),
        roles: Vec::new(),
    });
    let mut rng = Lcg(0x5eed_1234_abcd_ef01);

    eprintln!("timing db_get, audit {audit} ...");
    let get = measure(args.warmup, args.iterations, &mut rng, |rng, path| {
        let id = ids[(rng.next() % ids.len() as u64) as usize];
        let (gw, ctx, pool) = (&gw, &ctx, &pool);
        async move {
            match path {
                Path::Gateway => gw
                    .call(ctx, "db_get", json!({"model": "orders", "id": id}))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_json().to_string()),
                Path::Raw => raw_get(pool, id, false).await,
                Path::RawTx => raw_get(pool, id, true).await,
            }
        }
    })
    .await?;

    eprintln!("timing a filtered db_query, audit {audit} ...");
    // Bulk orders are spread evenly over 2020-2024: one day is ~rows/1826 orders.
    let query = measure(args.warmup, args.iterations, &mut rng, |rng, path| {
        let day = rng.next() % 1800;
        let (from, to) = (chrono_day(day), chrono_day(day + 1));
        let (gw, ctx, pool) = (&gw, &ctx, &pool);
        async move {
            match path {
                Path::Gateway => gw
                    .call(
                        ctx,
                        "db_query",
                        json!({"model": "orders",
                               "where": [{"field": "created_at", "op": "gte", "value": from},
                                         {"field": "created_at", "op": "lt", "value": to}],
                               "limit": 100}),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_json().to_string()),
                Path::Raw => raw_query(pool, &from, &to, false).await,
                Path::RawTx => raw_query(pool, &from, &to, true).await,
            }
        }
    })
    .await?;

    println!(
        "preflight bench gateway: {} orders ({} per tenant), backend {} ({}), {} timed calls per path after {} warm-up calls",
        thousands(total_orders as u64),
        thousands(fixtures_rows),
        database.info().kind,
        database.info().server_version,
        args.iterations,
        args.warmup
    );
    println!(
        "policy {}, audit sink on the gateway's path: {}",
        args.policy
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in (orders)".to_string()),
        audit
    );
    println!(
        "gateway calls on the pipelined read path: {}",
        thousands(gw.pipelined_calls())
    );
    println!(
        "raw = the same SQL on the same pool; raw in tx = the same SQL inside the gateway's \
         transaction discipline (BEGIN, set_config of timeout and tenant, query)"
    );
    println!();
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "workload / path", "p50 ms", "p99 ms", "mean ms"
    );
    for (name, samples) in [
        ("db_get (primary key)", &get),
        ("db_query (1 day, <=100 rows)", &query),
    ] {
        let [g, r, t] = [stats(&samples[0]), stats(&samples[1]), stats(&samples[2])];
        for (label, st) in [("gateway", &g), ("raw", &r), ("raw in tx", &t)] {
            println!(
                "{:<44} {:>9.3} {:>9.3} {:>9.3}",
                format!("{name}: {label}"),
                st.p50,
                st.p99,
                st.mean
            );
        }
        println!(
            "{:<44} {:>8.2}x {:>8.2}x {:>8.2}x",
            format!("{name}: gateway / raw"),
            g.p50 / r.p50,
            g.p99 / r.p99,
            g.mean / r.mean
        );
        println!(
            "{:<44} {:>8.2}x {:>8.2}x {:>8.2}x",
            format!("{name}: gateway / raw in tx"),
            g.p50 / t.p50,
            g.p99 / t.p99,
            g.mean / t.mean
        );
    }
    println!();
    // Close the agent connections before the database is torn down under them.
    gw.pool().close().await;
    let mut lines = Vec::new();
    for (name, samples) in [("db_get", &get), ("db_query", &query)] {
        let (g, r) = (stats(&samples[0]).p50, stats(&samples[1]).p50);
        lines.push(
            Line::new(
                format!("{name} p50, audit {audit}"),
                "ms",
                Better::Lower,
                GOAL_RATIO * r,
                g,
            )
            .floor(r)
            .basis(format!(
                "{GOAL_RATIO:.1}x the floor, raw sqlx autocommit p50 on the same pool; \
                 figure {:.2}x",
                g / r
            )),
        );
    }
    Ok(lines)
}

/// The three ways one workload is run.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Through the gateway.
    Gateway,
    /// The equivalent query, straight on the gateway's pool.
    Raw,
    /// The equivalent query inside the same transaction discipline the gateway uses (BEGIN, the
    /// statement timeout and tenant setting, the query, ROLLBACK queued on release): what the
    /// transaction costs, apart from everything else the gateway does.
    RawTx,
}

/// Runs `warmup` untimed and `iterations` timed rounds; each round runs the three paths on the
/// same input, in an order that rotates so no path always goes first.
async fn measure<F, Fut>(
    warmup: u32,
    iterations: u32,
    rng: &mut Lcg,
    mut call: F,
) -> Result<[Vec<Duration>; 3], CliError>
where
    F: FnMut(&mut Lcg, Path) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut out: [Vec<Duration>; 3] = Default::default();
    for i in 0..(warmup + iterations) {
        let seed = rng.0;
        let order = match i % 3 {
            0 => [Path::Gateway, Path::Raw, Path::RawTx],
            1 => [Path::Raw, Path::RawTx, Path::Gateway],
            _ => [Path::RawTx, Path::Gateway, Path::Raw],
        };
        for path in order {
            // Same input for every path of the round.
            rng.0 = seed;
            let start = Instant::now();
            call(rng, path)
                .await
                .map_err(|e| CliError::infra(format!("a benchmark call ({path:?}) failed: {e}")))?;
            let took = start.elapsed();
            if i >= warmup {
                out[path as usize].push(took);
            }
        }
    }
    Ok(out)
}

const ORDER_COLUMNS: &str = "id, tenant_id, customer_id, carrier_id, status, total::text AS total, created_at, shipping_address";

const SETUP: &str = "SELECT set_config('statement_timeout', $1, true), set_config($2, $3, true)";

async fn raw_get(pool: &PgPool, id: i64, in_tx: bool) -> Result<(), String> {
    let sql = format!(
        "SELECT to_jsonb(t) FROM (SELECT {ORDER_COLUMNS} FROM public.orders WHERE id = $1 AND tenant_id = $2) t"
    );
    let q = sqlx::query(&sql).bind(id).bind(TENANT);
    let row = if in_tx {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        sqlx::query(SETUP)
            .bind("2000")
            .bind("app.tenant_id")
            .bind(TENANT)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        q.fetch_optional(&mut *tx).await
    } else {
        q.fetch_optional(pool).await
    }
    .map_err(|e| e.to_string())?;
    let row = row.ok_or_else(|| format!("order {id} not found"))?;
    let _: Value = row.try_get(0).map_err(|e| e.to_string())?;
    Ok(())
}

async fn raw_query(pool: &PgPool, from: &str, to: &str, in_tx: bool) -> Result<(), String> {
    let sql = format!(
        "SELECT to_jsonb(t) FROM (SELECT {ORDER_COLUMNS} FROM public.orders
          WHERE tenant_id = $1 AND created_at >= CAST($2 AS timestamptz) AND created_at < CAST($3 AS timestamptz)
          ORDER BY id LIMIT 101) t"
    );
    let q = sqlx::query(&sql).bind(TENANT).bind(from).bind(to);
    let rows = if in_tx {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        sqlx::query(SETUP)
            .bind("2000")
            .bind("app.tenant_id")
            .bind(TENANT)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        q.fetch_all(&mut *tx).await
    } else {
        q.fetch_all(pool).await
    }
    .map_err(|e| e.to_string())?;
    for row in rows {
        let _: Value = row.try_get(0).map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub(super) struct Stats {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) mean: f64,
}

pub(super) fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

/// 2020-01-01 plus `day` days, as `YYYY-MM-DD`.
pub(super) fn chrono_day(day: u64) -> String {
    // Civil-from-days (Howard Hinnant), to avoid a date dependency for one conversion.
    let z = 18262 + day as i64 + 719_468; // 18262 = days from 1970-01-01 to 2020-01-01
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// A tiny deterministic generator: the same ids and days on every run.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// The benchmark's policy: the `orders` model as a careful policy would have it (the shipping
/// address masked, so redaction is part of the measured path), read from the live catalog.
async fn bench_policy(owner: &PgPool) -> Result<Policy, CliError> {
    let rows = sqlx::query(
        "SELECT a.attname::text AS col, format_type(a.atttypid, a.atttypmod) AS ty, NOT a.attnotnull AS nullable,
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) AS indexed
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname = 'orders' AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
    )
    .fetch_all(owner)
    .await
    .map_err(|e| CliError::infra(format!("cannot read the orders columns: {e}")))?;
    let columns: Vec<ColumnPolicy> = rows
        .iter()
        .map(|r| {
            let name: String = r.get("col");
            let action = if name == "shipping_address" {
                FieldAction::Mask
            } else {
                FieldAction::Allow
            };
            ColumnPolicy {
                pg_type: r.get("ty"),
                nullable: r.get("nullable"),
                action,
                source: RuleSource::Default,
                reason: None,
                indexed: r.get("indexed"),
                name,
            }
        })
        .collect();
    if columns.is_empty() {
        return Err(CliError::config(
            "the database has no public.orders table: load the shop fixtures",
        ));
    }
    let model = ModelPolicy {
        name: "orders".to_string(),
        schema: "public".to_string(),
        table: "orders".to_string(),
        primary_key: "id".to_string(),
        tenant_column: Some("tenant_id".to_string()),
        tenant_exempt_reason: None,
        columns,
        relations: BTreeMap::new(),
        tools: BTreeSet::from(["db_query".to_string(), "db_get".to_string()]),
        writable_fields: BTreeSet::new(),
        require_reason: true,
        soft_delete_column: None,
        budgets: Budgets {
            max_rows: BTreeMap::from([("default".to_string(), 100)]),
            max_scan_rows: Some(10_000),
            statement_timeout_ms: Some(2000),
            max_join_depth: 2,
            max_writes_per_minute: None,
            max_affected_rows: None,
        },
        span: Span::default(),
    };
    Ok(Policy {
        name: "bench".to_string(),
        extends: Preset::Prod,
        path: "<bench>".to_string(),
        tenant_setting: "app.tenant_id".to_string(),
        models: BTreeMap::from([("orders".to_string(), model)]),
        approvals: Vec::new(),
        writes: WritePolicy {
            dry_run_required_above: 10,
        },
        quotas: Quotas {
            calls_per_hour: None,
            rows_per_hour: None,
        },
        budget_store: BudgetStoreConfig::Memory,
        audit: AuditPolicy {
            sinks: Vec::new(),
            retention: None,
            span: Span::default(),
        },
        spans: BTreeMap::new(),
        deployment: Default::default(),
        rate_limits: None,
        field_rules: preflight_enforcer::policy::FieldRules {
            default_action: preflight_enforcer::policy::FieldAction::Deny,
            global: Default::default(),
            models: Default::default(),
        },
        hash: "bench".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_civil_dates() {
        assert_eq!(chrono_day(0), "2020-01-01");
        assert_eq!(chrono_day(59), "2020-02-29");
        assert_eq!(chrono_day(366), "2021-01-01");
        assert_eq!(chrono_day(1827), "2025-01-01");
    }

    #[test]
    fn percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let st = stats(&s);
        assert_eq!(st.p50, 51.0);
        assert_eq!(st.p99, 100.0);
        assert!((st.mean - 50.5).abs() < 1e-9);
    }
}
