//! `GET /api/ws`: the proxy API over one WebSocket. The protocol, its limits and close codes are
//! `switchyard_shared::ws` (a sans-IO [`ServerSession`]); this driver moves its frames on and off
//! the socket, brings the clock, and runs each request through the same functions as its HTTP
//! route (`llm.rs`, `mcp.rs`), so that scopes, rate limits, stream places, token accounting,
//! audit lines and metrics (under the operation's HTTP route) are the same.
//!
//! One task reads the socket and drives the session; one writes what the session queues, as fast
//! as the socket takes it (which is what the session's queue limits measure); each request runs
//! in a task of its own, and a stream's producer waits while the session's queue is full, so a
//! client that reads slowly slows the upstream down instead of growing memory. Cancelling a
//! request, or losing the socket, drops its task, which drops the upstream stream or MCP call
//! as an HTTP client going away does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{Extensions, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::stream::SplitSink;
use futures::{SinkExt, Stream, StreamExt};
use serde::Serialize;
use switchyard_shared::ws::{
    self, Action, Limits, OpKind, Operation, Pushed, ServerSession, Transmit, close_code,
};
use switchyard_shared::{ApiError, ErrorCode};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tower_http::request_id::RequestId;

use super::openapi::Refusals;
use super::{llm, mcp};
use crate::auth::Caller;
use crate::error::AppError;
use crate::limits::Budget;
use crate::observability::RequestFacts;
use crate::shutdown::DrainPhase;
use crate::state::AppState;
use crate::stream_relay;

/// The longest wait between two looks at the session's deadlines: a stream that starts waiting
/// for room moves the next deadline, and this bounds how late its stall is noticed.
const TICK: Duration = Duration::from_secs(1);

/// How long the peer gets to answer our close frame before the socket is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(ws::PATH, get(upgrade))
}

#[utoipa::path(
    get,
    path = "/api/ws",
    tag = "ws",
    summary = "Upgrades to a WebSocket that carries every operation of this API",
    description = "Send `Upgrade: websocket`. Frames are JSON text messages: requests \
                   `{\"id\", \"op\", \"body\"}` whose `body` is the body (or query) of the HTTP \
                   route named by `op`, answered with `result`, `event`s then `end`, or `error` \
                   under the same `id`. Authenticate with the `Authorization` header of the \
                   upgrade request or with a first frame `{\"op\": \"auth\", \"token\": ...}`; \
                   never in the URL. The same scopes and limits apply as on the HTTP routes.",
    responses(
        (status = 101, description = "Switching protocols: the WebSocket is open"),
        Refusals,
    ),
    security((), ("bearer" = [])),
)]
/// Opens the socket. The caller recorded by the authentication layer (from the `Authorization`
/// header) is the connection's; without one, the first frame must authenticate.
async fn upgrade(
    State(state): State<AppState>,
    extensions: Extensions,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return AppError(ApiError::bad_request(format!(
                "{} upgrades to a WebSocket: {rejection}",
                ws::PATH
            )))
            .into_response();
        }
    };
    let caller = Caller::of(&extensions);
    let request_id = extensions
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let limits = Limits::with_body_limit(state.server().max_body_bytes);
    // The library refuses a larger frame before it is buffered whole.
    upgrade
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| serve(state, socket, caller, request_id, limits))
}

/// The session and what wakes the tasks that share it.
struct Shared {
    session: Mutex<ServerSession>,
    /// A frame was queued: wakes the writer.
    queued: Notify,
    /// A frame was written: wakes producers waiting for room.
    room: Notify,
    epoch: Instant,
}

impl Shared {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn session(&self) -> MutexGuard<'_, ServerSession> {
        // The session is plain data, never left half-changed by a panic of its own.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` on the session and wakes the writer for what it may have queued.
    fn with<T>(&self, change: impl FnOnce(&mut ServerSession) -> T) -> T {
        let out = change(&mut self.session());
        self.queued.notify_one();
        out
    }
}

/// What every request of one connection shares.
struct Connection {
    state: AppState,
    shared: Arc<Shared>,
    request_id: String,
}

