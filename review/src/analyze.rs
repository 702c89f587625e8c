//! The review's sections, computed from the window's records in one pass.
//!
//! The main type is [`Accumulator`]: [`add`](Accumulator::add) takes one stored record at a
//! time (so a million-record log is never held in memory as records: only counters, one
//! duration per call, and the writes), and [`finish`](Accumulator::finish) turns the counts into
//! a [`Sections`] with the inputs that do not come from the log (the policy, the regression
//! suite's result, the known policy files).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use preflight_enforcer::audit::canonical::format_time;
use preflight_enforcer::audit::ChainedRecord;
use preflight_enforcer::policy::{self, resolve_field, FieldAction, Policy, WRITE_TOOLS};
use serde_json::Value;

use crate::capabilities::capabilities;
use crate::model::*;
use crate::reasons;

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// Tools whose work grows with the data: slowness there is expected, elsewhere it is a finding.
const EXPECTED_SLOW: &[&str] = &[
    "db_query",
    "db_aggregate",
    "db_bulk_update",
    "db_dry_run",
    "db_create",
    "db_update",
    "db_delete",
];
const SLOWEST: usize = 20;
const TOP_DENIALS: usize = 10;
/// Listed writes failing a rule, at most (the counts cover all of them).
const FAILING_SHOWN: usize = 200;

/// Parses the canonical `YYYY-MM-DDTHH:MM:SS.ffffffZ` into microseconds since the epoch.
pub fn parse_at(at: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.timestamp_micros())
}

pub fn time_text(us: i64) -> String {
    Utc.timestamp_micros(us)
        .single()
        .map(format_time)
        .unwrap_or_default()
}

/// The regression suite's result, as the CLI ran it.
#[derive(Clone, Debug)]
pub enum SuiteResult {
    NotRun(String),
    Ran {
        cases: String,
        passed: u64,
        failed: u64,
        failures: Vec<String>,
    },
}

/// What the review needs beyond the log.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The current policy (QRT-1, and the field a denial concerned).
    pub policy: Option<Policy>,
    /// Policy files whose hashes may appear in the log (drift), the current one included.
    pub known: Vec<Policy>,
    pub suite: SuiteResult,
}

#[derive(Default)]
struct DenialKey {
    count: u64,
    principals: HashMap<String, u64>,
}

#[derive(Default)]
struct Durations {
    all: Vec<f32>,
}

struct WriteRow {
    id: i64,
    at: i64,
    principal: String,
    tool: String,
    write: reasons::Write,
}

/// Counts over the window (see the module docs).
pub struct Accumulator {
    from_us: i64,
    to_us: i64,
    records: u64,
    decisions: BTreeMap<String, u64>,
    denials: HashMap<(String, String, String, String), DenialKey>,
    denials_by_code: BTreeMap<String, u64>,
    by_tool: HashMap<String, Durations>,
    by_tool_model: HashMap<(String, String), Durations>,
    all_durations: Vec<f32>,
    slowest: BinaryHeap<Reverse<(u64, i64)>>,
    slow_detail: HashMap<i64, SlowCall>,
    writes: Vec<WriteRow>,
    denials_per_hour: HashMap<i64, u64>,
    writes_per_hour: HashMap<i64, u64>,
    timeouts_per_hour: HashMap<i64, u64>,
    day_denials: BTreeMap<String, HashMap<i64, u64>>,
    day_writes: HashMap<i64, u64>,
    /// Sum and count of the spacings between consecutive records.
    spacing: (i64, i64),
    gaps: Vec<(i64, i64)>,
    first_at: Option<i64>,
    last_at: Option<i64>,
    hashes: Vec<(String, i64, i64, u64)>,
    /// The policies the denied field is read against, by hash.
    field_policies: HashMap<String, Policy>,
    current: Option<Policy>,
    /// Field actions resolved so far, by (policy hash, model, field).
    actions: std::cell::RefCell<HashMap<(String, String, String), Option<FieldAction>>>,
}

