//! The escape corpus (`probes/corpus/sql-escapes.yaml`, embedded): the SQL that gets past
//! read-only guards in the wild, each entry in several spellings, with what it tries, the
//! checklist items it breaks and the effect ground truth looks for.

use serde::Deserialize;

const EMBEDDED: &str = include_str!("../../../corpus/sql-escapes.yaml");

/// What an entry goes after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Writes: DML, DDL, writing CTEs, SELECT INTO, writes hidden in functions.
    Write,
    /// Transaction and session control: COMMIT, SET ROLE, SET TRANSACTION READ WRITE, DO, ...
    Session,
    /// The server's files and processes.
    Server,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Write, Kind::Session, Kind::Server];
}

/// What ground truth looks at besides the fingerprint (which every attempt is judged by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Only the fingerprint: a change to any table, catalog entry, sequence, large object,
    /// lock, setting or the sentinel backend.
    Fingerprint,
    /// The response holds content ground truth knows is in a server file (the planted canary
    /// file, `PG_VERSION`) or a listing of the data directory.
    File,
    /// The call was answered rather than refused: a function or command only a privileged role
    /// may run ran. The one effect the reply decides, since what such a call does leaves no
    /// trace in the database (`pg_stat_file`, `COPY ... TO PROGRAM`).
    Answered,
    /// The response shows the SQL running as another role than the layer's login
    /// (`current_user` or `session_user` differs from the login's `session_user`).
    Role,
}

/// One entry of the corpus.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Stable id (`write.cte_delete`), shown in the finding's title.
    pub id: String,
    pub kind: Kind,
    /// What the entry tries, in a few words.
    pub tries: String,
    /// The checklist items an escape breaks.
    pub checklist: Vec<String>,
    pub effect: Effect,
    /// The spellings, the first the plainest; each is one attempt.
    pub sql: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    entries: Vec<Entry>,
}

/// The corpus.
#[derive(Debug)]
pub struct Corpus {
    pub entries: Vec<Entry>,
}

impl Corpus {
    /// Parses corpus text.
    pub fn parse(text: &str) -> Result<Corpus, String> {
        let f: File = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!("sql-escapes.yaml:{}:{}: error: {e}", l.line(), l.column()),
            None => format!("sql-escapes.yaml: error: {e}"),
        })?;
        Ok(Corpus { entries: f.entries })
    }

    /// The corpus shipped with preflight (its shape is checked by this module's tests).
    pub fn embedded() -> Corpus {
        Self::parse(EMBEDDED).expect("the embedded SQL escape corpus is valid")
    }

    /// Every spelling of every entry.
    pub fn attempts(&self) -> usize {
        self.entries.iter().map(|e| e.sql.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// What the corpus must cover, per kind: the constructs the escapes of public SQL-tool
    /// servers use (case-insensitive substrings of some spelling of some entry).
    const REQUIRED: &[(Kind, &str)] = &[
        (Kind::Write, "insert into"),
        (Kind::Write, "update "),
        (Kind::Write, "delete from"),
        (Kind::Write, "create table"),
        (Kind::Write, "drop "),
        (Kind::Write, "with "),
        (Kind::Write, " into "),
        (Kind::Write, "explain analyze"),
        (Kind::Write, "create temp"),
        (Kind::Write, "copy "),
        (Kind::Write, "nextval"),
        (Kind::Write, "setval"),
        (Kind::Write, "pg_advisory_lock"),
        (Kind::Write, "lo_create"),
        (Kind::Write, "set_config"),
        (Kind::Session, "commit;"),
        (Kind::Session, "rollback;"),
        (Kind::Session, "set transaction read write"),
        (Kind::Session, "set session characteristics"),
        (Kind::Session, "set role"),
        (Kind::Session, "set session authorization"),
        (Kind::Session, "reset all"),
        (Kind::Session, "do $"),
        (Kind::Session, "prepare "),
        (Kind::Session, "execute "),
        (Kind::Server, "pg_read_file"),
        (Kind::Server, "pg_read_binary_file"),
        (Kind::Server, "pg_ls_dir"),
        (Kind::Server, "pg_stat_file"),
        (Kind::Server, "from pg_stat_file"),
        (Kind::Server, "program"),
        (Kind::Server, "lo_import"),
        (Kind::Server, "pg_terminate_backend"),
        (Kind::Server, "pg_cancel_backend"),
        (Kind::Server, "pg_reload_conf"),
        (Kind::Server, "dblink"),
    ];

    #[test]
    fn the_corpus_has_the_documented_shape() {
        let c = Corpus::embedded();
        assert!(c.entries.len() >= 60, "only {} entries", c.entries.len());
        let checklist = preflight_reports::checklist::Checklist::embedded();
        let mut ids = BTreeSet::new();
        for e in &c.entries {
            assert!(ids.insert(e.id.clone()), "duplicate id {}", e.id);
            let prefix = match e.kind {
                Kind::Write => "write.",
                Kind::Session => "session.",
                Kind::Server => "server.",
            };
            assert!(e.id.starts_with(prefix), "{} is not under {prefix}", e.id);
            assert!(!e.tries.trim().is_empty(), "{}: no `tries`", e.id);
            assert!(e.sql.len() >= 2, "{}: one spelling only", e.id);
            let distinct: BTreeSet<&String> = e.sql.iter().collect();
            assert_eq!(distinct.len(), e.sql.len(), "{}: repeated spelling", e.id);
            assert!(!e.checklist.is_empty(), "{}: no checklist item", e.id);
            for id in &e.checklist {
                assert!(
                    checklist.item(id).is_some(),
                    "{}: checklist item {id} does not exist",
                    e.id
                );
            }
        }
        for kind in Kind::ALL {
            assert!(
                c.entries.iter().filter(|e| e.kind == kind).count() >= 10,
                "fewer than 10 {kind:?} entries"
            );
        }
        for (kind, needle) in REQUIRED {
            assert!(
                c.entries
                    .iter()
                    .filter(|e| e.kind == *kind)
                    .any(|e| e.sql.iter().any(|s| s.to_lowercase().contains(needle))),
                "no {kind:?} entry uses `{needle}`"
            );
        }
        assert!(c.attempts() >= 150, "only {} attempts", c.attempts());
    }

    #[test]
    fn a_malformed_corpus_is_an_error_with_its_line() {
        let e = Corpus::parse("entries:\n  - id: x\n    kind: nope\n").unwrap_err();
        assert!(e.starts_with("sql-escapes.yaml:3:"), "{e}");
    }
}
