//! `/api/llm/*`: chat, streamed chat and the model list. Each handler asks the shared route table
//! for the upstream request, has the upstream module execute it and lets `shared` read the answer.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use switchyard_shared::{ChatRequest, ChatResponse, ModelList, paths};

use crate::error::AppError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::stream_relay;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(paths::LLM_CHAT, post(chat))
        .route(paths::LLM_STREAM, post(stream))
        .route(paths::LLM_MODELS, get(models))
}

async fn chat(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Json<ChatResponse>, AppError> {
    let prepared = state.routes().chat(&req, false)?;
    let reply = state.upstream().fetch(&prepared).await?;
    let response =
        prepared.decode_response(reply.status, reply.retry_after.as_deref(), &reply.body)?;
    Ok(Json(response))
}

async fn stream(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, AppError> {
    let prepared = state.routes().chat(&req, true)?;
    let upstream = state.upstream().send(&prepared).await?;
    if !upstream.is_success() {
        // A failure before the stream began is an ordinary JSON error with its own status.
        let reply = upstream.collect().await?;
        let error = prepared.decode_error(reply.status, reply.retry_after.as_deref(), &reply.body);
        return Err(error.into());
    }
    Ok(stream_relay::sse_response(
        prepared.stream_decoder(),
        upstream.into_chunks(),
    ))
}

async fn models(State(state): State<AppState>) -> Json<ModelList> {
    Json(state.models().clone())
}
