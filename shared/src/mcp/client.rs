//! A sans-IO MCP client for the Streamable HTTP transport: the SDK's direct mode.
//!
//! Like `quinn-proto` or `httparse`, nothing here touches a socket. An [`McpCall`] is a state
//! machine: [`McpCall::poll`] says what to do next ([`Step`]); the runtime executes the
//! [`HttpRequest`]s it asks for (the browser's `fetch` in the SDK) and feeds back the answer's
//! status and headers ([`McpCall::on_response`]), its body chunks, split anywhere
//! ([`McpCall::on_body`]), and its end ([`McpCall::on_end`]). The [`McpHttpClient`] keeps what
//! outlives one call: the URL, the caller's headers and what was negotiated with the server.
//!
//! # Negotiation
//!
//! The first call negotiates, inside the same loop, before its own request:
//! 1. `server/discover` with protocol version 2026-07-28. A `DiscoverResult` listing that version
//!    means the server is stateless: every later request carries the client's context in
//!    `params._meta` and the `MCP-Protocol-Version`, `Mcp-Method` and (for `tools/call`,
//!    `resources/read`, `prompts/get`) `Mcp-Name` headers.
//! 2. Otherwise (a 4xx such as 400 "Server not initialized", 404 or 405; a JSON-RPC error; or
//!    -32022 listing only older versions) the server predates that revision: `initialize`
//!    offering 2025-11-25 (the server may answer 2025-06-18), then `notifications/initialized`.
//!    The `Mcp-Session-Id` the server returns and `MCP-Protocol-Version` go on every later
//!    request.
//!
//! The outcome is kept in the client. A session that expires (HTTP 404, or 400 naming the session
//! as the TypeScript SDK's servers answer) is re-initialized once, transparently, and the request
//! resent; a stateless server that stops accepting the version (-32022) is rediscovered once.
//! [`McpHttpClient::with_protocol_version`] pins a version and skips what does not apply to it.
//!
//! # Driving a call
//!
//! ```
//! use switchyard_shared::mcp::{McpHttpClient, Step};
//! use switchyard_shared::{ApiError, HttpRequest};
//!
//! // What the runtime provides: `fetch` that resolves with the status and headers, and a reader
//! // of the body's chunks.
//! # struct Response { status: u16, headers: Vec<(String, String)> }
//! # impl Response { async fn next_chunk(&mut self) -> Option<Vec<u8>> { None } }
//! # async fn fetch(_request: HttpRequest) -> Result<Response, ApiError> { unimplemented!() }
//! async fn echo(client: &mut McpHttpClient, text: &str) -> Result<String, ApiError> {
//!     let args = serde_json::json!({ "message": text });
//!     let mut call = client.call_tool("echo", args.as_object().cloned(), true);
//!     let mut response: Option<Response> = None;
//!     loop {
//!         match call.poll(client) {
//!             // A new request replaces the previous response, whose rest is not needed.
//!             Step::Send(request) => {
//!                 let r = fetch(request).await?;
//!                 call.on_response(r.status, &r.headers);
//!                 response = Some(r);
//!             }
//!             Step::Receive => match response.as_mut() {
//!                 Some(r) => match r.next_chunk().await {
//!                     Some(bytes) => call.on_body(&bytes),
//!                     None => call.on_end(),
//!                 },
//!                 None => call.on_end(),
//!             },
//!             Step::Progress(p) => println!("{} of {:?}", p.progress, p.total),
//!             // Done and Failed end the call: drop (abort) any response still open.
//!             Step::Done(result) => return Ok(format!("{:?}", result.content)),
//!             Step::Failed(error) => return Err(error),
//!         }
//!     }
//! }
//! ```
//!
//! Calls may run concurrently on one client (each borrows it only inside `poll`). Calls started
//! before the first negotiation has finished each negotiate; the first to finish is kept, and
//! the others use it for their requests (a session that one of them opened meanwhile is left to
//! expire). Awaiting [`McpHttpClient::connect`] first avoids that.
//!
//! Not handled in this version: server requests arriving on a response stream (sampling,
//! elicitation, roots) are ignored, as the client declares no capability that invites them;
//! results of type `input_required` fail; an event stream cut off early is not resumed with
//! `Last-Event-ID`; `Mcp-Param-*` headers for annotated tool arguments are not sent.

use std::collections::VecDeque;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientCapabilities,
    DiscoverResult, GetPromptRequestParams, GetPromptResult, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListPromptsResult, ListResourcesResult,
    ListToolsResult, NumberOrString, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, ReadResourceRequestParams, ReadResourceResult,
    RequestMetaObject, ServerPeerInfo,
};
use serde::de::DeserializeOwned;

use super::api::McpToolEvent;
use super::error_from_jsonrpc;
use super::headers::{self, encode_header_value};
use super::jsonrpc::{self, RpcError};
use super::response::{Answer, Expect, ResponseReader};
use crate::error::{ApiError, ErrorCode};
use crate::route::{HttpRequest, Method};

/// The stateless revision: no `initialize`, no session, the client's context on every request.
pub const STATELESS_VERSION: ProtocolVersion = ProtocolVersion::V_2026_07_28;

