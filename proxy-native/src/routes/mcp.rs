//! `/api/mcp/*`: the configured MCP servers' tools, resources and prompts. Each handler names a
//! configured server (never an address or a command) and hands the request to the session pool;
//! answers are MCP's own result types, unchanged.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use rmcp::model::{
    CallToolResult, GetPromptResult, ListPromptsResult, ListResourcesResult, ListToolsResult,
    ReadResourceResult,
};
use switchyard_shared::mcp::{
    McpGetPrompt, McpListQuery, McpReadResource, McpServerList, McpToolCall,
};
use switchyard_shared::paths;
use tracing::{Instrument, Span};

use crate::error::AppError;
use crate::extract::{ApiJson, ApiQuery};
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

async fn servers(State(state): State<AppState>) -> Json<McpServerList> {
    Json(state.mcp().servers().clone())
}

async fn list_tools(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListToolsResult>, AppError> {
    let span = span(&q.server, "tools/list");
    let page = state
        .mcp()
        .list_tools(&q.server, q.cursor)
        .instrument(span)
        .await?;
    Ok(Json(page))
}

async fn call_tool(
    State(state): State<AppState>,
    ApiJson(call): ApiJson<McpToolCall>,
) -> Result<Json<CallToolResult>, AppError> {
    let span = span(&call.server, "tools/call");
    Ok(Json(state.mcp().call_tool(call).instrument(span).await?))
}

async fn call_tool_stream(
    State(state): State<AppState>,
    ApiJson(call): ApiJson<McpToolCall>,
) -> Result<Response, AppError> {
    let span = span(&call.server, "tools/call");
    let events = state.mcp().call_tool_stream(call).instrument(span).await?;
    // One write per event, as it happens; dropping the body (the client went away) drops the
    // call, which cancels it upstream.
    let frames = events.map(|event| Ok::<_, Infallible>(Bytes::from(event.to_sse())));
    Ok(stream_relay::event_stream_response(Body::from_stream(
        frames,
    )))
}

async fn list_resources(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListResourcesResult>, AppError> {
    let span = span(&q.server, "resources/list");
    let page = state
        .mcp()
        .list_resources(&q.server, q.cursor)
        .instrument(span)
        .await?;
    Ok(Json(page))
}

async fn read_resource(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<McpReadResource>,
) -> Result<Json<ReadResourceResult>, AppError> {
    let span = span(&req.server, "resources/read");
    let result = state
        .mcp()
        .read_resource(&req.server, req.uri)
        .instrument(span)
        .await?;
    Ok(Json(result))
}

async fn list_prompts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<McpListQuery>,
) -> Result<Json<ListPromptsResult>, AppError> {
    let span = span(&q.server, "prompts/list");
    let page = state
        .mcp()
        .list_prompts(&q.server, q.cursor)
        .instrument(span)
        .await?;
    Ok(Json(page))
}

async fn get_prompt(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<McpGetPrompt>,
) -> Result<Json<GetPromptResult>, AppError> {
    let span = span(&req.server, "prompts/get");
    let result = state
        .mcp()
        .get_prompt(&req.server, req.name, req.arguments)
        .instrument(span)
        .await?;
    Ok(Json(result))
}
