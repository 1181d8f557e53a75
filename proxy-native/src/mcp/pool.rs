//! The session pool: one live session per configured server, opened on first use and shared by
//! every request to that server; or, for a server with `isolation = "per_user"`, one per user.
//!
//! - A `per_user` server's users never share a session (nor, for stdio, a process): each user's
//!   requests go to a slot of their own, keyed by the whole [`Identity`] (a key named `alice`
//!   and a JWT whose `sub` is `alice` are different users). At most `max_user_sessions` users
//!   hold a slot; a further user takes the place of the user idle the longest, or is told to
//!   retry (429) while every slot is busy. The readiness check opens a session of its own.
//!
//! - A session whose server went away (a stdio process exited, an HTTP session expired) is
//!   replaced on the next request. The request that finds it broken is retried once on the new
//!   session when that is safe: the server never received it, or it only reads (list, read, get).
//!   A tool call that reached a server which then died is not repeated, since it may have acted.
//! - A server that cannot be started or reached is retried with exponential backoff (0.25 s,
//!   doubled per failure, at most 30 s): a circuit breaker. While it is open, requests fail at
//!   once, without starting anything, with an error that says the server is failing to start
//!   and when it is tried next (`retry_after`); the first request after the delay tries once
//!   (concurrent ones wait for that try), and a start that succeeds closes the breaker.
//! - A session unused for `idle_timeout_ms` is closed (a stdio server is stopped).
//! - The tool list is cached per session and refreshed on `notifications/tools/list_changed`;
//!   it answers "unknown tool" without calling the tool. (A server that does not announce changes
//!   to the proxy gets its list fetched again, at most once a second, before a tool it lacks is
//!   called unknown, so a tool it added later is not refused.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ErrorData,
    GetPromptRequest, GetPromptRequestParams, GetPromptResult, ListPromptsRequest,
    ListPromptsResult, ListResourceTemplatesRequest, ListResourceTemplatesResult,
    ListResourcesRequest, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequest, ReadResourceRequestParams, ReadResourceResult, ServerResult,
};
use switchyard_shared::mcp::{McpServerInfo, McpServerList, McpToolCall, McpToolEvent};
use switchyard_shared::{ApiError, ErrorCode};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::Instrument;

use super::handler::{HandlerState, ListChanged, ProxyClientHandler};
use super::session::{Failure, InFlight, InUse, Session, list_tools_request, unexpected};
use super::upstream::{self, truncate};
use crate::config::{Isolation, McpServerConfig};
use crate::identity::Identity;

/// First delay after a failed start; doubled per further failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
/// Longest delay between attempts to start or reach a failing server.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Announcements of changed lists kept for a gateway client that has not read them yet; one that
/// falls further behind is told that every list changed.
const LIST_CHANGES_BUFFER: usize = 64;
/// How long [`McpPool::shutdown`] waits for sessions to close before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The MCP servers of the configuration and their live sessions.
#[derive(Debug)]
pub struct McpPool {
    servers: Vec<Server>,
    list: McpServerList,
    /// Every session's announcements of changed lists, for the gateway's clients.
    changes: broadcast::Sender<ListChanged>,
}

/// One configured server: the slot every caller shares, and each user's for `per_user`.
#[derive(Debug)]
struct Server {
    /// Every caller's session; for a `per_user` server only the readiness check's.
    shared: Arc<Slot>,
    /// `per_user` only: each user's slot. A request holds a clone of its slot while it runs,
    /// which is how a busy slot is told from an idle one.
    users: Option<std::sync::Mutex<HashMap<Identity, Arc<Slot>>>>,
}

