//! The normalized stream: one event type for every provider, the decoder that turns a response
//! body into those events, and the accumulator that folds them back into a [`ChatResponse`].

use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

use crate::chat::{AssistantMessage, ChatResponse, FinishReason, ToolCall, Usage};
use crate::error::{ApiError, ErrorCode};
use crate::providers::{self, ProviderStreamDecoder};
use crate::route::WireFormat;
use crate::sse::{SseDecoder, SseEvent};

/// One event of a streamed chat answer, tagged by `type`.
///
/// A well-formed stream is: `start`, any number of deltas, one `tool_call` per completed call,
/// at most one `usage`, then exactly one `finish` or `error`, which is always last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StreamEvent {
    /// The answer has begun.
    Start {
        /// The provider's response id.
        id: String,
        /// `"<provider>/<model>"`.
        model: String,
    },
    /// More answer text.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// A piece of a tool call as it is generated.
    ToolCallDelta {
        /// Which call (calls are numbered from 0 in the order the model starts them).
        index: u32,
        /// The call id, on the first delta of a call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        id: Option<String>,
        /// The function name, on the first delta of a call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "wasm", tsify(optional))]
        name: Option<String>,
        /// More of the arguments' JSON text.
        arguments: String,
    },
    /// A tool call, complete.
    ToolCall {
        /// Which call.
        index: u32,
        /// The assembled call.
        call: ToolCall,
    },
    /// Token counts.
    Usage {
        /// The counts.
        usage: Usage,
    },
    /// The answer is complete.
    Finish {
        /// Why generation stopped.
        finish_reason: FinishReason,
    },
    /// The stream failed; nothing follows.
    Error {
        /// What went wrong.
        error: ApiError,
    },
}

impl StreamEvent {
    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::Finish { .. } | StreamEvent::Error { .. })
    }

    /// The event as one SSE frame of the proxy's stream route.
    pub fn to_sse(&self) -> String {
        // Serializing these plain data types cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        crate::sse::encode(None, &json)
    }

    /// Reads an event from its JSON text, as the derived `Deserialize` does but without its
    /// buffering (see `json.rs`): the tag first, then the variant's fields.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        #[serde(variant_identifier, rename_all = "snake_case")]
        enum Kind {
            Start,
            TextDelta,
            ToolCallDelta,
            ToolCall,
            Usage,
            Finish,
            Error,
        }
        #[derive(Deserialize)]
        struct Start {
            id: String,
            model: String,
        }
        #[derive(Deserialize)]
        struct TextDelta {
            text: String,
        }
        #[derive(Deserialize)]
        struct ToolCallDelta {
            index: u32,
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            name: Option<String>,
            arguments: String,
        }
        #[derive(Deserialize)]
        struct ToolCallDone {
            index: u32,
            call: ToolCall,
        }
        #[derive(Deserialize)]
        struct UsageReport {
            usage: Usage,
        }
        #[derive(Deserialize)]
        struct Finish {
            finish_reason: FinishReason,
        }
        #[derive(Deserialize)]
        struct Failure {
            error: ApiError,
        }
        use crate::json::fields;
        Ok(
            match crate::json::type_tag(bytes, "internally tagged enum StreamEvent")? {
                Kind::Start => {
                    let Start { id, model } = fields(bytes)?;
                    StreamEvent::Start { id, model }
                }
                Kind::TextDelta => {
                    let TextDelta { text } = fields(bytes)?;
                    StreamEvent::TextDelta { text }
                }
                Kind::ToolCallDelta => {
                    let ToolCallDelta {
                        index,
                        id,
                        name,
                        arguments,
                    } = fields(bytes)?;
                    StreamEvent::ToolCallDelta {
                        index,
                        id,
                        name,
                        arguments,
                    }
                }
                Kind::ToolCall => {
                    let ToolCallDone { index, call } = fields(bytes)?;
                    StreamEvent::ToolCall { index, call }
                }
                Kind::Usage => {
                    let UsageReport { usage } = fields(bytes)?;
                    StreamEvent::Usage { usage }
                }
                Kind::Finish => {
                    let Finish { finish_reason } = fields(bytes)?;
                    StreamEvent::Finish { finish_reason }
                }
                Kind::Error => {
                    let Failure { error } = fields(bytes)?;
                    StreamEvent::Error { error }
                }
            },
        )
    }
}

/// Turns a streamed response body, chunk by chunk, into [`StreamEvent`]s.
///
/// After the terminal event it ignores further input. [`finish`](Self::finish) must be called when
/// the body ends: a body that ends without a terminal event yields `stream_interrupted`.
#[derive(Debug)]
pub struct ChatStreamDecoder {
    sse: SseDecoder,
    format: FormatDecoder,
    done: bool,
}

#[derive(Debug)]
enum FormatDecoder {
    Switchyard,
    Provider(ProviderStreamDecoder),
}

impl ChatStreamDecoder {
    /// A decoder for a body in `format`; `provider` prefixes model names (`"<provider>/<model>"`).
    pub fn new(format: WireFormat, provider: Option<&str>) -> Self {
        let format = match format {
            WireFormat::Switchyard => FormatDecoder::Switchyard,
            WireFormat::Provider(kind) => FormatDecoder::Provider(providers::stream_decoder(
                kind,
                provider.unwrap_or_default(),
            )),
        };
        ChatStreamDecoder {
            sse: SseDecoder::new(),
            format,
            done: false,
        }
    }

