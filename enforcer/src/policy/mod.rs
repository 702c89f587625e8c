//! Policy files: the validated model, the YAML loader, the stable hash, lint and regression cases.

mod model;

pub use model::*;
