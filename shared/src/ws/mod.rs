//! The proxy API over one WebSocket (`GET /api/ws`), described once and without I/O: the frames,
//! the server's state machine ([`ServerSession`]), the client's ([`ClientSession`]) and the
//! heartbeat ([`Heartbeat`]). The proxy (axum) and the SDK (the browser's `WebSocket`) only move
//! text frames in and out and bring the clock (`now`, a [`Duration`] since any origin they
//! choose); every decision is made here, so both ends agree by construction.
//!
//! # Frames
//!
//! Every frame is one JSON text message. Binary messages are refused (close `1003`).
//!
//! ## Client → server
//!
//! A request names a client-chosen `id` and an `op`; `body` is exactly the body (or, for the list
//! operations, the query) of the HTTP route it stands for:
//!
//! ```json
//! {"op": "auth", "token": "sk-..."}
//! {"id": "1", "op": "chat", "body": {"model": "openai/gpt-4o-mini", "messages": [...]}}
//! {"id": "2", "op": "chat_stream", "body": {"model": "openai/gpt-4o-mini", "messages": [...]}}
//! {"id": "3", "op": "mcp_call", "body": {"server": "fs", "name": "read", "arguments": {}}}
//! {"id": "4", "op": "mcp_list_tools", "body": {"server": "fs", "cursor": "abc"}}
//! {"id": "5", "op": "models"}
//! {"op": "cancel", "id": "2"}
//! {"op": "ping"}
//! ```
//!
//! | `op` | HTTP route | `body` | answer |
//! |---|---|---|---|
//! | `chat` | `POST /api/llm/chat` | `ChatRequest` | `result` |
//! | `chat_stream` | `POST /api/llm/stream` | `ChatRequest` | `event`s (`StreamEvent`), `end` |
//! | `models` | `GET /api/llm/models` | none | `result` |
//! | `mcp_servers` | `GET /api/mcp/servers` | none | `result` |
//! | `mcp_list_tools` | `GET /api/mcp/listTools` | `McpListQuery` | `result` |
//! | `mcp_call` | `POST /api/mcp/tool` | `McpToolCall` | `result` |
//! | `mcp_call_stream` | `POST /api/mcp/tool/stream` | `McpToolCall` | `event`s (`McpToolEvent`), `end` |
//! | `mcp_list_resources` | `GET /api/mcp/listResources` | `McpListQuery` | `result` |
//! | `mcp_read_resource` | `POST /api/mcp/readResource` | `McpReadResource` | `result` |
//! | `mcp_list_prompts` | `GET /api/mcp/listPrompts` | `McpListQuery` | `result` |
//! | `mcp_get_prompt` | `POST /api/mcp/getPrompt` | `McpGetPrompt` | `result` |
//!
//! The OpenAI-compatible face (`/v1/*`), the MCP gateway and the health routes are protocols of
//! their own and are not carried here.
//!
//! Ids are strings of 1 to 64 characters from `A-Z a-z 0-9 . _ : -`, unique among the
//! connection's open requests (an id may be used again once its request has ended). `auth` is
//! allowed only as the first frame, and only when the upgrade request did not authenticate
//! (a bearer token in the `Authorization` header); a token is never accepted in the URL.
//! `cancel` of an id that is not open is ignored: the request may have just ended. `ping` is
//! answered with `pong`, for clients (browsers) that cannot send WebSocket pings.
//!
//! ## Server → client
//!
//! ```json
//! {"type": "result", "id": "1", "body": {"id": "chatcmpl-1", "model": "openai/gpt-4o-mini", ...}}
//! {"type": "event", "id": "2", "event": {"type": "text_delta", "text": "Hel"}}
//! {"type": "end", "id": "2"}
//! {"type": "error", "id": "3", "error": {"code": "not_found", "message": "...", "retryable": false}}
//! {"type": "error", "error": {"code": "bad_request", "message": "...", "retryable": false}}
//! {"type": "pong"}
//! ```
//!
//! Every request ends with exactly one `result` (a single answer), `end` (a stream, after its
//! last event: `finish`, or a tool call's `result`) or `error` (the shared
//! [`ApiError`](crate::ApiError); a stream's `error` event is sent as this frame). A cancelled
//! request ends with `error` `aborted`.
//! An `error` without `id` concerns the connection: a frame that cannot be read, an id that is
//! invalid or already open. Unknown `type`s are ignored by the client, so that the server may add
//! frames.
//!
//! # Limits
//!
//! A frame larger than [`Limits::max_frame_bytes`] closes the connection (`1009`) before it is
//! parsed (the driver gives its WebSocket library the same limit, so that such a frame is not
//! even buffered whole). At most [`Limits::max_open_requests`] requests are open at once; more
//! are answered with `rate_limited`.
//!
//! The server queues at most [`Limits::max_stream_queued_bytes`] of a stream's events and
//! [`Limits::max_queued_bytes`] in all: beyond that the producer waits ([`Pushed::Full`]), and a
//! stream that has waited [`Limits::stall_timeout`] with nothing at all transmitted meanwhile
//! (the client reads nothing) is stopped with `stream_interrupted`. Final frames (`result`,
//! `end`, `error`) are always queued, one per request, so a connection's queue stays below
//! `max_queued_bytes` plus one final frame per open request. A client that keeps sending
//! without reading (pings, refused requests) is closed with `4001`.
//!
//! # Close codes
//!
//! | code   | when                                                                        |
//! |--------|-----------------------------------------------------------------------------|
//! | `1000` | normal close                                                                |
//! | `1001` | the server is shutting down (after its open requests have ended)            |
//! | `1003` | a binary frame                                                              |
//! | `1008` | authentication missing, late, repeated or refused; the reason says which    |
//! | `1009` | a frame larger than the limit                                               |
//! | `1011` | an internal error of the server                                             |
//! | `4000` | heartbeat timeout: the peer answered no ping in time                        |
//! | `4001` | the client sends but does not read, and the server's queue is full          |
//!
//! Losing the socket fails every open request on the client ([`error_for_close`]): a stream that
//! had begun with `stream_interrupted`, anything else with `network_error`, except where the
//! close code says otherwise (`1008`: `unauthorized`, `1009`: `payload_too_large`, `1011`:
//! `internal`).

