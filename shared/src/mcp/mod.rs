//! MCP: the proxy's MCP routes and bodies, and how MCP and JSON-RPC errors map into the taxonomy.
//! Messages are `rmcp`'s model types, so both sides speak exactly what the spec defines.

pub mod api;
pub mod client;
pub mod headers;
mod jsonrpc;
pub mod namespace;
pub mod proxy_route;
mod response;

pub use api::{
    McpGetPrompt, McpListQuery, McpReadResource, McpServerInfo, McpServerList, McpToolCall,
    McpToolEvent, McpTransport,
};
pub use client::{McpCall, McpHttpClient, McpRawCall, McpRawResult, SessionDelete, Step};
pub use proxy_route::{
    McpProxyOp, McpToolStreamDecoder, decode_proxy_answer, decode_proxy_error, decode_proxy_result,
    proxy_request,
};

use crate::error::{ApiError, ErrorCode};

/// Maps a JSON-RPC error from an MCP server into the taxonomy.
///
/// The server's message is kept (it says which tool, argument or resource is wrong); MCP servers
/// hold no client credentials that it could leak.
pub fn error_from_jsonrpc(code: i32, message: &str) -> ApiError {
    let message = crate::error::truncate(message.trim(), 500);
    let (code, prefix) = match code {
        // Method not found: the server lacks the capability (e.g. no prompts).
        -32601 => (ErrorCode::NotFound, "the MCP server does not support this"),
        // Invalid params: unknown tool or prompt, bad arguments, bad cursor; since 2026-07-28
        // also an unknown resource.
        -32602 => (ErrorCode::BadRequest, "the MCP server refused the request"),
        // Resource not found (up to 2025-11-25).
        -32002 => (ErrorCode::NotFound, "the MCP server has no such resource"),
        // Request timeout, as the TypeScript SDK reports it.
        -32001 => (ErrorCode::UpstreamTimeout, "the MCP server timed out"),
        -32700 | -32600 => (
            ErrorCode::UpstreamError,
            "the MCP server could not read the request",
        ),
        _ => (ErrorCode::UpstreamError, "the MCP server failed"),
    };
    if message.is_empty() {
        ApiError::new(code, prefix)
    } else {
        ApiError::new(code, format!("{prefix}: {message}"))
    }
}

impl From<&rmcp::model::ErrorData> for ApiError {
    fn from(e: &rmcp::model::ErrorData) -> Self {
        error_from_jsonrpc(e.code.0, &e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonrpc_codes_map_to_the_taxonomy() {
        assert_eq!(
            error_from_jsonrpc(-32601, "no prompts").code,
            ErrorCode::NotFound
        );
        assert_eq!(
            error_from_jsonrpc(-32602, "unknown tool x").code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            error_from_jsonrpc(-32002, "missing").code,
            ErrorCode::NotFound
        );
        let e = error_from_jsonrpc(-32603, "boom");
        assert_eq!((e.code, e.retryable), (ErrorCode::UpstreamError, true));
        assert!(e.message.ends_with("boom"));
        let e = ApiError::from(&rmcp::model::ErrorData::invalid_params("bad cursor", None));
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
}
