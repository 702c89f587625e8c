//! Positive controls: the deliberately broken variants the self-test runs probes against
//! ([`Control`]), and how each is switched on and back off.
//!
//! Most controls are faults of the built-in layer ([`Fault`]): a gateway instance built with the
//! fault skips one enforcement. Some claims are about the database, not the layer (row-level
//! security, role attributes, audit grants, the chain, the saved views); their controls change
//! the database for the duration of one variant — through the owner where the owner may, through
//! the superuser where only a superuser may — and restore it exactly afterwards. One control is
//! a policy change (an exemption without its reason).

use preflight_enforcer::policy::Policy;
use preflight_enforcer::{Fault, Faults};
use sqlx::{Connection, PgConnection, PgPool};

use crate::codes::ProbeCode;
use crate::truth::quote_ident;

/// A change to the database that only the catalog probes can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DbControl {
    /// `ALTER ROLE <agent> SUPERUSER` (superuser).
    AgentSuperuser,
    /// `ALTER ROLE <agent> BYPASSRLS` (superuser).
    AgentBypassRls,
    /// The agent is made a member of the role that owns the tables (`GRANT <owner> TO <agent>`).
    AgentOwnsObjects,
    /// `ALTER ROLE <agent> RESET statement_timeout` (superuser).
    RoleTimeoutUnset,
    /// The audit writer gets UPDATE and DELETE, and the log's refusal triggers are disabled.
    AuditGrantsWidened,
    /// One audit record's decision is flipped behind the chain's back.
    AuditRecordTampered,
    /// A saved audit view is renamed away.
    SavedViewMissing,
}

impl DbControl {
    pub const ALL: [DbControl; 7] = [
        DbControl::AgentSuperuser,
        DbControl::AgentBypassRls,
        DbControl::AgentOwnsObjects,
        DbControl::RoleTimeoutUnset,
        DbControl::AuditGrantsWidened,
        DbControl::AuditRecordTampered,
        DbControl::SavedViewMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DbControl::AgentSuperuser => "db.agent_superuser",
            DbControl::AgentBypassRls => "db.agent_bypass_rls",
            DbControl::AgentOwnsObjects => "db.agent_owns_objects",
            DbControl::RoleTimeoutUnset => "db.role_timeout_unset",
            DbControl::AuditGrantsWidened => "db.audit_grants_widened",
            DbControl::AuditRecordTampered => "db.audit_record_tampered",
            DbControl::SavedViewMissing => "db.saved_view_missing",
        }
    }
}

/// A change to the policy the layer and the probes are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyControl {
    /// The first tenant-exempt model loses its stated reason.
    ExemptionUnexplained,
}

impl PolicyControl {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyControl::ExemptionUnexplained => "policy.exemption_unexplained",
        }
    }
}

/// Faults only the review self-check of `preflight probe` catches (not self-test controls).
pub const REVIEW_FAULTS: [Fault; 3] = [
    Fault::AuditErrorCodeDropped,
    Fault::AuditDurationUnmeasured,
    Fault::AuditReasonDropped,
];

/// One broken variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Control {
    Fault(Fault),
    Db(DbControl),
    Policy(PolicyControl),
}

