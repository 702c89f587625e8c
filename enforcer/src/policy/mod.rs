//! Policy files: the validated model, the YAML loader, the live catalog it is checked against,
//! the stable hash, lint and regression cases.

mod catalog;
mod decl;
mod hash;
mod load;
mod model;
mod yaml;

pub use catalog::{
    is_numeric_type, Catalog, CatalogError, ColumnInfo, ForeignKey, TableInfo, TableKind,
    TENANT_COLUMN_NAMES,
};
pub use decl::{
    FIELD_WRITE_TOOLS, JOIN_DEPTH_HARD_LIMIT, MAX_ROWS_KEYS, MODEL_TOOLS, READ_TOOLS, WRITE_TOOLS,
};
pub use hash::{canonical_json, policy_hash};
pub use load::{load, load_str, resolve_field, DEFAULT_TENANT_SETTING, DEV_PRESET, PROD_PRESET};
pub use model::*;
pub use yaml::{PolicyError, PolicyErrors};
