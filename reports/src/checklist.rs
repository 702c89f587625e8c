//! The production checklist (`checklist.yaml`) as data: sections of items with stable IDs, the
//! text an auditor reads, and how each item can be verified. [`Checklist`] is what `checklist.md`
//! and the SARIF rule help are rendered from.
//!
//! The file is a mapping of section name to a mapping of item ID to `{item, verify}`; the order
//! of sections and items is the order an auditor reads, so it is kept as written.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The copy of the checklist this crate ships; the runner may pass a different one.
const EMBEDDED: &str = include_str!("../checklist.yaml");

/// How an item can be verified. `attest` alone means no machine can check it.
pub const VERIFY_KINDS: [&str; 6] = ["probe", "lint", "inspect", "harness", "review", "attest"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checklist {
    pub sections: Vec<Section>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Stable ID, e.g. `ISO-3`; findings cite it.
    pub id: String,
    pub text: String,
    /// A subset of [`VERIFY_KINDS`], never empty.
    pub verify: Vec<String>,
}

impl Item {
    /// True when only a person can sign this item off.
    pub fn attest_only(&self) -> bool {
        self.verify.iter().all(|v| v == "attest")
    }

    /// True when the item asks for a person's sign-off (alone or beside machine checks).
    pub fn needs_attestation(&self) -> bool {
        self.verify.iter().any(|v| v == "attest")
    }
}

/// A checklist file that could not be used, with the position serde_yaml reported.
#[derive(Debug, thiserror::Error)]
#[error("checklist {origin}{}: {message}", position(*.line, *.column))]
pub struct ChecklistError {
    /// Where the text came from (a path, or `(embedded)`).
    pub origin: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    #[source]
    pub source: serde_yaml::Error,
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l} column {c}"),
        (Some(l), None) => format!(" line {l}"),
        (None, _) => String::new(),
    }
}

impl Checklist {
    /// Parses checklist YAML; every structural problem names its line and column.
    pub fn parse(yaml: &str) -> Result<Checklist, ChecklistError> {
        Self::parse_named(yaml, "(input)")
    }

    /// Like [`Checklist::parse`], naming `origin` (usually the file path) in errors.
    pub fn parse_named(yaml: &str, origin: &str) -> Result<Checklist, ChecklistError> {
        serde_yaml::from_str::<Checklist>(yaml).map_err(|source| {
            let loc = source.location();
            // serde_yaml appends " at line L column C" to its messages; the position is
            // reported separately, so strip it to avoid saying it twice.
            let full = source.to_string();
            let message = match full.rfind(" at line ") {
                Some(i) if loc.is_some() => full[..i].to_string(),
                _ => full,
            };
            ChecklistError {
                origin: origin.to_string(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message,
                source,
            }
        })
    }

    /// The checklist shipped with preflight (a copy of `shared/checklist.yaml`).
    pub fn embedded() -> Checklist {
        // The embedded copy is tested to parse (see `embedded_parses`), so a failure here is a
        // build defect, not bad input.
        Self::parse_named(EMBEDDED, "(embedded)").expect("the embedded checklist.yaml is valid")
    }

    pub fn items(&self) -> impl Iterator<Item = (&Section, &Item)> {
        self.sections
            .iter()
            .flat_map(|s| s.items.iter().map(move |i| (s, i)))
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items().map(|(_, i)| i).find(|i| i.id == id)
    }

    pub fn len(&self) -> usize {
        self.sections.iter().map(|s| s.items.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn valid_id(id: &str) -> bool {
    let Some((prefix, number)) = id.split_once('-') else {
        return false;
    };
    (2..=5).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_uppercase())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

impl<'de> Deserialize<'de> for Checklist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Checklist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of section name to a mapping of checklist items")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checklist, A::Error> {
                let mut sections: Vec<Section> = Vec::new();
                let mut seen: HashMap<String, String> = HashMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if sections.iter().any(|s| s.name == name) {
                        return Err(de::Error::custom(format!("duplicate section `{name}`")));
                    }
                    let items = map.next_value_seed(SectionSeed {
                        section: &name,
                        seen: &mut seen,
                    })?;
                    if items.is_empty() {
                        return Err(de::Error::custom(format!("section `{name}` has no items")));
                    }
                    sections.push(Section { name, items });
                }
                if sections.is_empty() {
                    return Err(de::Error::custom("the checklist has no sections"));
                }
                Ok(Checklist { sections })
            }
        }
        d.deserialize_map(Top)
    }
}

/// Reads one section's items in file order, rejecting an ID already seen in any section (the
/// seed carries the IDs so the error points at the duplicate itself).
struct SectionSeed<'s> {
    section: &'s str,
    /// Item ID to the section that defined it first.
    seen: &'s mut HashMap<String, String>,
}