/// The session-based revisions this client speaks, newest first: the one it offers to
/// `initialize`, then the others it accepts in answer.
pub const SESSION_VERSIONS: &[ProtocolVersion] =
    &[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2025_06_18];

/// JSON-RPC codes the client acts on, as rmcp names them.
const UNSUPPORTED_PROTOCOL_VERSION: i64 =
    code(rmcp::model::ErrorCode::UNSUPPORTED_PROTOCOL_VERSION);
const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 =
    code(rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
const HEADER_MISMATCH: i64 = code(rmcp::model::ErrorCode::HEADER_MISMATCH);
const METHOD_NOT_FOUND: i64 = code(rmcp::model::ErrorCode::METHOD_NOT_FOUND);
const INVALID_PARAMS: i64 = code(rmcp::model::ErrorCode::INVALID_PARAMS);
const RESOURCE_NOT_FOUND: i64 = code(rmcp::model::ErrorCode::RESOURCE_NOT_FOUND);

const fn code(c: rmcp::model::ErrorCode) -> i64 {
    c.0 as i64
}

/// What an [`McpCall`] asks of its runtime next.
#[derive(Debug)]
#[must_use]
pub enum Step<T> {
    /// Execute this request, then report its answer with [`McpCall::on_response`]. Any response
    /// of this call still being read is no longer needed: abort it.
    Send(HttpRequest),
    /// Read more of the current response: the next chunk ([`McpCall::on_body`]) or its end
    /// ([`McpCall::on_end`]).
    Receive,
    /// The server reported progress on the request (only when the call asked for it). Poll again.
    Progress(ProgressNotificationParam),
    /// The call succeeded. It is over: abort any response still open.
    Done(T),
    /// The call failed. It is over: abort any response still open.
    Failed(ApiError),
}

/// An MCP server reached over Streamable HTTP, and what has been negotiated with it.
pub struct McpHttpClient {
    url: String,
    /// The caller's headers (e.g. `authorization`), names lowercased; sent on every request.
    headers: Vec<(String, String)>,
    client_info: Implementation,
    pinned: Option<ProtocolVersion>,
    negotiated: Negotiated,
    /// Discovery showed that the server predates the stateless revision: renegotiate with
    /// `initialize` straight away.
    legacy: bool,
    next_id: i64,
}

enum Negotiated {
    Nothing,
    Stateless(Box<ServerPeerInfo>),
    Session {
        peer: Box<ServerPeerInfo>,
        /// `None` when the server runs without sessions.
        session_id: Option<String>,
    },
}

/// The `DELETE` request that ends a session. Its own type because [`Method`] has no `DELETE`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionDelete {
    /// The server's URL.
    pub url: String,
    /// Header names (lowercase) and values: the session id, the protocol version and the
    /// caller's headers.
    pub headers: Vec<(String, String)>,
}

impl SessionDelete {
    /// The HTTP method to use.
    pub const METHOD: &'static str = "DELETE";
}

// Header names only: values may be credentials or the session id.
impl std::fmt::Debug for SessionDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SessionDelete")
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
    }
}

