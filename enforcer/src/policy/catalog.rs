//! The live database catalog, as the policy loader and lint need it: [`Catalog`].
//!
//! Read once through an owner connection from `pg_catalog` (never `information_schema`, which
//! hides objects the reader does not own): tables and views of every non-system schema, their
//! columns in order with formatted types and nullability, primary keys, foreign keys, which
//! columns lead an index, row estimates and row-level-security flags. Every identifier the
//! enforcement layer later puts into SQL is checked against this, so identifiers come only from the
//! catalog.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::PgPool;

/// Column names that mark a table as holding one tenant's rows. Lint treats such a table as
/// multi-tenant (ISO-2) even when the policy exempts it.
pub const TENANT_COLUMN_NAMES: &[&str] = &[
    "tenant_id",
    "tenant",
    "tenant_key",
    "org_id",
    "organization_id",
    "workspace_id",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type()`, e.g. `text`, `numeric(12,2)`, `timestamp with time zone`.
    pub pg_type: String,
    pub nullable: bool,
}

impl ColumnInfo {
    /// Integer, numeric and floating-point types (what `sum`/`avg` and thresholds accept).
    pub fn is_numeric(&self) -> bool {
        is_numeric_type(&self.pg_type)
    }

    /// Free-form character types.
    pub fn is_text(&self) -> bool {
        is_text_type(&self.pg_type)
    }

    pub fn is_temporal(&self) -> bool {
        let t = self.pg_type.as_str();
        t == "date" || t.starts_with("timestamp")
    }
}

/// Whether a `format_type()` name is a number type.
pub fn is_numeric_type(t: &str) -> bool {
    matches!(
        t,
        "smallint" | "integer" | "bigint" | "real" | "double precision" | "numeric" | "money"
    ) || t.starts_with("numeric(")
}

/// Whether a `format_type()` name is a character type.
pub fn is_text_type(t: &str) -> bool {
    t == "text"
        || t.starts_with("character varying")
        || t.starts_with("character(")
        || t == "character"
        || t == "citext"
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub ref_schema: String,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    Table,
    PartitionedTable,
    View,
    MaterializedView,
    ForeignTable,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub kind: TableKind,
    /// Columns in catalog (attnum) order.
    pub columns: Vec<ColumnInfo>,
    /// Primary-key columns in key order; empty when there is none.
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Columns that lead at least one index.
    pub indexed_columns: BTreeSet<String>,
    /// Single columns with a unique index or constraint (the primary key included).
    pub unique_columns: BTreeSet<String>,
    /// `pg_class.reltuples` (-1 when never analyzed).
    pub estimated_rows: f64,
    pub rls_enabled: bool,
    pub rls_forced: bool,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The first column whose name marks the table as holding one tenant's rows.
    pub fn tenant_looking_column(&self) -> Option<&ColumnInfo> {
        TENANT_COLUMN_NAMES
            .iter()
            .find_map(|n| self.columns.iter().find(|c| c.name == *n))
    }

    /// The single-column foreign key on `column`, if any.
    pub fn foreign_key_on(&self, column: &str) -> Option<&ForeignKey> {
        self.foreign_keys
            .iter()
            .find(|fk| fk.columns.len() == 1 && fk.columns[0] == column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to the database to read its catalog")]
    Connect(#[source] sqlx::Error),
    #[error("cannot read the database catalog")]
    Query(#[source] sqlx::Error),
}

/// Tables and views of the database, keyed by `(schema, name)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    tables: BTreeMap<(String, String), TableInfo>,
}

type ColumnRow = (String, String, String, String, bool);
type TableRow = (String, String, String, f32, bool, bool);
type ConstraintRow = (
    String,
    String,
    String,
    String,
    Vec<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
);
type IndexRow = (String, String, String, bool, i16);

/// Schemas the catalog never reads: the system's own, and preflight's ground-truth and audit
/// schemas, which no policy may expose.
const SYSTEM_SCHEMA_FILTER: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
     AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'";

impl Catalog {
    /// Reads every table and view outside the system schemas.
    pub async fn read(pool: &PgPool) -> Result<Catalog, CatalogError> {
        let mut conn = pool.acquire().await.map_err(CatalogError::Query)?;
        Self::read_conn(&mut conn).await
    }

    /// Connects to `url` (one connection, read-only use) and reads the catalog. The error never
    /// carries the URL.
    pub async fn read_url(url: &str) -> Result<Catalog, CatalogError> {
        use sqlx::Connection as _;
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(CatalogError::Connect)?;
        let catalog = Self::read_conn(&mut conn).await;
        // Closing politely is best effort: the catalog is already read.
        let _ = conn.close().await;
        catalog
    }

