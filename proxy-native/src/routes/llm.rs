//! `/api/llm/*`: chat, streamed chat and the model list. Each handler asks the shared route table
//! for the upstream request, has the upstream module execute it and lets `shared` read the answer.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use switchyard_shared::{
    ApiError, ChatRequest, ChatResponse, ChatStreamDecoder, ModelList, StreamEvent, paths,
};

use super::openapi::Refusals;
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

#[utoipa::path(
    post,
    path = "/api/llm/chat",
    tag = "llm",
    summary = "A chat completion from any configured provider",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The complete answer", body = ChatResponse),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn chat(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Json<ChatResponse>, AppError> {
    Ok(Json(complete(&state, facts, &caller, &budget, &req).await?))
}

#[utoipa::path(
    post,
    path = "/api/llm/stream",
    tag = "llm",
    summary = "A streamed chat completion",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "`text/event-stream`: one `data:` event per StreamEvent, ending with `finish` or `error`", body = StreamEvent, content_type = "text/event-stream"),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
async fn stream(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, AppError> {
    let opened = open_stream(&state, facts, &caller, budget, &req).await?;
    // The audit record goes with the stream and writes its line when the stream ends.
    Ok(stream_relay::sse_response(
        opened.decoder,
        opened.chunks,
        opened.audit,
    ))
}

/// One non-streamed chat, audited and counted against the caller's budget: what every face
/// of the proxy answers a chat with.
pub(super) async fn complete(
    state: &AppState,
    facts: RequestFacts,
    caller: &Caller,
    budget: &Budget,
    req: &ChatRequest,
) -> Result<ChatResponse, ApiError> {
    // Refusals are audited too: the record is made first.
    let audit = ChatAudit::new(facts, req, false);
    if let Err(error) = caller.scopes().check_model(&req.model) {
        audit.finish(Err(&error));
        return Err(error);
    }
    let result = async {
        let prepared = state.routes().chat(req, false)?;
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
            .charge(budget, u64::from(usage.total_tokens))
            .await;
    }
    result
}

/// A started upstream stream, with what relays it: the decoder of its format and the audit
/// record, which holds the caller's stream place and writes its line when the stream ends.
pub(super) struct OpenedStream {
    pub(super) decoder: ChatStreamDecoder,
    pub(super) chunks: UpstreamChunks,
    pub(super) audit: Metered<ChatAudit>,
}

/// The body of an upstream stream, chunk by chunk.
pub(super) type UpstreamChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, ApiError>> + Send>>;

/// Starts a streamed chat: scope and stream-limit checks, then the upstream request up to its
/// response headers. A failure before the stream began is an ordinary error with its own status.
pub(super) async fn open_stream(
    state: &AppState,
    facts: RequestFacts,
    caller: &Caller,
    budget: Budget,
    req: &ChatRequest,
) -> Result<OpenedStream, ApiError> {
    let audit = ChatAudit::new(facts, req, true);
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
            return Err(error);
        }
    };
    let audit = Metered::new(state.limiter(), budget, permit, audit);
    let started = async {
        let prepared = state.routes().chat(req, true)?;
        let upstream = state.upstream().send(&prepared).await?;
        if !upstream.is_success() {
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
    match started {
        Ok((prepared, upstream)) => Ok(OpenedStream {
            decoder: prepared.stream_decoder(),
            chunks: Box::pin(upstream.into_chunks()),
            audit,
        }),
        Err(error) => {
            audit.into_inner().finish(Err(&error));
            Err(error)
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/llm/models",
    tag = "llm",
    summary = "The providers and models the caller may use",
    responses(
        (status = 200, description = "Configured providers, without addresses or keys", body = ModelList),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
/// Only the providers and models the caller may use.
async fn models(State(state): State<AppState>, caller: Caller) -> Json<ModelList> {
    Json(caller.scopes().filter_models(state.models()))
}
