//! Normalized chat types: what a frontend sends and receives, whatever the provider.
//!
//! These are also the proxy's request and response bodies, so the SDK's proxy mode and the proxy
//! cannot disagree about them.

use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

use crate::error::{ApiError, ErrorCode};

/// A chat completion request. The `model` is `"<provider>/<model>"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
// Unknown fields are refused rather than dropped, here and in every type a request nests: a
// caller who sets `base_url` or a misspelt parameter must learn that it had no effect.
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatRequest {
    /// `"<provider>/<model>"`, e.g. `"local/llama3.2"`.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may ask for several tool calls at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub parallel_tool_calls: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub temperature: Option<f64>,
    /// Nucleus sampling probability mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub top_p: Option<f64>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub max_tokens: Option<u32>,
    /// Sequences that end generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub stop: Vec<String>,
    /// Seed for providers that support deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub seed: Option<i64>,
    /// Penalty on tokens already present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub presence_penalty: Option<f64>,
    /// Penalty proportional to token frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub frequency_penalty: Option<f64>,
}

impl ChatRequest {
    /// Checks what can be checked without knowing the provider.
    pub fn validate(&self) -> Result<(), ApiError> {
        ModelId::parse(&self.model)?;
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("`messages` must not be empty"));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::bad_request(
                "`temperature` must be between 0 and 2",
            ));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(ApiError::bad_request("`top_p` must be between 0 and 1"));
        }
        for tool in &self.tools {
            if tool.name.is_empty() {
                return Err(ApiError::bad_request("every tool needs a `name`"));
            }
        }
        Ok(())
    }
}

/// One message of a conversation, tagged by `role`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Message {
    /// Instructions for the model.
    System {
        /// The instructions.
        content: String,
        /// A name telling apart participants of the same role (OpenAI's `name`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        name: Option<String>,
    },
    /// What the user said: text, or text and images.
    User {
        /// Plain text or a list of parts.
        content: Content,
        /// A name telling apart participants of the same role (OpenAI's `name`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        name: Option<String>,
    },
    /// What the model said earlier, including tool calls it made.
    Assistant {
        /// The text, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        content: Option<String>,
        /// Tool calls the model asked for.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        tool_calls: Vec<ToolCall>,
        /// A name telling apart participants of the same role (OpenAI's `name`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        name: Option<String>,
    },
    /// The result of a tool call, sent back to the model.
    Tool {
        /// The `id` of the call this answers.
        tool_call_id: String,
        /// The result, as text (often JSON).
        content: String,
    },
}

impl Message {
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Message::System {
            content: text.into(),
            name: None,
        }
    }

    /// A plain-text user message.
    pub fn user(text: impl Into<String>) -> Self {
        Message::User {
            content: Content::Text(text.into()),
            name: None,
        }
    }
}

/// User content: a plain string or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and image parts, in order.
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part user message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ContentPart {
    /// A piece of text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL (`https:` or `data:`).
    ImageUrl {
        /// Where the image is.
        url: String,
        /// `"low"`, `"high"` or `"auto"`, where the provider supports it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        detail: Option<String>,
    },
}

/// A function the model may call; `parameters` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolDefinition {
    /// The function name.
    pub name: String,
    /// What the function does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default = "empty_object_schema")]
    #[cfg_attr(feature = "wasm", tsify(type = "Record<string, unknown>"))]
    pub parameters: serde_json::Value,
}

fn empty_object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool {
        /// The tool's name.
        name: String,
    },
}

/// A complete tool call made by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolCall {
    /// Identifier to answer with in a `tool` message.
    pub id: String,
    /// The function name.
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them (it may be invalid JSON).
    pub arguments: String,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit was reached.
    Length,
    /// The model wants tool results.
    ToolCalls,
    /// A content filter stopped it.
    ContentFilter,
    /// Anything else a provider reports.
    #[serde(other)]
    Other,
}

