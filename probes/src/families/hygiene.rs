//! `hygiene`: what the database catalog must say for the layer's guarantees to hold (ISO-4,
//! ISO-5, BUD-2, AUD-2, AUD-5, CMP-2). See docs/probes/hygiene.md.
//!
//! These probes read the catalog as the owner and never call the layer: row-level security
//! enabled and forced where tenant policies exist, the agent's role unable to bypass it or act
//! as an owner, a statement timeout on the role itself, an insert-only audit writer, a tenant
//! column (or a stated exemption) on every join target, and the saved audit views.

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::Row;

use super::PlanInput;
use crate::codes::ProbeCode;
use crate::controls::{Control, DbControl};
use crate::runner::{Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::{quote_ident, TruthError};

/// The saved audit views the security team's questions rely on (fixtures/shop/50_audit.sql).
pub const SAVED_VIEWS: [&str; 5] = [
    "denials_by_code",
    "writes_with_reasons",
    "cross_tenant_attempts",
    "slowest_calls",
    "subject_access",
];

/// Every hygiene probe.
pub fn probes(_input: &PlanInput<'_>) -> Vec<Probe> {
    vec![
        Probe::new(
            ProbeCode::RlsForced,
            "row-level security is enabled and forced on tenant-policy tables",
            rls_forced,
        )
        .at("tenant"),
        Probe::new(
            ProbeCode::AgentRole,
            "the agent role is not a superuser",
            |ctx| agent_role(ctx, "superuser"),
        )
        .killed_by([Control::Db(DbControl::AgentSuperuser)]),
        Probe::new(
            ProbeCode::AgentRole,
            "the agent role cannot bypass row-level security",
            |ctx| agent_role(ctx, "bypassrls"),
        )
        .killed_by([Control::Db(DbControl::AgentBypassRls)]),
        Probe::new(
            ProbeCode::AgentRole,
            "the agent role owns no object, directly or through membership",
            |ctx| agent_role(ctx, "owner"),
        )
        .killed_by([Control::Db(DbControl::AgentOwnsObjects)]),
        Probe::new(
            ProbeCode::RoleStatementTimeout,
            "the agent role has its own statement_timeout",
            role_statement_timeout,
        ),
        Probe::new(
            ProbeCode::AuditGrants,
            "the audit writer may only insert into the audit log",
            audit_grants,
        )
        .at("audit"),
        Probe::new(
            ProbeCode::JoinTargetsScoped,
            "every relation target has a tenant column or a stated exemption",
            join_targets_scoped,
        )
        .at("models"),
        Probe::new(
            ProbeCode::SavedViews,
            "the saved audit views exist and answer",
            saved_views,
        )
        .at("audit"),
    ]
}

fn q(what: &str) -> impl FnOnce(sqlx::Error) -> ProbeOutcome {
    let what = what.to_string();
    move |source| ProbeOutcome::from(TruthError::Query { what, source })
}

async fn rls_forced(ctx: Arc<ProbeCtx>) -> ProbeResult {
    let setting = ctx.policy.tenant_setting.clone();
    let mut facts = Vec::new();
    let mut problems = Vec::new();
    let mut with_rls = 0;
    let mut layer_only = Vec::new();
    for m in ctx.policy.models.values() {
        let Some(tc) = &m.tenant_column else { continue };
        let row = sqlx::query(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, \
                    coalesce((SELECT array_agg(pg_get_expr(p.polqual, p.polrelid)) \
                              FROM pg_policy p WHERE p.polrelid = c.oid), '{}') AS quals \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&m.schema)
        .bind(&m.table)
        .fetch_optional(ctx.truth.pool())
        .await
        .map_err(q("read row-level security flags"))?;
        let Some(row) = row else { continue };
        let (enabled, forced): (bool, bool) = (row.get(0), row.get(1));
        let quals: Vec<Option<String>> = row.get(2);
        let quals: Vec<String> = quals.into_iter().flatten().collect();
        if quals.is_empty() && !enabled {
            let stakes = high_stakes(m);
            if !stakes.is_empty() {
                problems.push(format!(
                    "{}: holds {} (denied or hashed by the policy's own field rules) but has no \
                     row-level security at all",
                    m.table,
                    stakes.join(", ")
                ));
            }
            layer_only.push(m.table.clone());
            continue;
        }
        with_rls += 1;
        facts.push(format!(
            "{}: relrowsecurity={enabled} relforcerowsecurity={forced} policies={}",
            m.table,
            quals.len()
        ));
        if !enabled {
            problems.push(format!(
                "{}: has tenant policies but row-level security is disabled",
                m.table
            ));
        } else if !forced {
            problems.push(format!(
                "{}: row-level security is not forced (the table owner bypasses it)",
                m.table
            ));
        }
        if !quals
            .iter()
            .any(|qual| qual.contains(&setting) && qual.contains(tc.as_str()))
        {
            problems.push(format!(
                "{}: no policy compares {tc} with the `{setting}` setting",
                m.table
            ));
        }
    }
    if !layer_only.is_empty() {
        facts.push(format!(
            "no row-level policy (isolation rests on the layer, probed by cross_tenant): {}",
            layer_only.join(", ")
        ));
    }
    if with_rls == 0 && problems.is_empty() {
        return Ok(ProbeOutcome::fail(
            "no tenant-scoped table has row-level security; enable and force it on the highest-stakes tables",
        )
        .facts(facts));
    }
    if !problems.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "row-level security is incomplete on {} table(s): `ALTER TABLE ... ENABLE ROW LEVEL SECURITY` and `FORCE ROW LEVEL SECURITY`",
            problems.len()
        ))
        .facts(problems)
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "{with_rls} table(s) with tenant policies have row-level security enabled and forced"
    ))
    .facts(facts))
}

