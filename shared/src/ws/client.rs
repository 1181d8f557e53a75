//! The client's side of a connection as a state machine: it names requests, writes their frames,
//! routes what arrives to them, and fails them all when the socket is lost.

use std::collections::{BTreeMap, VecDeque};

use core::time::Duration;
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::mcp::api::McpToolEvent;
use crate::stream::StreamEvent;

use super::frame::{self, OpKind, Operation, ServerFrame};
use super::heartbeat::{Heartbeat, HeartbeatAction};
use super::{Limits, Transmit, close_code};

/// An event of a stream, typed by the request's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// An event of a `chat_stream`.
    Chat(StreamEvent),
    /// An event of an `mcp_call_stream`.
    Tool(McpToolEvent),
}

/// What arrived for a request, or for the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A request's single answer: the body its HTTP route answers with; the request has ended.
    Result {
        /// The request id.
        id: String,
        /// The answer, to read as the route's answer type.
        body: Value,
    },
    /// A stream's event.
    Event {
        /// The request id.
        id: String,
        /// The event.
        event: StreamItem,
    },
    /// A stream ended after its last event; the request has ended.
    End {
        /// The request id.
        id: String,
    },
    /// A request failed; the request has ended.
    Error {
        /// The request id.
        id: String,
        /// What went wrong.
        error: ApiError,
    },
    /// The server reported a problem with the connection rather than with a request (a frame it
    /// could not read); nothing has ended.
    Connection(ApiError),
}

#[derive(Debug)]
struct Pending {
    kind: OpKind,
    /// Whether an event has arrived: losing the socket then interrupts a stream.
    started: bool,
}

/// The client's side of one connection.
pub struct ClientSession {
    limits: Limits,
    heartbeat: Heartbeat,
    next_id: u64,
    pending: BTreeMap<String, Pending>,
    out: VecDeque<Transmit>,
    closed: Option<ApiError>,
}

