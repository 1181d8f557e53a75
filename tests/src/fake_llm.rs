//! A deterministic, scripted OpenAI-compatible chat-completions server.
//!
//! This is test equipment, never product code. It is written from the OpenAI
//! wire format directly and deliberately shares no types with the rest of the
//! workspace: if it reused the product's wire types, a bug there would be
//! mirrored here and the tests would agree with the bug.
//!
//! Behaviour is selected by the request's `model` field (see [`MODELS`]), so a
//! test picks a scenario simply by naming it, and the same scenario is
//! available to browser tests that can only speak HTTP. Everything the server
//! sees is recorded in [`Observed`], readable in-process via
//! [`FakeLlm::observed`] or over HTTP at `GET /_observed`. Failures of the
//! next N chat requests, whatever their model, are armed with
//! [`FakeLlm::fail_next`] or `POST /_fail` (a [`FailNext`] as JSON), so that
//! retries can be observed: each attempt counts in [`Observed::requests`].

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER,
};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::{StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tower_http::cors::{Any, CorsLayer};

/// Every scripted model name, in the order `GET /v1/models` lists them.
pub const MODELS: &[&str] = &[
    "echo",
    "tools",
    "parallel-tools",
    "agent",
    "slow",
    "long",
    "length",
    "fail-400",
    "fail-401",
    "fail-404",
    "fail-429",
    "fail-500",
    "fail-503",
    "stall",
    "stall-stream",
    "drop-stream",
    "reset-stream",
    "error-stream",
];

/// Fixed response id: determinism matters more than realism for assertions.
const COMPLETION_ID: &str = "chatcmpl-fake";
/// Fixed `created` timestamp, for the same reason as [`COMPLETION_ID`].
const CREATED: u64 = 1_700_000_000;
/// Delay between stream chunks for the `slow` model.
const SLOW_CHUNK_DELAY: Duration = Duration::from_millis(50);
/// Delay between stream chunks for the `long` model.
const LONG_CHUNK_DELAY: Duration = Duration::from_millis(20);
/// Number of content chunks the `long` model emits.
const LONG_CHUNKS: usize = 200;
/// Pause before a scripted abort so the bytes before it reach the client.
const ABORT_FLUSH_DELAY: Duration = Duration::from_millis(50);
/// How long `stall` waits: far beyond any timeout a test would configure.
const STALL: Duration = Duration::from_secs(3600);

/// Configuration of a [`FakeLlm`] instance.
#[derive(Clone, Debug, Default)]
pub struct FakeLlmConfig {
    /// If set, `/v1/*` requests without `Authorization: Bearer <key>` get a 401.
    pub api_key: Option<String>,
}

/// Snapshot of what the fake server has seen since start (or the last reset).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    /// Number of `POST /v1/chat/completions` requests received, valid or not.
    pub requests: u64,
    /// Number of streaming (SSE) response bodies created.
    pub streams_started: u64,
    /// Number of streaming bodies that reached their scripted end.
    pub streams_completed: u64,
    /// Number of streaming bodies dropped (client went away) before their end.
    pub streams_cancelled: u64,
    /// `Authorization` header of the most recent chat request, if any.
    pub last_authorization: Option<String>,
    /// `Origin` header of the most recent chat request: a browser sends one, the proxy does not,
    /// so it tells which of them reached the fake.
    pub last_origin: Option<String>,
    /// JSON body of the most recent chat request (`None` if it was not JSON).
    pub last_body: Option<Value>,
    /// Chat requests answered with an armed failure ([`FailNext`]).
    pub failed: u64,
}

/// Fails the next `times` chat requests, whatever they ask for; then they are answered as
/// usual. Arming again replaces what is left of the previous script.
// Not `deny_unknown_fields`: serde does not support it together with `flatten`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailNext {
    /// How many requests fail.
    pub times: u32,
    /// How they fail.
    #[serde(flatten)]
    pub with: FailWith,
}

/// How an armed request fails.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "fail", rename_all = "snake_case")]
pub enum FailWith {
    /// `503` with OpenAI's "overloaded" error.
    Unavailable,
    /// `429` with this `Retry-After` value.
    RateLimited {
        /// The header's value, e.g. `"1"`.
        retry_after: String,
    },
    /// The connection is closed after the request was read, without an answer.
    Close,
}

