//! Streamable HTTP upstreams: an rmcp [`Transport`] of the proxy's own over reqwest, and a way
//! for the pool's requests past rmcp's service loop ([`DirectRequests`]).
//!
//! Why not rmcp's `StreamableHttpClientTransport`: every message went through a worker task. It
//! was queued to the worker, cloned and serialized a second time to derive its headers, posted
//! from the worker's event loop; an event-stream answer was read on a task of its own, which
//! queued each message to the worker, which queued it to the service loop, which spawned a task
//! per send and handed the answer to the caller through a channel of its own. Profiled under
//! `bench/mcp.sh` (one caller), the proxy spent about 140 µs of CPU per tool call on an HTTP
//! upstream against 50 µs on a stdio one, on the core the upstream shares, so the hops and
//! copies were most of the gap between calling the upstream through the proxy and directly.
//!
//! What replaces them:
//! - [`HttpTransport`] makes each exchange inside the future `send` returns (rmcp's service
//!   already runs it on a task of its own) and hands the answer's messages straight to the
//!   service loop. rmcp's service still drives the lifecycle (`server/discover`, or `initialize`
//!   for older servers), server notifications and requests, and its own requests.
//! - [`DirectRequests`] sends the pool's requests on the caller's task: no service loop, no
//!   spawned send, the answer returned where it is awaited. Whatever else arrives on the
//!   answer's event stream (server requests, other notifications) still goes to the service
//!   loop; the request's own progress goes to its subscriber directly.
//! - Messages are encoded once, and a tool call's without rmcp's `Value` round trip
//!   ([`encode`]); an answer is read as the result type its request asks for ([`read_message`]).
//!
//! Kept from rmcp's transport: the `Mcp-Session-Id` of the answer to `initialize` and the
//! negotiated `MCP-Protocol-Version` on every later message; from 2026-07-28 on, the version in
//! each request's `_meta` and the SEP-2243 headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` for
//! arguments a listed tool's schema annotates); answers as JSON or as an event stream; an error
//! without an `id` answering a request given that id ([`correlate`]); a refused
//! `server/discover` turned into a JSON-RPC error, so the lifecycle falls back to `initialize`;
//! for a session, the `GET` event stream of the server's own messages (`tools/list_changed`),
//! opened again with backoff when it ends, and a `DELETE` on close; cancellation by closing the
//! request's exchange and, in a session, posting `notifications/cancelled` (a 2026-07-28 request
//! has no session to post it in). Which requests the server received (a 2xx answer to their
//! POST) is recorded, for the pool's decision to repeat one.
//!
//! Left out: resuming a cut-off event stream with `Last-Event-ID`; OAuth; re-initializing an
//! expired session inside the transport (on a 404 the transport closes, and the pool opens a new
//! session and repeats the request when that is safe); dropping listed tools whose
//! `x-mcp-header` annotations are invalid (their headers are sent where they can be); answers
//! to the pool's requests that arrive on the `GET` stream instead of the POST (202).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{AbortHandle, AbortRegistration, Abortable};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use rmcp::RoleClient;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, ErrorData, GetExtensions, GetMeta,
    JsonObject, JsonRpcMessage, JsonRpcVersion2_0, ProgressToken, ProtocolVersion, RequestId,
    RequestMetaObject, ServerJsonRpcMessage, ServerNotification, ServerResult,
};
use rmcp::service::{InboundStreamOrigin, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use secrecy::ExposeSecret;
use serde_json::Value;
use switchyard_shared::mcp::headers::{self as mcp_headers, encode_header_value};
use switchyard_shared::sse::SseDecoder;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::link::LinkState;
use crate::config::McpServerConfig;
use crate::mcp::handler::HandlerState;

/// Largest JSON answer, and largest single event of an event stream (rmcp's limits).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Messages read ahead of the session loop; readers wait when it is full.
const INCOMING_BUFFER: usize = 64;
/// How long the rest of an event stream is read after its answer, so that the connection can be
/// reused; a server that keeps it open longer costs a new connection, not a wait.
const DRAIN_AFTER_ANSWER: Duration = Duration::from_millis(50);
/// First and longest delay before the session's event stream is opened again.
const EVENTS_RETRY_FIRST: Duration = Duration::from_secs(1);
const EVENTS_RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest wait for the `DELETE` that ends a session.
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";
const ACCEPT_JSON_AND_EVENTS: HeaderValue =
    HeaderValue::from_static("application/json, text/event-stream");
/// Header names rmcp's transport refuses among configured headers: the transport sets them.
const RESERVED_HEADERS: &[&str] = &["accept", "mcp-session-id", "last-event-id"];

/// Why a message could not be sent or its answer read. Messages never contain the URL (it may
/// carry a token) nor header values.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpTransportError {
    /// The HTTP request failed.
    #[error("HTTP request failed: {0}")]
    Http(reqwest::Error),
    /// The server answered with an error status and no JSON-RPC error.
    #[error("the server answered HTTP {0}")]
    Status(StatusCode),
    /// The server answered 404 to a request in a session: it no longer knows the session.
    #[error("the server no longer knows the session")]
    SessionExpired,
    /// The answer to a request was neither JSON nor an event stream.
    #[error("the server answered with content type {0:?}")]
    ContentType(Option<String>),
    /// The answer to a request was not a JSON-RPC message.
    #[error("unreadable answer: {0}")]
    Decode(serde_json::Error),
    /// An answer, or one of its events, was larger than the limit.
    #[error("the answer is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// The event stream of a request ended before its answer.
    #[error("the event stream ended before the answer")]
    StreamEnded,
    /// A message could not be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(serde_json::Error),
    /// The session loop is gone, or the session ended.
    #[error("the session is closed")]
    Closed,
    /// The server answered a request with something other than its answer.
    #[error("the server answered with something other than the answer")]
    NotAnAnswer,
    /// The server did not take a notification in time.
    #[error("the server did not accept the message within {0:?}")]
    Timeout(Duration),
}

impl From<reqwest::Error> for HttpTransportError {
    fn from(error: reqwest::Error) -> Self {
        HttpTransportError::Http(error.without_url())
    }
}

/// The transport for `config`; nothing is sent until the session starts. `link` records what
/// the server received and whether the session ended.
pub(super) fn transport(
    config: &McpServerConfig,
    link: Arc<LinkState>,
) -> Result<HttpTransport, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout())
        // A redirect could carry the configured headers (credentials) to a host nobody named.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
    let mut headers = HeaderMap::with_capacity(config.resolved_headers.len());
    for (name, value) in &config.resolved_headers {
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "the header {name} is set by the MCP transport itself"
            ));
        }
        // Checked at start-up; the message names the header only.
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("invalid value for header {name}"))?;
        // Sensitive values are left out of Debug output (and so of any log that prints one).
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
    // Checked at start-up.
    let url = Url::parse(config.url.as_deref().unwrap_or_default())
        .map_err(|e| format!("invalid URL: {e}"))?;
    let mut post_headers = headers.clone();
    post_headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    post_headers.insert(ACCEPT, ACCEPT_JSON_AND_EVENTS);
    let (incoming_tx, incoming) = mpsc::channel(INCOMING_BUFFER);
    let endpoint = Endpoint {
        server: config.name.clone(),
        client,
        url,
        headers,
        post_headers,
        notification_timeout: config.connect_timeout(),
        link,
        incoming: incoming_tx,
        closed: Notify::new(),
        state: Mutex::new(SessionState::default()),
    };
    Ok(HttpTransport {
        endpoint: Arc::new(endpoint),
        incoming,
    })
}

