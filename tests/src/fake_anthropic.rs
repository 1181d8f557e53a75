//! A deterministic server of Anthropic's Messages API (`POST /v1/messages`), the Anthropic
//! counterpart of [`crate::fake_llm`]: scripted models, the headers Anthropic requires, its
//! error shapes (529 `overloaded_error` included) and its stream events. Test equipment only;
//! it listens on loopback.
//!
//! Models: `echo` (answers `echo: <last user text>`), `tools` (asks for `get_weather` with the
//! city `Paris`, then answers the tool result back), `fail-429` (with `Retry-After: 7`),
//! `fail-529` (overloaded), `error-stream` (an `error` event after some text), and any other
//! name is a 404 `not_found_error`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Fixed message id, for assertions.
pub const MESSAGE_ID: &str = "msg_fake";
/// The model name answers carry for the model asked for.
pub const MODEL_PREFIX: &str = "claude-fake-";

/// What the server has seen last.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Number of `POST /v1/messages` requests.
    pub requests: u64,
    /// The headers of the last request.
    pub last_headers: Vec<(String, String)>,
    /// The JSON body of the last request.
    pub last_body: Option<Value>,
}

/// A running fake; dropping it stops the server.
pub struct FakeAnthropic {
    addr: SocketAddr,
    observed: Arc<Mutex<Observed>>,
    server: JoinHandle<()>,
}

impl FakeAnthropic {
    /// Serves on `127.0.0.1:0`, answering only requests with `x-api-key: <key>`.
    pub async fn start(key: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding 127.0.0.1:0 for the fake Anthropic API")?;
        let addr = listener.local_addr()?;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let state = Arc::new(Fake {
            key: key.to_owned(),
            observed: Arc::clone(&observed),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(state);
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake Anthropic API stopped");
            }
        });
        Ok(FakeAnthropic {
            addr,
            observed,
            server,
        })
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// What the server has seen.
    pub fn observed(&self) -> Observed {
        self.observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
    let answer = match model.as_str() {
        "echo" => Answer::text(format!("echo: {text}")),
        "tools" if text.starts_with("result ") => Answer::text(format!("The tool said: {text}")),
        "tools" => Answer {
            text: "Let me check.".to_owned(),
            tool: Some(("toolu_fake_1", "get_weather", json!({"city": "Paris"}))),
            error_after_text: false,
        },
        "error-stream" => Answer {
            text: "partial".to_owned(),
            tool: None,
            error_after_text: true,
        },
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
    };
    let input_tokens = text.split_whitespace().count() as u64 + 3;
    if stream {
        answer.stream(&model, input_tokens)
    } else {
        Json(answer.message(&model, input_tokens)).into_response()
    }
}

struct Answer {
    text: String,
    tool: Option<(&'static str, &'static str, Value)>,
    error_after_text: bool,
}

impl Answer {
    fn text(text: String) -> Self {
        Answer {
            text,
            tool: None,
            error_after_text: false,
        }
    }

    fn output_tokens(&self) -> u64 {
        self.text.split_whitespace().count() as u64 + u64::from(self.tool.is_some()) * 5
    }

    fn stop_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    fn message(&self, model: &str, input_tokens: u64) -> Value {
        let mut content = vec![json!({"type": "text", "text": self.text})];
        if let Some((id, name, input)) = &self.tool {
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

    fn stream(&self, model: &str, input_tokens: u64) -> Response {
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": MESSAGE_ID, "type": "message", "role": "assistant",
                "model": format!("{MODEL_PREFIX}{model}"), "content": [], "stop_reason": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
        ];
        for word in self.text.split_inclusive(' ') {
            events.push(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": word}}));
        }
        if self.error_after_text {
            events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        } else {
            events.push(json!({"type": "content_block_stop", "index": 0}));
            if let Some((id, name, input)) = &self.tool {
                let json = input.to_string();
                let (first, second) = json.split_at(json.len() / 2);
                events.push(json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
                for part in [first, second] {
                    events.push(json!({"type": "content_block_delta", "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": part}}));
                }
                events.push(json!({"type": "content_block_stop", "index": 1}));
            }
            events.push(json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                "usage": {"output_tokens": self.output_tokens()}}));
            events.push(json!({"type": "message_stop"}));
        }
        let text: String = events
            .iter()
            .map(|e| {
                format!(
                    "event: {}\ndata: {e}\n\n",
                    e["type"].as_str().unwrap_or_default()
                )
            })
            .collect();
        ([(CONTENT_TYPE, "text/event-stream")], Body::from(text)).into_response()
    }
}
