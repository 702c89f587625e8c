//! Canary values: the registry of planted secrets ([`CanarySet`]), the scanner that finds them in
//! anything a layer returns or records, and the one masking rule reports use for them.
//!
//! Every PII, secret and free-text cell of the fixtures holds a unique canary, registered in
//! `preflight_meta.canaries` with the tenant, table, column and row it lives in. A canary showing
//! up where it should not is the hardest evidence a probe can have: the value could only have come
//! from that cell. Matching is case-insensitive (an `upper()` must not hide a leak) and attributes
//! overlapping matches to the longest canary, because ticket bodies quote the same tenant's
//! customer name, email and phone on purpose.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

/// What a canary stands for (`preflight_meta.canaries.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryKind {
    Pii,
    Secret,
    FreeText,
}

impl CanaryKind {
    pub fn parse(s: &str) -> CanaryKind {
        match s {
            "secret" => CanaryKind::Secret,
            "free_text" => CanaryKind::FreeText,
            // The registry's CHECK allows only three kinds; anything else is treated as the
            // strictest interpretation a reader would expect of an unknown sensitive value.
            _ => CanaryKind::Pii,
        }
    }
}

/// One registered canary: a unique value and the cell it lives in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Canary {
    pub value: String,
    pub tenant: String,
    pub table: String,
    pub column: String,
    pub row_id: i64,
    pub kind: CanaryKind,
}

impl Canary {
    /// `acme.customers.ssn#3`, the way evidence names a cell.
    pub fn cell(&self) -> String {
        format!(
            "{}.{}.{}#{}",
            self.tenant, self.table, self.column, self.row_id
        )
    }

    /// The value as reports may show it: first 4 characters and an ellipsis.
    pub fn masked(&self) -> String {
        mask(&self.value)
    }
}

/// The masking rule for secrets in reports: the first 4 characters, then `…`.
pub fn mask(value: &str) -> String {
    let head: String = value.chars().take(4).collect();
    format!("{head}…")
}

/// One occurrence of a canary in scanned text.
#[derive(Clone, Debug)]
pub struct Hit<'a> {
    pub canary: &'a Canary,
    /// Where it was found: a JSON path such as `$.rows[2].email`, or a label like `message`.
    pub path: String,
}

/// The canary registry with a compiled matcher.
#[derive(Debug, Default)]
pub struct CanarySet {
    canaries: Vec<Canary>,
    /// Lower-cased value → index into `canaries`.
    by_lower: HashMap<String, usize>,
    /// `(table, column, row_id)` → index, for "what is the canary of this cell".
    by_cell: HashMap<(String, String, i64), usize>,
    /// One case-insensitive alternation, longest value first, so a leftmost match is also the
    /// longest canary starting there.
    matcher: Option<regex::Regex>,
}

impl CanarySet {
    /// Builds the matcher. Fails only if the regex engine refuses the pattern size.
    pub fn new(mut canaries: Vec<Canary>) -> Result<Self, regex::Error> {
        canaries.retain(|c| !c.value.is_empty());
        canaries.sort_by(|a, b| {
            b.value
                .len()
                .cmp(&a.value.len())
                .then_with(|| a.value.cmp(&b.value))
        });
        canaries.dedup_by(|a, b| a.value == b.value);
        let mut by_lower = HashMap::new();
        let mut by_cell = HashMap::new();
        for (i, c) in canaries.iter().enumerate() {
            by_lower.entry(c.value.to_lowercase()).or_insert(i);
            by_cell.insert((c.table.clone(), c.column.clone(), c.row_id), i);
        }
        let matcher = if canaries.is_empty() {
            None
        } else {
            let alternation = canaries
                .iter()
                .map(|c| regex::escape(&c.value))
                .collect::<Vec<_>>()
                .join("|");
            Some(
                regex::RegexBuilder::new(&format!("(?i:{alternation})"))
                    .size_limit(64 << 20)
                    .dfa_size_limit(64 << 20)
                    .build()?,
            )
        };
        Ok(Self {
            canaries,
            by_lower,
            by_cell,
            matcher,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.canaries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.canaries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Canary> {
        self.canaries.iter()
    }

    /// The canary stored in one cell, if that cell holds one.
    pub fn of_cell(&self, table: &str, column: &str, row_id: i64) -> Option<&Canary> {
        self.by_cell
            .get(&(table.to_string(), column.to_string(), row_id))
            .map(|&i| &self.canaries[i])
    }

    /// Canaries of one tenant's table column, in row order.
    pub fn of_column<'a>(
        &'a self,
        tenant: &'a str,
        table: &'a str,
        column: &'a str,
    ) -> impl Iterator<Item = &'a Canary> + 'a {
        let mut v: Vec<&Canary> = self
            .canaries
            .iter()
            .filter(move |c| c.tenant == tenant && c.table == table && c.column == column)
            .collect();
        v.sort_by_key(|c| c.row_id);
        v.into_iter()
    }

    /// Every canary in `text`, leftmost-longest, non-overlapping.
    pub fn find_in<'a>(&'a self, text: &str) -> Vec<&'a Canary> {
        let Some(m) = &self.matcher else {
            return Vec::new();
        };
        m.find_iter(text)
            .filter_map(|hit| self.by_lower.get(&hit.as_str().to_lowercase()))
            .map(|&i| &self.canaries[i])
            .collect()
    }

