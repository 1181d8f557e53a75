//! The mock's OpenAI-compatible face: `POST /chat/completions` and `GET /models`, relative to the
//! base URL's `/v1`. The proxy reaches it in process, through the same route table, decoder and
//! stream relay as a remote provider, and may also serve it over HTTP for browsers in direct mode.
//!
//! This is the server side of the OpenAI format, which `shared` (a client) does not have; being
//! written separately, it also checks `shared`'s reading of the format rather than mirroring it.
//! Errors have OpenAI's shape, since the clients of this face expect OpenAI.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::MockProvider;
use super::script::{Answer, Conversation, Turn};

/// `created` of every answer: a mock's answers are the same every time, to the byte.
const CREATED: u64 = 1_700_000_000;
/// Longest piece of tool-call arguments in one stream chunk (OpenAI sends a few tokens a chunk).
const ARGUMENT_PIECE_CHARS: usize = 16;

/// The routes, relative to the base URL's `/v1`, for `mock`.
pub(crate) fn router<S>(mock: Arc<MockProvider>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Own fallbacks, so that a wrong path or method under the mock's prefix also gets an
    // OpenAI-shaped error.
    Router::new()
        .route(
            "/chat/completions",
            post(chat_completions).fallback(method_not_allowed),
        )
        .route("/models", get(models).fallback(method_not_allowed))
        .fallback(unknown_route)
        .with_state(mock)
}

/// The subset of a chat-completions request the mock reads; other fields (temperature, seed...)
/// are accepted and ignored, as a real model may ignore them.
#[derive(Deserialize)]
struct WireRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<WireStreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    // A string, an array of parts, or null.
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireTool {
    function: WireFunctionName,
}

#[derive(Deserialize)]
struct WireFunctionName {
    name: String,
}

#[derive(Deserialize)]
struct WireStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

async fn chat_completions(
    State(mock): State<Arc<MockProvider>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return openai_error(
                rejection.status(),
                &rejection.body_text(),
                "invalid_request_error",
                None,
            );
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request: {e}"),
                "invalid_request_error",
                None,
            );
        }
    };
    // Ids follow from the conversation, so the same question gets the same answer to the byte.
    let digest = fnv1a(&[
        value.get("model").unwrap_or(&Value::Null).to_string(),
        value.get("messages").unwrap_or(&Value::Null).to_string(),
        value.get("tools").unwrap_or(&Value::Null).to_string(),
    ]);
    let request: WireRequest = match serde_json::from_value(value) {
        Ok(request) => request,
        Err(e) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid chat completion request: {e}"),
                "invalid_request_error",
                None,
            );
        }
    };
    if request.model.is_empty() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "You must provide a model parameter.",
            "invalid_request_error",
            None,
        );
    }
    if request.messages.is_empty() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "invalid_request_error",
            Some("empty_array"),
        );
    }
    let answer = mock.script().answer(&conversation(&request));
    let stream = request.stream.unwrap_or(false);
    tracing::debug!(provider = %mock.name(), rule = ?answer.rule, stream, "mock answered");
    let reply = Reply::new(&request, answer, digest);
    if stream {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let delay = Duration::from_millis(mock.script().chunk_delay_ms);
        sse_response(reply.chunks(include_usage), delay)
    } else {
        axum::Json(reply.completion()).into_response()
    }
}

