//! Rows a probe creates for itself through the owner connection ([`Scratch`]), and their removal.
//!
//! Write probes never aim at fixture rows: they clone a row of the right tenant into a new,
//! marked row (unique text columns get a `.pf<run>` suffix, which also marks the row), act on
//! that, and remove it afterwards. On a staging database this is what `--allow-writes` permits:
//! probes touch only rows they created. Every planted key is also kept in a run-wide registry
//! so that a probe that panicked or timed out still has its rows removed at the end of the run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use preflight_enforcer::policy::ModelPolicy;
use serde_json::{json, Map, Value};
use sqlx::Row;

use crate::truth::{quote_ident, table_ref, GroundTruth, TruthError};

/// Catalog facts about one table needed to clone its rows.
#[derive(Clone, Debug, Default)]
struct CloneShape {
    /// Columns that may be inserted (not identity-always, not generated), in catalog order.
    insertable: Vec<String>,
    /// Text-like columns that take part in a unique index (other than the primary key).
    unique_text: Vec<String>,
}

/// The run-wide registry of planted rows.
#[derive(Debug, Default)]
pub struct ScratchRegistry {
    planted: Mutex<Vec<(ModelPolicy, Value)>>,
    marker: String,
    counter: Mutex<u64>,
}

impl ScratchRegistry {
    pub fn new() -> Self {
        Self {
            planted: Mutex::new(Vec::new()),
            marker: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            counter: Mutex::new(0),
        }
    }

    /// The suffix that marks this run's rows (`.pf1a2b3c4d-7`).
    fn next_suffix(&self) -> String {
        let mut n = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        format!(".pf{}-{}", self.marker, *n)
    }

    fn remember(&self, model: &ModelPolicy, key: &Value) {
        self.planted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((model.clone(), key.clone()));
    }

    fn forget(&self, model: &ModelPolicy, key: &Value) {
        let mut p = self.planted.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|(m, k)| !(m.name == model.name && k == key));
    }

    /// Removes every row still registered (newest first). Returns the rows that could not be
    /// removed, as `model#key: why`.
    pub async fn purge(&self, truth: &GroundTruth) -> Vec<String> {
        let rows: Vec<(ModelPolicy, Value)> = {
            let mut p = self.planted.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *p)
        };
        let mut failed = Vec::new();
        for (model, key) in rows.into_iter().rev() {
            if let Err(e) = delete_rows(truth, &model, std::slice::from_ref(&key)).await {
                failed.push(format!("{}#{key}: {e}", model.name));
            }
        }
        failed
    }
}

/// The rows one probe planted; remove them with [`Scratch::cleanup`] on every path.
pub struct Scratch<'a> {
    truth: &'a GroundTruth,
    registry: &'a ScratchRegistry,
    planted: Vec<(ModelPolicy, Value)>,
    shapes: BTreeMap<String, CloneShape>,
}

impl<'a> Scratch<'a> {
    pub fn new(truth: &'a GroundTruth, registry: &'a ScratchRegistry) -> Self {
        Self {
            truth,
            registry,
            planted: Vec::new(),
            shapes: BTreeMap::new(),
        }
    }