/// One server's session for one set of callers, if it has one.
struct Slot {
    name: Arc<str>,
    /// Whose slot it is (`per_user` servers): for logs, and to tell only them of changed lists.
    owner: Option<Identity>,
    config: McpServerConfig,
    /// Where its sessions announce changed lists.
    changes: broadcast::Sender<ListChanged>,
    // Held while connecting, so concurrent first requests share one start.
    state: tokio::sync::Mutex<SlotState>,
    /// Live sessions when last counted (see [`McpPool::session_counts`]).
    sessions_seen: AtomicUsize,
    /// Whether its breaker was open when last looked at (see [`McpPool::failing_servers`]).
    failing_seen: AtomicBool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("config", &self.config)
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct SlotState {
    session: Option<Arc<Session>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<ApiError>,
}

/// What a client asked a server for.
enum Operation {
    ListTools(Option<String>),
    CallTool(CallToolRequestParams),
    ListResources(Option<String>),
    ListResourceTemplates(Option<String>),
    ReadResource(String),
    ListPrompts(Option<String>),
    GetPrompt(GetPromptRequestParams),
}

impl Operation {
    fn method(&self) -> &'static str {
        match self {
            Operation::ListTools(_) => "tools/list",
            Operation::CallTool(_) => "tools/call",
            Operation::ListResources(_) => "resources/list",
            Operation::ListResourceTemplates(_) => "resources/templates/list",
            Operation::ReadResource(_) => "resources/read",
            Operation::ListPrompts(_) => "prompts/list",
            Operation::GetPrompt(_) => "prompts/get",
        }
    }

    /// Whether repeating it cannot have an effect twice.
    fn is_read_only(&self) -> bool {
        !matches!(self, Operation::CallTool(_))
    }

    fn request(&self) -> ClientRequest {
        let page = |cursor: &Option<String>| {
            cursor
                .clone()
                .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)))
        };
        match self {
            Operation::ListTools(cursor) => list_tools_request(cursor.clone()),
            Operation::CallTool(params) => {
                ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()))
            }
            Operation::ListResources(cursor) => {
                ClientRequest::ListResourcesRequest(ListResourcesRequest {
                    method: Default::default(),
                    params: page(cursor),
                    extensions: Default::default(),
                })
            }
            Operation::ListResourceTemplates(cursor) => {
                ClientRequest::ListResourceTemplatesRequest(ListResourceTemplatesRequest {
                    method: Default::default(),
                    params: page(cursor),
                    extensions: Default::default(),
                })
            }
            Operation::ReadResource(uri) => ClientRequest::ReadResourceRequest(
                ReadResourceRequest::new(ReadResourceRequestParams::new(uri.clone())),
            ),
            Operation::ListPrompts(cursor) => {
                ClientRequest::ListPromptsRequest(ListPromptsRequest {
                    method: Default::default(),
                    params: page(cursor),
                    extensions: Default::default(),
                })
            }
            Operation::GetPrompt(params) => {
                ClientRequest::GetPromptRequest(GetPromptRequest::new(params.clone()))
            }
        }
    }
}

/// A failed attempt: either final, or worth repeating on a fresh session.
enum Attempt {
    Final(ApiError),
    Failed(Failure),
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Self {
        Attempt::Failed(failure)
    }
}

/// A successful answer and the session that gave it.
struct Answer {
    result: ServerResult,
    session: Arc<Session>,
    tools_generation: u64,
}

/// The events of a streamed tool call.
pub type ToolEventStream = std::pin::Pin<Box<dyn Stream<Item = McpToolEvent> + Send>>;

impl McpPool {
    /// The pool for the configured servers; nothing is started until a request needs it.
    pub fn new(servers: &[McpServerConfig]) -> Self {
        let (changes, _) = broadcast::channel(LIST_CHANGES_BUFFER);
        let slots = servers
            .iter()
            .map(|config| Server {
                shared: Arc::new(Slot::new(config, None, changes.clone())),
                users: (config.isolation == Isolation::PerUser)
                    .then(|| std::sync::Mutex::new(HashMap::new())),
            })
            .collect();
        let list = McpServerList {
            servers: servers
                .iter()
                .map(|s| McpServerInfo {
                    name: s.name.clone(),
                    transport: s.transport,
                })
                .collect(),
        };
        McpPool {
            servers: slots,
            list,
            changes,
        }
    }

    /// The servers' announcements of changed tool, prompt and resource lists from now on (while
    /// a session to the server is open, which is when a server can announce anything).
    pub fn list_changes(&self) -> broadcast::Receiver<ListChanged> {
        self.changes.subscribe()
    }

    /// The configured servers, as `GET /api/mcp/servers` lists them.
    pub fn servers(&self) -> &McpServerList {
        &self.list
    }

    /// The configured servers' entries, in the order of the configuration.
    pub(crate) fn configs(&self) -> impl Iterator<Item = &McpServerConfig> {
        self.servers.iter().map(|server| &server.shared.config)
    }

