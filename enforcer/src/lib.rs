//! The built-in enforcement layer and the [`Gateway`] contract every layer is reached through.

pub mod approvals;
pub mod audit;
pub mod budget_store;
pub mod builtin;
pub mod faults;
/// The contract lives in its own crate so that remote adapters depend on it alone, not on the
/// built-in layer's SQL; it stays reachable here under its old path.
pub use preflight_contract as gateway;
pub mod policy;

pub use faults::{Fault, Faults};
pub use gateway::{
    CallContext, ErrorCode, Gateway, Health, Principal, SinkHealth, ToolError, ToolSpec,
};
