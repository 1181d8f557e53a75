//! An MCP server written with `rmcp`, for tests and benchmarks: deterministic tools, a few
//! resources and prompts (paginated, two per page), progress notifications, and counters that let
//! a test see what the proxy did to it (sessions opened, calls cancelled, the process id).
//!
//! It speaks every protocol version rmcp knows, 2026-07-28 included. Over HTTP it is served
//! without legacy sessions (`--stateless`): every 2026-07-28 request stands alone, as the protocol
//! intends; older clients are served statelessly too.
//!
//! Tools: `echo {message}` → `"Echo: <message>"`; `add {a, b}` → the sum; `slow {steps, delay_ms}`
//! → one progress notification per step, honouring cancellation; `pid` → the server's process
//! id; `env {name}` → a variable of its environment; `stats` → the counters as JSON;
//! `protocol_version` → the version of the calling request; `reveal` → from then on `revealed` is
//! listed too (a tool added without notice).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CancelledNotificationParam, DiscoverResult, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    Prompt, PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{
    ErrorData, RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;
use tokio::task::JoinHandle;

/// Items per page of `tools/list`, `resources/list` and `prompts/list`, so that clients must
/// follow `nextCursor`.
pub const PAGE_SIZE: usize = 4;

/// What the server has seen, shared by every request (and, over HTTP, every session).
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions opened: `initialize` handshakes plus `server/discover` probes.
    pub sessions: AtomicU64,
    /// `slow` calls that ended before their last step (cancelled or abandoned).
    pub cancelled: AtomicU64,
    /// `notifications/cancelled` received: a client that gives up on a call says so.
    pub cancel_notices: AtomicU64,
    /// Tool calls received.
    pub calls: AtomicU64,
    /// Whether `revealed` is listed yet (set by `reveal`). It can be called either way: a
    /// server that adds a tool without telling the client.
    pub revealed: AtomicBool,
}

/// The server's handler; cheap to clone, all clones share the counters.
#[derive(Debug, Clone)]
pub struct TestServer {
    counters: Arc<Counters>,
    tool_router: ToolRouter<TestServer>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    message: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: f64,
    b: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EnvArgs {
    /// The variable's name.
    name: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SlowArgs {
    /// Number of steps; one progress notification each.
    steps: u32,
    /// Pause before each step, in milliseconds.
    delay_ms: u64,
}

/// Counts a `slow` call as cancelled unless it completed; a handler can be stopped either by its
/// cancellation token or by being dropped, and both must be seen.
struct CancelWitness {
    counters: Arc<Counters>,
    completed: bool,
}

impl Drop for CancelWitness {
    fn drop(&mut self) {
        if !self.completed {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tool_router]
impl TestServer {
    /// A server with fresh counters.
    pub fn new() -> Self {
        Self::with_counters(Arc::default())
    }

    /// A server recording into `counters`.
    pub fn with_counters(counters: Arc<Counters>) -> Self {
        TestServer {
            counters,
            tool_router: Self::tool_router(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    #[tool(description = "Echo back the message")]
    fn echo(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> String {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        format!("Echo: {message}")
    }

    #[tool(description = "Add two numbers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        format!("{}", a + b)
    }

    #[tool(description = "Take `steps` steps of `delay_ms` each, reporting progress after each")]
    async fn slow(
        &self,
        Parameters(SlowArgs { steps, delay_ms }): Parameters<SlowArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<String, ErrorData> {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        let mut witness = CancelWitness {
            counters: Arc::clone(&self.counters),
            completed: false,
        };
        let token = context.meta.get_progress_token();
        for step in 1..=steps {
            tokio::select! {
                () = context.ct.cancelled() => {
                    return Err(ErrorData::internal_error("cancelled", None));
                }
                () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            }
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps))
                    .with_message(format!("step {step} of {steps}"));
                // The client may be gone; the witness records that.
                let _ = context.peer.notify_progress(progress).await;
            }
        }
        witness.completed = true;
        Ok(format!("done after {steps} steps"))
    }

    #[tool(description = "The value of an environment variable of the server, or empty")]
    fn env(&self, Parameters(EnvArgs { name }): Parameters<EnvArgs>) -> String {
        std::env::var(name).unwrap_or_default()
    }

    #[tool(description = "List the tool `revealed` from now on (without notifying anyone)")]
    fn reveal(&self) -> String {
        self.counters.revealed.store(true, Ordering::SeqCst);
        "revealed".into()
    }

    #[tool(description = "List the tool `revealed` from now on, and tell the client so")]
    async fn announce(&self, context: RequestContext<RoleServer>) -> Result<String, ErrorData> {
        self.counters.revealed.store(true, Ordering::SeqCst);
        context
            .peer
            .notify_tool_list_changed()
            .await
            .map_err(|e| ErrorData::internal_error(format!("not announced: {e}"), None))?;
        Ok("announced".into())
    }

    #[tool(description = "A tool listed only after `reveal`")]
    fn revealed(&self) -> String {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        "you found me".into()
    }

    #[tool(description = "The server's process id")]
    fn pid(&self) -> String {
        self.counters.calls.fetch_add(1, Ordering::SeqCst);
        std::process::id().to_string()
    }

    #[tool(
        description = "Counters: sessions opened, slow calls cancelled, cancellation notices and tool calls received"
    )]
    fn stats(&self) -> String {
        let c = &self.counters;
        serde_json::json!({
            "sessions": c.sessions.load(Ordering::SeqCst),
            "cancelled": c.cancelled.load(Ordering::SeqCst),
            "cancel_notices": c.cancel_notices.load(Ordering::SeqCst),
            "calls": c.calls.load(Ordering::SeqCst),
            "pid": std::process::id(),
        })
        .to_string()
    }

    #[tool(description = "The protocol version of this request")]
    fn protocol_version(&self, context: RequestContext<RoleServer>) -> String {
        context
            .protocol_version()
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

impl Default for TestServer {
    fn default() -> Self {
        Self::new()
    }
}

/// The page of `items` that `cursor` names (the cursor is the index of the first item).
fn page<T: Clone>(
    items: &[T],
    request: Option<PaginatedRequestParams>,
) -> Result<(Vec<T>, Option<String>), ErrorData> {
    let start = match request.and_then(|r| r.cursor) {
        None => 0,
        Some(cursor) => cursor
            .parse::<usize>()
            .ok()
            .filter(|&i| i < items.len())
            .ok_or_else(|| ErrorData::invalid_params(format!("invalid cursor {cursor:?}"), None))?,
    };
    let end = (start + PAGE_SIZE).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}

fn resources() -> Vec<Resource> {
    (1..=5)
        .map(|i| {
            Resource::new(format!("test://resource/{i}"), format!("resource-{i}"))
                .with_description(format!("Test resource number {i}"))
        })
        .collect()
}

fn prompts() -> Vec<Prompt> {
    let mut prompts = vec![Prompt::new(
        "greeting",
        Some("Greets someone"),
        Some(vec![
            PromptArgument::new("name")
                .with_description("Who to greet")
                .with_required(true),
        ]),
    )];
    prompts
        .extend((1..=4).map(|i| Prompt::new(format!("plain-{i}"), Some("A plain prompt"), None)));
    prompts
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "switchyard-mcp-test-server",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn on_cancelled(
        &self,
        _notification: CancelledNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        self.counters.cancel_notices.fetch_add(1, Ordering::SeqCst);
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        self.counters.sessions.fetch_add(1, Ordering::SeqCst);
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        self.counters.sessions.fetch_add(1, Ordering::SeqCst);
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let revealed = self.counters.revealed.load(Ordering::SeqCst);
        let tools: Vec<_> = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|tool| revealed || tool.name != "revealed")
            .collect();
        let (tools, next) = page(&tools, request)?;
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let (items, next) = page(&resources(), request)?;
        let mut result = ListResourcesResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let known = resources().iter().any(|r| r.uri == request.uri);
        if !known {
            return Err(ErrorData::resource_not_found(
                format!("no resource {}", request.uri),
                None,
            ));
        }
        let number = request.uri.rsplit('/').next().unwrap_or_default();
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text(
                format!("content of resource {number}"),
                request.uri,
            )],
        )))
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let (items, next) = page(&prompts(), request)?;
        let mut result = ListPromptsResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let text = match request.name.as_str() {
            "greeting" => {
                let name = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("name"))
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| {
                        ErrorData::invalid_params("argument `name` is required", None)
                    })?;
                format!("Please greet {name} warmly.")
            }
            name if prompts().iter().any(|p| p.name == name) => format!("This is {name}."),
            name => {
                return Err(ErrorData::invalid_params(format!("no prompt {name}"), None));
            }
        };
        Ok(GetPromptResponse::Complete(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description("a test prompt"),
        ))
    }
}

