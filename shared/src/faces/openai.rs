//! OpenAI's Chat Completions wire format as the proxy serves it (`/v1/chat/completions`,
//! `/v1/models`): requests read into the normalized [`ChatRequest`], and normalized answers,
//! stream events and errors written back the way OpenAI writes them, so that clients built for
//! OpenAI (its official SDKs among them) reach every configured provider.
//!
//! The reading is as strict as OpenAI's own: a parameter this face cannot honour is refused by
//! name rather than dropped, so a caller never believes a setting took effect when it did not.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{
    ChatRequest, ChatResponse, Content, ContentPart, FinishReason, Message, ToolCall, ToolChoice,
    ToolDefinition, Usage,
};
use crate::error::{ApiError, ErrorCode};
use crate::route::ModelList;
use crate::stream::StreamEvent;

// ---------------------------------------------------------------------------------------------
// Requests

/// A Chat Completions request, read into its normalized form.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceRequest {
    /// The normalized request; its `model` is `"<provider>/<model>"`.
    pub chat: ChatRequest,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// Whether a streamed answer ends with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<InStreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    /// OpenAI's end-user id for its abuse monitoring. The proxy knows its caller itself (and
    /// logs them), and the id is not passed on: it would name the proxy's users to a provider.
    #[serde(default, rename = "user")]
    _user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
    /// Random padding against length side channels; the proxy's stream carries none, which
    /// OpenAI's clients accept.
    #[serde(default, rename = "include_obfuscation")]
    _include_obfuscation: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
enum InMessage {
    System {
        content: TextContent,
        #[serde(default)]
        name: Option<String>,
    },
    /// OpenAI's newer name for system instructions.
    Developer {
        content: TextContent,
        #[serde(default)]
        name: Option<String>,
    },
    User {
        content: UserContent,
        #[serde(default)]
        name: Option<String>,
    },
    Assistant {
        #[serde(default)]
        content: Option<TextContent>,
        #[serde(default)]
        tool_calls: Option<Vec<InToolCall>>,
        #[serde(default)]
        name: Option<String>,
        /// Set when the model declined; it is what the model said, so it counts as its text.
        #[serde(default)]
        refusal: Option<String>,
        // An answer handed back as it came (`messages.push(choice.message)`) carries these,
        // empty: there is nothing in them to pass on.
        #[serde(default, rename = "annotations")]
        _annotations: Option<Vec<Value>>,
        #[serde(default)]
        audio: Option<Value>,
        #[serde(default)]
        function_call: Option<Value>,
    },
    Tool {
        tool_call_id: String,
        content: TextContent,
    },
}

