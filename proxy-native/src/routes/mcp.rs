//! `/api/mcp/*`: the configured MCP servers' tools, resources and prompts. Each handler names a
//! configured server (never an address or a command) and hands the request to the session pool;
//! answers are MCP's own result types, unchanged.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use rmcp::model::{
    CallToolResult, GetPromptResult, ListPromptsResult, ListResourcesResult, ListToolsResult,
    ReadResourceResult,
};
use switchyard_shared::mcp::{
    McpGetPrompt, McpListQuery, McpReadResource, McpServerList, McpToolCall,
};
use switchyard_shared::{ApiError, paths};
use tracing::{Instrument, Span};

use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{ApiJson, ApiQuery};
use crate::limits::{Budget, Metered};
use crate::observability::{RequestFacts, ToolAudit};
use crate::state::AppState;
use crate::stream_relay;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(paths::MCP_SERVERS, get(servers))
        .route(paths::MCP_LIST_TOOLS, get(list_tools))
        .route(paths::MCP_TOOL, post(call_tool))
        .route(paths::MCP_TOOL_STREAM, post(call_tool_stream))
        .route(paths::MCP_LIST_RESOURCES, get(list_resources))
        .route(paths::MCP_READ_RESOURCE, post(read_resource))
        .route(paths::MCP_LIST_PROMPTS, get(list_prompts))
        .route(paths::MCP_GET_PROMPT, post(get_prompt))
}

/// The span of one MCP operation, inside the request's span.
fn span(server: &str, method: &'static str) -> Span {
    tracing::info_span!("mcp", server, method)
}

/// Counts a failed operation other than a tool call against its server (tool calls are counted
/// with their audit line).
fn counted(state: &AppState, server: &str, error: &ApiError) {
    state
        .observability()
        .metrics()
        .record_mcp_error(server, error.code);
}

/// Only the servers the caller may use.
async fn servers(State(state): State<AppState>, caller: Caller) -> Json<McpServerList> {
    Json(caller.scopes().filter_servers(state.mcp().servers()))
}

async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListToolsResult>, AppError> {
    caller.scopes().check_server(&q.server)?;
    let span = span(&q.server, "tools/list");
    let page = state
        .mcp()
        .list_tools(&caller.identity, &q.server, q.cursor)
        .instrument(span)
        .await
        .inspect_err(|e| counted(&state, &q.server, e))?;
    let mut page = page;
    caller.scopes().filter_tools(&q.server, &mut page);
    Ok(Json(page))
}

async fn call_tool(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    ApiJson(call): ApiJson<McpToolCall>,
) -> Result<Json<CallToolResult>, AppError> {
    // Refusals are audited too: the record is made first.
    let audit = ToolAudit::new(facts, &call, false);
    if let Err(error) = caller.scopes().check_tool(&call.server, &call.name) {
        audit.finish(Err(&error));
        return Err(error.into());
    }
    let span = span(&call.server, "tools/call");
    let result = state
        .mcp()
        .call_tool(&caller.identity, call)
        .instrument(span)
        .await;
    audit.finish(result.as_ref());
    Ok(Json(result?))
}

async fn call_tool_stream(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiJson(call): ApiJson<McpToolCall>,
) -> Result<Response, AppError> {
    let audit = ToolAudit::new(facts, &call, true);
    let permit = caller
        .scopes()
        .check_tool(&call.server, &call.name)
        .and_then(|()| state.limiter().stream(&budget));
    let permit = match permit {
        Ok(permit) => permit,
        Err(error) => {
            audit.finish(Err(&error));
            return Err(error.into());
        }
    };
    let span = span(&call.server, "tools/call");
    let audit = Metered::new(state.limiter(), budget, permit, audit);
    let events = match state
        .mcp()
        .call_tool_stream(&caller.identity, call)
        .instrument(span)
        .await
    {
        Ok(events) => events,
        Err(error) => {
            audit.into_inner().finish(Err(&error));
            return Err(error.into());
        }
    };
    // The audit record goes with the stream and writes its line when the stream ends.
    Ok(stream_relay::tool_event_response(events, audit))
}

async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListResourcesResult>, AppError> {
    caller.scopes().check_server(&q.server)?;
    let span = span(&q.server, "resources/list");
    let page = state
        .mcp()
        .list_resources(&caller.identity, &q.server, q.cursor)
        .instrument(span)
        .await
        .inspect_err(|e| counted(&state, &q.server, e))?;
    Ok(Json(page))
}

async fn read_resource(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<McpReadResource>,
) -> Result<Json<ReadResourceResult>, AppError> {
    caller.scopes().check_server(&req.server)?;
    let span = span(&req.server, "resources/read");
    let result = state
        .mcp()
        .read_resource(&caller.identity, &req.server, req.uri)
        .instrument(span)
        .await
        .inspect_err(|e| counted(&state, &req.server, e))?;
    Ok(Json(result))
}

async fn list_prompts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListPromptsResult>, AppError> {
    caller.scopes().check_server(&q.server)?;
    let span = span(&q.server, "prompts/list");
    let page = state
        .mcp()
        .list_prompts(&caller.identity, &q.server, q.cursor)
        .instrument(span)
        .await
        .inspect_err(|e| counted(&state, &q.server, e))?;
    Ok(Json(page))
}

async fn get_prompt(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<McpGetPrompt>,
) -> Result<Json<GetPromptResult>, AppError> {
    caller.scopes().check_server(&req.server)?;
    let span = span(&req.server, "prompts/get");
    let result = state
        .mcp()
        .get_prompt(&caller.identity, &req.server, req.name, req.arguments)
        .instrument(span)
        .await
        .inspect_err(|e| counted(&state, &req.server, e))?;
    Ok(Json(result))
}
