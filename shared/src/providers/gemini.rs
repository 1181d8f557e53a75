//! Google's Gemini API (`POST {base_url}/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` for streams).
//!
//! The normalized conversation maps onto Gemini's `contents` with a few reshapes: system messages
//! go to `systemInstruction`; the assistant is the role `model`; tool calls and results are
//! `functionCall` / `functionResponse` parts, results travelling in user turns and naming the
//! function rather than the call (the name is found from the call with that id earlier in the
//! request); consecutive turns of one role are merged. Gemini gives tool calls no id, or an
//! optional one: answers number them `call_0`, `call_1`... where it gives none. What Gemini cannot
//! express is refused by name rather than dropped.

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

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<OutContent<'a>>,
    contents: Vec<OutContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[OutTools<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct OutContent<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    role: &'static str,
    parts: Vec<OutPart<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
enum OutPart<'a> {
    Text(&'a str),
    InlineData { mime_type: &'a str, data: &'a str },
    FunctionCall { name: &'a str, args: Value },
    FunctionResponse { name: &'a str, response: Value },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutTools<'a> {
    function_declarations: Vec<OutFunction<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    // The JSON Schema as it is; `parameters` would take only Google's OpenAPI subset, which
    // refuses common keys such as `additionalProperties` or `$schema`.
    parameters_json_schema: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} has no equivalent in Gemini's API; leave it out for this provider"
    ))
}

fn image(url: &str) -> Result<OutPart<'_>, ApiError> {
    // Gemini reads images by URL only from its own file store, so anything else goes inline.
    let (mime_type, data) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .ok_or_else(|| unsupported("an image by URL (Gemini takes base64 `data:` URLs)"))?;
    Ok(OutPart::InlineData { mime_type, data })
}

/// Gemini takes a tool call's arguments as an object; the normalized call carries JSON text.
fn call_args(call: &ToolCall) -> Result<Value, ApiError> {
    if call.arguments.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match crate::json::from_slice::<Value>(call.arguments.as_bytes()) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ApiError::bad_request(format!(
            "the arguments of tool call {:?} must be a JSON object for Gemini",
            call.id
        ))),
    }
}

/// A tool result as the object Gemini wants: a JSON object is passed as it is, anything else
/// under `output`, the key Google's documentation suggests.
fn function_response(content: &str) -> Value {
    match crate::json::from_slice::<Value>(content.as_bytes()) {
        Ok(value @ Value::Object(_)) => value,
        _ => serde_json::json!({ "output": content }),
    }
}

/// The turns in Gemini's shape, with the system text apart.
fn conversation(
    messages: &[Message],
) -> Result<(Option<OutContent<'_>>, Vec<OutContent<'_>>), ApiError> {
    let mut system: Vec<OutPart<'_>> = Vec::new();
    let mut turns: Vec<OutContent<'_>> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let (role, parts) = match message {
            Message::System { content, .. } => {
                system.push(OutPart::Text(content));
                continue;
            }
            Message::User { content, .. } => (
                "user",
                match content {
                    Content::Text(text) => vec![OutPart::Text(text)],
                    Content::Parts(parts) => parts
                        .iter()
                        .map(|part| match part {
                            ContentPart::Text { text } => Ok(OutPart::Text(text)),
                            ContentPart::ImageUrl { url, .. } => image(url),
                        })
                        .collect::<Result<_, ApiError>>()?,
                },
            ),
            Message::Assistant {
                content,
                tool_calls,
                ..
            } => {
                let mut parts: Vec<OutPart<'_>> = content
                    .as_deref()
                    .filter(|text| !text.is_empty())
                    .map(OutPart::Text)
                    .into_iter()
                    .collect();
                for call in tool_calls {
                    parts.push(OutPart::FunctionCall {
                        name: &call.name,
                        args: call_args(call)?,
                    });
                }
                ("model", parts)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let name = messages[..at]
                    .iter()
                    .rev()
                    .find_map(|earlier| match earlier {
                        Message::Assistant { tool_calls, .. } => tool_calls
                            .iter()
                            .find(|call| &call.id == tool_call_id)
                            .map(|call| call.name.as_str()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "the tool result for {tool_call_id:?} answers no earlier tool call \
                             of this request; Gemini needs the call to name the function"
                        ))
                    })?;
                (
                    "user",
                    vec![OutPart::FunctionResponse {
                        name,
                        response: function_response(content),
                    }],
                )
            }
        };
        // Gemini refuses a turn without parts (an assistant turn that said nothing).
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => turns.push(OutContent { role, parts }),
        }
    }
    let system = (!system.is_empty()).then_some(OutContent {
        role: "",
        parts: system,
    });
    Ok((system, turns))
}

