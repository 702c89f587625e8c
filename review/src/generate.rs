//! A realistic 90-day audit log, produced through the real built-in layer, for the review to
//! find true things in (`preflight bench audit-log`).
//!
//! Every record is a real call of a real [`BuiltinGateway`] on the shop database, audited by the
//! real [`JsonlSink`]: the layer decides, measures the duration and builds the record; the sink
//! hashes the chain. Only the sink's clock is injected ([`JsonlSink::open_with_clock`]): it
//! reads a simulated time that the generator moves forward call by call along a 90-day
//! schedule, so `at` is part of the hash from the start and the chain is honest (no record is
//! re-timed after sealing).
//!
//! What is planted, and written to `planted.json` from what the layer actually answered:
//! - the top denial: filters on `customers.ssn` (denied), 80% of them by one principal;
//! - a spread denial: reads of `staff_salaries` (a model the policy does not have), across
//!   every principal;
//! - one slow tool: `db_describe_schema`, slowed by a call hook that really sleeps 30–90 ms;
//! - writes with good reasons and with bad ones (a placeholder, too short, one text reused
//!   across many writes, not naming the entity or action);
//! - a policy change at day 45 (two policy hashes: `customers.email` unmasked and the scan
//!   budget raised in the second);
//! - a denial spike (one hour of day 30), a write-rate spike (one hour of day 70), and a sink
//!   gap (day 60, 06:00–18:00, no records).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use preflight_enforcer::audit::{canonical::format_time, Clock, FsyncPolicy, JsonlSink};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions, CallHook};
use preflight_enforcer::policy::{ModelPolicy, Policy};
use preflight_enforcer::{CallContext, Faults, Gateway, Principal, ToolError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The shop policy, as shipped; the two generated policies are edits of it.
const SHOP_POLICY: &str = include_str!("../../fixtures/shop/policy.yaml");

pub const LOG_FILE: &str = "audit.jsonl";
pub const POLICY_BEFORE: &str = "policy-before.yaml";
pub const POLICY_AFTER: &str = "policy-after.yaml";
pub const PLANTED_FILE: &str = "planted.json";

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const AGENTS: u32 = 12;
/// The principal the top denial concentrates on.
pub const MISBEHAVING: (&str, &str) = ("globex", "agent-07");
pub const SLOW_TOOL: &str = "db_describe_schema";
/// The plants' days in a 90-day log; a shorter log ([`GenPlan::days`]) has them at the same
/// fractions of its span.
const DAY_POLICY_CHANGE: i64 = 45;
const DAY_DENIAL_SPIKE: i64 = 30;
const HOUR_DENIAL_SPIKE: i64 = 10;
const DAY_WRITE_SPIKE: i64 = 70;
const HOUR_WRITE_SPIKE: i64 = 15;
const DAY_GAP: i64 = 60;
const GAP_HOURS: (i64, i64) = (6, 18);
const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

/// The reused reason: names the entity and the action, but one text for many writes.
pub const REUSED_REASON: &str = "Updating the ticket status as agreed in the weekly support sync";
const PLACEHOLDERS: [&str; 6] = ["n/a", "TODO", "test", "xxx", "asdf", "placeholder"];
const SHORT: [&str; 4] = ["per chat", "fixed it", "as asked", "see call"];
const UNNAMED: [&str; 3] = [
    "The customer asked us to sort this out quickly",
    "Requested by the team lead during the morning standup",
    "Cleaning things up after the incident last week",
];

/// The policy the first half of the log runs under: the shop policy with quotas and the write
/// rate lifted, since the generator replays 90 days of calls in minutes of real time.
pub fn policy_before_text() -> String {
    let out = SHOP_POLICY
        .replacen(
            "defaults:\n  fields:",
            "defaults:\n  budgets: {max_writes_per_minute: 1000000}\n  fields:",
            1,
        )
        .replacen("calls_per_hour: 600", "calls_per_hour: 1000000000", 1)
        .replacen("rows_per_hour: 20000", "rows_per_hour: 1000000000", 1)
        .replacen(
            "name: shop-support-agent",
            "name: shop-support-agent-generated",
            1,
        );
    debug_assert_ne!(out, SHOP_POLICY);
    out
}

/// The second half's policy: customers.email unmasked and the scan budget raised.
pub fn policy_after_text() -> String {
    policy_before_text()
        .replacen(
            "      email: mask\n      phone: mask",
            "      email: allow\n      phone: mask",
            1,
        )
        .replacen(
            "  budgets: {max_writes_per_minute: 1000000}",
            "  budgets: {max_writes_per_minute: 1000000, max_scan_rows: 1000000}",
            1,
        )
}

/// How big a log, over how long.
#[derive(Clone, Debug)]
pub struct GenPlan {
    pub records: u64,
    pub days: i64,
    /// The first simulated day (midnight UTC).
    pub start: DateTime<Utc>,
    pub seed: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Enforcement the layer is built without (the layer under test of a probe run with
    /// `--insecure-fault`); none in production.
    pub faults: Faults,
}

impl GenPlan {
    /// The day of the log a 90-day plant day falls on.
    fn day(&self, day_of_90: i64) -> i64 {
        day_of_90 * self.days.max(1) / 90
    }
}

impl Default for GenPlan {
    fn default() -> Self {
        Self {
            records: 20_000,
            days: 90,
            start: Utc
                .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            seed: 13,
            concurrency: 16,
            faults: Faults::none(),
        }
    }
}

/// The top denial as planted and as the layer answered it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedDenial {
    pub code: String,
    pub tool: String,
    pub model: String,
    pub field: String,
    pub tenant: String,
    pub user: String,
    /// Denials of this kind in the log, and how many came from the principal.
    pub count: u64,
    pub by_principal: u64,
}

/// What the generator planted, for the review (and its tests) to find.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Planted {
    pub records: u64,
    pub start: String,
    pub end: String,
    pub top_denial: PlantedDenial,
    pub slow_tool: String,
    /// Start of the hour holding the denial spike, and its denials.
    pub denial_spike_hour: String,
    pub denial_spike_count: u64,
    pub write_spike_hour: String,
    pub write_spike_count: u64,
    /// The sink gap: no record from `gap_from` to `gap_to`.
    pub gap_from: String,
    pub gap_to: String,
    pub policy_change_at: String,
    pub policy_hashes: Vec<String>,
    /// Allowed writes per failed reason rule (`placeholder`, `too_short`, `reused`,
    /// `unnamed`), and the good ones.
    pub bad_reasons: BTreeMap<String, u64>,
    pub good_reasons: u64,
    /// Records per decision/code, as the layer answered.
    pub outcomes: BTreeMap<String, u64>,
}