/// The client's end of a Streamable HTTP session.
pub(crate) struct HttpTransport {
    endpoint: Arc<Endpoint>,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
}

impl HttpTransport {
    /// Sends requests of this session past rmcp's service loop (see [`DirectRequests`]).
    pub fn direct_requests(&self) -> DirectRequests {
        DirectRequests(Arc::clone(&self.endpoint))
    }
}

/// What every exchange of one session shares.
struct Endpoint {
    server: String,
    client: reqwest::Client,
    url: Url,
    /// The configured headers (GET and DELETE carry them).
    headers: HeaderMap,
    /// The configured headers, `Content-Type` and `Accept`: what every POST starts from.
    post_headers: HeaderMap,
    /// How long the server may take to accept a notification or a reply.
    notification_timeout: Duration,
    link: Arc<LinkState>,
    incoming: mpsc::Sender<ServerJsonRpcMessage>,
    /// Woken when the session ends (the server forgot it): the session loop stops reading.
    closed: Notify,
    state: Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    /// Assigned in the answer to `initialize` (older revisions).
    session_id: Option<HeaderValue>,
    /// The version `initialize` negotiated, sent on every later message. Requests of a
    /// 2026-07-28 session carry theirs in `_meta`.
    version: Option<ProtocolVersion>,
    /// The session began with `initialize` (not `server/discover`).
    legacy: bool,
    /// Requests whose answer is awaited, to close their exchange when they are cancelled.
    in_flight: HashMap<RequestId, AbortHandle>,
    /// SEP-2243 `Mcp-Param-*` annotations of the tools listed so far, by tool name.
    tool_params: HashMap<String, Arc<[ParamHeader]>>,
    /// The `GET` event stream's task, once started.
    events: Option<JoinHandle<()>>,
}

/// A tool argument a tool's input schema names a header for (`x-mcp-header`).
struct ParamHeader {
    /// Property names from the arguments object to the value.
    path: Vec<String>,
    header: HeaderName,
}

fn lock(mutex: &Mutex<SessionState>) -> std::sync::MutexGuard<'_, SessionState> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a POST carries and what its answer means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Initialize,
    Discover,
    /// `notifications/initialized`: once accepted, a session's event stream is opened.
    Initialized,
    /// Any other notification, or a reply to a server request: no answer is awaited.
    Other,
}

/// One message, ready to post.
struct Post {
    kind: Kind,
    /// The request's id (requests only).
    id: Option<RequestId>,
    headers: HeaderMap,
    body: Bytes,
    session_attached: bool,
    /// Requests only: aborts the exchange when the request is cancelled.
    abort: Option<AbortRegistration>,
}

impl Endpoint {
    /// Encodes `message` and chooses its headers; `None` when nothing is to be posted. A request
    /// from rmcp's service is registered, so that its cancellation closes its exchange.
    fn prepare(
        &self,
        message: &ClientJsonRpcMessage,
        register: bool,
    ) -> Result<Option<Post>, HttpTransportError> {
        let (kind, id) = match message {
            JsonRpcMessage::Request(request) => {
                let kind = match &request.request {
                    ClientRequest::InitializeRequest(_) => Kind::Initialize,
                    ClientRequest::DiscoverRequest(_) => Kind::Discover,
                    _ => Kind::Request,
                };
                (kind, Some(request.id.clone()))
            }
            JsonRpcMessage::Notification(notification) => match &notification.notification {
                ClientNotification::CancelledNotification(cancelled) => {
                    let mut state = lock(&self.state);
                    if let Some(id) = &cancelled.params.request_id
                        && let Some(exchange) = state.in_flight.remove(id)
                    {
                        exchange.abort();
                    }
                    // Without a session, closing the exchange is the whole cancellation.
                    if !state.legacy {
                        return Ok(None);
                    }
                    (Kind::Other, None)
                }
                ClientNotification::InitializedNotification(_) => (Kind::Initialized, None),
                _ => (Kind::Other, None),
            },
            _ => (Kind::Other, None),
        };
        let body = encode(message).map_err(HttpTransportError::Encode)?;
        let mut headers = self.post_headers.clone();
        let mut state = lock(&self.state);
        if kind == Kind::Initialize {
            // A fallback after `server/discover` starts from a clean slate.
            state.legacy = true;
            state.session_id = None;
            state.version = None;
        }
        let version = match message {
            JsonRpcMessage::Request(request) => request
                .request
                .get_meta()
                .protocol_version()
                .or_else(|| state.version.clone()),
            _ => state.version.clone(),
        };
        if let Some(version) = &version
            && let Ok(value) = HeaderValue::from_str(version.as_str())
        {
            headers.insert(mcp_headers::PROTOCOL_VERSION, value);
        }
        let session_attached = match &state.session_id {
            Some(session) if kind != Kind::Initialize => {
                headers.insert(mcp_headers::SESSION_ID, session.clone());
                true
            }
            _ => false,
        };
        if version.is_some_and(|v| v >= ProtocolVersion::STANDARD_HEADERS) {
            standard_headers(message, &state.tool_params, &mut headers);
        }
        let abort = match (&id, kind) {
            // Registered here, before the exchange starts, so that a cancellation sent right
            // after the request still finds it.
            (Some(id), Kind::Request) if register => {
                let (handle, registration) = AbortHandle::new_pair();
                state.in_flight.insert(id.clone(), handle);
                Some(registration)
            }
            _ => None,
        };
        Ok(Some(Post {
            kind,
            id,
            headers,
            body: Bytes::from(body),
            session_attached,
            abort,
        }))
    }

    /// Posts a prepared message and reads its answer.
    async fn post(self: Arc<Self>, mut post: Post) -> Result<(), HttpTransportError> {
        let (Some(id), Some(registration)) = (post.id.clone(), post.abort.take()) else {
            let bounded = post.kind == Kind::Other;
            let exchange = Arc::clone(&self).exchange(post);
            if bounded {
                // A notification or reply must not hold a task forever on a stuck server.
                let limit = self.notification_timeout;
                return tokio::time::timeout(limit, exchange)
                    .await
                    .map_err(|_| HttpTransportError::Timeout(limit))?;
            }
            return exchange.await;
        };
        let _in_flight = InFlight {
            endpoint: &self,
            id: &id,
        };
        let exchange = Abortable::new(Arc::clone(&self).exchange(post), registration);
        match exchange.await {
            Ok(result) => result,
            // Cancelled: the caller has stopped waiting and the session has forgotten the id.
            Err(_aborted) => {
                self.link.forget(&id);
                Ok(())
            }
        }
    }

