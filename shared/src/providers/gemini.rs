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
//!
//! Requests are built, and answers read, as `serde_json::Value` trees rather than through derived
//! types: the SDK already carries the code for those, and each derived type would add its own
//! to the browser's `.wasm` (measured for this module: 12 KiB more, 1.8 KiB more gzipped).

use serde_json::{Map, Value};

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

/// Google's documented stand-in for a thought signature. Thinking models sign their function
/// calls and Gemini 3 refuses a call sent back without its signature; the normalized tool call
/// has no room to carry it, so every call sent back bears this value, which tells the API to skip
/// the check (as it does for calls replayed from another model).
const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// A JSON object of these members. (Plain inserts: collecting into a map would bring the map's
/// bulk-building code into the `.wasm` for this one use.)
fn object(members: Vec<(&str, Value)>) -> Value {
    let mut object = Map::new();
    for (key, value) in members {
        object.insert(key.to_owned(), value);
    }
    Value::Object(object)
}

/// `{name: value}`: how Gemini tells the kinds of a part apart.
fn part(name: &str, value: Value) -> Value {
    object(vec![(name, value)])
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{what} has no equivalent in Gemini's API; leave it out for this provider"
    ))
}

fn image(url: &str) -> Result<Value, ApiError> {
    // Gemini reads images by URL only from its own file store, so anything else goes inline.
    let (mime_type, data) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .ok_or_else(|| unsupported("an image by URL (Gemini takes base64 `data:` URLs)"))?;
    Ok(part(
        "inlineData",
        object(vec![("mimeType", mime_type.into()), ("data", data.into())]),
    ))
}

/// Gemini takes a tool call's arguments as an object; the normalized call carries JSON text.
fn call_args(call: &ToolCall) -> Result<Value, ApiError> {
    if call.arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
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
        _ => part("output", content.into()),
    }
}

/// The name of the function the call `id`, made earlier in `messages`, called.
fn called_function<'a>(messages: &'a [Message], id: &str) -> Result<&'a str, ApiError> {
    messages
        .iter()
        .rev()
        .find_map(|earlier| match earlier {
            Message::Assistant { tool_calls, .. } => tool_calls
                .iter()
                .find(|call| call.id == id)
                .map(|call| call.name.as_str()),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the tool result for {id:?} answers no earlier tool call of this request; \
                 Gemini needs the call to name the function"
            ))
        })
}

/// The turns in Gemini's shape (`contents`), and the system parts apart.
fn conversation(messages: &[Message]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let (role, parts) = match message {
            Message::System { content, .. } => {
                system.push(part("text", content.as_str().into()));
                continue;
            }
            Message::User { content, .. } => (
                "user",
                match content {
                    Content::Text(text) => vec![part("text", text.as_str().into())],
                    Content::Parts(parts) => {
                        let mut out = Vec::new();
                        for p in parts {
                            out.push(match p {
                                ContentPart::Text { text } => part("text", text.as_str().into()),
                                ContentPart::ImageUrl { url, .. } => image(url)?,
                            });
                        }
                        out
                    }
                },
            ),
            Message::Assistant {
                content,
                tool_calls,
                ..
            } => {
                let mut parts = Vec::new();
                if let Some(text) = content.as_deref().filter(|text| !text.is_empty()) {
                    parts.push(part("text", text.into()));
                }
                for call in tool_calls {
                    let function_call = object(vec![
                        ("name", call.name.as_str().into()),
                        ("args", call_args(call)?),
                    ]);
                    parts.push(object(vec![
                        ("functionCall", function_call),
                        ("thoughtSignature", SKIP_THOUGHT_SIGNATURE.into()),
                    ]));
                }
                ("model", parts)
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let name = called_function(&messages[..at], tool_call_id)?;
                let response = object(vec![
                    ("name", name.into()),
                    ("response", function_response(content)),
                ]);
                ("user", vec![part("functionResponse", response)])
            }
        };
        // Gemini refuses a turn without parts (an assistant turn that said nothing).
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, so_far)) if *last == role => so_far.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let mut contents = Vec::new();
    for (role, parts) in turns {
        contents.push(object(vec![
            ("role", role.into()),
            ("parts", Value::Array(parts)),
        ]));
    }
    Ok((system, contents))
}

