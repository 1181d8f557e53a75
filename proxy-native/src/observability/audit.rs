//! Audit lines: one `tracing` event per chat and per MCP tool call, with target
//! [`AUDIT_TARGET`], written when the exchange ends (for a stream: after its last event, or when
//! the client goes away), together with its metrics.
//!
//! A record is a value that lives as long as the exchange and writes its line when dropped, so
//! that no way out of a handler (an error, a `?`, a client that disconnects and drops the
//! handler's future or the stream) can skip it.
//!
//! Lines carry who (the user), what (route, upstream, model or tool), how long and how it ended
//! (`ok`, `tool_error` for a tool result with `isError`, or the error code; `aborted` when the
//! client went away first), and the reported token usage. Message contents are never logged; tool
//! arguments only with `[observability] audit_arguments = true`. Names a client sent are cut to a
//! bounded length; keys are never part of what is recorded.

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::CallToolResult;
use switchyard_shared::error::truncate;
use switchyard_shared::mcp::{McpToolCall, McpToolEvent};
use switchyard_shared::{ApiError, ChatRequest, ChatResponse, ErrorCode, FinishReason, ModelId};
use switchyard_shared::{StreamEvent, Usage};

use super::metrics::{ActiveStream, Metrics, StreamKind};
use crate::stream_relay::RelayObserver;

/// The `tracing` target of audit lines (filter them with `RUST_LOG=switchyard::audit=info`).
pub const AUDIT_TARGET: &str = "switchyard::audit";

/// Longest client-sent name (model, server, tool, request id) put into a line, in bytes.
const MAX_NAME: usize = 200;
/// Longest tool arguments put into a line (as JSON), in bytes.
const MAX_ARGUMENTS: usize = 4096;

/// Who made a request and how it arrived: what every audit line of the request shares.
#[derive(Debug)]
pub struct RequestFacts {
    /// The caller's user name.
    pub user: Arc<str>,
    /// How the caller was recognized: `anonymous`, `api_key` or `jwt` (a key and a JWT user of
    /// the same name are different callers).
    pub auth: &'static str,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The matched route template.
    pub route: String,
    /// When the handler began.
    pub started: Instant,
    /// Where the outcome is counted.
    pub metrics: Metrics,
    /// Whether tool arguments go into the line.
    pub audit_arguments: bool,
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The tool ran and reported a failure (`isError: true`).
    ToolError,
    Failed(ErrorCode),
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Failed(code) => code.as_str(),
        }
    }

    fn error(self) -> Option<ErrorCode> {
        match self {
            Outcome::Failed(code) => Some(code),
            _ => None,
        }
    }
}

/// The audit record of one chat; its line is written when it is dropped.
#[derive(Debug)]
pub struct ChatAudit {
    facts: RequestFacts,
    model: String,
    stream: bool,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    outcome: Option<Outcome>,
    active: Option<ActiveStream>,
}

impl ChatAudit {
    /// The record of `req`, streamed or not.
    pub fn new(facts: RequestFacts, req: &ChatRequest, stream: bool) -> Self {
        ChatAudit {
            facts,
            model: truncate(&req.model, MAX_NAME).to_owned(),
            stream,
            usage: None,
            finish_reason: None,
            outcome: None,
            active: None,
        }
    }

    /// Records the answer (or the error) and writes the line.
    pub fn finish(mut self, result: Result<&ChatResponse, &ApiError>) {
        match result {
            Ok(response) => {
                self.usage = response.usage;
                self.finish_reason = Some(response.finish_reason);
                self.outcome = Some(Outcome::Ok);
            }
            Err(error) => self.outcome = Some(Outcome::Failed(error.code)),
        }
    }
}

impl RelayObserver<StreamEvent> for ChatAudit {
    fn started(&mut self) {
        self.active = Some(self.facts.metrics.stream_started(StreamKind::Chat));
    }

    fn event(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Usage { usage } => self.usage = Some(*usage),
            StreamEvent::Finish { finish_reason } => {
                self.finish_reason = Some(*finish_reason);
                self.outcome = Some(Outcome::Ok);
            }
            StreamEvent::Error { error } => self.outcome = Some(Outcome::Failed(error.code)),
            _ => {}
        }
    }
}