    /// One page of the server's tools (`cursor` from the previous page's `nextCursor`).
    pub async fn list_tools(
        &self,
        caller: &Identity,
        server: &str,
        cursor: Option<String>,
    ) -> Result<ListToolsResult, ApiError> {
        let first_page = cursor.is_none();
        let answer = self
            .execute(caller, server, &Operation::ListTools(cursor))
            .await?;
        match answer.result {
            ServerResult::ListToolsResult(page) => {
                if first_page {
                    // A complete list fetched anyway keeps the unknown-tool check current.
                    answer
                        .session
                        .remember_tools(answer.tools_generation, &page);
                }
                Ok(page)
            }
            other => Err(upstream_error(server, &unexpected("tools/list", &other))),
        }
    }

    /// Calls a tool and waits for its result.
    pub async fn call_tool(
        &self,
        caller: &Identity,
        call: McpToolCall,
    ) -> Result<CallToolResult, ApiError> {
        let server = call.server.clone();
        let answer = self
            .execute(caller, &server, &Operation::CallTool(tool_params(call)))
            .await?;
        tool_result(&server, answer.result)
    }

    /// Calls a tool and streams its progress, then its result or error.
    ///
    /// Errors found before the call is on its way (unknown server or tool, the server cannot be
    /// started) are returned here; later ones end the stream. Dropping the stream cancels the
    /// call upstream (`notifications/cancelled`).
    pub async fn call_tool_stream(
        &self,
        caller: &Identity,
        call: McpToolCall,
    ) -> Result<ToolEventStream, ApiError> {
        let slot = self.slot(caller, &call.server)?;
        let operation = Operation::CallTool(tool_params(call));
        let deadline = Instant::now() + slot.config.call_timeout();
        let mut retried = false;
        let (in_use, in_flight) = loop {
            match slot.start(&operation, deadline).await {
                Ok(started) => break started,
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Failed(failure)) => {
                    slot.judge(failure, None, &operation, retried).await?;
                    retried = true;
                }
            }
        };
        let state = ToolStream {
            slot,
            operation,
            deadline,
            retried,
            in_use,
            in_flight,
            last_progress: None,
        };
        Ok(Box::pin(futures::stream::unfold(
            Some(state),
            ToolStream::next_event,
        )))
    }

    /// One page of the server's resources.
    pub async fn list_resources(
        &self,
        caller: &Identity,
        server: &str,
        cursor: Option<String>,
    ) -> Result<ListResourcesResult, ApiError> {
        match self
            .execute(caller, server, &Operation::ListResources(cursor))
            .await?
            .result
        {
            ServerResult::ListResourcesResult(page) => Ok(page),
            other => Err(upstream_error(
                server,
                &unexpected("resources/list", &other),
            )),
        }
    }

    /// One page of the server's resource templates.
    pub async fn list_resource_templates(
        &self,
        caller: &Identity,
        server: &str,
        cursor: Option<String>,
    ) -> Result<ListResourceTemplatesResult, ApiError> {
        match self
            .execute(caller, server, &Operation::ListResourceTemplates(cursor))
            .await?
            .result
        {
            ServerResult::ListResourceTemplatesResult(page) => Ok(page),
            other => Err(upstream_error(
                server,
                &unexpected("resources/templates/list", &other),
            )),
        }
    }

    /// Reads one resource.
    pub async fn read_resource(
        &self,
        caller: &Identity,
        server: &str,
        uri: String,
    ) -> Result<ReadResourceResult, ApiError> {
        match self
            .execute(caller, server, &Operation::ReadResource(uri))
            .await?
            .result
        {
            ServerResult::ReadResourceResult(result) => Ok(result),
            other => Err(upstream_error(
                server,
                &unexpected("resources/read", &other),
            )),
        }
    }

    /// One page of the server's prompts.
    pub async fn list_prompts(
        &self,
        caller: &Identity,
        server: &str,
        cursor: Option<String>,
    ) -> Result<ListPromptsResult, ApiError> {
        match self
            .execute(caller, server, &Operation::ListPrompts(cursor))
            .await?
            .result
        {
            ServerResult::ListPromptsResult(page) => Ok(page),
            other => Err(upstream_error(server, &unexpected("prompts/list", &other))),
        }
    }

    /// Gets one prompt, filled in with `arguments`.
    pub async fn get_prompt(
        &self,
        caller: &Identity,
        server: &str,
        name: String,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<GetPromptResult, ApiError> {
        let mut params = GetPromptRequestParams::new(name);
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        match self
            .execute(caller, server, &Operation::GetPrompt(params))
            .await?
            .result
        {
            ServerResult::GetPromptResult(result) => Ok(result),
            other => Err(upstream_error(server, &unexpected("prompts/get", &other))),
        }
    }

    /// The protocol version negotiated with `server` for `caller`, opening the session if needed.
    pub async fn protocol_version(
        &self,
        caller: &Identity,
        server: &str,
    ) -> Result<String, ApiError> {
        let in_use = self.slot(caller, server)?.acquire().await?;
        Ok(in_use.session().protocol_version().to_string())
    }

    /// Whether `server` has a live session, opening one if it has none: the readiness check.
    /// A live session is not marked as used, so probes do not keep an idle session open; a
    /// server in its backoff window answers its last error at once. The opening runs on a task
    /// of its own, so a caller that stops waiting does not cut a start short (which would start
    /// a stdio server again on the next check). A `per_user` server is checked on a session
    /// of its own, which no user's request ever uses.
    pub async fn ensure_session(&self, server: &str) -> Result<(), ApiError> {
        let slot = Arc::clone(&self.server(server)?.shared);
        let opening = tokio::spawn(async move {
            {
                let state = slot.state.lock().await;
                if state.session.as_ref().is_some_and(|s| s.is_alive()) {
                    return Ok(());
                }
            }
            slot.acquire().await.map(drop)
        });
        opening.await.unwrap_or_else(|_| {
            Err(ApiError::internal(format!(
                "opening a session to MCP server '{server}' failed"
            )))
        })
    }

    /// The number of live sessions per server (users' and the readiness check's together), for
    /// the sessions gauge. Reading never waits: a slot that is busy (a session being opened)
    /// counts what it had when last seen.
    pub fn session_counts(&self) -> Vec<(&str, usize)> {
        self.servers
            .iter()
            .map(|server| {
                let users: usize = server.users.as_ref().map_or(0, |users| {
                    lock(users).values().map(|slot| slot.live_sessions()).sum()
                });
                (&*server.shared.name, server.shared.live_sessions() + users)
            })
            .collect()
    }

    /// Whether each server's breaker is open (its last start failed and none has succeeded
    /// since; for a `per_user` server, any user's), for the breaker gauge. Reading never waits,
    /// like [`McpPool::session_counts`].
    pub fn failing_servers(&self) -> Vec<(&str, bool)> {
        self.servers
            .iter()
            .map(|server| {
                let users = server
                    .users
                    .as_ref()
                    .is_some_and(|users| lock(users).values().any(|slot| slot.is_failing()));
                (&*server.shared.name, server.shared.is_failing() || users)
            })
            .collect()
    }

    /// Closes every session (stopping stdio servers), waiting at most a few seconds; what is
    /// left is dropped, which kills the remaining child processes.
    pub async fn shutdown(&self) {
        let mut slots = Vec::new();
        for server in &self.servers {
            slots.push(Arc::clone(&server.shared));
            if let Some(users) = &server.users {
                slots.extend(lock(users).drain().map(|(_, slot)| slot));
            }
        }
        let closing = slots.iter().map(|slot| slot.close());
        if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(closing))
            .await
            .is_err()
        {
            tracing::warn!("MCP sessions did not close in time; their processes are killed");
        }
    }

    /// The slot that serves `caller` on `server`: the shared one, or the user's own (made on
    /// their first request, in place of another user's when all places are taken).
    fn slot(&self, caller: &Identity, server: &str) -> Result<Arc<Slot>, ApiError> {
        let entry = self.server(server)?;
        let Some(users) = &entry.users else {
            return Ok(Arc::clone(&entry.shared));
        };
        // A minted token uses the session of the credential it was minted for.
        let caller = &caller.principal();
        let mut users = lock(users);
        if let Some(slot) = users.get(caller) {
            return Ok(Arc::clone(slot));
        }
        make_room(&mut users, &entry.shared)?;
        let slot = Arc::new(Slot::new(
            &entry.shared.config,
            Some(caller.clone()),
            entry.shared.changes.clone(),
        ));
        users.insert(caller.clone(), Arc::clone(&slot));
        tracing::debug!(server = %entry.shared.name, user = %caller.user, users = users.len(), "new per-user MCP slot");
        Ok(slot)
    }

    fn server(&self, server: &str) -> Result<&Server, ApiError> {
        self.servers
            .iter()
            .find(|entry| &*entry.shared.name == server)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "no MCP server named '{}' is configured",
                        truncate(server, 100)
                    ),
                )
            })
    }

    /// Runs `operation`, retrying once on a fresh session when that is safe.
    async fn execute(
        &self,
        caller: &Identity,
        server: &str,
        operation: &Operation,
    ) -> Result<Answer, ApiError> {
        let slot = self.slot(caller, server)?;
        let deadline = Instant::now() + slot.config.call_timeout();
        let mut retried = false;
        loop {
            let in_use = slot.acquire().await?;
            let session = Arc::clone(in_use.session());
            let tools_generation = session.tools_generation();
            let attempt = async {
                let (_in_use, in_flight) = slot.start_on(in_use, operation, deadline).await?;
                Ok::<_, Attempt>(in_flight.response.await?)
            };
            match attempt.await {
                Ok(result) => {
                    return Ok(Answer {
                        result,
                        session,
                        tools_generation,
                    });
                }
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Failed(failure)) => {
                    slot.judge(failure, Some(&session), operation, retried)
                        .await?;
                    retried = true;
                }
            }
        }
    }
}

