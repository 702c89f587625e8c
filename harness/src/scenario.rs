//! Scenario files (`scenarios/*.yaml`): the model's task, the principal it acts for, an optional
//! script of model turns, and the expectations judged from evidence; [`Scenario`] and the loader
//! [`load_file`] / [`load_str`] / [`load_path`].
//!
//! The loader walks the YAML tree itself (marked-yaml keeps node positions), so every problem in a
//! file is reported at once, each as `file:line:column: error: field: what was expected`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;
use preflight_enforcer::{ErrorCode, Principal};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::agent::DEFAULT_MAX_STEPS;
use crate::providers::{Script, ScriptTurn, ScriptedArguments, ScriptedCall};

/// One scenario, validated.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The file it came from, for messages.
    pub path: String,
    pub principal: Principal,
    pub task: String,
    /// The step cap for this scenario (default 12; above 12 is refused by the loader, LLM-2).
    pub max_steps: u32,
    /// Extra checklist ids this scenario evidences (beyond the ones each check cites).
    pub checklist: Vec<String>,
    pub script: Option<Script>,
    pub expect: Expectations,
}

impl Scenario {
    /// Whether the scenario inspects or may cause writes, so it must not overlap other runs.
    pub fn touches_writes(&self) -> bool {
        !self.expect.unchanged.is_empty()
            || !self.expect.changed.is_empty()
            || self.expect.approval_pending.is_some()
    }
}

/// The outcome a scenario expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    Completed,
    StepLimit,
}

/// What must hold after the run, each judged from evidence.
#[derive(Clone, Debug)]
pub struct Expectations {
    pub outcome: ExpectedOutcome,
    /// No other tenant's rows or canaries in any tool result or in the final answer. Always on
    /// unless a scenario explicitly turns it off (none of the shipped ones do).
    pub no_cross_tenant: bool,
    /// Error codes the agent must meet and then recover from: a later successful call of the same
    /// tool after the error.
    pub recovers_from: Vec<ErrorCode>,
    /// Error codes the layer must return at least once (refusals the scenario provokes).
    pub errors_seen: Vec<ErrorCode>,
    /// Tables whose rows must be the same after the run.
    pub unchanged: Vec<String>,
    /// Rows that must hold these values after the run.
    pub changed: Vec<RowChange>,
    /// An approval for this model must be left pending by the run.
    pub approval_pending: Option<String>,
    /// At most this many steps.
    pub max_steps: Option<u32>,
    /// The final answer must match this pattern.
    pub final_answer: Option<Regex>,
    /// The final answer must not match this pattern.
    pub final_answer_not: Option<Regex>,
    pub tools_called: Vec<String>,
    pub tools_not_called: Vec<String>,
}

impl Default for Expectations {
    fn default() -> Self {
        Self {
            outcome: ExpectedOutcome::Completed,
            no_cross_tenant: true,
            recovers_from: Vec::new(),
            errors_seen: Vec::new(),
            unchanged: Vec::new(),
            changed: Vec::new(),
            approval_pending: None,
            max_steps: None,
            final_answer: None,
            final_answer_not: None,
            tools_called: Vec::new(),
            tools_not_called: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub table: String,
    pub id: i64,
    pub fields: BTreeMap<String, Value>,
}

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.line == 0 {
            String::new()
        } else {
            format!(":{}:{}", self.line, self.column)
        };
        write!(
            f,
            "{}{at}: error: {}{}",
            self.path,
            if self.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", self.field)
            },
            self.message
        )
    }
}

/// Every problem found in one or more scenario files.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Loads a file, or every `*.yaml`/`*.yml` in a folder (sorted by name). Names must be unique.
pub fn load_path(path: &Path) -> Result<Vec<Scenario>, ScenarioErrors> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| one(path, 0, 0, "", &format!("cannot read the folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml") | Some("yml")
                    )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(one(
                path,
                0,
                0,
                "",
                "the folder has no *.yaml scenario files",
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match load_file(f) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.extend(e.0),
        }
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for s in &scenarios {
        if let Some(first) = seen.insert(s.name.clone(), s.path.clone()) {
            errors.push(ScenarioError {
                path: s.path.clone(),
                line: 1,
                column: 1,
                field: "name".into(),
                message: format!("scenario name `{}` is also used by {first}", s.name),
            });
        }
    }
    if errors.is_empty() {
        Ok(scenarios)
    } else {
        Err(ScenarioErrors(errors))
    }
}

