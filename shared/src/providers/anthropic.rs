//! Anthropic's Messages API (`POST {base_url}/messages`).
//!
//! The normalized conversation maps onto Anthropic's with a few reshapes: system messages go to
//! the top-level `system`; tool calls and tool results are content blocks (`tool_use`,
//! `tool_result`), results travelling in user turns; consecutive turns of one role are merged,
//! as the API asks for alternating roles. Parameters Anthropic has no equivalent for are refused
//! by name rather than dropped.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{
    AssistantMessage, ChatRequest, ChatResponse, Content, ContentPart, FinishReason, Message,
    ToolCall, ToolChoice, Usage,
};
use crate::error::{ApiError, ErrorCode, truncate};
use crate::route::{HttpRequest, Method, ProviderEndpoint};
use crate::sse::SseEvent;
use crate::stream::StreamEvent;

/// The API version every request names.
const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; this is sent when a request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Vec<OutBlock<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct OutTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
}

fn unsupported(param: &str) -> ApiError {
    ApiError::bad_request(format!(
        "`{param}` has no equivalent in Anthropic's API; leave it out for this provider"
    ))
}

fn image(url: &str) -> Result<ImageSource<'_>, ApiError> {
    match url.strip_prefix("data:") {
        Some(rest) => {
            let (media_type, data) = rest
                .split_once(";base64,")
                .ok_or_else(|| ApiError::bad_request("an image data URL must be base64"))?;
            Ok(ImageSource::Base64 { media_type, data })
        }
        None => Ok(ImageSource::Url { url }),
    }
}

/// Anthropic takes a tool call's input as an object; the normalized call carries JSON text.
fn tool_input(call: &ToolCall) -> Result<Value, ApiError> {
    if call.arguments.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match crate::json::from_slice::<Value>(call.arguments.as_bytes()) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ApiError::bad_request(format!(
            "the arguments of tool call {:?} must be a JSON object for Anthropic",
            call.id
        ))),
    }
}

/// The turns in Anthropic's shape, with the system text apart.
fn conversation(messages: &[Message]) -> Result<(Option<String>, Vec<OutMessage<'_>>), ApiError> {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<OutMessage<'_>> = Vec::new();
    for message in messages {
        let (role, blocks) = match message {
            Message::System { content, .. } => {
                system.push(content);
                continue;
            }
            Message::User { content, .. } => (
                "user",
                match content {
                    Content::Text(text) => vec![OutBlock::Text { text }],
                    Content::Parts(parts) => parts
                        .iter()
                        .map(|part| match part {
                            ContentPart::Text { text } => Ok(OutBlock::Text { text }),
                            ContentPart::ImageUrl { url, .. } => Ok(OutBlock::Image {
                                source: image(url)?,
                            }),
                        })
                        .collect::<Result<_, ApiError>>()?,
                },
            ),
            Message::Assistant {
                content,
                tool_calls,
                ..
            } => {
                let mut blocks: Vec<OutBlock<'_>> = content
                    .as_deref()
                    .filter(|text| !text.is_empty())
                    .map(|text| OutBlock::Text { text })
                    .into_iter()
                    .collect();
                for call in tool_calls {
                    blocks.push(OutBlock::ToolUse {
                        id: &call.id,
                        name: &call.name,
                        input: tool_input(call)?,
                    });
                }
                ("assistant", blocks)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => (
                "user",
                vec![OutBlock::ToolResult {
                    tool_use_id: tool_call_id,
                    content,
                }],
            ),
        };
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(OutMessage {
                role,
                content: blocks,
            }),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, turns))
}