/// Handle to a running fake server; dropping it shuts the server down.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    connections: Arc<Connections>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeLlm {
    /// Binds `127.0.0.1:0` and starts serving on a background task.
    pub async fn start(config: FakeLlmConfig) -> anyhow::Result<FakeLlm> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding 127.0.0.1:0 for the fake LLM")?;
        Self::start_on(config, listener).await
    }

    /// Starts serving on an already-bound loopback listener.
    pub async fn start_on(config: FakeLlmConfig, listener: TcpListener) -> anyhow::Result<FakeLlm> {
        Self::serve(config, listener, true).await
    }

    /// Like [`FakeLlm::start_on`], but `/v1/*` answers without CORS headers, as a provider that
    /// does not admit browsers: a page's calls are refused by the browser before they are sent.
    /// The control routes (`/_observed`, ...) stay open so a page can still read the counters.
    pub async fn start_on_without_cors(
        config: FakeLlmConfig,
        listener: TcpListener,
    ) -> anyhow::Result<FakeLlm> {
        Self::serve(config, listener, false).await
    }

    async fn serve(
        config: FakeLlmConfig,
        listener: TcpListener,
        cors: bool,
    ) -> anyhow::Result<FakeLlm> {
        let addr = listener
            .local_addr()
            .context("reading the listener address")?;
        // Test equipment that accepts any key and echoes request bodies has no
        // business being reachable from the network.
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the fake LLM only listens on loopback, refusing {addr}"
        );
        let shared = Arc::new(Shared {
            api_key: config.api_key,
            observed: Mutex::new(Observed::default()),
            armed: Mutex::new(None),
        });
        let connections = Arc::new(Connections::default());
        let tracked = TrackedListener {
            inner: listener,
            connections: Arc::clone(&connections),
        };
        let app = router(Arc::clone(&shared), cors);
        let server = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<Connection>();
            if let Err(error) = axum::serve(tracked, app).await {
                tracing::error!(%error, "fake LLM server stopped");
            }
        });
        tracing::debug!(%addr, "fake LLM listening");
        Ok(FakeLlm {
            addr,
            shared,
            connections,
            server,
        })
    }

    /// OpenAI-style base URL including the version prefix: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Socket address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Snapshot of the counters and the last request seen.
    pub fn observed(&self) -> Observed {
        self.shared.with_observed(|o| o.clone())
    }

    /// Clears all counters, the recorded last request and any armed failures.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Arms failures for the next chat requests (see [`FailNext`]).
    pub fn fail_next(&self, script: FailNext) {
        self.shared.arm(script);
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        // Aborting the accept loop alone would leave already-accepted
        // connections (axum spawns one task each) streaming on; a test that
        // drops the server expects its clients to see it die, so cut them too.
        self.server.abort();
        self.connections.kill_all();
    }
}

/// State shared by all handlers.
struct Shared {
    api_key: Option<String>,
    observed: Mutex<Observed>,
    /// What is left of the armed failures.
    armed: Mutex<Option<FailNext>>,
}

