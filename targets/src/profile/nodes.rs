//! Walking `marked_yaml` nodes while collecting every problem ([`Diag`]): typed reads that
//! report a wrong type at its line and column, unknown keys with a "did you mean", and template
//! placeholders checked against what a field may use. Shared by the profile's sections.

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::Node;

use super::load::{ProfileError, ProfileErrors};

pub(super) struct Diag {
    pub(super) file: String,
    pub(super) errors: Vec<ProfileError>,
}

impl Diag {
    pub(super) fn error(
        &mut self,
        node_at: (usize, usize),
        path: &str,
        message: impl Into<String>,
    ) {
        self.errors.push(ProfileError {
            file: self.file.clone(),
            at: Some(node_at),
            key_path: path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn finish(mut self) -> Result<(), ProfileErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| e.at.unwrap_or((0, 0)));
        self.errors.dedup();
        Err(ProfileErrors {
            errors: self.errors,
        })
    }
}

pub(super) fn at(node: &Node) -> (usize, usize) {
    if let Node::Mapping(m) = node {
        if let Some(k) = m.keys().next() {
            return key_at(k);
        }
    }
    node.span()
        .start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

pub(super) fn key_at(k: &MarkedScalarNode) -> (usize, usize) {
    k.span()
        .start()
        .map(|m| (m.line(), m.column()))
        .unwrap_or((0, 0))
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn describe(node: &Node) -> String {
    match node {
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
        Node::Scalar(s) => format!("`{}`", s.as_str()),
    }
}

pub(super) fn mapping<'a>(
    d: &mut Diag,
    node: &'a Node,
    path: &str,
) -> Option<&'a MarkedMappingNode> {
    match node {
        Node::Mapping(m) => Some(m),
        Node::Scalar(_) | Node::Sequence(_) => {
            d.error(
                at(node),
                path,
                format!("expected a mapping of keys, found {}", describe(node)),
            );
            None
        }
    }
}

pub(super) fn string(d: &mut Diag, node: &Node, path: &str) -> Option<String> {
    match node {
        Node::Scalar(s) if !s.as_str().trim().is_empty() => Some(s.as_str().to_string()),
        Node::Scalar(_) | Node::Mapping(_) | Node::Sequence(_) => {
            d.error(
                at(node),
                path,
                format!("expected a non-empty string, found {}", describe(node)),
            );
            None
        }
    }
}

pub(super) fn string_list(d: &mut Diag, node: &Node, path: &str) -> Vec<String> {
    match node {
        Node::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| string(d, n, &format!("{path}[{i}]")))
            .collect(),
        Node::Scalar(_) | Node::Mapping(_) => {
            d.error(
                at(node),
                path,
                format!("expected a list of strings, found {}", describe(node)),
            );
            Vec::new()
        }
    }
}

pub(super) fn string_map(d: &mut Diag, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = mapping(d, node, path) {
        for (k, v) in m.iter() {
            if let Some(s) = string(d, v, &join(path, k.as_str())) {
                out.insert(k.as_str().to_string(), s);
            }
        }
    }
    out
}

/// Reports keys of `map` outside `allowed`, with a "did you mean".
pub(super) fn check_keys(d: &mut Diag, map: &MarkedMappingNode, path: &str, allowed: &[&str]) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = did_you_mean(key.as_str(), allowed)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; expected one of: {}", allowed.join(", ")));
            d.error(
                key_at(key),
                &join(path, key.as_str()),
                format!("unknown key `{}`{hint}", key.as_str()),
            );
        }
    }
}

pub(super) fn get<'a>(map: &'a MarkedMappingNode, key: &str) -> Option<&'a Node> {
    map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

/// The closest candidate within a third of the word's length in edits.
pub(super) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (levenshtein(&word.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(dist, _)| *dist <= limit)
        .min_by_key(|(dist, c)| (*dist, c.len()))
        .map(|(_, c)| c)
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks that every `{placeholder}` in `template` is one of `allowed`.
pub(super) fn check_template(
    d: &mut Diag,
    node: &Node,
    path: &str,
    template: &str,
    allowed: &[&str],
) {
    for name in crate::template::placeholders(template) {
        if !allowed.contains(&name.as_str()) {
            let hint = did_you_mean(&name, allowed)
                .map(|s| format!("; did you mean `{{{s}}}`?"))
                .unwrap_or_default();
            d.error(
                at(node),
                path,
                format!(
                    "unknown placeholder `{{{name}}}`{hint}; expected one of: {}",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
}

pub(super) fn duration(d: &mut Diag, node: &Node, path: &str) -> Option<Duration> {
    let s = string(d, node, path)?;
    let parsed = if let Some(ms) = s.strip_suffix("ms") {
        ms.trim().parse::<u64>().ok().map(Duration::from_millis)
    } else if let Some(secs) = s.strip_suffix('s') {
        secs.trim().parse::<u64>().ok().map(Duration::from_secs)
    } else if let Some(mins) = s.strip_suffix('m') {
        mins.trim()
            .parse::<u64>()
            .ok()
            .map(|m| Duration::from_secs(m * 60))
    } else {
        None
    };
    match parsed {
        Some(d) if !d.is_zero() => Some(d),
        Some(_) | None => {
            d.error(
                at(node),
                path,
                format!("expected a positive duration such as `500ms`, `30s` or `2m`, found `{s}`"),
            );
            None
        }
    }
}
