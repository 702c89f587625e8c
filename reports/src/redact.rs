//! The last line of defence against secrets in reports. Probes already redact what they record;
//! [`scrub`] runs over every string a renderer emits anyway, so a password in a connection string
//! or a bearer token that slipped into an error message never reaches a PR comment or an
//! artifact store. [`scrub_report`] applies it to every string field of a [`Report`].
//!
//! Masking follows the project rule: passwords become `****`; tokens keep their first four
//! characters followed by `…`, enough to tell which credential leaked without repeating it.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};

use crate::model::{Evidence, Finding, Location, Report, RunEnvironment, ToolCallRecord};

/// What a password is replaced with.
pub const PASSWORD_MASK: &str = "****";

struct Rule {
    re: Regex,
    mask: fn(&Captures) -> String,
}

fn first4(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    format!("{head}…")
}

// Values after a secret-named key that are policy vocabulary rather than secrets: a lint finding
// saying `password: deny` must stay readable.
const KEY_VALUE_EXEMPT: [&str; 12] = [
    "allow", "deny", "mask", "hash", "true", "false", "null", "none", "required", "denied",
    "masked", "redacted",
];

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |re: &str, mask: fn(&Captures) -> String| Rule {
        // The patterns are literals checked by the tests below.
        re: Regex::new(re).expect("redaction pattern compiles"),
        mask,
    };
    vec![
        // PEM private keys, whole.
        rule(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
            |c| {
                format!(
                    "-----BEGIN {}PRIVATE KEY----- {PASSWORD_MASK} -----END {}PRIVATE KEY-----",
                    &c[1], &c[1]
                )
            },
        ),
        // scheme://user:password@host — any scheme (postgres, postgresql, redis, amqp, https…).
        rule(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*):([^\s@/]+)@", |c| {
            format!("{}:{PASSWORD_MASK}@", &c[1])
        }),
        // Authorization headers and bearer tokens.
        rule(r"(?i)\b(bearer)(\s+)([A-Za-z0-9\-._~+/]{8,}=*)", |c| {
            format!("{}{}{}", &c[1], &c[2], first4(&c[3]))
        }),
        rule(
            r"(?i)(authorization\s*[:=]\s*basic\s+)([A-Za-z0-9+/]{8,}=*)",
            |c| format!("{}{PASSWORD_MASK}", &c[1]),
        ),
        // Tokens recognisable by their prefix: OpenAI, GitHub, GitLab, Slack, AWS, Google,
        // Stripe; and JSON Web Tokens.
        rule(
            concat!(
                r"\b(sk-(?:proj-|live-|test-|ant-)?[A-Za-z0-9_\-]{16,}",
                r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}",
                r"|glpat-[A-Za-z0-9_\-]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}",
                r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}",
                r"|[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",
                r"|eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,})",
            ),
            |c| first4(&c[1]),
        ),
        // key=value / key: value / "key": "value" where the key names a secret (libpq keyword
        // strings, environment dumps, JSON bodies). The key must end right before the separator,
        // so `password_hash` and `passwords` are untouched.
        rule(
            concat!(
                r#"(?i)(\b(?:password|passwd|pgpassword|secret|client_secret|api[_-]?key"#,
                r#"|access[_-]?token|auth[_-]?token|refresh[_-]?token|private[_-]?key)"#,
                r#""?\s*[=:]\s*"?)([^\s"',;&}\]]+)"#,
            ),
            |c| {
                let value = &c[2];
                if value == PASSWORD_MASK
                    || value.ends_with('…')
                    || KEY_VALUE_EXEMPT
                        .iter()
                        .any(|e| value.eq_ignore_ascii_case(e))
                {
                    c[0].to_string()
                } else {
                    format!("{}{PASSWORD_MASK}", &c[1])
                }
            },
        ),
    ]
});

/// All patterns in one automaton: nearly every string in a report holds no secret, and one pass
/// that says so is far cheaper than trying each rule in turn.
static ANY: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(RULES.iter().map(|r| r.re.as_str())).expect("redaction patterns compile as a set")
});

/// Masks connection-string passwords, bearer tokens, API keys and private keys in `text`.
/// Idempotent: scrubbing scrubbed text changes nothing.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    let hits = ANY.matches(text);
    if !hits.matched_any() {
        return out;
    }
    for (i, rule) in RULES.iter().enumerate() {
        // A rule can only match text that an earlier rule rewrote if the set saw it too:
        // replacements only shorten secrets to masks, which no pattern matches.
        if !hits.matched(i) {
            continue;
        }
        if let Cow::Owned(s) = rule.re.replace_all(&out, |c: &Captures| (rule.mask)(c)) {
            out = Cow::Owned(s);
        }
    }
    out
}

fn s(text: &mut String) {
    if let Cow::Owned(v) = scrub(text) {
        *text = v;
    }
}