fn tool_config(choice: &ToolChoice) -> Value {
    let mut config = vec![(
        "mode",
        match choice {
            ToolChoice::Auto => "AUTO",
            ToolChoice::None => "NONE",
            ToolChoice::Required | ToolChoice::Tool { .. } => "ANY",
        }
        .into(),
    )];
    if let ToolChoice::Tool { name } = choice {
        config.push((
            "allowedFunctionNames",
            Value::Array(vec![name.as_str().into()]),
        ));
    }
    part("functionCallingConfig", object(config))
}

fn generation_config(req: &ChatRequest) -> Value {
    let mut config = Map::new();
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            config.insert(key.to_owned(), value);
        }
    };
    set("temperature", req.temperature.map(Value::from));
    set("topP", req.top_p.map(Value::from));
    set("maxOutputTokens", req.max_tokens.map(Value::from));
    let mut stop = Vec::new();
    for sequence in &req.stop {
        stop.push(Value::String(sequence.clone()));
    }
    set(
        "stopSequences",
        (!stop.is_empty()).then_some(Value::Array(stop)),
    );
    set("seed", req.seed.map(Value::from));
    set("presencePenalty", req.presence_penalty.map(Value::from));
    set("frequencyPenalty", req.frequency_penalty.map(Value::from));
    Value::Object(config)
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
    let (system, contents) = conversation(&req.messages)?;
    let mut body = Vec::new();
    if !system.is_empty() {
        body.push(("systemInstruction", part("parts", Value::Array(system))));
    }
    body.push(("contents", Value::Array(contents)));
    if !req.tools.is_empty() {
        let mut declarations = Vec::new();
        for tool in &req.tools {
            let mut declaration = vec![("name", tool.name.as_str().into())];
            if let Some(description) = &tool.description {
                declaration.push(("description", description.as_str().into()));
            }
            // The JSON Schema as it is; `parameters` would take only Google's OpenAPI subset,
            // which refuses common keys such as `additionalProperties` or `$schema`.
            declaration.push(("parametersJsonSchema", tool.parameters.clone()));
            declarations.push(object(declaration));
        }
        let tools = part("functionDeclarations", Value::Array(declarations));
        body.push(("tools", Value::Array(vec![tools])));
    }
    if let Some(choice) = &req.tool_choice {
        body.push(("toolConfig", tool_config(choice)));
    }
    body.push(("generationConfig", generation_config(req)));

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
        body: Some(crate::json::text(&object(body))),
    })
}

// ---------------------------------------------------------------------------------------------
// Response

/// One part of an answer that the normalized answer has room for. Other parts (code execution,
/// inline data) carry nothing it could hold; `thought` text is the model's reasoning, not its
/// answer.
enum InPart {
    Text(String),
    Call {
        id: Option<String>,
        name: String,
        arguments: String,
    },
}

/// A `GenerateContentResponse` (the whole answer, or one chunk of a stream), as far as it is read.
struct Reading {
    id: String,
    model: String,
    /// Whether there is a candidate at all (a prompt refused by the safety filters gets none).
    candidate: bool,
    parts: Vec<InPart>,
    finish: Option<FinishReason>,
    blocked: bool,
    usage: Option<Usage>,
    /// `{"code", "message", "status"}`, which a stream may send instead of an answer.
    error: Option<Value>,
}

fn take_str(value: &mut Value, key: &str) -> Option<String> {
    match value.get_mut(key).map(Value::take) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key)?.as_str()
}

/// A list member; `None` if it is there but is no list.
fn list(value: &mut Value, key: &str) -> Option<Vec<Value>> {
    match value.get_mut(key).map(Value::take) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(items),
        Some(_) => None,
    }
}

fn count(usage: &Value, key: &str) -> u32 {
    usage
        .get(key)
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Thinking tokens are generated (and billed) like the answer's, as in OpenAI's counts.
fn usage(usage: &Value) -> Option<Usage> {
    usage.as_object()?;
    let prompt = count(usage, "promptTokenCount");
    let completion =
        count(usage, "candidatesTokenCount").saturating_add(count(usage, "thoughtsTokenCount"));
    let total = match usage.get("totalTokenCount") {
        Some(_) => count(usage, "totalTokenCount"),
        None => prompt.saturating_add(completion),
    };
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
    })
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