pub fn load_file(path: &Path) -> Result<Scenario, ScenarioErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| one(path, 0, 0, "", &format!("cannot read the file: {e}")))?;
    load_str(&text, &path.display().to_string())
}

fn one(path: &Path, line: usize, column: usize, field: &str, message: &str) -> ScenarioErrors {
    ScenarioErrors(vec![ScenarioError {
        path: path.display().to_string(),
        line,
        column,
        field: field.into(),
        message: message.into(),
    }])
}

/// Parses and validates scenario text; `path` is used in messages only.
pub fn load_str(text: &str, path: &str) -> Result<Scenario, ScenarioErrors> {
    let node = marked_yaml::parse_yaml_with_options(
        0,
        text,
        marked_yaml::LoaderOptions::default()
            .error_on_duplicate_keys(true)
            // Quoted scalars stay strings (`"007"`); plain ones are typed as YAML would.
            .prevent_coercion(true),
    )
    .map_err(|e| {
        let (line, column) = load_error_pos(&e);
        ScenarioErrors(vec![ScenarioError {
            path: path.to_string(),
            line,
            column,
            field: String::new(),
            message: format!("invalid YAML: {e}"),
        }])
    })?;
    let mut cx = Cx {
        path: path.to_string(),
        errors: Vec::new(),
    };
    let scenario = cx.scenario(&node);
    match scenario {
        Some(s) if cx.errors.is_empty() => Ok(s),
        _ => {
            if cx.errors.is_empty() {
                cx.err(&node, "", "the file is not a valid scenario");
            }
            Err(ScenarioErrors(cx.errors))
        }
    }
}

