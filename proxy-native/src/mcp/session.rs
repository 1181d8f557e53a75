//! One live session with an MCP server: sending requests with a deadline and cancellation,
//! telling why one failed, the cached tool list, and how long the session has been unused.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::ClientHandler;
use rmcp::RoleClient;
use rmcp::model::{
    CancelledNotificationParam, ClientRequest, ErrorData, GetMeta, ListToolsRequest,
    ListToolsResult, NumberOrString, PaginatedRequestParams, ProgressToken, ProtocolVersion,
    RequestId, RequestMetaObject, ServerResult,
};
use rmcp::service::{Peer, PeerRequestOptions, RunningService, ServiceError};
use tokio::time::Instant;

use super::handler::{HandlerState, ProgressSubscription, ProxyClientHandler};
use super::upstream::link::LinkState;
use super::upstream::{Connection, DirectRequests, OwnProgress, RequestError, describe};

/// How long closing a session may take before its transport is simply dropped (which kills a
/// stdio server).
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most pages followed when listing every tool for the cache; a server that paginates forever
/// must not keep a call waiting.
const MAX_TOOL_PAGES: usize = 100;
/// When a server does not announce tool-list changes to the proxy, a tool missing from a cached
/// list at least this old is looked up again before it is called unknown.
const UNANNOUNCED_CHANGES_RECHECK: Duration = Duration::from_secs(1);
/// The first id (and progress token) of requests sent past rmcp's service: rmcp counts its own
/// from 0, so the two never meet, and every id stays exact as a JSON number in any language.
const FIRST_DIRECT_ID: i64 = 1 << 32;

/// Why a request did not produce a result.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with a JSON-RPC error.
    Rpc(ErrorData),
    /// The connection broke; `delivered` says whether the server received the request.
    Transport { delivered: bool },
    /// The deadline passed (the request was cancelled upstream).
    Timeout,
    /// The server answered something that is not an answer to this request.
    Unexpected(String),
}

/// A request on its way: its progress notifications, and its outcome.
pub(crate) struct InFlight {
    /// Progress the server reports for this request.
    pub progress: ProgressSubscription,
    /// The answer. Dropping this future before it completes cancels the request upstream.
    pub response: BoxFuture<'static, Result<ServerResult, Failure>>,
}

/// A live session; shared by every request to the same server.
pub(crate) struct Session {
    server: Arc<str>,
    peer: Peer<RoleClient>,
    service: Mutex<Option<RunningService<RoleClient, ProxyClientHandler>>>,
    /// Streamable HTTP: requests go out on the caller's task (see [`DirectRequests`]).
    direct: Option<DirectRequests>,
    /// The next id for [`Self::direct`].
    next_direct_id: AtomicI64,
    /// What a 2026-07-28 request carries in `_meta` (rmcp's peer adds it to its own).
    client_context: Option<RequestMetaObject>,
    handler: Arc<HandlerState>,
    link: Arc<LinkState>,
    protocol_version: ProtocolVersion,
    /// Whether the server sends `notifications/tools/list_changed` where the handler sees them.
    announces_tool_changes: bool,
    tools: Mutex<Option<ToolCache>>,
    usage: Mutex<Usage>,
}

struct ToolCache {
    generation: u64,
    names: Arc<HashSet<String>>,
    fetched: Instant,
}

struct Usage {
    in_flight: usize,
    last_used: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    pub fn new(server: Arc<str>, connection: Connection, handler: Arc<HandlerState>) -> Self {
        let Connection {
            service,
            link,
            direct,
        } = connection;
        let peer = service.peer().clone();
        let info = peer.peer_info();
        let protocol_version = info
            .as_ref()
            .map(|info| info.protocol_version.clone())
            .unwrap_or_default();
        // Up to 2025-11-25 a server with `tools.listChanged` notifies every client; from
        // 2026-07-28 only on a `subscriptions/listen` stream, which the proxy does not open.
        let announces_tool_changes = protocol_version.has_initialize()
            && info
                .as_ref()
                .and_then(|info| info.capabilities.tools.as_ref())
                .and_then(|tools| tools.list_changed)
                .unwrap_or(false);
        // Without a handshake the client's context travels in every request, as rmcp's peer
        // sends it.
        let client_context = (!protocol_version.has_initialize()).then(|| {
            let config = service.service().get_info();
            RequestMetaObject::with_client_context(
                protocol_version.clone(),
                config.client_info,
                config.capabilities,
            )
        });
        Session {
            server,
            peer,
            service: Mutex::new(Some(service)),
            direct,
            next_direct_id: AtomicI64::new(FIRST_DIRECT_ID),
            client_context,
            handler,
            link,
            protocol_version,
            announces_tool_changes,
            tools: Mutex::new(None),
            usage: Mutex::new(Usage {
                in_flight: 0,
                last_used: Instant::now(),
            }),
        }
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> &ProtocolVersion {
        &self.protocol_version
    }

    /// Whether requests can still be sent (the server has not gone away).
    pub fn is_alive(&self) -> bool {
        !self.link.is_closed() && !self.peer.is_transport_closed()
    }

    /// Marks the session as in use until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InUse {
        lock(&self.usage).in_flight += 1;
        InUse(Arc::clone(self))
    }

