//! Policy regression cases: a YAML list of (principal, tool, arguments) → expected outcome
//! ([`Cases`]), the runner that plays them through any [`Gateway`] ([`run_cases`]), and the
//! coverage of the policy's rules by the cases ([`coverage`]).
//!
//! The file (see docs/policy.md, "Regression cases"):
//!
//! ```yaml
//! version: 1
//! principals:                      # optional, reusable by name
//!   acme_support: {tenant: acme, user: sam@acme.example, roles: [support]}
//! cases:
//!   - name: support lists recent orders
//!     principal: acme_support      # a name above, or {tenant, user, roles} inline
//!     tool: db_query
//!     arguments: {model: orders, where: {status: paid}, limit: 5}
//!     expect: allow                # or {deny: field_denied}
//!     expect_rows: 5               # optional: exact row count of an allowed read
//!     expect_fields: [id, status]  # optional: present in every returned row
//!     expect_absent: [tenant_id]   # optional: absent from every returned row
//! ```
//!
//! Cases run in file order, one call each, so a later case may depend on an earlier write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use marked_yaml::Node;
use serde::Serialize;
use serde_json::Value;

use super::load::resolve_field;
use super::model::{Policy, RuleSource};
use super::yaml::{
    self, check_keys, did_you_mean, expect_mapping, expect_sequence, get, int_at_least, is_null,
    join, string, string_list, Diag, PolicyErrors,
};
use crate::gateway::{CallContext, ErrorCode, Gateway, Principal};

/// What a case expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Expectation {
    Allow,
    Deny { code: ErrorCode },
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expectation::Allow => f.write_str("allow"),
            Expectation::Deny { code } => write!(f, "deny {code}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Case {
    pub name: String,
    pub principal: Principal,
    /// The principal's name in `principals:`, if the case used one.
    pub principal_name: Option<String>,
    pub tool: String,
    pub arguments: Value,
    pub expect: Expectation,
    pub expect_rows: Option<u64>,
    pub expect_fields: Vec<String>,
    pub expect_absent: Vec<String>,
    pub line: usize,
}

/// A loaded cases file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cases {
    pub path: String,
    pub cases: Vec<Case>,
}

/// Reads and validates a cases file, collecting every problem with its line and column.
pub fn load_cases(path: impl AsRef<Path>) -> Result<Cases, PolicyErrors> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors::whole_file(&shown, format!("cannot read the cases file: {e}"))
    })?;
    load_cases_str(&text, &shown)
}

/// As [`load_cases`], from text.
pub fn load_cases_str(text: &str, path: &str) -> Result<Cases, PolicyErrors> {
    let root = yaml::parse(text, path, false)?;
    let mut d = Diag::new(path);
    let mut cases = Vec::new();
    if let Some(map) = expect_mapping(&mut d, &root, "") {
        check_keys(&mut d, map, "", &["version", "principals", "cases"]);
        match get(map, "version") {
            Some((_, v)) => {
                if let Some(n) = yaml::integer(&mut d, v, "version") {
                    if n != 1 {
                        d.error(
                            yaml::span(v),
                            "version",
                            format!("unsupported cases format version {n}; expected 1"),
                        );
                    }
                }
            }
            None => d.error(yaml::span(&root), "", "missing `version: 1`"),
        }
        let mut principals = BTreeMap::new();
        if let Some((_, node)) = get(map, "principals") {
            if let Some(pm) = expect_mapping(&mut d, node, "principals") {
                for (k, v) in yaml::entries(pm) {
                    let p = join("principals", k.as_str());
                    if let Some(principal) = principal(&mut d, v, &p) {
                        principals.insert(k.as_str().to_string(), principal);
                    }
                }
            }
        }
        match get(map, "cases") {
            Some((_, node)) => {
                if let Some(items) = expect_sequence(&mut d, node, "cases") {
                    let mut names = BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        if let Some(c) = case(&mut d, item, &format!("cases[{i}]"), &principals) {
                            if !names.insert(c.name.clone()) {
                                d.error(
                                    yaml::span(item),
                                    &format!("cases[{i}].name"),
                                    format!("case name `{}` is used twice", c.name),
                                );
                            }
                            cases.push(c);
                        }
                    }
                    if items.is_empty() {
                        d.error(yaml::span(node), "cases", "no cases");
                    }
                }
            }
            None => d.error(
                yaml::span(&root),
                "",
                "missing `cases:` (the list of cases)",
            ),
        }
    }
    d.finish()?;
    Ok(Cases {
        path: path.to_string(),
        cases,
    })
}