fn conversation(request: &WireRequest) -> Conversation {
    let turns = request
        .messages
        .iter()
        .map(|m| match m.role.as_str() {
            "user" => Turn::User(content_text(&m.content)),
            "assistant" => Turn::Assistant(
                m.tool_calls
                    .iter()
                    .flatten()
                    .map(|c| {
                        (
                            c.id.clone().unwrap_or_default(),
                            c.function.name.clone().unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            "tool" => Turn::Tool {
                call_id: m.tool_call_id.clone().unwrap_or_default(),
                content: content_text(&m.content),
            },
            _ => Turn::Other,
        })
        .collect();
    let tools_allowed = request.tool_choice.as_ref().and_then(Value::as_str) != Some("none");
    let tools = request
        .tools
        .iter()
        .flatten()
        .filter(|_| tools_allowed)
        .map(|t| t.function.name.clone())
        .collect();
    Conversation { turns, tools }
}

/// The text of a `content`: a string, or the text parts of an array joined with spaces.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Arguments are a JSON string in OpenAI's format; some clients send an object.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// "Tokens" are words: deterministic, and easy to count by hand in a test.
fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The answer ready to be written, as one object or as stream chunks.
struct Reply {
    id: String,
    model: String,
    text: Option<String>,
    /// `(id, name, arguments)`.
    calls: Vec<(String, String, String)>,
    finish_reason: &'static str,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Reply {
    fn new(request: &WireRequest, answer: Answer, digest: u64) -> Reply {
        let prompt_tokens = request
            .messages
            .iter()
            .map(|m| {
                words(&content_text(&m.content))
                    + m.tool_calls
                        .iter()
                        .flatten()
                        .map(|c| words(&arguments_text(&c.function.arguments)))
                        .sum::<u64>()
            })
            .sum();
        let mut finish_reason = if answer.calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        let mut text = answer.text;
        let limit = request.max_completion_tokens.or(request.max_tokens);
        if let (Some(limit), Some(full)) = (limit, text.as_deref())
            && words(full) > u64::from(limit)
        {
            let kept: String = split_words(full).into_iter().take(limit as usize).collect();
            text = Some(kept.trim_end().to_owned());
            finish_reason = "length";
        }
        let calls: Vec<(String, String, String)> = answer
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    format!("call_{:012x}_{i}", digest >> 16),
                    c.name,
                    c.arguments,
                )
            })
            .collect();
        let completion_tokens =
            text.as_deref().map_or(0, words) + calls.iter().map(|(_, _, a)| words(a)).sum::<u64>();
        Reply {
            id: format!("chatcmpl-mock-{digest:016x}"),
            model: request.model.clone(),
            text,
            calls,
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

    /// A `chat.completion` object.
    fn completion(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.text});
        if !self.calls.is_empty() {
            message["tool_calls"] = self
                .calls
                .iter()
                .map(|(id, name, arguments)| {
                    json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    })
                })
                .collect();
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage(),
        })
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": finish_reason}]),
            None,
        )
    }

    /// The SSE events of a streamed answer, as OpenAI writes them: the role, the text a word at
    /// a time, each tool call named and then its arguments in pieces, the finish reason, the
    /// usage (when asked for) and `[DONE]`.
    fn chunks(&self, include_usage: bool) -> Vec<Bytes> {
        let mut chunks = vec![self.delta(json!({"role": "assistant", "content": ""}), None)];
        if let Some(text) = &self.text {
            for word in split_words(text) {
                chunks.push(self.delta(json!({"content": word}), None));
            }
        }
        for (index, (id, name, arguments)) in self.calls.iter().enumerate() {
            chunks.push(self.delta(
                json!({"tool_calls": [{
                    "index": index,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]}),
                None,
            ));
            for piece in split_chars(arguments, ARGUMENT_PIECE_CHARS) {
                chunks.push(self.delta(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
        }
        chunks.push(self.delta(json!({}), Some(self.finish_reason)));
        if include_usage {
            chunks.push(self.chunk(json!([]), Some(self.usage())));
        }
        chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
        chunks
    }
}

/// Splits text into "a word and the whitespace after it", so that the pieces join back into
/// exactly the text.
fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_space_after_word = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space_after_word |= seen_word;
        } else {
            if in_space_after_word {
                pieces.push(&text[start..i]);
                start = i;
                in_space_after_word = false;
            }
            seen_word = true;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits text into pieces of at most `max` characters.
fn split_chars(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    pieces
}

/// A `text/event-stream` response writing `chunks`, `delay` apart.
fn sse_response(chunks: Vec<Bytes>, delay: Duration) -> Response {
    let body = futures::stream::unfold(
        (chunks.into_iter(), true),
        move |(mut chunks, first)| async move {
            let chunk = chunks.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::convert::Infallible>(chunk), (chunks, false)))
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

async fn models(State(mock): State<Arc<MockProvider>>) -> Response {
    let data: Vec<Value> = mock
        .models()
        .iter()
        .map(
            |id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "switchyard"}),
        )
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn unknown_route(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {})", uri.path()),
        "invalid_request_error",
        None,
    )
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    openai_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{} does not accept {method}", uri.path()),
        "invalid_request_error",
        None,
    )
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
fn openai_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}

/// FNV-1a over the parts (each followed by a 0 byte): small, stable across Rust versions and
/// platforms, unlike the standard library's hasher.
fn fnv1a(parts: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_pieces_join_back_into_the_text() {
        for text in ["", "one", "  two words ", "a\n\nb c", "héllo wörld"] {
            assert_eq!(split_words(text).concat(), text);
        }
        assert_eq!(split_words("a b  c"), ["a ", "b  ", "c"]);
        let args = r#"{"expression":"12*(3+4)","ü":"é"}"#;
        let pieces = split_chars(args, 5);
        assert_eq!(pieces.concat(), args);
        assert!(pieces.iter().all(|p| p.chars().count() <= 5));
        assert!(split_chars("", 5).is_empty());
    }

    #[test]
    fn content_text_reads_strings_and_text_parts() {
        assert_eq!(content_text(&json!("hi")), "hi");
        assert_eq!(
            content_text(&json!([
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "b"}
            ])),
            "a b"
        );
        assert_eq!(content_text(&Value::Null), "");
    }

    #[test]
    fn the_digest_is_stable() {
        // Pinned: ids must not change between builds, platforms or Rust versions.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&["a".into()]), fnv1a(&["a".into()]));
        assert_ne!(
            fnv1a(&["ab".into(), "".into()]),
            fnv1a(&["a".into(), "b".into()])
        );
    }
}
