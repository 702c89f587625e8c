//! Reading YAML with positions: the error type every file loader reports through
//! ([`PolicyErrors`]) and the small typed accessors the policy and case loaders walk their trees
//! with.
//!
//! The loaders do not deserialize with serde: they walk `marked_yaml` nodes themselves so that a
//! wrong type, an unknown key or a bad value anywhere in the file becomes one more collected error
//! with its line, column and key path, instead of stopping at the first.

use std::fmt;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};

use super::model::Span;

/// One problem in a file: where it is, which key, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file as the user named it.
    pub file: String,
    /// `None` when the problem has no position (the file could not be read at all).
    pub span: Option<Span>,
    /// Dotted key path, e.g. `models.customers.fields.email`; empty for the whole document.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(s) => write!(f, "{}:{}:{}: error: ", self.file, s.line, s.column)?,
            None => write!(f, "{}: error: ", self.file)?,
        }
        if self.key_path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key_path, self.message)
        }
    }
}

/// Every problem found in one file, in file order. Displays as one rustc-style line per problem:
/// `path:line:col: error: key.path: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    pub errors: Vec<PolicyError>,
}

impl PolicyErrors {
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PolicyError> {
        self.errors.iter()
    }

    /// A single positionless error (e.g. the file cannot be read).
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        Self {
            errors: vec![PolicyError {
                file: file.to_string(),
                span: None,
                key_path: String::new(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for PolicyErrors {
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

/// Collects problems while a loader walks a tree.
pub(crate) struct Diag {
    file: String,
    errors: Vec<PolicyError>,
}

impl Diag {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.clone(),
            span: Some(span),
            key_path: path.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The collected errors sorted by position (stable for equal positions), or `Ok(())`.
    pub(crate) fn finish(mut self) -> Result<(), PolicyErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors
            .sort_by_key(|e| e.span.map(|s| (s.line, s.column)).unwrap_or((0, 0)));
        self.errors.dedup();
        Err(PolicyErrors {
            errors: self.errors,
        })
    }
}

/// Parses `text` into a node tree. Duplicate keys are errors (a second `email:` silently replacing
/// the first is exactly the kind of surprise an auditor must not meet), and quoted scalars are
/// never coerced to numbers or booleans.
pub(crate) fn parse(
    text: &str,
    file: &str,
    top_level_sequence: bool,
) -> Result<Node, PolicyErrors> {
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let options = if top_level_sequence {
        options.toplevel_sequence()
    } else {
        options.toplevel_mapping()
    };
    // yaml-rust has `unreachable!()` paths for a few malformed documents (e.g. an alias to an
    // anchor that was never defined); a malformed file must be an error, never a panic.
    let parsed =
        std::panic::catch_unwind(|| marked_yaml::parse_yaml_with_options(0, text, options));
    match parsed {
        Ok(Ok(node)) => Ok(node),
        Ok(Err(e)) => Err(load_error(file, &e)),
        Err(_) => Err(PolicyErrors::whole_file(
            file,
            "the YAML parser could not read this file (anchors, aliases and tags are not supported)",
        )),
    }
}

fn load_error(file: &str, e: &marked_yaml::LoadError) -> PolicyErrors {
    use marked_yaml::LoadError as E;
    let (marker, message) = match e {
        E::TopLevelMustBeMapping(m) => (Some(*m), "the document must be a mapping of keys".into()),
        E::TopLevelMustBeSequence(m) => (Some(*m), "the document must be a list".into()),
        E::UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported: write each value out so the file reads on its own".into(),
        ),
        E::MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".into()),
        E::UnexpectedTag(m) => (Some(*m), "YAML tags (`!tag`) are not supported".into()),
        E::ScanError(m, se) => (Some(*m), format!("invalid YAML: {}", se.info())),
        E::DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first defined at line {})",
                inner.key.as_str(),
                inner
                    .prev_key
                    .span()
                    .start()
                    .map(|m| m.line())
                    .unwrap_or(0)
            ),
        ),
    };
    PolicyErrors {
        errors: vec![PolicyError {
            file: file.to_string(),
            span: marker.map(|m| Span {
                line: m.line(),
                column: m.column(),
            }),
            key_path: String::new(),
            message,
        }],
    }
}

/// The position where a node starts. For a block mapping the parser marks the first `:`, so the
/// first key is used instead: that is where the mapping visibly begins.
pub(crate) fn span(node: &Node) -> Span {
    let own = node.span().start().map(to_span).unwrap_or_default();
    if let Node::Mapping(m) = node {
        if let Some(first) = m.keys().next() {
            let key = key_span(first);
            if (key.line, key.column) < (own.line, own.column) {
                return key;
            }
        }
    }
    own
}

pub(crate) fn key_span(key: &MarkedScalarNode) -> Span {
    key.span().start().map(to_span).unwrap_or_default()
}

fn to_span(m: &marked_yaml::Marker) -> Span {
    Span {
        line: m.line(),
        column: m.column(),
    }
}

/// Joins a key path and a key.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A plain `null`, `~` or an empty value.
pub(crate) fn is_null(node: &Node) -> bool {
    match node {
        Node::Scalar(s) => {
            s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
        }
        Node::Mapping(_) | Node::Sequence(_) => false,
    }
}

/// What a node is, for "expected X, found Y" messages.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
        Node::Scalar(_) if is_null(node) => "nothing (null)".into(),
        Node::Scalar(s) => {
            let v = s.as_str();
            if v.chars().count() > 40 {
                let short: String = v.chars().take(37).collect();
                format!("`{short}...`")
            } else {
                format!("`{v}`")
            }
        }
    }
}

