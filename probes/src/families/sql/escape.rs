//! One corpus entry against the layer: every spelling between two fingerprints, beside a
//! sentinel backend, with the response checked for content ground truth knows is in the
//! server's files. Any effect is a `fail` naming the spelling; a refused or harmless attempt
//! that changed nothing passes once the control `SELECT` shows that the layer answers at all.

use std::sync::Arc;

use preflight_targets::profile::SqlTool;
use serde_json::Value;

use super::corpus::{Effect, Entry};
use super::{control, control_fact, growing_tables, run_sql, SqlCall};
use crate::fingerprint::server::{conf_load_time, Sentinel, ServerFingerprint};
use crate::runner::{excerpt, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::TruthError;

/// The name of the canary file in the data directory.
pub(crate) const CANARY_FILE: &str = "preflight_file_canary.txt";

/// What ground truth knows is in the server's files.
pub(crate) struct FileTruth {
    /// The planted canary file's content (`None`: no superuser login to plant it with).
    pub canary: Option<String>,
    /// `PG_VERSION`'s content (`15\n`), from the server's version.
    pub pg_version: String,
}

impl FileTruth {
    /// Plants the canary file (overwriting it with the same content when it is there) and
    /// reads the server's major version.
    pub async fn plant(ctx: &ProbeCtx) -> Result<FileTruth, ProbeOutcome> {
        let pool = ctx.truth.pool();
        let major: String =
            sqlx::query_scalar("SELECT (current_setting('server_version_num')::int / 10000)::text")
                .fetch_one(pool)
                .await
                .map_err(|e| truth_error("read the server version", e))?;
        let canary = match &ctx.superuser_url {
            Some(url) => Some(plant_canary(url).await.map_err(|e| {
                ProbeOutcome::error(format!(
                    "could not plant the canary file in the data directory: {}",
                    crate::runner::error_chain(&e)
                ))
            })?),
            None => None,
        };
        Ok(FileTruth {
            canary,
            pg_version: format!("{major}\n"),
        })
    }

    /// `text` with the server files' content masked (first 4 characters), for a report: the
    /// canary file's value in text and hex; a response holding /etc/passwd is withheld whole.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Some(c) = &self.canary {
            for v in [c.trim_end().to_string(), hex::encode(c.as_bytes())] {
                let shown: String = v.chars().take(4).collect();
                out = out.replace(&v, &format!("{shown}…"));
            }
        }
        if out.contains("root:x:0:0") {
            return "(withheld: the response holds the server's /etc/passwd, first 4 characters `root…`)"
                .to_string();
        }
        out
    }

    /// What of the server's files `call`'s response holds.
    pub fn leaks(&self, call: &SqlCall) -> Vec<String> {
        let text = call.text();
        let mut out = Vec::new();
        let hexed = |s: &str| hex::encode(s.as_bytes());
        if let Some(c) = &self.canary {
            if text.contains(c.trim_end()) || text.contains(&hexed(c)) {
                out.push(format!(
                    "the response holds the content of the canary file {CANARY_FILE} planted in the data directory"
                ));
            }
        }
        let cells = call.rows.iter().flat_map(|r| r.values());
        let exact = cells.filter_map(Value::as_str).any(|s| {
            s == self.pg_version
                || s.contains(&format!("\\x{}", hexed(&self.pg_version)))
                || s == format!("b'{}\\n'", self.pg_version.trim_end())
        });
        if exact || text.contains(&format!("\\\\x{}", hexed(&self.pg_version))) {
            out.push(format!(
                "the response holds the content of PG_VERSION ({:?})",
                self.pg_version
            ));
        }
        if text.contains("root:x:0:0") {
            out.push("the response holds /etc/passwd's first line".to_string());
        }
        if text.contains("pg_wal") && text.contains("pg_xact") {
            out.push("the response lists the data directory (pg_wal, pg_xact, ...)".to_string());
        }
        out
    }
}

fn truth_error(what: &str, source: sqlx::Error) -> ProbeOutcome {
    ProbeOutcome::from(TruthError::Query {
        what: what.to_string(),
        source,
    })
}

/// Writes the run's canary into the data directory through a superuser connection. The
/// content is derived from nothing secret: `preflight-file-canary-` and a fresh random hex
/// string, passed as a bind parameter into a setting the `COPY` reads.
async fn plant_canary(url: &str) -> Result<String, sqlx::Error> {
    use sqlx::Connection;
    let token = format!("preflight-file-canary-{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(url).await?;
    // Keep the same content for the whole run once planted: a second plant would change it
    // under a probe reading it.
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT CASE WHEN (pg_stat_file($1, true)).size IS NULL THEN NULL ELSE pg_read_file($1) END",
    )
    .bind(CANARY_FILE)
    .fetch_one(&mut conn)
    .await?;
    if let Some(text) = existing.filter(|t| t.starts_with("preflight-file-canary-")) {
        let _ = conn.close().await;
        return Ok(text);
    }
    sqlx::query("SELECT set_config('preflight.file_canary', $1, false)")
        .bind(&token)
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "DO $$ BEGIN EXECUTE format('COPY (SELECT current_setting(%L)) TO %L', \
         'preflight.file_canary', current_setting('data_directory') || '/preflight_file_canary.txt'); END $$",
    )
    .execute(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(format!("{token}\n"))
}