// Written by hand: the queued `auth` frame holds the token.
impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("next_id", &self.next_id)
            .field("pending", &self.pending)
            .field("queued_frames", &self.out.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl ClientSession {
    /// A session for a socket opened at `now`. With a `token`, the first frame is `auth` (a
    /// browser cannot set the upgrade request's `Authorization` header).
    pub fn new(now: Duration, limits: Limits, token: Option<&str>) -> Self {
        let mut out = VecDeque::new();
        if let Some(token) = token {
            out.push_back(Transmit::Text(frame::auth_text(token)));
        }
        ClientSession {
            heartbeat: Heartbeat::new(now, limits.ping_interval, limits.pong_timeout),
            limits,
            next_id: 1,
            pending: BTreeMap::new(),
            out,
            closed: None,
        }
    }

    /// Sends a request; its id, under which its [`Reply`]s arrive. A request the server would
    /// refuse for its size or for the number of open requests fails here, alone.
    pub fn start(&mut self, op: &Operation) -> Result<String, ApiError> {
        if let Some(error) = &self.closed {
            return Err(error.clone());
        }
        if self.pending.len() >= self.limits.max_open_requests {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} requests may be open on one connection",
                    self.limits.max_open_requests
                ),
            ));
        }
        let id = self.next_id.to_string();
        let text = frame::request_text(&id, op);
        if text.len() > self.limits.max_frame_bytes {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request is larger than the {} bytes the connection accepts",
                    self.limits.max_frame_bytes
                ),
            ));
        }
        self.next_id += 1;
        self.pending.insert(
            id.clone(),
            Pending {
                kind: op.kind(),
                started: false,
            },
        );
        self.out.push_back(Transmit::Text(text));
        Ok(id)
    }

    /// Stops a request: the server is told, and nothing more is reported for it (the caller
    /// reports `aborted` itself). `false` if it was not open.
    pub fn cancel(&mut self, id: &str) -> bool {
        if self.pending.remove(id).is_none() {
            return false;
        }
        if self.closed.is_none() {
            self.out.push_back(Transmit::Text(frame::cancel_text(id)));
        }
        true
    }

    /// A text frame arrived. Frames for ids that are not open (a request cancelled meanwhile)
    /// and frame types this version does not know are skipped.
    pub fn on_text(&mut self, now: Duration, text: &str) -> Option<Reply> {
        if self.closed.is_some() {
            return None;
        }
        self.heartbeat.heard(now);
        // The SDK's JSON reader (see `json.rs`): one parser in the `.wasm`, not a second.
        let frame: ServerFrame = match crate::json::from_slice(text.as_bytes()) {
            Ok(frame) => frame,
            Err(e) => {
                return Some(Reply::Connection(ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("unreadable frame from the proxy: {e}"),
                )));
            }
        };
        let Some(id) = frame.id else {
            return match (frame.kind.as_str(), frame.error) {
                ("error", Some(error)) => Some(Reply::Connection(error)),
                _ => None,
            };
        };
        let kind = self.pending.get(&id)?.kind;
        match frame.kind.as_str() {
            "result" if !kind.is_stream() => {
                self.pending.remove(&id);
                let body = frame.body.unwrap_or(Value::Null);
                Some(Reply::Result { id, body })
            }
            "event" if kind.is_stream() => {
                // Read from text with the same readers as the HTTP routes' streams: reading
                // from a `Value` would compile every event type's reading code a second time
                // into the browser's `.wasm`.
                let event = frame.event.and_then(|event| {
                    let bytes = serde_json::to_vec(&event).ok()?;
                    match kind {
                        OpKind::ChatStream => {
                            StreamEvent::from_json(&bytes).ok().map(StreamItem::Chat)
                        }
                        _ => McpToolEvent::from_json(&bytes).ok().map(StreamItem::Tool),
                    }
                });
                match event {
                    Some(event) => {
                        if let Some(p) = self.pending.get_mut(&id) {
                            p.started = true;
                        }
                        Some(Reply::Event { id, event })
                    }
                    None => Some(self.protocol_error(id, "an unreadable event")),
                }
            }
            "end" if kind.is_stream() => {
                self.pending.remove(&id);
                Some(Reply::End { id })
            }
            "error" => match frame.error {
                Some(error) => {
                    self.pending.remove(&id);
                    Some(Reply::Error { id, error })
                }
                None => Some(self.protocol_error(id, "an `error` frame without an error")),
            },
            "result" | "event" | "end" => {
                let what = format!("a `{}` frame for a `{}` request", frame.kind, kind.as_str());
                Some(self.protocol_error(id, &what))
            }
            _ => None,
        }
    }

    /// A frame that breaks the protocol ends its request, and the server is told to stop it.
    fn protocol_error(&mut self, id: String, what: &str) -> Reply {
        self.cancel(&id);
        Reply::Error {
            id,
            error: ApiError::new(ErrorCode::UpstreamError, format!("the proxy sent {what}")),
        }
    }

    /// The socket closed (with the close frame's `code` and `reason`; `1006` when it was lost
    /// without one): every open request fails, and later requests fail at once.
    pub fn on_closed(&mut self, code: u16, reason: &str) -> Vec<Reply> {
        self.out.clear();
        if self.closed.is_none() {
            self.closed = Some(error_for_close(code, reason, false));
        }
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(id, p)| Reply::Error {
                error: error_for_close(code, reason, p.started),
                id,
            })
            .collect()
    }

    /// Acts on the time: pings after silence, and gives up on a server that answers nothing
    /// (the socket is then to be closed with the queued close frame, and every open request fails).
    pub fn on_timeout(&mut self, now: Duration) -> Vec<Reply> {
        if self.closed.is_some() {
            return Vec::new();
        }
        match self.heartbeat.poll(now) {
            HeartbeatAction::WaitUntil(_) => Vec::new(),
            HeartbeatAction::Ping => {
                self.out
                    .push_back(Transmit::Text(frame::PING_TEXT.to_owned()));
                Vec::new()
            }
            HeartbeatAction::TimedOut => {
                let reason = "no answer from the proxy";
                let failed = self.on_closed(close_code::HEARTBEAT_TIMEOUT, reason);
                self.out.push_back(Transmit::Close {
                    code: close_code::HEARTBEAT_TIMEOUT,
                    reason: reason.into(),
                });
                failed
            }
        }
    }

    /// When [`ClientSession::on_timeout`] has something to do next; `None` once closed.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.closed.is_none().then(|| self.heartbeat.deadline())
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Requests open now.
    pub fn open_requests(&self) -> usize {
        self.pending.len()
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }
}

/// The error an open request fails with when the socket closes with `code`: a stream that had
/// begun is interrupted, anything else met a network error, unless the close code names the cause.
pub fn error_for_close(code: u16, reason: &str, stream_started: bool) -> ApiError {
    let detail = match reason.trim() {
        "" => format!("close code {code}"),
        reason => format!("close code {code}: {}", crate::error::truncate(reason, 123)),
    };
    match code {
        close_code::POLICY_VIOLATION => ApiError::new(
            ErrorCode::Unauthorized,
            format!("the proxy refused the connection ({detail})"),
        ),
        close_code::MESSAGE_TOO_BIG => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the proxy closed the connection on a frame too large ({detail})"),
        ),
        close_code::INTERNAL_ERROR => {
            ApiError::new(ErrorCode::Internal, format!("the proxy failed ({detail})"))
        }
        close_code::UNSUPPORTED_DATA => {
            ApiError::bad_request(format!("the proxy refused a frame ({detail})"))
        }
        _ if stream_started => ApiError::new(
            ErrorCode::StreamInterrupted,
            format!("the connection to the proxy was lost during the stream ({detail})"),
        ),
        _ => ApiError::new(
            ErrorCode::NetworkError,
            format!("the connection to the proxy was lost ({detail})"),
        ),
    }
}