impl FinishReason {
    /// Maps a provider's finish reason string.
    pub fn from_provider(s: &str) -> Self {
        match s {
            "stop" | "end_turn" | "stop_sequence" | "eos" => FinishReason::Stop,
            "length" | "max_tokens" => FinishReason::Length,
            "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
            "content_filter" | "safety" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssistantMessage {
    /// The text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub content: Option<String>,
    /// Tool calls, if any.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
}

impl From<AssistantMessage> for Message {
    fn from(m: AssistantMessage) -> Self {
        Message::Assistant {
            content: m.content,
            tool_calls: m.tool_calls,
            name: None,
        }
    }
}

/// A complete (non-streamed) chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatResponse {
    /// The provider's response id.
    pub id: String,
    /// `"<provider>/<model>"` as the provider named the model.
    pub model: String,
    /// The answer.
    pub message: AssistantMessage,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Token counts, when the provider reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub usage: Option<Usage>,
}

/// `"<provider>/<model>"`, split at the first `/` (model names may contain more slashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelId<'a> {
    /// The configured provider name.
    pub provider: &'a str,
    /// The model name as the provider knows it.
    pub model: &'a str,
}

/// Puts tool calls numbered by their index in call order (stable, one copy of the sort for every
/// caller).
pub(crate) fn sort_by_index(calls: &mut [(u32, ToolCall)]) {
    calls.sort_by_key(|(i, _)| *i);
}

impl<'a> ModelId<'a> {
    /// Splits `"<provider>/<model>"`.
    pub fn parse(id: &'a str) -> Result<Self, ApiError> {
        match id.split_once('/') {
            Some((provider, model)) if !provider.is_empty() && !model.is_empty() => {
                Ok(ModelId { provider, model })
            }
            _ => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("model must be \"<provider>/<model>\", got {id:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_refused_at_every_depth_and_named() {
        let with = |patch: serde_json::Value| {
            let mut request = json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}],
                                     "tools": [{"name": "f"}], "tool_choice": "auto"});
            json_patch(&mut request, patch);
            serde_json::from_value::<ChatRequest>(request)
        };
        with(json!({})).unwrap();
        for (patch, field) in [
            (
                json!({"messages": [{"role": "user", "content": "hi", "nickname": "x"}]}),
                "nickname",
            ),
            (
                json!({"messages": [{"role": "system", "content": "s", "base_url": "u"}]}),
                "base_url",
            ),
            (json!({"tools": [{"name": "f", "url": "u"}]}), "url"),
            (
                json!({"tool_choice": {"tool": {"name": "f", "headers": {}}}}),
                "headers",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [
                    {"id": "1", "name": "f", "arguments": "{}", "api_key": "k"}]}]}),
                "api_key",
            ),
        ] {
            let error = with(patch).unwrap_err().to_string();
            assert!(
                error.contains(&format!("unknown field `{field}`")),
                "{error}"
            );
        }
        // An untagged list of parts cannot say which field; it is refused all the same.
        with(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "t", "x": 1}]}]}))
            .unwrap_err();
    }

    /// Replaces the top-level fields of `target` with those of `patch`.
    fn json_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
        for (key, value) in patch.as_object().unwrap() {
            target[key] = value.clone();
        }
    }

    #[test]
    fn model_ids_split_at_the_first_slash() {
        let id = ModelId::parse("openrouter/meta-llama/llama-3-8b").unwrap();
        assert_eq!(id.provider, "openrouter");
        assert_eq!(id.model, "meta-llama/llama-3-8b");
        for bad in ["", "gpt-4o", "/gpt-4o", "local/"] {
            assert_eq!(ModelId::parse(bad).unwrap_err().code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn messages_use_role_tags_and_both_content_forms() {
        let msgs: Vec<Message> = serde_json::from_value(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "url": "data:image/png;base64,AAAA"}
            ]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ]))
        .unwrap();
        assert_eq!(msgs[1], Message::user("hi"));
        assert!(
            matches!(&msgs[2], Message::User { content: Content::Parts(p), .. } if p.len() == 2)
        );
        assert!(
            matches!(&msgs[3], Message::Assistant { content: None, tool_calls, .. } if tool_calls[0].id == "c1")
        );
    }

    #[test]
    fn unknown_request_fields_are_refused() {
        let err = serde_json::from_value::<ChatRequest>(json!({
            "model": "a/b", "messages": [], "base_url": "http://evil"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("base_url"));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut req = ChatRequest {
            model: "local/m".into(),
            messages: vec![Message::user("x")],
            ..Default::default()
        };
        assert!(req.validate().is_ok());
        req.temperature = Some(3.0);
        assert!(req.validate().unwrap_err().message.contains("temperature"));
        req.temperature = None;
        req.messages.clear();
        assert!(req.validate().unwrap_err().message.contains("messages"));
    }

    #[test]
    fn unknown_finish_reasons_become_other() {
        let r: FinishReason = serde_json::from_value(json!("something_new")).unwrap();
        assert_eq!(r, FinishReason::Other);
        assert_eq!(
            FinishReason::from_provider("tool_calls"),
            FinishReason::ToolCalls
        );
    }
}
