//! The HTTP API: one file per route group, assembled here with the shared 404/405 answers and the
//! layers.

mod builtin_mcp;
mod health;
mod llm;
mod mcp;
mod mcp_gateway;
mod mock;
mod openai;
pub mod openapi;
mod page;
mod tokens;
mod ws;

use axum::Router;
use axum::http::{Method, Uri};
use switchyard_shared::{ApiError, ErrorCode};

use crate::error::AppError;
use crate::layers;
use crate::state::AppState;

/// All routes, with the layers applied.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(llm::routes())
        .merge(openai::routes())
        .merge(openapi::routes())
        .merge(tokens::routes())
        .merge(mcp::routes())
        .merge(ws::routes())
        .merge(builtin_mcp::routes(&state))
        .merge(mcp_gateway::routes(&state))
        .merge(health::routes(&state))
        .merge(mock::routes(&state))
        .merge(page::routes(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    layers::apply(
        routes,
        state.server(),
        state.observability().metrics(),
        state.auth(),
        state.limiter(),
    )
    .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    ))
}