impl McpHttpClient {
    /// A client for the MCP endpoint at `url` (absolute http or https). `headers` go on every
    /// request (e.g. `authorization`); the protocol's own headers may not be among them.
    pub fn new(url: &str, headers: Vec<(String, String)>) -> Result<Self, ApiError> {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
            return Err(ApiError::bad_request(format!(
                "the MCP server URL must be an absolute http(s) URL, got {url:?}"
            )));
        }
        let mut own = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if headers::RESERVED.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "the header {name:?} is set by the MCP client itself"
                )));
            }
            own.push((name, value));
        }
        Ok(McpHttpClient {
            url: url.to_owned(),
            headers: own,
            client_info: Implementation::new("switchyard", env!("CARGO_PKG_VERSION")),
            pinned: None,
            negotiated: Negotiated::Nothing,
            legacy: false,
            next_id: 1,
        })
    }

    /// Uses only `version`: [`STATELESS_VERSION`] (still discovered first, for the server's
    /// capabilities, but never falling back) or one of [`SESSION_VERSIONS`] (`initialize` offers
    /// it and accepts no other).
    pub fn with_protocol_version(mut self, version: ProtocolVersion) -> Result<Self, ApiError> {
        if version != STATELESS_VERSION && !SESSION_VERSIONS.contains(&version) {
            return Err(ApiError::bad_request(format!(
                "Switchyard speaks MCP protocol versions {}, not {version}",
                spoken_versions()
            )));
        }
        self.pinned = Some(version);
        self.negotiated = Negotiated::Nothing;
        Ok(self)
    }

    /// How the client introduces itself (`clientInfo`); `switchyard` and its version by default.
    pub fn with_client_info(mut self, client_info: Implementation) -> Self {
        self.client_info = client_info;
        self
    }

    /// The negotiated protocol version, once a call has negotiated.
    pub fn protocol_version(&self) -> Option<&str> {
        self.peer_info().map(|p| p.protocol_version.as_str())
    }

    /// The current session id, for session-based servers that assign one.
    pub fn session_id(&self) -> Option<&str> {
        match &self.negotiated {
            Negotiated::Session { session_id, .. } => session_id.as_deref(),
            _ => None,
        }
    }

    /// What the server said about itself (version, capabilities, instructions), once negotiated.
    pub fn peer_info(&self) -> Option<&ServerPeerInfo> {
        match &self.negotiated {
            Negotiated::Nothing => None,
            Negotiated::Stateless(peer) | Negotiated::Session { peer, .. } => Some(peer),
        }
    }

    /// Negotiates now, if no call has yet; completes with what the server said about itself.
    pub fn connect(&self) -> McpCall<ServerPeerInfo> {
        McpCall {
            raw: McpRawCall::new(Goal::Connect),
            describe: Some(ServerPeerInfo::clone),
        }
    }

    /// One page of the server's tools (`tools/list`); pass the previous page's `next_cursor`.
    pub fn list_tools(&self, cursor: Option<String>) -> McpCall<ListToolsResult> {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        McpCall::request("tools/list", jsonrpc::to_object(&params), None, false)
    }

    /// Calls a tool (`tools/call`). With `with_progress`, the request asks for progress
    /// notifications, which [`McpCall::poll`] returns as [`Step::Progress`].
    pub fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
        with_progress: bool,
    ) -> McpCall<CallToolResult> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = arguments;
        McpCall::request(
            "tools/call",
            jsonrpc::to_object(&params),
            Some(name),
            with_progress,
        )
    }

    /// One page of the server's resources (`resources/list`).
    pub fn list_resources(&self, cursor: Option<String>) -> McpCall<ListResourcesResult> {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        McpCall::request("resources/list", jsonrpc::to_object(&params), None, false)
    }

    /// Reads a resource (`resources/read`).
    pub fn read_resource(&self, uri: &str) -> McpCall<ReadResourceResult> {
        let params = ReadResourceRequestParams::new(uri);
        McpCall::request(
            "resources/read",
            jsonrpc::to_object(&params),
            Some(uri),
            false,
        )
    }

    /// One page of the server's prompts (`prompts/list`).
    pub fn list_prompts(&self, cursor: Option<String>) -> McpCall<ListPromptsResult> {
        let params = PaginatedRequestParams::default().with_cursor(cursor);
        McpCall::request("prompts/list", jsonrpc::to_object(&params), None, false)
    }

    /// Gets a prompt with its arguments filled in (`prompts/get`).
    pub fn get_prompt(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> McpCall<GetPromptResult> {
        let mut params = GetPromptRequestParams::new(name);
        params.arguments = arguments;
        McpCall::request(
            "prompts/get",
            jsonrpc::to_object(&params),
            Some(name),
            false,
        )
    }

    /// Forgets what was negotiated; for a session, returns the `DELETE` that ends it on the
    /// server (its answer does not matter). The next call negotiates anew.
    pub fn close(&mut self) -> Option<SessionDelete> {
        match std::mem::replace(&mut self.negotiated, Negotiated::Nothing) {
            Negotiated::Session {
                peer,
                session_id: Some(session_id),
            } => {
                let mut headers = vec![
                    (headers::SESSION_ID.to_owned(), session_id),
                    (
                        headers::PROTOCOL_VERSION.to_owned(),
                        peer.protocol_version.to_string(),
                    ),
                ];
                headers.extend(self.headers.iter().cloned());
                Some(SessionDelete {
                    url: self.url.clone(),
                    headers,
                })
            }
            _ => None,
        }
    }

    /// Whether the next negotiation starts with `initialize` rather than `server/discover`.
    fn initialize_first(&self) -> bool {
        match &self.pinned {
            Some(v) => *v != STATELESS_VERSION,
            None => self.legacy,
        }
    }

    /// Keeps a negotiation's outcome, unless another call has already settled one.
    fn adopt(&mut self, negotiated: Negotiated) {
        if matches!(self.negotiated, Negotiated::Nothing) {
            self.negotiated = negotiated;
        }
    }

    /// Forgets the negotiation a failed request was sent under, unless another call has already
    /// replaced it.
    fn forget(&mut self, sent: &Route) {
        let same = match (&self.negotiated, sent) {
            (Negotiated::Stateless(_), Route::Stateless) => true,
            (
                Negotiated::Session { session_id, .. },
                Route::Session {
                    session_id: sent, ..
                },
            ) => session_id == sent,
            _ => false,
        };
        if same {
            self.negotiated = Negotiated::Nothing;
            self.legacy = matches!(sent, Route::Session { .. });
        }
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A POST of `body` with the protocol's headers, then `extra`, then the caller's.
    fn post(&self, body: String, extra: Vec<(&'static str, String)>) -> HttpRequest {
        let mut headers = Vec::with_capacity(2 + extra.len() + self.headers.len());
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        headers.push(("accept".to_owned(), headers::ACCEPT_JSON_AND_SSE.to_owned()));
        headers.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        headers.extend(self.headers.iter().cloned());
        HttpRequest {
            method: Method::Post,
            url: self.url.clone(),
            headers,
            body: Some(body),
        }
    }

    /// The `_meta` every stateless request carries.
    fn client_context(&self) -> RequestMetaObject {
        RequestMetaObject::with_client_context(
            STATELESS_VERSION,
            self.client_info.clone(),
            ClientCapabilities::default(),
        )
    }

    fn discover(&mut self) -> (Exchange, HttpRequest) {
        let id = self.take_id();
        let mut params = JsonObject::new();
        params.insert("_meta".into(), to_value(&self.client_context()));
        let body = jsonrpc::request_body(id, "server/discover", &params);
        let request = self.post(
            body,
            vec![
                (headers::PROTOCOL_VERSION, STATELESS_VERSION.to_string()),
                (headers::METHOD, "server/discover".to_owned()),
            ],
        );
        (Exchange::Discover { id }, request)
    }

    fn initialize(&mut self) -> (Exchange, HttpRequest) {
        let id = self.take_id();
        let offered = match &self.pinned {
            Some(v) if *v != STATELESS_VERSION => v.clone(),
            _ => SESSION_VERSIONS[0].clone(),
        };
        let params =
            InitializeRequestParams::new(ClientCapabilities::default(), self.client_info.clone())
                .with_protocol_version(offered);
        let body = jsonrpc::request_body(id, "initialize", &jsonrpc::to_object(&params));
        // No MCP-Protocol-Version yet: that header follows the negotiation.
        (Exchange::Initialize { id }, self.post(body, Vec::new()))
    }

    fn initialized(&self, handshake: Handshake) -> (Exchange, HttpRequest) {
        let body = jsonrpc::notification_body("notifications/initialized", None);
        let request = self.post(
            body,
            session_headers(&handshake.session_id, &handshake.peer),
        );
        (Exchange::Initialized(Box::new(handshake)), request)
    }

    /// The operation's request under the negotiated protocol; `None` before negotiation.
    fn request(&mut self, op: &Operation) -> Option<(Exchange, HttpRequest)> {
        let (mut meta, route, extra) = match &self.negotiated {
            Negotiated::Nothing => return None,
            Negotiated::Stateless(_) => {
                let mut extra = vec![
                    (headers::PROTOCOL_VERSION, STATELESS_VERSION.to_string()),
                    (headers::METHOD, op.method.to_owned()),
                ];
                if let Some(name) = &op.name {
                    extra.push((headers::NAME, encode_header_value(name)));
                }
                (self.client_context(), Route::Stateless, extra)
            }
            Negotiated::Session { peer, session_id } => (
                RequestMetaObject::new(),
                Route::Session {
                    session_id: session_id.clone(),
                    version: peer.protocol_version.clone(),
                },
                session_headers(session_id, peer),
            ),
        };
        let id = self.take_id();
        if op.progress {
            meta.set_progress_token(ProgressToken(NumberOrString::Number(id)));
        }
        let mut params = op.params.clone();
        if !meta.0.0.is_empty() {
            params.insert("_meta".into(), to_value(&meta));
        }
        let body = jsonrpc::request_body(id, op.method, &params);
        let exchange = Exchange::Request {
            id,
            route,
            progress: op.progress,
        };
        Some((exchange, self.post(body, extra)))
    }

    /// `notifications/cancelled` for a request sent in a session.
    fn cancelled(
        &self,
        id: i64,
        reason: Option<String>,
        session_id: &Option<String>,
        version: &ProtocolVersion,
    ) -> HttpRequest {
        let params = CancelledNotificationParam::new(Some(NumberOrString::Number(id)), reason);
        let body = jsonrpc::notification_body(
            "notifications/cancelled",
            Some(&jsonrpc::to_object(&params)),
        );
        let mut extra = vec![(headers::PROTOCOL_VERSION, version.to_string())];
        if let Some(s) = session_id {
            extra.push((headers::SESSION_ID, s.clone()));
        }
        self.post(body, extra)
    }
}

// Header names only: values may be credentials; the session id is shown as present or not.
impl std::fmt::Debug for McpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("McpHttpClient")
            .field("url", &self.url)
            .field("headers", &names)
            .field("pinned", &self.pinned.as_ref().map(ProtocolVersion::as_str))
            .field("protocol_version", &self.protocol_version())
            .field("session", &self.session_id().is_some())
            .finish()
    }
}

