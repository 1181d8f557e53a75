//! `/v1/*`: the OpenAI-compatible face. `POST /v1/chat/completions` (streamed or not) and
//! `GET /v1/models` in OpenAI's wire format, so clients built for OpenAI reach every configured
//! provider by `"<provider>/<model>"`. The same keys, scopes, limits, audit and metrics apply as
//! on `/api/llm/*` (the chat itself is the same code); errors take OpenAI's shape
//! (`layers::OpenAiErrorsLayer`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use switchyard_shared::faces::openai;
use switchyard_shared::paths;

use super::llm;
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::ApiBody;
use crate::limits::Budget;
use crate::observability::RequestFacts;
use crate::state::AppState;
use crate::stream_relay;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(paths::OPENAI_CHAT_COMPLETIONS, post(chat_completions))
        .route(paths::OPENAI_MODELS, get(models))
}

async fn chat_completions(
    State(state): State<AppState>,
    facts: RequestFacts,
    caller: Caller,
    budget: Budget,
    ApiBody(body): ApiBody,
) -> Result<Response, AppError> {
    let face = openai::parse_request(&body)?;
    let created = unix_seconds();
    if !face.stream {
        let answer = llm::complete(&state, facts, &caller, &budget, &face.chat).await?;
        return Ok(json(openai::completion(&answer, created)));
    }
    let opened = llm::open_stream(&state, facts, &caller, budget, &face.chat).await?;
    let encoder = openai::ChunkEncoder::new(&face.chat.model, created, face.include_usage);
    Ok(stream_relay::openai_sse_response(
        opened.decoder,
        opened.chunks,
        opened.audit,
        encoder,
    ))
}

/// The models the caller may use, as OpenAI lists models.
async fn models(State(state): State<AppState>, caller: Caller) -> Response {
    json(openai::model_list(
        &caller.scopes().filter_models(state.models()),
    ))
}

fn json(body: String) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

/// OpenAI's `created`: Unix seconds. A clock before 1970 reads as 0 rather than failing a chat.
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
