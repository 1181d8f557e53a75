//! A deterministic server of Google's Gemini API (`POST /v1beta/models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`), the Gemini counterpart of [`crate::fake_llm`] and
//! [`crate::fake_anthropic`]: scripted models, the `x-goog-api-key` header (a key in the URL is
//! refused), Google's error shape and its answers and stream chunks, with open CORS so that a
//! page reaches it. Like Gemini 3 it refuses a function call sent back without a thought
//! signature. Written from Google's format directly, sharing no types with the product.
//! Test equipment only; it listens on loopback.
//!
//! Models: `echo` (answers `echo: <last user text>`), `tools` (asks for `get_weather` with the
//! city `Paris`, then answers the tool result back), `agent` (the script of
//! [`crate::fake_stream::agent_calls`]), `long` (200 words, paced), `length` (stops for
//! `MAX_TOKENS`), `fail-400`, `fail-401` (Google's 400 `API_KEY_INVALID`), `fail-429`
//! (`RESOURCE_EXHAUSTED` with a `RetryInfo` of 7 s and no `Retry-After`), `fail-500`,
//! `fail-503`, `error-stream` (an error chunk after some text), `drop-stream` (ends without a
//! finish reason), and any other name is a 404 `NOT_FOUND`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::fake_stream::{self, StreamCounters, StreamCounts};

/// Fixed response id, for assertions.
pub const RESPONSE_ID: &str = "resp_fake";
/// The `modelVersion` answers carry is the model asked for with this suffix.
pub const MODEL_SUFFIX: &str = "-fake-001";

/// What the server has seen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    /// Number of generate requests.
    pub requests: u64,
    /// The path and query of the last request.
    pub last_uri: String,
    /// The headers of the last request.
    pub last_headers: Vec<(String, String)>,
    /// The JSON body of the last request.
    pub last_body: Option<Value>,
    /// Stream counts.
    #[serde(flatten)]
    pub streams: StreamCounts,
}

/// A running fake; dropping it stops the server.
pub struct FakeGemini {
    addr: SocketAddr,
    fake: Arc<Fake>,
    server: JoinHandle<()>,
}

impl FakeGemini {
    /// Serves on `127.0.0.1:0`, answering only requests with `x-goog-api-key: <key>`.
    pub async fn start(key: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding 127.0.0.1:0 for the fake Gemini API")?;
        Self::start_on(key, listener).await
    }