    async fn shape(&mut self, model: &ModelPolicy) -> Result<CloneShape, TruthError> {
        if let Some(s) = self.shapes.get(&model.name) {
            return Ok(s.clone());
        }
        let pool = self.truth.pool();
        let insertable: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attidentity <> 'a' AND a.attgenerated = '' ORDER BY a.attnum",
        )
        .bind(&model.schema)
        .bind(&model.table)
        .fetch_all(pool)
        .await
        .map_err(|source| TruthError::Query {
            what: format!("read the columns of {}", model.table),
            source,
        })?;
        let unique_text: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
             JOIN pg_type ty ON ty.oid = a.atttypid \
             WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND NOT i.indisprimary \
               AND ty.typcategory = 'S' \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.conrelid = c.oid \
                               AND f.contype = 'f' AND a.attnum = ANY(f.conkey))",
        )
        .bind(&model.schema)
        .bind(&model.table)
        .fetch_all(pool)
        .await
        .map_err(|source| TruthError::Query {
            what: format!("read the unique indexes of {}", model.table),
            source,
        })?;
        let shape = CloneShape {
            insertable,
            unique_text,
        };
        self.shapes.insert(model.name.clone(), shape.clone());
        Ok(shape)
    }

    /// Inserts a copy of row `source` of `model` with `overrides` (column → JSON value) applied
    /// and unique text columns suffixed; returns the new row's key.
    pub async fn clone_row(
        &mut self,
        model: &ModelPolicy,
        source: &Value,
        overrides: &Map<String, Value>,
    ) -> Result<Value, TruthError> {
        let shape = self.shape(model).await?;
        let table = table_ref(model);
        let pk = quote_ident(&model.primary_key);
        let suffix = self.registry.next_suffix();
        let mut cols = Vec::new();
        let mut exprs = Vec::new();
        for col in &shape.insertable {
            let q = quote_ident(col);
            cols.push(q.clone());
            if overrides.contains_key(col) {
                exprs.push(format!("(jsonb_populate_record(NULL::{table}, $2)).{q}"));
            } else if shape.unique_text.contains(col) {
                exprs.push(format!("s.{q} || $3"));
            } else {
                exprs.push(format!("s.{q}"));
            }
        }
        let sql = format!(
            "INSERT INTO {table} ({cols}) SELECT {exprs} FROM {table} s \
             WHERE s.{pk} = (jsonb_populate_record(NULL::{table}, $1)).{pk} \
             RETURNING to_jsonb({pk})",
            cols = cols.join(", "),
            exprs = exprs.join(", "),
        );
        let key: Option<Value> = sqlx::query_scalar(&sql)
            .bind(json!({ model.primary_key.clone(): source }))
            .bind(Value::Object(overrides.clone()))
            .bind(&suffix)
            .fetch_optional(self.truth.pool())
            .await
            .map_err(|source| TruthError::Query {
                what: format!("plant a scratch row in {}", model.table),
                source,
            })
            .map_err(|e| self.truth.note(e))?;
        let Some(key) = key else {
            return Err(TruthError::Query {
                what: format!(
                    "plant a scratch row in {}: source row {source} not found",
                    model.table
                ),
                source: sqlx::Error::RowNotFound,
            });
        };
        self.registry.remember(model, &key);
        self.planted.push((model.clone(), key.clone()));
        Ok(key)
    }

    /// Clones the first visible row of `tenant` in `model`.
    pub async fn plant(
        &mut self,
        model: &ModelPolicy,
        tenant: &str,
        overrides: &Map<String, Value>,
    ) -> Result<Value, TruthError> {
        let keys = self.truth.keys(model, tenant, 1).await?;
        let Some(source) = keys.first() else {
            return Err(TruthError::Query {
                what: format!(
                    "plant a scratch row in {}: tenant {tenant} has no row to copy",
                    model.table
                ),
                source: sqlx::Error::RowNotFound,
            });
        };
        self.clone_row(model, source, overrides).await
    }

    /// The `data` of a `db_create` that the layer should accept for `tenant`: the writable
    /// fields of one of the tenant's rows (unique text suffixed so it cannot collide). `Ok(Err)`
    /// says why no valid create can be written (a required column is not writable).
    pub async fn create_data(
        &mut self,
        policy: &preflight_enforcer::policy::Policy,
        model: &ModelPolicy,
        tenant: &str,
    ) -> Result<Result<Map<String, Value>, String>, TruthError> {
        let shape = self.shape(model).await?;
        let required: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' \
             ORDER BY a.attnum",
        )
        .bind(&model.schema)
        .bind(&model.table)
        .fetch_all(self.truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("read the required columns of {}", model.table),
            source,
        })?;
        let missing: Vec<&String> = required
            .iter()
            .filter(|c| {
                Some(c.as_str()) != model.tenant_column.as_deref()
                    && !model.writable_fields.contains(c.as_str())
            })
            .collect();
        if !missing.is_empty() {
            return Ok(Err(format!(
                "a row of {} needs {} but writable_fields does not include {}",
                model.name,
                missing
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            )));
        }
        let keys = self.truth.keys(model, tenant, 1).await?;
        let Some(source) = keys.first() else {
            return Ok(Err(format!(
                "tenant {tenant} has no row of {} to copy",
                model.name
            )));
        };
        let rows = self.truth.rows(model, std::slice::from_ref(source)).await?;
        let Some(Value::Object(row)) = rows.into_iter().next() else {
            return Ok(Err(format!("row {source} of {} vanished", model.name)));
        };
        let suffix = self.registry.next_suffix();
        let mut data = Map::new();
        for col in &model.writable_fields {
            if Some(col.as_str()) == model.tenant_column.as_deref() || *col == model.primary_key {
                continue;
            }
            let Some(v) = row.get(col) else { continue };
            let v = match v {
                Value::String(s) if shape.unique_text.contains(col) => {
                    Value::String(format!("{s}{suffix}"))
                }
                other => other.clone(),
            };
            data.insert(col.clone(), v);
        }
        if data.is_empty() {
            return Ok(Err(format!(
                "{} has no writable field to create a row with",
                model.name
            )));
        }
        ungate(policy, model, &mut data);
        Ok(Ok(data))
    }

    /// Registers a row created by the layer during the probe (so it is removed too).
    pub fn adopt(&mut self, model: &ModelPolicy, key: Value) {
        self.registry.remember(model, &key);
        self.planted.push((model.clone(), key));
    }

    /// Removes every row this probe planted or adopted, newest first.
    pub async fn cleanup(mut self) -> Result<(), TruthError> {
        let mut first_err = None;
        while let Some((model, key)) = self.planted.pop() {
            match delete_rows(self.truth, &model, std::slice::from_ref(&key)).await {
                Ok(()) => self.registry.forget(&model, &key),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
            self.truth.forget(&model, std::slice::from_ref(&key));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Deletes rows by key through the owner connection (children that cascade go with them).
async fn delete_rows(
    truth: &GroundTruth,
    model: &ModelPolicy,
    keys: &[Value],
) -> Result<(), TruthError> {
    let table = table_ref(model);
    let pk = quote_ident(&model.primary_key);
    let sql = format!(
        "DELETE FROM {table} t WHERE t.{pk} IN \
         (SELECT r.{pk} FROM jsonb_populate_recordset(NULL::{table}, $1) r)"
    );
    let records: Vec<Value> = keys
        .iter()
        .map(|k| json!({ model.primary_key.clone(): k }))
        .collect();
    sqlx::query(&sql)
        .bind(Value::Array(records))
        .execute(truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("remove scratch rows from {}", model.table),
            source,
        })
        .map_err(|e| truth.note(e))?;
    Ok(())
}

/// Keys of rows of `model` created after `before_max` (a numeric key), for removing rows a
/// faulty layer created when it should have refused. Empty for non-numeric keys.
pub async fn created_since(
    truth: &GroundTruth,
    model: &ModelPolicy,
    before_max: Option<&str>,
) -> Result<Vec<Value>, TruthError> {
    let numeric = model
        .column(&model.primary_key)
        .map(|c| matches!(c.pg_type.as_str(), "bigint" | "integer" | "smallint"))
        .unwrap_or(false);
    if !numeric {
        return Ok(Vec::new());
    }
    let floor: i64 = before_max.and_then(|s| s.parse().ok()).unwrap_or(0);
    let sql = format!(
        "SELECT to_jsonb(t.{pk}) FROM {table} t WHERE t.{pk} > $1 ORDER BY t.{pk}",
        pk = quote_ident(&model.primary_key),
        table = table_ref(model),
    );
    sqlx::query_scalar(&sql)
        .bind(floor)
        .fetch_all(truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("find rows created in {}", model.table),
            source,
        })
        .map_err(|e| truth.note(e))
}

/// Another value for `column` of `model` that the table already holds somewhere (so it
/// satisfies the column's CHECK constraints), different from the row's current value; for a
/// column with a single distinct value, a derived one (text suffixed, number plus one, boolean
/// flipped).
pub async fn other_value(
    truth: &GroundTruth,
    model: &ModelPolicy,
    key: &Value,
    column: &str,
) -> Result<Value, TruthError> {
    let table = table_ref(model);
    let pk = quote_ident(&model.primary_key);
    let col = quote_ident(column);
    let sql = format!(
        "SELECT to_jsonb(cur.{col}) AS cur, \
                (SELECT to_jsonb(o.{col}) FROM {table} o \
                  WHERE o.{col} IS NOT NULL AND o.{col} IS DISTINCT FROM cur.{col} LIMIT 1) AS other \
         FROM {table} cur WHERE cur.{pk} = (jsonb_populate_record(NULL::{table}, $1)).{pk}"
    );
    let row = sqlx::query(&sql)
        .bind(json!({ model.primary_key.clone(): key }))
        .fetch_optional(truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("pick a value for {}.{column}", model.table),
            source,
        })
        .map_err(|e| truth.note(e))?;
    let (cur, other): (Option<Value>, Option<Value>) = match row {
        Some(r) => (r.get("cur"), r.get("other")),
        None => (None, None),
    };
    // A value copied from another row would collide in a unique column; derive one instead.
    let unique: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND i.indisunique)",
    )
    .bind(&model.schema)
    .bind(&model.table)
    .bind(column)
    .fetch_one(truth.pool())
    .await
    .map_err(|source| TruthError::Query {
        what: format!("read the unique indexes of {}", model.table),
        source,
    })?;
    if let (Some(o), false) = (other, unique) {
        return Ok(o);
    }
    Ok(match cur {
        Some(Value::String(s)) => Value::String(format!("{s} (preflight)")),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(|i| json!(i + 1))
            .or_else(|| n.as_f64().map(|f| json!(f + 1.0)))
            .unwrap_or(json!(1)),
        Some(Value::Bool(b)) => json!(!b),
        Some(Value::Null) | None | Some(Value::Array(_)) | Some(Value::Object(_)) => {
            json!("preflight")
        }
    })
}