fn principal(d: &mut Diag, node: &Node, path: &str) -> Option<Principal> {
    let m = expect_mapping(d, node, path)?;
    check_keys(d, m, path, &["tenant", "user", "roles"]);
    let tenant = match get(m, "tenant") {
        Some((_, v)) => string(d, v, &join(path, "tenant")),
        None => {
            d.error(yaml::span(node), path, "missing `tenant`");
            None
        }
    };
    let user = match get(m, "user") {
        Some((_, v)) => string(d, v, &join(path, "user")),
        None => {
            d.error(yaml::span(node), path, "missing `user`");
            None
        }
    };
    let roles = get(m, "roles")
        .map(|(_, v)| {
            string_list(d, v, &join(path, "roles"))
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        })
        .unwrap_or_default();
    Some(Principal {
        tenant: tenant?,
        user: user?,
        roles,
    })
}

const CASE_KEYS: &[&str] = &[
    "name",
    "principal",
    "tool",
    "arguments",
    "expect",
    "expect_rows",
    "expect_fields",
    "expect_absent",
];

fn case(
    d: &mut Diag,
    node: &Node,
    path: &str,
    principals: &BTreeMap<String, Principal>,
) -> Option<Case> {
    let m = expect_mapping(d, node, path)?;
    check_keys(d, m, path, CASE_KEYS);
    let missing = |key: &str, d: &mut Diag| {
        if get(m, key).is_none() {
            d.error(yaml::span(node), path, format!("missing `{key}`"));
        }
    };
    for key in ["name", "principal", "tool", "arguments", "expect"] {
        missing(key, d);
    }
    let name = get(m, "name").and_then(|(_, v)| string(d, v, &join(path, "name")));
    let (principal, principal_name) = match get(m, "principal") {
        Some((_, v @ Node::Scalar(_))) => {
            let pp = join(path, "principal");
            match string(d, v, &pp) {
                Some(n) => match principals.get(&n) {
                    Some(p) => (Some(p.clone()), Some(n)),
                    None => {
                        let hint = did_you_mean(&n, principals.keys().map(String::as_str))
                            .map(|c| format!(" (did you mean `{c}`?)"))
                            .unwrap_or_default();
                        d.error(
                            yaml::span(v),
                            &pp,
                            format!("unknown principal `{n}`{hint}; define it under `principals:`"),
                        );
                        (None, None)
                    }
                },
                None => (None, None),
            }
        }
        Some((_, v)) => (principal(d, v, &join(path, "principal")), None),
        None => (None, None),
    };
    let tool = get(m, "tool").and_then(|(_, v)| {
        let tp = join(path, "tool");
        let t = string(d, v, &tp)?;
        if !t.starts_with("db_") {
            d.error(
                yaml::span(v),
                &tp,
                format!("`{t}` is not a tool name (tools are named `db_...`)"),
            );
        }
        Some(t)
    });
    let arguments = get(m, "arguments").and_then(|(_, v)| {
        let ap = join(path, "arguments");
        if !matches!(v, Node::Mapping(_)) {
            d.error(
                yaml::span(v),
                &ap,
                format!(
                    "expected a mapping of tool arguments, found {}",
                    yaml::describe(v)
                ),
            );
            return None;
        }
        Some(to_json(v))
    });
    let expect = get(m, "expect").and_then(|(_, v)| expectation(d, v, &join(path, "expect")));
    let expect_rows = get(m, "expect_rows")
        .and_then(|(_, v)| int_at_least(d, v, &join(path, "expect_rows"), 0, i128::from(u32::MAX)));
    let list = |key: &str, d: &mut Diag| {
        get(m, key)
            .map(|(_, v)| {
                string_list(d, v, &join(path, key))
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let expect_fields = list("expect_fields", d);
    let expect_absent = list("expect_absent", d);
    if let (Some(Expectation::Deny { .. }), true) = (
        &expect,
        expect_rows.is_some() || !expect_fields.is_empty() || !expect_absent.is_empty(),
    ) {
        d.error(
            yaml::span(node),
            path,
            "expect_rows, expect_fields and expect_absent only apply to `expect: allow`",
        );
    }
    Some(Case {
        name: name?,
        principal: principal?,
        principal_name,
        tool: tool?,
        arguments: arguments?,
        expect: expect?,
        expect_rows,
        expect_fields,
        expect_absent,
        line: yaml::span(node).line,
    })
}

fn expectation(d: &mut Diag, node: &Node, path: &str) -> Option<Expectation> {
    match node {
        Node::Scalar(s) if s.as_str() == "allow" => Some(Expectation::Allow),
        Node::Mapping(m) => {
            check_keys(d, m, path, &["deny"]);
            let (_, v) = get(m, "deny").or_else(|| {
                d.error(yaml::span(node), path, "expected `{deny: <error code>}`");
                None
            })?;
            let cp = join(path, "deny");
            let code = string(d, v, &cp)?;
            match ErrorCode::parse(&code) {
                Some(code) => Some(Expectation::Deny { code }),
                None => {
                    let hint = did_you_mean(&code, ErrorCode::ALL.iter().map(|c| c.as_str()))
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    d.error(
                        yaml::span(v),
                        &cp,
                        format!("unknown error code `{code}`{hint}"),
                    );
                    None
                }
            }
        }
        Node::Scalar(_) | Node::Sequence(_) => {
            d.error(
                yaml::span(node),
                path,
                format!(
                    "expected `allow` or `{{deny: <error code>}}`, found {}",
                    yaml::describe(node)
                ),
            );
            None
        }
    }
}

/// YAML → JSON: plain scalars become null, booleans and numbers when they read as such; quoted
/// scalars always stay strings (so a case can send `"10"` to test a wrong JSON type).
pub(crate) fn to_json(node: &Node) -> Value {
    match node {
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
        Node::Sequence(s) => Value::Array(s.iter().map(to_json).collect()),
        Node::Scalar(s) => {
            if !s.may_coerce() {
                return Value::String(s.as_str().to_string());
            }
            if is_null(node) {
                return Value::Null;
            }
            if let Some(b) = s.as_bool() {
                return Value::Bool(b);
            }
            if let Some(i) = s.as_i64() {
                return Value::from(i);
            }
            if let Some(u) = s.as_u64() {
                return Value::from(u);
            }
            if let Some(f) = s.as_f64().filter(|f| f.is_finite()) {
                if s.as_str().chars().any(|c| c.is_ascii_digit()) {
                    return Value::from(f);
                }
            }
            Value::String(s.as_str().to_string())
        }
    }
}

/// What a call actually did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Actual {
    Allowed { rows: Option<u64> },
    Denied { code: ErrorCode, message: String },
}

impl std::fmt::Display for Actual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actual::Allowed { rows: Some(n) } => write!(f, "allow ({n} rows)"),
            Actual::Allowed { rows: None } => f.write_str("allow"),
            Actual::Denied { code, .. } => write!(f, "deny {code}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseOutcome {
    pub name: String,
    pub line: usize,
    pub tool: String,
    pub principal: String,
    pub expected: Expectation,
    pub actual: Actual,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseReport {
    pub gateway: String,
    pub outcomes: Vec<CaseOutcome>,
}

impl CaseReport {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.passed()
    }

    pub fn all_passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }
}

/// The rows of a read result: `rows` (query, aggregate), `row` (get), or a bare array.
fn result_rows(v: &Value) -> Option<Vec<&serde_json::Map<String, Value>>> {
    match v {
        Value::Array(items) => Some(items.iter().filter_map(Value::as_object).collect()),
        Value::Object(o) => match (o.get("rows"), o.get("row")) {
            (Some(Value::Array(items)), _) => {
                Some(items.iter().filter_map(Value::as_object).collect())
            }
            (_, Some(Value::Object(row))) => Some(vec![row]),
            _ => None,
        },
        _ => None,
    }
}

fn judge(case: &Case, result: &Result<Value, crate::gateway::ToolError>) -> (Actual, bool, String) {
    match result {
        Ok(v) => {
            let rows = result_rows(v);
            let actual = Actual::Allowed {
                rows: rows.as_ref().map(|r| r.len() as u64),
            };
            match &case.expect {
                Expectation::Deny { code } => (
                    actual,
                    false,
                    format!("expected {code}, but the call was allowed"),
                ),
                Expectation::Allow => {
                    let mut problems = Vec::new();
                    if let Some(want) = case.expect_rows {
                        match &rows {
                            Some(r) if r.len() as u64 == want => {}
                            Some(r) => {
                                problems.push(format!("expected {want} rows, got {}", r.len()))
                            }
                            None => problems
                                .push(format!("expected {want} rows, the result has no rows")),
                        }
                    }
                    if !case.expect_fields.is_empty() || !case.expect_absent.is_empty() {
                        match &rows {
                            None => {
                                problems.push("expected fields, the result has no rows".to_string())
                            }
                            Some(r) => {
                                for (i, row) in r.iter().enumerate() {
                                    for f in &case.expect_fields {
                                        if !row.contains_key(f) {
                                            problems.push(format!("row {i} lacks `{f}`"));
                                        }
                                    }
                                    for f in &case.expect_absent {
                                        if row.contains_key(f) {
                                            problems.push(format!(
                                                "row {i} has `{f}`, which must be absent"
                                            ));
                                        }
                                    }
                                    if problems.len() > 5 {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    (actual, problems.is_empty(), problems.join("; "))
                }
            }
        }
        Err(e) => {
            let actual = Actual::Denied {
                code: e.code,
                message: e.message.clone(),
            };
            match &case.expect {
                Expectation::Deny { code } if *code == e.code => (actual, true, String::new()),
                Expectation::Deny { code } => (
                    actual,
                    false,
                    format!("expected {code}, got {}: {}", e.code, e.message),
                ),
                Expectation::Allow => (
                    actual,
                    false,
                    format!("denied with {}: {}", e.code, e.message),
                ),
            }
        }
    }
}

/// Plays every case through `gateway`, in file order, and compares.
pub async fn run_cases(gateway: &dyn Gateway, cases: &Cases) -> CaseReport {
    let mut outcomes = Vec::with_capacity(cases.cases.len());
    for case in &cases.cases {
        let ctx = CallContext::new(case.principal.clone());
        let start = Instant::now();
        let result = gateway.call(&ctx, &case.tool, case.arguments.clone()).await;
        let duration = start.elapsed();
        let (actual, passed, detail) = judge(case, &result);
        outcomes.push(CaseOutcome {
            name: case.name.clone(),
            line: case.line,
            tool: case.tool.clone(),
            principal: case
                .principal_name
                .clone()
                .unwrap_or_else(|| format!("{}/{}", case.principal.tenant, case.principal.user)),
            expected: case.expect.clone(),
            actual,
            passed,
            detail,
            duration,
        });
    }
    CaseReport {
        gateway: gateway.name(),
        outcomes,
    }
}

/// One rule of the policy and whether any case exercised it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CoverageItem {
    /// `model`, `tool`, `field`, `pattern`, `relation`, `budget`, `approval`, `reason`.
    pub kind: &'static str,
    /// Dotted key path, e.g. `models.customers.fields.ssn`.
    pub key: String,
    pub exercised: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub items: Vec<CoverageItem>,
}

impl Coverage {
    pub fn unexercised(&self) -> impl Iterator<Item = &CoverageItem> {
        self.items.iter().filter(|i| !i.exercised)
    }

    pub fn exercised_count(&self) -> usize {
        self.items.iter().filter(|i| i.exercised).count()
    }
}

/// The model a case targets (`arguments.model`, or for a dry run `arguments.arguments.model`).
fn case_model(case: &Case) -> Option<&str> {
    case.arguments
        .get("model")
        .and_then(Value::as_str)
        .or_else(|| case.arguments.get("arguments")?.get("model")?.as_str())
}

/// The write tool a case runs (the planned tool for a dry run).
fn case_tool(case: &Case) -> &str {
    if case.tool == "db_dry_run" {
        if let Some(t) = case.arguments.get("tool").and_then(Value::as_str) {
            return t;
        }
    }
    &case.tool
}

/// Every field name a case's arguments mention.
fn case_fields(case: &Case) -> BTreeSet<String> {
    let args = if case.tool == "db_dry_run" {
        case.arguments.get("arguments").unwrap_or(&case.arguments)
    } else {
        &case.arguments
    };
    let mut out = BTreeSet::new();
    let strings = |v: Option<&Value>, out: &mut BTreeSet<String>| {
        for item in v.and_then(Value::as_array).into_iter().flatten() {
            match item {
                Value::String(s) => {
                    out.insert(s.clone());
                }
                Value::Object(o) => {
                    if let Some(f) = o.get("field").and_then(Value::as_str) {
                        out.insert(f.to_string());
                    }
                }
                _ => {}
            }
        }
    };
    strings(args.get("select"), &mut out);
    strings(args.get("order_by"), &mut out);
    strings(args.get("group_by"), &mut out);
    strings(args.get("aggregates"), &mut out);
    match args.get("where") {
        Some(Value::Array(_)) => strings(args.get("where"), &mut out),
        Some(Value::Object(o)) => out.extend(o.keys().cloned()),
        _ => {}
    }
    if let Some(Value::Object(o)) = args.get("data") {
        out.extend(o.keys().cloned());
    }
    out
}

/// Which rules of `policy` the cases exercise: a model by any case on it, a model's tool by a
/// case calling it there, a field rule by a case naming the field (or, for a field the agent can
/// see, any read of the model without `select`), a pattern by a case naming a column it decides,
/// a relation by an `include` through it, a budget by a case expecting its error code, an
/// approval rule by a write on its model that sets its field, `require_reason` by a case
/// expecting `reason_required` on the model.
pub fn coverage(policy: &Policy, cases: &Cases) -> Coverage {
    let mut hit: BTreeSet<String> = BTreeSet::new();
    let expects = |code: ErrorCode| {
        cases
            .cases
            .iter()
            .any(|c| c.expect == Expectation::Deny { code })
    };
    for case in &cases.cases {
        let Some(model_name) = case_model(case) else {
            continue;
        };
        let Some(model) = policy.model(model_name) else {
            continue;
        };
        let mp = format!("models.{model_name}");
        let tool = case_tool(case);
        hit.insert(mp.clone());
        // A dry run exercises `db_dry_run` on the model, not the write it plans.
        hit.insert(format!("{mp}.tools.{}", case.tool));
        let fields = case_fields(case);
        let reads_all = matches!(case.tool.as_str(), "db_query" | "db_get")
            && case.arguments.get("select").is_none();
        if let Some(rules) = policy.field_rules.models.get(model_name) {
            for (f, rule) in &rules.explicit {
                if fields.contains(f)
                    || (reads_all && rule.action != super::model::FieldAction::Deny)
                {
                    hit.insert(format!("{mp}.fields.{f}"));
                }
            }
        }
        for f in &fields {
            if let Some((_, RuleSource::Pattern { pattern, .. })) =
                resolve_field(policy, model_name, f)
            {
                hit.insert(format!("pattern.{pattern}"));
            }
        }
        // Includes: `customer`, `items.product` — each dot goes one relation deeper.
        for inc in case
            .arguments
            .get("include")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(path) = inc.as_str() else {
                continue;
            };
            let mut current = model;
            for rel in path.split('.') {
                let Some(r) = current.relations.get(rel) else {
                    break;
                };
                hit.insert(format!("models.{}.relations.{rel}", current.name));
                match policy.model(&r.target) {
                    Some(t) => current = t,
                    None => break,
                }
            }
        }
        if case.expect
            == (Expectation::Deny {
                code: ErrorCode::ReasonRequired,
            })
        {
            hit.insert(format!("{mp}.require_reason"));
        }
        for rule in policy.approvals.iter().filter(|r| r.model == model_name) {
            let tool_ok = rule.tools.is_empty() || rule.tools.contains(tool);
            let field_ok = rule.fields.iter().any(|f| fields.contains(f))
                || rule
                    .threshold
                    .as_ref()
                    .is_some_and(|t| fields.contains(&t.field))
                || (rule.fields.is_empty() && rule.threshold.is_none());
            if tool_ok && field_ok {
                hit.insert(format!("approvals.rules.{}", rule.name));
            }
        }
    }

    let mut items = Vec::new();
    let mut add = |kind: &'static str, key: String, exercised: bool| {
        items.push(CoverageItem {
            kind,
            key,
            exercised,
        })
    };
    for m in policy.models.values() {
        let mp = format!("models.{}", m.name);
        add("model", mp.clone(), hit.contains(&mp));
        for t in &m.tools {
            let k = format!("{mp}.tools.{t}");
            add("tool", k.clone(), hit.contains(&k));
        }
        if let Some(rules) = policy.field_rules.models.get(&m.name) {
            for f in rules.explicit.keys() {
                let k = format!("{mp}.fields.{f}");
                add("field", k.clone(), hit.contains(&k));
            }
            for p in rules
                .patterns
                .deny
                .iter()
                .chain(&rules.patterns.mask)
                .chain(&rules.patterns.hash)
            {
                let k = format!("pattern.{p}");
                add("pattern", format!("{mp}.{p}"), hit.contains(&k));
            }
        }
        for r in m.relations.keys() {
            let k = format!("{mp}.relations.{r}");
            add("relation", k.clone(), hit.contains(&k));
        }
        if m.require_reason
            && m.tools
                .iter()
                .any(|t| super::decl::WRITE_TOOLS.contains(&t.as_str()))
        {
            let k = format!("{mp}.require_reason");
            add("reason", k.clone(), hit.contains(&k));
        }
    }
    let g = &policy.field_rules.global;
    for p in g.deny.iter().chain(&g.mask).chain(&g.hash) {
        add(
            "pattern",
            format!("defaults.fields.{p}"),
            hit.contains(&format!("pattern.{p}")),
        );
    }
    for (key, code) in [
        ("budgets.max_rows", ErrorCode::RowBudgetExceeded),
        ("budgets.max_scan_rows", ErrorCode::ScanBudgetExceeded),
        ("budgets.max_join_depth", ErrorCode::JoinDepthExceeded),
        ("budgets.statement_timeout_ms", ErrorCode::StatementTimeout),
        (
            "budgets.max_writes_per_minute",
            ErrorCode::WriteRateExceeded,
        ),
        ("quotas", ErrorCode::QuotaExceeded),
    ] {
        add("budget", key.to_string(), expects(code));
    }
    for r in &policy.approvals {
        let k = format!("approvals.rules.{}", r.name);
        add("approval", k.clone(), hit.contains(&k));
    }
    Coverage { items }
}

/// The results as a table: one row per case.
pub fn render_cases_table(report: &CaseReport) -> String {
    use tabled::settings::{object::Columns, Modify, Style, Width};
    #[derive(tabled::Tabled)]
    struct Row {
        #[tabled(rename = "")]
        mark: &'static str,
        #[tabled(rename = "case")]
        name: String,
        #[tabled(rename = "principal")]
        principal: String,
        #[tabled(rename = "tool")]
        tool: String,
        #[tabled(rename = "expected")]
        expected: String,
        #[tabled(rename = "actual")]
        actual: String,
        #[tabled(rename = "detail")]
        detail: String,
    }
    let rows = report.outcomes.iter().map(|o| Row {
        mark: if o.passed { "ok" } else { "FAIL" },
        name: o.name.clone(),
        principal: o.principal.clone(),
        tool: o.tool.clone(),
        expected: o.expected.to_string(),
        actual: o.actual.to_string(),
        detail: o.detail.clone(),
    });
    let mut t = tabled::Table::new(rows);
    t.with(Style::sharp())
        .with(Modify::new(Columns::new(1..2)).with(Width::wrap(40).keep_words(true)))
        .with(Modify::new(Columns::last()).with(Width::wrap(50).keep_words(true)));
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version: 1
principals:
  a: {tenant: acme, user: u1, roles: [support]}
cases:
  - name: one
    principal: a
    tool: db_query
    arguments: {model: orders, limit: 5, where: {status: "10", paid: true, total: 1.5, x: null}}
    expect: allow
    expect_rows: 5
  - name: two
    principal: {tenant: globex, user: u2}
    tool: db_get
    arguments: {model: orders, id: 1}
    expect: {deny: not_found}
"#;

    #[test]
    fn loads_and_converts_types() {
        let c = load_cases_str(GOOD, "c.yaml").unwrap();
        assert_eq!(c.cases.len(), 2);
        let a = &c.cases[0].arguments;
        assert_eq!(a["limit"], serde_json::json!(5));
        assert_eq!(a["where"]["status"], serde_json::json!("10"));
        assert_eq!(a["where"]["paid"], serde_json::json!(true));
        assert_eq!(a["where"]["total"], serde_json::json!(1.5));
        assert_eq!(a["where"]["x"], Value::Null);
        assert_eq!(
            c.cases[1].expect,
            Expectation::Deny {
                code: ErrorCode::NotFound
            }
        );
        assert_eq!(c.cases[1].principal.tenant, "globex");
    }

    #[test]
    fn every_problem_at_once() {
        let bad = r#"
version: 1
cases:
  - name: x
    principal: nobody
    tool: db_query
    arguments: {model: orders}
    expect: {deny: not_fund}
  - name: y
    principal: {tenant: acme}
    tool: query
    arguments: [1]
    expect: maybe
    colour: red
"#;
        let e = load_cases_str(bad, "c.yaml").unwrap_err();
        let text = e.to_string();
        for want in [
            "c.yaml:5:16: error: cases[0].principal: unknown principal `nobody`",
            "did you mean `not_found`?",
            "missing `user`",
            "`query` is not a tool name",
            "expected a mapping of tool arguments",
            "expected `allow` or `{deny: <error code>}`",
            "unknown key `colour`",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(e.len(), 7, "{text}");
    }

    #[test]
    fn judging() {
        let c = load_cases_str(GOOD, "c.yaml").unwrap();
        let ok = Ok(serde_json::json!({"rows": [{}, {}, {}, {}, {}]}));
        assert!(judge(&c.cases[0], &ok).1);
        let four = Ok(serde_json::json!({"rows": [{}, {}, {}, {}]}));
        assert!(!judge(&c.cases[0], &four).1);
        let nf = Err(crate::gateway::ToolError::new(
            ErrorCode::NotFound,
            "no",
            "x",
        ));
        assert!(judge(&c.cases[1], &nf).1);
        let other = Err(crate::gateway::ToolError::new(
            ErrorCode::Internal,
            "boom",
            "x",
        ));
        let (_, passed, detail) = judge(&c.cases[1], &other);
        assert!(!passed);
        assert!(
            detail.contains("expected not_found, got internal"),
            "{detail}"
        );
        assert!(!judge(&c.cases[1], &ok).1);
    }
}