/// The fields of `m` the policy's own field rules deny or hash (not the preset's default or a
/// wildcard): the policy author's statement that the table holds what must never leak, which
/// makes it one of the highest-stakes tables that need row-level security (ISO-5).
fn high_stakes(m: &preflight_enforcer::policy::ModelPolicy) -> Vec<String> {
    use preflight_enforcer::policy::{FieldAction, RuleSource};
    m.columns
        .iter()
        .filter(|c| matches!(c.action, FieldAction::Deny | FieldAction::Hash))
        .filter(|c| matches!(c.source, RuleSource::Explicit { .. }))
        .filter(|c| Some(c.name.as_str()) != m.tenant_column.as_deref())
        .map(|c| format!("`{}`", c.name))
        .collect()
}

pub(super) fn agent(ctx: &ProbeCtx) -> Result<String, ProbeOutcome> {
    ctx.agent_role.clone().ok_or_else(|| {
        ProbeOutcome::not_verified("the agent's database role is not known for this target")
    })
}

async fn agent_role(ctx: Arc<ProbeCtx>, what: &'static str) -> ProbeResult {
    let role = agent(&ctx)?;
    let pool = ctx.truth.pool();
    let attrs: Option<(bool, bool)> =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(&role)
            .fetch_optional(pool)
            .await
            .map_err(q("read the agent role"))?;
    let Some((superuser, bypass)) = attrs else {
        return Err(ProbeOutcome::error(format!("role {role} does not exist")));
    };
    // Attributes of roles the agent can SET ROLE to count as its own.
    let inherited: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls FROM pg_roles r \
         WHERE r.rolname <> $1 AND pg_has_role($1, r.oid, 'MEMBER')",
    )
    .bind(&role)
    .fetch_all(pool)
    .await
    .map_err(q("read the agent's role memberships"))?;
    let fact = format!(
        "{role}: rolsuper={superuser} rolbypassrls={bypass}; member of {}",
        if inherited.is_empty() {
            "no role".to_string()
        } else {
            inherited
                .iter()
                .map(|r| r.0.clone())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    match what {
        "superuser" => {
            let via: Vec<&String> = inherited.iter().filter(|r| r.1).map(|r| &r.0).collect();
            if superuser || !via.is_empty() {
                return Ok(ProbeOutcome::fail(format!(
                    "the agent role {role} is a superuser{}: it bypasses every grant and policy",
                    if via.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " through {}",
                            via.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ))
                .fact(fact));
            }
            Ok(ProbeOutcome::pass(format!("{role} is not a superuser")).fact(fact))
        }
        "bypassrls" => {
            let via: Vec<&String> = inherited.iter().filter(|r| r.2).map(|r| &r.0).collect();
            if bypass || !via.is_empty() {
                return Ok(ProbeOutcome::fail(format!(
                    "the agent role {role} can bypass row-level security{}",
                    if via.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (SET ROLE {})",
                            via.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ))
                .fact(fact));
            }
            Ok(ProbeOutcome::pass(format!("{role} cannot bypass row-level security")).fact(fact))
        }
        _ => {
            let owned: Vec<String> = sqlx::query_scalar(
                "SELECT format('%s %I.%I (owner %s)', CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, \
                               n.nspname, c.relname, pg_get_userbyid(c.relowner)) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm') \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
                   AND pg_has_role($1, c.relowner, 'MEMBER') \
                 UNION ALL \
                 SELECT format('schema %I (owner %s)', n.nspname, pg_get_userbyid(n.nspowner)) FROM pg_namespace n \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND n.nspname NOT LIKE 'pg_%' \
                   AND pg_has_role($1, n.nspowner, 'MEMBER') \
                 ORDER BY 1 LIMIT 20",
            )
            .bind(&role)
            .fetch_all(pool)
            .await
            .map_err(q("read object ownership"))?;
            if !owned.is_empty() {
                return Ok(ProbeOutcome::fail(format!(
                    "the agent role {role} owns {} object(s), directly or through a role it can become: \
                     an owner can disable row-level security and triggers",
                    owned.len()
                ))
                .fact(fact)
                .facts(owned));
            }
            Ok(ProbeOutcome::pass(format!("{role} owns no table, view or schema")).fact(fact))
        }
    }
}

/// Parses a Postgres duration setting (`5s`, `500ms`, `2min`, `5000`) to milliseconds.
pub fn parse_pg_duration(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "us" => return Some(n / 1000),
        _ => return None,
    };
    Some(n * factor)
}

