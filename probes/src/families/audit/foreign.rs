//! Judging the audit log of a layer preflight did not write ([`every_call`]), as its target
//! profile's `audit:` section describes it: a JSONL file or a table, where each part of a record
//! sits, and which decision values mean allowed or refused.
//!
//! A foreign layer does not know preflight's trace ids. When the profile says how they reach the
//! layer (an argument on every call) and where its records keep them, each call is matched to
//! its record by trace id. Otherwise calls and records are matched by counts per (tenant, user,
//! the layer's tool name, allowed or refused) within the run's time window — sound because the
//! database and the layer processes are the run's own — and each finding says which matching was
//! used. Which code a refusal carried is checked per group: every code the run saw must be in the
//! group's records as often as it was seen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use preflight_enforcer::ErrorCode;
use preflight_targets::profile::AuditLog;

use super::foreign_log::{read, Decision, Record};
use crate::context::{CallEntry, Delivery};
use crate::runner::{ProbeCtx, ProbeOutcome, ProbeResult};
use crate::target::ForeignAudit;

/// Clock skew tolerated between preflight and the layer when leaving out earlier records.
const SKEW_SECS: f64 = 5.0;

/// The reason every audit probe gives on a remote target whose profile has no `audit:` section.
pub(super) const NO_AUDIT_SECTION: &str =
    "the target profile names no audit log (add an `audit:` section: a JSONL path or a table), so the layer's audit cannot be judged";

/// One call as the run made it, under the layer's tool name.
#[derive(Clone, Debug)]
pub(super) struct Call {
    pub trace_id: String,
    pub tenant: String,
    pub user: String,
    pub tool: String,
    pub outcome: Result<(), ErrorCode>,
}

/// The audit section, or the outcome of a probe that cannot judge a foreign log.
pub(super) fn section(foreign: &ForeignAudit) -> Result<&AuditLog, ProbeOutcome> {
    foreign
        .profile
        .audit
        .as_ref()
        .ok_or_else(|| ProbeOutcome::not_verified(NO_AUDIT_SECTION))
}

/// `every_call_audited` for a foreign layer: every call this run made to the layer tools that
/// `tool`'s calls went to has exactly one faithful record.
pub(super) async fn every_call(
    ctx: Arc<ProbeCtx>,
    foreign: &ForeignAudit,
    tool: &str,
) -> ProbeResult {
    let audit = section(foreign)?;
    let profile = &foreign.profile;
    let entries = ctx.calls.entries();
    let mine: Vec<&CallEntry> = entries.iter().filter(|e| e.tool == tool).collect();
    if mine.is_empty() {
        return Err(ProbeOutcome::error(format!("no {tool} call was made")));
    }
    let layer_tools: BTreeSet<String> = mine
        .iter()
        .filter(|e| e.delivery == Delivery::Sent)
        .filter_map(|e| profile.layer_tool(&e.tool, &e.arguments))
        .collect();
    if layer_tools.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "none of the {} {tool} call(s) reached the layer, so none can have been recorded",
            mine.len()
        )));
    }
    // Every call to those layer tools counts, whichever contract tool (or native name) made it.
    let mut calls = Vec::new();
    let mut uncertain = 0usize;
    for e in &entries {
        let Some(name) = profile.layer_tool(&e.tool, &e.arguments) else {
            continue;
        };
        if !layer_tools.contains(&name) {
            continue;
        }
        match e.delivery {
            Delivery::Sent => calls.push(Call {
                trace_id: e.trace_id.clone(),
                tenant: e.principal.tenant.clone(),
                user: e.principal.user.clone(),
                tool: name,
                outcome: e.outcome,
            }),
            Delivery::Unknown => uncertain += 1,
            Delivery::NotSent => {}
        }
    }
    let (records, bad_lines, where_) = read(&ctx, foreign, audit, profile).await?;
    let since = ctx
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() - SKEW_SECS)
        .unwrap_or(0.0);
    let records: Vec<Record> = records
        .into_iter()
        .filter(|r| layer_tools.contains(&r.tool))
        .filter(|r| r.time.is_none_or(|t| t >= since))
        .collect();
    let by_trace = audit.matches_by_trace();
    let mut problems = if by_trace {
        judge_by_trace(
            &calls,
            &records,
            audit.fields.user.is_some(),
            audit.fields.code.is_some(),
        )
    } else {
        judge_by_counts(
            &calls,
            &records,
            uncertain,
            audit.fields.user.is_some(),
            audit.fields.code.is_some(),
        )
    };
    problems.extend(bad_lines);
    let tools = layer_tools.iter().cloned().collect::<Vec<_>>().join(", ");
    let refused = calls.iter().filter(|c| c.outcome.is_err()).count();
    let matching = if by_trace {
        "matched by trace id"
    } else {
        "matched by counts per tenant, user, tool and decision within the run's time window (the layer does not record preflight's trace ids)"
    };
    let summary = format!(
        "{} call(s) to {tools} this run ({refused} refused), {} record(s) in {where_}; {matching}",
        calls.len(),
        records.len()
    );
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(20);
        return Ok(ProbeOutcome::fail(format!(
            "{n} problem(s) with the layer's audit of {tools}: every call, allowed or refused, \
             must be recorded once with its principal, tool, decision and code"
        ))
        .summary(summary)
        .facts(problems));
    }
    Ok(ProbeOutcome::pass(format!(
        "every call to {tools} has exactly one record in the layer's audit log with the right \
         principal, tool and decision ({})",
        if by_trace { "by trace id" } else { "by counts" }
    ))
    .summary(summary))
}