    /// How long the session has been unused; `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        let usage = lock(&self.usage);
        (usage.in_flight == 0).then(|| usage.last_used.elapsed())
    }

    /// Sends `request`; its answer must arrive before `deadline`. Over Streamable HTTP the
    /// request goes out when the answer is first awaited, on the awaiting task.
    pub async fn start(
        self: &Arc<Self>,
        request: ClientRequest,
        deadline: Instant,
    ) -> Result<InFlight, Failure> {
        if let Some(direct) = &self.direct {
            return Ok(self.start_direct(direct.clone(), request, deadline));
        }
        let in_use = self.begin();
        let handle = self
            .peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            // The request never left: the session's loop is gone.
            .map_err(|_| Failure::Transport { delivered: false })?;
        let progress = self
            .handler
            .progress
            .subscribe(handle.progress_token.clone());
        let mut guard = CancelOnDrop {
            peer: self.peer.clone(),
            link: Arc::clone(&self.link),
            id: Some(handle.id.clone()),
        };
        let session = Arc::clone(self);
        let response = async move {
            let _in_use = in_use;
            let outcome = tokio::time::timeout_at(deadline, handle.await_response()).await;
            let Ok(outcome) = outcome else {
                guard.cancel("the proxy's call timeout passed").await;
                return Err(Failure::Timeout);
            };
            let id = guard.disarm();
            let result = match outcome {
                Ok(result) => Ok(result),
                Err(ServiceError::McpError(error)) => Err(Failure::Rpc(error)),
                Err(error @ (ServiceError::TransportClosed | ServiceError::TransportSend(_))) => {
                    let delivered = id.as_ref().is_some_and(|id| session.link.was_delivered(id));
                    tracing::debug!(server = %session.server, ?id, delivered, error = %describe(&error), "MCP request failed in transport");
                    Err(Failure::Transport { delivered })
                }
                Err(error) => Err(Failure::Unexpected(describe(&error))),
            };
            if let Some(id) = id {
                session.link.forget(&id);
            }
            result
        };
        Ok(InFlight {
            progress,
            response: response.boxed(),
        })
    }

    /// [`Self::start`] past rmcp's service: the request is sent when the answer is awaited, on
    /// the awaiting task. What the service's peer would add to it is added here.
    fn start_direct(
        self: &Arc<Self>,
        direct: DirectRequests,
        mut request: ClientRequest,
        deadline: Instant,
    ) -> InFlight {
        let in_use = self.begin();
        let number = self.next_direct_id.fetch_add(1, Ordering::Relaxed);
        let id = RequestId::Number(number);
        let token = ProgressToken(NumberOrString::Number(number));
        let meta = request.get_meta_mut();
        if let Some(context) = &self.client_context {
            meta.extend(context.clone());
        }
        meta.set_progress_token(token.clone());
        let progress = self.handler.progress.subscribe(token.clone());
        let own_progress = OwnProgress {
            token,
            handler: Arc::clone(&self.handler),
        };
        let mut guard = CancelOnDrop {
            peer: self.peer.clone(),
            link: Arc::clone(&self.link),
            id: Some(id.clone()),
        };
        let server = Arc::clone(&self.server);
        let response = async move {
            let _in_use = in_use;
            // On timeout the exchange is dropped, which closes it.
            let exchange = direct.request(id, request, own_progress);
            let outcome = tokio::time::timeout_at(deadline, exchange).await;
            let Ok(outcome) = outcome else {
                guard.cancel("the proxy's call timeout passed").await;
                return Err(Failure::Timeout);
            };
            let id = guard.disarm();
            match outcome {
                Ok(result) => Ok(result),
                Err(RequestError::Rpc(error)) => Err(Failure::Rpc(error)),
                Err(RequestError::Broken { delivered, error }) => {
                    tracing::debug!(server = %server, ?id, delivered, error = %describe(&error), "MCP request failed in transport");
                    Err(Failure::Transport { delivered })
                }
            }
        };
        InFlight {
            progress,
            response: response.boxed(),
        }
    }

    /// Sends `request` and waits for its answer.
    pub async fn request(
        self: &Arc<Self>,
        request: ClientRequest,
        deadline: Instant,
    ) -> Result<ServerResult, Failure> {
        self.start(request, deadline).await?.response.await
    }

    /// Whether the server has a tool named `name`, from the cached list: fetched when missing,
    /// invalidated by `notifications/tools/list_changed`, and, for a server that does not
    /// announce changes, fetched again (at most once a second) before a tool is called unknown.
    pub async fn has_tool(
        self: &Arc<Self>,
        name: &str,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let generation = self.handler.tools_generation.load(Ordering::Acquire);
        if let Some(cache) = lock(&self.tools).as_ref()
            && cache.generation == generation
        {
            let known = cache.names.contains(name);
            let trusted = self.announces_tool_changes
                || cache.fetched.elapsed() < UNANNOUNCED_CHANGES_RECHECK;
            if known || trusted {
                return Ok(known);
            }
        }
        let mut names = HashSet::new();
        let mut cursor = None;
        for _ in 0..MAX_TOOL_PAGES {
            let page = match self.request(list_tools_request(cursor), deadline).await? {
                ServerResult::ListToolsResult(page) => page,
                other => return Err(Failure::Unexpected(unexpected("tools/list", &other))),
            };
            names.extend(page.tools.into_iter().map(|tool| tool.name.into_owned()));
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let found = names.contains(name);
        *lock(&self.tools) = Some(ToolCache {
            generation,
            names: Arc::new(names),
            fetched: Instant::now(),
        });
        Ok(found)
    }

    /// Refreshes the tool cache from a complete, single-page `tools/list` answer that a client
    /// asked for anyway.
    pub fn remember_tools(&self, generation: u64, page: &ListToolsResult) {
        if page.next_cursor.is_some() {
            return;
        }
        let names = page
            .tools
            .iter()
            .map(|tool| tool.name.to_string())
            .collect();
        *lock(&self.tools) = Some(ToolCache {
            generation,
            names: Arc::new(names),
            fetched: Instant::now(),
        });
    }

    /// The current tool-list generation (see [`Self::remember_tools`]).
    pub fn tools_generation(&self) -> u64 {
        self.handler.tools_generation.load(Ordering::Acquire)
    }

    /// Ends the session: a stdio server gets its stdin closed and is killed if it lingers.
    pub async fn close(&self) {
        let service = lock(&self.service).take();
        if let Some(mut service) = service {
            match service.close_with_timeout(CLOSE_GRACE).await {
                Ok(Some(_)) => tracing::debug!(server = %self.server, "MCP session closed"),
                Ok(None) => {
                    tracing::debug!(server = %self.server, "MCP session did not close in time; dropping it")
                }
                Err(error) => {
                    tracing::warn!(server = %self.server, %error, "closing the MCP session failed")
                }
            }
        }
    }
}