mod client;
mod frame;
mod heartbeat;
mod server;

use core::time::Duration;

pub use client::{ClientSession, Reply, StreamItem, error_for_close};
pub use frame::{OpKind, Operation};
pub use heartbeat::{Heartbeat, HeartbeatAction};
pub use server::{Action, CancelReason, Pushed, ServerSession};

/// The path of the WebSocket route.
pub const PATH: &str = "/api/ws";

/// The longest request id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// What a frame adds around a request body, at most, for sizing [`Limits::max_frame_bytes`] from
/// the HTTP routes' body limit.
pub const ENVELOPE_BYTES: usize = 1024;

/// WebSocket close codes this protocol uses (RFC 6455 section 7.4, and 4000-4999 for its own).
pub mod close_code {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The connection was lost without a close frame; never sent, only reported by WebSocket APIs.
    pub const ABNORMAL: u16 = 1006;
    /// A binary frame, which this protocol does not use.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Authentication missing, late, repeated or refused.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame larger than the limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An internal error of the server.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The peer answered no ping in time.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The client sends but does not read, and the server's queue is full.
    pub const NOT_READING: u16 = 4001;
}

/// The limits and timings of one connection. Both sides use the same values: the client checks
/// the frame size and the number of open requests itself, so that one oversized or surplus request
/// fails alone instead of closing the connection for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame accepted, in bytes (the HTTP body limit plus [`ENVELOPE_BYTES`]).
    pub max_frame_bytes: usize,
    /// Requests open at once on one connection.
    pub max_open_requests: usize,
    /// Bytes the server queues for the client across all requests, final frames aside.
    pub max_queued_bytes: usize,
    /// Bytes the server queues of one stream's events.
    pub max_stream_queued_bytes: usize,
    /// How long a stream may wait for the client to read before it is stopped.
    pub stall_timeout: Duration,
    /// How long the server waits for the `auth` frame.
    pub auth_timeout: Duration,
    /// Silence after which a side sends a ping.
    pub ping_interval: Duration,
    /// How long a side waits for any frame after its ping before it gives up on the connection.
    pub pong_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1024 * 1024 + ENVELOPE_BYTES,
            max_open_requests: 64,
            max_queued_bytes: 1024 * 1024,
            max_stream_queued_bytes: 256 * 1024,
            stall_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(20),
        }
    }
}

impl Limits {
    /// The defaults, with frames as large as the HTTP routes' bodies may be.
    pub fn with_body_limit(max_body_bytes: usize) -> Self {
        Limits {
            max_frame_bytes: max_body_bytes.saturating_add(ENVELOPE_BYTES),
            ..Limits::default()
        }
    }
}

/// What a side puts on the socket next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A text frame.
    Text(String),
    /// A WebSocket ping (the server's heartbeat; browsers answer it by themselves).
    Ping,
    /// A close frame; nothing follows it.
    Close {
        /// One of [`close_code`].
        code: u16,
        /// Why, for people (at most 123 bytes, as WebSocket allows).
        reason: String,
    },
}

/// A credential from an `auth` frame, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Whether `id` is a valid request id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A close reason cut to what a close frame can carry.
fn close_reason(reason: &str) -> String {
    crate::error::truncate(reason, 123).to_owned()
}

#[cfg(test)]
mod tests;
