//! The built-in enforcement layer over sqlx: [`BuiltinGateway`], connecting as `preflight_agent`.
//!
//! Every call goes through one pipeline:
//! 1. the tool is looked up, `model` checked against the policy (`model_not_allowed`), and the
//!    arguments validated against the tool's own JSON Schema (`validation_error` naming every
//!    offending field; NUL bytes refused);
//! 2. budget hooks run ([`CallHook`]: rate limits and quotas);
//! 3. the tool runs in ONE transaction on the agent pool, opened on first use with
//!    `statement_timeout` (the model's budget) and the tenant setting for row-level security set
//!    transaction-locally;
//! 4. one [`AuditRecord`] is built for EVERY call — allowed, denied, or refused as invalid — and
//!    appended through every configured sink inside that transaction, which then commits. A sink
//!    that fails makes the call fail closed (`internal`). A denial is audited after the call's own
//!    work is rolled back.
//!
//! The read tools live in `read.rs` (compiled by `compile.rs`, redacted by `redact.rs`, priced by
//! `scan.rs`); the write tools in `write.rs`. Reads normally run on the pipelined path
//! (`pipeline.rs`: the same statements in two or three round trips instead of five or six).

// `ToolError` is the contract's denial value (code, message, suggestion, details) and the whole
// point of these functions on their cold path; boxing it internally would only add an allocation.
#![allow(clippy::result_large_err)]

mod access;
mod args;
mod catalog;
mod compile;
mod cursor;
mod describe;
mod errors;
mod pipeline;
mod read;
mod redact;
mod scan;
mod sql;
mod text;
mod tools;
mod tx;
mod validate;
mod write;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::audit::{arguments_sha256, sanitize_arguments, AuditRecord, AuditSink, Decision, TxUse};
use crate::faults::{Fault, Faults};
use crate::gateway::{CallContext, ErrorCode, Gateway, Health, SinkHealth, ToolError, ToolSpec};
use crate::policy::{ModelPolicy, Policy};

pub use tx::CallTx;

use catalog::Catalog;
use text::quote_for_message;
use validate::{validate, Kind};

/// A check that runs before every call is dispatched (after its arguments are validated) and
/// after it succeeds: where rate limits and per-tenant quotas plug in (BUD-5, WRT-7).
#[async_trait]
pub trait CallHook: Send + Sync {
    /// `Err` denies the call (it is audited like any denial). `model` is `None` for tools that
    /// take none.
    async fn before(
        &self,
        ctx: &CallContext,
        tool: &str,
        model: Option<&ModelPolicy>,
    ) -> Result<(), ToolError>;

    /// After a successful call, with the rows it returned and affected.
    async fn after(
        &self,
        ctx: &CallContext,
        tool: &str,
        model: Option<&ModelPolicy>,
        rows_returned: u64,
        rows_affected: u64,
    );
}

/// How a [`BuiltinGateway`] is built.
#[derive(Clone)]
pub struct BuiltinOptions {
    /// Enforcement switched off on purpose, for positive controls; empty in production.
    pub faults: Faults,
    /// HMAC key for hashed fields and cursor signatures. Random per gateway by default, so hashes
    /// and cursors are only comparable within one gateway; set it to share them across instances.
    pub secret_key: [u8; 32],
    /// Where every call's audit record goes; each is appended inside the call's transaction.
    pub audit: Vec<Arc<dyn AuditSink>>,
    /// Budget hooks (rate limits, quotas); run in order, the first denial wins.
    pub hooks: Vec<Arc<dyn CallHook>>,
    /// Where write rates and quotas are counted. `None`: built from the policy's
    /// `budget_store` (in-memory, or Redis from its URL variable). The gateway always runs a
    /// [`BudgetHook`](crate::budget_store::BudgetHook) on it, before `hooks`.
    pub budget_store: Option<Arc<dyn crate::budget_store::BudgetStore>>,
    /// Size of the agent connection pool.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing with `internal`.
    pub acquire_timeout: Duration,
    /// Whether reads may take the pipelined path (a second pool of up to `max_connections`,
    /// made only for local or `sslmode=disable` servers). Off: every statement goes through
    /// sqlx, one round trip each.
    pub pipeline: bool,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        Self {
            faults: Faults::none(),
            secret_key: rand::random(),
            audit: Vec::new(),
            hooks: Vec::new(),
            budget_store: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            pipeline: true,
        }
    }
}