impl<'de> DeserializeSeed<'de> for SectionSeed<'_> {
    type Value = Vec<Item>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Item>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SectionSeed<'_> {
    type Value = Vec<Item>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of item id (like `ISO-3`) to {item, verify}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Item>, A::Error> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(id) = map.next_key::<String>()? {
            if !valid_id(&id) {
                return Err(de::Error::custom(format!(
                    "invalid checklist id `{id}`: expected 2-5 capital letters, `-`, a number (like `ISO-3`)"
                )));
            }
            if let Some(first) = self.seen.get(&id) {
                return Err(de::Error::custom(format!(
                    "duplicate checklist id `{id}` (first defined in section `{first}`)"
                )));
            }
            self.seen.insert(id.clone(), self.section.to_string());
            let raw: RawItem = map.next_value()?;
            if raw.item.trim().is_empty() {
                return Err(de::Error::custom(format!("item `{id}` has empty text")));
            }
            if raw.verify.is_empty() {
                return Err(de::Error::custom(format!(
                    "item `{id}` has an empty `verify` list: expected one or more of {}",
                    VERIFY_KINDS.join(", ")
                )));
            }
            if let Some(bad) = raw
                .verify
                .iter()
                .find(|v| !VERIFY_KINDS.contains(&v.as_str()))
            {
                return Err(de::Error::custom(format!(
                    "item `{id}`: unknown verify kind `{bad}`: expected one of {}",
                    VERIFY_KINDS.join(", ")
                )));
            }
            items.push(Item {
                id,
                text: raw.item,
                verify: raw.verify,
            });
        }
        Ok(items)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    item: String,
    verify: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_parses_in_file_order() {
        let c = Checklist::embedded();
        let names: Vec<&str> = c.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "identity",
                "reads",
                "writes",
                "budgets",
                "audit",
                "operations",
                "llm",
                "compliance",
                "prelaunch",
                "quarterly"
            ]
        );
        assert_eq!(c.sections[0].items[2].id, "ISO-3");
        assert!(c.item("PRE-6").is_some());
        let ops2 = c.item("OPS-2").unwrap();
        assert!(ops2.attest_only());
        let ops8 = c.item("OPS-8").unwrap();
        assert!(!ops8.attest_only() && ops8.needs_attestation());
        assert_eq!(
            c.item("BUD-2").unwrap().verify,
            ["lint", "inspect", "probe"]
        );
        assert_eq!(c.len(), 62);
    }

    #[test]
    fn embedded_copy_matches_shared_when_present() {
        // The project embeds a copy; when the shared original is beside the checkout (as on
        // developer machines and in CI), the two must agree so reports never cite stale text.
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let shared = manifest
            .ancestors()
            .map(|dir| dir.join("shared/checklist.yaml"))
            .find(|p| p.is_file());
        if let Some(path) = shared {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                Checklist::parse(&text).unwrap(),
                Checklist::embedded(),
                "reports/checklist.yaml differs from {}: copy it again",
                path.display()
            );
        }
    }

    fn err(yaml: &str) -> ChecklistError {
        Checklist::parse(yaml).expect_err("must be rejected")
    }

    #[test]
    fn errors_name_line_column_and_problem() {
        let e = err("identity:\n  ISO-1: {item: \"x\", verify: [probe, guess]}\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("unknown verify kind `guess`"), "{e}");
        assert!(
            e.to_string().starts_with("checklist (input) line 2 column"),
            "{e}"
        );

        let e = err("identity:\n  ISO-1: {item: \"x\", verify: [probe], extra: 1}\n");
        assert!(e.message.contains("unknown field `extra`"), "{e}");
        assert_eq!(e.line, Some(2));

        let e = err("identity:\n  ISO-1: {verify: [probe]}\n");
        assert!(e.message.contains("missing field `item`"), "{e}");

        let e = err("identity:\n  iso_1: {item: x, verify: [probe]}\n");
        assert!(e.message.contains("invalid checklist id `iso_1`"), "{e}");

        let e = err(
            "a:\n  ISO-1: {item: x, verify: [probe]}\nb:\n  ISO-1: {item: y, verify: [lint]}\n",
        );
        assert!(e.message.contains("duplicate checklist id `ISO-1`"), "{e}");
        assert!(e.line.unwrap_or(0) >= 3, "{e}");

        let e = err("a:\n  ISO-1: {item: x, verify: []}\n");
        assert!(e.message.contains("empty `verify`"), "{e}");

        let e = err("- a\n- b\n");
        assert!(e.message.contains("a mapping of section name"), "{e}");

        let e = err("a: {}\n");
        assert!(e.message.contains("no items"), "{e}");

        let e = err("a:\n  ISO-1: {item: x, verify: [probe]\n");
        assert!(e.line.is_some(), "{e}");
    }
}