fn session_headers(
    session_id: &Option<String>,
    peer: &ServerPeerInfo,
) -> Vec<(&'static str, String)> {
    let mut extra = vec![(headers::PROTOCOL_VERSION, peer.protocol_version.to_string())];
    if let Some(s) = session_id {
        extra.push((headers::SESSION_ID, s.clone()));
    }
    extra
}

fn to_value<S: serde::Serialize>(value: &S) -> serde_json::Value {
    // rmcp's metadata is a map of JSON values: it always serializes.
    serde_json::to_value(value).unwrap_or_default()
}

fn spoken_versions() -> String {
    std::iter::once(&STATELESS_VERSION)
        .chain(SESSION_VERSIONS)
        .map(ProtocolVersion::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One MCP operation in progress: negotiation if needed, then its request. See the module
/// documentation for the loop that drives it.
#[must_use = "a call does nothing until it is polled"]
pub struct McpCall<T> {
    raw: McpRawCall,
    /// For [`McpHttpClient::connect`]: what the call completes with, from the negotiation.
    describe: Option<fn(&ServerPeerInfo) -> T>,
}

/// An [`McpCall`] whose result is left undecoded ([`McpRawResult`]), driven the same way. The
/// state machine lives here, once for every result type; [`McpCall`] only decodes.
#[must_use = "a call does nothing until it is polled"]
pub struct McpRawCall {
    goal: Goal,
    state: CallState,
    /// Progress decoded but not yet returned by `poll`, in arrival order.
    progress: VecDeque<ProgressNotificationParam>,
    /// The call has negotiated anew after its session expired (or its version was dropped):
    /// that happens at most once.
    renegotiated: bool,
}

enum Goal {
    /// Only negotiate; complete with the server's description.
    Connect,
    Request(Operation),
}

/// The response to an [`McpRawCall`]'s request, not yet read as its result type.
pub struct McpRawResult {
    /// The JSON-RPC method, for error messages.
    method: &'static str,
    /// The whole JSON-RPC response message; `None` for a call that only negotiated.
    message: Option<Vec<u8>>,
}

impl McpRawResult {
    /// Reads the message's `result` as `T`; an unreadable result is an `upstream_error`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let Some(message) = &self.message else {
            return Err(ApiError::internal("a connect call has no result to read"));
        };
        jsonrpc::result_of::<T>(message).map_err(|e| {
            ApiError::new(
                ErrorCode::UpstreamError,
                format!("the MCP server's {} result is unreadable: {e}", self.method),
            )
        })
    }
}

