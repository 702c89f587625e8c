//! Loading a target profile (YAML) into a validated [`Profile`]: [`load`] and [`load_str`].
//!
//! Like the policy loader, it walks `marked_yaml` nodes itself rather than deserializing, so that
//! every problem in the file (an unknown key with a "did you mean", a wrong type, an unknown
//! template placeholder, a code that is not ours) is reported at once, each at its
//! `file:line:col`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use marked_yaml::{LoaderOptions, Node};
use preflight_contract::ErrorCode;
use regex::Regex;

use super::model::*;
use super::nodes::*;

/// One problem in a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileError {
    pub file: String,
    /// `(line, column)`, 1-based; `None` for the whole file.
    pub at: Option<(usize, usize)>,
    /// Dotted key path, e.g. `tools.db_query.where`.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((l, c)) => write!(f, "{}:{l}:{c}: error: ", self.file)?,
            None => write!(f, "{}: error: ", self.file)?,
        }
        if self.key_path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key_path, self.message)
        }
    }
}

/// Every problem of one profile, one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ProfileErrors {
    pub errors: Vec<ProfileError>,
}

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads and validates a profile file.
pub fn load(path: impl AsRef<Path>) -> Result<Profile, ProfileErrors> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ProfileErrors {
        errors: vec![ProfileError {
            file: shown.clone(),
            at: None,
            key_path: String::new(),
            message: format!("cannot read the target profile: {e}"),
        }],
    })?;
    load_str(&text, &shown)
}

/// As [`load`], from text; `path` is used in messages and in [`Profile::path`].
pub fn load_str(text: &str, path: &str) -> Result<Profile, ProfileErrors> {
    let mut d = Diag {
        file: path.to_string(),
        errors: Vec::new(),
    };
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true)
        .toplevel_mapping();
    // yaml-rust has `unreachable!()` paths for a few malformed documents; a malformed file must
    // be an error, never a panic.
    let parsed =
        std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(0, text, options));
    let root = match parsed {
        Ok(Ok(node)) => node,
        Ok(Err(e)) => {
            let at = load_error_mark(&e);
            d.errors.push(ProfileError {
                file: path.to_string(),
                at,
                key_path: String::new(),
                message: format!("invalid YAML: {e}"),
            });
            return Err(d.finish().unwrap_err());
        }
        Err(_) => {
            d.errors.push(ProfileError {
                file: path.to_string(),
                at: None,
                key_path: String::new(),
                message: "the YAML parser could not read this file (anchors, aliases and tags are not supported)".into(),
            });
            return Err(d.finish().unwrap_err());
        }
    };
    let profile = walk(&mut d, &root, path, text);
    d.finish()?;
    profile.ok_or_else(|| ProfileErrors {
        errors: vec![ProfileError {
            file: path.to_string(),
            at: None,
            key_path: String::new(),
            message: "internal error: the profile was rejected without a reason".into(),
        }],
    })
}

fn load_error_mark(e: &marked_yaml::LoadError) -> Option<(usize, usize)> {
    use marked_yaml::LoadError as E;
    let m = match e {
        E::TopLevelMustBeMapping(m)
        | E::TopLevelMustBeSequence(m)
        | E::UnexpectedAnchor(m)
        | E::MappingKeyMustBeScalar(m)
        | E::UnexpectedTag(m)
        | E::ScanError(m, _) => Some(*m),
        E::DuplicateKey(inner) => inner.key.span().start().copied(),
    };
    m.map(|m| (m.line(), m.column()))
}

const TOP: &[&str] = &[
    "name",
    "transport",
    "timeout",
    "database",
    "principal",
    "tools",
    "denials",
    "audit",
    "server",
    "sql",
];
const PRINCIPAL_VARS: &[&str] = &["tenant", "user", "roles"];

