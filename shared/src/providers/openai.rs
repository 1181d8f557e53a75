//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).
//!
//! The same format is served by OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio, OpenRouter and
//! Groq, so parsing is lenient where those servers differ (missing ids, arguments as objects, usage
//! in every chunk, no `[DONE]`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{
    AssistantMessage, ChatRequest, ChatResponse, Content, ContentPart, FinishReason, Message,
    ToolCall, ToolChoice, ToolDefinition, Usage,
};
use crate::error::{ApiError, ErrorCode, truncate};
use crate::route::{HttpRequest, Method, ProviderEndpoint};
use crate::sse::SseEvent;
use crate::stream::StreamEvent;

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum OutMessage<'a> {
    System {
        content: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    User {
        content: OutContent<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    Assistant {
        // OpenAI wants an explicit null next to tool calls; some servers reject a missing field.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OutToolCall<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(&'a str),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImage<'a> },
}

#[derive(Serialize)]
struct OutImage<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutTool<'a> {
    r#type: &'static str,
    function: &'a ToolDefinition,
}

fn out_message(m: &Message) -> OutMessage<'_> {
    match m {
        Message::System { content, name } => OutMessage::System {
            content,
            name: name.as_deref(),
        },
        Message::User { content, name } => OutMessage::User {
            name: name.as_deref(),
            content: match content {
                Content::Text(t) => OutContent::Text(t),
                Content::Parts(parts) => OutContent::Parts(
                    parts
                        .iter()
                        .map(|p| match p {
                            ContentPart::Text { text } => OutPart::Text { text },
                            ContentPart::ImageUrl { url, detail } => OutPart::ImageUrl {
                                image_url: OutImage {
                                    url,
                                    detail: detail.as_deref(),
                                },
                            },
                        })
                        .collect(),
                ),
            },
        },
        Message::Assistant {
            content,
            tool_calls,
            name,
        } => OutMessage::Assistant {
            name: name.as_deref(),
            content: content.as_deref(),
            tool_calls: tool_calls
                .iter()
                .map(|c| OutToolCall {
                    id: &c.id,
                    r#type: "function",
                    function: OutFunctionCall {
                        name: &c.name,
                        arguments: &c.arguments,
                    },
                })
                .collect(),
        },
        Message::Tool {
            tool_call_id,
            content,
        } => OutMessage::Tool {
            tool_call_id,
            content,
        },
    }
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => Value::from("auto"),
        ToolChoice::None => Value::from("none"),
        ToolChoice::Required => Value::from("required"),
        ToolChoice::Tool { name } => {
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
    }
}

/// Builds `POST {base_url}/chat/completions` for `model`.
pub(crate) fn build_chat(
    endpoint: &ProviderEndpoint,
    model: &str,
    req: &ChatRequest,
    stream: bool,
) -> HttpRequest {
    let body = Request {
        model,
        messages: req.messages.iter().map(out_message).collect(),
        tools: req
            .tools
            .iter()
            .map(|t| OutTool {
                r#type: "function",
                function: t,
            })
            .collect(),
        tool_choice: req.tool_choice.as_ref().map(tool_choice),
        parallel_tool_calls: req.parallel_tool_calls,
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_tokens,
        stop: &req.stop,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if stream {
        headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    }
    if let Some(key) = endpoint.api_key.as_deref().filter(|k| !k.is_empty()) {
        headers.push(("authorization".to_owned(), format!("Bearer {key}")));
    }
    HttpRequest {
        method: Method::Post,
        url: format!(
            "{}/chat/completions",
            endpoint.base_url.trim_end_matches('/')
        ),
        headers,
        // Serializing borrowed strings, numbers and `Value`s cannot fail.
        body: Some(serde_json::to_string(&body).unwrap_or_default()),
    }
}

// ---------------------------------------------------------------------------------------------
// Response

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: InMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
}

#[derive(Deserialize)]
struct InToolCall {
    #[serde(default)]
    id: Option<String>,
    function: InFunction,
}

#[derive(Deserialize)]
struct InFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize, Default)]
struct InUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
}

impl From<InUsage> for Usage {
    fn from(u: InUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u
                .total_tokens
                .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
        }
    }
}

/// Arguments are a JSON string in OpenAI's format; a few servers send an object instead.
fn arguments_text(v: Option<Value>) -> String {
    match v {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => crate::json::text(&other),
    }
}

fn prefixed(provider: &str, model: &str) -> String {
    format!("{provider}/{model}")
}