impl std::fmt::Debug for McpRawResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpRawResult")
            .field("method", &self.method)
            .field("len", &self.message.as_ref().map(Vec::len))
            .finish()
    }
}

struct Operation {
    method: &'static str,
    /// `params` without `_meta`, which depends on the negotiation.
    params: JsonObject,
    /// The `Mcp-Name` header value (tool or prompt name, resource URI).
    name: Option<String>,
    progress: bool,
}

enum CallState {
    /// The next `poll` sends what the client's negotiation calls for.
    Ready,
    /// `initialize` succeeded: the next `poll` sends `notifications/initialized`.
    Confirm(Box<Handshake>),
    /// A request is out; `reader` reads its answer once `on_response` has been called.
    InFlight {
        exchange: Exchange,
        reader: Option<Box<ResponseReader>>,
    },
    /// The call failed (or was cancelled); the next `poll` says so.
    Failed(ApiError),
    /// `poll` has returned `Done` or `Failed`.
    Over,
}

struct Handshake {
    peer: ServerPeerInfo,
    session_id: Option<String>,
}

enum Exchange {
    Discover {
        id: i64,
    },
    Initialize {
        id: i64,
    },
    Initialized(Box<Handshake>),
    Request {
        id: i64,
        route: Route,
        progress: bool,
    },
}

/// How a request was sent: what to forget if it is refused, and what a cancellation needs.
enum Route {
    Stateless,
    Session {
        session_id: Option<String>,
        version: ProtocolVersion,
    },
}

impl Exchange {
    fn expect(&self) -> Expect {
        match self {
            Exchange::Discover { id } | Exchange::Initialize { id } => Expect {
                id: Some(*id),
                progress_token: None,
            },
            Exchange::Initialized(_) => Expect {
                id: None,
                progress_token: None,
            },
            Exchange::Request { id, progress, .. } => Expect {
                id: Some(*id),
                progress_token: progress.then_some(*id),
            },
        }
    }
}

impl<T> std::fmt::Debug for McpCall<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.fmt(f)
    }
}

impl std::fmt::Debug for McpRawCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = self.method();
        let state = match &self.state {
            CallState::Ready => "ready",
            CallState::Confirm(_) => "confirming the session",
            CallState::InFlight { .. } => "in flight",
            CallState::Failed(_) => "failed",
            CallState::Over => "over",
        };
        f.debug_struct("McpCall")
            .field("method", &method)
            .field("state", &state)
            .finish()
    }
}

impl<T: DeserializeOwned> McpCall<T> {
    fn request(
        method: &'static str,
        params: JsonObject,
        name: Option<&str>,
        progress: bool,
    ) -> Self {
        McpCall {
            raw: McpRawCall::new(Goal::Request(Operation {
                method,
                params,
                name: name.map(str::to_owned),
                progress,
            })),
            describe: None,
        }
    }

    /// What to do next. Progress comes first, in arrival order; then the next request, or the
    /// outcome.
    pub fn poll(&mut self, client: &mut McpHttpClient) -> Step<T> {
        match self.raw.poll(client) {
            Step::Send(request) => Step::Send(request),
            Step::Receive => Step::Receive,
            Step::Progress(p) => Step::Progress(p),
            Step::Done(raw) => {
                let described = self.describe.zip(client.peer_info());
                match described {
                    Some((describe, peer)) => Step::Done(describe(peer)),
                    None => match raw.decode() {
                        Ok(value) => Step::Done(value),
                        Err(e) => Step::Failed(e),
                    },
                }
            }
            Step::Failed(e) => Step::Failed(e),
        }
    }
}

