//! Scopes on the endpoints that serve built-in upstreams over HTTP for direct mode: a mock
//! provider at `/mock/<name>/v1` and a built-in MCP server at `/mcp/<name>`. Their handlers speak
//! OpenAI's and MCP's own protocols, so the checks that `/api/*` handlers make in a line are made
//! here by looking at the request body (the model asked for, the tool called) and, for lists, by
//! removing from the answer what the caller may not use.
//!
//! A caller whose scopes cover the whole provider or server passes without any of this.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use switchyard_shared::ApiError;

use super::Caller;
use crate::error::AppError;
use crate::extract::buffer_body;

/// The largest answer a list filter reads; tool and model lists are far smaller.
const MAX_FILTERED_BYTES: usize = 16 * 1024 * 1024;

/// Guards `/mock/<provider>/v1`: the caller must be allowed some model of `provider`; a chat
/// request's `model` is checked, and `GET models` lists only the caller's models.
pub async fn mock_provider(
    State(provider): State<Arc<str>>,
    caller: Caller,
    request: Request,
    next: Next,
) -> Response {
    guard_mock(&provider, &caller, request, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn guard_mock(
    provider: &str,
    caller: &Caller,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let scopes = caller.scopes();
    scopes.check_provider(provider)?;
    if scopes.may_use_every_model(provider) {
        return Ok(next.run(request).await);
    }
    if request.method() == Method::GET {
        let response = next.run(request).await;
        return rewrite_json(response, |list| {
            // OpenAI's list: `{"data": [{"id": ...}, ...]}`.
            if let Some(models) = list.get_mut("data").and_then(Value::as_array_mut) {
                models.retain(|m| {
                    m.get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|id| scopes.may_use_model(provider, id))
                });
            }
        })
        .await;
    }
    let (request, body) = peek_json(request).await?;
    // A body without a model is the mock's own 400.
    if let Some(model) = body.as_ref().and_then(|b| b.get("model")?.as_str()) {
        scopes.check_model_of(provider, model)?;
    }
    Ok(next.run(request).await)
}

/// Guards `/mcp/<server>`: the caller must be allowed `server`; every `tools/call` in the body is
/// checked, and a `tools/list` answer keeps only the caller's tools.
pub async fn mcp_server(
    State(server): State<Arc<str>>,
    caller: Caller,
    request: Request,
    next: Next,
) -> Response {
    guard_mcp(&server, &caller, request, next)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn guard_mcp(
    server: &str,
    caller: &Caller,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let scopes = caller.scopes();
    scopes.check_server(server)?;
    if scopes.may_use_every_tool(server) || request.method() != Method::POST {
        // Only POST carries requests (GET opens a notification stream, DELETE ends a session).
        return Ok(next.run(request).await);
    }
    let (request, body) = peek_json(request).await?;
    let mut lists_tools = false;
    for message in messages(body.as_ref()) {
        match message.get("method").and_then(Value::as_str) {
            Some("tools/call") => {
                let tool = message
                    .pointer("/params/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                scopes.check_tool(server, tool)?;
            }
            Some("tools/list") => lists_tools = true,
            _ => {}
        }
    }
    let response = next.run(request).await;
    if !lists_tools {
        return Ok(response);
    }
    rewrite_json(response, |answer| {
        let answers = match answer {
            Value::Array(answers) => answers.iter_mut().collect(),
            answer => vec![answer],
        };
        for answer in answers {
            if let Some(tools) = answer
                .pointer_mut("/result/tools")
                .and_then(Value::as_array_mut)
            {
                tools.retain(|t| {
                    t.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|name| scopes.may_use_tool(server, name))
                });
            }
        }
    })
    .await
}

/// The JSON-RPC messages of a body: one object, or the objects of a batch.
fn messages(body: Option<&Value>) -> Vec<&Value> {
    match body {
        Some(Value::Array(batch)) => batch.iter().collect(),
        Some(message @ Value::Object(_)) => vec![message],
        _ => Vec::new(),
    }
}

/// Reads the body and gives the request back with it; the body's JSON when it is JSON (anything
/// else is left for the endpoint to refuse in its own terms).
async fn peek_json(request: Request) -> Result<(Request, Option<Value>), AppError> {
    let (request, bytes) = buffer_body(request).await?;
    Ok((request, serde_json::from_slice(&bytes).ok()))
}

/// Applies `edit` to a successful JSON answer. An answer that cannot be read as JSON is refused
/// rather than passed on unfiltered.
async fn rewrite_json(
    response: Response,
    edit: impl FnOnce(&mut Value),
) -> Result<Response, AppError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let cannot = || {
        AppError(ApiError::internal(
            "the answer could not be narrowed to this caller's scopes",
        ))
    };
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(cannot());
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FILTERED_BYTES)
        .await
        .map_err(|_| cannot())?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|_| cannot())?;
    edit(&mut value);
    let bytes = serde_json::to_vec(&value).map_err(|_| cannot())?;
    parts.headers.remove(CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