/// A key of `tenant`'s rows in `target` that some row of `model` (any tenant's) references
/// through `fk`, for "filter on a foreign key pointing at B's row".
pub async fn referenced_key(
    truth: &GroundTruth,
    model: &ModelPolicy,
    fk: &str,
    owner_tenant: &str,
) -> Result<Option<Value>, TruthError> {
    let Some(tc) = &model.tenant_column else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT to_jsonb(t.{fk}) FROM {table} t WHERE t.{tc}::text = $1 AND t.{fk} IS NOT NULL \
         ORDER BY t.{pk} LIMIT 1",
        fk = quote_ident(fk),
        tc = quote_ident(tc),
        pk = quote_ident(&model.primary_key),
        table = table_ref(model),
    );
    sqlx::query_scalar(&sql)
        .bind(owner_tenant)
        .fetch_optional(truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("find a referenced row through {}.{fk}", model.table),
            source,
        })
        .map_err(|e| truth.note(e))
}

/// Up to `n` keys of `tenant`'s visible rows of `model` that have a related row through `rel`
/// (a parent with children for `has_many`, a row whose key is set for `belongs_to`).
pub async fn linked_keys(
    truth: &GroundTruth,
    model: &ModelPolicy,
    target: &ModelPolicy,
    rel: &preflight_enforcer::policy::Relation,
    tenant: &str,
    n: i64,
) -> Result<Vec<Value>, TruthError> {
    use preflight_enforcer::policy::RelationKind;
    let pk = quote_ident(&model.primary_key);
    let tenant_pred = match &model.tenant_column {
        Some(tc) => format!("m.{}::text = $1", quote_ident(tc)),
        None => "$1::text IS NOT NULL".to_string(),
    };
    let visible = match &model.soft_delete_column {
        Some(c) => format!(" AND m.{} IS NULL", quote_ident(c)),
        None => String::new(),
    };
    let link = match rel.kind {
        RelationKind::BelongsTo => format!(
            "EXISTS (SELECT 1 FROM {t} x WHERE x.{tpk} = m.{fk})",
            t = table_ref(target),
            tpk = quote_ident(&target.primary_key),
            fk = quote_ident(&rel.foreign_key),
        ),
        RelationKind::HasMany => format!(
            "EXISTS (SELECT 1 FROM {t} x WHERE x.{fk} = m.{pk})",
            t = table_ref(target),
            fk = quote_ident(&rel.foreign_key),
        ),
    };
    let sql = format!(
        "SELECT to_jsonb(m.{pk}) FROM {table} m WHERE {tenant_pred}{visible} AND {link} \
         ORDER BY m.{pk} LIMIT $2",
        table = table_ref(model),
    );
    sqlx::query_scalar(&sql)
        .bind(tenant)
        .bind(n)
        .fetch_all(truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("find {} rows with related {}", model.name, target.name),
            source,
        })
        .map_err(|e| truth.note(e))
}