impl Accumulator {
    /// A window `[from_us, to_us]`; `known` maps hashes to policies for reading denied fields.
    pub fn new(from_us: i64, to_us: i64, current: Option<&Policy>, known: &[Policy]) -> Self {
        Self {
            from_us,
            to_us,
            records: 0,
            decisions: BTreeMap::new(),
            denials: HashMap::new(),
            denials_by_code: BTreeMap::new(),
            by_tool: HashMap::new(),
            by_tool_model: HashMap::new(),
            all_durations: Vec::new(),
            slowest: BinaryHeap::new(),
            slow_detail: HashMap::new(),
            writes: Vec::new(),
            denials_per_hour: HashMap::new(),
            writes_per_hour: HashMap::new(),
            timeouts_per_hour: HashMap::new(),
            day_denials: BTreeMap::new(),
            day_writes: HashMap::new(),
            spacing: (0, 0),
            gaps: Vec::new(),
            first_at: None,
            last_at: None,
            hashes: Vec::new(),
            field_policies: known.iter().map(|p| (p.hash.clone(), p.clone())).collect(),
            current: current.cloned(),
            actions: Default::default(),
        }
    }

    /// Takes one record; records outside the window are skipped.
    pub fn add(&mut self, r: &ChainedRecord) {
        let Some(at) = parse_at(&r.at) else { return };
        if at < self.from_us || at > self.to_us {
            return;
        }
        self.records += 1;
        *self.decisions.entry(r.decision.clone()).or_default() += 1;
        // Whole UTC hours and days, so an alert names the hour on the clock.
        let hour = at.div_euclid(HOUR_US) - self.from_us.div_euclid(HOUR_US);
        let day = at.div_euclid(DAY_US) - self.from_us.div_euclid(DAY_US);
        if let Some(prev) = self.last_at {
            let d = (at - prev).max(0);
            self.spacing.0 += d;
            self.spacing.1 += 1;
            if d >= HOUR_US {
                self.gaps.push((prev, at));
            }
        }
        self.last_at = Some(at);
        self.first_at.get_or_insert(at);
        match self.hashes.iter_mut().find(|h| h.0 == r.policy_hash) {
            Some(h) => {
                h.2 = at;
                h.3 += 1;
            }
            None => self.hashes.push((r.policy_hash.clone(), at, at, 1)),
        }
        let model = r.arguments["model"].as_str().unwrap_or("").to_string();
        let principal = format!(
            "{}/{}",
            r.tenant_id.as_deref().unwrap_or("?"),
            r.user_id.as_deref().unwrap_or("?")
        );
        let ms = r.duration_ms.unwrap_or(0.0);
        self.by_tool
            .entry(r.tool.clone())
            .or_default()
            .all
            .push(ms as f32);
        self.by_tool_model
            .entry((r.tool.clone(), model.clone()))
            .or_default()
            .all
            .push(ms as f32);
        self.all_durations.push(ms as f32);
        let key = (ms * 1000.0) as u64;
        if self.slowest.len() < SLOWEST || self.slowest.peek().is_some_and(|m| m.0 .0 < key) {
            self.slowest.push(Reverse((key, r.id)));
            let mut args = serde_json::to_string(&r.arguments).unwrap_or_default();
            if args.chars().count() > 240 {
                args = args.chars().take(240).collect::<String>() + "…";
            }
            self.slow_detail.insert(
                r.id,
                SlowCall {
                    id: r.id,
                    at: r.at.clone(),
                    tool: r.tool.clone(),
                    principal: principal.clone(),
                    duration_ms: ms,
                    arguments: args,
                },
            );
            if self.slowest.len() > SLOWEST {
                if let Some(Reverse((_, id))) = self.slowest.pop() {
                    self.slow_detail.remove(&id);
                }
            }
        }
        if r.decision != "allow" {
            let code = r.error_code.clone().unwrap_or_else(|| r.decision.clone());
            if code == "statement_timeout" {
                *self.timeouts_per_hour.entry(hour).or_default() += 1;
            }
            *self.denials_per_hour.entry(hour).or_default() += 1;
            *self.denials_by_code.entry(code.clone()).or_default() += 1;
            *self
                .day_denials
                .entry(code.clone())
                .or_default()
                .entry(day)
                .or_default() += 1;
            let field = self.denied_field(&code, &model, &r.arguments, &r.policy_hash);
            let d = self
                .denials
                .entry((code, r.tool.clone(), model, field))
                .or_default();
            d.count += 1;
            *d.principals.entry(principal).or_default() += 1;
        } else if WRITE_TOOLS.contains(&r.tool.as_str()) {
            *self.writes_per_hour.entry(hour).or_default() += 1;
            *self.day_writes.entry(day).or_default() += 1;
            self.writes.push(WriteRow {
                id: r.id,
                at,
                principal,
                tool: r.tool.clone(),
                write: reasons::Write::from_arguments(&r.arguments, r.reason.as_deref()),
            });
        }
    }