async fn serve(
    state: AppState,
    socket: WebSocket,
    mut caller: Option<Caller>,
    request_id: String,
    limits: Limits,
) {
    let _hold = state.drain().hold();
    let _counted = state.observability().metrics().socket_opened();
    let mut drain = state.drain().watch();
    let shared = Arc::new(Shared {
        session: Mutex::new(ServerSession::new(Duration::ZERO, limits, caller.is_some())),
        queued: Notify::new(),
        room: Notify::new(),
        epoch: Instant::now(),
    });
    let connection = Arc::new(Connection {
        state,
        shared: Arc::clone(&shared),
        request_id,
    });
    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(write(Arc::clone(&shared), sink));
    let mut requests = JoinSet::new();
    let mut open: HashMap<String, AbortHandle> = HashMap::new();
    // A shutdown that began before the socket opened.
    on_drain(&shared, *drain.borrow_and_update());
    loop {
        // Actions first: an `auth` is answered before the next frame is read.
        loop {
            let action = shared.session().poll_action();
            let Some(action) = action else { break };
            match action {
                Action::Authenticate { token } => {
                    let result = connection.state.auth().authenticate_token(&token.0).await;
                    let result = result.map(|recognized| caller = Some(recognized));
                    shared.with(|s| s.auth_result(result));
                }
                Action::Start { id, op } => match &caller {
                    Some(caller) => {
                        let task = run(Arc::clone(&connection), caller.clone(), id.clone(), *op);
                        open.insert(id, requests.spawn(task));
                    }
                    // The session starts nothing before authentication.
                    None => {
                        let error = ApiError::internal("a request before authentication");
                        shared.with(|s| s.push_error(&id, &error));
                    }
                },
                Action::Cancel { id, .. } => {
                    if let Some(task) = open.remove(&id) {
                        task.abort();
                    }
                }
            }
        }
        if shared.session().is_closed() {
            break;
        }
        let deadline = shared.session().next_deadline();
        let now = shared.now();
        let wait = deadline.map_or(TICK, |d| d.saturating_sub(now).min(TICK));
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(message)) => on_message(&shared, message),
                Some(Err(error)) => {
                    if too_big(error) {
                        let reason = "a frame is larger than the limit";
                        shared.with(|s| s.close(close_code::MESSAGE_TOO_BIG, reason));
                    } else {
                        shared.with(ServerSession::on_closed);
                    }
                }
                None => shared.with(ServerSession::on_closed),
            },
            () = tokio::time::sleep(wait) => {
                let now = shared.now();
                shared.with(|s| s.on_timeout(now));
            }
            changed = drain.changed() => match changed {
                Ok(()) => on_drain(&shared, *drain.borrow_and_update()),
                // The server is gone: nothing will be answered.
                Err(_) => shared.with(|s| s.close(close_code::GOING_AWAY, "the server stopped")),
            },
            Some(joined) = requests.join_next(), if !requests.is_empty() => {
                if let Err(failure) = joined
                    && failure.is_panic()
                    && let Some(id) = open
                        .iter()
                        .find(|(_, task)| task.id() == failure.id())
                        .map(|(id, _)| id.clone())
                {
                    // The request still ends, as a bug of the server.
                    let error = ApiError::internal("the request failed inside the proxy");
                    shared.with(|s| s.push_error(&id, &error));
                }
                open.retain(|_, task| !task.is_finished());
            }
            _ = &mut writer => {
                // The socket cannot be written to: it is lost.
                shared.with(ServerSession::on_closed);
            }
        }
    }
    // Whatever is still open is cancelled with the connection.
    requests.abort_all();
    drop(open);
    // The writer sends what is queued and the close frame; the peer then answers with its own.
    if !writer.is_finished() {
        let _ = tokio::time::timeout(CLOSE_WAIT, &mut writer).await;
        writer.abort();
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// The drain's phase, as the session takes it.
fn on_drain(shared: &Shared, phase: DrainPhase) {
    match phase {
        DrainPhase::Serving => {}
        DrainPhase::Draining => shared.with(ServerSession::shut_down),
        DrainPhase::Cut => shared.with(|s| s.close(close_code::GOING_AWAY, "the server stopped")),
    }
}

fn on_message(shared: &Shared, message: Message) {
    let now = shared.now();
    match message {
        Message::Text(text) => shared.with(|s| s.on_text(now, text.as_str())),
        Message::Binary(_) => shared.with(|s| s.on_binary(now)),
        // The library answers pings itself; either proves the peer alive.
        Message::Ping(_) | Message::Pong(_) => shared.with(|s| s.on_pong(now)),
        Message::Close(_) => shared.with(ServerSession::on_closed),
    }
}

/// Whether a read failed on a frame over the size limit (rather than on a lost socket).
fn too_big(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)))
}

/// Writes the session's frames, one at a time as the socket takes them, until its close frame
/// or a failed write.
async fn write(shared: Arc<Shared>, mut sink: SplitSink<WebSocket, Message>) {
    loop {
        let (next, closed) = {
            let mut session = shared.session();
            (session.poll_transmit(), session.is_closed())
        };
        let Some(transmit) = next else {
            if closed {
                // Lost, or closed by the peer: what is left is the library's answer to its close.
                let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
                return;
            }
            shared.queued.notified().await;
            continue;
        };
        // The queue has room again.
        shared.room.notify_waiters();
        let (message, last) = match transmit {
            Transmit::Text(text) => (Message::Text(text.into()), false),
            Transmit::Ping => (Message::Ping(bytes::Bytes::new()), false),
            Transmit::Close { code, reason } => (
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
                true,
            ),
        };
        if sink.send(message).await.is_err() || last {
            return;
        }
    }
}