/// Serves one session on stdin/stdout until the client closes it.
pub async fn serve_stdio(server: TestServer) -> anyhow::Result<()> {
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// Origins a browser on this machine may call from.
const LOOPBACK_ORIGINS: [&str; 2] = ["http://127.0.0.1:*", "http://localhost:*"];

/// What a browser needs to speak Streamable HTTP to this server: the protocol's request headers
/// allowed, and the session id exposed (without it, every call after `initialize` fails).
fn browser_cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let loopback = |origin: &HeaderValue, _: &axum::http::request::Parts| {
        origin.to_str().is_ok_and(|o| {
            ["http://127.0.0.1:", "http://localhost:"]
                .iter()
                .any(|prefix| o.starts_with(prefix))
        })
    };
    let headers = [
        "content-type",
        "accept",
        "authorization",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    ]
    .map(HeaderName::from_static);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(loopback))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(headers)
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
        ])
}

/// The server over Streamable HTTP on `127.0.0.1`, at path `/mcp`, until dropped.
#[derive(Debug)]
pub struct HttpTestServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl HttpTestServer {
    /// Binds `addr` (port 0 for any) and serves. `stateless`: no legacy sessions, every request
    /// stands alone (2026-07-28 requests are stateless either way).
    pub async fn start(addr: SocketAddr, stateless: bool) -> anyhow::Result<Self> {
        Self::start_with(addr, stateless, true).await
    }

    /// Like [`HttpTestServer::start`]; without `cors` it sends no CORS headers, as a server that
    /// does not admit browsers: a page's calls are refused by the browser before they are sent.
    pub async fn start_with(addr: SocketAddr, stateless: bool, cors: bool) -> anyhow::Result<Self> {
        let server = TestServer::new();
        let counters = Arc::clone(server.counters());
        let mut config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(!stateless)
            .with_sse_keep_alive(None);
        // Pages on loopback may call it (the browser tests do); any other origin is refused, as
        // the MCP spec asks of local servers (DNS rebinding).
        config.allowed_origins = LOOPBACK_ORIGINS.iter().map(|o| (*o).to_owned()).collect();
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            LocalSessionManager::default().into(),
            config,
        );
        let app = axum::Router::new().nest_service("/mcp", service);
        let app = if cors { app.layer(browser_cors()) } else { app };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Without TCP_NODELAY an event-stream answer written in parts waits on Nagle's
            // algorithm, which would make the direct baseline of `bench/mcp.sh` look slow.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::warn!(%error, "TCP_NODELAY not set");
                }
            });
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "MCP test server failed");
            }
        });
        Ok(HttpTestServer {
            addr,
            counters,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint, `http://ADDR/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// What it has seen.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for HttpTestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