/// Files the generator wrote.
#[derive(Clone, Debug)]
pub struct Generated {
    pub log: PathBuf,
    pub policy_before: PathBuf,
    pub policy_after: PathBuf,
    pub planted: Planted,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Io(String),
    #[error("the built-in layer cannot start: {0}")]
    Gateway(String),
    #[error("the setup call {tool} failed: {error}")]
    Setup { tool: String, error: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    Placeholder,
    Short,
    Reused,
    Unnamed,
}

impl Bad {
    fn key(self) -> &'static str {
        match self {
            Bad::Placeholder => "placeholder",
            Bad::Short => "too_short",
            Bad::Reused => "reused",
            Bad::Unnamed => "unnamed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    QueryOrders,
    GetCustomer,
    GetOrder,
    AggregateOrders,
    QueryProducts,
    Describe,
    WriteGood,
    WriteBad(Bad),
    DenyModel,
    DenyField,
    SpikeDeny,
}

#[derive(Clone, Copy, Debug)]
struct Event {
    at_us: i64,
    kind: Kind,
    tenant: usize,
    agent: u32,
    pick: u32,
}

/// Ids the calls use, read through the gateway at the start (those reads are audited too).
#[derive(Clone, Debug, Default)]
struct Ids {
    customers: Vec<i64>,
    orders: Vec<i64>,
    tickets: Vec<i64>,
}

/// The slow tool: a hook that really sleeps, so the layer's own measurement sees it.
struct SlowHook;

#[async_trait]
impl CallHook for SlowHook {
    async fn before(
        &self,
        _ctx: &CallContext,
        tool: &str,
        _model: Option<&ModelPolicy>,
    ) -> Result<(), ToolError> {
        if tool == SLOW_TOOL {
            let ms = rand::rng().random_range(30..90);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(())
    }

    async fn after(
        &self,
        _ctx: &CallContext,
        _tool: &str,
        _model: Option<&ModelPolicy>,
        _rows_returned: u64,
        _rows_affected: u64,
    ) {
    }
}

fn time_text(start_us: i64, offset_us: i64) -> String {
    let t = start_us + offset_us;
    Utc.timestamp_micros(t)
        .single()
        .map(format_time)
        .unwrap_or_default()
}

fn schedule(plan: &GenPlan, rng: &mut StdRng) -> Vec<Event> {
    let n = plan.records.saturating_sub(30);
    // Large enough to clear the alert's floor of 20 an hour, small enough that a short log's
    // top denial is still the planted one.
    let denial_spike = (plan.records / 100).max(60).min(n / 4);
    let write_spike = (plan.records / 500).max(60).min(n / 8);
    let normal = n.saturating_sub(denial_spike + write_spike);
    let mut events = Vec::with_capacity(n as usize);
    let gap = (
        plan.day(DAY_GAP) * DAY_US + GAP_HOURS.0 * HOUR_US,
        plan.day(DAY_GAP) * DAY_US + GAP_HOURS.1 * HOUR_US,
    );
    let span = plan.days * DAY_US;
    for _ in 0..normal {
        let at_us = loop {
            let t = rng.random_range(HOUR_US..span);
            // Weekends are quieter; the gap has nothing.
            let weekday = (t / DAY_US) % 7;
            if weekday >= 5 && rng.random_bool(0.4) {
                continue;
            }
            if t >= gap.0 && t < gap.1 {
                continue;
            }
            break t;
        };
        let roll = rng.random_range(0..1000u32);
        let kind = match roll {
            0..335 => Kind::QueryOrders,
            335..535 => Kind::GetCustomer,
            535..655 => Kind::GetOrder,
            655..735 => Kind::AggregateOrders,
            735..835 => Kind::QueryProducts,
            835..850 => Kind::Describe,
            850..890 => Kind::WriteGood,
            890..900 => Kind::WriteBad(match roll % 4 {
                0 => Bad::Placeholder,
                1 => Bad::Short,
                2 => Bad::Reused,
                _ => Bad::Unnamed,
            }),
            900..940 => Kind::DenyModel,
            _ => Kind::DenyField,
        };
        let (mut tenant, mut agent) = (rng.random_range(0..3), rng.random_range(1..=AGENTS));
        if kind == Kind::DenyField && rng.random_bool(0.8) {
            tenant = 1;
            agent = 7;
        } else if kind != Kind::DenyField && tenant == 1 && agent == 7 {
            // The misbehaving principal does little else, so its share is unmistakable.
            agent = 8;
        }
        events.push(Event {
            at_us,
            kind,
            tenant,
            agent,
            pick: rng.random(),
        });
    }
    let spike = |day: i64, hour: i64, count: u64, kind: Kind, rng: &mut StdRng| {
        (0..count)
            .map(|_| Event {
                at_us: day * DAY_US + hour * HOUR_US + rng.random_range(0..HOUR_US),
                kind,
                tenant: 0,
                agent: rng.random_range(1..=6),
                pick: rng.random(),
            })
            .collect::<Vec<_>>()
    };
    events.extend(spike(
        plan.day(DAY_DENIAL_SPIKE),
        HOUR_DENIAL_SPIKE,
        denial_spike,
        Kind::SpikeDeny,
        rng,
    ));
    events.extend(spike(
        plan.day(DAY_WRITE_SPIKE),
        HOUR_WRITE_SPIKE,
        write_spike,
        Kind::WriteGood,
        rng,
    ));
    events.sort_by_key(|e| e.at_us);
    events
}

fn pick<T: Copy>(v: &[T], i: u32) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[i as usize % v.len()])
    }
}

