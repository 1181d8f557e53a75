//! Switchyard's sans-IO core: the one place that knows the wire formats.
//!
//! Nothing here performs I/O. The SDK (browser `fetch`) and the proxy (`reqwest`) execute the
//! [`HttpRequest`]s this crate describes and feed the bytes they receive back into its parsers, so
//! both modes behave alike by construction.

pub mod agent;
pub mod chat;
mod decimal;
pub mod error;
pub mod faces;
pub mod json;
pub mod mcp;
pub mod providers;
pub mod retry;
pub mod route;
pub mod sse;
pub mod stream;
pub mod tokens;
pub mod ws;

pub use chat::{
    AssistantMessage, ChatRequest, ChatResponse, Content, ContentPart, FinishReason, Message,
    ModelId, ToolCall, ToolChoice, ToolDefinition, Usage,
};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use providers::ProviderKind;
pub use retry::{Decision, Failure, RetryPolicy};
pub use route::{
    HttpRequest, Method, ModelList, PreparedRequest, ProviderEndpoint, ProviderInfo, RouteTable,
    WireFormat, paths,
};
pub use stream::{ChatAccumulator, ChatStreamDecoder, StreamEvent};
