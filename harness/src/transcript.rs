//! Agent transcripts (LLM-5): the conversation as JSONL, kept apart from the tool audit and
//! scrubbed by its own rules ([`Scrubber`]): every registered canary, then PII and secret
//! patterns (emails, phone numbers, SSNs, card numbers, API keys, card tokens, password hashes,
//! bearer tokens and JWTs).

use std::io::Write;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde_json::{json, Value};

use crate::agent::AgentRun;
use crate::evidence::Canary;

/// Replaces canaries and PII-shaped text with placeholders.
pub struct Scrubber {
    /// Lowercased canary values, longest first.
    canaries: Vec<String>,
    patterns: Vec<(Regex, &'static str)>,
}

impl Scrubber {
    pub fn new(canaries: &[Canary]) -> Self {
        let mut values: Vec<String> = canaries
            .iter()
            .map(|c| c.value.clone())
            .filter(|v| v.len() >= 4)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let patterns: Vec<(&str, &'static str)> = vec![
            (r"\$argon2[a-z]*\$[^\s\x22]+", "[password-hash]"),
            (
                r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
                "[jwt]",
            ),
            (
                r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9_]{8,}",
                "[api-key]",
            ),
            (r"\btok_[A-Za-z0-9_]{8,}", "[card-token]"),
            (r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}", "[bearer-token]"),
            (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[email]"),
            (r"\b\d{3}-\d{2}-\d{4}\b", "[ssn]"),
            (r"\b(?:\d[ -]?){13,16}\b", "[card-number]"),
            (
                r"\+?\d{1,2}[ .-]?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b",
                "[phone]",
            ),
        ];
        Self {
            canaries: values,
            patterns: patterns
                .into_iter()
                .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
                .collect(),
        }
    }

    /// Replaces registered canaries only, no patterns: for cassettes, whose model text must stay
    /// as recorded apart from the values that must never be stored.
    pub fn canaries_only(canaries: &[Canary]) -> Self {
        let mut s = Self::new(canaries);
        s.patterns.clear();
        s
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for c in &self.canaries {
            out = replace_ci(&out, c, "[canary]");
        }
        for (re, placeholder) in &self.patterns {
            out = re.replace_all(&out, *placeholder).into_owned();
        }
        out
    }

    /// Like [`scrub`](Scrubber::scrub), but a canary becomes `[canary: ACME…]` (its first four
    /// characters), so a report can show which canary reached the model and highlight it.
    pub fn scrub_marked(&self, text: &str) -> String {
        let mut out = text.to_string();
        for c in &self.canaries {
            out = replace_ci(&out, c, &format!("[canary: {}]", crate::util::mask(c)));
        }
        for (re, placeholder) in &self.patterns {
            out = re.replace_all(&out, *placeholder).into_owned();
        }
        out
    }

    /// Scrubs every string inside a JSON value.
    pub fn scrub_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.scrub(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.scrub_value(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), self.scrub_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Case-insensitive replace of an ASCII-lowercased needle.
fn replace_ci(haystack: &str, needle: &str, with: &str) -> String {
    let lower = haystack.to_lowercase();
    let n = needle.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; fall back to exact matching then.
    if lower.len() != haystack.len() || n.is_empty() || !lower.contains(&n) {
        return haystack.replace(needle, with);
    }
    let mut out = String::with_capacity(haystack.len());
    let mut i = 0;
    while let Some(pos) = lower[i..].find(&n) {
        out.push_str(&haystack[i..i + pos]);
        out.push_str(with);
        i += pos + n.len();
    }
    out.push_str(&haystack[i..]);
    out
}

/// Writes one run's transcript as JSONL to `dir/<scenario>.<repeat>.jsonl` and returns the path.
pub fn write(
    dir: &Path,
    scenario: &str,
    repeat: u32,
    trace_id: &str,
    run: &AgentRun,
    scrubber: &Scrubber,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{scenario}.{repeat}.jsonl"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for (i, entry) in run.transcript.iter().enumerate() {
        let mut v = serde_json::to_value(entry).unwrap_or(Value::Null);
        v = scrubber.scrub_value(&v);
        let line = json!({"scenario": scenario, "repeat": repeat, "trace_id": trace_id, "seq": i, "entry": v});
        writeln!(f, "{line}")?;
    }
    let summary = json!({
        "scenario": scenario, "repeat": repeat, "trace_id": trace_id, "seq": run.transcript.len(),
        "entry": {"type": "outcome", "outcome": run.outcome, "steps": run.steps,
                  "final_answer": run.final_answer.as_deref().map(|a| scrubber.scrub(a))}
    });
    writeln!(f, "{summary}")?;
    f.flush()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(v: &str) -> Canary {
        Canary {
            value: v.into(),
            tenant: "acme".into(),
            table: "customers".into(),
            column: "notes".into(),
            row_id: 1,
            kind: "free_text".into(),
        }
    }

    #[test]
    fn scrubs_canaries_and_patterns() {
        let s = Scrubber::new(&[canary("Account ref ACME-C1-19a276")]);
        let text = "note: account REF acme-c1-19a276; mail olga.petrov.c1@acme-canary.example, \
                    ssn 911-56-7219, phone +1-555-101-5303, key sk_live_acme_customers_1_c59f3503, \
                    token tok_acme_pm1_e58c457a609275f73334, card 4111 1111 1111 1111, \
                    hash $argon2id$v=19$m=65536,t=3,p=4$YWNtZQ$abc, Bearer abcdefghijklmnop";
        let out = s.scrub(text);
        for leaked in [
            "19a276",
            "olga",
            "7219",
            "5303",
            "c59f",
            "e58c",
            "4111",
            "argon2id",
            "abcdefghijklmnop",
        ] {
            assert!(!out.contains(leaked), "{leaked} left in {out}");
        }
        assert!(out.contains("[canary]") && out.contains("[email]") && out.contains("[ssn]"));
        // Masked values and ordinary numbers survive.
        assert_eq!(
            s.scrub("m***@acme-canary.example order 12 total 99.50"),
            "m***@acme-canary.example order 12 total 99.50"
        );
    }
}