const STATUSES: [&str; 3] = ["open", "pending", "closed"];

/// The call an event makes: (tool, arguments).
fn call_of(e: &Event, ids: &Ids) -> (&'static str, Value) {
    let p = e.pick;
    let customer = pick(&ids.customers, p).unwrap_or(1);
    let order = pick(&ids.orders, p).unwrap_or(1);
    let ticket = pick(&ids.tickets, p).unwrap_or(1);
    let status = STATUSES[(p % 3) as usize];
    let write = |reason: String| {
        (
            "db_update",
            json!({"model": "support_tickets", "id": ticket, "data": {"status": status}, "reason": reason}),
        )
    };
    match e.kind {
        Kind::QueryOrders => (
            "db_query",
            json!({"model": "orders", "select": ["id", "status", "total", "created_at"],
                   "where": day_filter(p % 1800, 1), "limit": 10}),
        ),
        Kind::GetCustomer => (
            "db_get",
            json!({"model": "customers", "id": customer, "select": ["id", "name", "email"]}),
        ),
        Kind::GetOrder => ("db_get", json!({"model": "orders", "id": order})),
        Kind::AggregateOrders => (
            "db_aggregate",
            json!({"model": "orders", "aggregates": [{"function": "count", "alias": "n"}],
                   "where": day_filter(p % 1800, 1),
                   "group_by": ["status"]}),
        ),
        Kind::QueryProducts => (
            "db_query",
            json!({"model": "products", "select": ["id", "name", "price"], "limit": 20}),
        ),
        Kind::Describe => ("db_describe_schema", json!({})),
        Kind::WriteGood => write(match p % 3 {
            0 => format!("Closing ticket {ticket}: the customer confirmed the replacement arrived"),
            1 => format!(
                "Ticket {ticket} set to {status} while the carrier investigates the lost parcel"
            ),
            _ => format!(
                "Reopening ticket {ticket} because the customer says the refund is still missing"
            ),
        }),
        Kind::WriteBad(b) => write(match b {
            Bad::Placeholder => PLACEHOLDERS[(p as usize) % PLACEHOLDERS.len()].to_string(),
            Bad::Short => SHORT[(p as usize) % SHORT.len()].to_string(),
            Bad::Reused => REUSED_REASON.to_string(),
            Bad::Unnamed => UNNAMED[(p as usize) % UNNAMED.len()].to_string(),
        }),
        // A model the policy does not have: denied whatever the data.
        Kind::DenyModel => (
            "db_query",
            json!({"model": "staff_salaries", "select": ["id"], "limit": 10}),
        ),
        Kind::DenyField => (
            "db_query",
            json!({"model": "customers", "select": ["id", "name"],
                   "where": [{"field": "ssn", "op": "eq", "value": "123-45-6789"}], "limit": 5}),
        ),
        // A relation the policy does not declare: denied whatever the data.
        Kind::SpikeDeny => (
            "db_query",
            json!({"model": "orders", "select": ["id"], "include": ["shipments"],
                   "where": day_filter(p % 1800, 1), "limit": 5}),
        ),
    }
}