/// Keys of the visible `target` rows related through `rel` to the `model` rows with `keys`
/// (their parents for `belongs_to`, their children for `has_many`): one step of an include
/// path, read as the database has it.
pub async fn related_keys(
    truth: &GroundTruth,
    model: &ModelPolicy,
    target: &ModelPolicy,
    rel: &preflight_enforcer::policy::Relation,
    keys: &[Value],
) -> Result<Vec<Value>, TruthError> {
    use preflight_enforcer::policy::RelationKind;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mtable = table_ref(model);
    let mpk = quote_ident(&model.primary_key);
    let tpk = quote_ident(&target.primary_key);
    let fk = quote_ident(&rel.foreign_key);
    let picked = format!("(SELECT r.{mpk} FROM jsonb_populate_recordset(NULL::{mtable}, $1) r)");
    let link = match rel.kind {
        RelationKind::BelongsTo => {
            format!("t.{tpk} IN (SELECT m.{fk} FROM {mtable} m WHERE m.{mpk} IN {picked})")
        }
        RelationKind::HasMany => format!("t.{fk} IN {picked}"),
    };
    let visible = match &target.soft_delete_column {
        Some(c) => format!(" AND t.{} IS NULL", quote_ident(c)),
        None => String::new(),
    };
    let sql = format!(
        "SELECT DISTINCT to_jsonb(t.{tpk}) FROM {table} t WHERE {link}{visible}",
        table = table_ref(target),
    );
    let records: Vec<Value> = keys
        .iter()
        .map(|k| json!({ model.primary_key.clone(): k }))
        .collect();
    sqlx::query_scalar(&sql)
        .bind(Value::Array(records))
        .fetch_all(truth.pool())
        .await
        .map_err(|source| TruthError::Query {
            what: format!("follow {}.{} to {}", model.name, rel.name, target.name),
            source,
        })
        .map_err(|e| truth.note(e))
}

/// Keeps a create out of every approval rule: values over a rule's threshold are lowered under
/// it, and fields a rule gates on create are left out. Probes that are not about approvals must
/// not be stopped by one.
pub fn ungate(
    policy: &preflight_enforcer::policy::Policy,
    model: &ModelPolicy,
    data: &mut Map<String, Value>,
) {
    for rule in policy.approvals.iter().filter(|r| r.model == model.name) {
        if !rule.tools.is_empty() && !rule.tools.contains("db_create") {
            continue;
        }
        if let Some(t) = &rule.threshold {
            let over = data
                .get(&t.field)
                .and_then(|v| {
                    v.as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .is_some_and(|v| v > t.greater_than);
            if over {
                let under = ((t.greater_than / 2.0) * 100.0).floor() / 100.0;
                data.insert(t.field.clone(), json!(under.max(0.01)));
            }
        }
        for f in &rule.fields {
            data.remove(f);
        }
    }
}