    /// As [`read`](Catalog::read), on one connection (e.g. inside a transaction).
    pub async fn read_conn(conn: &mut PgConnection) -> Result<Catalog, CatalogError> {
        let tables: Vec<TableRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.reltuples, \
                    c.relrowsecurity, c.relforcerowsecurity \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {SYSTEM_SCHEMA_FILTER} \
             ORDER BY 1, 2"
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(CatalogError::Query)?;

        let columns: Vec<ColumnRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped \
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {SYSTEM_SCHEMA_FILTER} \
             ORDER BY n.nspname, c.relname, a.attnum"
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(CatalogError::Query)?;

        // Primary and foreign keys with their columns in key order.
        let constraints: Vec<ConstraintRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, k.conname::text, k.contype::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(attnum, ord) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum \
                          ORDER BY u.ord), \
                    rn.nspname::text, rc.relname::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(attnum, ord) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum \
                          ORDER BY u.ord) \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_class rc ON rc.oid = k.confrelid \
             LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
             WHERE k.contype IN ('p', 'f') AND {SYSTEM_SCHEMA_FILTER} \
             ORDER BY 1, 2, 3"
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(CatalogError::Query)?;

        // The first column of every index, and whether it is a single-column unique index.
        let indexes: Vec<IndexRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, i.indisunique, i.indnkeyatts \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indkey[0] <> 0 AND {SYSTEM_SCHEMA_FILTER}"
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(CatalogError::Query)?;

        let mut catalog = Catalog::default();
        for (schema, name, kind, reltuples, rls, forced) in tables {
            let kind = match kind.as_str() {
                "p" => TableKind::PartitionedTable,
                "v" => TableKind::View,
                "m" => TableKind::MaterializedView,
                "f" => TableKind::ForeignTable,
                _ => TableKind::Table,
            };
            catalog.tables.insert(
                (schema.clone(), name.clone()),
                TableInfo {
                    schema,
                    name,
                    kind,
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    foreign_keys: Vec::new(),
                    indexed_columns: BTreeSet::new(),
                    unique_columns: BTreeSet::new(),
                    estimated_rows: f64::from(reltuples),
                    rls_enabled: rls,
                    rls_forced: forced,
                },
            );
        }
        for (schema, table, name, pg_type, nullable) in columns {
            if let Some(t) = catalog.tables.get_mut(&(schema, table)) {
                t.columns.push(ColumnInfo {
                    name,
                    pg_type,
                    nullable,
                });
            }
        }
        for (schema, table, conname, contype, cols, ref_schema, ref_table, ref_cols) in constraints
        {
            let Some(t) = catalog.tables.get_mut(&(schema, table)) else {
                continue;
            };
            if contype == "p" {
                if cols.len() == 1 {
                    t.unique_columns.insert(cols[0].clone());
                }
                t.primary_key = cols;
            } else if let (Some(ref_schema), Some(ref_table)) = (ref_schema, ref_table) {
                t.foreign_keys.push(ForeignKey {
                    name: conname,
                    columns: cols,
                    ref_schema,
                    ref_table,
                    ref_columns: ref_cols,
                });
            }
        }
        for (schema, table, column, unique, key_columns) in indexes {
            if let Some(t) = catalog.tables.get_mut(&(schema, table)) {
                if unique && key_columns == 1 {
                    t.unique_columns.insert(column.clone());
                }
                t.indexed_columns.insert(column);
            }
        }
        Ok(catalog)
    }

    /// A catalog built from values (tests, or a catalog saved earlier).
    pub fn from_tables(tables: impl IntoIterator<Item = TableInfo>) -> Catalog {
        Catalog {
            tables: tables
                .into_iter()
                .map(|t| ((t.schema.clone(), t.name.clone()), t))
                .collect(),
        }
    }

    pub fn table(&self, schema: &str, name: &str) -> Option<&TableInfo> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableInfo> {
        self.tables.values()
    }

    /// Tables of one schema, in name order.
    pub fn tables_in<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a TableInfo> + 'a {
        self.tables.values().filter(move |t| t.schema == schema)
    }

    pub fn has_schema(&self, schema: &str) -> bool {
        self.tables.keys().any(|(s, _)| s == schema)
    }

    /// Whether `table` holds one tenant's rows: it has a tenant-looking column, or a foreign key to
    /// a table that has one (its rows belong to another tenant's row). A table that is only
    /// *referenced* by tenant tables, such as a list of carriers, is reference data.
    pub fn is_multi_tenant(&self, table: &TableInfo) -> bool {
        if table.tenant_looking_column().is_some() {
            return true;
        }
        table.foreign_keys.iter().any(|fk| {
            // The tenants table itself (referenced by tenant_id columns) is the registry of
            // tenants, not a tenant's data; a key pointing at it is already a tenant column.
            self.table(&fk.ref_schema, &fk.ref_table)
                .is_some_and(|t| t.tenant_looking_column().is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            pg_type: t.into(),
            nullable: false,
        }
    }

    fn table(name: &str, cols: &[(&str, &str)], fks: &[(&str, &str)]) -> TableInfo {
        TableInfo {
            schema: "public".into(),
            name: name.into(),
            kind: TableKind::Table,
            columns: cols.iter().map(|(n, t)| col(n, t)).collect(),
            primary_key: vec!["id".into()],
            foreign_keys: fks
                .iter()
                .map(|(c, t)| ForeignKey {
                    name: format!("{name}_{c}_fkey"),
                    columns: vec![(*c).into()],
                    ref_schema: "public".into(),
                    ref_table: (*t).into(),
                    ref_columns: vec!["id".into()],
                })
                .collect(),
            indexed_columns: BTreeSet::new(),
            unique_columns: BTreeSet::new(),
            estimated_rows: 0.0,
            rls_enabled: false,
            rls_forced: false,
        }
    }

    #[test]
    fn multi_tenant_by_column_or_by_key() {
        let c = Catalog::from_tables([
            table("orders", &[("id", "bigint"), ("tenant_id", "text")], &[]),
            table(
                "notes",
                &[("id", "bigint"), ("order_id", "bigint")],
                &[("order_id", "orders")],
            ),
            table("carriers", &[("id", "bigint"), ("name", "text")], &[]),
        ]);
        let t = |n| c.table("public", n).unwrap();
        assert!(c.is_multi_tenant(t("orders")));
        assert!(c.is_multi_tenant(t("notes")));
        assert!(!c.is_multi_tenant(t("carriers")));
    }

    #[test]
    fn type_classes() {
        assert!(col("a", "numeric(12,2)").is_numeric());
        assert!(col("a", "bigint").is_numeric());
        assert!(!col("a", "text").is_numeric());
        assert!(col("a", "character varying(20)").is_text());
        assert!(col("a", "timestamp with time zone").is_temporal());
    }
}