fn tool_config(choice: Option<&ToolChoice>) -> Option<Value> {
    let (mode, names) = match choice? {
        ToolChoice::Auto => ("AUTO", None),
        ToolChoice::None => ("NONE", None),
        ToolChoice::Required => ("ANY", None),
        ToolChoice::Tool { name } => ("ANY", Some([name])),
    };
    let mut config = serde_json::json!({ "mode": mode });
    if let Some(names) = names {
        config["allowedFunctionNames"] = serde_json::json!(names);
    }
    Some(serde_json::json!({ "functionCallingConfig": config }))
}

/// The model becomes a path segment: only characters that cannot leave it or start a query are
/// let through, so that a request can never reach another path of the provider's host.
fn check_model(model: &str) -> Result<(), ApiError> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if model.is_empty() || model.starts_with('.') || !model.bytes().all(plain) {
        return Err(ApiError::bad_request(format!(
            "the Gemini model name {:?} may hold only letters, digits, '-', '_' and '.'",
            truncate(model, 100)
        )));
    }
    Ok(())
}

/// Builds `POST {base_url}/models/{model}:generateContent` (or its streaming twin).
pub(crate) fn build_chat(
    endpoint: &ProviderEndpoint,
    model: &str,
    req: &ChatRequest,
    stream: bool,
) -> Result<HttpRequest, ApiError> {
    check_model(model)?;
    if req.parallel_tool_calls == Some(false) {
        return Err(unsupported("`parallel_tool_calls: false`"));
    }
    let (system_instruction, contents) = conversation(&req.messages)?;
    let body = Request {
        system_instruction,
        contents,
        tools: (!req.tools.is_empty()).then(|| {
            [OutTools {
                function_declarations: req
                    .tools
                    .iter()
                    .map(|tool| OutFunction {
                        name: &tool.name,
                        description: tool.description.as_deref(),
                        parameters_json_schema: &tool.parameters,
                    })
                    .collect(),
            }]
        }),
        tool_config: tool_config(req.tool_choice.as_ref()),
        generation_config: GenerationConfig {
            temperature: req.temperature,
            top_p: req.top_p,
            max_output_tokens: req.max_tokens,
            stop_sequences: &req.stop,
            seed: req.seed,
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
        },
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if stream {
        headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    }
    // In a header, never in the URL (`?key=`), where logs and error messages would show it.
    if let Some(key) = endpoint.api_key.as_deref().filter(|k| !k.is_empty()) {
        headers.push(("x-goog-api-key".to_owned(), key.to_owned()));
    }
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    Ok(HttpRequest {
        method: Method::Post,
        url: format!(
            "{}/models/{model}:{method}",
            endpoint.base_url.trim_end_matches('/')
        ),
        headers,
        // Serializing borrowed strings, numbers and `Value`s cannot fail.
        body: Some(serde_json::to_string(&body).unwrap_or_default()),
    })
}

// ---------------------------------------------------------------------------------------------
// Response

/// A `GenerateContentResponse`: the whole answer, or one chunk of a stream; a stream may also
/// carry an `error` instead.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<InUsage>,
    #[serde(default)]
    model_version: String,
    #[serde(default)]
    response_id: String,
    #[serde(default)]
    error: Option<InError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<InContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InContent {
    #[serde(default)]
    parts: Vec<InPart>,
}

/// Parts other than text and function calls (code execution, inline data) carry nothing the
/// normalized answer has room for; `thought` text is the model's reasoning, not its answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<InFunctionCall>,
}

