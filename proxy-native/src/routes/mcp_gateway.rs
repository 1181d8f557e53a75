//! `/mcp`: the MCP gateway (`mcp::gateway`) as a Streamable HTTP endpoint, for MCP clients that
//! want every server the caller may use behind one URL.
//!
//! rmcp's `StreamableHttpService` speaks the protocol: sessions for clients of 2025-11-25 and
//! before, stateless requests for 2026-07-28. The proxy's layers (authentication, rate limits,
//! CORS, the Host and Origin guards, request logs) wrap it like every other route.
//!
//! What rmcp's session store does not do is kept here, where every request passes ([`admit`]):
//! - Session ids are sealed ([`sealed`]): the id a client holds carries whose session it is and
//!   the client's `initialize`, so any instance with the same `session_key` serves it, restoring
//!   it in rmcp from that `initialize` when it does not hold it. A request whose id does not
//!   open, has expired, was ended by a `DELETE` (here, or on any instance when `[cluster]` names
//!   a Redis), or belongs to another caller is answered
//!   404, as an unknown session is; MCP clients then initialize again.
//! - At most `max_sessions` sessions are held at once, `max_sessions_per_user` of them one
//!   caller's: each holds a task and its buffers, and rmcp's store has no bound of its own. A
//!   further `initialize`, or a request that would restore a session, is answered 503 with
//!   `Retry-After`. Openings are serialized, so the count cannot be overtaken between the check
//!   and the new session.
//! - A session without requests from its client for `session_idle_timeout_ms` is closed here;
//!   its client's next request restores it. rmcp's own timer counts the server's messages too,
//!   so a session whose client left would be kept open by every changed list the gateway passes
//!   on; the sweep runs before each opening.

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
use rmcp::transport::streamable_http_server::session::SessionStore;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{SessionId, SessionManager};

use self::sealed::{Handshakes, Sealer};
use super::builtin_mcp::{http_config, json_rpc_error, read_message};
use crate::error::AppError;
use crate::identity::Identity;
use crate::limits::Limiter;
use crate::mcp::gateway::Gateway;
use crate::state::AppState;

mod sealed;

/// Where the gateway is served.
pub const GATEWAY_PATH: &str = "/mcp";

/// Seconds a client refused for want of a session place is asked to wait.
const FULL_RETRY_AFTER_SECONDS: u32 = 5;

/// How long a restore may hold its reserved place before rmcp holds the session: rmcp gives
/// a session's handshake a minute.
const RESTORE_GRACE: Duration = Duration::from_secs(60);

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
    let handshakes = Arc::new(Handshakes::default());
    let sealer = match Sealer::new(config.session_key.as_ref(), config.session_max_age()) {
        Ok(sealer) => Arc::new(sealer),
        Err(error) => {
            tracing::error!(%error, "no key for MCP gateway sessions; the gateway is off");
            return Router::new();
        }
    };
    if config.session_key.is_none() {
        tracing::info!(
            "MCP gateway sessions are sealed with a key made at start-up: no other instance can resume them; set mcp_gateway.session_key_env to share one"
        );
    }
    let mut http = http_config(state.server()).with_legacy_session_mode(true);
    http.session_store = Some(Arc::clone(&handshakes) as Arc<dyn SessionStore>);
    let service = StreamableHttpService::new(
        move || Ok(Gateway::new(handler_state.clone())),
        Arc::clone(&sessions),
        http,
    );
    let admission = Admission {
        limiter: Arc::clone(state.limiter()),
        sealer,
        handshakes,
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
    sealer: Arc<Sealer>,
    handshakes: Arc<Handshakes>,
    /// Holds the store the instances share, where ended sessions are recorded.
    limiter: Arc<Limiter>,
}

/// Whose a session is, and when its client last sent a request in it.
struct Owner {
    identity: Identity,
    last_seen: Instant,
    /// Set while a restore of the session is under way: rmcp holds it only once the restore
    /// has begun, and until then the sweep must not take the place back.
    restoring_since: Option<Instant>,
}