    async fn exchange(self: Arc<Self>, post: Post) -> Result<(), HttpTransportError> {
        let Post {
            kind,
            id,
            headers,
            body,
            session_attached,
            ..
        } = post;
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let content_type = media_type(response.headers());
        if !status.is_success() {
            return self
                .refused(kind, id, status, content_type, session_attached, response)
                .await;
        }
        // A 2xx: the server has the request, whatever happens to its answer.
        if let Some(id) = &id {
            self.link.mark_delivered(id);
        }
        if kind == Kind::Initialize {
            let session_id = response
                .headers()
                .get(mcp_headers::SESSION_ID)
                .cloned()
                .map(|mut value| {
                    value.set_sensitive(true);
                    value
                });
            lock(&self.state).session_id = session_id;
        }
        let awaits_answer = matches!(kind, Kind::Request | Kind::Initialize | Kind::Discover);
        let answered = match content_type {
            _ if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) => Ok(()),
            _ if !awaits_answer && response.content_length() == Some(0) => Ok(()),
            Some(MediaType::EventStream) => self.read_events(id.as_ref(), response).await,
            Some(MediaType::Json) => {
                let body = read_body(response).await?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(message) => self.answer(kind, id, message).await,
                    // A notification's answer is not needed.
                    Err(_) if !awaits_answer => Ok(()),
                    Err(error) => Err(HttpTransportError::Decode(error)),
                }
            }
            _ if !awaits_answer => Ok(()),
            _ => Err(HttpTransportError::ContentType(
                response
                    .headers()
                    .get(CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )),
        };
        if answered.is_ok() && kind == Kind::Initialized {
            self.listen();
        }
        answered
    }

    /// A non-2xx answer: a JSON-RPC error is delivered as the request's answer, a session the
    /// server forgot closes the transport, anything else fails the send.
    async fn refused(
        &self,
        kind: Kind,
        id: Option<RequestId>,
        status: StatusCode,
        content_type: Option<MediaType>,
        session_attached: bool,
        response: reqwest::Response,
    ) -> Result<(), HttpTransportError> {
        if status == StatusCode::NOT_FOUND && session_attached {
            tracing::debug!(server = %self.server, "the MCP server no longer knows the session");
            self.expire();
            return Err(HttpTransportError::SessionExpired);
        }
        let auth = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        if auth || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(HttpTransportError::Status(status));
        }
        // A server that predates `server/discover` refuses it in many ways; as a JSON-RPC error
        // with the request's id, the lifecycle recognizes it and falls back to `initialize`.
        let refused_discovery =
            kind == Kind::Discover && !session_attached && status.is_client_error();
        let Some(id) = id else {
            return Err(HttpTransportError::Status(status));
        };
        if content_type != Some(MediaType::Json) && !refused_discovery {
            return Err(HttpTransportError::Status(status));
        }
        let body = read_body(response).await.unwrap_or_default();
        let message = match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
            // Middleware that refuses discovery cannot echo the request's id.
            Ok(JsonRpcMessage::Error(mut error)) if refused_discovery => {
                error.id = Some(id.clone());
                JsonRpcMessage::Error(error)
            }
            Ok(message @ JsonRpcMessage::Error(_)) => message,
            _ if refused_discovery => ServerJsonRpcMessage::error(
                ErrorData::invalid_request(
                    format!(
                        "server/discover rejected with HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(1024)])
                    ),
                    None,
                ),
                Some(id.clone()),
            ),
            _ => return Err(HttpTransportError::Status(status)),
        };
        self.answer(kind, Some(id), message).await
    }

    /// Hands the JSON answer to a POST to the session loop.
    async fn answer(
        &self,
        kind: Kind,
        id: Option<RequestId>,
        message: ServerJsonRpcMessage,
    ) -> Result<(), HttpTransportError> {
        let message = correlate(id.as_ref(), message);
        if kind == Kind::Initialize
            && let JsonRpcMessage::Response(response) = &message
            && let ServerResult::InitializeResult(result) = &response.result
        {
            lock(&self.state).version = Some(result.protocol_version.clone());
        }
        self.deliver(message, id.as_ref()).await
    }

    /// Reads a POST's event stream: every message goes to the session loop, up to the answer
    /// to request `id` (or to the end, for a stream without a request).
    async fn read_events(
        &self,
        id: Option<&RequestId>,
        mut response: reqwest::Response,
    ) -> Result<(), HttpTransportError> {
        let mut events = EventReader::default();
        loop {
            let Some(chunk) = response.chunk().await? else {
                return match id {
                    Some(_) => Err(HttpTransportError::StreamEnded),
                    None => Ok(()),
                };
            };
            let mut answered = false;
            for message in events.push_messages(&chunk)? {
                answered |= id.is_some_and(|id| answers(&message, id));
                self.deliver(message, id).await?;
            }
            if answered {
                drain(response).await;
                return Ok(());
            }
        }
    }

    /// Passes a server message to the session loop, noting where a server request came from
    /// (rmcp checks that sampling or elicitation belongs to a request of the client's).
    async fn deliver(
        &self,
        mut message: ServerJsonRpcMessage,
        stream_of: Option<&RequestId>,
    ) -> Result<(), HttpTransportError> {
        match &mut message {
            JsonRpcMessage::Request(request) => {
                let origin = match stream_of {
                    Some(id) => InboundStreamOrigin::OutboundRequest(id.clone()),
                    None => InboundStreamOrigin::Unassociated,
                };
                request.request.extensions_mut().insert(origin);
            }
            JsonRpcMessage::Response(response) => {
                if let ServerResult::ListToolsResult(list) = &response.result {
                    self.remember_param_headers(list);
                }
            }
            _ => {}
        }
        self.incoming
            .send(message)
            .await
            .map_err(|_| HttpTransportError::Closed)
    }

    /// Keeps the `x-mcp-header` annotations of listed tools, for `Mcp-Param-*` headers.
    fn remember_param_headers(&self, list: &rmcp::model::ListToolsResult) {
        let mut state = lock(&self.state);
        for tool in &list.tools {
            let params = param_headers(&tool.input_schema);
            if params.is_empty() {
                state.tool_params.remove(tool.name.as_ref());
            } else {
                state
                    .tool_params
                    .insert(tool.name.to_string(), params.into());
            }
        }
    }

    /// The server no longer knows the session: nothing more can be sent in it.
    fn expire(&self) {
        self.link.mark_closed();
        self.closed.notify_one();
    }

    /// Opens the session's `GET` event stream (once), if the server assigned a session.
    fn listen(self: &Arc<Self>) {
        let mut state = lock(&self.state);
        let Some(session_id) = state.session_id.clone() else {
            return;
        };
        if state.events.is_some() {
            return;
        }
        let version = state.version.clone();
        let endpoint = Arc::downgrade(self);
        state.events = Some(tokio::spawn(read_session_events(
            endpoint, session_id, version,
        )));
    }
}

/// Sends the pool's requests on the caller's own task, past rmcp's service loop.
///
/// Through rmcp's `Peer`, a request is queued to the service loop, which spawns a task to send
/// it; its answer is queued back to the loop, which hands it to the caller. A request sent here
/// makes the exchange where it is awaited and returns the answer directly. Its own progress goes
/// to its subscriber; anything else on its event stream (server requests, other notifications)
/// goes to the service loop, and so to the handler, like every other message. The caller picks
/// ids and progress tokens from a range rmcp's counters never reach.
#[derive(Clone)]
pub(crate) struct DirectRequests(Arc<Endpoint>);