/// Makes a place for one more user of a `per_user` server when all are taken: slots without a
/// session go first, then the live session idle the longest is closed. A slot a request holds
/// is never taken; when every one is held, the new user is asked to retry.
fn make_room(users: &mut HashMap<Identity, Arc<Slot>>, server: &Slot) -> Result<(), ApiError> {
    let limit = server.config.user_sessions_limit();
    if users.len() < limit {
        return Ok(());
    }
    // Only the map holds an unused slot, and clones are handed out under the map's lock.
    let unused = |slot: &Arc<Slot>| Arc::strong_count(slot) == 1;
    users.retain(|_, slot| !(unused(slot) && slot.is_vacant()));
    if users.len() < limit {
        return Ok(());
    }
    let longest_idle = users
        .iter()
        .filter(|(_, slot)| unused(slot))
        .filter_map(|(user, slot)| Some((slot.idle_for()?, user)))
        .max_by_key(|(idle, _)| *idle)
        .map(|(_, user)| user.clone());
    match longest_idle.and_then(|user| users.remove(&user)) {
        Some(evicted) => {
            tracing::info!(
                server = %server.name,
                user = evicted.user(),
                "closing the MCP session idle the longest to make room for another user"
            );
            tokio::spawn(async move { evicted.close().await });
            Ok(())
        }
        None => Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "MCP server '{}' is busy with sessions for {limit} other users; try again shortly",
                server.name
            ),
        )
        .with_retry_after(Some(1))),
    }
}