    /// Serves on an already-bound loopback listener.
    pub async fn start_on(key: &str, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the fake Gemini API only listens on loopback, refusing {addr}"
        );
        let fake = Arc::new(Fake {
            key: key.to_owned(),
            observed: Mutex::new(Observed::default()),
            streams: Arc::new(StreamCounters::default()),
        });
        let app = Router::new()
            .route("/v1beta/models/{call}", post(generate))
            .route("/_observed", get(observed))
            .layer(fake_stream::browser_cors(&["x-goog-api-key"]))
            .with_state(Arc::clone(&fake));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake Gemini API stopped");
            }
        });
        Ok(FakeGemini { addr, fake, server })
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:PORT/v1beta`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// The socket address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server has seen.
    pub fn observed(&self) -> Observed {
        self.fake.observed()
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Fake {
    key: String,
    observed: Mutex<Observed>,
    streams: Arc<StreamCounters>,
}

impl Fake {
    fn observed(&self) -> Observed {
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        observed.streams = self.streams.snapshot();
        observed
    }
}

async fn observed(State(fake): State<Arc<Fake>>) -> Json<Observed> {
    Json(fake.observed())
}

/// Google's error body: `{"error": {"code", "message", "status", "details"}}`.
fn error(status: StatusCode, google_status: &str, message: &str, details: Value) -> Response {
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(), "message": message, "status": google_status,
            "details": details
        }})),
    )
        .into_response()
}

fn invalid_key() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
            "domain": "googleapis.com"}]),
    )
}

/// The last user turn's text parts, joined by spaces.
fn last_user_text(body: &Value) -> String {
    body["contents"]
        .as_array()
        .and_then(|c| {
            c.iter().rev().find(|turn| {
                turn["role"] == "user"
                    && turn["parts"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|part| part["text"].is_string()))
            })
        })
        .and_then(|turn| turn["parts"].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The function results the request ends with (the last turn, if it carries any), as text:
/// an `output` string as it is, any other response as JSON.
fn trailing_results(body: &Value) -> Vec<String> {
    let Some(last) = body["contents"].as_array().and_then(|c| c.last()) else {
        return Vec::new();
    };
    last["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("functionResponse"))
        .map(|r| match r["response"]["output"].as_str() {
            Some(output) => output.to_owned(),
            None => r["response"].to_string(),
        })
        .collect()
}

fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Every text part of the request, counted as "tokens" the way the other fakes count them.
fn prompt_tokens(body: &Value) -> u64 {
    let mut texts: Vec<&str> = Vec::new();
    for part in body["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        texts.extend(part["text"].as_str());
    }
    for turn in body["contents"].as_array().into_iter().flatten() {
        for part in turn["parts"].as_array().into_iter().flatten() {
            texts.extend(part["text"].as_str());
        }
    }
    texts.iter().map(|t| word_count(t)).sum()
}

async fn generate(
    State(fake): State<Arc<Fake>>,
    Path(call): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    {
        let mut observed = fake.observed.lock().unwrap_or_else(PoisonError::into_inner);
        observed.requests += 1;
        observed.last_uri = uri.to_string();
        observed.last_headers = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        observed.last_body = parsed.clone();
    }
    // Google accepts `?key=`; the product must never put a key in a URL, so the fake refuses it.
    if query.contains_key("key") {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "the fake refuses a key in the URL: send x-goog-api-key",
            json!([]),
        );
    }
    match headers.get("x-goog-api-key").map(HeaderValue::as_bytes) {
        Some(key) if key == fake.key.as_bytes() => {}
        Some(_) => return invalid_key(),
        None => {
            return error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                json!([]),
            );
        }
    }
    let Some((model, method)) = call.split_once(':') else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "unknown method",
            json!([]),
        );
    };
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" if query.get("alt").map(String::as_str) == Some("sse") => true,
        "streamGenerateContent" => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "the fake streams only with alt=sse",
                json!([]),
            );
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("unknown method {other}"),
                json!([]),
            );
        }
    };
    let Some(body) = parsed.filter(|b| b["contents"].is_array()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received: `contents` is required.",
            json!([]),
        );
    };
    // As Gemini 3 does: a function call sent back must carry its thought signature.
    let unsigned = body["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|turn| turn["role"] == "model")
        .flat_map(|turn| turn["parts"].as_array().into_iter().flatten())
        .any(|part| part.get("functionCall").is_some() && !part["thoughtSignature"].is_string());
    if unsigned {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Function call is missing a thought_signature in functionCall parts.",
            json!([]),
        );
    }
    let text = last_user_text(&body);
    let results = trailing_results(&body);
    let mut answer = Answer {
        text: String::new(),
        calls: Vec::new(),
        finish: "STOP",
        end: End::Finish,
        pace: None,
    };
    match model {
        "echo" => answer.text = format!("echo: {text}"),
        "tools" if !results.is_empty() => {
            answer.text = format!("The tool said: result {}", results.join(" "));
        }
        "tools" => {
            answer.text = "Let me check.".to_owned();
            answer.calls = vec![("get_weather".to_owned(), json!({"city": "Paris"}))];
        }
        "agent" => {
            let calls = fake_stream::agent_calls(&text);
            if calls.is_empty() {
                answer.text = format!("echo: {text}");
            } else if !results.is_empty() {
                answer.text = format!("tool said: {}", results.join(" | "));
            } else {
                answer.calls = calls;
            }
        }
        "long" => {
            answer.text = fake_stream::long_text();
            answer.pace = Some(fake_stream::LONG_PACE);
        }
        "length" => {
            answer.text = fake_stream::cut_to_limit(&format!("echo: {text}"));
            answer.finish = "MAX_TOKENS";
        }
        "error-stream" => {
            answer.text = "partial".to_owned();
            answer.end = End::Error;
        }
        "drop-stream" => {
            answer.text = "partial answer".to_owned();
            answer.end = End::Cut;
        }
        "fail-400" => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Invalid value at 'contents': scripted bad request from the fake Gemini API.",
                json!([]),
            );
        }
        "fail-401" => return invalid_key(),
        "fail-429" => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]),
            );
        }
        "fail-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "An internal error has occurred.",
                json!([]),
            );
        }
        "fail-503" => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                json!([]),
            );
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!(
                    "models/{other} is not found for API version v1beta, or is not supported for generateContent."
                ),
                json!([]),
            );
        }
    }
    let prompt = prompt_tokens(&body);
    if stream {
        answer.stream(model, prompt, Arc::clone(&fake.streams))
    } else {
        Json(answer.whole(model, prompt)).into_response()
    }
}

/// How a streamed answer ends.
enum End {
    /// With a finish reason.
    Finish,
    /// With an error chunk.
    Error,
    /// Without either: the body just ends.
    Cut,
}

struct Answer {
    text: String,
    calls: Vec<(String, Value)>,
    finish: &'static str,
    end: End,
    pace: Option<std::time::Duration>,
}

impl Answer {
    fn candidate_tokens(&self) -> u64 {
        word_count(&self.text) + 5 * self.calls.len() as u64
    }

    fn chunk(model: &str, parts: Vec<Value>, finish: Option<&str>, usage: (u64, u64)) -> Value {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = json!(finish);
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": usage.0, "candidatesTokenCount": usage.1,
                "totalTokenCount": usage.0 + usage.1},
            "modelVersion": format!("{model}{MODEL_SUFFIX}"),
            "responseId": RESPONSE_ID
        })
    }

    fn call_part(name: &str, args: &Value) -> Value {
        json!({"functionCall": {"name": name, "args": args}})
    }

    fn whole(&self, model: &str, prompt: u64) -> Value {
        let mut parts = Vec::new();
        if !self.text.is_empty() {
            parts.push(json!({"text": self.text}));
        }
        parts.extend(self.calls.iter().map(|(n, a)| Self::call_part(n, a)));
        Self::chunk(
            model,
            parts,
            Some(self.finish),
            (prompt, self.candidate_tokens()),
        )
    }

    fn stream(&self, model: &str, prompt: u64, streams: Arc<StreamCounters>) -> Response {
        // Each chunk is a whole response holding the next piece, with the counts so far.
        let mut pieces: Vec<Value> = fake_stream::words(&self.text)
            .into_iter()
            .map(|w| json!({"text": w}))
            .collect();
        pieces.extend(self.calls.iter().map(|(n, a)| Self::call_part(n, a)));
        let mut chunks = Vec::new();
        let mut so_far = String::new();
        let mut calls = 0;
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.into_iter().enumerate() {
            if let Some(t) = piece["text"].as_str() {
                so_far.push_str(t);
            } else {
                calls += 1;
            }
            let finish = (i == last && matches!(self.end, End::Finish)).then_some(self.finish);
            let tokens = word_count(&so_far) + 5 * calls;
            chunks.push(Self::chunk(model, vec![piece], finish, (prompt, tokens)));
        }
        if let End::Error = self.end {
            chunks.push(json!({"error": {"code": 503, "status": "UNAVAILABLE",
                "message": "The model is overloaded. Please try again later."}}));
        }
        let frames = chunks
            .iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect();
        fake_stream::sse_response(frames, self.pace, streams)
    }
}