fn walk(d: &mut Diag, root: &Node, path: &str, text: &str) -> Option<Profile> {
    let top = mapping(d, root, "")?;
    check_keys(d, top, "", TOP);
    let name = get(top, "name")
        .and_then(|n| string(d, n, "name"))
        .unwrap_or_else(|| path.to_string());
    let principal = get(top, "principal")
        .map(|n| principal(d, n, path))
        .unwrap_or_default();
    let audit = get(top, "audit").and_then(|n| super::audit::audit(d, n));
    let server = get(top, "server").and_then(|n| super::server::server(d, n));
    let sql = get(top, "sql").and_then(|n| super::sql::sql(d, n));
    // Judged from the file, not the parsed sections, so that a mistake inside `audit:` or
    // `principal:` is reported once, not again as a missing section or an unknown placeholder.
    let has_key = |section: &str, keys: &[&str]| match get(top, section) {
        Some(Node::Mapping(m)) => keys.iter().any(|k| get(m, k).is_some()),
        Some(_) | None => false,
    };
    let audit_jsonl = has_key("audit", &["jsonl"]);
    let principal_given = has_key("principal", &["env", "headers", "argument", "jwt"]);
    let transport = match get(top, "transport") {
        Some(n) => transport(d, n, &principal, audit_jsonl),
        None => {
            d.error(at(root), "transport", "missing: say how to reach the layer (`stdio: {command, args, env}` or `url:` with `protocol: mcp|http`)");
            None
        }
    };
    let timeout = match get(top, "timeout") {
        Some(n) => duration(d, n, "timeout").unwrap_or(DEFAULT_TIMEOUT),
        None => DEFAULT_TIMEOUT,
    };
    let login = get(top, "database")
        .and_then(|n| database(d, n))
        .unwrap_or_default();
    let tools = match get(top, "tools") {
        Some(n) => tools(d, n),
        None => {
            d.error(
                at(root),
                "tools",
                "missing: map the contract's tools the layer offers (`tools: {}` for a layer with domain tools only)",
            );
            BTreeMap::new()
        }
    };
    let denials = get(top, "denials")
        .map(|n| denials(d, n))
        .unwrap_or_default();
    if !principal_given {
        d.error(
            at(root),
            "principal",
            "missing: say how the tenant, user and roles reach the layer (`env:`, `headers:`, `argument:` or `jwt:`)",
        );
    }
    let transport = transport?;
    if matches!(transport, Transport::McpStdio { .. }) && principal.jwt.is_some() {
        d.error(
            at(root),
            "principal.jwt",
            "a bearer token travels in an HTTP header; a stdio layer has none (reach the layer by `url:`, or pass the principal in `env:`)",
        );
    }
    if let (true, Some(n)) = (
        matches!(transport, Transport::McpStdio { .. }),
        get(top, "server"),
    ) {
        d.error(
            at(n),
            "server",
            "a stdio layer has no HTTP endpoint, so it has no health endpoint or request rate limits to declare",
        );
    }
    if let (Some(a), Some(n)) = (&audit, get(top, "audit")) {
        super::audit::check_fits_transport(d, n, a, &transport);
    }
    if matches!(transport, Transport::McpStdio { .. })
        && !principal.headers.is_empty()
        && principal.env.is_empty()
    {
        d.error(
            at(root),
            "principal.headers",
            "a stdio layer has no HTTP headers; pass the principal in `env:` or as an `argument:`",
        );
    }
    if !matches!(transport, Transport::McpStdio { .. }) && !principal.env.is_empty() {
        d.error(
            at(root),
            "principal.env",
            "a layer reached by URL runs its own process; pass the principal in `headers:` or as an `argument:`",
        );
    }
    Some(Profile {
        path: path.to_string(),
        hash: crate::hash_hex(text.as_bytes()),
        name,
        transport,
        timeout,
        login,
        principal,
        tools,
        denials,
        audit,
        server,
        sql,
    })
}

