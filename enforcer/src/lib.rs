//! The built-in enforcement layer and the [`Gateway`] contract every layer is reached through.

pub mod approvals;
pub mod audit;
pub mod budget_store;
pub mod builtin;
pub mod faults;
pub mod gateway;
pub mod policy;

pub use faults::{Fault, Faults};
pub use gateway::{
    CallContext, ErrorCode, Gateway, Health, Principal, SinkHealth, ToolError, ToolSpec,
};