#[derive(Deserialize)]
struct InFunctionCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct InUsage {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    thoughts_token_count: u32,
    #[serde(default)]
    total_token_count: Option<u32>,
}

impl From<InUsage> for Usage {
    /// Thinking tokens are generated (and billed) like the answer's, as in OpenAI's counts.
    fn from(u: InUsage) -> Self {
        let completion = u
            .candidates_token_count
            .saturating_add(u.thoughts_token_count);
        Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: completion,
            total_tokens: u
                .total_token_count
                .unwrap_or(u.prompt_token_count.saturating_add(completion)),
        }
    }
}

/// `{"error": {"code", "message", "status", "details"}}`, Google's error shape.
#[derive(Deserialize)]
struct InError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<InErrorDetail>,
}

/// The details that matter here: `ErrorInfo.reason` and `RetryInfo.retryDelay` (`"30s"`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InErrorDetail {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    retry_delay: Option<String>,
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        // MALFORMED_FUNCTION_CALL, LANGUAGE, OTHER and anything new.
        _ => FinishReason::Other,
    }
}

/// Gemini ends a turn that calls functions with `STOP`; the normalized answer says why it
/// stopped: for the calls.
fn with_calls(reason: FinishReason, calls: bool) -> FinishReason {
    match reason {
        FinishReason::Stop if calls => FinishReason::ToolCalls,
        other => other,
    }
}

fn arguments_text(args: &Value) -> String {
    match args {
        Value::Null => "{}".to_owned(),
        other => crate::json::text(other),
    }
}

/// The call in normalized form; `ordinal` numbers the calls of one answer from 0.
fn tool_call(call: InFunctionCall, ordinal: u32) -> ToolCall {
    ToolCall {
        id: call
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("call_{ordinal}")),
        arguments: arguments_text(&call.args),
        name: call.name,
    }
}

fn unreadable(what: &str, e: serde_json::Error) -> ApiError {
    ApiError::new(
        ErrorCode::UpstreamError,
        format!("upstream sent an unreadable {what}: {e}"),
    )
}

/// Parses a `GenerateContentResponse`.
pub(crate) fn parse_chat_response(provider: &str, body: &[u8]) -> Result<ChatResponse, ApiError> {
    let resp: Response = crate::json::from_slice(body).map_err(|e| unreadable("answer", e))?;
    let blocked = resp.prompt_feedback.and_then(|f| f.block_reason).is_some();
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    let finish = match resp.candidates.into_iter().next() {
        Some(candidate) => {
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    tool_calls.push(tool_call(call, tool_calls.len() as u32));
                } else if let Some(t) = part.text.filter(|_| !part.thought) {
                    text.get_or_insert_with(String::new).push_str(&t);
                }
            }
            candidate
                .finish_reason
                .as_deref()
                .map_or(FinishReason::Stop, finish_reason)
        }
        // A prompt refused by the safety filters gets no candidate at all.
        None if blocked => FinishReason::ContentFilter,
        None => {
            return Err(ApiError::new(
                ErrorCode::UpstreamError,
                "upstream sent an answer with no candidates",
            ));
        }
    };
    Ok(ChatResponse {
        id: resp.response_id,
        model: format!("{provider}/{}", resp.model_version),
        finish_reason: with_calls(finish, !tool_calls.is_empty()),
        message: AssistantMessage {
            content: text,
            tool_calls,
        },
        usage: resp.usage_metadata.map(Usage::from),
    })
}