/// Parses a `chat.completion` object.
pub(crate) fn parse_chat_response(provider: &str, body: &[u8]) -> Result<ChatResponse, ApiError> {
    let resp: Response = crate::json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("upstream sent an unreadable chat completion: {e}"),
        )
    })?;
    let Some(choice) = resp.choices.into_iter().next() else {
        return Err(ApiError::new(
            ErrorCode::UpstreamError,
            "upstream sent a chat completion with no choices",
        ));
    };
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name.unwrap_or_default(),
            arguments: arguments_text(c.function.arguments),
        })
        .collect();
    let finish_reason = match choice.finish_reason.as_deref() {
        Some(r) => FinishReason::from_provider(r),
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    Ok(ChatResponse {
        id: resp.id.unwrap_or_default(),
        model: prefixed(provider, resp.model.as_deref().unwrap_or_default()),
        message: AssistantMessage {
            content: choice.message.content,
            tool_calls,
        },
        finish_reason,
        usage: resp.usage.map(Usage::from),
    })
}

/// Reads the message out of the error shapes OpenAI-compatible servers use:
/// `{"error": {"message"}}`, `{"error": "..."}`, `{"message"}`, `{"detail"}`.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = match crate::json::from_slice(body) {
        Ok(v) => v,
        // Plain-text bodies (proxies, load balancers) are still worth showing, cut short.
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            return (!text.is_empty() && !text.starts_with('<'))
                .then(|| truncate(text, 300).to_owned());
        }
    };
    let pick = |v: &Value| v.as_str().map(str::to_owned);
    v.pointer("/error/message")
        .and_then(pick)
        .or_else(|| v.get("error").and_then(pick))
        .or_else(|| v.get("message").and_then(pick))
        .or_else(|| v.get("detail").and_then(pick))
}

// ---------------------------------------------------------------------------------------------
// Stream

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<InUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<DeltaToolCall>>,
}

#[derive(Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Decodes `chat.completion.chunk` events.
///
/// Tool calls arrive as fragments keyed by `index`; they are complete only when the stream says
/// so, so the assembled calls, the usage (which OpenAI sends after the finish reason) and the
/// finish event are all emitted at `[DONE]`, or at the end of the body if the server omits it.
#[derive(Debug)]
pub struct StreamDecoder {
    provider: String,
    started: bool,
    calls: Vec<(u32, ToolCall)>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
}

impl StreamDecoder {
    /// A decoder for the configured provider `provider`.
    pub fn new(provider: &str) -> Self {
        StreamDecoder {
            provider: provider.to_owned(),
            started: false,
            calls: Vec::new(),
            usage: None,
            finish: None,
        }
    }