impl std::fmt::Debug for BuiltinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("BuiltinOptions")
            .field("faults", &self.faults)
            .field(
                "audit",
                &self.audit.iter().map(|s| s.kind()).collect::<Vec<_>>(),
            )
            .field("hooks", &self.hooks.len())
            .field("max_connections", &self.max_connections)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the agent database URL is not a valid postgres:// URL")]
    BadUrl {
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to the agent database at {url}")]
    Connect {
        /// The URL with its password masked.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot read the catalog statistics of the policy's tables")]
    Catalog {
        #[source]
        source: sqlx::Error,
    },
    #[error("policy model {model}: {problem}")]
    Policy { model: String, problem: String },
    #[error("cannot set up the budget store for rate limits and quotas")]
    BudgetStore {
        #[source]
        source: crate::budget_store::BudgetError,
    },
}

/// What a tool produced, for the pipeline to audit and return.
#[derive(Clone, Debug, PartialEq)]
pub struct CallOutcome {
    /// The JSON the agent gets on success.
    pub value: Value,
    /// A denial whose database work must still commit (e.g. `approval_required` together with
    /// its pending approvals row); returned to the agent as the call's error.
    pub denial: Option<ToolError>,
    pub rows_returned: Option<i64>,
    pub rows_affected: Option<i64>,
    pub reason: Option<String>,
    pub approval_id: Option<String>,
    pub approver: Option<String>,
    /// `model:primary key` of the rows involved, for subject-access requests.
    pub subjects: Vec<String>,
}

impl CallOutcome {
    pub fn ok(value: Value) -> Self {
        Self {
            value,
            denial: None,
            rows_returned: None,
            rows_affected: None,
            reason: None,
            approval_id: None,
            approver: None,
            subjects: Vec::new(),
        }
    }
}

struct Inner {
    policy: Arc<Policy>,
    pool: PgPool,
    options: BuiltinOptions,
    tools: Vec<ToolSpec>,
    specs: BTreeMap<String, ToolSpec>,
    catalog: Catalog,
    /// Statement timeout for calls not tied to one model: the strictest any model sets.
    default_timeout_ms: Option<u64>,
    /// The pipelined read path, when it is on, the URL allows it and every audit sink can be
    /// appended to through it.
    pipeline: Option<pipeline::Pipeline>,
}

/// The built-in enforcement layer. Cheap to clone (shared inner state).
#[derive(Clone)]
pub struct BuiltinGateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BuiltinGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinGateway")
            .field("policy", &self.inner.policy.name)
            .field("policy_hash", &self.inner.policy.hash)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:****@host/db`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<unparseable url>".to_string();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:****"),
        None => userinfo.to_string(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], masked, &rest[at + 1..])
}

impl BuiltinGateway {
    /// Connects to the database as the agent role (`agent_url`) and prepares the tool list.
    pub async fn connect(
        policy: Arc<Policy>,
        agent_url: &str,
        options: BuiltinOptions,
    ) -> Result<BuiltinGateway, ConnectError> {
        for m in policy.models.values() {
            if let Some(c) = m
                .columns
                .iter()
                .find(|c| c.name.starts_with(compile::INTERNAL_PREFIX))
            {
                return Err(ConnectError::Policy {
                    model: m.name.clone(),
                    problem: format!(
                        "column {} uses the prefix {} the gateway reserves for internal result columns",
                        c.name,
                        compile::INTERNAL_PREFIX
                    ),
                });
            }
            if m.column(&m.primary_key).is_none() {
                return Err(ConnectError::Policy {
                    model: m.name.clone(),
                    problem: format!("primary key {} is not one of its columns", m.primary_key),
                });
            }
        }
        let mut options = options;
        let store = match options.budget_store.clone() {
            Some(store) => store,
            None => crate::budget_store::from_config(&policy.budget_store)
                .await
                .map_err(|source| ConnectError::BudgetStore { source })?,
        };
        options.budget_store = Some(store.clone());
        options.hooks.insert(
            0,
            Arc::new(crate::budget_store::BudgetHook::new(
                policy.clone(),
                store,
                options.faults.clone(),
            )),
        );
        let connect_options = PgConnectOptions::from_str(agent_url)
            .map_err(|source| ConnectError::BadUrl { source })?
            .application_name("preflight-builtin-gateway")
            .statement_cache_capacity(512);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            // Each call's first statement already proves the connection; a ping per acquire
            // would add a round trip to every call.
            .test_before_acquire(false)
            .connect_with(connect_options)
            .await
            .map_err(|source| ConnectError::Connect {
                url: redact_url(agent_url),
                source,
            })?;
        let catalog = Catalog::default();
        {
            let mut conn = pool
                .acquire()
                .await
                .map_err(|source| ConnectError::Connect {
                    url: redact_url(agent_url),
                    source,
                })?;
            catalog
                .refresh(&mut conn, &policy)
                .await
                .map_err(|source| ConnectError::Catalog { source })?;
        }
        let tools = tools::tool_list(&policy);
        let specs = tools::ALL_TOOLS
            .iter()
            .filter_map(|t| tools::spec(&policy, t))
            .map(|s| (s.name.clone(), s))
            .collect();
        let default_timeout_ms = policy
            .models
            .values()
            .filter_map(|m| m.budgets.statement_timeout_ms)
            .min();
        let sinks_allow = options
            .audit
            .iter()
            .all(|s| matches!(s.tx_use(), TxUse::Unused | TxUse::AuditLogInsert));
        let pipeline = if !options.pipeline {
            None
        } else if !sinks_allow {
            tracing::info!("an audit sink needs the sqlx transaction: reads stay on the sqlx path");
            None
        } else {
            match pipeline::Pipeline::connect(
                agent_url,
                options.max_connections,
                options.acquire_timeout,
            )
            .await
            {
                Ok(p) => Some(p),
                Err(why) => {
                    tracing::info!(reason = %why, "reads stay on the sqlx path");
                    None
                }
            }
        };
        Ok(BuiltinGateway {
            inner: Arc::new(Inner {
                policy,
                pool,
                options,
                tools,
                specs,
                catalog,
                default_timeout_ms,
                pipeline,
            }),
        })
    }

    /// The agent pool (benchmarks compare raw queries on the same pool).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.inner.policy
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.options.faults
    }

    /// Whether reads take the pipelined path.
    pub fn pipelined(&self) -> bool {
        self.inner.pipeline.is_some()
    }

    /// Publishes the table statistics of the pipelined path's sessions now (tests and probes
    /// that read `pg_stat_user_tables` around a call; the sqlx pool's sessions are reached
    /// through [`BuiltinGateway::pool`]). `Err` carries the driver's message.
    pub async fn publish_pipelined_stats(&self) -> Result<(), String> {
        match &self.inner.pipeline {
            Some(p) => p.publish_stats().await,
            None => Ok(()),
        }
    }

    /// How many calls have run their statements on the pipelined path so far.
    pub fn pipelined_calls(&self) -> u64 {
        self.inner.pipeline.as_ref().map_or(0, |p| p.calls())
    }

    fn audits(&self) -> bool {
        !self.inner.options.audit.is_empty() && !self.inner.options.faults.has(Fault::AuditSkipped)
    }

    /// Steps 1–3 of the pipeline: validation, hooks, the tool itself.
    async fn dispatch(
        &self,
        ctx: &CallContext,
        tool: &str,
        args: &Value,
        tx: &mut CallTx<'_>,
    ) -> Result<CallOutcome, ToolError> {
        let inner = &*self.inner;
        let policy = &*inner.policy;
        let Some(spec) = inner.specs.get(tool) else {
            return Err(ToolError::new(
                ErrorCode::ValidationError,
                format!("unknown tool {}", quote_for_message(tool)),
                format!(
                    "use one of: {}",
                    inner
                        .tools
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_details(json!({"path": "tool"})));
        };
        let Value::Object(map) = args else {
            return Err(ToolError::new(
                ErrorCode::ValidationError,
                "`arguments`: expected a JSON object",
                format!("pass the arguments of {tool} as an object, e.g. {{\"model\": \"...\"}}"),
            )
            .with_details(json!({"path": "arguments"})));
        };
        let takes_model = spec.input_schema.pointer("/properties/model").is_some();
        let mut model: Option<&ModelPolicy> = None;
        if takes_model {
            if let Some(Value::String(name)) = map.get("model") {
                let allowed = tools::models_for(policy, tool);
                if !allowed.iter().any(|m| m == name) {
                    return Err(ToolError::new(
                        ErrorCode::ModelNotAllowed,
                        format!(
                            "`model`: {} is not available for {tool}",
                            quote_for_message(name)
                        ),
                        if allowed.is_empty() {
                            format!("{tool} is not enabled for any model")
                        } else {
                            format!("models for {tool}: {}", allowed.join(", "))
                        },
                    )
                    .with_details(json!({"path": "model"})));
                }
                model = policy.model(name);
            }
        }
        if let Some(m) = model {
            tx.set_timeout(m.budgets.statement_timeout_ms);
        }
        let row_budget_off = inner.options.faults.has(Fault::RowBudgetOff);
        let violations: Vec<_> = validate(&spec.input_schema, args)
            .into_iter()
            // A limit over the cap is a budget matter (row_budget_exceeded, with the cap), not
            // a malformed argument; the read tools decide it.
            .filter(|v| !(v.kind == Kind::Maximum && v.path == "limit"))
            .filter(|v| !(row_budget_off && v.kind == Kind::Maximum))
            .collect();
        if !violations.is_empty() {
            if inner.options.faults.has(Fault::MalformedInputTraceback) {
                return Err(errors::traceback_of(tool, &violations));
            }
            let rendered: Vec<String> = violations.iter().map(|v| v.render()).collect();
            return Err(ToolError::new(
                ErrorCode::ValidationError,
                format!("invalid arguments for {tool}: {}", rendered.join("; ")),
                "fix the listed arguments; the tool's JSON Schema describes each one",
            )
            .with_details(json!({
                "errors": violations.iter().map(|v| json!({"path": v.path, "message": v.message})).collect::<Vec<_>>(),
            })));
        }
        if let Some(path) = find_nul(args, "arguments") {
            return Err(args::invalid(
                &path,
                "contains a NUL byte (\\u0000), which the database cannot store",
                "remove the NUL character",
            ));
        }
        for hook in &inner.options.hooks {
            hook.before(ctx, tool, model).await?;
        }
        let cx = read::ReadCx {
            policy,
            ctx,
            faults: &inner.options.faults,
            key: &inner.options.secret_key,
            catalog: &inner.catalog,
        };
        match tool {
            tools::DESCRIBE => Ok(CallOutcome::ok(describe::describe(
                policy,
                &inner.options.faults,
                &inner.catalog,
            ))),
            tools::QUERY => read::query(&cx, tx, args).await,
            tools::GET => read::get(&cx, tx, args).await,
            tools::AGGREGATE => read::aggregate(&cx, tx, args).await,
            other => match write::WriteTool::parse(other) {
                Some(w) => {
                    write::call(
                        w,
                        write::WriteCall {
                            tx,
                            policy,
                            model,
                            ctx,
                            args,
                            faults: &inner.options.faults,
                            secret_key: &inner.options.secret_key,
                        },
                    )
                    .await
                }
                None => Err(errors::internal(&ctx.trace_id, "dispatching the tool")),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &CallContext,
        tool: &str,
        args: &Value,
        started: Instant,
        decision: Decision,
        error: Option<&ToolError>,
        outcome: Option<&CallOutcome>,
    ) -> AuditRecord {
        let policy = &*self.inner.policy;
        let tool_name = if self.inner.specs.contains_key(tool) {
            tool.to_string()
        } else {
            // Unknown names are agent input: bounded and escaped like any echo.
            format!("unknown:{}", quote_for_message(tool).trim_matches('"'))
        };
        let reason = outcome
            .and_then(|o| o.reason.clone())
            .or_else(|| {
                args.get("reason")
                    .and_then(Value::as_str)
                    .map(|r| r.chars().take(1000).collect())
            })
            .map(|r: String| crate::audit::sanitize_text(&r.replace('\0', "")));
        let faults = &self.inner.options.faults;
        AuditRecord {
            trace_id: ctx.trace_id.clone(),
            tenant_id: ctx.principal.tenant.clone(),
            user_id: ctx.principal.user.clone(),
            roles: ctx.principal.roles.clone(),
            tool: tool_name,
            arguments: if self.inner.options.faults.has(Fault::AuditSanitizeByKeyOnly) {
                crate::audit::sanitize_arguments_by_key_only(args)
            } else {
                sanitize_arguments(policy, tool, args)
            },
            arguments_sha256: arguments_sha256(args),
            decision,
            error_code: error
                .filter(|_| !faults.has(Fault::AuditErrorCodeDropped))
                .map(|e| e.code.as_str().to_string()),
            rows_returned: outcome.and_then(|o| o.rows_returned),
            rows_affected: outcome.and_then(|o| o.rows_affected),
            duration_ms: if faults.has(Fault::AuditDurationUnmeasured) {
                0.0
            } else {
                started.elapsed().as_secs_f64() * 1000.0
            },
            reason: reason.filter(|_| !faults.has(Fault::AuditReasonDropped)),
            approval_id: outcome.and_then(|o| o.approval_id.clone()),
            approver: outcome.and_then(|o| o.approver.clone()),
            policy_hash: policy.hash.clone(),
            subjects: if self.inner.options.faults.has(Fault::AuditSubjectsDropped) {
                Vec::new()
            } else {
                outcome.map(|o| o.subjects.clone()).unwrap_or_default()
            },
        }
    }

    /// Appends `record` through every sink inside `tx`; any failure fails the call closed.
    async fn append(
        &self,
        ctx: &CallContext,
        tx: &mut CallTx<'_>,
        record: &AuditRecord,
    ) -> Result<(), ToolError> {
        let conn = tx.conn().await.map_err(|e| {
            tracing::error!(trace_id = %ctx.trace_id, error = %e, "cannot open a transaction for the audit record");
            audit_failed(ctx)
        })?;
        for sink in &self.inner.options.audit {
            if let Err(e) = sink.append(Some(&mut *conn), record).await {
                tracing::error!(trace_id = %ctx.trace_id, sink = sink.kind(), error = %e, "audit sink failed; failing the call closed");
                return Err(audit_failed(ctx));
            }
        }
        Ok(())
    }
}

/// Which step of a pipelined finish failed.
enum PipelinedFailure {
    /// A sink, or the audit INSERT: nothing was committed.
    Audit,
    /// COMMIT.
    Commit,
}

impl BuiltinGateway {
    /// Appends `record` through every sink and commits the pipelined transaction: the sinks that
    /// never touch the transaction first, then the audit INSERT of every database sink and the
    /// COMMIT in one round trip. Any failure fails the call closed.
    async fn append_pipelined(
        &self,
        ctx: &CallContext,
        pipe: pipeline::PipeTx,
        lift_timeout: bool,
        record: &AuditRecord,
    ) -> Result<(), PipelinedFailure> {
        let mut inserts = 0;
        for sink in &self.inner.options.audit {
            let failed = match sink.tx_use() {
                TxUse::Unused => sink.append(None, record).await.err().map(|e| e.to_string()),
                TxUse::AuditLogInsert => {
                    inserts += 1;
                    None
                }
                // Never pipelined (see `connect`); refused rather than skipped if it ever is.
                TxUse::Opaque => Some("the sink needs the sqlx transaction".to_string()),
            };
            if let Some(e) = failed {
                tracing::error!(trace_id = %ctx.trace_id, sink = sink.kind(), error = %e, "audit sink failed; failing the call closed");
                pipe.abandon();
                return Err(PipelinedFailure::Audit);
            }
        }
        match pipe.finish(record, inserts, lift_timeout).await {
            Ok(()) => Ok(()),
            Err(pipeline::FinishError::Audit(e)) => {
                tracing::error!(trace_id = %ctx.trace_id, sink = "postgres", error = %e, "audit sink failed; failing the call closed");
                Err(PipelinedFailure::Audit)
            }
            Err(pipeline::FinishError::Commit(e)) => {
                tracing::error!(trace_id = %ctx.trace_id, error = %e, "commit failed");
                Err(PipelinedFailure::Commit)
            }
        }
    }
}

fn audit_failed(ctx: &CallContext) -> ToolError {
    ToolError::new(
        ErrorCode::Internal,
        format!(
            "the call could not be recorded in the audit log, so it was not completed (correlation id {})",
            ctx.trace_id
        ),
        "retry later; report the correlation id to the operator if it persists",
    )
    .with_details(json!({"correlation_id": ctx.trace_id}))
}

/// The path of the first string or key holding a NUL byte.
fn find_nul(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(path.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            let p = if path == "arguments" {
                validate::escape_key(k)
            } else {
                format!("{path}.{}", validate::escape_key(k))
            };
            if k.contains('\0') {
                Some(p)
            } else {
                find_nul(item, &p)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}

#[async_trait]
impl Gateway for BuiltinGateway {
    fn name(&self) -> String {
        "builtin".to_string()
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.inner.tools.clone()
    }

    async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, ToolError> {
        let started = Instant::now();
        let inner = &*self.inner;
        let mut tx = CallTx::new(
            &inner.pool,
            &inner.policy.tenant_setting,
            &ctx.principal.tenant,
            &inner.options.faults,
            inner.default_timeout_ms,
        )
        .with_pipeline(inner.pipeline.as_ref());
        let result = self.dispatch(ctx, tool, &arguments, &mut tx).await;
        let audits = self.audits();
        match result {
            Ok(outcome) => {
                let decision = if outcome.denial.is_some() {
                    Decision::Deny
                } else {
                    Decision::Allow
                };
                if audits {
                    let record = self.record(
                        ctx,
                        tool,
                        &arguments,
                        started,
                        decision,
                        outcome.denial.as_ref(),
                        Some(&outcome),
                    );
                    match tx.take_pipe() {
                        Some((pipe, lift)) => {
                            self.append_pipelined(ctx, pipe, lift, &record)
                                .await
                                .map_err(|failure| match failure {
                                    PipelinedFailure::Audit => audit_failed(ctx),
                                    PipelinedFailure::Commit => {
                                        errors::internal(&ctx.trace_id, "committing")
                                    }
                                })?;
                        }
                        None => {
                            if let Err(e) = self.append(ctx, &mut tx, &record).await {
                                tx.discard();
                                return Err(e);
                            }
                        }
                    }
                }
                if tx.is_open() {
                    if audits || !read::is_read_tool(tool) {
                        if let Err(e) = tx.commit().await {
                            tracing::error!(trace_id = %ctx.trace_id, error = %e, "commit failed");
                            return Err(errors::internal(&ctx.trace_id, "committing"));
                        }
                    } else {
                        // A read with nothing to commit: the rollback is flushed when the
                        // connection goes back to the pool, off this call's latency.
                        tx.discard();
                    }
                }
                let model = arguments
                    .get("model")
                    .and_then(Value::as_str)
                    .and_then(|m| inner.policy.model(m));
                for hook in &inner.options.hooks {
                    hook.after(
                        ctx,
                        tool,
                        model,
                        outcome.rows_returned.unwrap_or(0).max(0) as u64,
                        outcome.rows_affected.unwrap_or(0).max(0) as u64,
                    )
                    .await;
                }
                match outcome.denial {
                    Some(d) => Err(d),
                    None => Ok(outcome.value),
                }
            }
            Err(error) => {
                if !audits {
                    tx.discard();
                    return Err(error);
                }
                let decision = match error.code {
                    ErrorCode::Internal | ErrorCode::StatementTimeout => Decision::Error,
                    _ => Decision::Deny,
                };
                // A read's transaction holds no work; reuse it unless a statement failed in it.
                // Anything else is rolled back first, so a denied write leaves nothing behind.
                let mut audit_tx = if tx.is_open() && (tx.poisoned() || !read::is_read_tool(tool)) {
                    let fresh = tx.fresh();
                    tx.rollback().await;
                    fresh
                } else {
                    tx
                };
                if let Err(e) = audit_tx.lift_timeout().await {
                    tracing::error!(trace_id = %ctx.trace_id, error = %e, "cannot lift the call's statement timeout for its audit record");
                    audit_tx.discard();
                    return Err(audit_failed(ctx));
                }
                let record =
                    self.record(ctx, tool, &arguments, started, decision, Some(&error), None);
                if audit_tx.is_pipelined() {
                    if let Some((pipe, lift)) = audit_tx.take_pipe() {
                        self.append_pipelined(ctx, pipe, lift, &record)
                            .await
                            .map_err(|_| audit_failed(ctx))?;
                    }
                    return Err(error);
                }
                if let Err(e) = self.append(ctx, &mut audit_tx, &record).await {
                    audit_tx.discard();
                    return Err(e);
                }
                if let Err(e) = audit_tx.commit().await {
                    tracing::error!(trace_id = %ctx.trace_id, error = %e, "commit of an audit record failed");
                    return Err(audit_failed(ctx));
                }
                Err(error)
            }
        }
    }

    async fn health(&self) -> Health {
        let mut sinks = Vec::new();
        for sink in &self.inner.options.audit {
            sinks.push(match sink.health().await {
                Ok(detail) => SinkHealth {
                    kind: sink.kind().to_string(),
                    ok: true,
                    detail,
                },
                Err(e) => SinkHealth {
                    kind: sink.kind().to_string(),
                    ok: false,
                    detail: e.to_string(),
                },
            });
        }
        Health {
            version: env!("CARGO_PKG_VERSION").to_string(),
            policy_hash: self.inner.policy.hash.clone(),
            audit_sinks: sinks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://preflight_agent:s3cret@127.0.0.1:5432/shop"),
            "postgres://preflight_agent:****@127.0.0.1:5432/shop"
        );
        assert_eq!(redact_url("postgres://host/db"), "postgres://host/db");
        assert_eq!(redact_url("nonsense"), "<unparseable url>");
    }

    #[test]
    fn nul_bytes_are_found_in_keys_and_values() {
        assert_eq!(
            find_nul(&json!({"a": ["x", "y\u{0}"]}), "arguments"),
            Some("a[1]".to_string())
        );
        assert_eq!(
            find_nul(&json!({"a\u{0}": 1}), "arguments"),
            Some("\"a\\u{0}\"".to_string())
        );
        assert_eq!(find_nul(&json!({"a": 1}), "arguments"), None);
    }
}