fn transport(
    d: &mut Diag,
    node: &Node,
    principal: &PrincipalDelivery,
    audit_jsonl: bool,
) -> Option<Transport> {
    let m = mapping(d, node, "transport")?;
    check_keys(d, m, "transport", &["stdio", "url", "protocol"]);
    let stdio = get(m, "stdio");
    let url = get(m, "url");
    match (stdio, url) {
        (Some(s), None) => {
            if let Some(p) = get(m, "protocol") {
                d.error(
                    at(p),
                    "transport.protocol",
                    "a stdio layer always speaks MCP; `protocol` is for `url:`",
                );
            }
            let sm = mapping(d, s, "transport.stdio")?;
            check_keys(d, sm, "transport.stdio", &["command", "args", "env"]);
            let mut allowed = vec!["database_url", "profile_dir", "run_dir"];
            if !principal.env.is_empty() {
                allowed.extend_from_slice(PRINCIPAL_VARS);
            }
            if audit_jsonl {
                allowed.push("audit_path");
            }
            let command = match get(sm, "command") {
                Some(n) => {
                    let c = string(d, n, "transport.stdio.command");
                    if let Some(c) = &c {
                        check_template(d, n, "transport.stdio.command", c, &allowed);
                    }
                    c
                }
                None => {
                    d.error(
                        at(s),
                        "transport.stdio.command",
                        "missing: the program to start",
                    );
                    None
                }
            };
            let args = match get(sm, "args") {
                Some(n) => {
                    let a = string_list(d, n, "transport.stdio.args");
                    for arg in &a {
                        check_template(d, n, "transport.stdio.args", arg, &allowed);
                    }
                    a
                }
                None => Vec::new(),
            };
            let env = match get(sm, "env") {
                Some(n) => {
                    let e = string_map(d, n, "transport.stdio.env");
                    for v in e.values() {
                        check_template(d, n, "transport.stdio.env", v, &allowed);
                    }
                    e
                }
                None => BTreeMap::new(),
            };
            Some(Transport::McpStdio {
                command: command?,
                args,
                env,
            })
        }
        (None, Some(u)) => {
            let url = string(d, u, "transport.url")?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                d.error(
                    at(u),
                    "transport.url",
                    format!("expected an http:// or https:// URL, found `{url}`"),
                );
            }
            let protocol = match get(m, "protocol") {
                Some(p) => string(d, p, "transport.protocol").and_then(|s| match s.as_str() {
                    "mcp" => Some(true),
                    "http" => Some(false),
                    other => {
                        d.error(
                            at(p),
                            "transport.protocol",
                            format!("expected `mcp` or `http`, found `{other}`"),
                        );
                        None
                    }
                }),
                None => Some(true),
            }?;
            Some(if protocol {
                Transport::McpHttp { url }
            } else {
                Transport::Http { url }
            })
        }
        (Some(_), Some(u)) => {
            d.error(
                at(u),
                "transport",
                "give either `stdio:` or `url:`, not both",
            );
            None
        }
        (None, None) => {
            d.error(
                at(node),
                "transport",
                "expected `stdio: {command, args, env}` or `url:`",
            );
            None
        }
    }
}

fn database(d: &mut Diag, node: &Node) -> Option<Login> {
    let m = mapping(d, node, "database")?;
    check_keys(d, m, "database", &["login"]);
    let n = get(m, "login")?;
    let s = string(d, n, "database.login")?;
    match s.as_str() {
        "agent" => Some(Login::Agent),
        "owner" => Some(Login::Owner),
        "superuser" => Some(Login::Superuser),
        other => {
            d.error(
                at(n),
                "database.login",
                format!("expected `agent`, `owner` or `superuser`, found `{other}`"),
            );
            None
        }
    }
}

fn principal(d: &mut Diag, node: &Node, profile_path: &str) -> PrincipalDelivery {
    let mut out = PrincipalDelivery::default();
    let Some(m) = mapping(d, node, "principal") else {
        return out;
    };
    check_keys(d, m, "principal", &["env", "headers", "argument", "jwt"]);
    if let Some(n) = get(m, "jwt") {
        out.jwt = super::jwt::jwt(d, n, profile_path);
    }
    if let Some(n) = get(m, "env") {
        out.env = string_map(d, n, "principal.env");
        for v in out.env.values() {
            check_template(d, n, "principal.env", v, PRINCIPAL_VARS);
        }
    }
    if let Some(n) = get(m, "headers") {
        out.headers = string_map(d, n, "principal.headers");
        for v in out.headers.values() {
            check_template(d, n, "principal.headers", v, PRINCIPAL_VARS);
        }
    }
    if let Some(n) = get(m, "argument") {
        if let Some(am) = mapping(d, n, "principal.argument") {
            check_keys(d, am, "principal.argument", &["name", "value"]);
            let name = get(am, "name").and_then(|v| string(d, v, "principal.argument.name"));
            let value = get(am, "value").and_then(|v| {
                let s = string(d, v, "principal.argument.value")?;
                check_template(d, v, "principal.argument.value", &s, PRINCIPAL_VARS);
                Some(s)
            });
            match (name, value) {
                (Some(n), Some(v)) => out.argument = Some((n, v)),
                _ => d.error(
                    at(n),
                    "principal.argument",
                    "expected `name:` and `value:` (e.g. `value: \"{tenant}\"`)",
                ),
            }
        }
    }
    out
}

