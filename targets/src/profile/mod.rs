//! Target profiles: the YAML that says how to reach and drive a layer ([`Profile`]), and its
//! loader ([`load`]), with the `audit:`, `principal.jwt:` and `sql:` sections in files of their
//! own.

mod audit;
mod jwt;
mod load;
mod model;
mod nodes;
mod server;
mod sql;

pub use load::{load, load_str, ProfileError, ProfileErrors};
pub use model::*;
pub use sql::SqlTool;