/// Why a direct request produced no result.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// The server answered with a JSON-RPC error.
    Rpc(ErrorData),
    /// The exchange failed; `delivered`: the server had received the request (a 2xx answer).
    Broken {
        delivered: bool,
        error: HttpTransportError,
    },
}

impl RequestError {
    fn before_delivery(error: HttpTransportError) -> Self {
        RequestError::Broken {
            delivered: false,
            error,
        }
    }

    fn after_delivery(error: HttpTransportError) -> Self {
        RequestError::Broken {
            delivered: true,
            error,
        }
    }
}

/// Where a direct request's own progress goes: to its subscriber at once, so that it is there
/// before the answer (through rmcp's service, whose handler runs each notification on a task of
/// its own, the last report could arrive after the answer, when nobody reads it any more).
pub(crate) struct OwnProgress {
    /// The request's progress token.
    pub token: ProgressToken,
    /// The session's handler state, whose router has the subscriber.
    pub handler: Arc<HandlerState>,
}

impl DirectRequests {
    /// Sends `request` as request `id` and waits for its answer. Dropping the future closes the
    /// exchange, which is how a 2026-07-28 request is cancelled; a session's request also needs
    /// `notifications/cancelled`, sent through rmcp's service as before.
    pub async fn request(
        &self,
        id: RequestId,
        request: ClientRequest,
        progress: OwnProgress,
    ) -> Result<ServerResult, RequestError> {
        let expected = Expected::of(&request);
        let message = ClientJsonRpcMessage::request(request, id.clone());
        let post = self
            .0
            .prepare(&message, false)
            .map_err(RequestError::before_delivery)?
            .ok_or_else(|| RequestError::before_delivery(HttpTransportError::Closed))?;
        drop(message);
        if self.0.link.is_closed() {
            return Err(RequestError::before_delivery(HttpTransportError::Closed));
        }
        self.0.request(id, expected, &progress, post).await
    }
}

impl Endpoint {
    /// [`DirectRequests::request`]: the exchange, with the answer returned instead of queued.
    async fn request(
        &self,
        id: RequestId,
        expected: Expected,
        progress: &OwnProgress,
        post: Post,
    ) -> Result<ServerResult, RequestError> {
        let Post {
            headers,
            body,
            session_attached,
            ..
        } = post;
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| RequestError::before_delivery(e.into()))?;
        let status = response.status();
        let content_type = media_type(response.headers());
        if !status.is_success() {
            return Err(self
                .refused_directly(&id, status, content_type, session_attached, response)
                .await);
        }
        let answer = match content_type {
            Some(MediaType::Json)
                if !matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) =>
            {
                let body = read_body(response)
                    .await
                    .map_err(RequestError::after_delivery)?;
                read_message(&body, &id, expected)
                    .map_err(|e| RequestError::after_delivery(HttpTransportError::Decode(e)))?
            }
            Some(MediaType::EventStream) => {
                self.answer_from_events(&id, expected, progress, response)
                    .await?
            }
            // Answering a request with 202 (and the answer later, elsewhere) is for
            // notifications and replies only.
            _ => {
                return Err(RequestError::after_delivery(
                    HttpTransportError::ContentType(
                        response
                            .headers()
                            .get(CONTENT_TYPE)
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    ),
                ));
            }
        };
        let result = match answer {
            Read::Answer(result) => result,
            Read::Message(message) => match correlate(Some(&id), message) {
                JsonRpcMessage::Response(response) if answers_id(&response.id, &id) => {
                    response.result
                }
                JsonRpcMessage::Error(error)
                    if error.id.as_ref().is_some_and(|a| answers_id(a, &id)) =>
                {
                    return Err(RequestError::Rpc(error.error));
                }
                _ => {
                    return Err(RequestError::after_delivery(
                        HttpTransportError::NotAnAnswer,
                    ));
                }
            },
        };
        if let ServerResult::ListToolsResult(list) = &result {
            self.remember_param_headers(list);
        }
        Ok(result)
    }

    /// Reads a direct request's event stream: its answer is returned, everything before it goes
    /// to the session loop.
    async fn answer_from_events(
        &self,
        id: &RequestId,
        expected: Expected,
        progress: &OwnProgress,
        mut response: reqwest::Response,
    ) -> Result<Read, RequestError> {
        let mut events = EventReader::default();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| RequestError::after_delivery(e.into()))?
                .ok_or_else(|| RequestError::after_delivery(HttpTransportError::StreamEnded))?;
            let mut answer = None;
            for data in events.push(&chunk).map_err(RequestError::after_delivery)? {
                let read = read_message(data.as_bytes(), id, expected)
                    .map_err(|e| RequestError::after_delivery(HttpTransportError::Decode(e)))?;
                let own = matches!(&read, Read::Message(JsonRpcMessage::Notification(n))
                    if is_progress_on(&n.notification, &progress.token));
                if own {
                    if let Read::Message(JsonRpcMessage::Notification(n)) = read
                        && let ServerNotification::ProgressNotification(report) = n.notification
                    {
                        progress.handler.progress.deliver(report.params);
                    }
                    continue;
                }
                match read {
                    Read::Message(message) if answer.is_some() || !answers(&message, id) => {
                        self.deliver(message, Some(id))
                            .await
                            .map_err(RequestError::after_delivery)?;
                    }
                    read => answer = Some(read),
                }
            }
            if let Some(answer) = answer {
                // The caller must not wait for the end of the stream: a server that writes it
                // separately, without TCP_NODELAY, holds it back until this side acknowledges
                // the answer, which can take the 40 ms of a delayed ACK.
                tokio::spawn(drain(response));
                return Ok(answer);
            }
        }
    }

    /// A non-2xx answer to a direct request: its JSON-RPC error, or why it failed.
    async fn refused_directly(
        &self,
        id: &RequestId,
        status: StatusCode,
        content_type: Option<MediaType>,
        session_attached: bool,
        response: reqwest::Response,
    ) -> RequestError {
        if status == StatusCode::NOT_FOUND && session_attached {
            tracing::debug!(server = %self.server, "the MCP server no longer knows the session");
            self.expire();
            return RequestError::before_delivery(HttpTransportError::SessionExpired);
        }
        let auth = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        if content_type == Some(MediaType::Json)
            && !auth
            && status != StatusCode::TOO_MANY_REQUESTS
            && let Ok(body) = read_body(response).await
            && let Ok(message) = serde_json::from_slice::<ServerJsonRpcMessage>(&body)
            && let JsonRpcMessage::Error(error) = correlate(Some(id), message)
        {
            return RequestError::Rpc(error.error);
        }
        RequestError::before_delivery(HttpTransportError::Status(status))
    }
}

/// Removes a request from the cancellable ones when its exchange ends, however it ends.
struct InFlight<'a> {
    endpoint: &'a Endpoint,
    id: &'a RequestId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.endpoint.state).in_flight.remove(self.id);
    }
}