    /// The field a field-related denial concerned: the first field the arguments name that the
    /// policy in force denies (or does not know).
    fn denied_field(&self, code: &str, model: &str, args: &Value, hash: &str) -> String {
        if !matches!(code, "field_denied" | "field_not_writable") {
            return "-".into();
        }
        let Some(p) = self.field_policies.get(hash).or(self.current.as_ref()) else {
            return "?".into();
        };
        let mut names: Vec<String> = Vec::new();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().or_else(|| x["field"].as_str()))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        names.extend(strings(&args["select"]));
        match &args["where"] {
            Value::Object(m) => names.extend(m.keys().cloned()),
            w => names.extend(strings(w)),
        }
        names.extend(strings(&args["order_by"]));
        names.extend(strings(&args["group_by"]));
        names.extend(strings(&args["aggregates"]));
        if let Some(d) = args["data"].as_object() {
            names.extend(d.keys().cloned());
        }
        let m = p.model(model);
        let bad = |f: &str| -> bool {
            if code == "field_not_writable" {
                return m.is_none_or(|m| !m.writable_fields.contains(f));
            }
            // Resolving by name compiles the policy's patterns: once per (policy, model, field),
            // not once per denial.
            let key = (p.hash.clone(), model.to_string(), f.to_string());
            let mut cache = self.actions.borrow_mut();
            let action = *cache.entry(key).or_insert_with(|| {
                m.and_then(|m| m.action(f))
                    .or_else(|| resolve_field(p, model, f).map(|(a, _)| a))
            });
            matches!(action, Some(FieldAction::Deny) | None)
        };
        names
            .into_iter()
            .find(|f| bad(f))
            .unwrap_or_else(|| "?".into())
    }

    /// The sections, with what does not come from the log.
    pub fn finish(mut self, inputs: &Inputs) -> Sections {
        let qrt2 = self.denials();
        let qrt3 = self.latency();
        let qrt4 = self.reasons();
        let alerts = self.alerts();
        let drift = self.drift(&inputs.known);
        let charts = self.charts();
        let suite = match &inputs.suite {
            SuiteResult::NotRun(why) => Suite {
                status: "not_run".into(),
                detail: why.clone(),
                passed: 0,
                failed: 0,
                failures: Vec::new(),
            },
            SuiteResult::Ran {
                cases,
                passed,
                failed,
                failures,
            } => Suite {
                status: if *failed == 0 { "passed" } else { "failed" }.into(),
                detail: format!("{cases}: {passed} passed, {failed} failed"),
                passed: *passed,
                failed: *failed,
                failures: failures.clone(),
            },
        };
        let qrt1 = Capabilities {
            policy: inputs.policy.as_ref().map(|p| p.path.clone()),
            policy_hash: inputs.policy.as_ref().map(|p| p.hash.clone()),
            lines: inputs
                .policy
                .as_ref()
                .map(capabilities)
                .unwrap_or_else(|| vec!["no policy given (--policy): nothing to re-read".into()]),
            sign_off: "Re-read by: ____________________  Date: __________  Signature: ____________________".into(),
        };
        Sections {
            records: self.records,
            decisions: std::mem::take(&mut self.decisions),
            qrt2_denials: qrt2,
            qrt3_latency: qrt3,
            qrt4_reasons: qrt4,
            qrt5_suite: suite,
            qrt1_capabilities: qrt1,
            ops8_alerts: alerts,
            drift,
            charts,
        }
    }

    fn denials(&self) -> Denials {
        let mut groups: Vec<DenialGroup> = self
            .denials
            .iter()
            .map(|((code, tool, model, field), d)| {
                let (top, top_n) = d
                    .principals
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                    .map(|(p, n)| (p.clone(), *n))
                    .unwrap_or_default();
                let share = top_n as f64 / d.count.max(1) as f64;
                let n = d.principals.len() as u64;
                let (pattern, verdict) = if share >= 0.5 && d.count >= 10 {
                    (
                        "concentrated",
                        format!(
                            "concentrated on one principal ({top}: {}% of {}): an agent misbehaving; look at what it was asked to do",
                            (share * 100.0).round(),
                            policy::thousands(d.count)
                        ),
                    )
                } else if n >= 5 && share < 0.3 {
                    (
                        "spread",
                        format!(
                            "spread across {n} principals (the largest has {}%): the policy may be too tight for the work",
                            (share * 100.0).round()
                        ),
                    )
                } else {
                    (
                        "mixed",
                        format!(
                            "{n} principals, the largest ({top}) with {}%",
                            (share * 100.0).round()
                        ),
                    )
                };
                DenialGroup {
                    code: code.clone(),
                    tool: tool.clone(),
                    model: if model.is_empty() { "-".into() } else { model.clone() },
                    field: field.clone(),
                    count: d.count,
                    principals: n,
                    top_principal: top,
                    top_principal_count: top_n,
                    pattern: pattern.into(),
                    verdict,
                }
            })
            .collect();
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.code, &a.tool, &a.model).cmp(&(&b.code, &b.tool, &b.model)))
        });
        groups.truncate(TOP_DENIALS);
        Denials {
            total: self.denials_by_code.values().sum(),
            top: groups,
            by_code: self.denials_by_code.clone(),
        }
    }

    fn latency(&mut self) -> Latency {
        let overall_p50 = percentile(&mut self.all_durations, 0.5);
        let mut by_tool: Vec<LatencyRow> = self
            .by_tool
            .iter_mut()
            .map(|(t, d)| row(t, "", &mut d.all))
            .collect();
        by_tool.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms).then(a.tool.cmp(&b.tool)));
        let mut by_tool_model: Vec<LatencyRow> = self
            .by_tool_model
            .iter_mut()
            .map(|((t, m), d)| row(t, m, &mut d.all))
            .collect();
        by_tool_model.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms).then(a.tool.cmp(&b.tool)));
        // A tool whose typical call takes several times the typical call of the whole log, when
        // its work does not grow with the data, is not slow for a reason anyone planned.
        let flagged = by_tool
            .iter()
            .filter(|r| !EXPECTED_SLOW.contains(&r.tool.as_str()))
            .filter(|r| r.calls >= 5 && r.p50_ms >= (4.0 * overall_p50).max(5.0))
            .map(|r| {
                format!(
                    "{} is slow for what it does: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} calls (all calls: p50 {:.1} ms)",
                    r.tool,
                    r.p50_ms,
                    r.p95_ms,
                    r.max_ms,
                    policy::thousands(r.calls),
                    overall_p50
                )
            })
            .collect();
        let mut slowest: Vec<SlowCall> = self.slow_detail.values().cloned().collect();
        slowest.sort_by(|a, b| {
            b.duration_ms
                .total_cmp(&a.duration_ms)
                .then(a.id.cmp(&b.id))
        });
        Latency {
            by_tool,
            by_tool_model,
            slowest,
            flagged,
        }
    }

    fn reasons(&self) -> Reasons {
        let writes: Vec<reasons::Write> = self.writes.iter().map(|w| w.write.clone()).collect();
        let results = reasons::check_all(&writes);
        let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
        let mut failing = Vec::new();
        let mut coherent = 0;
        for (w, rules) in self.writes.iter().zip(results) {
            if rules.is_empty() {
                coherent += 1;
                continue;
            }
            for r in &rules {
                *by_rule.entry((*r).to_string()).or_default() += 1;
            }
            if failing.len() < FAILING_SHOWN {
                failing.push(WriteCheck {
                    id: w.id,
                    at: time_text(w.at),
                    principal: w.principal.clone(),
                    tool: w.tool.clone(),
                    model: w.write.model.clone(),
                    entity: w.write.entity.clone(),
                    reason: w.write.reason.clone(),
                    rules: rules.iter().map(|r| r.to_string()).collect(),
                });
            }
        }
        Reasons {
            writes: self.writes.len() as u64,
            coherent,
            by_rule,
            failing,
        }
    }

    fn hour_start(&self, h: i64) -> i64 {
        (self.from_us.div_euclid(HOUR_US) + h) * HOUR_US
    }

    /// Hourly counts above a baseline: the larger of `floor`, four times the median hour and
    /// the median plus ten median absolute deviations. The baseline spans the hours the log has
    /// records for, not the whole window: a log younger than the window would otherwise have a
    /// baseline of empty hours.
    fn spikes(&self, counts: &HashMap<i64, u64>, floor: u64, what: &str) -> (String, Vec<Fired>) {
        let hour_of = |t: Option<i64>| {
            t.map_or(0, |t| {
                t.div_euclid(HOUR_US) - self.from_us.div_euclid(HOUR_US)
            })
        };
        let (first, last) = (hour_of(self.first_at), hour_of(self.last_at));
        let mut all: Vec<u64> = (first..=last)
            .map(|h| counts.get(&h).copied().unwrap_or(0))
            .collect();
        let median = median_u64(&mut all.clone());
        let mut dev: Vec<u64> = all.iter().map(|c| c.abs_diff(median)).collect();
        let mad = median_u64(&mut dev);
        let threshold = floor.max(4 * median).max(median + 10 * mad);
        let condition = format!(
            "more than {threshold} {what} in an hour (baseline: median {median} an hour; threshold = max({floor}, 4 × median, median + 10 × MAD))"
        );
        let mut hs: Vec<(i64, u64)> = counts
            .iter()
            .filter(|(_, c)| **c > threshold)
            .map(|(h, c)| (*h, *c))
            .collect();
        hs.sort();
        // Consecutive hours merge into one window: (first hour, last hour, total, peak).
        let mut windows: Vec<(i64, i64, u64, u64)> = Vec::new();
        for (h, c) in hs {
            match windows.last_mut() {
                Some(w) if h == w.1 + 1 => {
                    w.1 = h;
                    w.2 += c;
                    w.3 = w.3.max(c);
                }
                _ => windows.push((h, h, c, c)),
            }
        }
        let fired = windows
            .into_iter()
            .map(|(a, b, total, peak)| Fired {
                from: time_text(self.hour_start(a)),
                to: time_text(self.hour_start(b + 1)),
                value: if a == b {
                    format!("{total} {what} in the hour")
                } else {
                    format!(
                        "{total} {what} over {} hours, at most {peak} in one",
                        b - a + 1
                    )
                },
            })
            .collect();
        all.clear();
        (condition, fired)
    }

    fn alerts(&mut self) -> Vec<Alert> {
        let mut out = Vec::new();
        let (condition, fired) = self.spikes(&self.denials_per_hour, 20, "denials");
        out.push(Alert {
            name: "denial spike".into(),
            condition,
            fired,
        });
        let (condition, fired) = self.spikes(&self.writes_per_hour, 20, "writes");
        out.push(Alert {
            name: "write rate above baseline".into(),
            condition,
            fired,
        });
        let mut ts: Vec<(&i64, &u64)> = self
            .timeouts_per_hour
            .iter()
            .filter(|(_, c)| **c >= 5)
            .collect();
        ts.sort();
        out.push(Alert {
            name: "statement timeouts".into(),
            condition: "5 or more statement_timeout denials in an hour".into(),
            fired: ts
                .into_iter()
                .map(|(h, c)| Fired {
                    from: time_text(self.hour_start(*h)),
                    to: time_text(self.hour_start(*h + 1)),
                    value: format!("{c} statement timeouts"),
                })
                .collect(),
        });
        // A silence many times longer than the log's mean spacing is a sink that stopped
        // writing (or a layer that stopped serving), not a quiet night. The mean, not the
        // median: calls come in bursts, so most spacings are near zero.
        let mean = self.spacing.0 / self.spacing.1.max(1);
        let threshold = (40 * mean).max(2 * HOUR_US);
        out.push(Alert {
            name: "audit sink gap".into(),
            condition: format!(
                "no record for more than {} (40 × the mean spacing of {:.1} s, at least two hours); the chain itself verified",
                duration_words(threshold),
                mean as f64 / 1e6
            ),
            fired: self
                .gaps
                .iter()
                .filter(|(a, b)| b - a > threshold)
                .map(|(a, b)| Fired {
                    from: time_text(*a),
                    to: time_text(*b),
                    value: format!("no record for {}", duration_words(b - a)),
                })
                .collect(),
        });
        out
    }

    fn drift(&self, known: &[Policy]) -> Drift {
        let by_hash: HashMap<&str, &Policy> = known.iter().map(|p| (p.hash.as_str(), p)).collect();
        let hashes: Vec<HashSeen> = self
            .hashes
            .iter()
            .map(|(h, first, last, n)| HashSeen {
                hash: h.clone(),
                first: time_text(*first),
                last: time_text(*last),
                records: *n,
                policy: by_hash.get(h.as_str()).map(|p| p.path.clone()),
            })
            .collect();
        let changes = self
            .hashes
            .windows(2)
            .map(|w| {
                let (a, b) = (&w[0], &w[1]);
                let (pa, pb) = (by_hash.get(a.0.as_str()), by_hash.get(b.0.as_str()));
                let (changes, note) = match (pa, pb) {
                    (Some(pa), Some(pb)) => {
                        let d = policy::diff(pa, pb);
                        let note = if d.widens() {
                            "capabilities widened"
                        } else {
                            "capabilities did not widen"
                        };
                        (Some(d.changes), note.to_string())
                    }
                    _ => (
                        None,
                        "only the hashes are known: pass the policy files with --known-policy to see what changed"
                            .to_string(),
                    ),
                };
                DriftStep {
                    from_hash: a.0.clone(),
                    to_hash: b.0.clone(),
                    at: time_text(b.1),
                    changes,
                    note,
                }
            })
            .collect();
        Drift { hashes, changes }
    }

    fn charts(&self) -> Charts {
        let first = self.from_us.div_euclid(DAY_US);
        let days = (self.to_us.div_euclid(DAY_US) - first + 1).max(1);
        let day_names = (0..days)
            .map(|d| {
                Utc.timestamp_micros((first + d) * DAY_US)
                    .single()
                    .map(|t| t.date_naive())
                    .unwrap_or(NaiveDate::MIN)
                    .to_string()
            })
            .collect();
        let series =
            |m: &HashMap<i64, u64>| (0..days).map(|d| m.get(&d).copied().unwrap_or(0)).collect();
        Charts {
            days: day_names,
            denials_per_day: self
                .day_denials
                .iter()
                .map(|(code, m)| (code.clone(), series(m)))
                .collect(),
            writes_per_day: series(&self.day_writes),
        }
    }
}

