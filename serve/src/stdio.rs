//! Serving over stdio: one process per principal, as Claude Desktop and other MCP clients start a
//! server. The principal is fixed for the process's life; nothing a client sends can change it.

use std::sync::Arc;

use preflight_enforcer::{Gateway, Principal};
use rmcp::ServiceExt;

use crate::handler::{LayerHandler, PrincipalSource};

/// Why the stdio session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("the MCP session over stdio did not initialize")]
    Initialize(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the MCP session over stdio failed")]
    Session(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Serves `gateway` as `principal` on this process's stdin/stdout until the client closes them.
pub async fn serve(gateway: Arc<dyn Gateway>, principal: Principal) -> Result<(), StdioError> {
    let handler = LayerHandler::new(gateway, PrincipalSource::Fixed(principal));
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| StdioError::Initialize(Box::new(e)))?;
    running
        .waiting()
        .await
        .map_err(|e| StdioError::Session(Box::new(e)))?;
    Ok(())
}