impl Control {
    /// Every control: each fault of the layer, then the database and policy controls.
    pub fn all() -> Vec<Control> {
        Fault::ALL
            .iter()
            // Only ever switched on with `error_detail_leak`: alone it changes which refusal an
            // agent sees, not what it may see.
            .filter(|f| **f != Fault::ValuesUnchecked)
            // What the quarterly review reads from the log, not what a probe checks; their
            // positive controls are the review self-check of the default run
            // (tests/integration/probe_qrt.rs).
            .filter(|f| !REVIEW_FAULTS.contains(f))
            .map(|f| Control::Fault(*f))
            .chain(DbControl::ALL.iter().map(|d| Control::Db(*d)))
            .chain([Control::Policy(PolicyControl::ExemptionUnexplained)])
            .collect()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Control::Fault(f) => f.as_str(),
            Control::Db(d) => d.as_str(),
            Control::Policy(p) => p.as_str(),
        }
    }

    /// The controls that must make every instance of `code` fail: each switches off exactly
    /// the enforcement the code's claim rests on. Planners narrow or widen this per instance
    /// ([`crate::runner::Probe::killed_by`]) where the model or field decides which control can
    /// reach it (a table row-level security also protects, a field denied by a pattern rather
    /// than masked).
    pub fn declared_for(code: ProbeCode) -> Vec<Control> {
        use ProbeCode::*;
        let one = |f: Fault| vec![Control::Fault(f)];
        match code {
            GetForeignRow
            | FilterForgedTenant
            | FilterForeignKeys
            | FilterForeignReference
            | IncludeForeign
            | AggregateForgedTenant
            | WriteForeignRow
            // Planned only for tools outside the contract: the built-in layer, the only one the
            // self-test can break, has none; its positive controls are the test layers of
            // tests/targets/ that trust a tenant argument.
            | EveryTool => one(Fault::RlsDisabled),
            CursorForeign | CursorRebound => one(Fault::CursorUnsigned),
            WriteForgedTenant | TenantColumn => one(Fault::TenantColumnWritable),
            WriteForeignReference => one(Fault::ForeignKeyUnchecked),
            GetRedacted | QueryRedacted => one(Fault::MaskOff),
            IncludeRedacted => one(Fault::IncludeUnredacted),
            DescribeSchema => one(Fault::DescribeShowsDenied),
            FilterOracle | OrderOracle | AggregateOracle => one(Fault::OracleCheckOff),
            ErrorLeak => one(Fault::ErrorDetailLeak),
            MalformedInput => one(Fault::MalformedInputTraceback),
            UnboundedScan => one(Fault::ScanBudgetOff),
            RowLimit => one(Fault::RowBudgetOff),
            JoinDepth => one(Fault::JoinDepthOff),
            StatementTimeout => one(Fault::TimeoutOff),
            Quota => one(Fault::QuotaOff),
            ReasonRequired => one(Fault::ReasonNotRequired),
            WritableFields => one(Fault::WritableFieldsOff),
            DryRun => one(Fault::DryRunWrites),
            RateLimit => one(Fault::RateLimitOff),
            ApprovalPending | ApprovalExecutesOnce | ApprovalExpiry => {
                one(Fault::ApprovalsBypassed)
            }
            ApprovalReplay => one(Fault::ApprovalReplay),
            EveryCallAudited => one(Fault::AuditSkipped),
            ArgumentsSanitized => one(Fault::AuditSanitizeByKeyOnly),
            SubjectAccess => one(Fault::AuditSubjectsDropped),
            SubjectErasure => vec![
                Control::Fault(Fault::AuditSanitizeByKeyOnly),
                Control::Fault(Fault::AuditSubjectsDropped),
            ],
            WriterAppendOnly | TamperDetected | AuditGrants => {
                vec![Control::Db(DbControl::AuditGrantsWidened)]
            }
            ChainVerifies => vec![Control::Db(DbControl::AuditRecordTampered)],
            RlsForced => one(Fault::RlsDisabled),
            AgentRole => vec![Control::Db(DbControl::AgentBypassRls)],
            RoleStatementTimeout => vec![Control::Db(DbControl::RoleTimeoutUnset)],
            JoinTargetsScoped => vec![Control::Policy(PolicyControl::ExemptionUnexplained)],
            SavedViews => vec![Control::Db(DbControl::SavedViewMissing)],
            // Their positive controls are served layers with one protection off (`preflight serve
            // --insecure-test-variant`), in the integration tests; the built-in layer in this
            // process has no HTTP endpoint for the self-test to break.
            TokenForgery | HealthFields | HealthDbDown | RateLimitPerPrincipal
            | RateLimitPerIp => Vec::new(),
            // Planned only for layers with a SQL tool (a target profile's `sql:`): the built-in
            // layer, the only one the self-test can break, has none, so a built-in fault declared
            // here could never be run. Their positive controls are the guarded SQL layers of
            // tests/targets/sql/ (keyword guard, read-only transaction, a superuser login), each
            // failing exactly the escapes its design lets through (tests/integration/targets_sql.rs).
            SqlWriteEscape | SqlSessionEscape | SqlServerAccess | SqlServerTimeout | SqlRowCap
            | SqlForeignRows | SqlSecretColumns | SqlLoginRole => Vec::new(),
        }
    }

    /// The faults the layer instance runs with. Row-level security off is realised in the
    /// database too, and paired with no tenant predicate so that only RLS would have stood
    /// between the tenants.
    pub fn faults(&self) -> Faults {
        match self {
            Control::Fault(Fault::RlsDisabled) => [Fault::RlsDisabled, Fault::NoTenantPredicate]
                .into_iter()
                .collect(),
            // Database errors passed through, and values sent to the database unchecked so that
            // there are database errors to pass (the layer validates types and NOT NULL itself).
            Control::Fault(Fault::ErrorDetailLeak) => {
                [Fault::ErrorDetailLeak, Fault::ValuesUnchecked]
                    .into_iter()
                    .collect()
            }
            Control::Fault(f) => Faults::one(*f),
            Control::Db(_) | Control::Policy(_) => Faults::none(),
        }
    }

    pub fn needs_superuser(&self) -> bool {
        matches!(
            self,
            Control::Db(
                DbControl::AgentSuperuser
                    | DbControl::AgentBypassRls
                    | DbControl::AgentOwnsObjects
                    | DbControl::RoleTimeoutUnset
            )
        )
    }

    /// The policy this variant runs with.
    ///
    /// Without a tenant predicate, the tenant column is also made readable and filterable: a
    /// policy that hides it refuses every forged tenant filter at the field level, which would
    /// leave the forged-filter probe no path to fail on.
    pub fn policy(&self, base: &Policy) -> Result<Policy, ControlError> {
        let mut p = base.clone();
        if self.faults().has(Fault::NoTenantPredicate) {
            for m in p.models.values_mut() {
                let Some(tc) = m.tenant_column.clone() else {
                    continue;
                };
                for c in m.columns.iter_mut().filter(|c| c.name == tc) {
                    c.action = preflight_enforcer::policy::FieldAction::Allow;
                }
            }
        }
        if let Control::Policy(PolicyControl::ExemptionUnexplained) = self {
            let Some(m) = p
                .models
                .values_mut()
                .find(|m| m.tenant_column.is_none() && m.tenant_exempt_reason.is_some())
            else {
                return Err(ControlError::NotApplicable(
                    "the policy exempts no model from tenant scoping".into(),
                ));
            };
            m.tenant_exempt_reason = None;
        }
        Ok(p)
    }
}