/// Runs one request as its HTTP route does, and reports its outcome to the session.
async fn run(connection: Arc<Connection>, caller: Caller, id: String, op: Operation) {
    let kind = op.kind();
    let state = &connection.state;
    let shared = &connection.shared;
    let facts = RequestFacts::for_socket(
        state,
        &caller.identity,
        &connection.request_id,
        &id,
        kind.http_path(),
    );
    let started = facts.started;
    let budget = Budget::of_caller(&caller.identity, &caller.grants);
    // The limit layer's admission, per request rather than per connection.
    if let Err(error) = budget.admit(state.limiter()).await {
        record(state, kind, Err(&error), started);
        shared.with(|s| s.push_error(&id, &error));
        return;
    }
    match op {
        Operation::Chat(req) => {
            let result = llm::complete(state, facts, &caller, &budget, &req).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
        Operation::ChatStream(req) => {
            let opened = llm::open_stream(state, facts, &caller, budget, &req).await;
            match opened {
                Ok(opened) => {
                    record(state, kind, Ok(()), started);
                    let events =
                        stream_relay::chat_events(opened.decoder, opened.chunks, opened.audit);
                    forward(shared, &id, events, ServerSession::push_chat_event).await;
                }
                Err(error) => answer::<()>(connection.as_ref(), kind, &id, Err(error), started),
            }
        }
        Operation::Models => {
            let models = caller.scopes().filter_models(state.models());
            answer(connection.as_ref(), kind, &id, Ok(models), started);
        }
        Operation::McpServers => {
            let servers = caller.scopes().filter_servers(state.mcp().servers());
            answer(connection.as_ref(), kind, &id, Ok(servers), started);
        }
        Operation::McpListTools(q) => {
            let result = mcp::tools_page(state, &caller, q).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
        Operation::McpCall(call) => {
            let result = mcp::tool_call(state, facts, &caller, call).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
        Operation::McpCallStream(call) => {
            match mcp::open_tool_stream(state, facts, &caller, budget, call).await {
                Ok((events, audit)) => {
                    record(state, kind, Ok(()), started);
                    let events = stream_relay::tool_events(events, audit);
                    forward(shared, &id, events, ServerSession::push_tool_event).await;
                }
                Err(error) => answer::<()>(connection.as_ref(), kind, &id, Err(error), started),
            }
        }
        Operation::McpListResources(q) => {
            let result = mcp::resources_page(state, &caller, q).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
        Operation::McpReadResource(req) => {
            let result = mcp::resource(state, &caller, req).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
        Operation::McpListPrompts(q) => {
            let result = mcp::prompts_page(state, &caller, q).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
        Operation::McpGetPrompt(req) => {
            let result = mcp::prompt(state, &caller, req).await;
            answer(connection.as_ref(), kind, &id, result, started);
        }
    }
}

/// Sends a single answer and counts it as its HTTP route counts one.
fn answer<T: Serialize>(
    connection: &Connection,
    kind: OpKind,
    id: &str,
    result: Result<T, ApiError>,
    started: Instant,
) {
    record(
        &connection.state,
        kind,
        result.as_ref().map(|_| ()),
        started,
    );
    connection.shared.with(|s| match &result {
        Ok(body) => s.push_result(id, body),
        Err(error) => s.push_error(id, error),
    });
}

/// The request metrics of the HTTP route `kind` stands for: its status, and the time to the
/// answer (to the start of a stream).
fn record(state: &AppState, kind: OpKind, result: Result<(), &ApiError>, started: Instant) {
    let method = match kind {
        OpKind::Models
        | OpKind::McpServers
        | OpKind::McpListTools
        | OpKind::McpListResources
        | OpKind::McpListPrompts => Method::GET,
        _ => Method::POST,
    };
    let status = result.map_or_else(ApiError::http_status, |()| 200);
    state.observability().metrics().record_request(
        Some(kind.http_path()),
        &method,
        status,
        started.elapsed(),
    );
}

/// Pushes a stream's events into the session, waiting while its queue is full, until the stream
/// ends or the request is no longer open.
async fn forward<E>(
    shared: &Shared,
    id: &str,
    events: impl Stream<Item = E>,
    push: fn(&mut ServerSession, Duration, &str, E) -> Pushed<E>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(mut event) = events.next().await {
        loop {
            // Registered before the push, so that a write between the push and the wait is not
            // missed.
            let room = shared.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            let now = shared.now();
            match shared.with(|s| push(s, now, id, event)) {
                Pushed::Queued => break,
                Pushed::Full(back) => {
                    event = back;
                    room.await;
                }
                Pushed::Gone => return,
            }
        }
    }
    // A relay always ends with a terminal event; should one not, the request still ends.
    let error = ApiError::new(ErrorCode::StreamInterrupted, "the stream ended early");
    shared.with(|s| s.push_error(id, &error));
}