fn arguments_text(args: Option<&Value>) -> String {
    match args {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(other) => crate::json::text(other),
    }
}

/// Reads a response; `what` names it in errors.
fn read(body: &[u8], what: &str) -> Result<Reading, ApiError> {
    let unreadable = |detail: &dyn std::fmt::Display| {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("upstream sent an unreadable {what}: {detail}"),
        )
    };
    let mut value: Value = crate::json::from_slice(body).map_err(|e| unreadable(&e))?;
    let shape = || unreadable(&"not a GenerateContentResponse");
    if !value.is_object() {
        return Err(shape());
    }
    let mut parts = Vec::new();
    let candidates = list(&mut value, "candidates").ok_or_else(shape)?;
    let mut candidate = candidates.into_iter().next();
    let mut finish = None;
    if let Some(candidate) = &mut candidate {
        // A candidate stopped by a filter, or by the token limit while thinking, may come
        // without content or without parts.
        let content = match candidate.get_mut("content").map(Value::take) {
            Some(mut content) => list(&mut content, "parts").ok_or_else(shape)?,
            None => Vec::new(),
        };
        for mut p in content {
            match p.get_mut("functionCall").map(Value::take) {
                Some(mut call @ Value::Object(_)) => parts.push(InPart::Call {
                    id: take_str(&mut call, "id").filter(|id| !id.is_empty()),
                    name: take_str(&mut call, "name").unwrap_or_default(),
                    arguments: arguments_text(call.get("args")),
                }),
                _ if p.get("thought") == Some(&Value::Bool(true)) => {}
                _ => {
                    if let Some(text) = take_str(&mut p, "text") {
                        parts.push(InPart::Text(text));
                    }
                }
            }
        }
        finish = str_at(candidate, "finishReason").map(finish_reason);
    }
    Ok(Reading {
        id: take_str(&mut value, "responseId").unwrap_or_default(),
        model: take_str(&mut value, "modelVersion").unwrap_or_default(),
        candidate: candidate.is_some(),
        parts,
        finish,
        blocked: value
            .pointer("/promptFeedback/blockReason")
            .is_some_and(|r| !r.is_null()),
        usage: value.get("usageMetadata").and_then(usage),
        error: value
            .get_mut("error")
            .map(Value::take)
            .filter(|e| !e.is_null()),
    })
}

/// Gemini ends a turn that calls functions with `STOP`; the normalized answer says why it
/// stopped: for the calls.
fn with_calls(reason: FinishReason, calls: bool) -> FinishReason {
    match reason {
        FinishReason::Stop if calls => FinishReason::ToolCalls,
        other => other,
    }
}

/// The call in normalized form; `ordinal` numbers the calls of one answer from 0.
fn tool_call(id: Option<String>, name: String, arguments: String, ordinal: u32) -> ToolCall {
    ToolCall {
        id: id.unwrap_or_else(|| format!("call_{ordinal}")),
        name,
        arguments,
    }
}

/// Parses a `GenerateContentResponse`.
pub(crate) fn parse_chat_response(provider: &str, body: &[u8]) -> Result<ChatResponse, ApiError> {
    let resp = read(body, "answer")?;
    let finish = match (resp.candidate, resp.finish) {
        (true, finish) => finish.unwrap_or(FinishReason::Stop),
        (false, _) if resp.blocked => FinishReason::ContentFilter,
        (false, _) => {
            return Err(ApiError::new(
                ErrorCode::UpstreamError,
                "upstream sent an answer with no candidates",
            ));
        }
    };
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for p in resp.parts {
        match p {
            InPart::Text(t) => text.get_or_insert_with(String::new).push_str(&t),
            InPart::Call {
                id,
                name,
                arguments,
            } => {
                let ordinal = tool_calls.len() as u32;
                tool_calls.push(tool_call(id, name, arguments, ordinal));
            }
        }
    }
    Ok(ChatResponse {
        id: resp.id,
        model: format!("{provider}/{}", resp.model),
        finish_reason: with_calls(finish, !tool_calls.is_empty()),
        message: AssistantMessage {
            content: text,
            tool_calls,
        },
        usage: resp.usage,
    })
}