/// Why a control could not be switched on or off.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("not applicable: {0}")]
    NotApplicable(String),
    #[error("needs a superuser connection (the local and container backends have one)")]
    NeedsSuperuser,
    #[error("database change failed: {what}")]
    Sql {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

fn sql(what: &str) -> impl FnOnce(sqlx::Error) -> ControlError {
    let what = what.to_string();
    move |source| ControlError::Sql { what, source }
}

/// What a control may touch.
pub struct ControlEnv<'a> {
    pub owner: &'a PgPool,
    pub superuser_url: Option<&'a str>,
    pub agent_role: &'a str,
    pub audit_role: Option<&'a str>,
    pub policy: &'a Policy,
}

/// One database change to undo.
#[derive(Debug)]
enum Undo {
    EnableRls(String),
    NoBypassRls(String),
    RoleTimeout(String, String),
    AuditGrants {
        role: String,
        triggers: Vec<String>,
    },
    /// The record's id and the decision it held before the edit.
    Untamper(i64, String),
    NoSuperuser(String),
    RevokeMembership {
        owner: String,
        agent: String,
    },
    RenameView {
        now: String,
        back: String,
    },
}

/// A control switched on; [`Applied::restore`] switches it off.
#[derive(Debug, Default)]
pub struct Applied {
    undo: Vec<Undo>,
}

async fn superuser(env: &ControlEnv<'_>) -> Result<PgConnection, ControlError> {
    let url = env.superuser_url.ok_or(ControlError::NeedsSuperuser)?;
    PgConnection::connect(url)
        .await
        .map_err(sql("connect as the superuser"))
}