    /// Whether the terminal event has been produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds a chunk of the body; returns the events it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Self { sse, format, done } = self;
        sse.push_with(chunk, |event| {
            if *done {
                return;
            }
            format.on_event(event, &mut out);
            if out.last().is_some_and(StreamEvent::is_terminal) {
                *done = true;
            }
        });
        out
    }

    /// Ends the body; returns the final events (an error if the stream was cut short).
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if let FormatDecoder::Provider(p) = &mut self.format {
            p.on_end(&mut out);
        }
        if !out.last().is_some_and(StreamEvent::is_terminal) {
            out.push(StreamEvent::Error {
                error: ApiError::new(
                    ErrorCode::StreamInterrupted,
                    "the stream ended before the answer was complete",
                ),
            });
        }
        out
    }
}

impl FormatDecoder {
    fn on_event(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) {
        match self {
            FormatDecoder::Switchyard => match StreamEvent::from_json(event.data.as_bytes()) {
                Ok(e) => out.push(e),
                Err(err) => out.push(StreamEvent::Error {
                    error: ApiError::new(
                        ErrorCode::UpstreamError,
                        format!("unreadable stream event: {err}"),
                    ),
                }),
            },
            FormatDecoder::Provider(p) => p.on_event(&event, out),
        }
    }
}

/// Folds stream events into the complete answer, as a non-streamed call would have returned it.
#[derive(Debug, Default, Clone)]
pub struct ChatAccumulator {
    id: String,
    model: String,
    text: String,
    has_text: bool,
    tool_calls: Vec<(u32, ToolCall)>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    error: Option<ApiError>,
}

impl ChatAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event into account.
    pub fn push(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            StreamEvent::TextDelta { text } => {
                self.text.push_str(text);
                self.has_text = true;
            }
            // Deltas are summarized by the `tool_call` event that completes them.
            StreamEvent::ToolCallDelta { .. } => {}
            StreamEvent::ToolCall { index, call } => self.tool_calls.push((*index, call.clone())),
            StreamEvent::Usage { usage } => self.usage = Some(*usage),
            StreamEvent::Finish { finish_reason } => self.finish = Some(*finish_reason),
            StreamEvent::Error { error } => self.error = Some(error.clone()),
        }
    }

    /// The answer so far, or the error that ended the stream. Before the terminal event this is
    /// `stream_interrupted`.
    pub fn result(&self) -> Result<ChatResponse, ApiError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Some(finish_reason) = self.finish else {
            return Err(ApiError::new(
                ErrorCode::StreamInterrupted,
                "the stream has not finished",
            ));
        };
        let mut calls = self.tool_calls.clone();
        crate::chat::sort_by_index(&mut calls);
        Ok(ChatResponse {
            id: self.id.clone(),
            model: self.model.clone(),
            message: AssistantMessage {
                content: self.has_text.then(|| self.text.clone()),
                tool_calls: calls.into_iter().map(|(_, c)| c).collect(),
            },
            finish_reason,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(events: &[StreamEvent]) -> String {
        events.iter().map(StreamEvent::to_sse).collect()
    }

    #[test]
    fn switchyard_frames_round_trip() {
        let events = vec![
            StreamEvent::Start {
                id: "r1".into(),
                model: "local/m".into(),
            },
            StreamEvent::TextDelta { text: "Hi".into() },
            StreamEvent::Usage {
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3,
                },
            },
            StreamEvent::Finish {
                finish_reason: FinishReason::Stop,
            },
        ];
        let mut d = ChatStreamDecoder::new(WireFormat::Switchyard, None);
        let got = d.push(frames(&events).as_bytes());
        assert_eq!(got, events);
        assert!(d.is_done());
        assert!(d.finish().is_empty());
    }

    #[test]
    fn a_cut_stream_ends_with_stream_interrupted() {
        let mut d = ChatStreamDecoder::new(WireFormat::Switchyard, None);
        let start = StreamEvent::TextDelta { text: "a".into() };
        assert_eq!(d.push(start.to_sse().as_bytes()), vec![start]);
        let end = d.finish();
        assert!(
            matches!(&end[..], [StreamEvent::Error { error }] if error.code == ErrorCode::StreamInterrupted)
        );
    }

    #[test]
    fn nothing_is_decoded_after_the_terminal_event() {
        let mut d = ChatStreamDecoder::new(WireFormat::Switchyard, None);
        let text = frames(&[
            StreamEvent::Finish {
                finish_reason: FinishReason::Stop,
            },
            StreamEvent::TextDelta {
                text: "late".into(),
            },
        ]);
        assert_eq!(d.push(text.as_bytes()).len(), 1);
    }

    #[test]
    fn the_accumulator_rebuilds_the_answer() {
        let mut acc = ChatAccumulator::new();
        assert_eq!(acc.result().unwrap_err().code, ErrorCode::StreamInterrupted);
        for e in [
            StreamEvent::Start {
                id: "r".into(),
                model: "p/m".into(),
            },
            StreamEvent::TextDelta { text: "a".into() },
            StreamEvent::TextDelta { text: "b".into() },
            StreamEvent::ToolCall {
                index: 1,
                call: ToolCall {
                    id: "c2".into(),
                    name: "g".into(),
                    arguments: "{}".into(),
                },
            },
            StreamEvent::ToolCall {
                index: 0,
                call: ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                },
            },
            StreamEvent::Finish {
                finish_reason: FinishReason::ToolCalls,
            },
        ] {
            acc.push(&e);
        }
        let r = acc.result().unwrap();
        assert_eq!(r.message.content.as_deref(), Some("ab"));
        assert_eq!(r.message.tool_calls[0].id, "c1");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    }
}
