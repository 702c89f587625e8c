//! Reaching enforcement layers preflight did not write.
//!
//! A layer is reached over MCP (a stdio child process or streamable HTTP, through `rmcp`) or over
//! plain HTTP tool endpoints, and driven by a target [`profile`]: which of the contract's tools it
//! offers under which names and shapes, how the principal reaches it, how its denials look. The
//! adapter ([`RemoteGateway`]) applies the profile generically, so a foreign layer's quirks are
//! data, not code; it depends on the `Gateway` contract alone, never on the built-in layer.

mod adapt;
mod gateway;
mod http;
pub mod jwt;
mod link;
mod mcp;
pub mod profile;
mod stderr;
mod tap;
pub mod template;
pub mod wire;

pub use gateway::{Connection, RemoteGateway, TargetInfo, UnreachableGateway};
pub use link::LinkError;
pub use profile::Profile;
pub use stderr::redact;

/// Hex SHA-256 of `bytes`.
pub(crate) fn hash_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
