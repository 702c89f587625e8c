//! The fixture loader: reads `*.sql` from a folder and runs each file, in lexical order, as one
//! multi-statement simple-query string on one superuser connection, after passing the role
//! passwords and the row count as session settings (see `fixtures/shop/README.md`).
//!
//! A file that fails is reported as `file:line:column: message`. Postgres gives a character
//! position for parse-analysis errors; for errors without one (a failed constraint, a
//! `RAISE`), the file is replayed statement by statement inside a transaction that is rolled
//! back, to find the statement that fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition};
use sqlx::{Connection, Executor};

use super::error::DbError;

/// One fixture file, read into memory.
#[derive(Clone, Debug)]
pub struct FixtureFile {
    /// The path as found (folder joined with the file name), for messages.
    pub path: PathBuf,
    pub sql: String,
}

/// The fixture files of one folder, in the order they run.
#[derive(Clone, Debug)]
pub struct FixtureSet {
    pub dir: PathBuf,
    pub files: Vec<FixtureFile>,
}

impl FixtureSet {
    /// Reads every `*.sql` file of `dir`, sorted by file name. Fails when the folder is missing,
    /// unreadable, holds no SQL, or a file is not UTF-8.
    pub fn read(dir: &Path) -> Result<Self, DbError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DbError::FixturesMissing {
                    path: dir.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(DbError::FixturesRead {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DbError::FixturesRead {
                path: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            let is_sql = path.extension().is_some_and(|ext| ext == "sql");
            // Follow symlinks: a fixtures folder may link shared files.
            if is_sql && path.is_file() {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(DbError::FixturesEmpty {
                path: dir.to_path_buf(),
            });
        }
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|source| DbError::FixturesRead {
                path: path.clone(),
                source,
            })?;
            let mut sql = String::from_utf8(bytes).map_err(|e| DbError::FixtureSql {
                file: path.clone(),
                line: None,
                column: None,
                message: format!("the file is not valid UTF-8 ({e})"),
            })?;
            // A byte-order mark is not SQL; removing it keeps line numbers unchanged.
            if sql.starts_with('\u{feff}') {
                sql.remove(0);
            }
            files.push(FixtureFile { path, sql });
        }
        Ok(FixtureSet {
            dir: dir.to_path_buf(),
            files,
        })
    }
}

/// The passwords the fixture roles get (random per run; never printed).
#[derive(Clone)]
pub(crate) struct RolePasswords {
    pub owner: String,
    pub agent: String,
    pub audit: String,
}

impl std::fmt::Debug for RolePasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolePasswords(****)")
    }
}

impl RolePasswords {
    pub(crate) fn random() -> Self {
        RolePasswords {
            owner: random_password(),
            agent: random_password(),
            audit: random_password(),
        }
    }
}

/// 32 random alphanumerics: strong, and safe in a URL without escaping.
pub(crate) fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// Runs every file of `set` on `conn` (a superuser connection to the target database).
pub(crate) async fn load(
    conn: &mut PgConnection,
    set: &FixtureSet,
    rows: u64,
    passwords: &RolePasswords,
) -> Result<Duration, DbError> {
    let started = Instant::now();
    sqlx::query(
        "SELECT set_config('preflight.agent_password', $1, false), \
                set_config('preflight.audit_password', $2, false), \
                set_config('preflight.owner_password', $3, false), \
                set_config('preflight.rows', $4, false)",
    )
    .bind(&passwords.agent)
    .bind(&passwords.audit)
    .bind(&passwords.owner)
    .bind(rows.to_string())
    .execute(&mut *conn)
    .await
    .map_err(|e| DbError::query("cannot pass the fixture settings to the server", e))?;

    let mut outcome = Ok(());
    for file in &set.files {
        let file_started = Instant::now();
        if let Err(e) = conn.execute(sqlx::raw_sql(&file.sql)).await {
            outcome = Err(scrub(file_error(conn, file, e).await, passwords));
            break;
        }
        tracing::debug!(
            file = %file.path.display(),
            elapsed_ms = file_started.elapsed().as_millis() as u64,
            "fixture file loaded"
        );
    }
    // The passwords should not stay readable in the session (it is closed right after, but a
    // caller may keep it).
    let _ = sqlx::query(
        "SELECT set_config('preflight.agent_password', '', false), \
                set_config('preflight.audit_password', '', false), \
                set_config('preflight.owner_password', '', false)",
    )
    .execute(&mut *conn)
    .await;
    outcome.map(|()| started.elapsed())
}

/// Masks the role passwords wherever a server message might echo them (the context of a failed
/// `ALTER ROLE ... PASSWORD` quotes the statement).
fn scrub(error: DbError, passwords: &RolePasswords) -> DbError {
    match error {
        DbError::FixtureSql {
            file,
            line,
            column,
            mut message,
        } => {
            for secret in [&passwords.owner, &passwords.agent, &passwords.audit] {
                if !secret.is_empty() {
                    message = message.replace(secret.as_str(), super::redact::MASK);
                }
            }
            DbError::FixtureSql {
                file,
                line,
                column,
                message,
            }
        }
        other => other,
    }
}

