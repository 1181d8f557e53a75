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
    McpGetPrompt, McpListQuery, McpReadResource, McpServerList, McpToolCall, McpToolEvent,
};
use switchyard_shared::{ApiError, paths};
use tracing::{Instrument, Span};

use super::openapi::Refusals;
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{ApiJson, ApiQuery};
use crate::limits::{Budget, Metered};
use crate::mcp::ToolEventStream;
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

#[utoipa::path(
    get,
    path = "/api/mcp/servers",
    tag = "mcp",
    summary = "The MCP servers the caller may use",
    responses(
        (status = 200, description = "Configured servers, without addresses or commands", body = McpServerList),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
/// Only the servers the caller may use.
async fn servers(State(state): State<AppState>, caller: Caller) -> Json<McpServerList> {
    Json(caller.scopes().filter_servers(state.mcp().servers()))
}

#[utoipa::path(
    get,
    path = "/api/mcp/listTools",
    tag = "mcp",
    summary = "One page of a server's tools",
    params(McpListQuery),
    responses(
        (status = 200, description = "MCP `ListToolsResult`", body = Object),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn list_tools(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListToolsResult>, AppError> {
    Ok(Json(tools_page(&state, &caller, q).await?))
}

/// One page of a server's tools, as far as the caller may see them.
pub(super) async fn tools_page(
    state: &AppState,
    caller: &Caller,
    q: McpListQuery,
) -> Result<ListToolsResult, ApiError> {
    caller.scopes().check_server(&q.server)?;
    let span = span(&q.server, "tools/list");
    let mut page = state
        .mcp()
        .list_tools(&caller.identity, &q.server, q.cursor)
        .instrument(span)
        .await
        .inspect_err(|e| counted(state, &q.server, e))?;
    caller.scopes().filter_tools(&q.server, &mut page);
    Ok(page)
}

#[utoipa::path(
    post,
    path = "/api/mcp/tool",
    tag = "mcp",
    summary = "Calls a tool",
    request_body = McpToolCall,
    responses(
        (status = 200, description = "MCP `CallToolResult` (a tool-level failure has `isError: true`)", body = Object),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn call_tool(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    ApiJson(call): ApiJson<McpToolCall>,
) -> Result<Json<CallToolResult>, AppError> {
    Ok(Json(tool_call(&state, facts, &caller, call).await?))
}

/// One tool call, scope-checked and audited.
pub(super) async fn tool_call(
    state: &AppState,
    facts: RequestFacts,
    caller: &Caller,
    call: McpToolCall,
) -> Result<CallToolResult, ApiError> {
    // Refusals are audited too: the record is made first.
    let audit = ToolAudit::new(facts, &call, false);
    if let Err(error) = caller.scopes().check_tool(&call.server, &call.name) {
        audit.finish(Err(&error));
        return Err(error);
    }
    let span = span(&call.server, "tools/call");
    let result = state
        .mcp()
        .call_tool(&caller.identity, call)
        .instrument(span)
        .await;
    audit.finish(result.as_ref());
    result
}

#[utoipa::path(
    post,
    path = "/api/mcp/tool/stream",
    tag = "mcp",
    summary = "Calls a tool, streaming its progress",
    request_body = McpToolCall,
    responses(
        (status = 200, description = "`text/event-stream`: `progress` events, then one `result` or `error`", body = McpToolEvent, content_type = "text/event-stream"),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn call_tool_stream(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiJson(call): ApiJson<McpToolCall>,
) -> Result<Response, AppError> {
    let (events, audit) = open_tool_stream(&state, facts, &caller, budget, call).await?;
    // The audit record goes with the stream and writes its line when the stream ends.
    Ok(stream_relay::tool_event_response(events, audit))
}

/// Starts a tool call with progress events: scope and stream-limit checks, then the call. The
/// audit record holds the caller's stream place and writes its line when the stream ends.
pub(super) async fn open_tool_stream(
    state: &AppState,
    facts: RequestFacts,
    caller: &Caller,
    budget: Budget,
    call: McpToolCall,
) -> Result<(ToolEventStream, Metered<ToolAudit>), ApiError> {
    let audit = ToolAudit::new(facts, &call, true);
    let permit = caller
        .scopes()
        .check_tool(&call.server, &call.name)
        .and_then(|()| state.limiter().stream(&budget));
    let permit = match permit {
        Ok(permit) => permit,
        Err(error) => {
            audit.finish(Err(&error));
            return Err(error);
        }
    };
    let span = span(&call.server, "tools/call");
    let audit = Metered::new(state.limiter(), budget, permit, audit);
    match state
        .mcp()
        .call_tool_stream(&caller.identity, call)
        .instrument(span)
        .await
    {
        Ok(events) => Ok((events, audit)),
        Err(error) => {
            audit.into_inner().finish(Err(&error));
            Err(error)
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/mcp/listResources",
    tag = "mcp",
    summary = "One page of a server's resources",
    params(McpListQuery),
    responses(
        (status = 200, description = "MCP `ListResourcesResult`", body = Object),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListResourcesResult>, AppError> {
    Ok(Json(resources_page(&state, &caller, q).await?))
}

/// One page of a server's resources.
pub(super) async fn resources_page(
    state: &AppState,
    caller: &Caller,
    q: McpListQuery,
) -> Result<ListResourcesResult, ApiError> {
    caller.scopes().check_server(&q.server)?;
    let span = span(&q.server, "resources/list");
    state
        .mcp()
        .list_resources(&caller.identity, &q.server, q.cursor)
        .instrument(span)
        .await
        .inspect_err(|e| counted(state, &q.server, e))
}

#[utoipa::path(
    post,
    path = "/api/mcp/readResource",
    tag = "mcp",
    summary = "Reads a resource",
    request_body = McpReadResource,
    responses(
        (status = 200, description = "MCP `ReadResourceResult`", body = Object),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn read_resource(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<McpReadResource>,
) -> Result<Json<ReadResourceResult>, AppError> {
    Ok(Json(resource(&state, &caller, req).await?))
}

/// Reads a resource of a server.
pub(super) async fn resource(
    state: &AppState,
    caller: &Caller,
    req: McpReadResource,
) -> Result<ReadResourceResult, ApiError> {
    caller.scopes().check_server(&req.server)?;
    let span = span(&req.server, "resources/read");
    state
        .mcp()
        .read_resource(&caller.identity, &req.server, req.uri)
        .instrument(span)
        .await
        .inspect_err(|e| counted(state, &req.server, e))
}

#[utoipa::path(
    get,
    path = "/api/mcp/listPrompts",
    tag = "mcp",
    summary = "One page of a server's prompts",
    params(McpListQuery),
    responses(
        (status = 200, description = "MCP `ListPromptsResult`", body = Object),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn list_prompts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListPromptsResult>, AppError> {
    Ok(Json(prompts_page(&state, &caller, q).await?))
}

/// One page of a server's prompts.
pub(super) async fn prompts_page(
    state: &AppState,
    caller: &Caller,
    q: McpListQuery,
) -> Result<ListPromptsResult, ApiError> {
    caller.scopes().check_server(&q.server)?;
    let span = span(&q.server, "prompts/list");
    state
        .mcp()
        .list_prompts(&caller.identity, &q.server, q.cursor)
        .instrument(span)
        .await
        .inspect_err(|e| counted(state, &q.server, e))
}

#[utoipa::path(
    post,
    path = "/api/mcp/getPrompt",
    tag = "mcp",
    summary = "Gets a prompt with its arguments filled in",
    request_body = McpGetPrompt,
    responses(
        (status = 200, description = "MCP `GetPromptResult`", body = Object),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn get_prompt(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<McpGetPrompt>,
) -> Result<Json<GetPromptResult>, AppError> {
    Ok(Json(prompt(&state, &caller, req).await?))
}

/// A server's prompt with its arguments filled in.
pub(super) async fn prompt(
    state: &AppState,
    caller: &Caller,
    req: McpGetPrompt,
) -> Result<GetPromptResult, ApiError> {
    caller.scopes().check_server(&req.server)?;
    let span = span(&req.server, "prompts/get");
    state
        .mcp()
        .get_prompt(&caller.identity, &req.server, req.name, req.arguments)
        .instrument(span)
        .await
        .inspect_err(|e| counted(state, &req.server, e))
}
