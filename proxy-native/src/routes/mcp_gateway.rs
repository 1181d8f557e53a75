//! `/mcp`: the MCP gateway (`mcp::gateway`) as a Streamable HTTP endpoint, for MCP clients that
//! want every server the caller may use behind one URL.
//!
//! rmcp's `StreamableHttpService` speaks the protocol: sessions for clients of 2025-11-25 and
//! before, stateless requests for 2026-07-28. The proxy's layers (authentication, rate limits,
//! CORS, the Host and Origin guards, request logs) wrap it like every other route.
//!
//! What rmcp's session store does not do is kept here, where every request passes ([`admit`]):
//! - A session belongs to the caller that opened it. rmcp answers a session's `GET` (its event
//!   stream), `DELETE` and notifications without the handler, so only here can a request of
//!   another caller in the session be refused; it is answered 404, as an unknown session is.
//! - At most `max_sessions` sessions are open at once, `max_sessions_per_user` of them one
//!   caller's: each holds a task and its buffers, and rmcp's store has no bound of its own. A
//!   further `initialize` is answered 503 with `Retry-After`. Openings are serialized, so the
//!   count cannot be overtaken between the check and the new session.
//! - A session without requests from its client for `session_idle_timeout_ms` is closed. rmcp's
//!   own timer counts the server's messages too, so a session whose client left would be kept
//!   open by every changed list the gateway passes on; the sweep runs before each opening.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{SessionId, SessionManager};

use super::builtin_mcp::{http_config, json_rpc_error, read_message};
use crate::identity::Identity;
use crate::mcp::gateway::Gateway;
use crate::state::AppState;

/// Where the gateway is served.
pub const GATEWAY_PATH: &str = "/mcp";

/// Seconds a client refused for want of a session place is asked to wait.
const FULL_RETRY_AFTER_SECONDS: u32 = 5;

const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// The gateway's route, when it is enabled.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let config = state.gateway();
    if !config.enabled {
        return Router::new();
    }
    let mut sessions = LocalSessionManager::default();
    // rmcp's own timer stays, as a backstop for sessions nobody opens again (the sweep runs
    // only when a new session is opened).
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
        owners: Arc::default(),
        opening: Arc::default(),
        max: config.max_sessions,
        max_per_user: config.max_sessions_per_user,
        idle: config.session_idle_timeout(),
    };
    Router::new()
        .route_service(GATEWAY_PATH, service)
        .route_layer(middleware::from_fn_with_state(admission, admit))
}

/// The open sessions' owners, and what bounds them.
#[derive(Clone)]
struct Admission {
    sessions: Arc<LocalSessionManager>,
    owners: Arc<Mutex<HashMap<SessionId, Owner>>>,
    /// Held while a session is being opened.
    opening: Arc<tokio::sync::Mutex<()>>,
    max: usize,
    max_per_user: usize,
    idle: Duration,
}

/// Whose a session is, and when its client last sent a request in it.
struct Owner {
    identity: Identity,
    last_seen: Instant,
}

impl Admission {
    fn owners(&self) -> MutexGuard<'_, HashMap<SessionId, Owner>> {
        // Never held across an await.
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets sessions rmcp has closed, and closes those idle too long.
    async fn sweep(&self) {
        let live: HashSet<SessionId> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .cloned()
            .collect();
        let idle: Vec<SessionId> = {
            let mut owners = self.owners();
            owners.retain(|id, _| live.contains(id));
            owners
                .iter()
                .filter(|(_, owner)| owner.last_seen.elapsed() > self.idle)
                .map(|(id, _)| Arc::clone(id))
                .collect()
        };
        for id in idle {
            tracing::debug!("closing an MCP gateway session its client has not used");
            if let Err(error) = self.sessions.close_session(&id).await {
                tracing::warn!(%error, "closing an idle MCP gateway session failed");
            }
            self.owners().remove(&id);
        }
    }
}

/// Refuses a body that is not one JSON-RPC message (400); a request in a session that is not the
/// caller's (404); an `initialize` while the caller's or all session places are taken (503).
async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let (request, message) = match read_message(request).await {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    // Set by the authentication layer, which every route is behind.
    let identity = request.extensions().get::<Identity>().cloned();
    let session = request
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(SessionId::from);
    if let Some(session) = session {
        {
            let mut owners = admission.owners();
            if let Some(owner) = owners.get_mut(&session) {
                if Some(&owner.identity) != identity.as_ref() {
                    return session_not_found();
                }
                owner.last_seen = Instant::now();
            }
        }
        let closing = request.method() == Method::DELETE;
        let response = next.run(request).await;
        if closing && response.status().is_success() {
            admission.owners().remove(&session);
        }
        return response;
    }
    let initialize = match &message {
        Some(ClientJsonRpcMessage::Request(request))
            if matches!(request.request, ClientRequest::InitializeRequest(_)) =>
        {
            Some(request.id.clone())
        }
        _ => None,
    };
    let (Some(id), Some(identity)) = (initialize, identity) else {
        return next.run(request).await;
    };
    let _opening = admission.opening.lock().await;
    admission.sweep().await;
    let (open, theirs) = {
        let owners = admission.owners();
        let theirs = owners
            .values()
            .filter(|owner| owner.identity == identity)
            .count();
        (owners.len(), theirs)
    };
    if open >= admission.max || theirs >= admission.max_per_user {
        tracing::warn!(
            open,
            theirs,
            max_sessions = admission.max,
            max_sessions_per_user = admission.max_per_user,
            "MCP gateway session refused: no place"
        );
        let message = if theirs >= admission.max_per_user {
            "this caller has as many MCP gateway sessions open as it may; close one, or try again later"
        } else {
            "the MCP gateway has as many sessions open as it allows; try again later"
        };
        // The answer is to this `initialize`: it names its id.
        let id = serde_json::to_value(&id).unwrap_or_default();
        let mut refusal = json_rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, -32000, message);
        refusal
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER_SECONDS));
        return refusal;
    }
    let response = next.run(request).await;
    if let Some(session) = response
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
    {
        admission.owners().insert(
            SessionId::from(session),
            Owner {
                identity,
                last_seen: Instant::now(),
            },
        );
    }
    response
}

/// What a request in a session that is not (or no longer) the caller's gets: rmcp's answer for
/// an unknown session, so that nothing tells the two apart.
fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response()
}