pub(crate) fn expect_mapping<'a>(
    d: &mut Diag,
    node: &'a Node,
    path: &str,
) -> Option<&'a MarkedMappingNode> {
    match node {
        Node::Mapping(m) => Some(m),
        Node::Scalar(_) | Node::Sequence(_) => {
            d.error(
                span(node),
                path,
                format!("expected a mapping of keys, found {}", describe(node)),
            );
            None
        }
    }
}

pub(crate) fn expect_sequence<'a>(d: &mut Diag, node: &'a Node, path: &str) -> Option<&'a [Node]> {
    match node {
        Node::Sequence(s) => Some(s.as_slice()),
        Node::Scalar(_) | Node::Mapping(_) => {
            d.error(
                span(node),
                path,
                format!("expected a list, found {}", describe(node)),
            );
            None
        }
    }
}

/// Reports every key of `map` that is not in `allowed`, with a "did you mean" when one is close.
pub(crate) fn check_keys(d: &mut Diag, map: &MarkedMappingNode, path: &str, allowed: &[&str]) {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = did_you_mean(key.as_str(), allowed.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; expected one of: {}", allowed.join(", ")));
            d.error(
                key_span(key),
                &join(path, key.as_str()),
                format!("unknown key `{}`{hint}", key.as_str()),
            );
        }
    }
}

/// The entries of a mapping with their key spans, in file order.
pub(crate) fn entries(map: &MarkedMappingNode) -> impl Iterator<Item = (&MarkedScalarNode, &Node)> {
    map.iter()
}

/// The value and key span of `key`, if present.
pub(crate) fn get<'a>(map: &'a MarkedMappingNode, key: &str) -> Option<(Span, &'a Node)> {
    map.iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(k, v)| (key_span(k), v))
}

/// A non-empty string scalar.
pub(crate) fn string(d: &mut Diag, node: &Node, path: &str) -> Option<String> {
    match node {
        Node::Scalar(s) if !is_null(node) => {
            if s.as_str().trim().is_empty() {
                d.error(span(node), path, "expected a non-empty string");
                None
            } else if s.as_str().contains('\0') {
                d.error(span(node), path, "NUL characters are not allowed");
                None
            } else {
                Some(s.as_str().to_string())
            }
        }
        Node::Scalar(_) | Node::Mapping(_) | Node::Sequence(_) => {
            d.error(
                span(node),
                path,
                format!("expected a string, found {}", describe(node)),
            );
            None
        }
    }
}

