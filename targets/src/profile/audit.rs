//! The profile's `audit:` section ([`AuditLog`]): where the layer keeps its own audit log (a
//! JSONL file or a table), where each part of a record sits, which decision values mean allowed
//! and refused, and how trace ids reach the layer when they do.

use marked_yaml::Node;

use super::model::*;
use super::nodes::*;

const KEYS: &[&str] = &["jsonl", "table", "fields", "decisions", "trace"];
const FIELDS: &[&str] = &[
    "time", "tenant", "user", "tool", "decision", "code", "trace_id",
];

pub(super) fn audit(d: &mut Diag, node: &Node) -> Option<AuditLog> {
    let m = mapping(d, node, "audit")?;
    check_keys(d, m, "audit", KEYS);
    let source = match (get(m, "jsonl"), get(m, "table")) {
        (Some(j), None) => string(d, j, "audit.jsonl").map(|path| {
            check_template(d, j, "audit.jsonl", &path, &["profile_dir", "run_dir"]);
            AuditSource::Jsonl { path }
        }),
        (None, Some(t)) => string(d, t, "audit.table").and_then(|name| {
            let parts: Vec<&str> = name.split('.').collect();
            match parts.as_slice() {
                [schema, table] if !schema.is_empty() && !table.is_empty() => {
                    Some(AuditSource::Table {
                        schema: schema.to_string(),
                        table: table.to_string(),
                    })
                }
                _ => {
                    d.error(
                        at(t),
                        "audit.table",
                        format!("expected `schema.table`, found `{name}`"),
                    );
                    None
                }
            }
        }),
        (Some(_), Some(t)) => {
            d.error(at(t), "audit", "give either `jsonl:` or `table:`, not both");
            None
        }
        (None, None) => {
            d.error(
                at(node),
                "audit",
                "missing: say where the layer's log is (`jsonl: PATH` or `table: schema.table`)",
            );
            None
        }
    };
    let fields = match get(m, "fields") {
        Some(n) => fields(d, n),
        None => {
            d.error(
                at(node),
                "audit.fields",
                "missing: say where each part of a record sits (`{tenant, user, tool, decision, code, time}`)",
            );
            None
        }
    };
    let (allow, deny) = match get(m, "decisions") {
        Some(n) => decisions(d, n)?,
        None => {
            d.error(
                at(node),
                "audit.decisions",
                "missing: say which values of the decision field mean allowed and refused (`{allow: [..], deny: [..]}`)",
            );
            return None;
        }
    };
    let trace_argument = get(m, "trace").and_then(|n| {
        let tm = mapping(d, n, "audit.trace")?;
        check_keys(d, tm, "audit.trace", &["argument"]);
        match get(tm, "argument") {
            Some(a) => string(d, a, "audit.trace.argument"),
            None => {
                d.error(
                    at(n),
                    "audit.trace.argument",
                    "missing: the argument that carries preflight's trace id to the layer",
                );
                None
            }
        }
    });
    let fields = fields?;
    if trace_argument.is_some() && fields.trace_id.is_none() {
        d.error(
            at(node),
            "audit.fields.trace_id",
            "missing: `trace:` sends trace ids to the layer; say where its records keep them",
        );
    }
    Some(AuditLog {
        source: source?,
        fields,
        allow,
        deny,
        trace_argument,
    })
}