impl Drop for ChatAudit {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::Failed(ErrorCode::Aborted));
        let elapsed = self.facts.started.elapsed();
        let facts = &self.facts;
        let upstream = ModelId::parse(&self.model).ok().map(|id| id.provider);
        let usage = self.usage.as_ref();
        tracing::info!(
            target: AUDIT_TARGET,
            kind = "chat",
            user = &*facts.user,
            auth = facts.auth,
            request_id = facts.request_id,
            route = facts.route,
            upstream,
            model = self.model,
            stream = self.stream,
            duration_ms = elapsed.as_millis() as u64,
            outcome = outcome.as_str(),
            prompt_tokens = usage.map(|u| u.prompt_tokens),
            completion_tokens = usage.map(|u| u.completion_tokens),
            total_tokens = usage.map(|u| u.total_tokens),
            finish_reason = self.finish_reason.map(finish_reason_name),
            "chat"
        );
        facts.metrics.record_chat(
            &self.model,
            self.stream,
            outcome.as_str(),
            elapsed,
            usage,
            outcome.error(),
        );
        // The stream stops counting as active only once its line is written.
        self.active.take();
    }
}

/// The audit record of one MCP tool call; its line is written when it is dropped.
#[derive(Debug)]
pub struct ToolAudit {
    facts: RequestFacts,
    server: String,
    tool: String,
    arguments: Option<String>,
    stream: bool,
    outcome: Option<Outcome>,
    active: Option<ActiveStream>,
}

impl ToolAudit {
    /// The record of `call`, streamed or not.
    pub fn new(facts: RequestFacts, call: &McpToolCall, stream: bool) -> Self {
        let arguments = facts.audit_arguments.then(|| {
            let json = serde_json::to_string(&call.arguments).unwrap_or_default();
            let cut = truncate(&json, MAX_ARGUMENTS);
            if cut.len() < json.len() {
                format!("{cut}...")
            } else {
                json
            }
        });
        ToolAudit {
            facts,
            server: truncate(&call.server, MAX_NAME).to_owned(),
            tool: truncate(&call.name, MAX_NAME).to_owned(),
            arguments,
            stream,
            outcome: None,
            active: None,
        }
    }

    /// Records the result (or the error) and writes the line.
    pub fn finish(mut self, result: Result<&CallToolResult, &ApiError>) {
        self.outcome = Some(match result {
            Ok(result) => tool_outcome(result),
            Err(error) => Outcome::Failed(error.code),
        });
    }
}

fn tool_outcome(result: &CallToolResult) -> Outcome {
    if result.is_error == Some(true) {
        Outcome::ToolError
    } else {
        Outcome::Ok
    }
}

impl RelayObserver<McpToolEvent> for ToolAudit {
    fn started(&mut self) {
        self.active = Some(self.facts.metrics.stream_started(StreamKind::ToolCall));
    }

    fn event(&mut self, event: &McpToolEvent) {
        match event {
            McpToolEvent::Result { result } => self.outcome = Some(tool_outcome(result)),
            McpToolEvent::Error { error } => self.outcome = Some(Outcome::Failed(error.code)),
            McpToolEvent::Progress { .. } => {}
        }
    }
}

impl Drop for ToolAudit {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::Failed(ErrorCode::Aborted));
        let elapsed = self.facts.started.elapsed();
        let facts = &self.facts;
        tracing::info!(
            target: AUDIT_TARGET,
            kind = "tool_call",
            user = &*facts.user,
            auth = facts.auth,
            request_id = facts.request_id,
            route = facts.route,
            upstream = self.server,
            tool = self.tool,
            stream = self.stream,
            duration_ms = elapsed.as_millis() as u64,
            outcome = outcome.as_str(),
            arguments = self.arguments,
            "tool_call"
        );
        facts.metrics.record_tool_call(
            &self.server,
            self.stream,
            outcome.as_str(),
            elapsed,
            outcome.error(),
        );
        self.active.take();
    }
}

/// The wire name of a finish reason.
fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other => "other",
    }
}

/// A client-sent request id, bounded for the line.
pub(super) fn bounded(name: &str) -> String {
    truncate(name, MAX_NAME).to_owned()
}