/// Orders created on `days` days from day `from` after 2020-01-01 (the fixtures spread orders
/// over 2020–2024; `created_at` is indexed, so the scan budget lets these run).
fn day_filter(from: u32, days: u32) -> Value {
    let d0 = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
    let a = d0 + chrono::Days::new(from.into());
    let b = a + chrono::Days::new(days.into());
    json!([{"field": "created_at", "op": "gte", "value": a.to_string()},
           {"field": "created_at", "op": "lt", "value": b.to_string()}])
}

fn ctx(tenant: usize, agent: u32) -> CallContext {
    CallContext::new(Principal {
        tenant: TENANTS[tenant].to_string(),
        user: format!("agent-{agent:02}"),
        roles: vec!["support".to_string()],
    })
}

/// Reads `field` of every row a setup query returns.
async fn ids_of(
    gw: &BuiltinGateway,
    tenant: usize,
    model: &str,
    filter: Value,
) -> Result<Vec<i64>, GenerateError> {
    let v = gw
        .call(
            &ctx(tenant, 1),
            "db_query",
            json!({"model": model, "select": ["id"], "where": filter, "limit": 100}),
        )
        .await
        .map_err(|e| GenerateError::Setup {
            tool: format!("db_query {model}"),
            error: e.to_string(),
        })?;
    Ok(v["rows"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["id"].as_i64()).collect())
        .unwrap_or_default())
}

