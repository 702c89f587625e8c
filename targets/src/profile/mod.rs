//! Target profiles: the YAML that says how to reach and drive a layer ([`Profile`]), and its
//! loader ([`load`]).

mod load;
mod model;

pub use load::{load, load_str, ProfileError, ProfileErrors};
pub use model::*;
