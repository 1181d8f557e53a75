//! A deterministic server of Anthropic's Messages API (`POST /v1/messages`), the Anthropic
//! counterpart of [`crate::fake_llm`]: scripted models, the headers Anthropic requires, its
//! error shapes (529 `overloaded_error` included) and its stream events. Test equipment only;
//! it listens on loopback.
//!
//! Models: `echo` (answers `echo: <last user text>`), `tools` (asks for `get_weather` with the
//! city `Paris`, then answers the tool result back), `agent` (the script of
//! [`crate::fake_stream::agent_calls`]), `long` (200 words, paced), `length` (stops for
//! `max_tokens`), `fail-401` (`authentication_error`), `fail-429` (with `Retry-After: 7`),
//! `fail-500` (`api_error`), `fail-529` (overloaded), `error-stream` (an `error` event after
//! some text), `drop-stream` (ends without `message_stop`), and any other name is a 404
//! `not_found_error`. CORS is open as Anthropic's is for pages that send
//! `anthropic-dangerous-direct-browser-access`, and `GET /_observed` reports the counters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::fake_stream::{self, StreamCounters, StreamCounts};

/// Fixed message id, for assertions.
pub const MESSAGE_ID: &str = "msg_fake";
/// The model name answers carry for the model asked for.
pub const MODEL_PREFIX: &str = "claude-fake-";

/// What the server has seen last.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    /// Number of `POST /v1/messages` requests.
    pub requests: u64,
    /// The headers of the last request.
    pub last_headers: Vec<(String, String)>,
    /// The JSON body of the last request.
    pub last_body: Option<Value>,
    /// Stream counts.
    #[serde(flatten)]
    pub streams: StreamCounts,
}

/// A running fake; dropping it stops the server.
pub struct FakeAnthropic {
    addr: SocketAddr,
    observed: Arc<Mutex<Observed>>,
    streams: Arc<StreamCounters>,
    server: JoinHandle<()>,
}

impl FakeAnthropic {
    /// Serves on `127.0.0.1:0`, answering only requests with `x-api-key: <key>`.
    pub async fn start(key: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding 127.0.0.1:0 for the fake Anthropic API")?;
        Self::start_on(key, listener).await
    }

    /// Serves on an already-bound loopback listener.
    pub async fn start_on(key: &str, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the fake Anthropic API only listens on loopback, refusing {addr}"
        );
        let observed = Arc::new(Mutex::new(Observed::default()));
        let streams = Arc::new(StreamCounters::default());
        let state = Arc::new(Fake {
            key: key.to_owned(),
            observed: Arc::clone(&observed),
            streams: Arc::clone(&streams),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/_observed", get(observed_route))
            .layer(fake_stream::browser_cors(&[
                "x-api-key",
                "anthropic-version",
                "anthropic-dangerous-direct-browser-access",
            ]))
            .with_state(state);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake Anthropic API stopped");
            }
        });
        Ok(FakeAnthropic {
            addr,
            observed,
            streams,
            server,
        })
    }

    /// The socket address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// What the server has seen.
    pub fn observed(&self) -> Observed {
        snapshot(&self.observed, &self.streams)
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Fake {
    key: String,
    observed: Arc<Mutex<Observed>>,
    streams: Arc<StreamCounters>,
}

fn snapshot(observed: &Mutex<Observed>, streams: &StreamCounters) -> Observed {
    let mut observed = observed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    observed.streams = streams.snapshot();
    observed
}

async fn observed_route(State(fake): State<Arc<Fake>>) -> Json<Observed> {
    Json(snapshot(&fake.observed, &fake.streams))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// The text of the last user turn, from a string or text blocks; a turn that carries tool
/// results answers with their contents.
fn last_user_text(body: &Value) -> String {
    let Some(turn) = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
    else {
        return String::new();
    };
    match &turn["content"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b["type"].as_str() {
                Some("text") => b["text"].as_str().map(str::to_owned),
                Some("tool_result") => b["content"].as_str().map(|c| format!("result {c}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn messages(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    {
        let mut observed = fake.observed.lock().unwrap_or_else(PoisonError::into_inner);
        observed.requests += 1;
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
    if headers.get("x-api-key").map(HeaderValue::as_bytes) != Some(fake.key.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let Some(body) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the body is not JSON",
        );
    };
    if body["max_tokens"].as_u64().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let text = last_user_text(&body);
    let mut answer = Answer::text(format!("echo: {text}"));
    match model.as_str() {
        "echo" => {}
        "tools" if text.starts_with("result ") => {
            answer = Answer::text(format!("The tool said: {text}"));
        }
        "tools" => {
            answer.text = "Let me check.".to_owned();
            answer.calls = vec![(
                "toolu_fake_1".to_owned(),
                "get_weather".to_owned(),
                json!({"city": "Paris"}),
            )];
        }
        "agent" => {
            let results = trailing_results(&body);
            let calls = fake_stream::agent_calls(&instructions(&body));
            if !calls.is_empty() && !results.is_empty() {
                answer = Answer::text(format!("tool said: {}", results.join(" | ")));
            } else if !calls.is_empty() {
                answer.text.clear();
                answer.calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, input))| (format!("toolu_fake_{}", i + 1), name, input))
                    .collect();
            }
        }
        "long" => {
            answer = Answer::text(fake_stream::long_text());
            answer.pace = Some(fake_stream::LONG_PACE);
        }
        "length" => {
            answer = Answer::text(fake_stream::cut_to_limit(&answer.text));
            answer.stop_reason = "max_tokens";
        }
        "error-stream" => {
            answer = Answer::text("partial".to_owned());
            answer.end = End::Error;
        }
        "drop-stream" => {
            answer = Answer::text("partial answer".to_owned());
            answer.end = End::Cut;
        }
        "fail-401" => {
            return error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
            );
        }
        "fail-429" => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("7"));
            return response;
        }
        "fail-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "Internal server error",
            );
        }
        "fail-529" => {
            return error(
                // Anthropic's own status for an overloaded API.
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "overloaded_error",
                "Overloaded",
            );
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("model: {other}"),
            );
        }
    }
    let input_tokens = text.split_whitespace().count() as u64 + 3;
    if stream {
        answer.stream(&model, input_tokens, Arc::clone(&fake.streams))
    } else {
        Json(answer.message(&model, input_tokens)).into_response()
    }
}