/// The map of users' slots, whatever a panicking holder left in it (it stays consistent: every
/// change is one insert or remove).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Slot {
    fn new(
        config: &McpServerConfig,
        owner: Option<Identity>,
        changes: broadcast::Sender<ListChanged>,
    ) -> Self {
        Slot {
            name: Arc::from(config.name.as_str()),
            owner,
            config: config.clone(),
            changes,
            state: tokio::sync::Mutex::new(SlotState::default()),
            sessions_seen: AtomicUsize::new(0),
            failing_seen: AtomicBool::new(false),
        }
    }

    /// The user whose slot it is, for logs.
    fn user(&self) -> Option<&str> {
        self.owner.as_ref().map(|owner| &*owner.user)
    }

    /// 1 with a live session, else 0; what was last seen while the slot is busy.
    fn live_sessions(&self) -> usize {
        match self.state.try_lock() {
            Ok(state) => {
                let count = usize::from(state.session.as_ref().is_some_and(|s| s.is_alive()));
                self.sessions_seen.store(count, Ordering::Relaxed);
                count
            }
            Err(_) => self.sessions_seen.load(Ordering::Relaxed),
        }
    }

    /// Whether its last start failed (the breaker is open); what was last seen while it is busy.
    fn is_failing(&self) -> bool {
        match self.state.try_lock() {
            Ok(state) => {
                let failing = state.failures > 0;
                self.failing_seen.store(failing, Ordering::Relaxed);
                failing
            }
            Err(_) => self.failing_seen.load(Ordering::Relaxed),
        }
    }

    /// Whether it holds no live session and is not opening one. (A failed start's backoff goes
    /// with it: the user's next request tries again, which a broken server answers as before.)
    fn is_vacant(&self) -> bool {
        self.state
            .try_lock()
            .is_ok_and(|state| !state.session.as_ref().is_some_and(|s| s.is_alive()))
    }

    /// How long its live session has been unused; `None` when it has none, or it is in use.
    fn idle_for(&self) -> Option<Duration> {
        let state = self.state.try_lock().ok()?;
        let session = state.session.as_ref().filter(|s| s.is_alive())?;
        session.idle_for()
    }

    /// Closes its session, if any (stopping a stdio server).
    async fn close(&self) {
        let session = self.state.lock().await.session.take();
        if let Some(session) = session {
            session.close().await;
        }
    }

    /// The live session (opening one if needed), counted as in use.
    async fn acquire(self: &Arc<Self>) -> Result<InUse, ApiError> {
        let mut state = self.state.lock().await;
        if let Some(session) = &state.session {
            if session.is_alive() {
                // Counted under the lock, so the idle check cannot close it in between.
                return Ok(session.begin());
            }
            tracing::info!(server = %self.name, user = self.user(), "MCP session ended; starting a new one");
            if let Some(dead) = state.session.take() {
                tokio::spawn(async move { dead.close().await });
            }
        }
        if let Some(retry_at) = state.retry_at
            && let Some(wait) = retry_at.checked_duration_since(Instant::now())
            && let Some(error) = &state.last_error
        {
            // The breaker is open: answer at once, and start nothing.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut open = error.clone();
            open.message = format!(
                "MCP server '{}' is failing to start ({} failed attempts in a row, the last: {}); \
                 it is tried again in {:.1} s",
                self.name,
                state.failures,
                error.message,
                wait.as_secs_f64()
            );
            return Err(open.with_retry_after(Some(seconds)));
        }
        let handler = HandlerState::new(
            Arc::clone(&self.name),
            self.owner.clone(),
            self.changes.clone(),
        );
        // The session outlives the request that opens it: its background task logs under a span
        // of its own, not under that request's.
        let session_span = tracing::info_span!(parent: None, "mcp_session", server = %self.name, user = self.user());
        let connecting = upstream::connect(
            &self.config,
            ProxyClientHandler {
                state: Arc::clone(&handler),
            },
        )
        .instrument(session_span);
        let connected = match tokio::time::timeout(self.config.connect_timeout(), connecting).await
        {
            Ok(result) => result,
            Err(_) => Err(ApiError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "MCP server '{}' did not complete the MCP handshake within {} ms",
                    self.name, self.config.connect_timeout_ms
                ),
            )),
        };
        match connected {
            Ok(connection) => {
                if state.failures > 0 {
                    tracing::info!(server = %self.name, user = self.user(), failures = state.failures, "MCP server started again: breaker closed");
                }
                let session = Arc::new(Session::new(Arc::clone(&self.name), connection, handler));
                tracing::info!(
                    server = %self.name,
                    user = self.user(),
                    protocol_version = %session.protocol_version(),
                    "MCP session established"
                );
                *state = SlotState {
                    session: Some(Arc::clone(&session)),
                    ..SlotState::default()
                };
                watch_idle(
                    Arc::downgrade(self),
                    Arc::downgrade(&session),
                    self.config.idle_timeout(),
                );
                Ok(session.begin())
            }
            Err(error) => {
                state.failures += 1;
                let exponent = state.failures.saturating_sub(1).min(16);
                let delay = BACKOFF_FIRST.saturating_mul(1 << exponent).min(BACKOFF_MAX);
                state.retry_at = Some(Instant::now() + delay);
                state.last_error = Some(error.clone());
                tracing::warn!(
                    server = %self.name,
                    user = self.user(),
                    failures = state.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %error.message,
                    "MCP server failed to start: breaker open until the next attempt"
                );
                Err(error)
            }
        }
    }

    /// Acquires a session and sends the operation on it.
    async fn start(
        self: &Arc<Self>,
        operation: &Operation,
        deadline: Instant,
    ) -> Result<(InUse, InFlight), Attempt> {
        let in_use = self.acquire().await.map_err(Attempt::Final)?;
        self.start_on(in_use, operation, deadline).await
    }

    /// Sends the operation on the given session; a tool call is checked against the cached
    /// tool list first.
    async fn start_on(
        &self,
        in_use: InUse,
        operation: &Operation,
        deadline: Instant,
    ) -> Result<(InUse, InFlight), Attempt> {
        let session = in_use.session();
        if let Operation::CallTool(params) = operation
            && !session.has_tool(&params.name, deadline).await?
        {
            return Err(Attempt::Final(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "MCP server '{}' has no tool named '{}'",
                    self.name,
                    truncate(&params.name, 100)
                ),
            )));
        }
        let in_flight = session.start(operation.request(), deadline).await?;
        Ok((in_use, in_flight))
    }

    /// Decides what a failure means: `Ok` to retry on a fresh session, or the error to answer.
    /// A broken session is dropped from the slot either way.
    async fn judge(
        &self,
        failure: Failure,
        session: Option<&Arc<Session>>,
        operation: &Operation,
        retried: bool,
    ) -> Result<(), ApiError> {
        let name = &self.name;
        let method = operation.method();
        match failure {
            Failure::Rpc(error) if is_session_lost(&error) => {
                // The server does not know the session (it restarted, or expired it); the
                // request was refused, not run, so it can be sent again on a new session.
                tracing::info!(server = %name, "MCP server no longer knows the session");
                self.discard(session).await;
                if retried {
                    return Err(upstream_error(name, "keeps refusing new sessions"));
                }
                Ok(())
            }
            Failure::Rpc(error) => Err(ApiError::from(&error)),
            Failure::Transport { delivered } => {
                self.discard(session).await;
                if !retried && (!delivered || operation.is_read_only()) {
                    return Ok(());
                }
                Err(upstream_error(
                    name,
                    &format!("closed the connection while handling {method}"),
                ))
            }
            Failure::Timeout => Err(ApiError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "MCP server '{name}' did not answer {method} within {} ms",
                    self.config.call_timeout_ms
                ),
            )),
            Failure::Unexpected(what) => Err(upstream_error(name, &what)),
        }
    }

    /// Drops `session` (or, with `None`, whatever session is current and dead) from the slot.
    async fn discard(&self, session: Option<&Arc<Session>>) {
        let mut state = self.state.lock().await;
        let current = match (&state.session, session) {
            (Some(current), Some(session)) => Arc::ptr_eq(current, session),
            (Some(current), None) => !current.is_alive(),
            (None, _) => false,
        };
        if current && let Some(session) = state.session.take() {
            tokio::spawn(async move { session.close().await });
        }
    }
}