/// The agent role's own settings (`ALTER ROLE … SET`), for every database and this one, as
/// `name=value` strings.
pub(super) async fn role_settings(ctx: &ProbeCtx, role: &str) -> Result<Vec<String>, ProbeOutcome> {
    sqlx::query_scalar(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
         WHERE r.rolname = $1 AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))",
    )
    .bind(role)
    .fetch_all(ctx.truth.pool())
    .await
    .map_err(q("read role settings"))
}

/// The role's own `statement_timeout` in milliseconds; `None` when it has none (or `0`, off).
pub(super) fn role_timeout_ms(settings: &[String]) -> Option<u64> {
    settings
        .iter()
        .find_map(|s| s.strip_prefix("statement_timeout="))
        .and_then(parse_pg_duration)
        .filter(|ms| *ms > 0)
}

async fn role_statement_timeout(ctx: Arc<ProbeCtx>) -> ProbeResult {
    let role = agent(&ctx)?;
    let settings = role_settings(&ctx, &role).await?;
    let timeout = settings
        .iter()
        .find_map(|s| s.strip_prefix("statement_timeout="))
        .map(str::to_string);
    let policy_max = ctx
        .policy
        .models
        .values()
        .filter_map(|m| m.budgets.statement_timeout_ms)
        .max();
    let facts = vec![
        format!(
            "{role} role settings: {}",
            if settings.is_empty() {
                "none".to_string()
            } else {
                settings.join(", ")
            }
        ),
        format!(
            "policy statement_timeout_ms (largest): {}",
            policy_max
                .map(|v| v.to_string())
                .unwrap_or_else(|| "not set".into())
        ),
    ];
    match role_timeout_ms(&settings) {
        // A backstop shorter than the policy's timeout cuts statements the policy allows, so
        // the budget the policy states is not the one that applies.
        Some(ms) if policy_max.is_some_and(|p| ms < p) => Ok(ProbeOutcome::fail(format!(
            "{role} has statement_timeout = {} on the role, shorter than the policy's \
             statement_timeout_ms ({} ms): the database cuts statements the policy allows; set the \
             role's timeout at or above the policy's",
            timeout.unwrap_or_default(),
            policy_max.unwrap_or_default()
        ))
        .facts(facts)),
        Some(_) => Ok(ProbeOutcome::pass(format!(
            "{role} has statement_timeout = {} on the role, a backstop at or above the policy's own timeout",
            timeout.unwrap_or_default()
        ))
        .facts(facts)),
        _ => Ok(ProbeOutcome::fail(format!(
            "{role} has no statement_timeout of its own; `ALTER ROLE {} SET statement_timeout = '5s'` so a \
             query that escapes the layer's timeout is still cut off",
            quote_ident(&role)
        ))
        .facts(facts)),
    }
}