impl Shared {
    fn with_observed<R>(&self, f: impl FnOnce(&mut Observed) -> R) -> R {
        // A panicking test thread must not turn every later request into a
        // poisoned-lock panic; the counters are plain data, so keep going.
        let mut guard = self.observed.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Option<FailNext>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn arm(&self, script: FailNext) {
        *self.armed() = (script.times > 0).then_some(script);
    }

    fn reset(&self) {
        self.with_observed(|o| *o = Observed::default());
        *self.armed() = None;
    }

    /// Takes one armed failure, if any is left.
    fn next_failure(&self) -> Option<FailWith> {
        let mut armed = self.armed();
        let script = armed.as_mut()?;
        let with = script.with.clone();
        script.times -= 1;
        if script.times == 0 {
            *armed = None;
        }
        self.with_observed(|o| o.failed += 1);
        Some(with)
    }
}

fn router(shared: Arc<Shared>, api_cors: bool) -> Router {
    // Hosted providers answer browsers from any origin; the SDK calls the fake
    // directly from a page served elsewhere, so CORS must be just as open.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([AUTHORIZATION, CONTENT_TYPE])
        .expose_headers([RETRY_AFTER]);
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(unknown_route);
    let control = Router::new()
        .route("/_observed", get(get_observed))
        .route("/_reset", post(reset_observed))
        .route("/_fail", post(arm_failures))
        .layer(cors.clone());
    let api = if api_cors { api.layer(cors) } else { api };
    api.merge(control).with_state(shared)
}

async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(denied) = auth_denial(&shared, &headers) {
        return denied;
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "fake"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn get_observed(State(shared): State<Arc<Shared>>) -> Json<Observed> {
    Json(shared.with_observed(|o| o.clone()))
}

async fn reset_observed(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}

async fn arm_failures(
    State(shared): State<Arc<Shared>>,
    Json(script): Json<FailNext>,
) -> StatusCode {
    shared.arm(script);
    StatusCode::NO_CONTENT
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
        None,
    )
}

/// The subset of the chat-completions request the scripts look at; unknown
/// fields (temperature, max_tokens, ...) are accepted and ignored, as OpenAI
/// would accept them.
#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    // Kept untyped: it may be a string, an array of parts, or null.
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    // Record before any validation: tests need to see what the proxy sent
    // even (especially) when the fake rejects it.
    let authorization = headers
        .get(AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    shared.with_observed(|o| {
        o.requests += 1;
        o.last_authorization = authorization;
        o.last_origin = origin;
        o.last_body = parsed.as_ref().ok().cloned();
    });
    match shared.next_failure() {
        None => {}
        Some(FailWith::Unavailable) => return overloaded(),
        Some(FailWith::RateLimited { retry_after }) => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for fake-model: scripted by the fake LLM.",
                "requests",
                Some("rate_limit_exceeded"),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            return response;
        }
        Some(FailWith::Close) => {
            connection.close();
            // Nothing reaches the client any more; the answer only ends the task.
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }

    if let Some(denied) = auth_denial(&shared, &headers) {
        return denied;
    }
    let value = match parsed {
        Ok(value) => value,
        Err(error) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                format!("We could not parse the JSON body of your request. ({error})"),
                "invalid_request_error",
                None,
            );
        }
    };
    let request: ChatRequest = match serde_json::from_value(value) {
        Ok(request) => request,
        Err(error) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                format!("Invalid chat completion request: {error}"),
                "invalid_request_error",
                Some("invalid_request_body"),
            );
        }
    };
    run_script(&shared, request).await
}

async fn run_script(shared: &Arc<Shared>, request: ChatRequest) -> Response {
    let streaming = request.stream.unwrap_or(false);
    let chunks = ChunkWriter {
        model: request.model.clone(),
        include_usage: request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    };
    let model = request.model.as_str();
    if let Some(failure) = scripted_failure(model) {
        return failure;
    }
    match model {
        "echo" => respond(shared, &chunks, streaming, &echo_reply(&request), None),
        "slow" => respond(
            shared,
            &chunks,
            streaming,
            &echo_reply(&request),
            Some(SLOW_CHUNK_DELAY),
        ),
        "long" => respond(
            shared,
            &chunks,
            streaming,
            &long_reply(&request),
            Some(LONG_CHUNK_DELAY),
        ),
        "length" => respond(shared, &chunks, streaming, &length_reply(&request), None),
        "tools" => respond(
            shared,
            &chunks,
            streaming,
            &tools_reply(&request, false),
            None,
        ),
        "parallel-tools" => respond(
            shared,
            &chunks,
            streaming,
            &tools_reply(&request, true),
            None,
        ),
        "agent" => respond(shared, &chunks, streaming, &agent_reply(&request), None),
        "stall" => {
            tokio::time::sleep(STALL).await;
            respond(shared, &chunks, streaming, &echo_reply(&request), None)
        }
        "stall-stream" if streaming => {
            let first = chunks.delta(json!({"role": "assistant", "content": "partial"}), None);
            sse_response(shared, vec![Step::Send(first), Step::Stall])
        }
        "stall-stream" => {
            tokio::time::sleep(STALL).await;
            respond(shared, &chunks, false, &echo_reply(&request), None)
        }
        "drop-stream" | "reset-stream" => broken_response(shared, &chunks, streaming, model),
        // Some text, then the error chunk OpenAI sends when it fails mid-stream.
        "error-stream" if streaming => {
            let steps = vec![
                Step::Send(chunks.delta(json!({"role": "assistant", "content": "partial"}), None)),
                Step::Send(Bytes::from(format!(
                    "data: {}\n\n",
                    json!({"error": {"message": "The server had an error while processing your request.",
                        "type": "server_error", "param": null, "code": null}})
                ))),
            ];
            sse_response(shared, steps)
        }
        "error-stream" => respond(shared, &chunks, false, &echo_reply(&request), None),
        _ => openai_error(
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist"),
            "invalid_request_error",
            Some("model_not_found"),
        ),
    }
}