/// Turns a failure of `file` into an error naming its line: from the server's position when it
/// gave one, else by replaying the file statement by statement.
async fn file_error(conn: &mut PgConnection, file: &FixtureFile, error: sqlx::Error) -> DbError {
    let Some(db_error) = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
    else {
        return DbError::query(
            format!("{}: the server connection failed", file.path.display()),
            error,
        );
    };
    let message = server_message(db_error);
    let mut offset = position_offset(&file.sql, db_error);
    if offset.is_none() {
        offset = replay(conn, &file.sql).await;
    }
    let (line, column) = match offset {
        Some(o) => {
            let (l, c) = line_col(&file.sql, o);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let mut message = message;
    if let Some(l) = line {
        if let Some(text) = file.sql.lines().nth(l - 1) {
            let _ = write!(message, "\n    {l} | {}", text.trim_end());
        }
    }
    DbError::FixtureSql {
        file: file.path.clone(),
        line,
        column,
        message,
    }
}

/// The byte offset in `sql` (exactly the text that was sent) the server's error points at: its
/// position in the original query, or an internal query's position when that query's text
/// appears once in `sql`.
fn position_offset(sql: &str, e: &PgDatabaseError) -> Option<usize> {
    match e.position()? {
        PgErrorPosition::Original(chars) => char_offset(sql, chars.checked_sub(1)?),
        PgErrorPosition::Internal { position, query } => {
            let mut found = sql.match_indices(query);
            let (start, _) = found.next()?;
            if found.next().is_some() {
                return None;
            }
            let within = char_offset(&sql[start..], position.checked_sub(1)?)?;
            Some(start + within)
        }
    }
}

/// The byte offset of the `index`-th character (0-based) of `sql`; the server counts
/// positions in characters, not bytes.
fn char_offset(sql: &str, index: usize) -> Option<usize> {
    sql.char_indices()
        .nth(index)
        .map(|(b, _)| b)
        .or((index == sql.chars().count()).then_some(sql.len()))
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(sql: &str, offset: usize) -> (usize, usize) {
    let before = &sql[..offset.min(sql.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The server's message with its SQLSTATE, detail, hint and context.
fn server_message(e: &PgDatabaseError) -> String {
    let mut out = format!("{} (SQLSTATE {})", e.message(), e.code());
    if let Some(detail) = e.detail() {
        let _ = write!(out, "\n    detail: {detail}");
    }
    if let Some(hint) = e.hint() {
        let _ = write!(out, "\n    hint: {hint}");
    }
    if let Some(context) = e.r#where() {
        let _ = write!(
            out,
            "\n    context: {}",
            context.replace('\n', "\n             ")
        );
    }
    out
}

/// Runs `sql` again one statement at a time inside a transaction that is always rolled back,
/// and returns the byte offset of the error in the first statement that fails. Transaction
/// control statements are skipped so nothing is committed.
async fn replay(conn: &mut PgConnection, sql: &str) -> Option<usize> {
    let statements = split_statements(sql);
    let mut tx = conn.begin().await.ok()?;
    let mut found = None;
    for (start, end) in statements {
        let text = &sql[start..end];
        if is_transaction_control(text) {
            continue;
        }
        if let Err(e) = (&mut *tx).execute(sqlx::raw_sql(text)).await {
            let pg = e
                .as_database_error()
                .and_then(|d| d.try_downcast_ref::<PgDatabaseError>());
            let precise = pg
                .and_then(|pg| position_offset(text, pg).or_else(|| plpgsql_line_offset(text, pg)));
            found = Some(start + precise.unwrap_or_else(|| leading_noise(text)));
            break;
        }
    }
    let _ = tx.rollback().await;
    found
}

/// For an error inside a `DO` block: the offset of the body line PL/pgSQL names in its context
/// (`PL/pgSQL function inline_code_block line N at ...`), counted from the line the body's
/// opening dollar quote is on.
fn plpgsql_line_offset(statement: &str, e: &PgDatabaseError) -> Option<usize> {
    let context = e.r#where()?;
    let rest = context.split("inline_code_block line ").nth(1)?;
    let n: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let body_start = statement.find('$')?;
    let mut offset = body_start;
    for _ in 1..n {
        offset += statement[offset..].find('\n')? + 1;
    }
    // Point at the first non-blank character of that line.
    let line_end = statement[offset..]
        .find('\n')
        .map_or(statement.len(), |i| offset + i);
    let indent = statement[offset..line_end].len() - statement[offset..line_end].trim_start().len();
    Some(offset + indent)
}

fn is_transaction_control(statement: &str) -> bool {
    let words: Vec<String> = statement[leading_noise(statement)..]
        .split_whitespace()
        .take(2)
        .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
        .collect();
    matches!(
        words.first().map(String::as_str),
        Some("BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE")
    ) || (words.first().map(String::as_str) == Some("START")
        && words.get(1).map(String::as_str) == Some("TRANSACTION"))
        || (words.first().map(String::as_str) == Some("PREPARE")
            && words.get(1).map(String::as_str) == Some("TRANSACTION"))
}

/// Bytes of whitespace and comments before the first token of `statement`.
fn leading_noise(statement: &str) -> usize {
    let b = statement.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
        } else {
            return i.min(b.len());
        }
    }
}

fn skip_block_comment(b: &[u8], start: usize) -> usize {
    // Postgres block comments nest.
    let mut depth = 0;
    let mut i = start;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Byte ranges of the statements of `sql` (each including its `;`), skipping empty ones. Knows
/// Postgres' lexical rules for quotes, `E''` escapes, quoted identifiers, dollar quotes and
/// comments, so a `;` inside any of them does not split.
pub(crate) fn split_statements(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let push = |start: usize, end: usize, out: &mut Vec<(usize, usize)>| {
        let text = &sql[start..end];
        let noise = leading_noise(text);
        if !text[noise..].trim().trim_end_matches(';').trim().is_empty() {
            out.push((start, end));
        }
    };
    while i < b.len() {
        let c = b[i];
        if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = skip_block_comment(b, i);
        } else if c == b'\'' {
            let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E') && !is_ident_byte(b, i - 1);
            i = skip_quoted(b, i, b'\'', escapes);
        } else if c == b'"' {
            i = skip_quoted(b, i, b'"', false);
        } else if c == b'$' && (i == 0 || !is_ident_char(b[i - 1])) {
            match dollar_tag(b, i) {
                Some(tag_len) => {
                    let tag = &b[i..i + tag_len];
                    let body = i + tag_len;
                    i = find(b, body, tag).map_or(b.len(), |j| j + tag_len);
                }
                None => i += 1,
            }
        } else if c == b';' {
            i += 1;
            push(start, i, &mut out);
            start = i;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        push(start, b.len(), &mut out);
    }
    out
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Whether the byte at `i` continues an identifier (so an `E` there is not a string prefix).
fn is_ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && is_ident_char(b[i - 1])
}

fn skip_quoted(b: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The length of a dollar-quote opening tag (`$$`, `$body$`) at `i`, if one starts there.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && b[j] != b'$' {
        if !(is_ident_char(b[j]) && !(j == i + 1 && b[j].is_ascii_digit())) {
            return None;
        }
        j += 1;
    }
    (j < b.len()).then_some(j - i + 1)
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(sql: &str) -> Vec<&str> {
        split_statements(sql)
            .into_iter()
            .map(|(s, e)| sql[s..e].trim())
            .collect()
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_comments_and_dollar_quotes() {
        let sql = "SELECT ';';\n-- a; comment\nSELECT \"a;b\" FROM t; /* x; /* nested; */ y */\n\
                   DO $f$ BEGIN RAISE NOTICE 'x;'; END $f$;\nSELECT E'it\\'s;';\nSELECT $$a;$$";
        assert_eq!(
            statements(sql),
            vec![
                "SELECT ';';",
                "-- a; comment\nSELECT \"a;b\" FROM t;",
                "/* x; /* nested; */ y */\nDO $f$ BEGIN RAISE NOTICE 'x;'; END $f$;",
                "SELECT E'it\\'s;';",
                "SELECT $$a;$$",
            ]
        );
    }

    #[test]
    fn skips_empty_statements_and_trailing_comments() {
        let sql = "SELECT 1;;\n  ;\n-- the end\n";
        assert_eq!(statements(sql), vec!["SELECT 1;"]);
    }

    #[test]
    fn positional_parameters_are_not_dollar_quotes() {
        let sql = "PREPARE p AS SELECT $1;\nSELECT 2;";
        assert_eq!(
            statements(sql),
            vec!["PREPARE p AS SELECT $1;", "SELECT 2;"]
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        let sql = "SELECT 'é';\nSELEC 2;";
        let offset = sql.find("SELEC 2").unwrap();
        assert_eq!(line_col(sql, offset), (2, 1));
        assert_eq!(char_offset(sql, 12), Some(offset));
        assert_eq!(line_col(sql, sql.find("';").unwrap()), (1, 10));
    }

    #[test]
    fn recognises_transaction_control() {
        assert!(is_transaction_control("\n-- c\ncommit;"));
        assert!(is_transaction_control("START TRANSACTION;"));
        assert!(!is_transaction_control("SELECT 1;"));
        assert!(!is_transaction_control("BEGINNING;"));
        assert!(is_transaction_control("begin;"));
    }

    #[test]
    fn leading_noise_skips_comments_and_blanks() {
        let text = "\n  -- one\n /* two */ SELECT";
        assert_eq!(&text[leading_noise(text)..], "SELECT");
        assert_eq!(leading_noise(""), 0);
    }
}
