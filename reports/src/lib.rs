//! The report model and its renderers. Depends on nothing but the model: renderers take a
//! [`Report`] (or consume [`ProbeEvent`]s) and write bytes.

pub mod model;

pub use model::*;