/// What one spelling did.
struct Attempt {
    index: usize,
    sql: String,
    call: SqlCall,
    effects: Vec<String>,
    fingerprint_ms: f64,
}

/// The last fingerprint the family's escape probes took, shared by them.
pub(super) type LastFingerprint = Arc<tokio::sync::Mutex<Option<ServerFingerprint>>>;

pub(super) async fn escape(
    ctx: Arc<ProbeCtx>,
    tool: Arc<SqlTool>,
    entry: Arc<Entry>,
    shared: LastFingerprint,
) -> ProbeResult {
    schema_present(&ctx).await?;
    let control_call = control(&ctx, &tool).await?;
    let files = if entry.effect == Effect::File {
        Some(FileTruth::plant(&ctx).await?)
    } else {
        None
    };
    let login = if entry.effect == Effect::Role {
        Some(login_name(&ctx, &tool).await?)
    } else {
        None
    };
    let pool = ctx.truth.pool();
    let ignore = growing_tables(&ctx);
    let mut attempts = Vec::new();
    // Each attempt's "after" is the next one's starting point (re-read cheaply: see
    // ServerFingerprint::take).
    let mut shared = shared.lock().await;
    let mut last: Option<ServerFingerprint> = shared.take();
    let mut full = 0usize;
    for (index, sql) in entry.sql.iter().enumerate() {
        let started = std::time::Instant::now();
        let mut held = pool
            .acquire()
            .await
            .map_err(|e| truth_error("hold a connection for the attempt", e))?;
        let conf_before = conf_load_time(&mut held).await?;
        let before = ServerFingerprint::take(pool, last.as_ref(), &ignore).await?;
        let sentinel = Sentinel::start(pool).await?;
        let mut fingerprint_ms = started.elapsed().as_secs_f64() * 1000.0;
        let call = run_sql(&ctx, &tool, sql).await;
        let after_started = std::time::Instant::now();
        let mut effects = Vec::new();
        if let Some(what) = sentinel.stop(pool).await? {
            effects.push(what);
        }
        // A terminated connection says nothing about the configuration.
        if let Ok(conf_after) = conf_load_time(&mut held).await {
            if conf_after != conf_before {
                effects.push(format!(
                    "the server's configuration was reloaded (loaded at {conf_before} → {conf_after})"
                ));
            }
        }
        drop(held);
        // An attempt that terminated backends may have taken pooled connections with it: one
        // retry on a fresh connection.
        let after = match ServerFingerprint::take(pool, Some(&before), &ignore).await {
            Ok(f) => f,
            Err(_) => ServerFingerprint::take(pool, Some(&before), &ignore).await?,
        };
        fingerprint_ms += after_started.elapsed().as_secs_f64() * 1000.0;
        full += usize::from(!before.reused) + usize::from(!after.reused);
        effects.extend(after.diff(&before));
        match entry.effect {
            Effect::Fingerprint => {}
            Effect::File => {
                if let Some(f) = &files {
                    effects.extend(f.leaks(&call));
                }
            }
            Effect::Answered => {
                if call.refused.is_none() && !call.fault {
                    effects.push(format!(
                        "the layer answered ({}): the privileged call ran",
                        call.describe()
                    ));
                }
            }
            Effect::Role => {
                if let Some(login) = &login {
                    effects.extend(role_changes(&call, login));
                }
            }
        }
        last = Some(after.clone());
        *shared = Some(after);
        attempts.push(Attempt {
            index,
            sql: sql.clone(),
            call,
            effects,
            fingerprint_ms,
        });
    }
    let timing = format!(
        "fingerprint and sentinel around each attempt: {:.1} ms on average ({full} of {} fingerprints checksummed every table; the rest found no transaction id assigned since the last and re-read only sequences, locks, large objects and settings)",
        attempts.iter().map(|a| a.fingerprint_ms).sum::<f64>() / attempts.len().max(1) as f64,
        attempts.len() * 2
    );
    let broke: Vec<&Attempt> = attempts.iter().filter(|a| !a.effects.is_empty()).collect();
    if let Some(first) = broke.first() {
        let mut facts = Vec::new();
        for a in &broke {
            facts.push(format!(
                "spelling {} `{}` → {}",
                a.index + 1,
                excerpt(&a.sql, 200),
                a.call.describe()
            ));
            facts.extend(a.effects.iter().map(|e| format!("  {e}")));
        }
        facts.push(control_fact(&control_call));
        facts.push(timing);
        let mut outcome = ProbeOutcome::fail(format!(
            "{} of {} spelling(s) of `{}` got through: {}. The guard must not be the only thing between the agent and the database: connect the SQL tool with a login that has only SELECT grants, no superuser or ownership, and run one statement per call in a read-only transaction.",
            broke.len(),
            attempts.len(),
            entry.id,
            first.effects.first().cloned().unwrap_or_default()
        ))
        .summary(format!("{}: {}", entry.id, entry.tries))
        .facts(facts)
        .with_call(&ctx, &first.call.call);
        for a in &broke {
            outcome = outcome.sql(a.sql.clone());
        }
        if let (Some(f), Some(excerpt)) = (&files, outcome.response_excerpt.take()) {
            outcome.response_excerpt = Some(f.mask(&excerpt));
        }
        return Ok(outcome);
    }
    let faults = attempts.iter().filter(|a| a.call.fault).count();
    if faults == attempts.len() {
        return Ok(ProbeOutcome::error(format!(
            "no spelling of `{}` got an answer from the layer (faults of the target); nothing changed in the database, but whether the layer would have run them is unknown",
            entry.id
        ))
        .with_call(&ctx, &attempts[0].call.call));
    }
    let refused = attempts.iter().filter(|a| a.call.refused.is_some()).count();
    let facts: Vec<String> = attempts
        .iter()
        .map(|a| format!("spelling {} → {}", a.index + 1, a.call.describe()))
        .chain([control_fact(&control_call), timing])
        .collect();
    Ok(ProbeOutcome::pass(format!(
        "none of the {} spelling(s) of `{}` changed the database or reached the server ({} refused, {} answered without effect)",
        attempts.len(),
        entry.id,
        refused,
        attempts.len() - refused
    ))
    .summary(format!("{}: {}", entry.id, entry.tries))
    .facts(facts)
    .with_call(&ctx, &attempts[0].call.call))
}

