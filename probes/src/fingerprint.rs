//! A fingerprint of the database ([`Fingerprint`]), read through ground truth (the owner
//! connection), so the self-test can prove that every control it switched on was switched off
//! exactly and that no probe left a row behind.
//!
//! The catalog part lists what the controls touch and more: tables and views (row-level security
//! flags, owner, grants, columns), row-level policies, triggers (and whether they are enabled),
//! functions (their source's hash, owner, grants), schemas, and the roles of the cluster
//! (attributes, per-role settings, memberships). The data part is a checksum per table: the row
//! count and an order-independent sum of every row's hash.
//!
//! Two kinds of table grow by design while the layer runs, and are compared accordingly: the
//! audit log gains a record per call, so its checksum covers only the records that existed when
//! the earlier fingerprint was taken (an edit to any of them still shows); the layer's other
//! ledgers (the chain head and checkpoints, approval requests, dry-run tokens) change state on
//! every call, so only their catalog entries count. Everything else must come back bit for bit.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;

use crate::truth::{quote_ident, TruthError};

pub mod server;

/// The audit log: append-only, compared over the records of the earlier fingerprint.
const AUDIT_LOG: (&str, &str) = ("preflight_audit", "audit_log");

/// Tables the layer itself writes on every call (state, not evidence): catalog only.
const LEDGERS: [(&str, &str); 4] = [
    ("preflight_audit", "chain_head"),
    ("preflight_audit", "chain_checkpoints"),
    ("preflight_ops", "approvals"),
    ("preflight_ops", "dry_runs"),
];

/// Schemas that belong to the server, not to the database under test.
const SYSTEM_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'";

/// The database as ground truth sees it, one line per object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// `kind name` → its description (`table public.orders` → `rls=true force=true ...`).
    entries: BTreeMap<String, String>,
    /// The highest audit record id when this fingerprint was taken (none: no log, or empty).
    audit_max_id: Option<i64>,
}

fn q(what: &str) -> impl FnOnce(sqlx::Error) -> TruthError {
    let what = what.to_string();
    move |source| TruthError::Query { what, source }
}

impl Fingerprint {
    /// Reads the fingerprint. With `earlier`, the audit log is checksummed over the records
    /// `earlier` saw, so the two compare equal when only new records were appended.
    pub async fn take(pool: &PgPool, earlier: Option<&Fingerprint>) -> Result<Self, TruthError> {
        Self::take_ignoring(pool, earlier, &[]).await
    }