/// A `tools/list` request for the page after `cursor`.
pub(crate) fn list_tools_request(cursor: Option<String>) -> ClientRequest {
    ClientRequest::ListToolsRequest(ListToolsRequest {
        method: Default::default(),
        params: cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c))),
        extensions: Default::default(),
    })
}

/// An answer of the wrong kind, described for the log and the client.
pub(crate) fn unexpected(method: &str, result: &ServerResult) -> String {
    let kind = match result {
        ServerResult::InputRequiredResult(_) => {
            "an input_required result (asking the user for input), which the proxy cannot relay yet"
        }
        ServerResult::CreateTaskResult(_) => "a task, which the proxy cannot relay yet",
        _ => "an answer of the wrong kind",
    };
    format!("answered {method} with {kind}")
}

/// Keeps a session counted as in use.
pub(crate) struct InUse(Arc<Session>);

impl InUse {
    /// The session in use.
    pub fn session(&self) -> &Arc<Session> {
        &self.0
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut usage = lock(&self.0.usage);
        usage.in_flight -= 1;
        usage.last_used = Instant::now();
    }
}

/// Sends `notifications/cancelled` for a request whose answer nobody will read: dropped before
/// the answer (the client went away) or given up on (the deadline passed).
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    link: Arc<LinkState>,
    id: Option<RequestId>,
}

impl CancelOnDrop {
    /// The answer arrived: nothing to cancel.
    fn disarm(&mut self) -> Option<RequestId> {
        self.id.take()
    }

    async fn cancel(&mut self, reason: &str) {
        if let Some(id) = self.id.take() {
            self.link.forget(&id);
            let params = CancelledNotificationParam::new(Some(id), Some(reason.to_owned()));
            // The session may be gone already; then there is nothing left to cancel.
            let _ = self.peer.notify_cancelled(params).await;
        }
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        self.link.forget(&id);
        let peer = self.peer.clone();
        let params = CancelledNotificationParam::new(Some(id), Some("the client went away".into()));
        // Drop cannot wait; the notification is queued on the session from a task.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = peer.notify_cancelled(params).await;
            });
        }
    }
}