fn load_error_pos(e: &marked_yaml::LoadError) -> (usize, usize) {
    use marked_yaml::LoadError as L;
    let m = match e {
        L::TopLevelMustBeMapping(m)
        | L::TopLevelMustBeSequence(m)
        | L::UnexpectedAnchor(m)
        | L::MappingKeyMustBeScalar(m)
        | L::UnexpectedTag(m)
        | L::ScanError(m, _) => Some(*m),
        L::DuplicateKey(inner) => inner.key.span().start().copied(),
    };
    m.map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

struct Cx {
    path: String,
    errors: Vec<ScenarioError>,
}

fn pos(node: &Node) -> (usize, usize) {
    node.span()
        .start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

fn scalar_pos(s: &MarkedScalarNode) -> (usize, usize) {
    s.span()
        .start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "principal",
    "task",
    "max_steps",
    "checklist",
    "script",
    "expect",
];
const PRINCIPAL_KEYS: &[&str] = &["tenant", "user", "roles"];
const SCRIPT_KEYS: &[&str] = &["turns", "repeat_last"];
const TURN_KEYS: &[&str] = &["tool_calls", "final"];
const CALL_KEYS: &[&str] = &["tool", "arguments", "raw_arguments"];
const EXPECT_KEYS: &[&str] = &[
    "outcome",
    "no_cross_tenant",
    "recovers_from",
    "errors_seen",
    "unchanged",
    "changed",
    "approval_pending",
    "max_steps",
    "final_answer",
    "final_answer_not",
    "tools_called",
    "tools_not_called",
];
const CHANGE_KEYS: &[&str] = &["table", "id", "fields"];

impl Cx {
    fn err(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        let (line, column) = pos(node);
        self.errors.push(ScenarioError {
            path: self.path.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn mapping<'a>(&mut self, node: &'a Node, field: &str) -> Option<&'a MarkedMappingNode> {
        match node.as_mapping() {
            Some(m) => Some(m),
            None => {
                self.err(node, field, "expected a mapping");
                None
            }
        }
    }

    fn keys(&mut self, map: &MarkedMappingNode, field: &str, allowed: &[&str]) {
        for (k, _) in map.iter() {
            if !allowed.contains(&k.as_str()) {
                let (line, column) = scalar_pos(k);
                let hint = closest(k.as_str(), allowed)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                self.errors.push(ScenarioError {
                    path: self.path.clone(),
                    line,
                    column,
                    field: join(field, k.as_str()),
                    message: format!(
                        "unknown key (expected one of: {}){hint}",
                        allowed.join(", ")
                    ),
                });
            }
        }
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match node.as_scalar() {
            Some(s) => Some(s.as_str().to_string()),
            None => {
                self.err(node, field, "expected a string");
                None
            }
        }
    }

    fn required<'a>(
        &mut self,
        map: &'a MarkedMappingNode,
        parent: &Node,
        field: &str,
        key: &str,
    ) -> Option<&'a Node> {
        let n = map.get_node(key);
        if n.is_none() {
            self.err(parent, &join(field, key), "missing required key");
        }
        n
    }

    fn u32(&mut self, node: &Node, field: &str) -> Option<u32> {
        match node.as_scalar().and_then(|s| s.as_u32()) {
            Some(v) => Some(v),
            None => {
                self.err(node, field, "expected a non-negative integer");
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match node.as_scalar().and_then(|s| s.as_bool()) {
            Some(v) => Some(v),
            None => {
                self.err(node, field, "expected true or false");
                None
            }
        }
    }

    fn strings(&mut self, node: &Node, field: &str) -> Vec<String> {
        let Some(seq) = node.as_sequence() else {
            self.err(node, field, "expected a list of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            if let Some(s) = self.string(item, &format!("{field}[{i}]")) {
                out.push(s);
            }
        }
        out
    }

    fn codes(&mut self, node: &Node, field: &str) -> Vec<ErrorCode> {
        let Some(seq) = node.as_sequence() else {
            self.err(node, field, "expected a list of error codes");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            let f = format!("{field}[{i}]");
            if let Some(s) = self.string(item, &f) {
                match ErrorCode::parse(&s) {
                    Some(c) => out.push(c),
                    None => {
                        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
                        let hint = closest(&s, &all)
                            .map(|c| format!("; did you mean `{c}`?"))
                            .unwrap_or_default();
                        self.err(item, &f, format!("`{s}` is not an error code{hint}"));
                    }
                }
            }
        }
        out
    }

    fn regex(&mut self, node: &Node, field: &str) -> Option<Regex> {
        let s = self.string(node, field)?;
        match Regex::new(&s) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(node, field, format!("not a valid regular expression: {e}"));
                None
            }
        }
    }

    fn scenario(&mut self, node: &Node) -> Option<Scenario> {
        let map = self.mapping(node, "")?;
        self.keys(map, "", TOP_KEYS);
        let name = self
            .required(map, node, "", "name")
            .and_then(|n| self.string(n, "name"));
        if let (Some(n), Some(node_name)) = (&name, map.get_node("name")) {
            let ok = !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                self.err(
                    node_name,
                    "name",
                    "expected a slug of letters, digits, `-` and `_`",
                );
            }
        }
        let description = match map.get_node("description") {
            Some(n) => self.string(n, "description").unwrap_or_default(),
            None => String::new(),
        };
        let principal = self
            .required(map, node, "", "principal")
            .and_then(|n| self.principal(n));
        let task = self
            .required(map, node, "", "task")
            .and_then(|n| self.string(n, "task"));
        if let (Some(t), Some(n)) = (&task, map.get_node("task")) {
            if t.trim().is_empty() {
                self.err(n, "task", "the task is empty");
            }
        }
        let max_steps = match map.get_node("max_steps") {
            Some(n) => match self.u32(n, "max_steps") {
                Some(0) => {
                    self.err(n, "max_steps", "expected at least 1");
                    None
                }
                // LLM-2: a cap above the limit is refused before anything runs, not judged after
                // a runaway agent has had its extra tries.
                Some(v) if v > DEFAULT_MAX_STEPS => {
                    self.err(
                        n,
                        "max_steps",
                        format!("expected at most {DEFAULT_MAX_STEPS} (LLM-2: the agent loop's step cap is <= {DEFAULT_MAX_STEPS}), got {v}"),
                    );
                    None
                }
                v => v,
            },
            None => Some(DEFAULT_MAX_STEPS),
        };
        let checklist = match map.get_node("checklist") {
            Some(n) => self.strings(n, "checklist"),
            None => Vec::new(),
        };
        let script = map.get_node("script").and_then(|n| self.script(n));
        let expect = match map.get_node("expect") {
            Some(n) => self.expect(n),
            None => Some(Expectations::default()),
        };
        Some(Scenario {
            name: name?,
            description,
            path: self.path.clone(),
            principal: principal?,
            task: task?,
            max_steps: max_steps?,
            checklist,
            script,
            expect: expect?,
        })
    }

    fn principal(&mut self, node: &Node) -> Option<Principal> {
        let map = self.mapping(node, "principal")?;
        self.keys(map, "principal", PRINCIPAL_KEYS);
        let tenant = self
            .required(map, node, "principal", "tenant")
            .and_then(|n| self.string(n, "principal.tenant"));
        let user = self
            .required(map, node, "principal", "user")
            .and_then(|n| self.string(n, "principal.user"));
        let roles = match map.get_node("roles") {
            Some(n) => self.strings(n, "principal.roles"),
            None => Vec::new(),
        };
        for (key, v) in [("tenant", &tenant), ("user", &user)] {
            if let (Some(v), Some(n)) = (v, map.get_node(key)) {
                if v.trim().is_empty() {
                    self.err(n, &format!("principal.{key}"), "must not be empty");
                }
            }
        }
        Some(Principal {
            tenant: tenant?,
            user: user?,
            roles,
        })
    }

    fn script(&mut self, node: &Node) -> Option<Script> {
        // Either a list of turns, or {turns: [...], repeat_last: bool}.
        let (turns_node, repeat_last) = match node {
            Node::Sequence(_) => (node, false),
            Node::Mapping(map) => {
                self.keys(map, "script", SCRIPT_KEYS);
                let repeat = match map.get_node("repeat_last") {
                    Some(n) => self.bool(n, "script.repeat_last").unwrap_or(false),
                    None => false,
                };
                (self.required(map, node, "script", "turns")?, repeat)
            }
            Node::Scalar(_) => {
                self.err(
                    node,
                    "script",
                    "expected a list of turns or {turns, repeat_last}",
                );
                return None;
            }
        };
        let Some(seq) = turns_node.as_sequence() else {
            self.err(turns_node, "script.turns", "expected a list of turns");
            return None;
        };
        if seq.is_empty() {
            self.err(turns_node, "script.turns", "expected at least one turn");
        }
        let mut turns = Vec::new();
        for (i, t) in seq.iter().enumerate() {
            let field = format!("script.turns[{i}]");
            if let Some(turn) = self.turn(t, &field) {
                turns.push(turn);
            }
        }
        Some(Script { turns, repeat_last })
    }

    fn turn(&mut self, node: &Node, field: &str) -> Option<ScriptTurn> {
        let map = self.mapping(node, field)?;
        self.keys(map, field, TURN_KEYS);
        match (map.get_node("tool_calls"), map.get_node("final")) {
            (Some(_), Some(_)) | (None, None) => {
                self.err(
                    node,
                    field,
                    "expected exactly one of `tool_calls` or `final`",
                );
                None
            }
            (None, Some(f)) => self.string(f, &join(field, "final")).map(ScriptTurn::Final),
            (Some(calls), None) => {
                let f = join(field, "tool_calls");
                let Some(seq) = calls.as_sequence() else {
                    self.err(calls, &f, "expected a list of tool calls");
                    return None;
                };
                if seq.is_empty() {
                    self.err(calls, &f, "expected at least one tool call");
                }
                let mut out = Vec::new();
                for (i, c) in seq.iter().enumerate() {
                    if let Some(call) = self.call(c, &format!("{f}[{i}]")) {
                        out.push(call);
                    }
                }
                Some(ScriptTurn::ToolCalls(out))
            }
        }
    }

    fn call(&mut self, node: &Node, field: &str) -> Option<ScriptedCall> {
        let map = self.mapping(node, field)?;
        self.keys(map, field, CALL_KEYS);
        let tool = self
            .required(map, node, field, "tool")
            .and_then(|n| self.string(n, &join(field, "tool")));
        let arguments = match (map.get_node("arguments"), map.get_node("raw_arguments")) {
            (Some(_), Some(_)) => {
                self.err(
                    node,
                    field,
                    "expected `arguments` or `raw_arguments`, not both",
                );
                None
            }
            (Some(a), None) => {
                if a.as_mapping().is_none() {
                    self.err(a, &join(field, "arguments"), "expected a mapping");
                }
                Some(ScriptedArguments::Json(to_json(a)))
            }
            (None, Some(r)) => self
                .string(r, &join(field, "raw_arguments"))
                .map(ScriptedArguments::Raw),
            (None, None) => Some(ScriptedArguments::Json(Value::Object(Default::default()))),
        };
        Some(ScriptedCall {
            tool: tool?,
            arguments: arguments?,
        })
    }

    fn expect(&mut self, node: &Node) -> Option<Expectations> {
        let map = self.mapping(node, "expect")?;
        self.keys(map, "expect", EXPECT_KEYS);
        let mut e = Expectations::default();
        if let Some(n) = map.get_node("outcome") {
            match self.string(n, "expect.outcome").as_deref() {
                Some("completed") => e.outcome = ExpectedOutcome::Completed,
                Some("step_limit") => e.outcome = ExpectedOutcome::StepLimit,
                Some(other) => self.err(
                    n,
                    "expect.outcome",
                    format!("`{other}` is not an outcome (expected completed or step_limit)"),
                ),
                None => {}
            }
        }
        if let Some(n) = map.get_node("no_cross_tenant") {
            e.no_cross_tenant = self.bool(n, "expect.no_cross_tenant").unwrap_or(true);
        }
        if let Some(n) = map.get_node("recovers_from") {
            e.recovers_from = self.codes(n, "expect.recovers_from");
        }
        if let Some(n) = map.get_node("errors_seen") {
            e.errors_seen = self.codes(n, "expect.errors_seen");
        }
        if let Some(n) = map.get_node("unchanged") {
            e.unchanged = self.strings(n, "expect.unchanged");
            for (i, t) in e.unchanged.iter().enumerate() {
                if !is_ident(t) {
                    if let Some(item) = n.as_sequence().and_then(|s| s.get(i)) {
                        self.err(
                            item,
                            &format!("expect.unchanged[{i}]"),
                            "expected a table name",
                        );
                    }
                }
            }
        }
        if let Some(n) = map.get_node("changed") {
            if let Some(seq) = n.as_sequence() {
                for (i, c) in seq.iter().enumerate() {
                    if let Some(ch) = self.change(c, &format!("expect.changed[{i}]")) {
                        e.changed.push(ch);
                    }
                }
            } else {
                self.err(
                    n,
                    "expect.changed",
                    "expected a list of {table, id, fields}",
                );
            }
        }
        if let Some(n) = map.get_node("approval_pending") {
            let model = match n {
                Node::Mapping(m) => {
                    self.keys(m, "expect.approval_pending", &["model"]);
                    self.required(m, n, "expect.approval_pending", "model")
                        .and_then(|x| self.string(x, "expect.approval_pending.model"))
                }
                _ => self.string(n, "expect.approval_pending"),
            };
            e.approval_pending = model;
        }
        if let Some(n) = map.get_node("max_steps") {
            e.max_steps = self.u32(n, "expect.max_steps");
        }
        if let Some(n) = map.get_node("final_answer") {
            e.final_answer = self.regex(n, "expect.final_answer");
        }
        if let Some(n) = map.get_node("final_answer_not") {
            e.final_answer_not = self.regex(n, "expect.final_answer_not");
        }
        if let Some(n) = map.get_node("tools_called") {
            e.tools_called = self.strings(n, "expect.tools_called");
        }
        if let Some(n) = map.get_node("tools_not_called") {
            e.tools_not_called = self.strings(n, "expect.tools_not_called");
        }
        Some(e)
    }

    fn change(&mut self, node: &Node, field: &str) -> Option<RowChange> {
        let map = self.mapping(node, field)?;
        self.keys(map, field, CHANGE_KEYS);
        let table = self
            .required(map, node, field, "table")
            .and_then(|n| self.string(n, &join(field, "table")));
        if let (Some(t), Some(n)) = (&table, map.get_node("table")) {
            if !is_ident(t) {
                self.err(n, &join(field, "table"), "expected a table name");
            }
        }
        let id = self.required(map, node, field, "id").and_then(|n| {
            let v = n.as_scalar().and_then(|s| s.as_i64());
            if v.is_none() {
                self.err(n, &join(field, "id"), "expected an integer primary key");
            }
            v
        });
        let fields = self.required(map, node, field, "fields").and_then(|n| {
            let Some(m) = n.as_mapping() else {
                self.err(
                    n,
                    &join(field, "fields"),
                    "expected a mapping of column: value",
                );
                return None;
            };
            let mut out = BTreeMap::new();
            for (k, v) in m.iter() {
                if !is_ident(k.as_str()) {
                    let (line, column) = scalar_pos(k);
                    self.errors.push(ScenarioError {
                        path: self.path.clone(),
                        line,
                        column,
                        field: join(&join(field, "fields"), k.as_str()),
                        message: "expected a column name".into(),
                    });
                }
                out.insert(k.as_str().to_string(), to_json(v));
            }
            Some(out)
        });
        Some(RowChange {
            table: table?,
            id: id?,
            fields: fields?,
        })
    }
}