/// Problems when each call must have exactly one record with its trace id.
pub(super) fn judge_by_trace(
    calls: &[Call],
    records: &[Record],
    with_user: bool,
    with_code: bool,
) -> Vec<String> {
    let mut by_id: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        if let Some(t) = &r.trace_id {
            by_id.entry(t.as_str()).or_default().push(r);
        }
    }
    let mut problems = Vec::new();
    for c in calls {
        let what = format!(
            "{} call {} ({})",
            c.tool,
            c.trace_id,
            outcome_name(&c.outcome)
        );
        match by_id
            .get(c.trace_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            [] => problems.push(format!("{what}: no record")),
            [r] => problems.extend(
                unfaithful(c, r, with_user, with_code)
                    .into_iter()
                    .map(|p| format!("{what}: {p}")),
            ),
            many => problems.push(format!("{what}: {} records", many.len())),
        }
    }
    problems
}

fn outcome_name(o: &Result<(), ErrorCode>) -> String {
    match o {
        Ok(()) => "allowed".into(),
        Err(c) => c.as_str().into(),
    }
}

/// How a single matched record differs from its call.
fn unfaithful(c: &Call, r: &Record, with_user: bool, with_code: bool) -> Vec<String> {
    let mut out = Vec::new();
    if r.tenant != c.tenant || (with_user && r.user != c.user) {
        out.push(format!(
            "recorded as {}/{}, made as {}/{}",
            r.tenant, r.user, c.tenant, c.user
        ));
    }
    if r.tool != c.tool {
        out.push(format!("recorded as tool {}", r.tool));
    }
    match (&c.outcome, &r.decision) {
        (Ok(()), Decision::Allowed) | (Err(_), Decision::Refused) => {}
        (_, Decision::Unknown(v)) => out.push(format!(
            "recorded decision `{v}`, which the profile's audit.decisions does not map"
        )),
        (Ok(()), Decision::Refused) => out.push("recorded as refused".into()),
        (Err(_), Decision::Allowed) => out.push("recorded as allowed".into()),
    }
    if let (true, Err(code), Some(rec)) = (with_code, &c.outcome, &r.code) {
        if *code != ErrorCode::Internal && rec != code.as_str() {
            out.push(format!("recorded error code {rec}"));
        }
    }
    out
}

/// The key calls and records are counted under.
type Group = (String, String, String, bool);