/// The session's `GET` event stream: the server's own notifications and requests. Opened again
/// with backoff when it ends; not at all when the server does not offer one.
async fn read_session_events(
    endpoint: std::sync::Weak<Endpoint>,
    session_id: HeaderValue,
    version: Option<ProtocolVersion>,
) {
    let mut delay = EVENTS_RETRY_FIRST;
    let mut opened = false;
    loop {
        let Some(current) = endpoint.upgrade() else {
            return;
        };
        let mut request = current
            .client
            .get(current.url.clone())
            .headers(current.headers.clone())
            .header(ACCEPT, EVENT_STREAM)
            .header(mcp_headers::SESSION_ID, session_id.clone());
        if let Some(version) = &version {
            request = request.header(mcp_headers::PROTOCOL_VERSION, version.as_str());
        }
        match request.send().await {
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                current.expire();
                return;
            }
            Ok(response)
                if response.status().is_success()
                    && media_type(response.headers()) == Some(MediaType::EventStream) =>
            {
                opened = true;
                delay = EVENTS_RETRY_FIRST;
                if let Err(error) = current.read_events(None, response).await {
                    tracing::debug!(server = %current.server, %error, "the MCP session's event stream failed");
                }
            }
            // 405: the server offers no such stream. A stream that never opened is not retried.
            Ok(response) if !opened => {
                tracing::debug!(server = %current.server, status = %response.status(), "no event stream for the MCP session");
                return;
            }
            Err(error) if !opened => {
                tracing::debug!(server = %current.server, error = %HttpTransportError::from(error), "cannot open the MCP session's event stream");
                return;
            }
            Ok(_) | Err(_) => {}
        }
        drop(current);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(EVENTS_RETRY_MAX);
    }
}