/// Maps a failed answer onto the taxonomy. Google says 400 `INVALID_ARGUMENT` for a wrong key
/// (reason `API_KEY_INVALID`), which is read as the 401 it means; and it gives the retry delay of
/// a 429 in the body (`RetryInfo`), which stands in for a missing `Retry-After`.
pub(crate) fn upstream_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        error: InError,
    }
    let Ok(Body { error }) = crate::json::from_slice::<Body>(body) else {
        return ApiError::from_upstream_status(status, None, retry_after);
    };
    let reason = |r: &str| error.details.iter().any(|d| d.reason.as_deref() == Some(r));
    let status = if reason("API_KEY_INVALID") || error.status == "UNAUTHENTICATED" {
        401
    } else {
        status
    };
    let delay = error
        .details
        .iter()
        .find_map(|d| d.retry_delay.as_deref()?.strip_suffix('s'));
    let message = (!error.message.is_empty()).then_some(error.message.as_str());
    ApiError::from_upstream_status(status, message, retry_after.or(delay))
}

/// The taxonomy's code for a Google `status` sent inside a stream (where there is no HTTP
/// status to go by).
fn stream_error_code(status: &str) -> ErrorCode {
    match status {
        "RESOURCE_EXHAUSTED" => ErrorCode::RateLimited,
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => ErrorCode::UpstreamUnauthorized,
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" => ErrorCode::BadRequest,
        "NOT_FOUND" => ErrorCode::NotFound,
        "DEADLINE_EXCEEDED" => ErrorCode::UpstreamTimeout,
        // INTERNAL, UNAVAILABLE and anything new.
        _ => ErrorCode::UpstreamError,
    }
}

// ---------------------------------------------------------------------------------------------
// Stream

/// Decodes `streamGenerateContent?alt=sse`: every event is a whole `GenerateContentResponse`
/// holding the next piece of the answer. Function calls arrive whole, so each is complete in the
/// chunk that brings it. Gemini sends no end marker: the answer is complete when the body ends
/// after a chunk with a `finishReason`; the usage (cumulative, the last counts win) and the
/// finish are emitted then.
#[derive(Debug)]
pub struct StreamDecoder {
    provider: String,
    started: bool,
    next_call: u32,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    done: bool,
}

impl StreamDecoder {
    /// A decoder for the configured provider `provider`.
    pub fn new(provider: &str) -> Self {
        StreamDecoder {
            provider: provider.to_owned(),
            started: false,
            next_call: 0,
            usage: None,
            finish: None,
            done: false,
        }
    }