#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    field_denials: BTreeMap<String, (u64, u64)>,
    spike_denials: u64,
    spike_writes: u64,
    bad: BTreeMap<String, u64>,
    good: u64,
}

/// Produces the log in `out` (which must not already hold one) through the layer whose agent
/// connection is `agent_url`; `policies` are the two policies loaded against that database's
/// catalog, before and after the change.
pub async fn generate(
    agent_url: &str,
    policies: (Arc<Policy>, Arc<Policy>),
    out: &Path,
    plan: &GenPlan,
) -> Result<Generated, GenerateError> {
    let t0 = std::time::Instant::now();
    let log = out.join(LOG_FILE);
    if log.exists() {
        return Err(GenerateError::Io(format!(
            "{} already exists; the generator writes a fresh log",
            log.display()
        )));
    }
    let start_us = plan.start.timestamp_micros();
    let now = Arc::new(AtomicI64::new(start_us));
    let clock_now = now.clone();
    let clock: Clock = Arc::new(move || time_text(clock_now.load(Ordering::SeqCst), 0));
    let sink =
        JsonlSink::open_with_clock(&log, "preflight-generator", FsyncPolicy::Never, Some(clock))
            .map_err(|e| GenerateError::Io(format!("{e}")))?;
    let options = BuiltinOptions {
        audit: vec![Arc::new(sink.clone())],
        hooks: vec![Arc::new(SlowHook)],
        faults: plan.faults.clone(),
        max_connections: plan.concurrency.clamp(1, 32) as u32,
        ..BuiltinOptions::default()
    };
    let gateway = |p: Arc<Policy>| {
        let options = options.clone();
        async move {
            BuiltinGateway::connect(p, agent_url, options)
                .await
                .map(Arc::new)
                .map_err(|e| GenerateError::Gateway(e.to_string()))
        }
    };
    let before = gateway(policies.0.clone()).await?;
    let after = gateway(policies.1.clone()).await?;

    let mut ids: Vec<Ids> = Vec::new();
    for t in 0..TENANTS.len() {
        let customers = ids_of(&before, t, "customers", json!([])).await?;
        // Orders only through the indexed date: the scan budget refuses a full read, and a
        // month of a large orders table (a probe run's `--rows`) too, so then one day.
        let orders = match ids_of(&before, t, "orders", day_filter(100, 30)).await {
            Ok(ids) => ids,
            Err(_) => ids_of(&before, t, "orders", day_filter(100, 1)).await?,
        };
        ids.push(Ids {
            customers,
            orders,
            tickets: ids_of(&before, t, "support_tickets", json!([])).await?,
        });
    }
    let ids = Arc::new(ids);
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let events = schedule(plan, &mut rng);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let limit = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let change_us = plan.day(DAY_POLICY_CHANGE) * DAY_US;
    let write_spike_hour = plan.day(DAY_WRITE_SPIKE) * 24 + HOUR_WRITE_SPIKE;
    let mut switched = false;
    let mut tasks = tokio::task::JoinSet::new();
    for e in events {
        if !switched && e.at_us >= change_us {
            // Every call under the old policy is recorded before the first under the new one.
            while tasks.join_next().await.is_some() {}
            switched = true;
        }
        now.fetch_max(start_us + e.at_us, Ordering::SeqCst);
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| GenerateError::Io(e.to_string()))?;
        let gw = if switched {
            after.clone()
        } else {
            before.clone()
        };
        let (ids, tally) = (ids.clone(), tally.clone());
        tasks.spawn(async move {
            let (tool, args) = call_of(&e, &ids[e.tenant]);
            let result = gw.call(&ctx(e.tenant, e.agent), tool, args).await;
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            let key = match &result {
                Ok(_) => "allow".to_string(),
                Err(err) => format!("deny:{}", err.code.as_str()),
            };
            *t.outcomes.entry(key.clone()).or_default() += 1;
            match (e.kind, &result) {
                (Kind::DenyField, Err(err)) => {
                    let c = t
                        .field_denials
                        .entry(err.code.as_str().to_string())
                        .or_default();
                    c.0 += 1;
                    if (TENANTS[e.tenant], format!("agent-{:02}", e.agent).as_str())
                        == (MISBEHAVING.0, MISBEHAVING.1)
                    {
                        c.1 += 1;
                    }
                }
                (Kind::SpikeDeny, Err(_)) => t.spike_denials += 1,
                (Kind::WriteGood, Ok(_)) => {
                    t.good += 1;
                    if e.at_us / HOUR_US == write_spike_hour {
                        t.spike_writes += 1;
                    }
                }
                (Kind::WriteBad(b), Ok(_)) => *t.bad.entry(b.key().to_string()).or_default() += 1,
                _ => {}
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    sink.flush().map_err(|e| GenerateError::Io(e.to_string()))?;
    let (records, _) = sink.head();

    let pb = out.join(POLICY_BEFORE);
    let pa = out.join(POLICY_AFTER);
    for (p, text) in [(&pb, policy_before_text()), (&pa, policy_after_text())] {
        std::fs::write(p, text)
            .map_err(|e| GenerateError::Io(format!("writing {}: {e}", p.display())))?;
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner());
    let (code, (count, by_principal)) = t
        .field_denials
        .iter()
        .max_by_key(|(_, c)| c.0)
        .map(|(k, c)| (k.clone(), *c))
        .unwrap_or_default();
    let planted = Planted {
        records: records as u64,
        start: time_text(start_us, 0),
        end: time_text(start_us, plan.days * DAY_US),
        top_denial: PlantedDenial {
            code,
            tool: "db_query".into(),
            model: "customers".into(),
            field: "ssn".into(),
            tenant: MISBEHAVING.0.into(),
            user: MISBEHAVING.1.into(),
            count,
            by_principal,
        },
        slow_tool: SLOW_TOOL.into(),
        denial_spike_hour: time_text(
            start_us,
            plan.day(DAY_DENIAL_SPIKE) * DAY_US + HOUR_DENIAL_SPIKE * HOUR_US,
        ),
        denial_spike_count: t.spike_denials,
        write_spike_hour: time_text(
            start_us,
            plan.day(DAY_WRITE_SPIKE) * DAY_US + HOUR_WRITE_SPIKE * HOUR_US,
        ),
        write_spike_count: t.spike_writes,
        gap_from: time_text(start_us, plan.day(DAY_GAP) * DAY_US + GAP_HOURS.0 * HOUR_US),
        gap_to: time_text(start_us, plan.day(DAY_GAP) * DAY_US + GAP_HOURS.1 * HOUR_US),
        policy_change_at: time_text(start_us, change_us),
        policy_hashes: vec![policies.0.hash.clone(), policies.1.hash.clone()],
        bad_reasons: t.bad.clone(),
        good_reasons: t.good,
        outcomes: t.outcomes.clone(),
    };
    let pf = out.join(PLANTED_FILE);
    let text = serde_json::to_string_pretty(&planted).unwrap_or_default();
    std::fs::write(&pf, text + "\n")
        .map_err(|e| GenerateError::Io(format!("writing {}: {e}", pf.display())))?;
    Ok(Generated {
        log,
        policy_before: pb,
        policy_after: pa,
        planted,
        elapsed: t0.elapsed(),
    })
}