async fn audit_grants(ctx: Arc<ProbeCtx>) -> ProbeResult {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('preflight_audit.audit_log') IS NOT NULL")
            .fetch_one(ctx.truth.pool())
            .await
            .map_err(q("look up the audit log"))?;
    if !exists {
        return Err(ProbeOutcome::not_verified(
            "the database has no preflight_audit.audit_log",
        ));
    }
    let mut roles: Vec<(String, bool)> = Vec::new();
    if let Some(w) = &ctx.audit_role {
        roles.push((w.clone(), true));
    }
    if let Some(a) = &ctx.agent_role {
        roles.push((a.clone(), false));
    }
    if roles.is_empty() {
        return Err(ProbeOutcome::not_verified(
            "neither the audit writer nor the agent role is known",
        ));
    }
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    for (role, writer) in roles {
        let row = sqlx::query(
            "SELECT has_table_privilege($1, 'preflight_audit.audit_log', 'INSERT'), \
                    has_table_privilege($1, 'preflight_audit.audit_log', 'UPDATE'), \
                    has_table_privilege($1, 'preflight_audit.audit_log', 'DELETE'), \
                    has_table_privilege($1, 'preflight_audit.audit_log', 'TRUNCATE'), \
                    has_table_privilege($1, 'preflight_audit.audit_log', 'SELECT')",
        )
        .bind(&role)
        .fetch_one(ctx.truth.pool())
        .await
        .map_err(q("read audit log privileges"))?;
        let (ins, upd, del, trunc, sel): (bool, bool, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        facts.push(format!(
            "{role}: INSERT={ins} UPDATE={upd} DELETE={del} TRUNCATE={trunc} SELECT={sel}"
        ));
        if upd || del || trunc {
            problems.push(format!(
                "{role} may {} the audit log",
                [(upd, "UPDATE"), (del, "DELETE"), (trunc, "TRUNCATE")]
                    .iter()
                    .filter(|(b, _)| *b)
                    .map(|(_, s)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if writer && !ins {
            problems.push(format!(
                "the audit writer {role} cannot INSERT into the audit log"
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "audit log privileges are wider than INSERT: {}",
            problems.join("; ")
        ))
        .facts(facts));
    }
    Ok(
        ProbeOutcome::pass("the audit writer may only insert; the agent may not change the log")
            .facts(facts),
    )
}

async fn join_targets_scoped(ctx: Arc<ProbeCtx>) -> ProbeResult {
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    let mut targets = BTreeSet::new();
    for m in ctx.policy.models.values() {
        for rel in m.relations.values() {
            targets.insert(rel.target.clone());
        }
    }
    for t in &targets {
        let Some(model) = ctx.policy.model(t) else {
            problems.push(format!(
                "{t}: a relation targets a model the policy does not define"
            ));
            continue;
        };
        let col = match &model.tenant_column {
            Some(tc) => {
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
                     WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)",
                )
                .bind(&model.schema)
                .bind(&model.table)
                .bind(tc)
                .fetch_one(ctx.truth.pool())
                .await
                .map_err(q("read the catalog's columns"))?;
                if !exists {
                    problems.push(format!(
                        "{t}: tenant column {tc} is not in {}.{}",
                        model.schema, model.table
                    ));
                }
                format!("tenant column {tc}")
            }
            None => match model.tenant_exempt_reason.as_deref().map(str::trim) {
                Some(r) if !r.is_empty() => format!("exempt: {r}"),
                _ => {
                    problems.push(format!(
                        "{t}: no tenant column and no stated reason for the exemption"
                    ));
                    "no tenant column, no reason".to_string()
                }
            },
        };
        facts.push(format!("{t}: {col}"));
    }
    if targets.is_empty() {
        return Ok(ProbeOutcome::pass("the policy declares no relations").facts(facts));
    }
    if !problems.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "{} join target(s) are not tenant-scoped and give no reason",
            problems.len()
        ))
        .facts(problems)
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "all {} join target(s) carry a tenant column or a stated exemption",
        targets.len()
    ))
    .facts(facts))
}

async fn saved_views(ctx: Arc<ProbeCtx>) -> ProbeResult {
    let mut missing = Vec::new();
    let mut facts = Vec::new();
    for v in SAVED_VIEWS {
        let name = format!("preflight_audit.{v}");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(ctx.truth.pool())
            .await
            .map_err(q("look up a saved view"))?;
        if !exists {
            missing.push(name);
            continue;
        }
        let sql = format!("SELECT * FROM preflight_audit.{} LIMIT 0", quote_ident(v));
        match sqlx::query(&sql).fetch_all(ctx.truth.pool()).await {
            Ok(_) => facts.push(format!("{name}: answers")),
            Err(e) => missing.push(format!("{name} (fails: {e})")),
        }
    }
    if !missing.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "saved audit view(s) missing or broken: {}",
            missing.join(", ")
        ))
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "all {} saved audit views exist and answer",
        SAVED_VIEWS.len()
    ))
    .facts(facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_pg_duration("5s"), Some(5000));
        assert_eq!(parse_pg_duration("250ms"), Some(250));
        assert_eq!(parse_pg_duration("2min"), Some(120_000));
        assert_eq!(parse_pg_duration("5000"), Some(5000));
        assert_eq!(parse_pg_duration("x"), None);
    }
}