/// Runs `ALTER ROLE <role> SET statement_timeout = <value>` with the value bound: a session
/// setting carries it into a `format('%L')` inside `DO`, as the fixture loader does.
async fn set_role_timeout(
    conn: &mut PgConnection,
    role: &str,
    value: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('preflight.control_role', $1, false), set_config('preflight.control_value', $2, false)")
        .bind(role)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', \
         current_setting('preflight.control_role'), current_setting('preflight.control_value')); END $$",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets one record's decision to `$2`. The control writes a decision different from the stored
/// one; the undo writes the stored one back, whatever it was (`allow`, `deny` or `error`).
const SET_DECISION_SQL: &str = "UPDATE preflight_audit.audit_log SET decision = $2 WHERE id = $1";

impl Control {
    /// Switches the database side of the control on (nothing for pure layer faults). A control
    /// that fails half-way undoes what it had done before returning the error.
    pub async fn apply(&self, env: &ControlEnv<'_>) -> Result<Applied, ControlError> {
        let mut applied = Applied::default();
        match self.apply_into(env, &mut applied).await {
            Ok(()) => Ok(applied),
            Err(e) => {
                if let Err(undo) = applied.restore(env).await {
                    tracing::error!(control = self.name(), error = %undo, "could not undo a control that failed half-way");
                }
                Err(e)
            }
        }
    }

    async fn apply_into(
        &self,
        env: &ControlEnv<'_>,
        applied: &mut Applied,
    ) -> Result<(), ControlError> {
        match self {
            // Without row-level security in the database too: a layer that drops its tenant
            // predicate or lets the tenant column be written is then all that stands between
            // the tenants, so the probes show they judge the layer, not the database's backstop.
            Control::Fault(Fault::RlsDisabled | Fault::TenantColumnWritable) => {
                // Every table with row-level security, the layer's own (approval requests, dry
                // runs) included: a layer that sets no tenant would otherwise be stopped there.
                let tables: Vec<(String, String)> = sqlx::query_as(
                    "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity \
                       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     ORDER BY 1, 2",
                )
                .fetch_all(env.owner)
                .await
                .map_err(sql("read row-level security flags"))?;
                for (schema, table) in tables {
                    let t = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
                    sqlx::query(&format!("ALTER TABLE {t} DISABLE ROW LEVEL SECURITY"))
                        .execute(env.owner)
                        .await
                        .map_err(sql("disable row-level security"))?;
                    applied.undo.push(Undo::EnableRls(t));
                }
            }
            Control::Fault(_) | Control::Policy(_) => {}
            Control::Db(DbControl::AgentSuperuser) => {
                let mut su = superuser(env).await?;
                sqlx::query(&format!(
                    "ALTER ROLE {} SUPERUSER",
                    quote_ident(env.agent_role)
                ))
                .execute(&mut su)
                .await
                .map_err(sql("grant SUPERUSER"))?;
                applied
                    .undo
                    .push(Undo::NoSuperuser(env.agent_role.to_string()));
            }
            Control::Db(DbControl::AgentOwnsObjects) => {
                let owner: String = sqlx::query_scalar("SELECT current_user::text")
                    .fetch_one(env.owner)
                    .await
                    .map_err(sql("read the owner's role"))?;
                let already: bool =
                    sqlx::query_scalar("SELECT pg_has_role($1::name, $2::name, 'MEMBER')")
                        .bind(env.agent_role)
                        .bind(&owner)
                        .fetch_one(env.owner)
                        .await
                        .map_err(sql("read the agent's memberships"))?;
                if already {
                    return Err(ControlError::NotApplicable(format!(
                        "the agent role is already a member of {owner}"
                    )));
                }
                let mut su = superuser(env).await?;
                sqlx::query(&format!(
                    "GRANT {} TO {}",
                    quote_ident(&owner),
                    quote_ident(env.agent_role)
                ))
                .execute(&mut su)
                .await
                .map_err(sql("make the agent a member of the owner role"))?;
                applied.undo.push(Undo::RevokeMembership {
                    owner,
                    agent: env.agent_role.to_string(),
                });
            }
            Control::Db(DbControl::AgentBypassRls) => {
                let mut su = superuser(env).await?;
                sqlx::query(&format!(
                    "ALTER ROLE {} BYPASSRLS",
                    quote_ident(env.agent_role)
                ))
                .execute(&mut su)
                .await
                .map_err(sql("grant BYPASSRLS"))?;
                applied
                    .undo
                    .push(Undo::NoBypassRls(env.agent_role.to_string()));
            }
            Control::Db(DbControl::RoleTimeoutUnset) => {
                let mut su = superuser(env).await?;
                let current: Option<String> = sqlx::query_scalar(
                    "SELECT substr(c, length('statement_timeout=') + 1) FROM pg_db_role_setting s \
                     JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c \
                     WHERE r.rolname = $1 AND s.setdatabase = 0 AND c LIKE 'statement_timeout=%'",
                )
                .bind(env.agent_role)
                .fetch_optional(&mut su)
                .await
                .map_err(sql("read the role's statement_timeout"))?;
                let Some(current) = current else {
                    return Err(ControlError::NotApplicable(
                        "the agent role has no statement_timeout to remove".into(),
                    ));
                };
                sqlx::query(&format!(
                    "ALTER ROLE {} RESET statement_timeout",
                    quote_ident(env.agent_role)
                ))
                .execute(&mut su)
                .await
                .map_err(sql("reset the role's statement_timeout"))?;
                applied
                    .undo
                    .push(Undo::RoleTimeout(env.agent_role.to_string(), current));
            }
            Control::Db(DbControl::AuditGrantsWidened) => {
                let role = env.audit_role.ok_or_else(|| {
                    ControlError::NotApplicable("the audit writer role is not known".into())
                })?;
                // Only the UPDATE/DELETE refusal triggers: the chain trigger must keep working.
                let triggers: Vec<String> = sqlx::query_scalar(
                    "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'preflight_audit.audit_log'::regclass \
                     AND NOT tgisinternal AND (tgtype & 24) <> 0 AND (tgtype & 4) = 0",
                )
                .fetch_all(env.owner)
                .await
                .map_err(sql("read the audit log's triggers"))?;
                let mut tx = env.owner.begin().await.map_err(sql("begin"))?;
                sqlx::query(&format!(
                    "GRANT UPDATE, DELETE ON preflight_audit.audit_log TO {}",
                    quote_ident(role)
                ))
                .execute(&mut *tx)
                .await
                .map_err(sql("grant UPDATE, DELETE on the audit log"))?;
                for t in &triggers {
                    sqlx::query(&format!(
                        "ALTER TABLE preflight_audit.audit_log DISABLE TRIGGER {}",
                        quote_ident(t)
                    ))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("disable an audit trigger"))?;
                }
                tx.commit().await.map_err(sql("commit"))?;
                applied.undo.push(Undo::AuditGrants {
                    role: role.to_string(),
                    triggers,
                });
            }
            Control::Db(DbControl::AuditRecordTampered) => {
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT max(id) FROM preflight_audit.audit_log")
                        .fetch_one(env.owner)
                        .await
                        .map_err(sql("read the audit log"))?;
                let Some(id) = id else {
                    return Err(ControlError::NotApplicable("the audit log is empty".into()));
                };
                let target = (id / 3).max(1);
                let original: Option<String> = sqlx::query_scalar(
                    "SELECT decision FROM preflight_audit.audit_log WHERE id = $1",
                )
                .bind(target)
                .fetch_optional(env.owner)
                .await
                .map_err(sql("read the record to edit"))?;
                let Some(original) = original else {
                    return Err(ControlError::NotApplicable(format!(
                        "audit record {target} does not exist"
                    )));
                };
                let edited = if original == "allow" { "deny" } else { "allow" };
                set_decision(env.owner, target, edited).await?;
                applied.undo.push(Undo::Untamper(target, original));
            }
            Control::Db(DbControl::SavedViewMissing) => {
                let view = crate::families::hygiene::SAVED_VIEWS[0];
                let hidden = format!("{view}_preflight_control");
                sqlx::query(&format!(
                    "ALTER VIEW preflight_audit.{} RENAME TO {}",
                    quote_ident(view),
                    quote_ident(&hidden)
                ))
                .execute(env.owner)
                .await
                .map_err(sql("rename a saved view"))?;
                applied.undo.push(Undo::RenameView {
                    now: hidden,
                    back: view.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Sets one record's decision with the log's user triggers off, in one transaction.
async fn set_decision(owner: &PgPool, id: i64, decision: &str) -> Result<(), ControlError> {
    let mut tx = owner.begin().await.map_err(sql("begin"))?;
    sqlx::query("ALTER TABLE preflight_audit.audit_log DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .map_err(sql("disable the audit triggers"))?;
    sqlx::query(SET_DECISION_SQL)
        .bind(id)
        .bind(decision)
        .execute(&mut *tx)
        .await
        .map_err(sql("edit an audit record"))?;
    sqlx::query("ALTER TABLE preflight_audit.audit_log ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .map_err(sql("enable the audit triggers"))?;
    tx.commit().await.map_err(sql("commit"))
}

impl Applied {
    /// Undoes every change, newest first; reports the first failure after trying them all.
    pub async fn restore(&mut self, env: &ControlEnv<'_>) -> Result<(), ControlError> {
        let mut first = None;
        while let Some(u) = self.undo.pop() {
            let r = match &u {
                Undo::EnableRls(t) => {
                    sqlx::query(&format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"))
                        .execute(env.owner)
                        .await
                        .map(|_| ())
                        .map_err(sql("re-enable row-level security"))
                }
                Undo::NoSuperuser(role) => match superuser(env).await {
                    Ok(mut su) => {
                        sqlx::query(&format!("ALTER ROLE {} NOSUPERUSER", quote_ident(role)))
                            .execute(&mut su)
                            .await
                            .map(|_| ())
                            .map_err(sql("revoke SUPERUSER"))
                    }
                    Err(e) => Err(e),
                },
                Undo::RevokeMembership { owner, agent } => match superuser(env).await {
                    Ok(mut su) => sqlx::query(&format!(
                        "REVOKE {} FROM {}",
                        quote_ident(owner),
                        quote_ident(agent)
                    ))
                    .execute(&mut su)
                    .await
                    .map(|_| ())
                    .map_err(sql("revoke the owner membership")),
                    Err(e) => Err(e),
                },
                Undo::NoBypassRls(role) => match superuser(env).await {
                    Ok(mut su) => {
                        sqlx::query(&format!("ALTER ROLE {} NOBYPASSRLS", quote_ident(role)))
                            .execute(&mut su)
                            .await
                            .map(|_| ())
                            .map_err(sql("revoke BYPASSRLS"))
                    }
                    Err(e) => Err(e),
                },
                Undo::RoleTimeout(role, value) => match superuser(env).await {
                    Ok(mut su) => set_role_timeout(&mut su, role, value)
                        .await
                        .map_err(sql("restore the role's statement_timeout")),
                    Err(e) => Err(e),
                },
                Undo::AuditGrants { role, triggers } => {
                    let mut res = sqlx::query(&format!(
                        "REVOKE UPDATE, DELETE ON preflight_audit.audit_log FROM {}",
                        quote_ident(role)
                    ))
                    .execute(env.owner)
                    .await
                    .map(|_| ())
                    .map_err(sql("revoke the audit grants"));
                    for t in triggers {
                        let r = sqlx::query(&format!(
                            "ALTER TABLE preflight_audit.audit_log ENABLE TRIGGER {}",
                            quote_ident(t)
                        ))
                        .execute(env.owner)
                        .await
                        .map(|_| ())
                        .map_err(sql("re-enable an audit trigger"));
                        if res.is_ok() {
                            res = r;
                        }
                    }
                    res
                }
                Undo::Untamper(id, decision) => set_decision(env.owner, *id, decision).await,
                Undo::RenameView { now, back } => sqlx::query(&format!(
                    "ALTER VIEW preflight_audit.{} RENAME TO {}",
                    quote_ident(now),
                    quote_ident(back)
                ))
                .execute(env.owner)
                .await
                .map(|_| ())
                .map_err(sql("rename the saved view back")),
            };
            if let Err(e) = r {
                tracing::error!(undo = ?u, error = %e, "could not undo a self-test control");
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_every_code_declares_a_control() {
        let all = Control::all();
        let names: BTreeSet<_> = all.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), all.len());
        for code in ProbeCode::ALL {
            let declared = Control::declared_for(code);
            if matches!(
                code.family(),
                crate::codes::Family::Server | crate::codes::Family::Sql
            ) {
                // Their controls are layers of other kinds with a protection off (served with
                // `serve --insecure-test-variant`, the guarded SQL layers of tests/targets/sql/),
                // in the integration tests, not variants of the built-in layer.
                assert!(declared.is_empty(), "{}", code.as_str());
                continue;
            }
            assert!(!declared.is_empty(), "{}", code.as_str());
            assert!(
                declared.iter().all(|c| all.contains(c)),
                "{}",
                code.as_str()
            );
        }
        assert!(!all.contains(&Control::Fault(Fault::ValuesUnchecked)));
        assert!(Control::Fault(Fault::ErrorDetailLeak)
            .faults()
            .has(Fault::ValuesUnchecked));
        assert!(Control::Fault(Fault::RlsDisabled)
            .faults()
            .has(Fault::NoTenantPredicate));
    }
}
