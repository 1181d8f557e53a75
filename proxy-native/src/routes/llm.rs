//! `/api/llm/*`: chat, streamed chat and the model list. Each handler asks the shared route table
//! for the upstream request, has the upstream module execute it and lets `shared` read the answer.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use switchyard_shared::{ChatRequest, ChatResponse, ModelList, paths};

use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::ApiJson;
use crate::limits::{Budget, Metered};
use crate::observability::{ChatAudit, RequestFacts};
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
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Json<ChatResponse>, AppError> {
    // Refusals are audited too: the record is made first.
    let audit = ChatAudit::new(facts, &req, false);
    if let Err(error) = caller.scopes().check_model(&req.model) {
        audit.finish(Err(&error));
        return Err(error.into());
    }
    let result = async {
        let prepared = state.routes().chat(&req, false)?;
        let reply = state.upstream().fetch(&prepared).await?;
        prepared.decode_response(reply.status, reply.retry_after.as_deref(), &reply.body)
    }
    .await;
    audit.finish(result.as_ref());
    if let Ok(ChatResponse {
        usage: Some(usage), ..
    }) = &result
    {
        state
            .limiter()
            .tokens(&budget, u64::from(usage.total_tokens));
    }
    Ok(Json(result?))
}

async fn stream(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, AppError> {
    let audit = ChatAudit::new(facts, &req, true);
    // Before the upstream is asked: a caller out of scope or over their open streams costs
    // nothing upstream (and is audited).
    let permit = caller
        .scopes()
        .check_model(&req.model)
        .and_then(|()| state.limiter().stream(&budget));
    let permit = match permit {
        Ok(permit) => permit,
        Err(error) => {
            audit.finish(Err(&error));
            return Err(error.into());
        }
    };
    let audit = Metered::new(state.limiter(), budget, permit, audit);
    let started = async {
        let prepared = state.routes().chat(&req, true)?;
        let upstream = state.upstream().send(&prepared).await?;
        if !upstream.is_success() {
            // A failure before the stream began is an ordinary JSON error with its own status.
            let reply = upstream.collect().await?;
            return Err(prepared.decode_error(
                reply.status,
                reply.retry_after.as_deref(),
                &reply.body,
            ));
        }
        Ok((prepared, upstream))
    }
    .await;
    let (prepared, upstream) = match started {
        Ok(started) => started,
        Err(error) => {
            audit.into_inner().finish(Err(&error));
            return Err(error.into());
        }
    };
    // The audit record goes with the stream and writes its line when the stream ends.
    Ok(stream_relay::sse_response(
        prepared.stream_decoder(),
        upstream.into_chunks(),
        audit,
    ))
}

/// Only the providers and models the caller may use.
async fn models(State(state): State<AppState>, caller: Caller) -> Json<ModelList> {
    Json(caller.scopes().filter_models(state.models()))
}