impl<T> McpCall<T> {
    /// The same call with its result left undecoded: a runtime that drives calls of several
    /// result types through one loop decodes each result itself ([`McpRawResult::decode`]).
    pub fn into_raw(self) -> McpRawCall {
        self.raw
    }

    /// Reports the status and headers of the answer to the last [`Step::Send`].
    pub fn on_response(&mut self, status: u16, headers: &[(String, String)]) {
        self.raw.on_response(status, headers);
    }

    /// Feeds a chunk of the current response's body (split anywhere).
    pub fn on_body(&mut self, chunk: &[u8]) {
        self.raw.on_body(chunk);
    }

    /// Reports that the current response's body has ended.
    pub fn on_end(&mut self) {
        self.raw.on_end();
    }

    /// Gives up on the call; see [`McpRawCall::cancel`].
    pub fn cancel(
        &mut self,
        client: &McpHttpClient,
        reason: Option<String>,
    ) -> Option<HttpRequest> {
        self.raw.cancel(client, reason)
    }
}

impl McpRawCall {
    fn new(goal: Goal) -> Self {
        McpRawCall {
            goal,
            state: CallState::Ready,
            progress: VecDeque::new(),
            renegotiated: false,
        }
    }

    fn method(&self) -> &'static str {
        match &self.goal {
            Goal::Connect => "connect",
            Goal::Request(op) => op.method,
        }
    }

    /// Reports the status and headers of the answer to the last [`Step::Send`].
    pub fn on_response(&mut self, status: u16, headers: &[(String, String)]) {
        if let CallState::InFlight { exchange, reader } = &mut self.state {
            if reader.is_none() {
                *reader = Some(Box::new(ResponseReader::new(
                    status,
                    headers,
                    exchange.expect(),
                )));
            } else {
                self.state = CallState::Failed(ApiError::internal(
                    "the MCP client was given two responses to one request",
                ));
            }
        }
    }

    /// Feeds a chunk of the current response's body (split anywhere).
    pub fn on_body(&mut self, chunk: &[u8]) {
        if let CallState::InFlight {
            reader: Some(reader),
            ..
        } = &mut self.state
        {
            reader.push(chunk, &mut self.progress);
        }
    }

    /// Reports that the current response's body has ended.
    pub fn on_end(&mut self) {
        if let CallState::InFlight {
            reader: Some(reader),
            ..
        } = &mut self.state
        {
            reader.finish();
        }
    }

    /// Gives up on the call; the next `poll` returns [`ErrorCode::Aborted`]. The runtime aborts
    /// the open response, if any. For a request sent in a session this returns the
    /// `notifications/cancelled` to send (its answer does not matter); a stateless server learns
    /// of the cancellation from the closed response, so there is nothing to send.
    pub fn cancel(
        &mut self,
        client: &McpHttpClient,
        reason: Option<String>,
    ) -> Option<HttpRequest> {
        let notice = match &self.state {
            CallState::InFlight {
                exchange:
                    Exchange::Request {
                        id,
                        route:
                            Route::Session {
                                session_id,
                                version,
                            },
                        ..
                    },
                reader,
            } if reader.as_ref().and_then(|r| r.answer()).is_none() => {
                Some(client.cancelled(*id, reason, session_id, version))
            }
            _ => None,
        };
        if !matches!(self.state, CallState::Over) {
            self.progress.clear();
            self.state = CallState::Failed(ApiError::new(
                ErrorCode::Aborted,
                "the MCP call was cancelled",
            ));
        }
        notice
    }
}

impl McpRawCall {
    /// What to do next. Progress comes first, in arrival order; then the next request, or the
    /// outcome.
    pub fn poll(&mut self, client: &mut McpHttpClient) -> Step<McpRawResult> {
        if let Some(p) = self.progress.pop_front() {
            return Step::Progress(p);
        }
        loop {
            match std::mem::replace(&mut self.state, CallState::Over) {
                CallState::Ready => return self.start(client),
                CallState::Confirm(handshake) => {
                    let (exchange, request) = client.initialized(*handshake);
                    return self.send(exchange, request);
                }
                CallState::InFlight {
                    exchange,
                    reader: Some(mut reader),
                } => match reader.take_answer() {
                    Some(answer) => {
                        if let Some(step) = self.conclude(client, exchange, &reader, answer) {
                            return step;
                        }
                    }
                    None => {
                        self.state = CallState::InFlight {
                            exchange,
                            reader: Some(reader),
                        };
                        return Step::Receive;
                    }
                },
                state @ CallState::InFlight { reader: None, .. } => {
                    self.state = state;
                    return Step::Receive;
                }
                CallState::Failed(error) => return Step::Failed(error),
                CallState::Over => {
                    return Step::Failed(ApiError::internal("the MCP call has already finished"));
                }
            }
        }
    }

    fn send(&mut self, exchange: Exchange, request: HttpRequest) -> Step<McpRawResult> {
        self.state = CallState::InFlight {
            exchange,
            reader: None,
        };
        Step::Send(request)
    }