/// Maps a failed answer onto the taxonomy. Google says 400 `INVALID_ARGUMENT` for a wrong key
/// (reason `API_KEY_INVALID`), which is read as the 401 it means; and it gives the retry delay of
/// a 429 in the body (`RetryInfo`), which stands in for a missing `Retry-After`.
pub(crate) fn upstream_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> ApiError {
    let value = crate::json::from_slice::<Value>(body).unwrap_or_default();
    let Some(error) = value.get("error").filter(|e| e.is_object()) else {
        return ApiError::from_upstream_status(status, None, retry_after);
    };
    let details = error
        .get("details")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let key_refused = details
        .iter()
        .any(|d| str_at(d, "reason") == Some("API_KEY_INVALID"));
    let status = if key_refused || str_at(error, "status") == Some("UNAUTHENTICATED") {
        401
    } else {
        status
    };
    let delay = details
        .iter()
        .find_map(|d| str_at(d, "retryDelay")?.strip_suffix('s'));
    let message = str_at(error, "message").filter(|m| !m.is_empty());
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
        let chunk = match read(data.as_bytes(), "stream chunk") {
            Ok(chunk) => chunk,
            Err(error) => return self.fail(error, out),
        };
        if let Some(error) = chunk.error {
            let message = str_at(&error, "message")
                .filter(|m| !m.is_empty())
                .unwrap_or("upstream reported an error mid-stream");
            let error = ApiError::new(
                stream_error_code(str_at(&error, "status").unwrap_or_default()),
                format!("upstream failed mid-stream: {}", truncate(message, 500)),
            );
            return self.fail(error, out);
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id,
                model: format!("{}/{}", self.provider, chunk.model),
            });
        }
        if chunk.blocked {
            self.finish = Some(FinishReason::ContentFilter);
        }
        for p in chunk.parts {
            match p {
                InPart::Text(text) if !text.is_empty() => {
                    out.push(StreamEvent::TextDelta { text });
                }
                InPart::Text(_) => {}
                InPart::Call {
                    id,
                    name,
                    arguments,
                } => {
                    let index = self.next_call;
                    self.next_call += 1;
                    let call = tool_call(id, name, arguments, index);
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        id: Some(call.id.clone()),
                        name: Some(call.name.clone()),
                        arguments: call.arguments.clone(),
                    });
                    out.push(StreamEvent::ToolCall { index, call });
                }
            }
        }
        if let Some(finish) = chunk.finish {
            self.finish = Some(finish);
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
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
                        {"functionCall": {"name": "f", "args": {"a": 1}},
                            "thoughtSignature": SKIP_THOUGHT_SIGNATURE},
                        {"functionCall": {"name": "g", "args": {}},
                            "thoughtSignature": SKIP_THOUGHT_SIGNATURE}
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
        for candidate in [
            json!({"finishReason": "SAFETY", "safetyRatings": []}),
            json!({"content": {"role": "model"}, "finishReason": "SAFETY"}),
        ] {
            let body = json!({"candidates": [candidate]});
            let resp = parse_chat_response("gem", body.to_string().as_bytes()).unwrap();
            assert_eq!(resp.finish_reason, FinishReason::ContentFilter);
            assert_eq!(resp.message, AssistantMessage::default());
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "g"});
        let resp = parse_chat_response("gem", blocked.to_string().as_bytes()).unwrap();
        assert_eq!(resp.finish_reason, FinishReason::ContentFilter);
        assert_eq!(resp.message.content, None);
        let empty = parse_chat_response("gem", b"{}").unwrap_err();
        assert_eq!(empty.code, ErrorCode::UpstreamError);
        for broken in [
            json!({"candidates": 3}),
            json!({"candidates": [{"content": {"parts": "text"}}]}),
            json!([]),
        ] {
            let error = parse_chat_response("gem", broken.to_string().as_bytes()).unwrap_err();
            assert_eq!(error.code, ErrorCode::UpstreamError, "{broken}");
        }
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