    pub(crate) fn on_event(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.complete(out);
            return;
        }
        if data.is_empty() {
            return;
        }
        let chunk: Chunk = match crate::json::from_slice(data.as_bytes()) {
            Ok(c) => c,
            Err(e) => {
                out.push(StreamEvent::Error {
                    error: ApiError::new(
                        ErrorCode::UpstreamError,
                        format!("upstream sent an unreadable stream chunk: {e}"),
                    ),
                });
                return;
            }
        };
        if let Some(err) = chunk.error {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| err.as_str())
                .unwrap_or("upstream reported an error mid-stream");
            out.push(StreamEvent::Error {
                error: ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("upstream failed mid-stream: {}", truncate(message, 500)),
                ),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.unwrap_or_default(),
                model: prefixed(&self.provider, chunk.model.as_deref().unwrap_or_default()),
            });
        }
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::TextDelta { text });
                }
                for (pos, tc) in delta.tool_calls.into_iter().flatten().enumerate() {
                    self.on_tool_call_delta(pos, tc, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(FinishReason::from_provider(&reason));
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.into());
        }
    }

    fn on_tool_call_delta(&mut self, pos: usize, tc: DeltaToolCall, out: &mut Vec<StreamEvent>) {
        let index = tc.index.unwrap_or(pos as u32);
        let (name, arguments) = match tc.function {
            Some(f) => (f.name, arguments_text(f.arguments)),
            None => (None, String::new()),
        };
        let slot = match self.calls.iter().position(|(i, _)| *i == index) {
            Some(s) => s,
            None => {
                self.calls.push((
                    index,
                    ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    },
                ));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[slot].1;
        let new_id = tc.id.filter(|id| !id.is_empty() && call.id.is_empty());
        if let Some(id) = &new_id {
            call.id.clone_from(id);
        }
        let new_name = name.filter(|n| !n.is_empty() && call.name.is_empty());
        if let Some(n) = &new_name {
            call.name.clone_from(n);
        }
        call.arguments.push_str(&arguments);
        out.push(StreamEvent::ToolCallDelta {
            index,
            id: new_id,
            name: new_name,
            arguments,
        });
    }

    fn complete(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: String::new(),
                model: prefixed(&self.provider, ""),
            });
        }
        let mut calls = std::mem::take(&mut self.calls);
        crate::chat::sort_by_index(&mut calls);
        let had_calls = !calls.is_empty();
        for (index, mut call) in calls {
            if call.id.is_empty() {
                call.id = format!("call_{index}");
            }
            out.push(StreamEvent::ToolCall { index, call });
        }
        if let Some(usage) = self.usage.take() {
            out.push(StreamEvent::Usage { usage });
        }
        let finish_reason = self.finish.take().unwrap_or(if had_calls {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        });
        out.push(StreamEvent::Finish { finish_reason });
    }

    pub(crate) fn on_end(&mut self, out: &mut Vec<StreamEvent>) {
        // Some servers end the body right after the finish reason, without `[DONE]`: the answer is
        // complete. Without a finish reason the stream was cut, which the caller reports.
        if self.finish.is_some() {
            self.complete(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolChoice;
    use crate::route::WireFormat;
    use crate::stream::{ChatAccumulator, ChatStreamDecoder};
    use crate::{ErrorCode, ProviderKind};
    use serde_json::json;

    fn endpoint(key: Option<&str>) -> ProviderEndpoint {
        ProviderEndpoint {
            name: "local".into(),
            kind: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:9000/v1/".into(),
            api_key: key.map(str::to_owned),
        }
    }

    fn body_json(req: &HttpRequest) -> Value {
        serde_json::from_str(req.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn request_translation_covers_every_message_kind() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "local/llama",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "url": "https://x/y.png", "detail": "low"}
                ]},
                {"role": "user", "content": "me too", "name": "bob"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f", "arguments": "{\"a\":1}"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}
            ],
            "tools": [{"name": "f", "description": "does f", "parameters": {"type": "object"}}],
            "tool_choice": {"tool": {"name": "f"}},
            "temperature": 0.5,
            "max_tokens": 20,
            "stop": ["\n"]
        }))
        .unwrap();
        let http = build_chat(&endpoint(Some("sk-1")), "llama", &req, false);
        assert_eq!(http.url, "http://127.0.0.1:9000/v1/chat/completions");
        assert!(
            http.headers
                .contains(&("authorization".into(), "Bearer sk-1".into()))
        );
        assert_eq!(
            body_json(&http),
            json!({
                "model": "llama",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
                    ]},
                    {"role": "user", "content": "me too", "name": "bob"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "done"}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "f", "description": "does f", "parameters": {"type": "object"}
                }}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "temperature": 0.5,
                "max_tokens": 20,
                "stop": ["\n"]
            })
        );
    }

    #[test]
    fn streaming_requests_ask_for_usage_and_send_no_empty_key() {
        let req = ChatRequest {
            model: "local/m".into(),
            messages: vec![Message::user("hi")],
            tool_choice: Some(ToolChoice::Auto),
            ..Default::default()
        };
        let http = build_chat(&endpoint(Some("")), "m", &req, true);
        let body = body_json(&http);
        assert_eq!(body["stream"], json!(true));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["tool_choice"], json!("auto"));
        assert!(!http.headers.iter().any(|(k, _)| k == "authorization"));
    }

    #[test]
    fn responses_parse_with_tool_calls_and_usage() {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "llama",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"type": "function", "function": {"name": "g", "arguments": {"x": 1}}}
                ]
            }}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}
        });
        let r = parse_chat_response("local", body.to_string().as_bytes()).unwrap();
        assert_eq!(r.model, "local/llama");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.message.tool_calls[1].id, "call_1");
        assert_eq!(r.message.tool_calls[1].arguments, r#"{"x":1}"#);
        assert_eq!(r.usage.unwrap().total_tokens, 7);
    }

    #[test]
    fn unreadable_or_empty_responses_are_upstream_errors() {
        for body in [&b"not json"[..], br#"{"choices": []}"#] {
            let e = parse_chat_response("p", body).unwrap_err();
            assert_eq!(e.code, ErrorCode::UpstreamError);
        }
    }

    #[test]
    fn error_messages_are_found_in_every_common_shape() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad model"}}"#).as_deref(),
            Some("bad model")
        );
        assert_eq!(
            error_message(br#"{"error":"oops"}"#).as_deref(),
            Some("oops")
        );
        assert_eq!(
            error_message(br#"{"detail":"nope"}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(
            error_message(b"Bad Gateway").as_deref(),
            Some("Bad Gateway")
        );
        assert_eq!(error_message(b"<html>502</html>"), None);
    }

    fn chunk(v: Value) -> String {
        format!("data: {v}\n\n")
    }

    fn decode(text: &str) -> Vec<StreamEvent> {
        let mut d = ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::OpenAi), Some("p"));
        let mut out = d.push(text.as_bytes());
        out.extend(d.finish());
        out
    }

    #[test]
    fn text_stream_with_usage_after_finish() {
        let text = [
            chunk(
                json!({"id":"x","model":"m","choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}),
            ),
            chunk(json!({"id":"x","model":"m","choices":[{"delta":{"content":"Hel"}}]})),
            chunk(json!({"id":"x","model":"m","choices":[{"delta":{"content":"lo"}}]})),
            chunk(json!({"id":"x","model":"m","choices":[{"delta":{},"finish_reason":"stop"}]})),
            chunk(
                json!({"id":"x","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}),
            ),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let events = decode(&text);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: "x".into(),
                    model: "p/m".into()
                },
                StreamEvent::TextDelta { text: "Hel".into() },
                StreamEvent::TextDelta { text: "lo".into() },
                StreamEvent::Usage {
                    usage: Usage {
                        prompt_tokens: 1,
                        completion_tokens: 2,
                        total_tokens: 3
                    }
                },
                StreamEvent::Finish {
                    finish_reason: FinishReason::Stop
                },
            ]
        );
    }

    #[test]
    fn tool_call_fragments_are_assembled() {
        let text = [
            chunk(json!({"choices":[{"delta":{"tool_calls":[
                {"index":0,"id":"call_1","type":"function","function":{"name":"lookup","arguments":""}}
            ]}}]})),
            chunk(
                json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}}]}),
            ),
            chunk(json!({"choices":[{"delta":{"tool_calls":[
                {"index":1,"id":"call_2","function":{"name":"other","arguments":"{}"}}
            ]}}]})),
            chunk(
                json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]}}]}),
            ),
            chunk(json!({"choices":[{"delta":{},"finish_reason":"tool_calls"}]})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let events = decode(&text);
        let mut acc = ChatAccumulator::new();
        events.iter().for_each(|e| acc.push(e));
        let r = acc.result().unwrap();
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            r.message.tool_calls,
            vec![
                ToolCall {
                    id: "call_1".into(),
                    name: "lookup".into(),
                    arguments: r#"{"q":"x"}"#.into()
                },
                ToolCall {
                    id: "call_2".into(),
                    name: "other".into(),
                    arguments: "{}".into()
                },
            ]
        );
        let deltas: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolCallDelta { .. }))
            .collect();
        assert_eq!(deltas.len(), 4);
        assert!(matches!(
            deltas[0],
            StreamEvent::ToolCallDelta {
                index: 0,
                id: Some(_),
                name: Some(_),
                ..
            }
        ));
        assert!(matches!(
            deltas[1],
            StreamEvent::ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                ..
            }
        ));
    }

    #[test]
    fn a_stream_without_done_but_with_a_finish_reason_is_complete() {
        let text = chunk(json!({"choices":[{"delta":{"content":"a"},"finish_reason":"length"}]}));
        let events = decode(&text);
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish {
                finish_reason: FinishReason::Length
            })
        );
    }

    #[test]
    fn a_cut_stream_is_interrupted() {
        let text = chunk(json!({"choices":[{"delta":{"content":"a"}}]}));
        let events = decode(&text);
        assert!(matches!(
            events.last(),
            Some(StreamEvent::Error { error }) if error.code == ErrorCode::StreamInterrupted
        ));
    }

    #[test]
    fn mid_stream_errors_and_garbage_end_the_stream() {
        let events = decode(&chunk(json!({"error": {"message": "overloaded"}})));
        assert!(matches!(
            &events[..],
            [StreamEvent::Error { error }] if error.code == ErrorCode::UpstreamError && error.message.contains("overloaded")
        ));
        let events = decode("data: {not json\n\n");
        assert!(matches!(&events[..], [StreamEvent::Error { .. }]));
    }
}
