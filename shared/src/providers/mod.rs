//! Provider translation: one module per wire format ("kind"). Adding a provider is one module here
//! plus one arm in each `match` below; both SDK modes and the proxy get it at once.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

use crate::chat::{ChatRequest, ChatResponse};
use crate::error::ApiError;
use crate::route::{HttpRequest, ProviderEndpoint};
use crate::sse::SseEvent;
use crate::stream::StreamEvent;

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ProviderKind {
    /// OpenAI chat completions: OpenAI, Ollama, vLLM, llama.cpp server, LM Studio, OpenRouter, Groq...
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Google's Gemini API (`generateContent`).
    #[serde(rename = "gemini")]
    Gemini,
}

impl ProviderKind {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// Builds the upstream request for `model` (the part after `"<provider>/"`); refuses what the
/// provider's format cannot express.
pub(crate) fn build_chat(
    endpoint: &ProviderEndpoint,
    model: &str,
    req: &ChatRequest,
    stream: bool,
) -> Result<HttpRequest, ApiError> {
    match endpoint.kind {
        ProviderKind::OpenAi => Ok(openai::build_chat(endpoint, model, req, stream)),
        ProviderKind::Anthropic => anthropic::build_chat(endpoint, model, req, stream),
        ProviderKind::Gemini => gemini::build_chat(endpoint, model, req, stream),
    }
}

/// Parses a successful non-streamed answer.
pub(crate) fn parse_chat_response(
    kind: ProviderKind,
    provider: &str,
    body: &[u8],
) -> Result<ChatResponse, ApiError> {
    match kind {
        ProviderKind::OpenAi => openai::parse_chat_response(provider, body),
        ProviderKind::Anthropic => anthropic::parse_chat_response(provider, body),
        ProviderKind::Gemini => gemini::parse_chat_response(provider, body),
    }
}

/// Maps a failed answer (status outside 2xx) onto the taxonomy, with the provider's own
/// explanation where it has one.
pub(crate) fn upstream_error(
    kind: ProviderKind,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> ApiError {
    let message = match kind {
        ProviderKind::OpenAi => openai::error_message(body),
        ProviderKind::Anthropic => anthropic::error_message(body),
        // Google's errors say more than their status (see there).
        ProviderKind::Gemini => return gemini::upstream_error(status, retry_after, body),
    };
    ApiError::from_upstream_status(status, message.as_deref(), retry_after)
}

/// A provider's stream decoder: SSE events in, normalized events out.
#[derive(Debug)]
pub enum ProviderStreamDecoder {
    /// OpenAI chat completion chunks.
    OpenAi(openai::StreamDecoder),
    /// Anthropic message stream events.
    Anthropic(anthropic::StreamDecoder),
    /// Gemini `GenerateContentResponse` chunks.
    Gemini(gemini::StreamDecoder),
}

/// A fresh decoder for a provider's stream; `provider` is the configured name.
pub(crate) fn stream_decoder(kind: ProviderKind, provider: &str) -> ProviderStreamDecoder {
    match kind {
        ProviderKind::OpenAi => ProviderStreamDecoder::OpenAi(openai::StreamDecoder::new(provider)),
        ProviderKind::Anthropic => {
            ProviderStreamDecoder::Anthropic(anthropic::StreamDecoder::new(provider))
        }
        ProviderKind::Gemini => ProviderStreamDecoder::Gemini(gemini::StreamDecoder::new(provider)),
    }
}

impl ProviderStreamDecoder {
    /// Handles one SSE event.
    pub(crate) fn on_event(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) {
        match self {
            ProviderStreamDecoder::OpenAi(d) => d.on_event(event, out),
            ProviderStreamDecoder::Anthropic(d) => d.on_event(event, out),
            ProviderStreamDecoder::Gemini(d) => d.on_event(event, out),
        }
    }

    /// Handles the end of the body; emits the terminal events if the stream may end here.
    pub(crate) fn on_end(&mut self, out: &mut Vec<StreamEvent>) {
        match self {
            ProviderStreamDecoder::OpenAi(d) => d.on_end(out),
            ProviderStreamDecoder::Anthropic(d) => d.on_end(out),
            ProviderStreamDecoder::Gemini(d) => d.on_end(out),
        }
    }
}
