//! The MCP face of the layer ([`LayerHandler`]): `tools/list` is the layer's own generated list,
//! unedited; `tools/call` runs the tool as the session's principal and answers with the
//! contract's JSON, a denial as an `isError` result carrying `{code, message, suggestion,
//! details}` — what the default target profile reads.

use std::sync::Arc;

use preflight_enforcer::{CallContext, Gateway, Principal};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

/// Where a call's principal comes from.
#[derive(Clone, Debug)]
pub enum PrincipalSource {
    /// One principal for the whole process (stdio: the command line or environment).
    Fixed(Principal),
    /// Each HTTP request's verified token: the auth middleware puts the [`Principal`] in the
    /// request's extensions, and rmcp hands the request's parts to the handler.
    PerRequest,
}

/// Serves one gateway over MCP.
#[derive(Clone)]
pub struct LayerHandler {
    gateway: Arc<dyn Gateway>,
    principal: PrincipalSource,
}

impl LayerHandler {
    pub fn new(gateway: Arc<dyn Gateway>, principal: PrincipalSource) -> Self {
        Self { gateway, principal }
    }

    fn principal(&self, context: &RequestContext<RoleServer>) -> Result<Principal, McpError> {
        match &self.principal {
            PrincipalSource::Fixed(p) => Ok(p.clone()),
            PrincipalSource::PerRequest => context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Principal>())
                .cloned()
                // The middleware refuses every request without a verified token before it gets
                // here; a request that still has none is refused, never run as anybody.
                .ok_or_else(|| McpError::invalid_request("no verified principal", None)),
        }
    }
}

impl ServerHandler for LayerHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("preflight", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self
            .gateway
            .tools()
            .into_iter()
            .map(|t| {
                let schema = match t.input_schema {
                    Value::Object(o) => o,
                    _ => Default::default(),
                };
                Tool::new(t.name, t.description, Arc::new(schema))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let principal = self.principal(&context)?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let mut ctx = CallContext::new(principal);
        // A caller's W3C trace (`_meta.traceparent`) becomes the audit record's trace id (AUD-3),
        // so the caller's own trace finds the call; a malformed value is ignored. It only labels
        // the record: the principal comes from the session, never from `_meta`.
        if let Some(trace) = request
            .meta
            .as_ref()
            .and_then(|m| m.get_traceparent())
            .or_else(|| context.meta.get_traceparent())
            .and_then(preflight_enforcer::gateway::trace_id_of)
        {
            ctx.trace_id = trace;
        }
        let result = match self.gateway.call(&ctx, &request.name, arguments).await {
            Ok(value) => CallToolResult::success(vec![ContentBlock::text(value.to_string())]),
            Err(denial) => {
                CallToolResult::error(vec![ContentBlock::text(denial.to_json().to_string())])
            }
        };
        Ok(result.into())
    }
}