    /// Every canary anywhere in a JSON value: string leaves, object keys (a `group_by` on a
    /// secret column puts values in keys) and the text of numbers.
    pub fn scan_json<'a>(&'a self, value: &Value, root: &str) -> Vec<Hit<'a>> {
        let mut hits = Vec::new();
        self.walk(value, root.to_string(), &mut hits);
        hits
    }

    fn walk<'a>(&'a self, value: &Value, path: String, hits: &mut Vec<Hit<'a>>) {
        match value {
            Value::String(s) => {
                for c in self.find_in(s) {
                    hits.push(Hit {
                        canary: c,
                        path: path.clone(),
                    });
                }
            }
            Value::Number(n) => {
                for c in self.find_in(&n.to_string()) {
                    hits.push(Hit {
                        canary: c,
                        path: path.clone(),
                    });
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, format!("{path}[{i}]"), hits);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    for c in self.find_in(k) {
                        hits.push(Hit {
                            canary: c,
                            path: format!("{path} (key)"),
                        });
                    }
                    self.walk(v, format!("{path}.{k}"), hits);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// `text` with every canary replaced by its masked form.
    pub fn redact(&self, text: &str) -> String {
        let Some(m) = &self.matcher else {
            return text.to_string();
        };
        m.replace_all(text, |caps: &regex::Captures<'_>| mask(&caps[0]))
            .into_owned()
    }

    /// `value` with every canary in strings and keys masked.
    pub fn redact_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            Value::Number(_) | Value::Null | Value::Bool(_) => value.clone(),
        }
    }

    /// The values present anywhere in `value` that are canaries (for "which canaries did the
    /// probe itself send": an echo of the agent's own input is not a leak).
    pub fn sent_in(&self, value: &Value) -> BTreeSet<String> {
        self.scan_json(value, "$")
            .into_iter()
            .map(|h| h.canary.value.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(value: &str, tenant: &str, table: &str, column: &str, row: i64) -> Canary {
        Canary {
            value: value.into(),
            tenant: tenant.into(),
            table: table.into(),
            column: column.into(),
            row_id: row,
            kind: CanaryKind::Pii,
        }
    }

    fn set() -> CanarySet {
        CanarySet::new(vec![
            c(
                "olga.petrov.c1@acme-canary.example",
                "acme",
                "customers",
                "email",
                1,
            ),
            c("Olga Petrov", "acme", "customers", "name", 1),
            c(
                "Dear support, Olga Petrov (olga.petrov.c1@acme-canary.example) asks. Ref ACME-T1",
                "acme",
                "support_tickets",
                "body",
                1,
            ),
            c("911-56-7219", "acme", "customers", "ssn", 1),
            c("921-11-0000", "globex", "customers", "ssn", 9),
        ])
        .unwrap()
    }

    #[test]
    fn longest_match_wins_and_case_is_ignored() {
        let s = set();
        let hits = s.find_in(
            "x Dear support, OLGA PETROV (olga.petrov.c1@acme-canary.example) asks. Ref ACME-T1 y",
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].column, "body");
        let hits = s.find_in("name=olga petrov, ssn 921-11-0000");
        let cells: Vec<_> = hits.iter().map(|c| c.cell()).collect();
        assert_eq!(cells, ["acme.customers.name#1", "globex.customers.ssn#9"]);
    }

    #[test]
    fn scans_keys_numbers_and_nested_values() {
        let s = set();
        let v = serde_json::json!({"rows": [{"id": 1, "ssn": "911-56-7219"}], "911-56-7219": 2});
        let hits = s.scan_json(&v, "$");
        let paths: Vec<_> = hits.iter().map(|h| h.path.as_str()).collect();
        assert!(paths.contains(&"$.rows[0].ssn"), "{paths:?}");
        assert!(paths.contains(&"$ (key)"), "{paths:?}");
    }

    #[test]
    fn redaction_masks_to_four_chars() {
        let s = set();
        assert_eq!(s.redact("ssn: 911-56-7219."), "ssn: 911-….");
        assert_eq!(mask("ab"), "ab…");
        let v = s.redact_json(&serde_json::json!({"a": ["921-11-0000"]}));
        assert_eq!(v, serde_json::json!({"a": ["921-…"]}));
    }

    #[test]
    fn empty_set_finds_nothing() {
        let s = CanarySet::new(Vec::new()).unwrap();
        assert!(s.find_in("anything").is_empty());
        assert_eq!(s.redact("x"), "x");
    }
}
