//! `/mcp`: the MCP gateway (`mcp::gateway`) as a Streamable HTTP endpoint, for MCP clients that
//! want every server the caller may use behind one URL.
//!
//! rmcp's `StreamableHttpService` speaks the protocol: sessions for clients of 2025-11-25 and
//! before (kept in memory, closed after `session_idle_timeout_ms` without requests), stateless
//! requests for 2026-07-28. The proxy's layers (authentication, rate limits, CORS, the Host and
//! Origin guards, request logs) wrap it like every other route.
//!
//! At most `max_sessions` sessions are open at once: rmcp's session store has no bound of its
//! own, and each session holds a task and its buffers, so an `initialize` beyond the bound is
//! answered 503 with `Retry-After` here, before rmcp makes the session.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::builtin_mcp::{http_config, json_rpc_error, read_message};
use crate::mcp::gateway::Gateway;
use crate::state::AppState;

/// Where the gateway is served.
pub const GATEWAY_PATH: &str = "/mcp";

/// Seconds a client refused for want of a session place is asked to wait.
const FULL_RETRY_AFTER_SECONDS: u32 = 5;

/// The gateway's route, when it is enabled.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let config = state.gateway();
    if !config.enabled {
        return Router::new();
    }
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(config.session_idle_timeout());
    let sessions = Arc::new(sessions);
    let handler_state = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(Gateway::new(handler_state.clone())),
        Arc::clone(&sessions),
        http_config(state.server()).with_legacy_session_mode(true),
    );
    let admission = Admission {
        sessions,
        max: config.max_sessions,
    };
    Router::new()
        .route_service(GATEWAY_PATH, service)
        .route_layer(middleware::from_fn_with_state(admission, admit))
}

/// What [`admit`] needs: the open sessions and their bound.
#[derive(Clone)]
struct Admission {
    sessions: Arc<LocalSessionManager>,
    max: usize,
}

/// Refuses a body that is not one JSON-RPC message (400), and an `initialize` while every
/// session place is taken (503).
async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let (request, message) = match read_message(request).await {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    let opens_session = matches!(
        &message,
        Some(ClientJsonRpcMessage::Request(request))
            if matches!(request.request, ClientRequest::InitializeRequest(_))
    );
    if opens_session && admission.sessions.sessions.read().await.len() >= admission.max {
        tracing::warn!(
            max_sessions = admission.max,
            "MCP gateway session refused: all places taken"
        );
        let mut refusal = json_rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            -32000,
            "the MCP gateway has as many sessions open as it allows; try again later",
        );
        refusal
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER_SECONDS));
        return refusal;
    }
    next.run(request).await
}