/// Problems when calls and records are matched by counts per group.
pub(super) fn judge_by_counts(
    calls: &[Call],
    records: &[Record],
    uncertain: usize,
    with_user: bool,
    with_code: bool,
) -> Vec<String> {
    let user = |u: &str| {
        if with_user {
            u.to_string()
        } else {
            String::new()
        }
    };
    let mut made: BTreeMap<Group, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for c in calls {
        let g = made
            .entry((
                c.tenant.clone(),
                user(&c.user),
                c.tool.clone(),
                c.outcome.is_ok(),
            ))
            .or_default();
        g.0 += 1;
        if let Err(code) = c.outcome {
            // A reply the adapter could not read (`internal`) says nothing of the layer's code.
            if code != ErrorCode::Internal {
                *g.1.entry(code.as_str().to_string()).or_default() += 1;
            }
        }
    }
    let mut problems = Vec::new();
    let mut seen: BTreeMap<Group, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for r in records {
        let allowed = match &r.decision {
            Decision::Allowed => true,
            Decision::Refused => false,
            Decision::Unknown(v) => {
                problems.push(format!(
                    "a record of {} for {}/{} has decision `{v}`, which the profile's audit.decisions does not map",
                    r.tool, r.tenant, r.user
                ));
                continue;
            }
        };
        let g = seen
            .entry((r.tenant.clone(), user(&r.user), r.tool.clone(), allowed))
            .or_default();
        g.0 += 1;
        if let Some(code) = &r.code {
            *g.1.entry(code.clone()).or_default() += 1;
        }
    }
    let keys: BTreeSet<&Group> = made.keys().chain(seen.keys()).collect();
    let show = |g: &Group| {
        let who = if with_user {
            format!("{}/{}", g.0, g.1)
        } else {
            g.0.clone()
        };
        format!(
            "{} calls to {} by {who}",
            if g.3 { "allowed" } else { "refused" },
            g.2
        )
    };
    for g in keys {
        let (n_made, codes_made) = made.get(g).cloned().unwrap_or_default();
        let (n_seen, codes_seen) = seen.get(g).cloned().unwrap_or_default();
        if n_seen < n_made {
            problems.push(format!(
                "{}: {n_made} made, {n_seen} recorded ({} without a record)",
                show(g),
                n_made - n_seen
            ));
        } else if n_seen > n_made + uncertain {
            problems.push(format!(
                "{}: {n_made} made, {n_seen} recorded (more records than calls)",
                show(g)
            ));
        }
        if with_code {
            for (code, n) in &codes_made {
                let have = codes_seen.get(code).copied().unwrap_or(0);
                if have < *n {
                    problems.push(format!(
                        "{}: {n} refused with {code}, {have} recorded with that code",
                        show(g)
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tenant: &str, tool: &str, outcome: Result<(), ErrorCode>, trace: &str) -> Call {
        Call {
            trace_id: trace.into(),
            tenant: tenant.into(),
            user: format!("u@{tenant}"),
            tool: tool.into(),
            outcome,
        }
    }

    fn rec(
        tenant: &str,
        tool: &str,
        decision: Decision,
        code: Option<&str>,
        trace: &str,
    ) -> Record {
        Record {
            time: None,
            tenant: tenant.into(),
            user: format!("u@{tenant}"),
            tool: tool.into(),
            decision,
            code: code.map(str::to_string),
            trace_id: Some(trace.into()),
        }
    }

    #[test]
    fn counts_match_when_every_call_has_a_record() {
        let calls = [
            call("acme", "orders_search", Ok(()), "1"),
            call("acme", "orders_search", Err(ErrorCode::FieldDenied), "2"),
        ];
        let records = [
            rec(
                "acme",
                "orders_search",
                Decision::Refused,
                Some("field_denied"),
                "x",
            ),
            rec("acme", "orders_search", Decision::Allowed, None, "y"),
        ];
        assert!(judge_by_counts(&calls, &records, 0, true, true).is_empty());
    }

    #[test]
    fn a_refusal_without_a_record_is_found_by_counts() {
        let calls = [
            call("acme", "orders_search", Ok(()), "1"),
            call("acme", "orders_search", Err(ErrorCode::FieldDenied), "2"),
        ];
        let records = [rec("acme", "orders_search", Decision::Allowed, None, "y")];
        let p = judge_by_counts(&calls, &records, 0, true, true);
        assert!(
            p.iter()
                .any(|p| p
                    .contains("refused calls to orders_search by acme/u@acme: 1 made, 0 recorded")),
            "{p:?}"
        );
    }

    #[test]
    fn a_wrong_tenant_code_or_duplicate_is_found_by_counts() {
        let calls = [call("acme", "orders_get", Err(ErrorCode::NotFound), "1")];
        let records = [
            rec(
                "globex",
                "orders_get",
                Decision::Refused,
                Some("not_found"),
                "x",
            ),
            rec(
                "acme",
                "orders_get",
                Decision::Refused,
                Some("field_denied"),
                "y",
            ),
            rec(
                "acme",
                "orders_get",
                Decision::Refused,
                Some("field_denied"),
                "z",
            ),
        ];
        let p = judge_by_counts(&calls, &records, 0, true, true).join("\n");
        assert!(p.contains("by globex/u@globex: 0 made, 1 recorded"), "{p}");
        assert!(p.contains("by acme/u@acme: 1 made, 2 recorded"), "{p}");
        assert!(
            p.contains("1 refused with not_found, 0 recorded with that code"),
            "{p}"
        );
    }

    #[test]
    fn an_unknown_decision_value_is_a_problem_not_a_match() {
        let calls = [call("acme", "orders_get", Ok(()), "1")];
        let records = [rec(
            "acme",
            "orders_get",
            Decision::Unknown("maybe".into()),
            None,
            "x",
        )];
        let p = judge_by_counts(&calls, &records, 0, true, true).join("\n");
        assert!(p.contains("decision `maybe`"), "{p}");
        assert!(p.contains("1 made, 0 recorded"), "{p}");
    }

    #[test]
    fn trace_matching_checks_each_call_and_its_record() {
        let calls = [
            call("acme", "orders_get", Ok(()), "t1"),
            call("acme", "orders_get", Err(ErrorCode::NotFound), "t2"),
            call("acme", "orders_get", Ok(()), "t3"),
        ];
        let records = [
            rec("acme", "orders_get", Decision::Allowed, None, "t1"),
            rec("acme", "orders_get", Decision::Allowed, None, "t2"),
        ];
        let p = judge_by_trace(&calls, &records, true, true).join("\n");
        assert!(
            p.contains("orders_get call t2 (not_found): recorded as allowed"),
            "{p}"
        );
        assert!(p.contains("orders_get call t3 (allowed): no record"), "{p}");
        assert!(!p.contains("t1"), "{p}");
    }
}