/// Text, as a string or as a list of text parts (joined without separator, as OpenAI does).
#[derive(Deserialize)]
#[serde(untagged)]
enum TextContent {
    Text(String),
    Parts(Vec<InTextPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum InTextPart {
    Text { text: String },
}

impl TextContent {
    fn into_text(self) -> String {
        match self {
            TextContent::Text(text) => text,
            TextContent::Parts(parts) => parts
                .into_iter()
                .map(|InTextPart::Text { text }| text)
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum UserContent {
    Text(String),
    Parts(Vec<InUserPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum InUserPart {
    Text { text: String },
    ImageUrl { image_url: InImageUrl },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InImageUrl {
    url: String,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InToolCall {
    id: String,
    #[serde(rename = "type")]
    _kind: FunctionKind,
    function: InFunctionCall,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InFunctionCall {
    name: String,
    arguments: String,
}

/// The only kind of tool (and tool call) this face accepts.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FunctionKind {
    Function,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InTool {
    #[serde(rename = "type")]
    kind: FunctionKind,
    function: InFunction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedToolChoice {
    #[serde(rename = "type")]
    kind: FunctionKind,
    function: NamedFunction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedFunction {
    name: String,
}

/// Reads a Chat Completions request body.
pub fn parse_request(body: &[u8]) -> Result<FaceRequest, ApiError> {
    let request: Request = serde_json::from_slice(body).map_err(|e| request_error(&e))?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(unsupported("n", "only one choice (`n` = 1) is produced"));
    }
    if request.max_tokens.is_some() && request.max_completion_tokens.is_some() {
        return Err(ApiError::bad_request(
            "set `max_tokens` or `max_completion_tokens`, not both",
        ));
    }
    let messages = request
        .messages
        .into_iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    let tools = request
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(tool)
        .collect::<Result<Vec<_>, _>>()?;
    let tool_choice = request.tool_choice.map(|choice| match choice {
        InToolChoice::Mode(ToolChoiceMode::None) => ToolChoice::None,
        InToolChoice::Mode(ToolChoiceMode::Auto) => ToolChoice::Auto,
        InToolChoice::Mode(ToolChoiceMode::Required) => ToolChoice::Required,
        InToolChoice::Named(NamedToolChoice {
            kind: FunctionKind::Function,
            function,
        }) => ToolChoice::Tool {
            name: function.name,
        },
    });
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .and_then(|options| options.include_usage)
        .unwrap_or(false);
    Ok(FaceRequest {
        chat: ChatRequest {
            model: request.model,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls: request.parallel_tool_calls,
            temperature: request.temperature,
            top_p: request.top_p,
            max_tokens: request.max_tokens.or(request.max_completion_tokens),
            stop: match request.stop {
                None => Vec::new(),
                Some(Stop::One(stop)) => vec![stop],
                Some(Stop::Many(stops)) => stops,
            },
            seed: request.seed,
            presence_penalty: request.presence_penalty,
            frequency_penalty: request.frequency_penalty,
        },
        stream,
        include_usage,
    })
}

/// serde names the field it did not know; OpenAI's clients show the message, and the `param`
/// points at the field.
fn request_error(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    match text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        Some((field, _)) => unsupported(field, "this proxy does not support it"),
        None => ApiError::bad_request(format!("invalid chat completion request: {text}")),
    }
}

fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unsupported parameter `{param}`: {why}"))
}

fn message(message: InMessage) -> Result<Message, ApiError> {
    Ok(match message {
        InMessage::System { content, name } | InMessage::Developer { content, name } => {
            Message::System {
                content: content.into_text(),
                name,
            }
        }
        InMessage::User { content, name } => Message::User {
            content: match content {
                UserContent::Text(text) => Content::Text(text),
                UserContent::Parts(parts) => Content::Parts(
                    parts
                        .into_iter()
                        .map(|part| match part {
                            InUserPart::Text { text } => ContentPart::Text { text },
                            InUserPart::ImageUrl { image_url } => ContentPart::ImageUrl {
                                url: image_url.url,
                                detail: image_url.detail,
                            },
                        })
                        .collect(),
                ),
            },
            name,
        },
        InMessage::Assistant {
            content,
            tool_calls,
            name,
            refusal,
            audio,
            function_call,
            ..
        } => {
            if audio.is_some_and(|a| !a.is_null()) {
                return Err(unsupported("audio", "audio answers are not supported"));
            }
            if function_call.is_some_and(|f| !f.is_null()) {
                return Err(unsupported(
                    "function_call",
                    "send the call in `tool_calls` instead",
                ));
            }
            Message::Assistant {
                content: content.map(TextContent::into_text).or(refusal),
                tool_calls: tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|call| ToolCall {
                        id: call.id,
                        name: call.function.name,
                        arguments: call.function.arguments,
                    })
                    .collect(),
                name,
            }
        }
        InMessage::Tool {
            tool_call_id,
            content,
        } => Message::Tool {
            tool_call_id,
            content: content.into_text(),
        },
    })
}

fn tool(tool: InTool) -> Result<ToolDefinition, ApiError> {
    let InTool {
        kind: FunctionKind::Function,
        function,
    } = tool;
    if function.strict == Some(true) {
        return Err(unsupported(
            "strict",
            "strict function schemas are not passed on to providers",
        ));
    }
    Ok(ToolDefinition {
        name: function.name,
        description: function.description,
        parameters: function
            .parameters
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
    })
}

// ---------------------------------------------------------------------------------------------
// Answers

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for OutUsage {
    fn from(usage: Usage) -> Self {
        OutUsage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}

/// OpenAI's names; a reason it has no name for reads as a plain stop.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Other => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// A `chat.completion` object for a complete answer; `created` is in Unix seconds.
pub fn completion(response: &ChatResponse, created: u64) -> String {
    let body = Completion {
        id: &response.id,
        object: "chat.completion",
        created,
        model: &response.model,
        choices: [CompletionChoice {
            index: 0,
            message: OutMessage {
                role: "assistant",
                content: response.message.content.as_deref(),
                refusal: None,
                tool_calls: response
                    .message
                    .tool_calls
                    .iter()
                    .map(|call| OutToolCall {
                        index: None,
                        id: Some(&call.id),
                        kind: Some("function"),
                        function: OutFunction {
                            name: Some(&call.name),
                            arguments: &call.arguments,
                        },
                    })
                    .collect(),
                annotations: [],
            },
            logprobs: None,
            finish_reason: finish_reason(response.finish_reason),
        }],
        usage: response.usage.map(OutUsage::from),
    };
    // Plain data: serializing it cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
}

/// Turns the normalized events of one answer into `chat.completion.chunk` objects, each the
/// `data` of one SSE event, ending with `[DONE]` ([`DONE`]) as OpenAI's streams do.
#[derive(Debug)]
pub struct ChunkEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<Usage>,
    /// Tool calls (by index) whose start has been sent, so a call that arrives whole after its
    /// deltas is not sent twice.
    started_calls: Vec<u32>,
}

/// The `data` of the SSE event that ends a successful stream.
pub const DONE: &str = "[DONE]";

impl ChunkEncoder {
    /// An encoder for one stream of `model`, created at `created` (Unix seconds); the id and
    /// the model's own name come from the answer's first event.
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        ChunkEncoder {
            id: String::new(),
            model: model.to_owned(),
            created,
            include_usage,
            usage: None,
            started_calls: Vec::new(),
        }
    }

    /// The SSE `data` payloads for `event`, in order (often one, sometimes none).
    pub fn encode(&mut self, event: &StreamEvent) -> Vec<String> {
        match event {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                vec![self.chunk(
                    Delta {
                        role: Some("assistant"),
                        content: Some(""),
                        ..Delta::default()
                    },
                    None,
                )]
            }
            StreamEvent::TextDelta { text } => vec![self.chunk(
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            )],
            StreamEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            } => {
                let first = !self.started_calls.contains(index);
                if first {
                    self.started_calls.push(*index);
                }
                vec![self.chunk(
                    Delta {
                        tool_calls: vec![OutToolCall {
                            index: Some(*index),
                            id: id.as_deref(),
                            kind: first.then_some("function"),
                            function: OutFunction {
                                name: name.as_deref(),
                                arguments,
                            },
                        }],
                        ..Delta::default()
                    },
                    None,
                )]
            }
            StreamEvent::ToolCall { index, call } => {
                if self.started_calls.contains(index) {
                    return Vec::new();
                }
                self.started_calls.push(*index);
                vec![self.chunk(
                    Delta {
                        tool_calls: vec![OutToolCall {
                            index: Some(*index),
                            id: Some(&call.id),
                            kind: Some("function"),
                            function: OutFunction {
                                name: Some(&call.name),
                                arguments: &call.arguments,
                            },
                        }],
                        ..Delta::default()
                    },
                    None,
                )]
            }
            StreamEvent::Usage { usage } => {
                // OpenAI sends usage last, in a chunk of its own after the finish.
                self.usage = Some(*usage);
                Vec::new()
            }
            StreamEvent::Finish { finish_reason: why } => {
                let mut out = vec![self.chunk(Delta::default(), Some(finish_reason(*why)))];
                if self.include_usage {
                    let usage = self.usage.unwrap_or_default();
                    out.push(self.serialize(Vec::new(), Some(usage.into())));
                }
                out.push(DONE.to_owned());
                out
            }
            StreamEvent::Error { error } => vec![error_body(error)],
        }
    }

    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> String {
        self.serialize(
            vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        )
    }

    fn serialize(&self, choices: Vec<ChunkChoice<'_>>, usage: Option<OutUsage>) -> String {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        // Plain data: serializing it cannot fail.
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and the model list

#[derive(Serialize)]
struct OutErrorBody<'a> {
    error: OutError<'a>,
}

#[derive(Serialize)]
struct OutError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    /// Switchyard's stable code, so a client can tell the cases apart as on the proxy's API.
    code: &'static str,
}

/// OpenAI's error `type` for a code.
fn error_type(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::NotFound
        | ErrorCode::MethodNotAllowed
        | ErrorCode::PayloadTooLarge => "invalid_request_error",
        ErrorCode::Unauthorized => "authentication_error",
        ErrorCode::Forbidden => "permission_error",
        ErrorCode::RateLimited => "rate_limit_error",
        ErrorCode::UpstreamTimeout => "timeout_error",
        ErrorCode::UpstreamError
        | ErrorCode::UpstreamUnauthorized
        | ErrorCode::StreamInterrupted
        | ErrorCode::NetworkError
        | ErrorCode::CorsBlocked
        | ErrorCode::Aborted
        | ErrorCode::Unavailable
        | ErrorCode::Internal => "api_error",
    }
}

/// The error in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`; the HTTP
/// status stays [`ApiError::http_status`].
pub fn error_body(error: &ApiError) -> String {
    let param = error
        .message
        .strip_prefix("unsupported parameter `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(param, _)| param);
    let body = OutErrorBody {
        error: OutError {
            message: &error.message,
            kind: error_type(error.code),
            param,
            code: error.code.as_str(),
        },
    };
    // Plain data: serializing it cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct OutModelList<'a> {
    object: &'static str,
    data: Vec<OutModel<'a>>,
}

#[derive(Serialize)]
struct OutModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

/// `GET /v1/models`: every model the operator listed, by its `"<provider>/<model>"` id.
/// Providers that pass any model on list none; they are still reachable by id.
pub fn model_list(models: &ModelList) -> String {
    let list = OutModelList {
        object: "list",
        data: models
            .providers
            .iter()
            .flat_map(|provider| {
                provider.models.iter().map(|id| OutModel {
                    id,
                    object: "model",
                    created: 0,
                    owned_by: &provider.name,
                })
            })
            .collect(),
    };
    // Plain data: serializing it cannot fail.
    serde_json::to_string(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::AssistantMessage;
    use crate::providers::ProviderKind;
    use crate::route::ProviderInfo;
    use serde_json::json;

    fn parse(body: Value) -> Result<FaceRequest, ApiError> {
        parse_request(body.to_string().as_bytes())
    }

    #[test]
    fn an_openai_request_reads_into_the_normalized_one() {
        let face = parse(json!({
            "model": "local/llama",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                ], "name": "ann"},
                {"role": "assistant", "content": null, "refusal": null, "annotations": [], "audio": null,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": false}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "stop": "END",
            "max_completion_tokens": 64,
            "temperature": 0.5,
            "n": 1,
            "user": "someone",
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .unwrap();
        assert!(face.stream && face.include_usage);
        let chat = face.chat;
        assert_eq!(chat.model, "local/llama");
        assert_eq!(chat.messages[0], Message::system("be brief"));
        assert!(
            matches!(&chat.messages[1], Message::User { content: Content::Parts(parts), name: Some(n) }
            if n == "ann" && matches!(&parts[1], ContentPart::ImageUrl { url, detail: Some(d) } if url.starts_with("data:") && d == "low"))
        );
        assert_eq!(
            chat.messages[2],
            Message::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into()
                }],
                name: None
            }
        );
        assert_eq!(chat.tools[0].name, "f");
        assert_eq!(
            chat.tool_choice,
            Some(ToolChoice::Tool { name: "f".into() })
        );
        assert_eq!(chat.stop, vec!["END".to_owned()]);
        assert_eq!(chat.max_tokens, Some(64));
        assert_eq!(chat.temperature, Some(0.5));
    }

    #[test]
    fn what_the_face_cannot_honour_is_refused_by_name() {
        let base = || json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]});
        parse(base()).unwrap();
        for (patch, param) in [
            (json!({"logit_bias": {"1": 2}}), "logit_bias"),
            (json!({"n": 2}), "n"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "strict": true}}]}),
                "strict",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": "x", "audio": {"id": "a"}}]}),
                "audio",
            ),
            (json!({"base_url": "http://elsewhere"}), "base_url"),
        ] {
            let mut body = base();
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            let error = parse(body).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(
                error.message.contains(&format!("`{param}`")),
                "{param}: {error:?}"
            );
            let body: Value = serde_json::from_str(&error_body(&error)).unwrap();
            assert_eq!(body["error"]["param"], param);
            assert_eq!(body["error"]["type"], "invalid_request_error");
        }
        // Fields a message does not have are refused at depth too.
        let error = parse(
            json!({"model": "p/m", "messages": [{"role": "user", "content": "hi", "url": "u"}]}),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        let error = parse(
            json!({"model": "p/m", "messages": [], "max_tokens": 1, "max_completion_tokens": 1}),
        )
        .unwrap_err();
        assert!(error.message.contains("not both"), "{error:?}");
    }

    fn answer() -> ChatResponse {
        ChatResponse {
            id: "r1".into(),
            model: "local/llama".into(),
            message: AssistantMessage {
                content: Some("hello".into()),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }],
            },
            finish_reason: FinishReason::ToolCalls,
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5,
            }),
        }
    }

    #[test]
    fn a_complete_answer_is_a_chat_completion() {
        let body: Value = serde_json::from_str(&completion(&answer(), 1_700_000_000)).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "r1", "object": "chat.completion", "created": 1_700_000_000u64, "model": "local/llama",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello", "refusal": null,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    "annotations": []},
                    "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            })
        );
    }

    #[test]
    fn stream_events_become_chunks_ending_in_usage_and_done() {
        let mut encoder = ChunkEncoder::new("local/llama", 7, true);
        let events = [
            StreamEvent::Start {
                id: "r1".into(),
                model: "local/llama-3".into(),
            },
            StreamEvent::TextDelta { text: "hi".into() },
            StreamEvent::ToolCallDelta {
                index: 0,
                id: Some("c1".into()),
                name: Some("f".into()),
                arguments: "{\"a\"".into(),
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: ":1}".into(),
            },
            StreamEvent::ToolCall {
                index: 0,
                call: ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                },
            },
            StreamEvent::ToolCall {
                index: 1,
                call: ToolCall {
                    id: "c2".into(),
                    name: "g".into(),
                    arguments: "{}".into(),
                },
            },
            StreamEvent::Usage {
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    total_tokens: 2,
                },
            },
            StreamEvent::Finish {
                finish_reason: FinishReason::ToolCalls,
            },
        ];
        let data: Vec<String> = events.iter().flat_map(|e| encoder.encode(e)).collect();
        assert_eq!(data.last().map(String::as_str), Some(DONE));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        for chunk in &chunks {
            assert_eq!(chunk["id"], "r1");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], 7);
            assert_eq!(chunk["model"], "local/llama-3");
        }
        let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(deltas[0], &json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1], &json!({"content": "hi"}));
        assert_eq!(
            deltas[2],
            &json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]})
        );
        assert_eq!(
            deltas[3],
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]})
        );
        // The whole call 0 was already sent in pieces; call 1 came whole.
        assert_eq!(deltas[4]["tool_calls"][0]["id"], "c2");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(chunks[6]["usage"]["total_tokens"], 2);
        assert_eq!(chunks.len(), 7);
    }

    #[test]
    fn a_stream_without_usage_asked_has_no_usage_chunk_and_errors_end_it() {
        let mut encoder = ChunkEncoder::new("p/m", 1, false);
        let finish = encoder.encode(&StreamEvent::Finish {
            finish_reason: FinishReason::Stop,
        });
        assert_eq!(finish.len(), 2);
        assert_eq!(finish[1], DONE);
        let error = encoder.encode(&StreamEvent::Error {
            error: ApiError::new(ErrorCode::StreamInterrupted, "upstream broke off"),
        });
        let body: Value = serde_json::from_str(&error[0]).unwrap();
        assert_eq!(body["error"]["code"], "stream_interrupted");
        assert_eq!(body["error"]["type"], "api_error");
        assert_eq!(body["error"]["message"], "upstream broke off");
    }

    #[test]
    fn listed_models_are_openai_models() {
        let models = ModelList {
            providers: vec![
                ProviderInfo {
                    name: "local".into(),
                    kind: ProviderKind::OpenAi,
                    models: vec!["local/a".into(), "local/b".into()],
                },
                ProviderInfo {
                    name: "any".into(),
                    kind: ProviderKind::OpenAi,
                    models: vec![],
                },
            ],
        };
        let body: Value = serde_json::from_str(&model_list(&models)).unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(
            body["data"],
            json!([
                {"id": "local/a", "object": "model", "created": 0, "owned_by": "local"},
                {"id": "local/b", "object": "model", "created": 0, "owned_by": "local"}
            ])
        );
    }

    #[test]
    fn error_types_follow_the_status() {
        for (code, kind) in [
            (ErrorCode::Unauthorized, "authentication_error"),
            (ErrorCode::Forbidden, "permission_error"),
            (ErrorCode::RateLimited, "rate_limit_error"),
            (ErrorCode::NotFound, "invalid_request_error"),
            (ErrorCode::UpstreamError, "api_error"),
        ] {
            let body: Value = serde_json::from_str(&error_body(&ApiError::new(code, "m"))).unwrap();
            assert_eq!(body["error"]["type"], kind);
            assert_eq!(body["error"]["code"], code.as_str());
            assert_eq!(body["error"]["param"], Value::Null);
        }
    }
}