/// Closes the session once it has been unused for `idle_timeout`. Holds only weak references: a
/// session replaced or dropped meanwhile ends the watch.
fn watch_idle(slot: Weak<Slot>, session: Weak<Session>, idle_timeout: Duration) {
    tokio::spawn(async move {
        let mut wait = idle_timeout;
        loop {
            tokio::time::sleep(wait).await;
            let (Some(slot), Some(session)) = (slot.upgrade(), session.upgrade()) else {
                return;
            };
            // Checked under the slot's lock, where requests take the session.
            let mut state = slot.state.lock().await;
            if !state
                .session
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &session))
            {
                return;
            }
            match session.idle_for() {
                Some(idle) if idle >= idle_timeout => {
                    tracing::info!(server = %slot.name, user = slot.user(), "closing the idle MCP session");
                    state.session = None;
                    drop(state);
                    session.close().await;
                    return;
                }
                Some(idle) => wait = idle_timeout - idle,
                None => wait = idle_timeout,
            }
        }
    });
}

/// The state of a streamed tool call between two events.
struct ToolStream {
    slot: Arc<Slot>,
    operation: Operation,
    deadline: Instant,
    retried: bool,
    in_use: InUse,
    in_flight: InFlight,
    last_progress: Option<f64>,
}

impl ToolStream {
    async fn next_event(state: Option<Self>) -> Option<(McpToolEvent, Option<Self>)> {
        let mut st = state?;
        loop {
            tokio::select! {
                // Progress already received goes out before the result.
                biased;
                Some(p) = st.in_flight.progress.next() => {
                    // rmcp hands each notification to its own task, so two can swap places;
                    // progress must increase, and a stale one is dropped.
                    if st.last_progress.is_some_and(|last| p.progress <= last) {
                        continue;
                    }
                    st.last_progress = Some(p.progress);
                    let event = McpToolEvent::Progress {
                        progress: p.progress,
                        total: p.total,
                        message: p.message,
                    };
                    return Some((event, Some(st)));
                }
                outcome = &mut st.in_flight.response => {
                    let name = Arc::clone(&st.slot.name);
                    let failure = match outcome {
                        Ok(result) => {
                            let event = match tool_result(&name, result) {
                                Ok(result) => McpToolEvent::Result { result },
                                Err(error) => McpToolEvent::Error { error },
                            };
                            return Some((event, None));
                        }
                        Err(failure) => failure,
                    };
                    let session = Arc::clone(st.in_use.session());
                    if let Err(error) = st.slot.judge(failure, Some(&session), &st.operation, st.retried).await {
                        return Some((McpToolEvent::Error { error }, None));
                    }
                    // Not delivered: start again on a fresh session.
                    st.retried = true;
                    match st.slot.start(&st.operation, st.deadline).await {
                        Ok((in_use, in_flight)) => {
                            st.in_use = in_use;
                            st.in_flight = in_flight;
                            st.last_progress = None;
                        }
                        Err(Attempt::Final(error)) => return Some((McpToolEvent::Error { error }, None)),
                        Err(Attempt::Failed(failure)) => {
                            let error = st
                                .slot
                                .judge(failure, None, &st.operation, true)
                                .await
                                .err()
                                .unwrap_or_else(|| upstream_error(&name, "could not be reached"));
                            return Some((McpToolEvent::Error { error }, None));
                        }
                    }
                }
            }
        }
    }
}