impl Admission {
    fn owners(&self) -> MutexGuard<'_, HashMap<SessionId, Owner>> {
        // Never held across an await.
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request of `identity` in `session`, adopting a session rmcp holds that has no
    /// owner here yet; false when the session's owner is someone else.
    fn touch(&self, session: &SessionId, identity: &Identity) -> bool {
        let mut owners = self.owners();
        let owner = owners.entry(Arc::clone(session)).or_insert_with(|| Owner {
            identity: identity.clone(),
            last_seen: Instant::now(),
            restoring_since: None,
        });
        if owner.identity != *identity {
            return false;
        }
        owner.last_seen = Instant::now();
        owner.restoring_since = None;
        true
    }

    /// Whether rmcp serves `session` in this process.
    async fn holds(&self, session: &SessionId) -> bool {
        self.sessions.sessions.read().await.contains_key(session)
    }

    /// A 503 answering request `id` when the caller's or all session places are taken.
    fn refuse_when_full(&self, identity: &Identity, id: serde_json::Value) -> Option<Response> {
        let (open, theirs) = {
            let owners = self.owners();
            let theirs = owners
                .values()
                .filter(|owner| owner.identity == *identity)
                .count();
            (owners.len(), theirs)
        };
        if open < self.max && theirs < self.max_per_user {
            return None;
        }
        tracing::warn!(
            open,
            theirs,
            max_sessions = self.max,
            max_sessions_per_user = self.max_per_user,
            "MCP gateway session refused: no place"
        );
        let message = if theirs >= self.max_per_user {
            "this caller has as many MCP gateway sessions open as it may; close one, or try again later"
        } else {
            "the MCP gateway has as many sessions open as it allows; try again later"
        };
        let mut refusal = json_rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, -32000, message);
        refusal
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER_SECONDS));
        Some(refusal)
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
            owners.retain(|id, owner| {
                live.contains(id)
                    || owner
                        .restoring_since
                        .is_some_and(|since| since.elapsed() < RESTORE_GRACE)
            });
            owners
                .iter()
                .filter(|(_, owner)| owner.last_seen.elapsed() > self.idle)
                .map(|(id, _)| Arc::clone(id))
                .collect()
        };
        for id in idle {
            // Used again meanwhile: kept.
            let still_idle = self
                .owners()
                .get(&id)
                .is_some_and(|owner| owner.last_seen.elapsed() > self.idle);
            if !still_idle {
                continue;
            }
            tracing::debug!("closing an MCP gateway session its client has not used");
            if let Err(error) = self.sessions.close_session(&id).await {
                tracing::warn!(%error, "closing an idle MCP gateway session failed");
            }
            self.owners().remove(&id);
        }
    }
}

/// Refuses a body that is not one JSON-RPC message (400); a request in a session that is not the
/// caller's (404); an `initialize` or a restore while the caller's or all session places are
/// taken (503). Seals the ids of new sessions and opens those of later requests.
async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let (request, message) = match read_message(request).await {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    // Set by the authentication layer, which every route is behind; without it, refuse. A
    // token minted for a caller holds that caller's sessions and places.
    let Some(identity) = request
        .extensions()
        .get::<Identity>()
        .map(Identity::principal)
    else {
        return session_not_found();
    };
    let request_id = match &message {
        Some(ClientJsonRpcMessage::Request(request)) => {
            serde_json::to_value(&request.id).unwrap_or_default()
        }
        _ => serde_json::Value::Null,
    };
    if request.headers().contains_key(&MCP_SESSION_ID) {
        return in_session(&admission, request, identity, request_id, next).await;
    }
    let initialize = matches!(&message, Some(ClientJsonRpcMessage::Request(request))
        if matches!(request.request, ClientRequest::InitializeRequest(_)));
    if !initialize {
        return next.run(request).await;
    }
    let _opening = admission.opening.lock().await;
    admission.sweep().await;
    if let Some(refusal) = admission.refuse_when_full(&identity, request_id.clone()) {
        return refusal;
    }
    let mut response = next.run(request).await;
    let Some(session) = response
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(SessionId::from)
    else {
        return response;
    };
    let sealed = admission
        .handshakes
        .take_opened(&session)
        .ok_or_else(|| std::io::Error::other("the session's initialize was not stored"))
        .and_then(|init| admission.sealer.seal(&session, &identity, init))
        .and_then(|sealed| HeaderValue::from_str(&sealed).map_err(std::io::Error::other));
    match sealed {
        Ok(sealed) => {
            response.headers_mut().insert(MCP_SESSION_ID, sealed);
            admission.owners().insert(
                session,
                Owner {
                    identity,
                    last_seen: Instant::now(),
                    restoring_since: None,
                },
            );
            response
        }
        Err(error) => {
            if let Err(error) = admission.sessions.close_session(&session).await {
                tracing::warn!(%error, "closing an unsealed MCP gateway session failed");
            }
            if error.kind() == std::io::ErrorKind::InvalidInput {
                return json_rpc_error(
                    StatusCode::BAD_REQUEST,
                    request_id,
                    -32602,
                    "the initialize request's client information and capabilities are too large to keep in a session",
                );
            }
            tracing::error!(%error, "MCP gateway session could not be sealed");
            json_rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                request_id,
                -32603,
                "the session could not be opened",
            )
        }
    }
}