fn duration_words(us: i64) -> String {
    let mins = us / 60_000_000;
    if mins >= 120 {
        format!("{:.1} h", us as f64 / HOUR_US as f64)
    } else {
        format!("{mins} min")
    }
}

fn median_u64(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

/// The `q` quantile (nearest rank) of `v`, reordering it.
fn percentile(v: &mut [f32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    *v.select_nth_unstable_by(i, f32::total_cmp).1 as f64
}

fn row(tool: &str, model: &str, d: &mut [f32]) -> LatencyRow {
    let max = d.iter().copied().fold(0.0f32, f32::max) as f64;
    LatencyRow {
        tool: tool.into(),
        model: model.into(),
        calls: d.len() as u64,
        p50_ms: percentile(d, 0.5),
        p95_ms: percentile(d, 0.95),
        max_ms: max,
    }
}

/// What needs a person's attention in `s`.
pub fn attention(s: &Sections) -> Vec<String> {
    let mut out = Vec::new();
    for g in s.qrt2_denials.top.iter().take(3) {
        if g.pattern == "concentrated" {
            out.push(format!(
                "QRT-2: {} denials of {} on {}.{} {}",
                policy::thousands(g.count),
                g.code,
                g.model,
                g.field,
                g.verdict
            ));
        }
    }
    for f in &s.qrt3_latency.flagged {
        out.push(format!("QRT-3: {f}"));
    }
    let bad: u64 = s.qrt4_reasons.writes - s.qrt4_reasons.coherent;
    if bad > 0 {
        out.push(format!(
            "QRT-4: {} of {} writes have a reason that fails a coherence rule",
            policy::thousands(bad),
            policy::thousands(s.qrt4_reasons.writes)
        ));
    }
    match s.qrt5_suite.status.as_str() {
        "passed" => {}
        "failed" => out.push(format!(
            "QRT-5: the regression suite failed ({})",
            s.qrt5_suite.detail
        )),
        _ => out.push(format!(
            "QRT-5: the regression suite was not run ({})",
            s.qrt5_suite.detail
        )),
    }
    for a in &s.ops8_alerts {
        for f in &a.fired {
            out.push(format!(
                "OPS-8: {} would have fired {} – {} ({})",
                a.name, f.from, f.to, f.value
            ));
        }
    }
    for step in &s.drift.changes {
        out.push(format!(
            "drift: the policy changed at {} ({} → {}): {}",
            step.at,
            &step.from_hash[..12.min(step.from_hash.len())],
            &step.to_hash[..12.min(step.to_hash.len())],
            step.note
        ));
    }
    out
}
