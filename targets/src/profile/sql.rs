//! The profile's `sql:` section ([`SqlTool`]): the one tool of a layer that takes SQL text
//! (`execute_sql`, `run_query`), which argument carries the text, where the rows are in its
//! result, how a refusal inside a successful result looks, and the budgets the layer declares.
//! The `sql` probe family runs only on a target whose profile has this section.

use std::time::Duration;

use marked_yaml::Node;
use regex::Regex;

use super::nodes::*;

/// How a layer offers SQL to the agent.
#[derive(Clone, Debug)]
pub struct SqlTool {
    /// The layer's tool name (`execute_sql`).
    pub tool: String,
    /// The argument that carries the SQL text (`sql`, `query`).
    pub argument: String,
    /// Dotted path of the row objects in a successful result (`rows`, `result.rows`); empty:
    /// the result itself is the list of rows.
    pub rows: String,
    /// A successful result with a non-null value at this dotted path is a refusal
    /// (`{"error": "only SELECT is allowed"}`).
    pub refusal_path: Option<String>,
    /// A successful result whose text matches one of these is a refusal.
    pub refusal_patterns: Vec<Regex>,
    /// The most rows the layer says one call returns (BUD-3); `None`: it declares none.
    pub max_rows: Option<u64>,
    /// How long the layer says a statement may run (BUD-2); `None`: it declares none.
    pub statement_timeout: Option<Duration>,
}

const KEYS: &[&str] = &[
    "tool",
    "argument",
    "rows",
    "refusal",
    "max_rows",
    "statement_timeout",
];

pub(super) fn sql(d: &mut Diag, node: &Node) -> Option<SqlTool> {
    let m = mapping(d, node, "sql")?;
    check_keys(d, m, "sql", KEYS);
    let tool = match get(m, "tool") {
        Some(n) => string(d, n, "sql.tool"),
        None => {
            d.error(
                at(node),
                "sql.tool",
                "missing: the layer's name of the tool that takes SQL text (e.g. `execute_sql`)",
            );
            None
        }
    };
    let argument = match get(m, "argument") {
        Some(n) => string(d, n, "sql.argument"),
        None => {
            d.error(
                at(node),
                "sql.argument",
                "missing: the argument that carries the SQL text (e.g. `sql`)",
            );
            None
        }
    };
    let rows = match get(m, "rows") {
        Some(n) => string(d, n, "sql.rows"),
        None => {
            d.error(
                at(node),
                "sql.rows",
                "missing: the dotted path of the rows in a successful result (e.g. `rows`; `.` when the result is the list itself)",
            );
            None
        }
    }
    .map(|r| if r == "." { String::new() } else { r });
    let mut refusal_path = None;
    let mut refusal_patterns = Vec::new();
    if let Some(n) = get(m, "refusal") {
        if let Some(rm) = mapping(d, n, "sql.refusal") {
            check_keys(d, rm, "sql.refusal", &["path", "patterns"]);
            refusal_path = get(rm, "path").and_then(|v| string(d, v, "sql.refusal.path"));
            if let Some(p) = get(rm, "patterns") {
                for (i, s) in string_list(d, p, "sql.refusal.patterns")
                    .into_iter()
                    .enumerate()
                {
                    match Regex::new(&s) {
                        Ok(re) => refusal_patterns.push(re),
                        Err(e) => d.error(
                            at(p),
                            &format!("sql.refusal.patterns[{i}]"),
                            format!("invalid regex: {e}"),
                        ),
                    }
                }
            }
        }
    }
    let max_rows = get(m, "max_rows").and_then(|n| {
        let s = string(d, n, "sql.max_rows")?;
        match s.parse::<u64>() {
            Ok(v) if v > 0 => Some(v),
            _ => {
                d.error(
                    at(n),
                    "sql.max_rows",
                    format!("expected a positive whole number of rows, found `{s}`"),
                );
                None
            }
        }
    });
    let statement_timeout =
        get(m, "statement_timeout").and_then(|n| duration(d, n, "sql.statement_timeout"));
    Some(SqlTool {
        tool: tool?,
        argument: argument?,
        rows: rows?,
        refusal_path,
        refusal_patterns,
        max_rows,
        statement_timeout,
    })
}

#[cfg(test)]
mod tests {
    use crate::profile::load_str;

    const HEAD: &str =
        "transport: {stdio: {command: python3}}\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {}\n";

    #[test]
    fn a_sql_section_loads() {
        let text = format!(
            "{HEAD}sql:\n  tool: execute_sql\n  argument: sql\n  rows: result.rows\n  refusal: {{path: error, patterns: [\"(?i)only select\"]}}\n  max_rows: 100\n  statement_timeout: 2s\n"
        );
        let p = load_str(&text, "p.yaml").unwrap();
        let s = p.sql.expect("sql section");
        assert_eq!(s.tool, "execute_sql");
        assert_eq!(s.argument, "sql");
        assert_eq!(s.rows, "result.rows");
        assert_eq!(s.refusal_path.as_deref(), Some("error"));
        assert!(s.refusal_patterns[0].is_match("Only SELECT statements"));
        assert_eq!(s.max_rows, Some(100));
        assert_eq!(s.statement_timeout, Some(std::time::Duration::from_secs(2)));
        let p = load_str(HEAD, "p.yaml").unwrap();
        assert!(p.sql.is_none());
    }

    #[test]
    fn a_bad_sql_section_names_every_problem_with_its_line() {
        let text = format!(
            "{HEAD}sql:\n  tool: execute_sql\n  rowz: rows\n  max_rows: -3\n  refusal: {{patterns: [\"(\"]}}\n"
        );
        let e = load_str(&text, "p.yaml").unwrap_err().to_string();
        for want in [
            "p.yaml:6:3: error: sql.rowz: unknown key `rowz`; did you mean `rows`?",
            "sql.argument: missing",
            "sql.rows: missing",
            "p.yaml:7:13: error: sql.max_rows: expected a positive whole number of rows, found `-3`",
            "sql.refusal.patterns[0]: invalid regex",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}