/// A request in a session: its sealed id opened and checked, swapped for rmcp's own, and the
/// session restored when it is not held here.
async fn in_session(
    admission: &Admission,
    mut request: Request,
    identity: Identity,
    request_id: serde_json::Value,
    next: Next,
) -> Response {
    let opened = request
        .headers()
        .get(&MCP_SESSION_ID)
        .and_then(|sealed| sealed.to_str().ok())
        .and_then(|sealed| admission.sealer.open(sealed))
        .filter(|opened| {
            opened.belongs_to(&identity) && !admission.handshakes.ended(&opened.inner)
        });
    let Some((opened, inner)) = opened.and_then(|opened| {
        let inner = HeaderValue::from_str(&opened.inner).ok()?;
        Some((opened, inner))
    }) else {
        return session_not_found();
    };
    // Ended on another instance: known through the store the instances share, if any.
    match admission.limiter.gateway_session_ended(&opened.inner).await {
        Ok(false) => {}
        Ok(true) => return session_not_found(),
        Err(error) => return AppError(error).into_response(),
    }
    request.headers_mut().insert(MCP_SESSION_ID, inner);
    let session = SessionId::from(opened.inner.as_str());
    if request.method() == Method::DELETE {
        admission.handshakes.end(&opened.inner, opened.expires);
        admission
            .limiter
            .end_gateway_session(&opened.inner, opened.remaining())
            .await;
        if !admission.holds(&session).await {
            admission.owners().remove(&session);
            // Ended where it is not held: nothing to close here. rmcp's answer to a DELETE.
            return StatusCode::ACCEPTED.into_response();
        }
        let response = next.run(request).await;
        if response.status().is_success() {
            admission.owners().remove(&session);
        }
        return response;
    }
    // Offered for the whole request: should the session be closed (idle) between the check
    // below and rmcp's own, rmcp restores it rather than answering 404.
    let _offered = admission.handshakes.offer(&opened.inner, opened.init);
    if admission.holds(&session).await {
        if !admission.touch(&session, &identity) {
            return session_not_found();
        }
        return next.run(request).await;
    }
    // Opened elsewhere, or closed here when idle: rmcp restores it from the unsealed
    // `initialize`, which takes a place like an opening.
    let reserved = {
        let _opening = admission.opening.lock().await;
        admission.sweep().await;
        let mut reserved = false;
        if !admission.owners().contains_key(&session) {
            if let Some(refusal) = admission.refuse_when_full(&identity, request_id) {
                return refusal;
            }
            // Reserved before rmcp holds it, so that concurrent openings count it and the
            // sweep keeps it while the restore runs.
            admission.owners().insert(
                Arc::clone(&session),
                Owner {
                    identity: identity.clone(),
                    last_seen: Instant::now(),
                    restoring_since: Some(Instant::now()),
                },
            );
            reserved = true;
        }
        reserved
    };
    let response = next.run(request).await;
    if admission.holds(&session).await {
        admission.touch(&session, &identity);
    } else if reserved {
        admission.owners().remove(&session);
    }
    response
}

/// What a request in a session that is not (or no longer) the caller's gets: rmcp's answer for
/// an unknown session, so that nothing tells the two apart.
fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response()
}
