//! What the gateway reads from the live catalog for its budgets: each policy table's estimated
//! row count (`pg_class.reltuples`, what a sequential scan reads) and its indexes (to tell an agent
//! which fields to filter on, and to know when a lookup is bounded).
//!
//! Read through the agent's own connection (the catalog is world-readable), at connect time and
//! again when the snapshot is older than [`MAX_AGE`], inside the call's transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::faults::Faults;
use crate::policy::{FieldAction, ModelPolicy, Policy};

use super::access::effective_action;

/// How long row estimates are trusted before they are read again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TableStats {
    /// `None` when the table has never been analyzed (reltuples < 0).
    pub reltuples: Option<f64>,
    /// Column lists of valid, non-partial, plain-column indexes.
    pub indexes: Vec<Vec<String>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    taken: Option<Instant>,
    /// Keyed by table name (EXPLAIN without VERBOSE names relations without their schema).
    tables: BTreeMap<String, TableStats>,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    snapshot: RwLock<Snapshot>,
}

const SQL: &str = "\
SELECT n.nspname AS schema_name, c.relname AS table_name, c.reltuples::float8 AS reltuples,
       coalesce((SELECT json_agg((SELECT coalesce(json_agg(a.attname::text ORDER BY k.ord), '[]'::json)
                                    FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                                    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum))
                   FROM pg_catalog.pg_index i
                  WHERE i.indrelid = c.oid AND i.indisvalid AND i.indpred IS NULL
                    AND NOT (0 = ANY (i.indkey::int2[]))), '[]'::json) AS indexes
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN unnest($1::text[], $2::text[]) AS want(schema_name, table_name)
    ON want.schema_name = n.nspname AND want.table_name = c.relname";

impl Catalog {
    /// Whether the snapshot is missing or older than [`MAX_AGE`].
    pub(crate) fn stale(&self) -> bool {
        match self.snapshot.read() {
            Ok(s) => s.taken.is_none_or(|t| t.elapsed() > MAX_AGE),
            Err(_) => true,
        }
    }

    /// Reads the stats of every policy table.
    pub(crate) async fn refresh(
        &self,
        conn: &mut PgConnection,
        policy: &Policy,
    ) -> Result<(), sqlx::Error> {
        let schemas: Vec<String> = policy.models.values().map(|m| m.schema.clone()).collect();
        let tables: Vec<String> = policy.models.values().map(|m| m.table.clone()).collect();
        let rows = sqlx::query(SQL)
            .bind(&schemas)
            .bind(&tables)
            .fetch_all(conn)
            .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let table: String = row.try_get("table_name")?;
            let reltuples: f64 = row.try_get("reltuples")?;
            let indexes: Value = row.try_get("indexes")?;
            let indexes = indexes
                .as_array()
                .map(|ixs| {
                    ixs.iter()
                        .filter_map(|ix| {
                            ix.as_array().map(|cols| {
                                cols.iter()
                                    .filter_map(|c| c.as_str().map(str::to_string))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .filter(|cols| !cols.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            out.insert(
                table,
                TableStats {
                    reltuples: (reltuples >= 0.0).then_some(reltuples),
                    indexes,
                },
            );
        }
        if let Ok(mut s) = self.snapshot.write() {
            s.tables = out;
            s.taken = Some(Instant::now());
        }
        Ok(())
    }

    pub(crate) fn reltuples(&self, table: &str) -> Option<f64> {
        self.snapshot
            .read()
            .ok()
            .and_then(|s| s.tables.get(table).and_then(|t| t.reltuples))
    }

    /// Fields an agent may usefully filter `model` on: the leading column of an index, or the
    /// second one when the first is the tenant column (always fixed by the gateway), limited to
    /// fields the agent may filter with ranges (allowed ones), primary key included.
    pub(crate) fn filter_fields(&self, model: &ModelPolicy, faults: &Faults) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let indexes = self
            .snapshot
            .read()
            .ok()
            .and_then(|s| s.tables.get(&model.table).map(|t| t.indexes.clone()))
            .unwrap_or_default();
        for cols in &indexes {
            let lead = match cols.as_slice() {
                [first, second, ..] if Some(first) == model.tenant_column.as_ref() => Some(second),
                [first, ..] if Some(first) != model.tenant_column.as_ref() => Some(first),
                _ => None,
            };
            if let Some(c) = lead {
                out.insert(c.clone());
            }
        }
        if indexes.is_empty() {
            // No catalog view of the table: fall back to the loader's note.
            for c in &model.columns {
                if c.indexed && Some(&c.name) != model.tenant_column.as_ref() {
                    out.insert(c.name.clone());
                }
            }
        }
        out.insert(model.primary_key.clone());
        let allowed = |name: &String| {
            model
                .column(name)
                .is_some_and(|c| effective_action(c, faults) == FieldAction::Allow)
        };
        // Lead with the non-key fields: "filter on created_at" is the useful advice.
        let mut fields: Vec<String> = out
            .iter()
            .filter(|c| allowed(c) && **c != model.primary_key)
            .cloned()
            .collect();
        if allowed(&model.primary_key) {
            fields.push(model.primary_key.clone());
        }
        fields
    }
}