impl Transport<RoleClient> for HttpTransport {
    type Error = HttpTransportError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let prepared = self.endpoint.prepare(&item, true);
        let endpoint = Arc::clone(&self.endpoint);
        async move {
            match prepared? {
                Some(post) => endpoint.post(post).await,
                None => Ok(()),
            }
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        if self.endpoint.link.is_closed() {
            return None;
        }
        let message = tokio::select! {
            biased;
            message = self.incoming.recv() => message,
            () = self.endpoint.closed.notified() => None,
        };
        if message.is_none() {
            self.endpoint.link.mark_closed();
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.endpoint.link.mark_closed();
        let (events, session_id, version) = {
            let mut state = lock(&self.endpoint.state);
            (
                state.events.take(),
                state.session_id.take(),
                state.version.clone(),
            )
        };
        if let Some(events) = events {
            events.abort();
        }
        if let Some(session_id) = session_id {
            let mut request = self
                .endpoint
                .client
                .delete(self.endpoint.url.clone())
                .headers(self.endpoint.headers.clone())
                .header(mcp_headers::SESSION_ID, session_id);
            if let Some(version) = &version {
                request = request.header(mcp_headers::PROTOCOL_VERSION, version.as_str());
            }
            // Servers that do not offer DELETE answer 405; the session ends either way.
            let _ = tokio::time::timeout(DELETE_TIMEOUT, request.send()).await;
        }
        Ok(())
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.endpoint.link.mark_closed();
        if let Some(events) = lock(&self.endpoint.state).events.take() {
            events.abort();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaType {
    Json,
    EventStream,
}

fn media_type(headers: &HeaderMap) -> Option<MediaType> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(JSON) {
        Some(MediaType::Json)
    } else if essence.eq_ignore_ascii_case(EVENT_STREAM) {
        Some(MediaType::EventStream)
    } else {
        None
    }
}

/// A whole body, refused past [`MAX_MESSAGE_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, HttpTransportError> {
    if response
        .content_length()
        .is_some_and(|length| length > MAX_MESSAGE_BYTES as u64)
    {
        return Err(HttpTransportError::TooLarge);
    }
    // Usually one chunk: taken as it is.
    let Some(first) = response.chunk().await? else {
        return Ok(Vec::new());
    };
    let mut body = Vec::from(first);
    while let Some(chunk) = response.chunk().await? {
        if chunk.len() > MAX_MESSAGE_BYTES - body.len() {
            return Err(HttpTransportError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads what is left of an answered event stream, so that the connection goes back to the
/// pool. Often the end has already arrived with the answer and no timer is needed.
async fn drain(mut response: reqwest::Response) {
    if let Some(Ok(None) | Err(_)) = response.chunk().now_or_never() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_AFTER_ANSWER, async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await;
}

/// Decodes an event stream's JSON-RPC messages, bounding the size of one event.
#[derive(Default)]
struct EventReader {
    decoder: SseDecoder,
    /// Bytes fed since the last complete event.
    partial: usize,
}

impl EventReader {
    /// The data of the `message` events `chunk` completes.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, HttpTransportError> {
        let mut data = Vec::new();
        self.decoder.push_with(chunk, |event| {
            // Events without a type are `message` events; others (and keep-alives) carry none.
            if matches!(event.event.as_deref(), None | Some("message"))
                && !event.data.trim().is_empty()
            {
                data.push(event.data);
            }
        });
        self.partial = if self.decoder.has_partial_event() {
            self.partial + chunk.len()
        } else {
            0
        };
        if self.partial > MAX_MESSAGE_BYTES {
            return Err(HttpTransportError::TooLarge);
        }
        Ok(data)
    }

    /// The messages `chunk` completes.
    fn push_messages(
        &mut self,
        chunk: &[u8],
    ) -> Result<Vec<ServerJsonRpcMessage>, HttpTransportError> {
        self.push(chunk)?
            .iter()
            .map(|data| serde_json::from_str(data).map_err(HttpTransportError::Decode))
            .collect()
    }
}

/// The kind of result a request asks for, when it is one the pool sends often.
#[derive(Clone, Copy)]
enum Expected {
    CallTool,
    ListTools,
    ListResources,
    ReadResource,
    ListPrompts,
    GetPrompt,
    Other,
}

impl Expected {
    fn of(request: &ClientRequest) -> Self {
        match request {
            ClientRequest::CallToolRequest(_) => Expected::CallTool,
            ClientRequest::ListToolsRequest(_) => Expected::ListTools,
            ClientRequest::ListResourcesRequest(_) => Expected::ListResources,
            ClientRequest::ReadResourceRequest(_) => Expected::ReadResource,
            ClientRequest::ListPromptsRequest(_) => Expected::ListPrompts,
            ClientRequest::GetPromptRequest(_) => Expected::GetPrompt,
            _ => Expected::Other,
        }
    }
}

/// A successful answer, read as exactly one kind of result.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedResponse<T> {
    #[serde(rename = "jsonrpc")]
    _jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    result: T,
}

/// What one message of a direct request's answer turned out to be.
enum Read {
    /// The answer's result.
    Answer(ServerResult),
    /// Anything else: an error, a notification, a server request, another answer.
    Message(ServerJsonRpcMessage),
}

/// Reads a message of a direct request's answer. The answer to request `id` is read straight
/// as the result `expected` names; everything else (and an answer of another shape) as rmcp
/// reads every message. rmcp reads a result by trying each of some twenty kinds in turn (an
/// untagged enum over buffered JSON), which cost more than any other step of a tool call: a
/// third of the proxy's CPU for an `echo`. The one difference: a result that would also read
/// as a kind rmcp tries before the expected one is read as the kind the request asked for.
fn read_message(
    json: &[u8],
    id: &RequestId,
    expected: Expected,
) -> Result<Read, serde_json::Error> {
    fn typed<T: serde::de::DeserializeOwned>(
        json: &[u8],
        id: &RequestId,
        wrap: fn(T) -> ServerResult,
    ) -> Option<ServerResult> {
        serde_json::from_slice::<TypedResponse<T>>(json)
            .ok()
            .filter(|response| answers_id(&response.id, id))
            .map(|response| wrap(response.result))
    }
    let answer = match expected {
        Expected::CallTool => typed(json, id, ServerResult::CallToolResult),
        Expected::ListTools => typed(json, id, ServerResult::ListToolsResult),
        Expected::ListResources => typed(json, id, ServerResult::ListResourcesResult),
        Expected::ReadResource => typed(json, id, ServerResult::ReadResourceResult),
        Expected::ListPrompts => typed(json, id, ServerResult::ListPromptsResult),
        Expected::GetPrompt => typed(json, id, ServerResult::GetPromptResult),
        Expected::Other => None,
    };
    match answer {
        Some(result) => Ok(Read::Answer(result)),
        None => serde_json::from_slice(json).map(Read::Message),
    }
}

/// The JSON of `message`. A tool call, the request the proxy sends most, is written here: rmcp
/// writes a request's parameters through a `serde_json::Value` copy (to merge two `_meta`
/// maps), which cost as much as the rest of the request's encoding. Same JSON, same key order.
fn encode(message: &ClientJsonRpcMessage) -> Result<Vec<u8>, serde_json::Error> {
    if let JsonRpcMessage::Request(request) = message
        && let ClientRequest::CallToolRequest(call) = &request.request
        && call.params.meta.is_none()
        && let Some(meta) = call.extensions.get::<RequestMetaObject>()
    {
        let params = serde_json::to_vec(&call.params)?;
        if let Some(fields) = params.strip_prefix(b"{") {
            let mut out = Vec::with_capacity(params.len() + 256);
            out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
            serde_json::to_writer(&mut out, &request.id)?;
            out.extend_from_slice(br#","method":"tools/call","params":{"_meta":"#);
            serde_json::to_writer(&mut out, meta)?;
            if fields != b"}" {
                out.push(b',');
            }
            out.extend_from_slice(fields);
            out.push(b'}');
            return Ok(out);
        }
    }
    serde_json::to_vec(message)
}

/// Whether `notification` reports progress on `token`.
fn is_progress_on(notification: &ServerNotification, token: &ProgressToken) -> bool {
    matches!(notification, ServerNotification::ProgressNotification(report)
        if report.params.progress_token == *token)
}

/// Whether `message` is the answer to request `id`; a server may write a numeric id as a string.
fn answers(message: &ServerJsonRpcMessage, id: &RequestId) -> bool {
    let answered = match message {
        JsonRpcMessage::Response(response) => &response.id,
        JsonRpcMessage::Error(error) => match &error.id {
            Some(answered) => answered,
            None => return false,
        },
        _ => return false,
    };
    answers_id(answered, id)
}

fn answers_id(answered: &RequestId, id: &RequestId) -> bool {
    answered == id || answered.to_string() == id.to_string()
}

/// An error without an `id` answering request `id` is given that id.
///
/// Servers built on the MCP TypeScript SDK (server-everything among them) answer a POST with an
/// unknown `Mcp-Session-Id` with HTTP 400 and an error whose `id` is missing, because they read
/// it before parsing the body. rmcp cannot match such an error to a request and drops it, and the
/// request would wait for its timeout; but the error is the answer to the POST that carried it,
/// and with its id restored the pool sees "session lost" at once and opens a new session.
fn correlate(id: Option<&RequestId>, message: ServerJsonRpcMessage) -> ServerJsonRpcMessage {
    match (message, id) {
        (JsonRpcMessage::Error(mut error), Some(id)) if error.id.is_none() => {
            error.id = Some(id.clone());
            JsonRpcMessage::Error(error)
        }
        (message, _) => message,
    }
}

/// SEP-2243 headers (2026-07-28 on): `Mcp-Method` on every message with a method, `Mcp-Name` on
/// those naming a tool, prompt, resource or task, `Mcp-Param-*` for annotated tool arguments.
/// Taken from the typed request where it is one of the common ones; other messages go through
/// their JSON form, as rmcp does.
fn standard_headers(
    message: &ClientJsonRpcMessage,
    tool_params: &HashMap<String, Arc<[ParamHeader]>>,
    headers: &mut HeaderMap,
) {
    let JsonRpcMessage::Request(request) = message else {
        if let Ok(value) = serde_json::to_value(message) {
            standard_headers_from_json(&value, headers);
        }
        return;
    };
    let request = &request.request;
    let name = match request {
        ClientRequest::CallToolRequest(call) => Some(call.params.name.as_ref()),
        ClientRequest::GetPromptRequest(get) => Some(get.params.name.as_str()),
        ClientRequest::ReadResourceRequest(read) => Some(read.params.uri.as_str()),
        ClientRequest::SubscribeRequest(subscribe) => Some(subscribe.params.uri.as_str()),
        ClientRequest::UnsubscribeRequest(unsubscribe) => Some(unsubscribe.params.uri.as_str()),
        ClientRequest::PingRequest(_)
        | ClientRequest::DiscoverRequest(_)
        | ClientRequest::InitializeRequest(_)
        | ClientRequest::ListToolsRequest(_)
        | ClientRequest::ListPromptsRequest(_)
        | ClientRequest::ListResourcesRequest(_)
        | ClientRequest::ListResourceTemplatesRequest(_) => None,
        _ => {
            if let Ok(value) = serde_json::to_value(message) {
                standard_headers_from_json(&value, headers);
            }
            return;
        }
    };
    insert_encoded(headers, mcp_headers::METHOD, request.method());
    if let Some(name) = name {
        insert_encoded(headers, mcp_headers::NAME, name);
    }
    if let ClientRequest::CallToolRequest(call) = request
        && let Some(params) = tool_params.get(call.params.name.as_ref())
        && let Some(arguments) = &call.params.arguments
    {
        insert_param_headers(params, arguments, headers);
    }
}

/// [`standard_headers`] from a message's JSON form (rmcp's rules, for the rarer requests).
fn standard_headers_from_json(message: &Value, headers: &mut HeaderMap) {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return;
    };
    insert_encoded(headers, mcp_headers::METHOD, method);
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return,
    };
    if let Some(name) = message
        .get("params")
        .and_then(|params| params.get(key))
        .and_then(Value::as_str)
    {
        insert_encoded(headers, mcp_headers::NAME, name);
    }
}

fn insert_encoded(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(&encode_header_value(value)) {
        headers.insert(name, value);
    }
}

fn insert_param_headers(params: &[ParamHeader], arguments: &JsonObject, headers: &mut HeaderMap) {
    for param in params {
        let Some((first, rest)) = param.path.split_first() else {
            continue;
        };
        let value = rest
            .iter()
            .try_fold(arguments.get(first), |value, key| {
                Some(value?.get(key.as_str()))
            })
            .flatten();
        let text = match value {
            Some(Value::String(s)) => encode_header_value(s),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(param.header.clone(), value);
        }
    }
}

/// The `x-mcp-header` annotations of a tool's input schema: properties reached from the root
/// through `properties` alone, each naming a header (`Mcp-Param-<name>`).
fn param_headers(schema: &JsonObject) -> Vec<ParamHeader> {
    fn walk(properties: Option<&Value>, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) {
        let Some(Value::Object(properties)) = properties else {
            return;
        };
        for (name, property) in properties {
            path.push(name.clone());
            if let Some(Value::String(header)) = property.get("x-mcp-header")
                && !header.is_empty()
                && let Ok(header) = HeaderName::try_from(format!("mcp-param-{header}"))
            {
                out.push(ParamHeader {
                    path: path.clone(),
                    header,
                });
            }
            walk(property.get("properties"), path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema.get("properties"), &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, ErrorCode, JsonRpcError, NumberOrString,
        ProgressToken,
    };
    use serde_json::json;

    use super::*;

    fn id_less_error() -> ServerJsonRpcMessage {
        ServerJsonRpcMessage::Error(JsonRpcError {
            jsonrpc: JsonRpcVersion2_0,
            id: None,
            error: ErrorData::new(
                ErrorCode(-32000),
                "Bad Request: No valid session ID provided",
                None,
            ),
        })
    }

    #[test]
    fn an_id_less_error_answering_a_request_gets_its_id() {
        let id = RequestId::Number(7);
        let JsonRpcMessage::Error(error) = correlate(Some(&id), id_less_error()) else {
            panic!("still an error expected");
        };
        assert_eq!(error.id, Some(id));
        // A notification's answer has no request to belong to.
        let JsonRpcMessage::Error(error) = correlate(None, id_less_error()) else {
            panic!("still an error expected");
        };
        assert_eq!(error.id, None);
    }

    fn message(value: Value) -> ClientJsonRpcMessage {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn standard_headers_name_the_method_and_what_it_acts_on() {
        let call = message(json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "weather", "arguments": {"city": "Zürich", "days": 3, "unit": null}}
        }));
        let schema = json!({"type": "object", "properties": {
            "city": {"type": "string", "x-mcp-header": "City"},
            "days": {"type": "integer", "x-mcp-header": "Days"},
            "unit": {"type": "string", "x-mcp-header": "Unit"},
        }});
        let mut params = HashMap::new();
        params.insert(
            "weather".to_owned(),
            param_headers(schema.as_object().unwrap()).into(),
        );
        let mut headers = HeaderMap::new();
        standard_headers(&call, &params, &mut headers);
        assert_eq!(headers["mcp-method"], "tools/call");
        assert_eq!(headers["mcp-name"], "weather");
        // Non-ASCII values travel as base64, as rmcp writes them; a null argument has none.
        assert_eq!(headers["mcp-param-city"], "=?base64?WsO8cmljaA==?=");
        assert_eq!(headers["mcp-param-days"], "3");
        assert!(headers.get("mcp-param-unit").is_none());

        // The typed and the JSON reading agree.
        for value in [
            json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "a://b c"}}),
            json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/get", "params": {"name": "p"}}),
            json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}),
        ] {
            let mut typed = HeaderMap::new();
            standard_headers(&message(value.clone()), &HashMap::new(), &mut typed);
            let mut generic = HeaderMap::new();
            standard_headers_from_json(&value, &mut generic);
            assert_eq!(typed, generic, "{value}");
            assert!(typed.contains_key("mcp-method"));
        }
    }

    #[test]
    fn event_streams_yield_messages_and_bound_their_events() {
        let mut reader = EventReader::default();
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let stream =
            format!(": keep-alive\n\nevent: message\ndata: {answer}\n\nevent: other\ndata: x\n\n");
        let (head, tail) = stream.split_at(25);
        assert!(reader.push(head.as_bytes()).unwrap().is_empty());
        let messages = reader.push_messages(tail.as_bytes()).unwrap();
        assert_eq!(messages.len(), 1);
        assert!(answers(&messages[0], &RequestId::Number(1)));
        assert!(!answers(&messages[0], &RequestId::Number(2)));

        let mut reader = EventReader::default();
        let big = vec![b'x'; 1024 * 1024];
        reader.push(b"data: ").unwrap();
        let mut outcome = Ok(Vec::new());
        for _ in 0..17 {
            outcome = reader.push(&big);
            if outcome.is_err() {
                break;
            }
        }
        assert!(matches!(outcome, Err(HttpTransportError::TooLarge)));
    }

    #[test]
    fn tool_calls_are_encoded_as_rmcp_encodes_them() {
        let mut call = CallToolRequestParams::new("echo");
        let with_arguments = json!({"message": "hi", "n": [1, 2]});
        for arguments in [None, with_arguments.as_object().cloned()] {
            call.arguments = arguments;
            let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(call.clone()));
            let meta = request.get_meta_mut();
            meta.set_progress_token(ProgressToken(NumberOrString::Number(1 << 32)));
            meta.set_protocol_version(ProtocolVersion::V_2026_07_28);
            let message = ClientJsonRpcMessage::request(request, RequestId::Number(1 << 32));
            let ours: Value = serde_json::from_slice(&encode(&message).unwrap()).unwrap();
            assert_eq!(ours, serde_json::to_value(&message).unwrap());
        }
        // Without metadata (or with it inside the parameters) rmcp's encoder writes it.
        let message = ClientJsonRpcMessage::request(
            ClientRequest::CallToolRequest(CallToolRequest::new(call)),
            RequestId::Number(2),
        );
        assert_eq!(
            encode(&message).unwrap(),
            serde_json::to_vec(&message).unwrap()
        );
    }

    #[test]
    fn answers_are_read_as_the_result_asked_for() {
        let id = RequestId::Number(9);
        let answer =
            br#"{"jsonrpc":"2.0","id":9,"result":{"content":[{"type":"text","text":"x"}]}}"#;
        let Ok(Read::Answer(ServerResult::CallToolResult(result))) =
            read_message(answer, &id, Expected::CallTool)
        else {
            panic!("a tool result expected");
        };
        assert_eq!(result.content.len(), 1);
        // What is not the expected answer is read as rmcp reads it.
        for (json, expected) in [
            (&answer[..], Expected::ListTools),
            (br#"{"jsonrpc":"2.0","id":8,"result":{"content":[]}}"#, Expected::CallTool),
            (br#"{"jsonrpc":"2.0","id":9,"error":{"code":-1,"message":"no"}}"#, Expected::CallTool),
            (br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":9,"progress":1}}"#, Expected::CallTool),
            (br#"{"jsonrpc":"2.0","id":9,"result":{"resultType":"input_required","inputRequests":{}}}"#, Expected::CallTool),
        ] {
            let Ok(Read::Message(message)) = read_message(json, &id, expected) else {
                panic!("{} read as an answer", String::from_utf8_lossy(json));
            };
            let generic: ServerJsonRpcMessage = serde_json::from_slice(json).unwrap();
            assert_eq!(
                serde_json::to_value(message).unwrap(),
                serde_json::to_value(generic).unwrap()
            );
        }
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(media_type(&headers) == Some(MediaType::Json));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        assert!(media_type(&headers) == Some(MediaType::EventStream));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(media_type(&headers).is_none());
    }

    /// A Streamable HTTP server that predates `server/discover` and keeps sessions, scripted
    /// just enough to watch the transport: what each request carried, and what came after.
    mod legacy_server {
        use std::sync::{Arc, Mutex};

        use axum::Router;
        use axum::body::Body;
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};
        use axum::routing::post;
        use serde_json::{Value, json};

        /// What the server saw, in order: `METHOD session` per request.
        #[derive(Clone, Default)]
        pub struct Seen {
            pub log: Arc<Mutex<Vec<String>>>,
            /// Sessions the server still knows; cleared to forget them all.
            pub sessions: Arc<Mutex<Vec<String>>>,
        }

        impl Seen {
            pub fn lines(&self) -> Vec<String> {
                self.log.lock().unwrap().clone()
            }
        }

        fn session(headers: &HeaderMap) -> String {
            headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        }

        fn event(message: &Value) -> String {
            format!("event: message\ndata: {message}\n\n")
        }

        async fn on_post(State(seen): State<Seen>, headers: HeaderMap, body: String) -> Response {
            let message: Value = serde_json::from_str(&body).unwrap();
            let method = message["method"].as_str().unwrap_or("reply").to_owned();
            let session = session(&headers);
            seen.log.lock().unwrap().push(format!("{method} {session}"));
            let known = seen.sessions.lock().unwrap().contains(&session);
            let id = message["id"].clone();
            match method.as_str() {
                "server/discover" => (StatusCode::BAD_REQUEST, "Bad Request").into_response(),
                "initialize" => {
                    let mut sessions = seen.sessions.lock().unwrap();
                    let new = format!("s{}", seen.log.lock().unwrap().len());
                    sessions.push(new.clone());
                    let result = json!({
                        "protocolVersion": "2025-11-25",
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "legacy", "version": "1"},
                    });
                    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
                    ([("mcp-session-id", new)], axum::Json(answer)).into_response()
                }
                _ if !known => StatusCode::NOT_FOUND.into_response(),
                "tools/list" => {
                    let tools = json!([
                        {"name": "echo", "inputSchema": {"type": "object"}},
                        {"name": "hang", "inputSchema": {"type": "object"}},
                    ]);
                    let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}});
                    axum::Json(answer).into_response()
                }
                "tools/call" => {
                    let token = message["params"]["_meta"]["progressToken"].clone();
                    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": 1, "total": 2}});
                    let mut events = vec![Ok::<_, std::convert::Infallible>(event(&progress))];
                    let hang = message["params"]["name"] == "hang";
                    if !hang {
                        let result = json!({"content": [{"type": "text", "text": "done"}]});
                        events.push(Ok(event(
                            &json!({"jsonrpc": "2.0", "id": id, "result": result}),
                        )));
                    }
                    let events = futures::stream::iter(events);
                    let body = if hang {
                        Body::from_stream(futures::StreamExt::chain(
                            events,
                            futures::stream::pending(),
                        ))
                    } else {
                        Body::from_stream(events)
                    };
                    ([("content-type", "text/event-stream")], body).into_response()
                }
                _ => StatusCode::ACCEPTED.into_response(),
            }
        }

        async fn on_get(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
            seen.log
                .lock()
                .unwrap()
                .push(format!("GET {}", session(&headers)));
            StatusCode::METHOD_NOT_ALLOWED
        }

        async fn on_delete(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
            seen.log
                .lock()
                .unwrap()
                .push(format!("DELETE {}", session(&headers)));
            StatusCode::OK
        }

        /// Serves on a free loopback port; returns the endpoint's URL.
        pub async fn start(seen: Seen) -> String {
            let app = Router::new()
                .route("/mcp", post(on_post).get(on_get).delete(on_delete))
                .with_state(seen);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/mcp")
        }
    }

    #[tokio::test]
    async fn a_legacy_session_is_kept_cancelled_into_and_ended_on_the_server() {
        use futures::StreamExt;
        use switchyard_shared::mcp::{McpToolCall, McpToolEvent};

        use crate::config::Config;
        use crate::identity::Identity;
        use crate::mcp::McpPool;

        let seen = legacy_server::Seen::default();
        let url = legacy_server::start(seen.clone()).await;
        let toml = format!(
            "[[mcp_servers]]\nname = \"legacy\"\ntransport = \"streamable_http\"\nurl = \"{url}\"\n"
        );
        let config = Config::from_toml_str(&toml, "test").unwrap();
        let pool = McpPool::new(&config.mcp_servers);
        let me = Identity::anonymous();
        let call = |name: &str| McpToolCall {
            server: "legacy".into(),
            name: name.into(),
            arguments: None,
        };
        let text = |result: &rmcp::model::CallToolResult| {
            serde_json::to_value(&result.content).unwrap()[0]["text"].clone()
        };

        let first = pool.call_tool(&me, call("echo")).await.unwrap();
        assert_eq!(text(&first), "done");
        // The refused discovery falls back to `initialize`; everything after it carries the
        // session, and the session's event stream is asked for once (on a task of its own).
        let (gets, posts): (Vec<_>, Vec<_>) = seen
            .lines()
            .into_iter()
            .partition(|line| line.starts_with("GET"));
        let session = posts[2].strip_prefix("notifications/initialized ").unwrap();
        assert_eq!(
            posts,
            [
                "server/discover -".to_owned(),
                "initialize -".to_owned(),
                format!("notifications/initialized {session}"),
                format!("tools/list {session}"),
                format!("tools/call {session}"),
            ]
        );
        assert_eq!(gets, [format!("GET {session}")]);

        // A server that forgot the session answers 404: a new session, and the call is made.
        seen.sessions.lock().unwrap().clear();
        let second = pool.call_tool(&me, call("echo")).await.unwrap();
        assert_eq!(text(&second), "done");
        let lines = seen.lines();
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("tools/call s") && *last != format!("tools/call {session}"),
            "{lines:?}"
        );
        let session = last.strip_prefix("tools/call ").unwrap().to_owned();

        // A client that leaves a call cancels it in the session.
        let mut events = pool.call_tool_stream(&me, call("hang")).await.unwrap();
        assert!(matches!(
            events.next().await,
            Some(McpToolEvent::Progress { .. })
        ));
        drop(events);
        let cancelled = format!("notifications/cancelled {session}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !seen.lines().contains(&cancelled) {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", seen.lines());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        pool.shutdown().await;
        assert!(
            seen.lines().contains(&format!("DELETE {session}")),
            "{:?}",
            seen.lines()
        );
    }
}