    fn fail(&mut self, error: ApiError, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Error { error });
        self.done = true;
    }

    pub(crate) fn on_event(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        let data = event.data.trim();
        if data.is_empty() || self.done {
            return;
        }
        let chunk: Response = match crate::json::from_slice(data.as_bytes()) {
            Ok(chunk) => chunk,
            Err(e) => return self.fail(unreadable("stream chunk", e), out),
        };
        if let Some(error) = chunk.error {
            let message = if error.message.is_empty() {
                "upstream reported an error mid-stream"
            } else {
                &error.message
            };
            let error = ApiError::new(
                stream_error_code(&error.status),
                format!("upstream failed mid-stream: {}", truncate(message, 500)),
            );
            return self.fail(error, out);
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.response_id,
                model: format!("{}/{}", self.provider, chunk.model_version),
            });
        }
        if chunk.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            self.finish = Some(FinishReason::ContentFilter);
        }
        if let Some(candidate) = chunk.candidates.into_iter().next() {
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    let index = self.next_call;
                    self.next_call += 1;
                    let call = tool_call(call, index);
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        id: Some(call.id.clone()),
                        name: Some(call.name.clone()),
                        arguments: call.arguments.clone(),
                    });
                    out.push(StreamEvent::ToolCall { index, call });
                } else if let Some(text) = part.text.filter(|t| !t.is_empty() && !part.thought) {
                    out.push(StreamEvent::TextDelta { text });
                }
            }
            if let Some(reason) = candidate.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(usage) = chunk.usage_metadata {
            self.usage = Some(usage.into());
        }
    }

    pub(crate) fn on_end(&mut self, out: &mut Vec<StreamEvent>) {
        // Without a finish reason the stream was cut, which the caller reports.
        let Some(finish) = self.finish.take().filter(|_| !self.done) else {
            return;
        };
        if let Some(usage) = self.usage.take() {
            out.push(StreamEvent::Usage { usage });
        }
        out.push(StreamEvent::Finish {
            finish_reason: with_calls(finish, self.next_call > 0),
        });
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderKind;
    use crate::route::{PreparedRequest, WireFormat};
    use crate::stream::{ChatAccumulator, ChatStreamDecoder};
    use serde_json::json;

    const KEY: &str = "AIza-test-key-1";

    fn endpoint() -> ProviderEndpoint {
        ProviderEndpoint {
            name: "gem".into(),
            kind: ProviderKind::Gemini,
            base_url: "http://127.0.0.1:9000/v1beta/".into(),
            api_key: Some(KEY.into()),
        }
    }

    fn request(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
        http.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_conversation_is_reshaped_into_geminis_contents() {
        let req = request(json!({
            "model": "gem/gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "url": "data:image/png;base64,AAAA"}
                ]},
                {"role": "system", "content": "and kind"},
                {"role": "assistant", "content": "calling", "tool_calls": [
                    {"id": "c1", "name": "f", "arguments": "{\"a\":1}"},
                    {"id": "c2", "name": "g", "arguments": ""}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": "{\"temp\": 21}"},
                {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": "bye"}
            ],
            "tools": [{"name": "f", "description": "does f", "parameters": {"type": "object"}}],
            "tool_choice": {"tool": {"name": "f"}},
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 100,
            "seed": 7,
            "stop": ["END"]
        }));
        let http = build_chat(&endpoint(), "gemini-2.5-flash", &req, true).unwrap();
        assert_eq!(
            http.url,
            "http://127.0.0.1:9000/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(header(&http, "x-goog-api-key"), Some(KEY));
        assert_eq!(header(&http, "accept"), Some("text/event-stream"));
        assert_eq!(header(&http, "authorization"), None);
        assert!(!http.url.contains(KEY));
        assert!(!format!("{http:?}").contains(KEY), "{http:?}");
        let body: Value = serde_json::from_str(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "systemInstruction": {"parts": [{"text": "be brief"}, {"text": "and kind"}]},
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "look"},
                        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
                    ]},
                    {"role": "model", "parts": [
                        {"text": "calling"},
                        {"functionCall": {"name": "f", "args": {"a": 1}}},
                        {"functionCall": {"name": "g", "args": {}}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "f", "response": {"output": "one"}}},
                        {"functionResponse": {"name": "g", "response": {"temp": 21}}},
                        {"text": "thanks"},
                        {"text": "bye"}
                    ]}
                ],
                "tools": [{"functionDeclarations": [
                    {"name": "f", "description": "does f", "parametersJsonSchema": {"type": "object"}}
                ]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
                "generationConfig": {
                    "temperature": 0.5, "topP": 0.9, "maxOutputTokens": 100,
                    "stopSequences": ["END"], "seed": 7
                }
            })
        );

        let plain = request(
            json!({"model": "gem/m", "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": "none"}),
        );
        let http = build_chat(&endpoint(), "m", &plain, false).unwrap();
        assert_eq!(
            http.url,
            "http://127.0.0.1:9000/v1beta/models/m:generateContent"
        );
        assert_eq!(header(&http, "accept"), None);
        let body: Value = serde_json::from_str(http.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
                "generationConfig": {}
            })
        );
    }

    #[test]
    fn what_gemini_cannot_express_is_refused_by_name() {
        let refused = |value: Value, model: &str, needle: &str| {
            let error = build_chat(&endpoint(), model, &request(value), false).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.contains(needle), "{needle}: {error:?}");
        };
        let user = json!({"role": "user", "content": "hi"});
        refused(
            json!({"model": "gem/m", "messages": [user], "parallel_tool_calls": false}),
            "m",
            "parallel_tool_calls",
        );
        refused(
            json!({"model": "gem/m", "messages": [
                {"role": "user", "content": [{"type": "image_url", "url": "https://x/y.png"}]}
            ]}),
            "m",
            "data:",
        );
        refused(
            json!({"model": "gem/m", "messages": [
                user, {"role": "tool", "tool_call_id": "ghost", "content": "x"}
            ]}),
            "m",
            "\"ghost\"",
        );
        refused(
            json!({"model": "gem/m", "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f", "arguments": "[1]"}]}
            ]}),
            "m",
            "JSON object",
        );
        for model in ["a/b", "m:generateContent?x=", "..", "", "m#x", "m%2F"] {
            refused(
                json!({"model": "gem/m", "messages": [user]}),
                model,
                "model name",
            );
        }
        // A tool result is matched with the call of the same id, not the latest one.
        let req = request(json!({"model": "gem/m", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "c1", "name": "first", "arguments": "{}"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "1"},
            {"role": "assistant", "tool_calls": [{"id": "c2", "name": "second", "arguments": "{}"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "again"}
        ]}));
        let body: Value = serde_json::from_str(
            build_chat(&endpoint(), "m", &req, false)
                .unwrap()
                .body
                .as_deref()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            body["contents"][3]["parts"][0]["functionResponse"]["name"],
            "first"
        );
    }

    #[test]
    fn an_answer_becomes_the_normalized_response() {
        let body = json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "thinking...", "thought": true},
                    {"text": "Let me "},
                    {"text": "check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"id": "fc-9", "name": "now"}},
                    {"executableCode": {"language": "PYTHON", "code": "1"}}
                ]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 7,
                "thoughtsTokenCount": 3, "totalTokenCount": 20},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-1"
        });
        let resp = parse_chat_response("gem", body.to_string().as_bytes()).unwrap();
        assert_eq!(resp.id, "resp-1");
        assert_eq!(resp.model, "gem/gemini-2.5-flash");
        assert_eq!(resp.message.content.as_deref(), Some("Let me check."));
        assert_eq!(
            resp.message.tool_calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                ToolCall {
                    id: "fc-9".into(),
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
        assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            resp.usage,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 10,
                total_tokens: 20
            })
        );
        for (reason, expected) in [
            ("STOP", FinishReason::Stop),
            ("MAX_TOKENS", FinishReason::Length),
            ("SAFETY", FinishReason::ContentFilter),
            ("RECITATION", FinishReason::ContentFilter),
            ("MALFORMED_FUNCTION_CALL", FinishReason::Other),
            ("SOMETHING_NEW", FinishReason::Other),
        ] {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}]},
                "finishReason": reason}]});
            let resp = parse_chat_response("gem", body.to_string().as_bytes()).unwrap();
            assert_eq!(resp.finish_reason, expected, "{reason}");
            assert_eq!(resp.usage, None);
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "g"});
        let resp = parse_chat_response("gem", blocked.to_string().as_bytes()).unwrap();
        assert_eq!(resp.finish_reason, FinishReason::ContentFilter);
        assert_eq!(resp.message.content, None);
        let empty = parse_chat_response("gem", b"{}").unwrap_err();
        assert_eq!(empty.code, ErrorCode::UpstreamError);
        let broken = parse_chat_response("gem", b"{\"candidates\": 3}").unwrap_err();
        assert_eq!(broken.code, ErrorCode::UpstreamError);
    }

    fn google_error(code: u16, status: &str, message: &str, details: Value) -> String {
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
    }

    #[test]
    fn googles_errors_map_onto_the_shared_codes() {
        let prepared = PreparedRequest {
            http: build_chat(
                &endpoint(),
                "m",
                &request(
                    json!({"model": "gem/m", "messages": [{"role": "user", "content": "hi"}]}),
                ),
                false,
            )
            .unwrap(),
            format: WireFormat::Provider(ProviderKind::Gemini),
            provider: Some("gem".into()),
        };
        let decode = |status: u16, retry_after: Option<&str>, body: &str| {
            prepared
                .decode_response(status, retry_after, body.as_bytes())
                .unwrap_err()
        };
        let quota = google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota.",
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]),
        );
        let e = decode(429, None, &quota);
        assert_eq!((e.code, e.retry_after), (ErrorCode::RateLimited, Some(31)));
        assert!(e.retryable);
        assert!(e.message.contains("exceeded your current quota"), "{e:?}");
        // The header, when there is one, has the last word.
        assert_eq!(decode(429, Some("4"), &quota).retry_after, Some(4));

        let e = decode(
            503,
            None,
            &google_error(503, "UNAVAILABLE", "The model is overloaded.", json!([])),
        );
        assert_eq!((e.code, e.retryable), (ErrorCode::UpstreamError, true));
        assert!(e.message.contains("overloaded"), "{e:?}");

        let e = decode(
            400,
            None,
            &google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload.", json!([])),
        );
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("Invalid JSON payload"), "{e:?}");

        // A wrong key is a 400 from Google; it is the upstream refusing the key, and its text
        // (which may quote the key) is not passed on.
        let wrong_key = google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("API key not valid: {KEY}. Please pass a valid API key."),
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
        );
        for (status, body) in [
            (400, wrong_key),
            (
                403,
                google_error(403, "PERMISSION_DENIED", &format!("key {KEY}"), json!([])),
            ),
            (
                401,
                google_error(401, "UNAUTHENTICATED", &format!("key {KEY}"), json!([])),
            ),
        ] {
            let e = decode(status, None, &body);
            assert_eq!(e.code, ErrorCode::UpstreamUnauthorized, "{status}");
            assert!(!e.message.contains(KEY), "{e:?}");
        }
        let e = decode(
            404,
            None,
            &google_error(404, "NOT_FOUND", "models/nope is not found", json!([])),
        );
        assert_eq!(e.code, ErrorCode::NotFound);
        // A body that is not Google's shape still maps by status.
        let e = decode(502, None, "<html>bad gateway</html>");
        assert_eq!(e.code, ErrorCode::UpstreamError);
    }

    /// Gemini's stream as SSE text: one `data:` line per chunk, no event names, no end marker.
    fn sse(chunks: &[Value]) -> String {
        chunks
            .iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect()
    }

    fn decode(text: &str, chunk: usize) -> (Vec<StreamEvent>, bool) {
        let mut decoder =
            ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::Gemini), Some("gem"));
        let mut events = Vec::new();
        for piece in text.as_bytes().chunks(chunk) {
            events.extend(decoder.push(piece));
        }
        events.extend(decoder.finish());
        (events, decoder.is_done())
    }

    fn chunk(parts: Value, finish: Option<&str>, usage: Option<(u32, u32)>) -> Value {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(reason) = finish {
            candidate["finishReason"] = json!(reason);
        }
        let mut chunk = json!({"candidates": [candidate], "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-1"});
        if let Some((prompt, candidates)) = usage {
            chunk["usageMetadata"] = json!({"promptTokenCount": prompt,
                "candidatesTokenCount": candidates, "totalTokenCount": prompt + candidates});
        }
        chunk
    }

    fn stream_text() -> String {
        sse(&[
            chunk(json!([{"text": "Checking"}]), None, Some((12, 1))),
            chunk(
                json!([{"text": "hmm", "thought": true}, {"text": " now."}]),
                None,
                Some((12, 3)),
            ),
            chunk(
                json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
                None,
                Some((12, 9)),
            ),
            chunk(
                json!([{"functionCall": {"id": "fc-7", "name": "now", "args": {}}}]),
                Some("STOP"),
                Some((12, 30)),
            ),
        ])
    }

    #[test]
    fn a_stream_becomes_normalized_events_however_it_is_cut() {
        let text = stream_text();
        let (whole, done) = decode(&text, text.len());
        assert!(done);
        for size in [1, 7, 64] {
            assert_eq!(decode(&text, size).0, whole, "chunks of {size} bytes");
        }
        assert_eq!(
            whole,
            vec![
                StreamEvent::Start {
                    id: "resp-1".into(),
                    model: "gem/gemini-2.5-flash".into()
                },
                StreamEvent::TextDelta {
                    text: "Checking".into()
                },
                StreamEvent::TextDelta {
                    text: " now.".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    id: Some("call_0".into()),
                    name: Some("get_weather".into()),
                    arguments: "{\"city\":\"Paris\"}".into()
                },
                StreamEvent::ToolCall {
                    index: 0,
                    call: ToolCall {
                        id: "call_0".into(),
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into()
                    }
                },
                StreamEvent::ToolCallDelta {
                    index: 1,
                    id: Some("fc-7".into()),
                    name: Some("now".into()),
                    arguments: "{}".into()
                },
                StreamEvent::ToolCall {
                    index: 1,
                    call: ToolCall {
                        id: "fc-7".into(),
                        name: "now".into(),
                        arguments: "{}".into()
                    }
                },
                StreamEvent::Usage {
                    usage: Usage {
                        prompt_tokens: 12,
                        completion_tokens: 30,
                        total_tokens: 42
                    }
                },
                StreamEvent::Finish {
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
        let mut acc = ChatAccumulator::new();
        for event in &whole {
            acc.push(event);
        }
        let resp = acc.result().unwrap();
        assert_eq!(resp.message.content.as_deref(), Some("Checking now."));
        assert_eq!(resp.message.tool_calls.len(), 2);

        // A stream that stops for its length says so.
        let text = sse(&[
            chunk(json!([{"text": "a b"}]), None, None),
            chunk(json!([{"text": " c"}]), Some("MAX_TOKENS"), Some((2, 3))),
        ]);
        let (events, done) = decode(&text, 5);
        assert!(done);
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish {
                finish_reason: FinishReason::Length
            })
        );
    }

    #[test]
    fn a_stream_error_or_a_cut_ends_the_stream_with_an_error() {
        let text = sse(&[
            chunk(json!([{"text": "partial"}]), None, None),
            json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
            chunk(json!([{"text": "late"}]), Some("STOP"), None),
        ]);
        let (events, done) = decode(&text, 5);
        assert!(done);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, StreamEvent::TextDelta { text } if text == "late"))
        );
        let Some(StreamEvent::Error { error }) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(error.code, ErrorCode::UpstreamError);
        assert!(error.retryable);
        assert!(error.message.contains("overloaded"));

        let quota = sse(&[
            json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}),
        ]);
        let (events, _) = decode(&quota, 64);
        assert!(
            matches!(events.last(), Some(StreamEvent::Error { error }) if error.code == ErrorCode::RateLimited),
            "{events:?}"
        );

        // Without a chunk that gives a finish reason, the end of the body is a cut.
        let text = stream_text();
        let cut = &text[..text.rfind("data:").unwrap()];
        let (events, done) = decode(cut, 9);
        assert!(done);
        let Some(StreamEvent::Error { error }) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(error.code, ErrorCode::StreamInterrupted);

        let (events, _) = decode("data: {\"candidates\": 1}\n\n", 64);
        assert!(
            matches!(&events[..], [StreamEvent::Error { error }] if error.code == ErrorCode::UpstreamError),
            "{events:?}"
        );
    }

    #[test]
    fn a_blocked_prompt_streams_a_content_filter_finish() {
        let text = sse(&[json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}})]);
        let (events, done) = decode(&text, 64);
        assert!(done);
        assert_eq!(
            &events[1..],
            &[
                StreamEvent::Usage {
                    usage: Usage {
                        prompt_tokens: 4,
                        completion_tokens: 0,
                        total_tokens: 4
                    }
                },
                StreamEvent::Finish {
                    finish_reason: FinishReason::ContentFilter
                }
            ]
        );
    }
}