fn tools(d: &mut Diag, node: &Node) -> BTreeMap<String, ToolMap> {
    let mut out = BTreeMap::new();
    let Some(m) = mapping(d, node, "tools") else {
        return out;
    };
    for (k, v) in m.iter() {
        let tool = k.as_str();
        let path = join("tools", tool);
        if !CONTRACT_TOOLS.contains(&tool) {
            let hint = did_you_mean(tool, &CONTRACT_TOOLS)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; expected one of: {}", CONTRACT_TOOLS.join(", ")));
            d.error(
                key_at(k),
                &path,
                format!("`{tool}` is not a tool of the contract{hint}"),
            );
            continue;
        }
        let Some(tm) = mapping(d, v, &path) else {
            continue;
        };
        check_keys(
            d,
            tm,
            &path,
            &["name", "args", "where", "case", "rows", "row"],
        );
        let name = match get(tm, "name") {
            Some(n) => string(d, n, &join(&path, "name")).inspect(|s| {
                check_template(d, n, &join(&path, "name"), s, &["model"]);
            }),
            None => Some(tool.to_string()),
        };
        let args = get(tm, "args")
            .map(|n| string_map(d, n, &join(&path, "args")))
            .unwrap_or_default();
        let where_shape = match get(tm, "where") {
            Some(n) => match string(d, n, &join(&path, "where")).as_deref() {
                Some("list") => WhereShape::List,
                Some("object") => WhereShape::Object,
                Some(other) => {
                    d.error(
                        at(n),
                        &join(&path, "where"),
                        format!("expected `list` ([{{field, op, value}}]) or `object` ({{field: {{op: value}}}}), found `{other}`"),
                    );
                    WhereShape::List
                }
                None => WhereShape::List,
            },
            None => WhereShape::List,
        };
        let case = match get(tm, "case") {
            Some(n) => match string(d, n, &join(&path, "case")).as_deref() {
                Some("snake") => Case::Snake,
                Some("camel") => Case::Camel,
                Some(other) => {
                    d.error(
                        at(n),
                        &join(&path, "case"),
                        format!("expected `snake` or `camel`, found `{other}`"),
                    );
                    Case::Snake
                }
                None => Case::Snake,
            },
            None => Case::Snake,
        };
        let rows = get(tm, "rows").and_then(|n| string(d, n, &join(&path, "rows")));
        let row = get(tm, "row").and_then(|n| string(d, n, &join(&path, "row")));
        if let Some(name) = name {
            out.insert(
                tool.to_string(),
                ToolMap {
                    name,
                    args,
                    where_shape,
                    case,
                    rows,
                    row,
                },
            );
        }
    }
    out
}

fn error_code(d: &mut Diag, node: &Node, path: &str) -> Option<ErrorCode> {
    let s = string(d, node, path)?;
    match ErrorCode::parse(&s) {
        Some(c) => Some(c),
        None => {
            let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
            let hint = did_you_mean(&s, &ours)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_else(|| format!("; expected one of: {}", ours.join(", ")));
            d.error(
                at(node),
                path,
                format!("`{s}` is not one of the contract's error codes{hint}"),
            );
            None
        }
    }
}