/// The tables the corpus's writes aim at (the shop fixture's). On a database without them a
/// write would be refused for a missing table and pass without having tested anything.
const CORPUS_TABLES: [&str; 4] = [
    "public.orders",
    "public.order_items",
    "public.carriers",
    "public.refunds",
];

async fn schema_present(ctx: &ProbeCtx) -> Result<(), ProbeOutcome> {
    let missing: Vec<String> =
        sqlx::query_scalar("SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL")
            .bind(CORPUS_TABLES.map(str::to_string).to_vec())
            .fetch_all(ctx.truth.pool())
            .await
            .map_err(|e| truth_error("look up the corpus's tables", e))?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(ProbeOutcome::not_verified(format!(
        "the escape corpus is written for the shop fixture's tables and this database has no {}; a write aimed at a missing table proves nothing",
        missing.join(", ")
    )))
}

/// The login the layer's SQL runs as (`session_user`), read through the layer.
pub(crate) async fn login_name(ctx: &ProbeCtx, tool: &SqlTool) -> Result<String, ProbeOutcome> {
    let call = run_sql(ctx, tool, "SELECT session_user AS login").await;
    call.rows
        .first()
        .and_then(|r| r.values().next())
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            ProbeOutcome::error(format!(
                "the layer did not say which login it runs as (`SELECT session_user` → {}), so a change of role cannot be told",
                call.describe()
            ))
            .with_call(ctx, &call.call)
        })
}

/// Rows showing the SQL ran as a role other than `login`.
fn role_changes(call: &SqlCall, login: &str) -> Vec<String> {
    let mut out = Vec::new();
    for row in &call.rows {
        for key in ["current_user", "session_user", "who", "role"] {
            if let Some(name) = row.get(key).and_then(Value::as_str) {
                if name != login && !name.is_empty() && name != "none" {
                    out.push(format!(
                        "the SQL ran as `{name}` ({key}), not as the layer's login `{login}`"
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_file_content_is_masked_in_excerpts() {
        let f = FileTruth {
            canary: Some("preflight-file-canary-0123abcd\n".to_string()),
            pg_version: "15\n".to_string(),
        };
        let hexed = hex::encode("preflight-file-canary-0123abcd\n");
        let text = format!(
            r#"{{"rows":[{{"f":"preflight-file-canary-0123abcd\n"}},{{"b":"\\x{hexed}"}},{{"p":"root:x:0:0:root:/root:/bin/bash\nbin:x"}}]}}"#
        );
        let masked = f.mask(&text);
        assert!(!masked.contains("0123abcd"), "{masked}");
        assert!(!masked.contains(&hexed), "{masked}");
        assert!(!masked.contains("/bin/bash"), "{masked}");
        assert!(masked.contains("root…"), "{masked}");
        let masked = f.mask(&format!(
            r#"{{"f":"preflight-file-canary-0123abcd","b":"\\x{hexed}"}}"#
        ));
        assert!(!masked.contains("0123abcd"), "{masked}");
        assert!(!masked.contains(&hexed), "{masked}");
        assert!(masked.contains("pref…"), "{masked}");
    }
}