fn fields(d: &mut Diag, node: &Node) -> Option<AuditFields> {
    let m = mapping(d, node, "audit.fields")?;
    check_keys(d, m, "audit.fields", FIELDS);
    let mut one = |key: &str| get(m, key).and_then(|n| string(d, n, &join("audit.fields", key)));
    let (time, tenant, user, tool, decision, code, trace_id) = (
        one("time"),
        one("tenant"),
        one("user"),
        one("tool"),
        one("decision"),
        one("code"),
        one("trace_id"),
    );
    let mut missing = Vec::new();
    for (key, v) in [
        ("tenant", &tenant),
        ("tool", &tool),
        ("decision", &decision),
    ] {
        if v.is_none() && get(m, key).is_none() {
            missing.push(key);
        }
    }
    if !missing.is_empty() {
        d.error(
            at(node),
            "audit.fields",
            format!(
                "missing: {} (a record must say who called which tool with what outcome)",
                missing.join(", ")
            ),
        );
    }
    Some(AuditFields {
        time,
        tenant: tenant?,
        user,
        tool: tool?,
        decision: decision?,
        code,
        trace_id,
    })
}

fn decisions(d: &mut Diag, node: &Node) -> Option<(Vec<String>, Vec<String>)> {
    let m = mapping(d, node, "audit.decisions")?;
    check_keys(d, m, "audit.decisions", &["allow", "deny"]);
    let mut list = |key: &str| -> Vec<String> {
        let path = join("audit.decisions", key);
        match get(m, key) {
            Some(Node::Scalar(s)) if !s.as_str().trim().is_empty() => vec![s.as_str().to_string()],
            Some(n) => string_list(d, n, &path),
            None => Vec::new(),
        }
    };
    let allow = list("allow");
    let deny = list("deny");
    let mut ok = true;
    for (key, v) in [("allow", &allow), ("deny", &deny)] {
        if v.is_empty() {
            d.error(
                at(node),
                &join("audit.decisions", key),
                "missing: at least one value of the decision field",
            );
            ok = false;
        }
    }
    for v in &allow {
        if deny.contains(v) {
            d.error(
                at(node),
                "audit.decisions",
                format!("`{v}` cannot mean both allowed and refused"),
            );
            ok = false;
        }
    }
    ok.then_some((allow, deny))
}

