//! Target profiles: the YAML that says how to reach and drive a layer ([`Profile`]), and its
//! loader ([`load`]), with the `audit:` and `principal.jwt:` sections in files of their own.

mod audit;
mod jwt;
mod load;
mod model;
mod nodes;
mod server;

pub use load::{load, load_str, ProfileError, ProfileErrors};
pub use model::*;