    /// Sends what comes next: a negotiation step, or the operation's request.
    fn start(&mut self, client: &mut McpHttpClient) -> Step<McpRawResult> {
        if client.peer_info().is_none() {
            let (exchange, request) = if client.initialize_first() {
                client.initialize()
            } else {
                client.discover()
            };
            return self.send(exchange, request);
        }
        match &self.goal {
            Goal::Connect => Step::Done(McpRawResult {
                method: "connect",
                message: None,
            }),
            Goal::Request(op) => match client.request(op) {
                Some((exchange, request)) => self.send(exchange, request),
                None => Step::Failed(ApiError::internal("MCP request before negotiation")),
            },
        }
    }

    /// Acts on the answer to an exchange: a final step, or `None` with `self.state` set to
    /// what comes next.
    fn conclude(
        &mut self,
        client: &mut McpHttpClient,
        exchange: Exchange,
        reader: &ResponseReader,
        answer: Answer,
    ) -> Option<Step<McpRawResult>> {
        match exchange {
            Exchange::Discover { .. } => self.after_discover(client, reader, answer),
            Exchange::Initialize { .. } => self.after_initialize(client, reader, answer),
            Exchange::Initialized(handshake) => match answer {
                Answer::Accepted => {
                    let Handshake { peer, session_id } = *handshake;
                    client.adopt(Negotiated::Session {
                        peer: Box::new(peer),
                        session_id,
                    });
                    self.state = CallState::Ready;
                    None
                }
                other => Some(Step::Failed(failure(reader, other))),
            },
            Exchange::Request { route, .. } => self.after_request(client, reader, answer, route),
        }
    }

    fn after_discover(
        &mut self,
        client: &mut McpHttpClient,
        reader: &ResponseReader,
        answer: Answer,
    ) -> Option<Step<McpRawResult>> {
        match answer {
            Answer::Result { message, .. } => {
                match jsonrpc::result_of::<DiscoverResult>(&message) {
                    Ok(result) if result.supported_versions.contains(&STATELESS_VERSION) => {
                        let peer = ServerPeerInfo::from_discover_result(STATELESS_VERSION, result);
                        client.adopt(Negotiated::Stateless(Box::new(peer)));
                        self.state = CallState::Ready;
                        None
                    }
                    Ok(result) => self.fall_back(client, &result.supported_versions),
                    Err(e) => Some(Step::Failed(ApiError::new(
                        ErrorCode::UpstreamError,
                        format!("the MCP server's server/discover result is unreadable: {e}"),
                    ))),
                }
            }
            Answer::Error(e) if e.code == UNSUPPORTED_PROTOCOL_VERSION => {
                self.fall_back(client, &supported_versions(&e))
            }
            Answer::Error(e)
                if matches!(e.code, HEADER_MISMATCH | MISSING_REQUIRED_CLIENT_CAPABILITY) =>
            {
                Some(Step::Failed(failure(reader, Answer::Error(e))))
            }
            Answer::Error(_) | Answer::Http { .. } if predates_discover(reader.status) => {
                self.fall_back(client, &[])
            }
            other => Some(Step::Failed(failure(reader, other))),
        }
    }