/// Checks that the layer can be told where to write, and that records from before the run can
/// be told apart: a log preflight did not create for this run needs a time field.
pub(super) fn check_fits_transport(
    d: &mut Diag,
    node: &Node,
    audit: &AuditLog,
    transport: &Transport,
) {
    let run_dir = matches!(&audit.source, AuditSource::Jsonl { path } if crate::template::placeholders(path).iter().any(|p| p == "run_dir"));
    match transport {
        Transport::McpStdio { command, args, env } => {
            let told = std::iter::once(command)
                .chain(args)
                .chain(env.values())
                .flat_map(|t| crate::template::placeholders(t))
                .any(|p| p == "audit_path" || p == "run_dir");
            if run_dir && !told {
                d.error(
                    at(node),
                    "audit.jsonl",
                    "the path is under `{run_dir}`, but the layer is never told it: pass `{audit_path}` in `transport.stdio.args` or `env`",
                );
            }
        }
        Transport::McpHttp { .. } | Transport::Http { .. } => {
            if run_dir {
                d.error(
                    at(node),
                    "audit.jsonl",
                    "a layer reached by URL was not started by preflight and cannot be told `{run_dir}`; give the path it writes to",
                );
            }
        }
    }
    if !run_dir && audit.fields.time.is_none() {
        d.error(
            at(node),
            "audit.fields.time",
            "missing: this log was not created for the run, so records from before it must be told apart by their time",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::profile::*;

    const HEAD: &str = "transport:\n  stdio:\n    command: python3\n    args: [\"s.py\", \"--audit\", \"{audit_path}\"]\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {db_get: {}}\n";

    #[test]
    fn a_jsonl_audit_section_loads() {
        let text = format!(
            "{HEAD}audit:\n  jsonl: \"{{run_dir}}/audit.jsonl\"\n  fields: {{time: at, tenant: t, user: u, tool: tool, decision: outcome, code: error.code, trace_id: trace}}\n  decisions: {{allow: allowed, deny: [denied, failed]}}\n  trace: {{argument: trace_id}}\n"
        );
        let p = load_str(&text, "p.yaml").unwrap();
        let a = p.audit.unwrap();
        assert_eq!(
            a.source,
            AuditSource::Jsonl {
                path: "{run_dir}/audit.jsonl".into()
            }
        );
        assert_eq!(a.fields.code.as_deref(), Some("error.code"));
        assert_eq!(a.allow, vec!["allowed"]);
        assert_eq!(a.deny, vec!["denied", "failed"]);
        assert!(a.matches_by_trace());
    }

    #[test]
    fn a_table_audit_section_loads() {
        let text = "transport: {url: \"http://x/mcp\"}\nprincipal: {headers: {X-T: \"{tenant}\"}}\ntools: {db_get: {}}\naudit:\n  table: layer_audit.events\n  fields: {time: at, tenant: tenant_id, tool: tool_name, decision: decision}\n  decisions: {allow: [allow], deny: [deny]}\n";
        let a = load_str(text, "p.yaml").unwrap().audit.unwrap();
        assert_eq!(
            a.source,
            AuditSource::Table {
                schema: "layer_audit".into(),
                table: "events".into()
            }
        );
        assert!(!a.matches_by_trace());
    }

    #[test]
    fn every_audit_problem_is_reported_at_once_with_positions() {
        let text = format!(
            "{HEAD}audit:\n  jsonl: \"{{run_dirr}}/a.jsonl\"\n  table: events\n  fields: {{tenant: t, tol: x}}\n  decisions: {{allow: [ok], deny: [ok]}}\n  trace: {{argument: tid}}\n"
        );
        let e = load_str(&text, "p.yaml").unwrap_err().to_string();
        for want in [
            "p.yaml:9:10: error: audit: give either `jsonl:` or `table:`, not both",
            "p.yaml:10:23: error: audit.fields.tol: unknown key `tol`; did you mean `tool`?",
            "audit.fields: missing: tool, decision",
            "audit.decisions: `ok` cannot mean both allowed and refused",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let text = format!(
            "{HEAD}audit:\n  jsonl: \"{{run_dirr}}/a.jsonl\"\n  fields: {{tenant: t, tool: x, decision: d}}\n  decisions: {{allow: [a], deny: [d]}}\n  trace: {{argument: tid}}\n"
        );
        let e = load_str(&text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("p.yaml:8:10: error: audit.jsonl: unknown placeholder `{run_dirr}`; did you mean `{run_dir}`?"), "{e}");
        assert!(e.contains("audit.fields.trace_id: missing"), "{e}");
    }

    #[test]
    fn the_log_must_be_reachable_and_its_run_told_apart() {
        // A URL layer cannot be told the run's folder; a stdio layer must be told the path.
        let text = "transport: {url: \"http://x/mcp\"}\nprincipal: {headers: {X-T: \"{tenant}\"}}\ntools: {db_get: {}}\naudit: {jsonl: \"{run_dir}/a.jsonl\", fields: {tenant: t, tool: x, decision: d}, decisions: {allow: a, deny: d}}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(
            e.contains("audit.jsonl: a layer reached by URL was not started by preflight"),
            "{e}"
        );
        let text = "transport: {stdio: {command: x}}\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {db_get: {}}\naudit: {jsonl: \"{run_dir}/a.jsonl\", fields: {tenant: t, tool: x, decision: d}, decisions: {allow: a, deny: d}}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("the layer is never told it"), "{e}");
        // A log not made for the run needs a time field; `{audit_path}` needs an audit log.
        let text = "transport: {stdio: {command: x, args: [\"{audit_path}\"]}}\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {db_get: {}}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("unknown placeholder `{audit_path}`"), "{e}");
        let text = "transport: {stdio: {command: x}}\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {db_get: {}}\naudit: {jsonl: /var/log/layer.jsonl, fields: {tenant: t, tool: x, decision: d}, decisions: {allow: a, deny: d}}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("audit.fields.time: missing"), "{e}");
    }
}