/// Scrubs every string inside a JSON value, keys included.
pub fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => s(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(map) => {
            let entries: Vec<(String, serde_json::Value)> =
                std::mem::take(map).into_iter().collect();
            for (mut k, mut v) in entries {
                s(&mut k);
                scrub_json(&mut v);
                map.insert(k, v);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

/// A report whose every string has been through [`scrub`]. Renderers write only from this type,
/// so none can forget the scrubbing; [`crate::write_all`] scrubs once for every file.
#[derive(Clone, Debug)]
pub struct Scrubbed(Report);

impl Scrubbed {
    pub fn new(report: &Report) -> Scrubbed {
        Scrubbed(scrub_report(report))
    }
}

impl std::ops::Deref for Scrubbed {
    type Target = Report;

    fn deref(&self) -> &Report {
        &self.0
    }
}

/// A copy of `report` with [`scrub`] applied to every string field.
pub fn scrub_report(report: &Report) -> Report {
    let mut r = report.clone();
    scrub_environment(&mut r.environment);
    r.findings.iter_mut().for_each(scrub_finding);
    for n in &mut r.notes {
        n.note = scrub(&n.note).into_owned();
    }
    for a in &mut r.attempts {
        for t in &mut a.turns {
            s(&mut t.text);
            s(&mut t.label);
        }
        for c in &mut a.checks {
            s(&mut c.summary);
            c.evidence.iter_mut().for_each(s);
        }
    }
    r
}

pub fn scrub_environment(e: &mut RunEnvironment) {
    let RunEnvironment {
        preflight_version,
        policy_path,
        policy_hash,
        fixtures_hash,
        database_backend,
        backend_reason,
        server_version,
        target,
        started_at,
        not_applicable,
    } = e;
    not_applicable.iter_mut().for_each(s);
    for f in [
        preflight_version,
        policy_path,
        policy_hash,
        fixtures_hash,
        database_backend,
        backend_reason,
        server_version,
        target,
        started_at,
    ] {
        s(f);
    }
}

/// Scrubs one finding in place (the JSONL writer streams findings one at a time).
pub fn scrub_finding(f: &mut Finding) {
    // Destructured so a new field cannot be added without deciding how it is scrubbed.
    let Finding {
        code,
        family,
        title,
        checklist,
        severity: _,
        verdict: _,
        message,
        call,
        response_excerpt,
        evidence,
        location,
        fingerprint,
        duration: _,
    } = f;
    for t in [code, family, title, message, fingerprint] {
        s(t);
    }
    checklist.iter_mut().for_each(s);
    if let Some(ToolCallRecord {
        tool,
        tenant,
        user,
        arguments,
        trace_id,
    }) = call
    {
        for t in [tool, tenant, user, trace_id] {
            s(t);
        }
        scrub_json(arguments);
    }
    if let Some(r) = response_excerpt {
        s(r);
    }
    let Evidence {
        summary,
        rows,
        audit_records,
        sql,
        facts,
        leaks,
    } = evidence;
    s(summary);
    rows.iter_mut()
        .chain(audit_records.iter_mut())
        .for_each(scrub_json);
    sql.iter_mut()
        .chain(facts.iter_mut())
        .chain(leaks.iter_mut())
        .for_each(s);
    if let Some(Location { path, .. }) = location {
        s(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let out = scrub(input);
        assert_eq!(out, expected, "input: {input}");
        assert_eq!(scrub(&out), out, "not idempotent for {input}");
    }

    #[test]
    fn connection_strings_lose_their_passwords() {
        check(
            "connect postgres://agent:s3cr3t!@db.internal:5432/shop failed",
            "connect postgres://agent:****@db.internal:5432/shop failed",
        );
        check("postgresql://u:p%40ss@h/db", "postgresql://u:****@h/db");
        check("redis://:hunter2@cache:6379", "redis://:****@cache:6379");
        check(
            "host=db user=agent password=hunter2 dbname=shop",
            "host=db user=agent password=**** dbname=shop",
        );
        check("PGPASSWORD=hunter2 psql", "PGPASSWORD=**** psql");
        // No password: nothing to hide.
        check("postgres://agent@db/shop", "postgres://agent@db/shop");
        check(
            "https://example.invalid:8443/path",
            "https://example.invalid:8443/path",
        );
    }

    #[test]
    fn tokens_keep_only_a_prefix() {
        check(
            "Authorization: Bearer abcdef0123456789xyz",
            "Authorization: Bearer abcd…",
        );
        check(
            "Authorization: Basic dXNlcjpwYXNzd29yZA==",
            "Authorization: Basic ****",
        );
        check(
            "key sk-proj-AAAAAAAAAAAAAAAAAAAAAAAA used",
            "key sk-p… used",
        );
        check("ghp_0123456789abcdefghijABCDEFGHIJ", "ghp_…");
        check("AKIAIOSFODNN7EXAMPLE", "AKIA…");
        check(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "eyJh…",
        );
        check(r#"{"api_key": "abc123def"}"#, r#"{"api_key": "****"}"#);
        check("client_secret=xyz&grant=1", "client_secret=****&grant=1");
        check(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY----- **** -----END RSA PRIVATE KEY-----",
        );
    }

    #[test]
    fn ordinary_report_text_is_untouched() {
        for text in [
            "field customers.password_hash: deny",
            "pattern *password*: deny",
            "password: mask",
            "tokens are checked per tenant",
            "policy hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "fingerprint 0123456789abcdef",
            "canary leaked: ACME…",
            "Bearer token missing",
            "db_get on customers with a globex id",
        ] {
            check(text, text);
        }
    }

    #[test]
    fn json_values_are_scrubbed_keys_and_all() {
        let mut v = serde_json::json!({
            "dsn": "postgres://a:b@c/d",
            "nested": [{"Authorization": "Bearer zzzzzzzzzzzzzzzz"}],
            "password=hunter2": 1,
            "n": 3
        });
        scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "dsn": "postgres://a:****@c/d",
                "nested": [{"Authorization": "Bearer zzzz…"}],
                "password=****": 1,
                "n": 3
            })
        );
    }
}
