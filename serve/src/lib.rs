//! `preflight serve`: the built-in enforcement layer as an MCP server ([`Layer`] behind
//! [`LayerHandler`]), over stdio for one principal or over streamable HTTP where every request's
//! principal comes from a verified bearer JWT.
//!
//! - [`layer`]: starts the layer exactly as `preflight probe` does (policy checked against the
//!   live catalog, audit sinks, budget store, approvals in the database).
//! - [`handler`]: the rmcp `ServerHandler` that lists the layer's own tools and runs calls.
//! - [`stdio`]: one process per principal, as a desktop client starts it.
//! - [`http`]: the axum server: `/healthz`, then token check and rate limits before `/mcp`.
//! - [`auth`]: bearer JWT verification (HS256, RS256, ES256).
//! - [`health`]: what `/healthz` reports (OPS-4).
//! - [`limits`]: per-IP and per-principal request rate limits (OPS-6).

pub mod auth;
pub mod handler;
pub mod health;
pub mod http;
pub mod layer;
pub mod limits;
pub mod stdio;

pub use handler::LayerHandler;
pub use layer::{Layer, LayerConfig, LayerError};