    /// As [`Fingerprint::take`], leaving out the data of `ignore` (`(schema, table)`: a foreign
    /// layer's own audit table, which grows by design); their catalog entries still count.
    pub async fn take_ignoring(
        pool: &PgPool,
        earlier: Option<&Fingerprint>,
        ignore: &[(String, String)],
    ) -> Result<Self, TruthError> {
        let mut entries = BTreeMap::new();
        let catalog: [(&str, String); 7] = [
            (
                "relation",
                format!(
                    "SELECT format('%s %I.%I', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'matview' ELSE 'table' END, n.nspname, c.relname), \
                            format('rls=%s force=%s owner=%s acl=%s columns=%s', c.relrowsecurity, c.relforcerowsecurity, \
                                   pg_get_userbyid(c.relowner), c.relacl::text, \
                                   (SELECT string_agg(format('%I:%s', a.attname, format_type(a.atttypid, a.atttypmod)), ',' ORDER BY a.attnum) \
                                    FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)) \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p', 'v', 'm') AND {SYSTEM_SCHEMAS}"
                ),
            ),
            (
                "policy",
                format!(
                    "SELECT format('policy %I.%I %I', n.nspname, c.relname, p.polname), \
                            format('cmd=%s permissive=%s roles=%s using=%s check=%s', p.polcmd, p.polpermissive, p.polroles::text, \
                                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) \
                     FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE {SYSTEM_SCHEMAS}"
                ),
            ),
            (
                "trigger",
                format!(
                    "SELECT format('trigger %I.%I %I', n.nspname, c.relname, t.tgname), \
                            format('enabled=%s function=%s type=%s', t.tgenabled, t.tgfoid::regprocedure::text, t.tgtype) \
                     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE NOT t.tgisinternal AND {SYSTEM_SCHEMAS}"
                ),
            ),
            (
                "function",
                format!(
                    "SELECT format('function %s', p.oid::regprocedure::text), \
                            format('owner=%s acl=%s secdef=%s source=%s config=%s', pg_get_userbyid(p.proowner), p.proacl::text, \
                                   p.prosecdef, md5(p.prosrc), p.proconfig::text) \
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {SYSTEM_SCHEMAS}"
                ),
            ),
            (
                "schema",
                format!(
                    "SELECT format('schema %I', n.nspname), format('owner=%s acl=%s', pg_get_userbyid(n.nspowner), n.nspacl::text) \
                     FROM pg_namespace n WHERE {SYSTEM_SCHEMAS}"
                ),
            ),
            (
                "role",
                "SELECT format('role %I', r.rolname), \
                        format('super=%s bypassrls=%s login=%s inherit=%s createrole=%s settings=%s member_of=%s', \
                               r.rolsuper, r.rolbypassrls, r.rolcanlogin, r.rolinherit, r.rolcreaterole, \
                               (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c \
                                WHERE s.setrole = r.oid AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))), \
                               (SELECT array_agg(g.rolname::text ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                                WHERE m.member = r.oid)) \
                 FROM pg_roles r WHERE r.rolname NOT LIKE 'pg\\_%'"
                    .to_string(),
            ),
            (
                "default privileges",
                "SELECT format('default privileges %s %s %s', pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text, d.defaclobjtype), \
                        d.defaclacl::text FROM pg_default_acl d"
                    .to_string(),
            ),
        ];
        for (what, sql) in catalog {
            let rows: Vec<(String, Option<String>)> = sqlx::query_as(&sql)
                .fetch_all(pool)
                .await
                .map_err(q(&format!("fingerprint the catalog ({what})")))?;
            for (k, v) in rows {
                entries.insert(k, v.unwrap_or_default());
            }
        }
        let listed: Vec<(String, String, bool)> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, has_table_privilege(c.oid, 'SELECT') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {SYSTEM_SCHEMAS} ORDER BY 1, 2"
        ))
        .fetch_all(pool)
        .await
        .map_err(q("list the tables to fingerprint"))?;
        // A table this login may not read (one another login created) is fingerprinted by its
        // catalog entry only; its data line says so, so it still shows as new or gone.
        let mut tables = Vec::new();
        for (schema, table, readable) in listed {
            if readable {
                tables.push((schema, table));
            } else {
                entries.insert(
                    format!("data {schema}.{table}"),
                    "not readable by the fingerprint's login".to_string(),
                );
            }
        }
        let audit_max_id: Option<i64> = if tables
            .iter()
            .any(|(s, t)| (s.as_str(), t.as_str()) == AUDIT_LOG)
        {
            sqlx::query_scalar("SELECT max(id) FROM preflight_audit.audit_log")
                .fetch_one(pool)
                .await
                .map_err(q("read the audit log's highest id"))?
        } else {
            None
        };
        let audit_bound = match earlier {
            Some(e) => e.audit_max_id,
            None => audit_max_id,
        }
        .unwrap_or(0);
        // One checksum per table, a few at a time (the big tables dominate).
        let checksums = futures::stream::iter(tables.into_iter().filter(|(s, t)| {
            !LEDGERS.contains(&(s.as_str(), t.as_str()))
                && !ignore.iter().any(|(is, it)| is == s && it == t)
        }))
        .map(|(schema, table)| async move {
            let name = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
            let audit = (schema.as_str(), table.as_str()) == AUDIT_LOG;
            let filter = if audit { " WHERE t.id <= $1" } else { "" };
            let sql = format!(
                "SELECT count(*)::text || ' rows, checksum ' || \
                        coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text \
                 FROM {name} t{filter}"
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            if audit {
                query = query.bind(audit_bound);
            }
            query
                .fetch_one(pool)
                .await
                .map(|c| (format!("data {schema}.{table}"), c))
                .map_err(q(&format!("checksum {schema}.{table}")))
        })
        .buffer_unordered(3)
        .try_collect::<Vec<(String, String)>>()
        .await?;
        entries.extend(checksums);
        Ok(Self {
            entries,
            audit_max_id,
        })
    }

    /// What differs from `earlier` to this fingerprint, one line per object (empty: identical).
    pub fn diff(&self, earlier: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (k, before) in &earlier.entries {
            match self.entries.get(k) {
                None => out.push(format!("{k}: gone (was {before})")),
                Some(now) if now != before => out.push(format!("{k}: {before} → {now}")),
                Some(_) => {}
            }
        }
        for (k, now) in &self.entries {
            if !earlier.entries.contains_key(k) {
                out.push(format!("{k}: new ({now})"));
            }
        }
        out
    }

    /// How many objects the fingerprint covers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_gone_and_new_objects() {
        let a = Fingerprint {
            entries: BTreeMap::from([
                ("role x".to_string(), "bypassrls=false".to_string()),
                ("data public.t".to_string(), "1 rows".to_string()),
            ]),
            audit_max_id: None,
        };
        assert!(a.diff(&a).is_empty());
        let mut b = a.clone();
        b.entries
            .insert("role x".to_string(), "bypassrls=true".to_string());
        b.entries.remove("data public.t");
        b.entries
            .insert("view preflight_audit.v2".to_string(), String::new());
        let d = b.diff(&a);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(
            d.iter()
                .any(|l| l == "role x: bypassrls=false → bypassrls=true"),
            "{d:?}"
        );
        assert!(
            d.iter().any(|l| l.starts_with("data public.t: gone")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|l| l.starts_with("view preflight_audit.v2: new")),
            "{d:?}"
        );
    }
}