fn tool_params(call: McpToolCall) -> CallToolRequestParams {
    let params = CallToolRequestParams::new(call.name);
    match call.arguments {
        Some(arguments) => params.with_arguments(arguments),
        None => params,
    }
}

/// The tool's result; a result without `content` decodes as an empty result.
fn tool_result(server: &str, result: ServerResult) -> Result<CallToolResult, ApiError> {
    match result {
        ServerResult::CallToolResult(result) => Ok(result),
        ServerResult::EmptyResult(_) => Ok(CallToolResult::default()),
        other => Err(upstream_error(server, &unexpected("tools/call", &other))),
    }
}

/// Whether a JSON-RPC error says the server does not know the session. The MCP TypeScript SDK
/// (and so most servers) answers a stale `Mcp-Session-Id` with HTTP 400 or 404 and error -32000
/// "Bad Request: No valid session ID provided" / "Session not found"; rmcp turns the 404 into a
/// transport error, the 400 arrives here.
fn is_session_lost(error: &ErrorData) -> bool {
    error.code.0 == -32000 && error.message.to_ascii_lowercase().contains("session")
}

fn upstream_error(server: &str, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UpstreamError,
        format!("MCP server '{server}' {what}"),
    )
}

#[cfg(test)]
mod tests {
    use rmcp::model::ErrorCode as RpcCode;