/// Responses for the `fail-*` models, shaped like the provider's real ones.
fn scripted_failure(model: &str) -> Option<Response> {
    let response = match model {
        "fail-400" => openai_error(
            StatusCode::BAD_REQUEST,
            "Invalid value for 'messages': scripted bad request from the fake LLM.",
            "invalid_request_error",
            Some("invalid_value"),
        ),
        // The masked key mimics OpenAI's real message so tests can prove the
        // proxy does not forward upstream credential hints to browsers.
        "fail-401" => openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided: sk-te************cret. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        "fail-404" => openai_error(
            StatusCode::NOT_FOUND,
            "The model `fail-404` does not exist or you do not have access to it.",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        "fail-429" => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for fake-model in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 7s.",
                "requests",
                Some("rate_limit_exceeded"),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("7"));
            response
        }
        "fail-500" => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Some("internal_error"),
        ),
        "fail-503" => overloaded(),
        _ => return None,
    };
    Some(response)
}

/// OpenAI's 503.
fn overloaded() -> Response {
    openai_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The engine is currently overloaded, please try again later.",
        "server_error",
        Some("engine_overloaded"),
    )
}

/// `drop-stream` ends the body cleanly at the HTTP level but without
/// `finish_reason`/`[DONE]` (a truncated SSE conversation); `reset-stream`
/// instead aborts the connection mid-body (a transport error). Non-streaming
/// requests get a truncated JSON body ended the same two ways.
fn broken_response(
    shared: &Arc<Shared>,
    chunks: &ChunkWriter,
    streaming: bool,
    model: &str,
) -> Response {
    let abort = model == "reset-stream";
    if streaming {
        let mut steps = vec![
            Step::Send(chunks.delta(json!({"role": "assistant", "content": ""}), None)),
            Step::Send(chunks.delta(json!({"content": "a"}), None)),
            Step::Send(chunks.delta(json!({"content": "b"}), None)),
        ];
        if abort {
            // Without the pause hyper would fail the connection before
            // flushing the chunks above, and the client would see nothing.
            steps.push(Step::Pause(ABORT_FLUSH_DELAY));
            steps.push(Step::Abort);
        }
        return sse_response(shared, steps);
    }
    let partial = Bytes::from(format!(
        r#"{{"id":"{COMPLETION_ID}","object":"chat.completion","created":{CREATED},"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ab"#
    ));
    let body = if abort {
        // Same flush concern as the streaming variant.
        let reset = async {
            tokio::time::sleep(ABORT_FLUSH_DELAY).await;
            Err(io::Error::other("scripted connection reset"))
        };
        Body::from_stream(stream::once(async { Ok(partial) }).chain(stream::once(reset)))
    } else {
        Body::from(partial)
    };
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// A fully scripted assistant turn, rendered either as one JSON object or as
/// an SSE stream.
struct Reply {
    content: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish_reason: &'static str,
    prompt_tokens: u64,
    completion_tokens: u64,
}

struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl Reply {
    fn new(
        request: &ChatRequest,
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
        finish_reason: &'static str,
    ) -> Reply {
        // "Tokens" are whitespace-separated words: deterministic and easy for
        // a test to compute by hand.
        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| word_count(&content_text(&m.content)))
            .sum();
        let completion_tokens = content.as_deref().map_or(0, word_count)
            + tool_calls
                .iter()
                .map(|c| word_count(&c.arguments))
                .sum::<u64>();
        Reply {
            content,
            tool_calls,
            finish_reason,
            prompt_tokens,
            completion_tokens,
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

fn echo_reply(request: &ChatRequest) -> Reply {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_text(&m.content))
        .unwrap_or_default();
    Reply::new(
        request,
        Some(format!("echo: {last_user}")),
        Vec::new(),
        "stop",
    )
}

/// The `length` model: the echo cut to three words, stopped for the token limit.
fn length_reply(request: &ChatRequest) -> Reply {
    let echo = echo_reply(request).content.unwrap_or_default();
    let cut: Vec<&str> = echo.split(' ').take(3).collect();
    Reply::new(request, Some(cut.join(" ")), Vec::new(), "length")
}

fn long_reply(request: &ChatRequest) -> Reply {
    let text: String = (0..LONG_CHUNKS).map(|i| format!("tok{i} ")).collect();
    Reply::new(request, Some(text), Vec::new(), "stop")
}

fn tools_reply(request: &ChatRequest, parallel: bool) -> Reply {
    // After the client ran the tool(s), answer with what they returned so the
    // test can check the round trip; consecutive tool messages are the results
    // of one parallel batch.
    let tool_results: Vec<String> = request
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == "tool")
        .map(|m| content_text(&m.content))
        .collect();
    if !tool_results.is_empty() {
        let results: Vec<String> = tool_results.into_iter().rev().collect();
        let content = format!("tool said: {}", results.join(" | "));
        return Reply::new(request, Some(content), Vec::new(), "stop");
    }
    let name = request
        .tools
        .as_deref()
        .and_then(|tools| tools.first())
        .and_then(|tool| tool.get("function"))
        .and_then(|function| function.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("lookup")
        .to_owned();
    let call = |id: &str, arguments: &str| ToolCall {
        id: id.to_owned(),
        name: name.clone(),
        arguments: arguments.to_owned(),
    };
    let calls = if parallel {
        vec![
            call("call_1", r#"{"city":"Paris"}"#),
            call("call_2", r#"{"city":"Tokyo"}"#),
        ]
    } else {
        vec![call("call_1", r#"{"query":"weather in Paris"}"#)]
    };
    Reply::new(request, None, calls, "tool_calls")
}

/// The `agent` model follows instructions in the last user message, one per line:
/// `call <tool> <JSON arguments>` asks for that call (several lines: one parallel batch), and
/// `loop` asks again after every result instead of answering. Without calls it echoes; once the
/// results are back it answers "tool said: <results in call order>".
fn agent_reply(request: &ChatRequest) -> Reply {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_text(&m.content))
        .unwrap_or_default();
    let calls: Vec<(&str, &str)> = last_user
        .lines()
        .filter_map(|line| line.trim().strip_prefix("call "))
        .map(|rest| rest.split_once(' ').unwrap_or((rest, "{}")))
        .collect();
    let looping = last_user.lines().any(|line| line.trim() == "loop");
    let results: Vec<String> = request
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == "tool")
        .map(|m| content_text(&m.content))
        .collect();
    if calls.is_empty() {
        return echo_reply(request);
    }
    if !results.is_empty() && !looping {
        let results: Vec<String> = results.into_iter().rev().collect();
        let content = format!("tool said: {}", results.join(" | "));
        return Reply::new(request, Some(content), Vec::new(), "stop");
    }
    // Ids stay unique over the conversation: one batch per assistant message so far.
    let step = request
        .messages
        .iter()
        .filter(|m| m.role == "assistant")
        .count()
        + 1;
    let tool_calls = calls
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| ToolCall {
            id: format!("call_{step}_{}", i + 1),
            name: (*name).to_owned(),
            arguments: arguments.trim().to_owned(),
        })
        .collect();
    Reply::new(request, None, tool_calls, "tool_calls")
}

/// Text of a message `content`: a plain string, or the `text` parts of an
/// array of content parts joined by single spaces (images are ignored).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits text into chunks of "word + the whitespace after it", so that the
/// concatenation of all chunks is exactly the input.
fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut after_word_space = false;
    for (i, ch) in text.char_indices() {
        if ch.is_whitespace() {
            after_word_space |= seen_word;
        } else {
            if after_word_space {
                pieces.push(&text[start..i]);
                start = i;
                after_word_space = false;
            }
            seen_word = true;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits text into up to `pieces` non-empty parts on char boundaries, the
/// way OpenAI fragments tool-call arguments across stream deltas.
fn split_in_pieces(text: &str, pieces: usize) -> Vec<&str> {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars = bounds.len() - 1;
    let pieces = pieces.min(chars).max(1);
    (0..pieces)
        .map(|k| &text[bounds[k * chars / pieces]..bounds[(k + 1) * chars / pieces]])
        .collect()
}

fn respond(
    shared: &Arc<Shared>,
    chunks: &ChunkWriter,
    streaming: bool,
    reply: &Reply,
    chunk_delay: Option<Duration>,
) -> Response {
    if streaming {
        // The delay only paces streams; a non-streaming `slow` is instant.
        sse_response(shared, stream_steps(chunks, reply, chunk_delay))
    } else {
        Json(completion_json(&chunks.model, reply)).into_response()
    }
}

fn completion_json(model: &str, reply: &Reply) -> Value {
    let mut message = serde_json::Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), json!(reply.content));
    if !reply.tool_calls.is_empty() {
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    json!({
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": reply.finish_reason,
        }],
        "usage": reply.usage(),
    })
}

/// Renders `chat.completion.chunk` SSE events for one request.
struct ChunkWriter {
    model: String,
    include_usage: bool,
}

impl ChunkWriter {
    fn chunk(&self, choices: Value, usage: Value) -> Bytes {
        let mut chunk = json!({
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "choices": choices,
        });
        // Like OpenAI: once usage is requested, every chunk carries a `usage`
        // key, null except on the final usage-only chunk. Parsers must cope.
        if self.include_usage
            && let Value::Object(fields) = &mut chunk
        {
            fields.insert("usage".into(), usage);
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": finish_reason}]),
            Value::Null,
        )
    }
}

fn stream_steps(chunks: &ChunkWriter, reply: &Reply, chunk_delay: Option<Duration>) -> Vec<Step> {
    let mut events = vec![chunks.delta(json!({"role": "assistant", "content": ""}), None)];
    if let Some(content) = &reply.content {
        for word in split_words(content) {
            events.push(chunks.delta(json!({"content": word}), None));
        }
    }
    for (index, call) in reply.tool_calls.iter().enumerate() {
        // First delta of a call names it; the arguments follow in fragments
        // that carry only the index, exactly as OpenAI streams them.
        events.push(chunks.delta(
            json!({"tool_calls": [{
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }]}),
            None,
        ));
        for piece in split_in_pieces(&call.arguments, 3) {
            events.push(chunks.delta(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunks.delta(json!({}), Some(reply.finish_reason)));
    if chunks.include_usage {
        events.push(chunks.chunk(json!([]), reply.usage()));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));

    let mut steps = Vec::with_capacity(events.len() * 2);
    for (i, event) in events.into_iter().enumerate() {
        if let (Some(delay), true) = (chunk_delay, i > 0) {
            steps.push(Step::Pause(delay));
        }
        steps.push(Step::Send(event));
    }
    steps
}

/// One step of a scripted response body.
enum Step {
    /// Write these bytes.
    Send(Bytes),
    /// Wait before the next step.
    Pause(Duration),
    /// Never produce anything again (until the client gives up).
    Stall,
    /// Fail the body, which makes hyper abort the connection mid-response.
    Abort,
}

fn sse_response(shared: &Arc<Shared>, steps: Vec<Step>) -> Response {
    let guard = StreamGuard::start(Arc::clone(shared));
    let body = stream::unfold(
        (steps.into_iter(), guard),
        |(mut steps, mut guard)| async move {
            while let Some(step) = steps.next() {
                match step {
                    Step::Pause(delay) => tokio::time::sleep(delay).await,
                    Step::Stall => std::future::pending::<()>().await,
                    Step::Send(bytes) => {
                        // Count completion when the last event is handed to
                        // hyper, not when the stream is later polled to its
                        // end: a test that has just read `[DONE]` must already
                        // see the stream as completed.
                        if steps.as_slice().is_empty() {
                            guard.complete();
                        }
                        return Some((Ok(bytes), (steps, guard)));
                    }
                    Step::Abort => {
                        // The abort is the script's intended end, not a
                        // client cancellation.
                        guard.complete();
                        let error = io::Error::other("scripted stream abort");
                        return Some((Err(error), (steps, guard)));
                    }
                }
            }
            guard.complete();
            None
        },
    );
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Lives inside a streaming body: hyper drops the body when the client goes
/// away, so a guard dropped before [`StreamGuard::complete`] is exactly a
/// cancelled stream. Tests rely on this to prove upstream cancellation.
struct StreamGuard {
    shared: Arc<Shared>,
    completed: bool,
}

impl StreamGuard {
    fn start(shared: Arc<Shared>) -> StreamGuard {
        shared.with_observed(|o| o.streams_started += 1);
        StreamGuard {
            shared,
            completed: false,
        }
    }

    fn complete(&mut self) {
        if !self.completed {
            self.completed = true;
            self.shared.with_observed(|o| o.streams_completed += 1);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.shared.with_observed(|o| o.streams_cancelled += 1);
        }
    }
}

/// The 401 to send if the request lacks the configured key, else `None`.
fn auth_denial(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = shared.api_key.as_ref()?;
    let presented = headers
        .get(AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match presented {
        Some(value) if value.strip_prefix("Bearer ") == Some(key.as_str()) => None,
        Some(value) => {
            let token = value.strip_prefix("Bearer ").unwrap_or(&value);
            Some(openai_error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    mask_key(token)
                ),
                "invalid_request_error",
                Some("invalid_api_key"),
            ))
        }
        None => Some(openai_error(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
            None,
        )),
    }
}

/// Masks a key the way OpenAI does in its 401 messages (prefix and suffix
/// visible), because that partial leak is what tests check the proxy hides.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "*".repeat(chars.len());
    }
    let (head, rest) = chars.split_at(5);
    let (middle, tail) = rest.split_at(rest.len() - 4);
    format!(
        "{}{}{}",
        head.iter().collect::<String>(),
        "*".repeat(middle.len()),
        tail.iter().collect::<String>()
    )
}

fn openai_error(
    status: StatusCode,
    message: impl Into<String>,
    kind: &str,
    code: Option<&str>,
) -> Response {
    let body = json!({
        "error": {"message": message.into(), "type": kind, "param": null, "code": code}
    });
    (status, Json(body)).into_response()
}

/// Keeps a duplicate handle of every live connection so that dropping the
/// [`FakeLlm`] can shut them down, which ends in-flight responses at once.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    state: Mutex<ConnectionsState>,
}

#[derive(Default)]
struct ConnectionsState {
    closed: bool,
    live: HashMap<u64, std::net::TcpStream>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectionsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn track(self: &Arc<Self>, stream: TcpStream) -> io::Result<TrackedStream> {
        // A duplicated fd lets us `shutdown` the socket from outside the task
        // that owns it; the tokio stream is rebuilt from the original fd.
        let std_stream = stream.into_std()?;
        let handle = std_stream.try_clone()?;
        let stream = TcpStream::from_std(std_stream)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = self.lock();
            if state.closed {
                // Accepted in the window between drop and the task abort.
                let _ = handle.shutdown(Shutdown::Both);
            } else {
                state.live.insert(id, handle);
            }
        }
        Ok(TrackedStream {
            inner: stream,
            id,
            connections: Arc::clone(self),
        })
    }

    fn kill_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        for (_, handle) in state.live.drain() {
            // Errors only mean the peer is already gone, which is the goal.
            let _ = handle.shutdown(Shutdown::Both);
        }
    }
}