fn tool_choice(choice: Option<&ToolChoice>, parallel: Option<bool>) -> Option<Value> {
    let mut value = match choice {
        None if parallel != Some(false) => return None,
        None | Some(ToolChoice::Auto) => serde_json::json!({"type": "auto"}),
        Some(ToolChoice::None) => serde_json::json!({"type": "none"}),
        Some(ToolChoice::Required) => serde_json::json!({"type": "any"}),
        Some(ToolChoice::Tool { name }) => serde_json::json!({"type": "tool", "name": name}),
    };
    if parallel == Some(false) && !matches!(choice, Some(ToolChoice::None)) {
        value["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Some(value)
}

/// Builds `POST {base_url}/messages` for `model`.
pub(crate) fn build_chat(
    endpoint: &ProviderEndpoint,
    model: &str,
    req: &ChatRequest,
    stream: bool,
) -> Result<HttpRequest, ApiError> {
    if req.seed.is_some() {
        return Err(unsupported("seed"));
    }
    if req.presence_penalty.is_some() {
        return Err(unsupported("presence_penalty"));
    }
    if req.frequency_penalty.is_some() {
        return Err(unsupported("frequency_penalty"));
    }
    let (system, messages) = conversation(&req.messages)?;
    let body = Request {
        model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages,
        tools: req
            .tools
            .iter()
            .map(|tool| OutTool {
                name: &tool.name,
                description: tool.description.as_deref(),
                input_schema: &tool.parameters,
            })
            .collect(),
        tool_choice: tool_choice(req.tool_choice.as_ref(), req.parallel_tool_calls),
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: &req.stop,
        stream,
    };
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("anthropic-version".to_owned(), API_VERSION.to_owned()),
        // Anthropic refuses requests from a page (an `Origin` header) without this; in the proxy
        // it changes nothing.
        (
            "anthropic-dangerous-direct-browser-access".to_owned(),
            "true".to_owned(),
        ),
    ];
    if stream {
        headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    }
    if let Some(key) = endpoint.api_key.as_deref().filter(|k| !k.is_empty()) {
        headers.push(("x-api-key".to_owned(), key.to_owned()));
    }
    Ok(HttpRequest {
        method: Method::Post,
        url: format!("{}/messages", endpoint.base_url.trim_end_matches('/')),
        headers,
        // Serializing borrowed strings, numbers and `Value`s cannot fail.
        body: Some(serde_json::to_string(&body).unwrap_or_default()),
    })
}

// ---------------------------------------------------------------------------------------------
// Response

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<InBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<InUsage>,
}

/// Blocks other than text and tool use (thinking, citations, server tools) carry nothing the
/// normalized answer has room for.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct InUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
    #[serde(default)]
    cache_creation_input_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: u32,
}

impl InUsage {
    /// Cached prompt tokens are prompt tokens too.
    fn prompt(self) -> u32 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }
}

fn usage(prompt: u32, completion: u32) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
    }
}

fn input_text(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        other => crate::json::text(other),
    }
}

/// Parses a `message` object.
pub(crate) fn parse_chat_response(provider: &str, body: &[u8]) -> Result<ChatResponse, ApiError> {
    let resp: Response = crate::json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("upstream sent an unreadable message: {e}"),
        )
    })?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in resp.content {
        match block {
            InBlock::Text { text: t } => text.get_or_insert_with(String::new).push_str(&t),
            InBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: input_text(&input),
            }),
            InBlock::Other => {}
        }
    }
    let finish_reason = match resp.stop_reason.as_deref() {
        Some(reason) => FinishReason::from_provider(reason),
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    Ok(ChatResponse {
        id: resp.id,
        model: format!("{provider}/{}", resp.model),
        message: AssistantMessage {
            content: text,
            tool_calls,
        },
        finish_reason,
        usage: resp.usage.map(|u| usage(u.prompt(), u.output_tokens)),
    })
}

/// Reads the message out of `{"type": "error", "error": {"type", "message"}}`.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = crate::json::from_slice(body).ok()?;
    value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(|message| truncate(message, 500).to_owned())
}

/// The taxonomy's code for an error `type` sent inside a stream (where there is no status).
fn stream_error_code(kind: &str) -> ErrorCode {
    match kind {
        "rate_limit_error" => ErrorCode::RateLimited,
        "authentication_error" | "permission_error" => ErrorCode::UpstreamUnauthorized,
        "invalid_request_error" => ErrorCode::BadRequest,
        "not_found_error" => ErrorCode::NotFound,
        "timeout_error" => ErrorCode::UpstreamTimeout,
        // `overloaded_error` (HTTP 529), `api_error` and anything new.
        _ => ErrorCode::UpstreamError,
    }
}