/// A plain (unquoted) integer.
pub(crate) fn integer(d: &mut Diag, node: &Node, path: &str) -> Option<i128> {
    match node {
        Node::Scalar(s) => match s.as_i128() {
            Some(v) => Some(v),
            None => {
                let quoted = !s.may_coerce() && s.as_str().trim().parse::<i128>().is_ok();
                let hint = if quoted { " (remove the quotes)" } else { "" };
                d.error(
                    span(node),
                    path,
                    format!("expected an integer, found {}{hint}", describe(node)),
                );
                None
            }
        },
        Node::Mapping(_) | Node::Sequence(_) => {
            d.error(
                span(node),
                path,
                format!("expected an integer, found {}", describe(node)),
            );
            None
        }
    }
}

/// An integer that must be at least `min` and fit the target type.
pub(crate) fn int_at_least(
    d: &mut Diag,
    node: &Node,
    path: &str,
    min: i128,
    max: i128,
) -> Option<u64> {
    let v = integer(d, node, path)?;
    if v < min {
        let what = if min == 1 {
            "a positive integer (zero and negative budgets are not allowed; use `null` for no limit where the key allows it)".to_string()
        } else {
            format!("an integer of at least {min}")
        };
        d.error(span(node), path, format!("expected {what}, found {v}"));
        return None;
    }
    if v > max {
        d.error(
            span(node),
            path,
            format!("{v} is too large (at most {max})"),
        );
        return None;
    }
    u64::try_from(v).ok()
}

/// A plain number (integer or decimal).
pub(crate) fn number(d: &mut Diag, node: &Node, path: &str) -> Option<f64> {
    match node {
        Node::Scalar(s) => match s.as_f64() {
            Some(v) if v.is_finite() => Some(v),
            Some(_) | None => {
                d.error(
                    span(node),
                    path,
                    format!("expected a number, found {}", describe(node)),
                );
                None
            }
        },
        Node::Mapping(_) | Node::Sequence(_) => {
            d.error(
                span(node),
                path,
                format!("expected a number, found {}", describe(node)),
            );
            None
        }
    }
}

pub(crate) fn boolean(d: &mut Diag, node: &Node, path: &str) -> Option<bool> {
    let found = match node {
        Node::Scalar(s) => match s.as_bool() {
            Some(b) => return Some(b),
            None => describe(node),
        },
        Node::Mapping(_) | Node::Sequence(_) => describe(node),
    };
    d.error(
        span(node),
        path,
        format!("expected true or false, found {found}"),
    );
    None
}

/// One of a fixed set of words.
pub(crate) fn one_of<T: Clone>(
    d: &mut Diag,
    node: &Node,
    path: &str,
    options: &[(&str, T)],
) -> Option<T> {
    let word = match node {
        Node::Scalar(s) if !is_null(node) => s.as_str(),
        Node::Scalar(_) | Node::Mapping(_) | Node::Sequence(_) => {
            d.error(
                span(node),
                path,
                format!(
                    "expected one of {}, found {}",
                    words(options.iter().map(|o| o.0)),
                    describe(node)
                ),
            );
            return None;
        }
    };
    if let Some((_, v)) = options.iter().find(|(w, _)| *w == word) {
        return Some(v.clone());
    }
    let hint = did_you_mean(word, options.iter().map(|o| o.0))
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    d.error(
        span(node),
        path,
        format!(
            "expected one of {}, found `{word}`{hint}",
            words(options.iter().map(|o| o.0))
        ),
    );
    None
}

/// A list of non-empty strings with their spans; duplicates are errors.
pub(crate) fn string_list(d: &mut Diag, node: &Node, path: &str) -> Vec<(String, Span)> {
    let Some(items) = expect_sequence(d, node, path) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Span)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(s) = string(d, item, &p) {
            if out.iter().any(|(o, _)| *o == s) {
                d.error(span(item), &p, format!("`{s}` is listed twice"));
            } else {
                out.push((s, span(item)));
            }
        }
    }
    out
}