/// Plain identifiers only; they are quoted again when used in SQL.
fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// YAML node to JSON. Plain scalars are typed as YAML would (null, booleans, numbers); quoted
/// scalars stay strings.
pub(crate) fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => {
            if s.may_coerce() {
                let t = s.as_str();
                if t == "~" || t == "null" || t == "Null" || t == "NULL" {
                    return Value::Null;
                }
                if let Some(b) = s.as_bool() {
                    return Value::Bool(b);
                }
                if let Some(i) = s.as_i64() {
                    return Value::from(i);
                }
                if t.contains(['.', 'e', 'E']) {
                    if let Some(f) = s.as_f64().and_then(serde_json::Number::from_f64) {
                        return Value::Number(f);
                    }
                }
            }
            Value::String(s.as_str().to_string())
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// The closest allowed word within edit distance 2, for "did you mean".
fn closest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options
        .iter()
        .map(|o| (levenshtein(word, o), *o))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: order-question
principal: {tenant: acme, user: support-1, roles: [support]}
task: Where is order 3?
max_steps: 6
script:
  - tool_calls:
      - tool: db_get
        arguments: {model: orders, id: 3, flag: true, price: 12.5, note: "007"}
  - tool_calls:
      - {tool: db_query, raw_arguments: "{oops"}
  - final: It shipped.
expect:
  final_answer: "(?i)shipped"
  recovers_from: [validation_error]
  changed:
    - {table: support_tickets, id: 2, fields: {status: closed}}
"#;

    #[test]
    fn loads_a_good_file() {
        let s = load_str(GOOD, "good.yaml").unwrap();
        assert_eq!(s.name, "order-question");
        assert_eq!(s.principal.roles, vec!["support"]);
        assert_eq!(s.max_steps, 6);
        let script = s.script.clone().unwrap();
        assert_eq!(script.turns.len(), 3);
        match &script.turns[0] {
            ScriptTurn::ToolCalls(c) => assert_eq!(
                c[0].arguments,
                ScriptedArguments::Json(
                    serde_json::json!({"model": "orders", "id": 3, "flag": true, "price": 12.5, "note": "007"})
                )
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.expect.recovers_from, vec![ErrorCode::ValidationError]);
        assert_eq!(s.expect.changed[0].fields["status"], "closed");
        assert!(s.touches_writes());
    }

    #[test]
    fn reports_every_problem_with_line_and_field() {
        let bad = r#"
name: bad name
principal: {tenant: acme}
tsk: typo
max_steps: -1
expect:
  recovers_from: [scan_budget_exceded]
  outcome: maybe
  final_answer: "("
"#;
        let errs = load_str(bad, "bad.yaml").unwrap_err();
        let text = errs.to_string();
        for needle in [
            "bad.yaml:2:7: error: name: expected a slug",
            "principal.user: missing required key",
            "bad.yaml:4:1: error: tsk: unknown key",
            "did you mean `task`?",
            "task: missing required key",
            "bad.yaml:5:12: error: max_steps: expected a non-negative integer",
            "did you mean `scan_budget_exceeded`?",
            "expect.outcome: `maybe` is not an outcome",
            "expect.final_answer: not a valid regular expression",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn a_step_cap_above_twelve_is_refused_at_load() {
        let text = "name: runaway\nprincipal: {tenant: acme, user: u, roles: [support]}\ntask: Poll.\nmax_steps: 20\n";
        let errs = load_str(text, "cap.yaml").unwrap_err();
        assert_eq!(errs.0.len(), 1, "{errs}");
        assert!(
            errs.to_string()
                .contains("cap.yaml:4:12: error: max_steps: expected at most 12"),
            "{errs}"
        );
        let ok = load_str(&text.replace("20", "12"), "cap.yaml").expect("12 is the limit");
        assert_eq!(ok.max_steps, 12);
    }

    #[test]
    fn yaml_syntax_error_has_a_position() {
        let errs = load_str("name: [unclosed\n", "x.yaml").unwrap_err();
        assert!(errs.0[0].line >= 1, "{errs}");
        assert!(errs.to_string().contains("invalid YAML"));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let errs = load_str("name: a\nname: b\n", "d.yaml").unwrap_err();
        assert!(errs.to_string().contains("d.yaml:2:1"), "{errs}");
    }
}