/// The text of the last user turn that has any (the `agent` script's instructions).
fn instructions(body: &Value) -> String {
    let turns = body["messages"].as_array().into_iter().flatten().rev();
    for turn in turns.filter(|m| m["role"] == "user") {
        match &turn["content"] {
            Value::String(text) => return text.clone(),
            Value::Array(blocks) => {
                let texts: Vec<&str> = blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect();
                if !texts.is_empty() {
                    return texts.join(" ");
                }
            }
            _ => {}
        }
    }
    String::new()
}

/// The contents of the tool results the request ends with.
fn trailing_results(body: &Value) -> Vec<String> {
    let Some(last) = body["messages"].as_array().and_then(|m| m.last()) else {
        return Vec::new();
    };
    last["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .filter_map(|b| b["content"].as_str().map(str::to_owned))
        .collect()
}

/// How a streamed answer ends.
enum End {
    /// With `message_delta` and `message_stop`.
    Stop,
    /// With an `error` event.
    Error,
    /// Without either: the body just ends.
    Cut,
}

struct Answer {
    text: String,
    calls: Vec<(String, String, Value)>,
    stop_reason: &'static str,
    end: End,
    pace: Option<std::time::Duration>,
}

impl Answer {
    fn text(text: String) -> Self {
        Answer {
            text,
            calls: Vec::new(),
            stop_reason: "end_turn",
            end: End::Stop,
            pace: None,
        }
    }

    fn output_tokens(&self) -> u64 {
        self.text.split_whitespace().count() as u64 + self.calls.len() as u64 * 5
    }

    fn stop_reason(&self) -> &'static str {
        if self.calls.is_empty() {
            self.stop_reason
        } else {
            "tool_use"
        }
    }

    fn message(&self, model: &str, input_tokens: u64) -> Value {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(json!({"type": "text", "text": self.text}));
        }
        for (id, name, input) in &self.calls {
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        json!({
            "id": MESSAGE_ID, "type": "message", "role": "assistant",
            "model": format!("{MODEL_PREFIX}{model}"),
            "content": content,
            "stop_reason": self.stop_reason(), "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": self.output_tokens()}
        })
    }

    fn stream(&self, model: &str, input_tokens: u64, streams: Arc<StreamCounters>) -> Response {
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": MESSAGE_ID, "type": "message", "role": "assistant",
                "model": format!("{MODEL_PREFIX}{model}"), "content": [], "stop_reason": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
        ];
        for word in fake_stream::words(&self.text) {
            events.push(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": word}}));
        }
        match self.end {
            End::Error => events.push(
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            End::Cut => {}
            End::Stop => {
                events.push(json!({"type": "content_block_stop", "index": 0}));
                for (i, (id, name, input)) in self.calls.iter().enumerate() {
                    let index = i + 1;
                    let json = input.to_string();
                    let (first, second) = json.split_at(json.len() / 2);
                    events.push(json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
                    for part in [first, second] {
                        events.push(json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": part}}));
                    }
                    events.push(json!({"type": "content_block_stop", "index": index}));
                }
                events.push(json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                    "usage": {"output_tokens": self.output_tokens()}}));
                events.push(json!({"type": "message_stop"}));
            }
        }
        let frames = events
            .iter()
            .map(|e| {
                format!(
                    "event: {}\ndata: {e}\n\n",
                    e["type"].as_str().unwrap_or_default()
                )
            })
            .collect();
        fake_stream::sse_response(frames, self.pace, streams)
    }
}