    use super::*;

    #[test]
    fn a_forgotten_session_is_recognised() {
        let lost = |code: i32, message: &str| {
            is_session_lost(&ErrorData::new(RpcCode(code), message.to_owned(), None))
        };
        assert!(lost(-32000, "Bad Request: No valid session ID provided"));
        assert!(lost(-32000, "Session not found"));
        assert!(!lost(-32000, "Bad Request: server is overloaded"));
        assert!(!lost(-32602, "unknown session parameter"));
    }

    #[test]
    fn only_tool_calls_are_unsafe_to_repeat() {
        assert!(!Operation::CallTool(CallToolRequestParams::new("x")).is_read_only());
        assert!(Operation::ListTools(None).is_read_only());
        assert!(Operation::ReadResource("a://b".into()).is_read_only());
        assert!(Operation::GetPrompt(GetPromptRequestParams::new("p")).is_read_only());
    }

    #[test]
    fn cursors_reach_the_request() {
        let request = Operation::ListPrompts(Some("4".into())).request();
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["method"], "prompts/list");
        assert_eq!(json["params"]["cursor"], "4");
        let json = serde_json::to_value(Operation::ListTools(None).request()).unwrap();
        assert!(
            json.get("params").is_none_or(|p| p.get("cursor").is_none()),
            "{json}"
        );
    }

    #[tokio::test]
    async fn unknown_servers_are_not_found_and_nothing_starts() {
        let pool = McpPool::new(&[]);
        let error = pool
            .list_tools(&Identity::anonymous(), "ghost", None)
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NotFound);
        assert_eq!(error.message, "no MCP server named 'ghost' is configured");
        assert!(pool.servers().servers.is_empty());
    }
}