// ---------------------------------------------------------------------------------------------
// Stream

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: InBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<InUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: StreamError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct StreamError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// A tool call being streamed: its block index, its ordinal among the answer's tool calls, and
/// what has arrived of it.
#[derive(Debug)]
struct OpenCall {
    block: u32,
    index: u32,
    call: ToolCall,
}

/// Decodes Anthropic's stream events (`message_start`, `content_block_*`, `message_delta`,
/// `message_stop`). A tool call is complete at its `content_block_stop`; usage and the finish
/// are emitted at `message_stop`.
#[derive(Debug)]
pub struct StreamDecoder {
    provider: String,
    started: bool,
    calls: Vec<OpenCall>,
    next_call: u32,
    prompt_tokens: u32,
    completion_tokens: Option<u32>,
    finish: Option<FinishReason>,
    done: bool,
}

impl StreamDecoder {
    /// A decoder for the configured provider `provider`.
    pub fn new(provider: &str) -> Self {
        StreamDecoder {
            provider: provider.to_owned(),
            started: false,
            calls: Vec::new(),
            next_call: 0,
            prompt_tokens: 0,
            completion_tokens: None,
            finish: None,
            done: false,
        }
    }

    pub(crate) fn on_event(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let data = event.data.trim();
        if data.is_empty() || self.done {
            return;
        }
        let parsed: Event = match crate::json::from_slice(data.as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => {
                out.push(StreamEvent::Error {
                    error: ApiError::new(
                        ErrorCode::UpstreamError,
                        format!("upstream sent an unreadable stream event: {e}"),
                    ),
                });
                self.done = true;
                return;
            }
        };
        match parsed {
            Event::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.prompt_tokens = usage.prompt();
                    self.completion_tokens = Some(usage.output_tokens);
                }
                self.start(message.id, &message.model, out);
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => {
                self.start(String::new(), "", out);
                match content_block {
                    InBlock::Text { text } if !text.is_empty() => {
                        out.push(StreamEvent::TextDelta { text });
                    }
                    InBlock::ToolUse { id, name, .. } => {
                        let call = OpenCall {
                            block: index,
                            index: self.next_call,
                            call: ToolCall {
                                id: id.clone(),
                                name: name.clone(),
                                arguments: String::new(),
                            },
                        };
                        self.next_call += 1;
                        out.push(StreamEvent::ToolCallDelta {
                            index: call.index,
                            id: Some(id),
                            name: Some(name),
                            arguments: String::new(),
                        });
                        self.calls.push(call);
                    }
                    _ => {}
                }
            }
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    out.push(StreamEvent::TextDelta { text });
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(open) = self.calls.iter_mut().find(|c| c.block == index) {
                        open.call.arguments.push_str(&partial_json);
                        out.push(StreamEvent::ToolCallDelta {
                            index: open.index,
                            id: None,
                            name: None,
                            arguments: partial_json,
                        });
                    }
                }
                _ => {}
            },
            Event::ContentBlockStop { index } => {
                if let Some(at) = self.calls.iter().position(|c| c.block == index) {
                    let OpenCall {
                        index, mut call, ..
                    } = self.calls.remove(at);
                    // A tool that takes no input streams no JSON at all.
                    if call.arguments.trim().is_empty() {
                        call.arguments = "{}".to_owned();
                    }
                    out.push(StreamEvent::ToolCall { index, call });
                }
            }
            Event::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.finish = Some(FinishReason::from_provider(&reason));
                }
                if let Some(usage) = usage {
                    // Counts here are cumulative; a provider that repeats the input counts
                    // here has the final word on them.
                    if usage.prompt() > 0 {
                        self.prompt_tokens = usage.prompt();
                    }
                    self.completion_tokens = Some(usage.output_tokens);
                }
            }
            Event::MessageStop => self.complete(out),
            Event::Error { error } => {
                let message = if error.message.is_empty() {
                    "upstream reported an error mid-stream"
                } else {
                    &error.message
                };
                out.push(StreamEvent::Error {
                    error: ApiError::new(
                        stream_error_code(&error.kind),
                        format!("upstream failed mid-stream: {}", truncate(message, 500)),
                    ),
                });
                self.done = true;
            }
            Event::Ping | Event::Other => {}
        }
    }

    fn start(&mut self, id: String, model: &str, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id,
                model: format!("{}/{model}", self.provider),
            });
        }
    }

    fn complete(&mut self, out: &mut Vec<StreamEvent>) {
        self.start(String::new(), "", out);
        // Blocks a server never stopped are complete with the message.
        let mut open = std::mem::take(&mut self.calls);
        open.sort_by_key(|c| c.index);
        for OpenCall {
            index, mut call, ..
        } in open
        {
            if call.arguments.trim().is_empty() {
                call.arguments = "{}".to_owned();
            }
            out.push(StreamEvent::ToolCall { index, call });
        }
        if let Some(completion) = self.completion_tokens {
            out.push(StreamEvent::Usage {
                usage: usage(self.prompt_tokens, completion),
            });
        }
        let finish_reason = self.finish.take().unwrap_or(if self.next_call > 0 {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        });
        out.push(StreamEvent::Finish { finish_reason });
        self.done = true;
    }

    pub(crate) fn on_end(&mut self, _out: &mut Vec<StreamEvent>) {
        // Without `message_stop` the stream was cut, which the caller reports.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderKind;
    use crate::route::WireFormat;
    use crate::stream::{ChatAccumulator, ChatStreamDecoder};
    use serde_json::json;

    fn endpoint() -> ProviderEndpoint {
        ProviderEndpoint {
            name: "claude".into(),
            kind: ProviderKind::Anthropic,
            base_url: "http://127.0.0.1:9000/v1/".into(),
            api_key: Some("sk-ant-1".into()),
        }
    }

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_conversation_is_reshaped_into_anthropics_turns() {
        let req = request(json!({
            "model": "claude/sonnet",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "url": "data:image/png;base64,AAAA"},
                    {"type": "image_url", "url": "https://x/y.png"}
                ]},
                {"role": "system", "content": "and kind"},
                {"role": "assistant", "content": "calling", "tool_calls": [
                    {"id": "c1", "name": "f", "arguments": "{\"a\":1}"},
                    {"id": "c2", "name": "g", "arguments": ""}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": "two"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"name": "f", "description": "does f", "parameters": {"type": "object"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "temperature": 0.5,
            "stop": ["END"]
        }));
        let http = build_chat(&endpoint(), "sonnet", &req, true).unwrap();
        assert_eq!(http.url, "http://127.0.0.1:9000/v1/messages");
        let header = |name: &str| {
            http.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-api-key"), Some("sk-ant-1"));
        assert_eq!(header("anthropic-version"), Some(API_VERSION));
        assert_eq!(
            header("anthropic-dangerous-direct-browser-access"),
            Some("true")
        );
        assert_eq!(header("authorization"), None);
        let body: Value = serde_json::from_str(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "sonnet",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "be brief\n\nand kind",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
                        {"type": "tool_use", "id": "c2", "name": "g", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                        {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
                        {"type": "text", "text": "thanks"}
                    ]}
                ],
                "tools": [{"name": "f", "description": "does f", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "temperature": 0.5,
                "stop_sequences": ["END"],
                "stream": true
            })
        );
    }

    #[test]
    fn what_anthropic_cannot_do_is_refused_by_name() {
        let base =
            json!({"model": "claude/sonnet", "messages": [{"role": "user", "content": "hi"}]});
        for (field, value) in [
            ("seed", json!(1)),
            ("presence_penalty", json!(0.1)),
            ("frequency_penalty", json!(0.1)),
        ] {
            let mut body = base.clone();
            body[field] = value;
            let error = build_chat(&endpoint(), "sonnet", &request(body), false).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.contains(field), "{error:?}");
        }
        let error = build_chat(
            &endpoint(),
            "sonnet",
            &request(json!({"model": "claude/sonnet", "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f", "arguments": "[1]"}]}
            ]})),
            false,
        )
        .unwrap_err();
        assert!(error.message.contains("JSON object"), "{error:?}");
    }

    #[test]
    fn an_answer_becomes_the_normalized_response() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me "},
                {"type": "text", "text": "check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}
        });
        let resp = parse_chat_response("claude", body.to_string().as_bytes()).unwrap();
        assert_eq!(resp.id, "msg_1");
        assert_eq!(resp.model, "claude/claude-sonnet");
        assert_eq!(resp.message.content.as_deref(), Some("Let me check."));
        assert_eq!(
            resp.message.tool_calls,
            vec![ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into()
            }]
        );
        assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
        assert_eq!(resp.usage, Some(usage(15, 7)));
        for (reason, expected) in [
            ("end_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("stop_sequence", FinishReason::Stop),
        ] {
            let body = json!({"id": "m", "model": "c", "content": [], "stop_reason": reason});
            let resp = parse_chat_response("claude", body.to_string().as_bytes()).unwrap();
            assert_eq!(resp.finish_reason, expected, "{reason}");
        }
        let overloaded =
            br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(error_message(overloaded).as_deref(), Some("Overloaded"));
    }

    /// Anthropic's stream as SSE text, one `event:`/`data:` pair per event.
    fn sse(events: &[Value]) -> String {
        events
            .iter()
            .map(|e| {
                format!(
                    "event: {}\ndata: {e}\n\n",
                    e["type"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    fn decode(text: &str, chunk: usize) -> (Vec<StreamEvent>, bool) {
        let mut decoder = ChatStreamDecoder::new(
            WireFormat::Provider(ProviderKind::Anthropic),
            Some("claude"),
        );
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(chunk) {
            events.extend(decoder.push(piece));
        }
        events.extend(decoder.finish());
        (events, decoder.is_done())
    }

    fn stream_text() -> String {
        sse(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "claude-sonnet", "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " now."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
            json!({"type": "message_stop"}),
        ])
    }

    #[test]
    fn a_stream_becomes_normalized_events_however_it_is_cut() {
        let text = stream_text();
        let (whole, done) = decode(&text, text.len());
        assert!(done);
        for chunk in [1, 7, 64] {
            assert_eq!(decode(&text, chunk).0, whole, "chunks of {chunk} bytes");
        }
        assert_eq!(
            whole[0],
            StreamEvent::Start {
                id: "msg_1".into(),
                model: "claude/claude-sonnet".into()
            }
        );
        let mut acc = ChatAccumulator::new();
        for event in &whole {
            acc.push(event);
        }
        let resp = acc.result().unwrap();
        assert_eq!(resp.message.content.as_deref(), Some("Checking now."));
        assert_eq!(resp.message.tool_calls.len(), 2);
        assert_eq!(
            resp.message.tool_calls[0].arguments,
            "{\"city\": \"Paris\"}"
        );
        assert_eq!(resp.message.tool_calls[1].arguments, "{}");
        assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
        assert_eq!(resp.usage, Some(usage(12, 30)));
        assert!(whole.iter().any(|e| matches!(e,
            StreamEvent::ToolCallDelta { index: 1, id: Some(id), name: Some(n), .. } if id == "toolu_2" && n == "now")));
    }

    #[test]
    fn a_stream_error_or_a_cut_ends_the_stream_with_an_error() {
        let text = sse(&[
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ]);
        let (events, done) = decode(&text, 5);
        assert!(done);
        let Some(StreamEvent::Error { error }) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(error.code, ErrorCode::UpstreamError);
        assert!(error.retryable);
        assert!(error.message.contains("Overloaded"));

        let text = stream_text();
        let cut = &text[..text.find("message_delta").unwrap()];
        let (events, done) = decode(cut, 9);
        assert!(done);
        let Some(StreamEvent::Error { error }) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(error.code, ErrorCode::StreamInterrupted);
    }
}
