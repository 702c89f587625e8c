//! No pass without a test: each case is a layer variant (a policy change, a fault, an answer
//! bent the way a faulty layer might bend it, or a database change) under which the probe used
//! to say `pass` without having shown anything, and now says `fail`, `not_verified` or `error`.

// The twists return the layer's own answer type, `Result<Value, ToolError>`, as `Gateway::call`.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use preflight_enforcer::policy::FieldAction;
use preflight_enforcer::{ErrorCode, Fault, Faults, ToolError};
use preflight_probes::codes::Family;
use preflight_reports::Verdict;
use serde_json::{json, Value};

use crate::runner::session;
use crate::variants::{ctx_with, only, run_matching, with_field, TwistFn};

fn faults(f: &[Fault]) -> Faults {
    f.iter().copied().collect()
}

fn assert_verdict(findings: &[preflight_reports::Finding], want: Verdict, case: &str) {
    assert!(!findings.is_empty(), "{case}: nothing ran");
    for f in findings {
        assert_eq!(
            f.verdict,
            want,
            "{case}: {} [{}] said {}: {}",
            f.code,
            f.title,
            f.verdict.as_str(),
            f.message
        );
    }
}

/// A twist that answers `tool` with `bend(inner's answer)` and passes every other call through.
fn bend(
    tool: &'static str,
    bend: impl Fn(&Value, Result<Value, ToolError>) -> Result<Value, ToolError> + Send + Sync + 'static,
) -> TwistFn {
    let bend = Arc::new(bend);
    Arc::new(move |inner, cx, t, args| {
        let bend = Arc::clone(&bend);
        async move {
            let answer = inner.call(&cx, &t, args.clone()).await;
            if t == tool {
                bend(&args, answer)
            } else {
                answer
            }
        }
        .boxed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_refusals_and_blind_rows_are_not_passes() {
    let s = session().await;

    // Control and probe both refused (the foreign key masked, so no filter on it works).
    let ctx = ctx_with(
        &s,
        with_field(&s, "orders", "customer_id", FieldAction::Mask),
        Faults::none(),
        None,
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::CrossTenant,
        "cross_tenant.filter_foreign_reference",
        "orders where customer_id",
    )
    .await;
    assert_verdict(&f, Verdict::NotVerified, "both refused");

    // The tenants registry hides its key and tenant column: rows that come back cannot be
    // attributed to anyone, so "none of them is another tenant's" would be a guess.
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        faults(&[Fault::NoTenantPredicate, Fault::OracleCheckOff]),
        None,
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::CrossTenant,
        "cross_tenant.filter_forged_tenant",
        "tenants where id eq",
    )
    .await;
    assert_verdict(&f, Verdict::NotVerified, "unattributable rows");

    // An aggregate refused, and so is the same aggregate over the caller's own keys.
    let ctx = ctx_with(
        &s,
        with_field(&s, "customers", "id", FieldAction::Deny),
        Faults::none(),
        None,
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::CrossTenant,
        "cross_tenant.aggregate_forged_tenant",
        "count on customers over",
    )
    .await;
    assert_verdict(
        &f,
        Verdict::NotVerified,
        "aggregate refused without a control",
    );

    // A count under another name: whose rows it counted is unknown.
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        faults(&[Fault::NoTenantPredicate]),
        Some(bend("db_aggregate", |_, answer| {
            answer.map(|mut v| {
                for row in v["rows"].as_array_mut().into_iter().flatten() {
                    if let Some(n) = row.as_object_mut().and_then(|o| o.remove("count")) {
                        row["n"] = n;
                    }
                }
                v
            })
        })),
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::CrossTenant,
        "cross_tenant.aggregate_forged_tenant",
        "count on products over",
    )
    .await;
    assert_verdict(&f, Verdict::Error, "unreadable count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_probes_need_something_to_compare() {
    let s = session().await;

    // Rows without keys: a true and a wrong guess used to compare as two empty key lists.
    let ctx = ctx_with(
        &s,
        with_field(&s, "customers", "id", FieldAction::Deny),
        faults(&[Fault::OracleCheckOff]),
        None,
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::Pii,
        "pii.filter_oracle",
        "customers where ssn eq",
    )
    .await;
    assert_verdict(
        &f,
        Verdict::Fail,
        "guesses answered differently, rows without keys",
    );

    // Rows without keys: their order cannot be compared with the hidden values (it used to
    // compare as an empty list, unequal to the hidden order, so "did not follow" it).
    let f = run_matching(
        &s,
        &ctx,
        Family::Pii,
        "pii.order_oracle",
        "customers ordered by phone",
    )
    .await;
    assert_verdict(&f, Verdict::NotVerified, "ordered rows without keys");

    // A schema description without field lists checks nothing.
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        faults(&[Fault::DescribeShowsDenied]),
        Some(bend("db_describe_schema", |_, answer| {
            answer.map(|mut v| {
                for m in v["models"].as_array_mut().into_iter().flatten() {
                    if let Some(o) = m.as_object_mut() {
                        o.remove("fields");
                    }
                }
                v
            })
        })),
    )
    .await;
    let f = run_matching(&s, &ctx, Family::Pii, "pii.describe_schema", "").await;
    assert_verdict(&f, Verdict::NotVerified, "describe without fields");

    // A malformed value accepted: no error was provoked, so none could leak.
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        Faults::none(),
        Some(bend("db_query", |args, answer| {
            if args.to_string().contains("preflight-not-a-value") {
                Ok(json!({"rows": []}))
            } else {
                answer
            }
        })),
    )
    .await;
    let f = run_matching(&s, &ctx, Family::Pii, "pii.error_leak", "with a malformed").await;
    assert_verdict(&f, Verdict::NotVerified, "malformed read accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_probes_judge_the_refusal_they_asked_for() {
    let s = session().await;

    // An over-deep include refused for another reason than its depth.
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        Faults::none(),
        Some(bend("db_query", |_, answer| match answer {
            Err(e) if e.code == ErrorCode::JoinDepthExceeded => Err(ToolError::new(
                ErrorCode::ValidationError,
                "this include is not supported",
                "ask for fewer relations",
            )),
            other => other,
        })),
    )
    .await;
    let f = run_matching(&s, &ctx, Family::Budget, "budget.join_depth", "").await;
    assert_verdict(&f, Verdict::NotVerified, "refused for another reason");

    // A scan refusal whose suggestion says "valid": `id` inside a word is not a column named.
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        Faults::none(),
        Some(bend("db_query", |_, answer| match answer {
            Err(e) if e.code == ErrorCode::ScanBudgetExceeded => Err(ToolError::new(
                ErrorCode::ScanBudgetExceeded,
                "this read would scan too many rows",
                "narrow the read with a valid filter",
            )),
            other => other,
        })),
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::Budget,
        "budget.unbounded_scan",
        "db_query on orders",
    )
    .await;
    assert_verdict(&f, Verdict::Fail, "suggestion names no column");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_approvals_are_judged_from_the_database() {
    let s = session().await;

    // The bulk write after a dry run reported success and changed nothing.
    let dry_seen = Arc::new(AtomicBool::new(false));
    let twist: TwistFn = Arc::new(move |inner, cx, tool, args| {
        let dry_seen = Arc::clone(&dry_seen);
        async move {
            if tool == "db_dry_run" {
                dry_seen.store(true, Ordering::SeqCst);
            }
            if tool == "db_bulk_update" && dry_seen.load(Ordering::SeqCst) {
                return Ok(json!({"affected_rows": 11, "status": "ok"}));
            }
            inner.call(&cx, &tool, args).await
        }
        .boxed()
    });
    let ctx = ctx_with(&s, (*s.policy).clone(), Faults::none(), Some(twist)).await;
    let f = run_matching(&s, &ctx, Family::Write, "write.dry_run", "").await;
    assert_verdict(
        &f,
        Verdict::Fail,
        "bulk write after the dry run not applied",
    );

    // Pending judged from the approvals store: the request is approved behind the agent's
    // back while the status tool keeps saying "pending".
    let desk = s.target.approvals().expect("approvals desk");
    let approver = s.principals.approver.clone();
    let twist: TwistFn = Arc::new(move |inner, cx, tool, args| {
        let (desk, approver) = (Arc::clone(&desk), approver.clone());
        async move {
            if tool == "db_approval_status" {
                return Ok(json!({"state": "pending", "message": "still pending"}));
            }
            let answer = inner.call(&cx, &tool, args).await;
            if let Err(e) = &answer {
                if e.code == ErrorCode::ApprovalRequired {
                    if let Some(id) = preflight_probes::calls::approval_id_of(e) {
                        desk.approve(&id, &approver).await.expect("approve");
                    }
                }
            }
            answer
        }
        .boxed()
    });
    let ctx = ctx_with(&s, (*s.policy).clone(), Faults::none(), Some(twist)).await;
    let f = run_matching(&s, &ctx, Family::Approval, "approval.pending", "").await;
    assert_verdict(&f, Verdict::Fail, "pending by the tool's words only");

    // A replayed create that wrote its row and answered with an error.
    let used: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let owner = s.truth.pool().clone();
    let twist: TwistFn = Arc::new(move |inner, cx, tool, args| {
        let (used, owner) = (Arc::clone(&used), owner.clone());
        async move {
            let id = args["approval_id"].as_str().map(str::to_string);
            if let (Some(id), "db_create") = (id, tool.as_str()) {
                let again = !used.lock().unwrap().insert(id);
                if again {
                    sqlx::query(
                        "INSERT INTO public.refunds (tenant_id, order_id, amount, reason) \
                         SELECT $1, (d->>'order_id')::bigint, (d->>'amount')::numeric, d->>'reason' \
                         FROM (SELECT $2::jsonb AS d) x",
                    )
                    .bind(&cx.principal.tenant)
                    .bind(&args["data"])
                    .execute(&owner)
                    .await
                    .expect("replayed insert");
                    return Err(ToolError::new(
                        ErrorCode::ValidationError,
                        "this approval was already used",
                        "request a new approval",
                    ));
                }
            }
            inner.call(&cx, &tool, args).await
        }
        .boxed()
    });
    let ctx = ctx_with(&s, (*s.policy).clone(), Faults::none(), Some(twist)).await;
    let f = run_matching(
        &s,
        &ctx,
        Family::Approval,
        "approval.replay_refused",
        "refund-over-1000",
    )
    .await;
    assert_verdict(
        &f,
        Verdict::Fail,
        "replay wrote a row and answered an error",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_variants_the_old_probes_passed() {
    let s = session().await;
    let pool = s.truth.pool();
    let a = s.principals.a.tenant.clone();

    // Hidden values shorter than four characters are compared too.
    sqlx::query("UPDATE public.customers SET name = 'Al' WHERE tenant_id = $1")
        .bind(&a)
        .execute(pool)
        .await
        .expect("short names");
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        faults(&[Fault::OracleCheckOff]),
        None,
    )
    .await;
    let f = run_matching(
        &s,
        &ctx,
        Family::Pii,
        "pii.aggregate_oracle",
        "min/max of customers.name",
    )
    .await;
    assert_verdict(&f, Verdict::Fail, "short stored value returned by min/max");

    // A hidden order that is the key order: a response ordered by key looks the same.
    sqlx::query(
        "UPDATE public.customers SET created_at = timestamptz '2030-01-01' - id * interval '1 minute', \
         deleted_at = NULL WHERE tenant_id = $1",
    )
    .bind(&a)
    .execute(pool)
    .await
    .expect("created_at follows the key");
    let ctx = ctx_with(
        &s,
        with_field(&s, "customers", "created_at", FieldAction::Mask),
        Faults::none(),
        None,
    )
    .await;
    let mut policy = with_field(&s, "customers", "created_at", FieldAction::Mask);
    policy.path = s.policy.path.clone();
    let f = {
        // Planned from the variant policy: the shipped one does not hide created_at.
        let input = preflight_probes::families::PlanInput {
            policy: &policy,
            tools: &ctx.tools,
            native_tools: &ctx.native_tools,
            truth: &s.truth,
            tenant_a: &a,
            tenant_b: &s.principals.b.tenant,
            lint: &[],
            sql: None,
        };
        let mut plan = preflight_probes::families::plan(&input, &BTreeSet::from([Family::Pii]));
        plan.probes.retain(|p| {
            p.code == "pii.order_oracle" && p.title.contains("customers ordered by created_at")
        });
        assert_eq!(plan.len(), 1);
        preflight_probes::runner::run(
            &plan,
            Arc::clone(&ctx),
            &Default::default(),
            Default::default(),
            None,
        )
        .await
        .findings
    };
    assert_verdict(&f, Verdict::NotVerified, "hidden order equals key order");
    assert!(only(&f).message.contains("same order"), "{}", f[0].message);

    // The role's backstop is shorter than the policy's own timeout.
    let su = s.database.superuser_url().expect("superuser").to_string();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&su)
        .await
        .expect("superuser connection");
    let agent = s.agent_role.clone().expect("agent role");
    sqlx::query(&format!(
        "ALTER ROLE \"{agent}\" SET statement_timeout = '100ms'"
    ))
    .execute(&mut conn)
    .await
    .expect("short role timeout");
    let ctx = ctx_with(&s, (*s.policy).clone(), Faults::none(), None).await;
    let f = run_matching(
        &s,
        &ctx,
        Family::Hygiene,
        "hygiene.role_statement_timeout",
        "",
    )
    .await;
    assert_verdict(&f, Verdict::Fail, "backstop under the policy's timeout");

    // Row-level security removed outright from the table with the policy's explicit denials,
    // while other tables keep theirs.
    sqlx::query("ALTER TABLE public.customers DISABLE ROW LEVEL SECURITY")
        .execute(pool)
        .await
        .expect("disable RLS");
    sqlx::query("DROP POLICY tenant_isolation ON public.customers")
        .execute(pool)
        .await
        .expect("drop the policy");
    let f = run_matching(&s, &ctx, Family::Hygiene, "hygiene.rls_forced", "").await;
    assert_verdict(&f, Verdict::Fail, "RLS gone from a high-stakes table");

    // The first rows of A's orders reach nothing deep (their customer has no payment methods):
    // an over-deep include over them returns nothing deep even with the depth limit off. The
    // probe must pick rows that do reach the end of the path.
    let nobody: i64 = sqlx::query_scalar(
        "INSERT INTO public.customers (tenant_id, name, email) \
         VALUES ($1, 'Nobody', 'nobody.deep@acme-canary.example') RETURNING id",
    )
    .bind(&a)
    .fetch_one(pool)
    .await
    .expect("a customer without payment methods");
    sqlx::query(
        "UPDATE public.orders SET customer_id = $1 WHERE id IN \
         (SELECT id FROM public.orders WHERE tenant_id = $2 ORDER BY id LIMIT 3)",
    )
    .bind(nobody)
    .bind(&a)
    .execute(pool)
    .await
    .expect("first orders to that customer");
    let ctx = ctx_with(
        &s,
        (*s.policy).clone(),
        faults(&[Fault::JoinDepthOff]),
        None,
    )
    .await;
    let f = run_matching(&s, &ctx, Family::Budget, "budget.join_depth", "on orders").await;
    assert_verdict(&f, Verdict::Fail, "rows without deep children");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_left_behind_are_a_finding() {
    use preflight_probes::runner::{Probe, ProbeOutcome, ProbePlan};
    use preflight_probes::scratch::Scratch;

    let s = session().await;
    let pool = s.truth.pool();
    // The database refuses to let go of products rows, as a trigger or a foreign key might.
    for sql in [
        "CREATE FUNCTION public.keep_products() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'products are kept'; END $$",
        "CREATE TRIGGER keep_products BEFORE DELETE ON public.products \
         FOR EACH ROW EXECUTE FUNCTION public.keep_products()",
    ] {
        sqlx::query(sql).execute(pool).await.expect("keep products");
    }
    let probe = Probe::custom(
        "test.plants",
        Family::Write,
        "plants a product row and passes",
        Vec::new(),
        preflight_reports::Severity::Low,
        |ctx| async move {
            let m = ctx.model("products")?.clone();
            let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
            scratch
                .plant(&m, &ctx.principals.a.tenant, &serde_json::Map::new())
                .await?;
            let cleanup = scratch.cleanup().await;
            Ok(ProbeOutcome::pass("planted").fact(format!("cleanup: {cleanup:?}")))
        },
    );
    let ctx = ctx_with(&s, (*s.policy).clone(), Faults::none(), None).await;
    let result = preflight_probes::runner::run(
        &ProbePlan {
            probes: vec![probe],
        },
        ctx,
        &Default::default(),
        Default::default(),
        None,
    )
    .await;
    assert_eq!(result.leftover_rows.len(), 1, "{:?}", result.leftover_rows);
    let cleanup: Vec<_> = result
        .findings
        .iter()
        .filter(|f| f.code == preflight_probes::runner::CLEANUP_CODE)
        .collect();
    assert_eq!(cleanup.len(), 1, "{:#?}", result.findings);
    assert_eq!(cleanup[0].verdict, Verdict::Error);
    assert!(
        cleanup[0].evidence.facts[0].starts_with("products#"),
        "{:?}",
        cleanup[0].evidence.facts
    );
}