/// The connection a request arrived on, so that a handler can close it without answering.
#[derive(Clone)]
struct Connection {
    id: u64,
    connections: Arc<Connections>,
}

impl Connection {
    fn close(&self) {
        if let Some(handle) = self.connections.lock().live.get(&self.id) {
            let _ = handle.shutdown(Shutdown::Both);
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TrackedListener>>
    for Connection
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TrackedListener>) -> Self {
        Connection {
            id: stream.io().id,
            connections: Arc::clone(&stream.io().connections),
        }
    }
}

struct TrackedListener {
    inner: TcpListener,
    connections: Arc<Connections>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match self.connections.track(stream) {
                    Ok(tracked) => return (tracked, addr),
                    Err(error) => tracing::warn!(%error, "fake LLM could not track connection"),
                },
                Err(error) => {
                    // Usually fd exhaustion; back off instead of spinning.
                    tracing::warn!(%error, "fake LLM accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection registered in [`Connections`]; unregisters itself on drop so
/// a long-running `fake-llm` binary does not accumulate duplicate fds.
struct TrackedStream {
    inner: TcpStream,
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.connections.lock().live.remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_words_round_trips() {
        for text in [
            "echo: hello world",
            "  lead  and trail  ",
            "a\nb\t c",
            "",
            "one",
        ] {
            assert_eq!(split_words(text).concat(), text);
        }
        assert_eq!(split_words("echo: hi there"), ["echo: ", "hi ", "there"]);
    }

    #[test]
    fn split_in_pieces_round_trips() {
        let args = r#"{"query":"weather in Paris"}"#;
        let pieces = split_in_pieces(args, 3);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), args);
        assert_eq!(split_in_pieces("", 3), [""]);
        assert_eq!(split_in_pieces("ab", 3), ["a", "b"]);
    }

    #[test]
    fn mask_key_hides_the_middle() {
        assert_eq!(mask_key("sk-test-secret-cret"), "sk-te**********cret");
        assert_eq!(mask_key("short"), "*****");
    }
}