    /// The server does not speak the stateless revision: use `initialize`, unless it is known
    /// to speak none of the session-based revisions either, or the caller pinned 2026-07-28.
    fn fall_back(
        &mut self,
        client: &mut McpHttpClient,
        supported: &[ProtocolVersion],
    ) -> Option<Step<McpRawResult>> {
        let pinned_stateless = client.pinned.as_ref() == Some(&STATELESS_VERSION);
        let none_spoken =
            !supported.is_empty() && !supported.iter().any(|v| SESSION_VERSIONS.contains(v));
        if pinned_stateless || none_spoken {
            let theirs = if supported.is_empty() {
                "an older revision".to_owned()
            } else {
                supported
                    .iter()
                    .map(ProtocolVersion::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ours = if pinned_stateless {
                STATELESS_VERSION.to_string()
            } else {
                spoken_versions()
            };
            return Some(Step::Failed(version_error(format!(
                "the MCP server speaks protocol {theirs}; this client speaks {ours}"
            ))));
        }
        client.legacy = true;
        self.state = CallState::Ready;
        None
    }

    fn after_initialize(
        &mut self,
        client: &mut McpHttpClient,
        reader: &ResponseReader,
        answer: Answer,
    ) -> Option<Step<McpRawResult>> {
        let Answer::Result { message, .. } = answer else {
            return Some(Step::Failed(failure(reader, answer)));
        };
        let result = match jsonrpc::result_of::<InitializeResult>(&message) {
            Ok(result) => result,
            Err(e) => {
                return Some(Step::Failed(ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("the MCP server's initialize result is unreadable: {e}"),
                )));
            }
        };
        let chosen = &result.protocol_version;
        let acceptable = match &client.pinned {
            Some(pinned) => pinned == chosen,
            None => SESSION_VERSIONS.contains(chosen),
        };
        if !acceptable {
            let ours = match &client.pinned {
                Some(pinned) => pinned.to_string(),
                None => SESSION_VERSIONS
                    .iter()
                    .map(ProtocolVersion::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            return Some(Step::Failed(version_error(format!(
                "the MCP server chose protocol {chosen}; this client accepts {ours}"
            ))));
        }
        self.state = CallState::Confirm(Box::new(Handshake {
            peer: result.into(),
            session_id: reader.session_id.clone(),
        }));
        None
    }

    fn after_request(
        &mut self,
        client: &mut McpHttpClient,
        reader: &ResponseReader,
        answer: Answer,
        route: Route,
    ) -> Option<Step<McpRawResult>> {
        let answer = match answer {
            Answer::Result {
                message,
                result_type,
            } => {
                if let Some(kind) = result_type.as_deref().filter(|k| *k != "complete") {
                    let mut e = ApiError::new(
                        ErrorCode::UpstreamError,
                        format!(
                            "the MCP server answered with a result of type {kind:?}, which this client does not handle"
                        ),
                    );
                    e.retryable = false;
                    return Some(Step::Failed(e));
                }
                return Some(Step::Done(McpRawResult {
                    method: self.method(),
                    message: Some(message),
                }));
            }
            other => other,
        };
        let refused = match &route {
            Route::Session {
                session_id: Some(_),
                ..
            } => session_expired(reader.status, &answer),
            Route::Session { .. } => false,
            Route::Stateless => {
                matches!(&answer, Answer::Error(e) if e.code == UNSUPPORTED_PROTOCOL_VERSION)
            }
        };
        if !refused {
            return Some(Step::Failed(failure(reader, answer)));
        }
        if self.renegotiated {
            let what = match route {
                Route::Session { .. } => "the session it had just created",
                Route::Stateless => "the protocol version it had just offered",
            };
            return Some(Step::Failed(ApiError::new(
                ErrorCode::UpstreamError,
                format!("the MCP server refused {what} (HTTP {})", reader.status),
            )));
        }
        self.renegotiated = true;
        client.forget(&route);
        self.state = CallState::Ready;
        None
    }
}

/// Whether a failed `server/discover` says the server predates the stateless revision (rather
/// than that it refuses the client or is broken): any 2xx (with a JSON-RPC error), and the 4xx
/// that are not about credentials, size or rate.
fn predates_discover(status: u16) -> bool {
    (200..300).contains(&status)
        || ((400..500).contains(&status) && !matches!(status, 401 | 403 | 407 | 408 | 413 | 429))
}

/// Whether a request sent with a session id was refused because the server no longer knows the
/// session: 404 (the spec), unless it carries a JSON-RPC error about the request itself (unknown
/// method, tool or resource); or 400 naming the session (as the TypeScript SDK's example servers
/// answer an unknown id: -32000 "Bad Request: No valid session ID provided").
fn session_expired(status: u16, answer: &Answer) -> bool {
    let names_session = |m: &str| m.to_ascii_lowercase().contains("session");
    match status {
        404 => match answer {
            Answer::Error(e) => {
                names_session(&e.message)
                    || !matches!(
                        e.code,
                        METHOD_NOT_FOUND | INVALID_PARAMS | RESOURCE_NOT_FOUND
                    )
            }
            _ => true,
        },
        400 => match answer {
            Answer::Error(e) => names_session(&e.message),
            Answer::Http { message: Some(m) } => names_session(m),
            _ => false,
        },
        _ => false,
    }
}

/// The versions a -32022 error lists in `data.supported`.
fn supported_versions(e: &RpcError) -> Vec<ProtocolVersion> {
    e.data
        .as_ref()
        .and_then(|d| d.get("supported"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn version_error(message: String) -> ApiError {
    let mut e = ApiError::new(ErrorCode::UpstreamError, message);
    e.retryable = false;
    e
}

/// Maps a failed answer into the taxonomy.
fn failure(reader: &ResponseReader, answer: Answer) -> ApiError {
    let status = reader.status;
    let retry_after = reader.retry_after.as_deref();
    match answer {
        Answer::Error(e) => match status {
            // Credentials: the server's message may echo them.
            401 | 403 => ApiError::from_upstream_status(status, None, None),
            // The HTTP status says more than the JSON-RPC code (-32000, server error) does.
            408 | 413 | 429 | 504 => {
                ApiError::from_upstream_status(status, Some(&e.message), retry_after)
            }
            _ => error_from_jsonrpc(e.code_i32(), &e.message),
        },
        Answer::Http { message } => {
            ApiError::from_upstream_status(status, message.as_deref(), retry_after)
        }
        Answer::Interrupted => ApiError::new(
            ErrorCode::StreamInterrupted,
            "the MCP server's answer ended before the response to the request",
        ),
        Answer::Unreadable(message) => ApiError::new(ErrorCode::UpstreamError, message),
        Answer::Accepted | Answer::Result { .. } if reader.is_success() => ApiError::new(
            ErrorCode::UpstreamError,
            "the MCP server's answer does not fit the request",
        ),
        Answer::Accepted | Answer::Result { .. } => {
            ApiError::from_upstream_status(status, None, retry_after)
        }
    }
}

/// Progress as the proxy's streamed tool call reports it, so that both modes emit the same
/// events.
impl From<ProgressNotificationParam> for McpToolEvent {
    fn from(p: ProgressNotificationParam) -> Self {
        McpToolEvent::Progress {
            progress: p.progress,
            total: p.total,
            message: p.message,
        }
    }
}

#[cfg(test)]
mod tests;