fn denials(d: &mut Diag, node: &Node) -> Denials {
    let mut out = Denials::default();
    let Some(m) = mapping(d, node, "denials") else {
        return out;
    };
    check_keys(
        d,
        m,
        "denials",
        &["is_error", "flag", "code", "message", "codes", "patterns"],
    );
    if let Some(n) = get(m, "is_error") {
        match string(d, n, "denials.is_error").as_deref() {
            Some("true") => out.is_error = true,
            Some("false") => out.is_error = false,
            Some(other) => d.error(
                at(n),
                "denials.is_error",
                format!("expected `true` or `false`, found `{other}`"),
            ),
            None => {}
        }
    }
    if let Some(n) = get(m, "flag") {
        if let Some(fm) = mapping(d, n, "denials.flag") {
            check_keys(d, fm, "denials.flag", &["path", "equals"]);
            let path = get(fm, "path").and_then(|v| string(d, v, "denials.flag.path"));
            let equals = get(fm, "equals").and_then(|v| string(d, v, "denials.flag.equals"));
            match (path, equals) {
                (Some(p), Some(e)) => {
                    // `false`, `true`, numbers and null compare as JSON; anything else as text.
                    let value = serde_json::from_str(&e).unwrap_or(serde_json::Value::String(e));
                    out.flag = Some((p, value));
                }
                _ => d.error(
                    at(n),
                    "denials.flag",
                    "expected `path:` and `equals:` (e.g. `path: success`, `equals: false`)",
                ),
            }
        }
    }
    if let Some(n) = get(m, "code") {
        if let Some(s) = string(d, n, "denials.code") {
            out.code_path = s;
        }
    }
    if let Some(n) = get(m, "message") {
        if let Some(s) = string(d, n, "denials.message") {
            out.message_path = s;
        }
    }
    if let Some(n) = get(m, "codes") {
        if let Some(cm) = mapping(d, n, "denials.codes") {
            for (k, v) in cm.iter() {
                let p = join("denials.codes", k.as_str());
                if let Some(c) = error_code(d, v, &p) {
                    out.codes.insert(k.as_str().to_string(), c);
                }
            }
        }
    }
    if let Some(n) = get(m, "patterns") {
        match n {
            Node::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("denials.patterns[{i}]");
                    let Some(pm) = mapping(d, item, &p) else {
                        continue;
                    };
                    check_keys(d, pm, &p, &["regex", "code"]);
                    let re = get(pm, "regex").and_then(|v| {
                        let s = string(d, v, &join(&p, "regex"))?;
                        match Regex::new(&s) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                d.error(at(v), &join(&p, "regex"), format!("invalid regex: {e}"));
                                None
                            }
                        }
                    });
                    let code = get(pm, "code").and_then(|v| error_code(d, v, &join(&p, "code")));
                    if let (Some(re), Some(code)) = (re, code) {
                        out.patterns.push((re, code));
                    }
                }
            }
            Node::Scalar(_) | Node::Mapping(_) => d.error(
                at(n),
                "denials.patterns",
                format!("expected a list of {{regex, code}}, found {}", describe(n)),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: test layer
transport:
  stdio:
    command: python3
    args: ["{profile_dir}/server.py", "--db", "{database_url}"]
timeout: 5s
database: {login: owner}
principal:
  env: {LAYER_TENANT: "{tenant}", LAYER_ROLES: "{roles}"}
tools:
  db_query: {name: "{model}_search", args: {limit: take}, where: object, case: camel, rows: items}
  db_get: {name: "{model}_get", row: item}
denials:
  flag: {path: success, equals: false}
  code: error.code
  message: error.message
  codes: {NOPE: field_denied, GONE: not_found}
  patterns: [{regex: "permission denied", code: model_not_allowed}]
"#;

    #[test]
    fn a_good_profile_loads() {
        let p = load_str(GOOD, "p.yaml").unwrap();
        assert_eq!(p.name, "test layer");
        assert_eq!(p.timeout, std::time::Duration::from_secs(5));
        assert_eq!(p.login, Login::Owner);
        assert!(matches!(p.transport, Transport::McpStdio { ref args, .. } if args.len() == 3));
        let q = &p.tools["db_query"];
        assert_eq!(q.name, "{model}_search");
        assert_eq!(q.args["limit"], "take");
        assert_eq!(q.where_shape, WhereShape::Object);
        assert_eq!(q.case, Case::Camel);
        assert_eq!(q.rows.as_deref(), Some("items"));
        assert_eq!(p.denials.codes["NOPE"], ErrorCode::FieldDenied);
        assert_eq!(
            p.denials.flag,
            Some(("success".to_string(), serde_json::json!(false)))
        );
        assert_eq!(p.denials.code_path, "error.code");
        assert_eq!(p.hash.len(), 64);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_positions() {
        let bad = r#"
name: bad
transport:
  stdio:
    comand: python3
    args: ["{profile_dirr}/server.py"]
timeout: soon
principal:
  env: {T: "{tenant}"}
tools:
  db_qeury: {name: x}
  db_get: {name: y, rowz: item}
denials:
  codes: {NOPE: field_denid}
extra: 1
"#;
        let e = load_str(bad, "bad.yaml").unwrap_err();
        let text = e.to_string();
        for want in [
            "bad.yaml:5:5: error: transport.stdio.comand: unknown key `comand`; did you mean `command`?",
            "transport.stdio.command: missing",
            "unknown placeholder `{profile_dirr}`; did you mean `{profile_dir}`?",
            "bad.yaml:7:10: error: timeout: expected a positive duration",
            "bad.yaml:11:3: error: tools.db_qeury: `db_qeury` is not a tool of the contract; did you mean `db_query`?",
            "tools.db_get.rowz: unknown key `rowz`; did you mean `row`?",
            "denials.codes.NOPE: `field_denid` is not one of the contract's error codes; did you mean `field_denied`?",
            "bad.yaml:15:1: error: extra: unknown key `extra`",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn principal_must_fit_the_transport() {
        let text = "transport: {url: \"http://x\"}\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {db_get: {}}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("principal.env: a layer reached by URL"), "{e}");
        let text = "transport: {url: \"ftp://x\", protocol: grpc}\ntools: {db_get: {}}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("expected an http:// or https:// URL"), "{e}");
        assert!(e.contains("expected `mcp` or `http`, found `grpc`"), "{e}");
        assert!(e.contains("principal: missing"), "{e}");
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        let e = load_str("a: [1, 2\n", "p.yaml").unwrap_err().to_string();
        assert!(e.starts_with("p.yaml:"), "{e}");
        let e = load_str("- 1\n", "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml"), "{e}");
    }
}