/// `a, b or c` with backticks.
pub(crate) fn words<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.map(|w| format!("`{w}`")).collect();
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// The closest candidate, for "did you mean" hints: a small edit distance, or the same words in
/// another order (`birth_date` for `date_of_birth`).
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let lower = word.to_lowercase();
    let candidates: Vec<&'a str> = candidates.collect();
    let by_edits = candidates
        .iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), *c))
        .filter(|(dist, _)| *dist <= limit)
        .min_by_key(|(dist, c)| (*dist, c.len()))
        .map(|(_, c)| c);
    by_edits.or_else(|| {
        let words = |s: &str| -> std::collections::BTreeSet<String> {
            s.to_lowercase()
                .split(['_', '-', '.'])
                .filter(|w| w.len() > 2)
                .map(str::to_string)
                .collect()
        };
        let mine = words(word);
        if mine.len() < 2 {
            return None;
        }
        candidates.into_iter().find(|c| {
            let theirs = words(c);
            theirs.len() >= 2 && (mine.is_subset(&theirs) || theirs.is_subset(&mine))
        })
    })
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A duration such as `500ms`, `30s`, `30m`, `1h`, `90d`, `2w` or `7y` (a year is 365 days), in
/// seconds unless `millis`.
pub(crate) fn duration(d: &mut Diag, node: &Node, path: &str, millis: bool) -> Option<u64> {
    let text = match node {
        Node::Scalar(s) if !is_null(node) => s.as_str().trim().to_string(),
        Node::Scalar(_) | Node::Mapping(_) | Node::Sequence(_) => {
            d.error(
                span(node),
                path,
                format!(
                    "expected a duration such as `30m`, `1h` or `90d`, found {}",
                    describe(node)
                ),
            );
            return None;
        }
    };
    match parse_duration_ms(&text) {
        Some(ms) if ms > 0 => Some(if millis { ms } else { ms / 1000 }),
        Some(_) => {
            d.error(span(node), path, "a duration must be longer than zero");
            None
        }
        None => {
            d.error(
                span(node),
                path,
                format!(
                    "expected a duration: a whole number and a unit (ms, s, m, h, d, w, y), e.g. `30m` or `90d`; found `{text}`"
                ),
            );
            None
        }
    }
}

/// Milliseconds in `text`, or `None` when it is not `<digits><unit>`.
pub(crate) fn parse_duration_ms(text: &str) -> Option<u64> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    if digits_end == 0 {
        return None;
    }
    let n: u64 = text[..digits_end].parse().ok()?;
    let unit_ms: u64 = match &text[digits_end..] {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_keys() {
        let keys = ["tenant_column", "tenant_exempt", "tools", "fields"];
        assert_eq!(
            did_you_mean("tenant_colum", keys.iter().copied()),
            Some("tenant_column")
        );
        assert_eq!(did_you_mean("feilds", keys.iter().copied()), Some("fields"));
        assert_eq!(did_you_mean("zzzzzz", keys.iter().copied()), None);
        let cols = ["date_of_birth", "email"];
        assert_eq!(
            did_you_mean("birth_date", cols.iter().copied()),
            Some("date_of_birth")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("2s"), Some(2_000));
        assert_eq!(parse_duration_ms("7y"), Some(7 * 365 * 86_400_000));
        assert_eq!(parse_duration_ms("90"), None);
        assert_eq!(parse_duration_ms("m"), None);
        assert_eq!(parse_duration_ms("1.5h"), None);
        assert_eq!(parse_duration_ms("99999999999999999999y"), None);
    }

    #[test]
    fn errors_display_like_rustc() {
        let e = PolicyErrors {
            errors: vec![PolicyError {
                file: "p.yaml".into(),
                span: Some(Span { line: 3, column: 5 }),
                key_path: "models.x".into(),
                message: "boom".into(),
            }],
        };
        assert_eq!(e.to_string(), "p.yaml:3:5: error: models.x: boom");
    }

    #[test]
    fn malformed_yaml_is_an_error_not_a_panic() {
        for text in [
            "a: *nothing",
            "a: &x 1\nb: *x",
            "- [",
            "a: b: c",
            "a: !tag 1",
            "{a: 1, a: 2}",
        ] {
            assert!(parse(text, "t.yaml", false).is_err(), "{text:?} parsed");
        }
    }
}
