//! `POST /api/tokens`: a short-lived token for the caller, with at most its scopes and limits
//! (`auth/tokens.rs`), for a browser to hold instead of a long-lived key.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use switchyard_shared::paths;
use switchyard_shared::tokens::{TokenRequest, TokenResponse};

use super::openapi::Refusals;
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::ApiJson;
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(paths::TOKENS, post(mint))
}

#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "auth",
    summary = "Mint a short-lived token for the caller",
    description = "The token stands for the caller, with the scopes and limits asked for \
                   (each within the caller's: wider is `403 forbidden`), until `expires_at`. \
                   Send it as `Authorization: Bearer <token>`.",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The token", body = TokenResponse),
        Refusals,
    ),
    security(("bearer" = [])),
)]
async fn mint(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, AppError> {
    Ok(Json(state.auth().mint(&caller, &request)?))
}
