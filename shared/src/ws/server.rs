//! The server's side of a connection as a state machine. The driver feeds it what arrives
//! (`on_text`, `on_binary`, `on_pong`, `on_closed`) and the time (`on_timeout` at
//! [`ServerSession::next_deadline`]), carries out its [`Action`]s (authenticate, start and cancel
//! requests) and reports their outcomes (`auth_result`, `push_*`), and writes what
//! [`ServerSession::poll_transmit`] gives it, one frame at a time, as fast as the socket takes
//! them: that pacing is what the queue limits measure.

use std::collections::{BTreeMap, VecDeque};

use core::time::Duration;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::mcp::api::McpToolEvent;
use crate::stream::StreamEvent;

use super::frame::{self, ClientFrame, FrameError, OpKind, Operation};
use super::heartbeat::{Heartbeat, HeartbeatAction};
use super::{Limits, Token, Transmit, close_code, close_reason};

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Check the token of the `auth` frame, with the same checks as the HTTP routes' bearer
    /// token, and answer with [`ServerSession::auth_result`] before reading the next frame.
    Authenticate {
        /// The credential.
        token: Token,
    },
    /// Run a request as its HTTP route would (scopes, limits, audit and metrics alike), and
    /// report its outcome with the `push_*` methods under `id`.
    Start {
        /// The request id.
        id: String,
        /// What to do (boxed: a chat request is large, the other actions small).
        op: Box<Operation>,
    },
    /// Stop a request: nothing more of it will be sent, and its id may be used again.
    Cancel {
        /// The request id.
        id: String,
        /// Why.
        reason: CancelReason,
    },
}

/// Why a request was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The client sent `cancel`.
    Client,
    /// The client read nothing of the stream for [`Limits::stall_timeout`].
    Stalled,
    /// The connection closed or was lost.
    Closed,
}

/// The outcome of pushing a stream event.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Pushed<E> {
    /// Queued for the client.
    Queued,
    /// The queue is full: the event is handed back, to push again once a frame has been
    /// transmitted. A stream that stays full for [`Limits::stall_timeout`] is stopped.
    Full(E),
    /// The request is no longer open (cancelled, stopped or the connection closed): stop
    /// producing.
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    AwaitingFrame,
    Verifying,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// A close has been decided; what is queued goes first, then the close frame.
    Closing,
    Closed,
}

#[derive(Debug)]
struct OpenRequest {
    /// Tells this request's queued frames from those of an earlier request with the same id.
    serial: u64,
    kind: OpKind,
    /// Since when the producer has been waiting for room, if it is.
    blocked_since: Option<Duration>,
}

#[derive(Debug)]
struct Queued {
    serial: Option<u64>,
    text: String,
}

/// The server's side of one connection.
#[derive(Debug)]
pub struct ServerSession {
    limits: Limits,
    auth: Auth,
    auth_deadline: Duration,
    heartbeat: Heartbeat,
    phase: Phase,
    close: Option<(u16, String)>,
    draining: bool,
    open: BTreeMap<String, OpenRequest>,
    next_serial: u64,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Bytes queued per open request, by serial.
    request_bytes: BTreeMap<u64, usize>,
    ping_due: bool,
    actions: VecDeque<Action>,
}

impl ServerSession {
    /// A session for a connection accepted at `now`; `authenticated` when the upgrade request
    /// carried a valid bearer token, else the first frame must be `auth`.
    pub fn new(now: Duration, limits: Limits, authenticated: bool) -> Self {
        ServerSession {
            auth: if authenticated {
                Auth::Done
            } else {
                Auth::AwaitingFrame
            },
            auth_deadline: now.saturating_add(limits.auth_timeout),
            heartbeat: Heartbeat::new(now, limits.ping_interval, limits.pong_timeout),
            limits,
            phase: Phase::Open,
            close: None,
            draining: false,
            open: BTreeMap::new(),
            next_serial: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            request_bytes: BTreeMap::new(),
            ping_due: false,
            actions: VecDeque::new(),
        }
    }

    /// A text frame arrived.
    pub fn on_text(&mut self, now: Duration, text: &str) {
        if self.phase != Phase::Open {
            return;
        }
        self.heartbeat.heard(now);
        // Checked before parsing, so that an oversized frame costs nothing more.
        if text.len() > self.limits.max_frame_bytes {
            let reason = format!(
                "a frame is larger than {} bytes",
                self.limits.max_frame_bytes
            );
            return self.close_now(close_code::MESSAGE_TOO_BIG, &reason);
        }
        let frame = frame::read_client_frame(text);
        match self.auth {
            Auth::AwaitingFrame => match frame {
                Ok(ClientFrame::Auth(token)) => {
                    self.auth = Auth::Verifying;
                    self.actions.push_back(Action::Authenticate { token });
                }
                _ => self.close_now(
                    close_code::POLICY_VIOLATION,
                    "authenticate first: the first frame must be {\"op\":\"auth\",\"token\":...}",
                ),
            },
            Auth::Verifying => self.close_now(
                close_code::POLICY_VIOLATION,
                "a frame arrived before authentication completed",
            ),
            Auth::Done => self.on_frame(frame),
        }
    }

    fn on_frame(&mut self, frame: Result<ClientFrame, FrameError>) {
        match frame {
            Err(FrameError {
                id: Some(id),
                error,
            }) if !self.open.contains_key(&id) => {
                self.queue_control(frame::error_text(Some(&id), &error));
            }
            Err(FrameError { id: Some(id), .. }) => self.already_open(&id),
            Err(FrameError { id: None, error }) => {
                self.queue_control(frame::error_text(None, &error));
            }
            Ok(ClientFrame::Auth(_)) => self.close_now(
                close_code::POLICY_VIOLATION,
                "`auth` is accepted only as the first frame of a connection not yet authenticated",
            ),
            Ok(ClientFrame::Ping) => {
                // Any frame answers the client's heartbeat: with frames queued, a pong adds
                // nothing, and a client that pings without reading cannot grow the queue.
                if self.queue.is_empty() {
                    self.enqueue(None, frame::PONG_TEXT.to_owned());
                }
            }
            Ok(ClientFrame::Cancel { id }) => {
                // An id that is not open is ignored: its request may have ended meanwhile.
                if let Some(request) = self.open.remove(&id) {
                    self.drop_queued(request.serial);
                    let error = ApiError::new(ErrorCode::Aborted, "cancelled by the client");
                    self.enqueue(Some(request.serial), frame::error_text(Some(&id), &error));
                    self.request_bytes.remove(&request.serial);
                    self.actions.push_back(Action::Cancel {
                        id,
                        reason: CancelReason::Client,
                    });
                    self.close_if_drained();
                }
            }
            Ok(ClientFrame::Request { id, .. }) if self.open.contains_key(&id) => {
                self.already_open(&id);
            }
            Ok(ClientFrame::Request { id, .. }) if self.draining => {
                let error = ApiError::new(ErrorCode::Unavailable, "the server is shutting down");
                self.queue_control(frame::error_text(Some(&id), &error));
            }
            Ok(ClientFrame::Request { id, .. })
                if self.open.len() >= self.limits.max_open_requests =>
            {
                let error = ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "at most {} requests may be open on one connection",
                        self.limits.max_open_requests
                    ),
                );
                self.queue_control(frame::error_text(Some(&id), &error));
            }
            Ok(ClientFrame::Request { id, op }) => {
                let serial = self.next_serial;
                self.next_serial += 1;
                self.open.insert(
                    id.clone(),
                    OpenRequest {
                        serial,
                        kind: op.kind(),
                        blocked_since: None,
                    },
                );
                self.request_bytes.insert(serial, 0);
                self.actions.push_back(Action::Start { id, op });
            }
        }
    }

    /// A second request under an open id: answered for the connection, since an answer under the
    /// id would end the request that holds it.
    fn already_open(&mut self, id: &str) {
        let error = ApiError::bad_request(format!("request id `{id}` is already open"));
        self.queue_control(frame::error_text(None, &error));
    }

    /// A binary frame arrived; the protocol has none.
    pub fn on_binary(&mut self, now: Duration) {
        if self.phase == Phase::Open {
            self.heartbeat.heard(now);
            self.close_now(
                close_code::UNSUPPORTED_DATA,
                "binary frames are not used; send JSON text frames",
            );
        }
    }

    /// A WebSocket ping or pong arrived: the client is alive.
    pub fn on_pong(&mut self, now: Duration) {
        self.heartbeat.heard(now);
    }

    /// The socket closed or was lost: every open request is cancelled.
    pub fn on_closed(&mut self) {
        self.cancel_all();
        self.clear_queue();
        self.phase = Phase::Closed;
    }

    /// The outcome of [`Action::Authenticate`]: a refusal closes the connection with `1008` and
    /// the error's message as the reason.
    pub fn auth_result(&mut self, result: Result<(), ApiError>) {
        if self.auth != Auth::Verifying || self.phase != Phase::Open {
            return;
        }
        match result {
            Ok(()) => self.auth = Auth::Done,
            Err(error) => self.close_now(close_code::POLICY_VIOLATION, &error.message),
        }
    }

    /// Acts on the time: auth timeout, heartbeat, stalled streams. Call it at
    /// [`ServerSession::next_deadline`] (earlier is harmless).
    pub fn on_timeout(&mut self, now: Duration) {
        if self.phase != Phase::Open {
            return;
        }
        if self.auth == Auth::AwaitingFrame && now >= self.auth_deadline {
            let reason = format!(
                "no `auth` frame within {} s",
                self.limits.auth_timeout.as_secs()
            );
            return self.close_now(close_code::POLICY_VIOLATION, &reason);
        }
        match self.heartbeat.poll(now) {
            HeartbeatAction::WaitUntil(_) => {}
            HeartbeatAction::Ping => self.ping_due = true,
            HeartbeatAction::TimedOut => {
                return self.close_now(close_code::HEARTBEAT_TIMEOUT, "no answer to ping");
            }
        }
        let stall = self.limits.stall_timeout;
        let stalled: Vec<String> = self
            .open
            .iter()
            .filter(|(_, r)| {
                r.blocked_since
                    .is_some_and(|t| now >= t.saturating_add(stall))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stalled {
            if let Some(request) = self.open.remove(&id) {
                // The client is not reading: what is queued of the stream is dropped, and the
                // error takes its place.
                self.drop_queued(request.serial);
                self.request_bytes.remove(&request.serial);
                let error = ApiError::new(
                    ErrorCode::StreamInterrupted,
                    format!(
                        "the stream was stopped: the client read none of it for {} s",
                        stall.as_secs()
                    ),
                );
                self.enqueue(Some(request.serial), frame::error_text(Some(&id), &error));
                self.actions.push_back(Action::Cancel {
                    id,
                    reason: CancelReason::Stalled,
                });
            }
        }
        self.close_if_drained();
    }

    /// When [`ServerSession::on_timeout`] has something to do next; `None` once closing.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.phase != Phase::Open {
            return None;
        }
        let stall = self.limits.stall_timeout;
        let auth = (self.auth == Auth::AwaitingFrame).then_some(self.auth_deadline);
        self.open
            .values()
            .filter_map(|r| r.blocked_since.map(|t| t.saturating_add(stall)))
            .chain(auth)
            .chain([self.heartbeat.deadline()])
            .min()
    }

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next frame to write, once the socket has taken the previous one.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.phase == Phase::Closed {
            return None;
        }
        if std::mem::take(&mut self.ping_due) && self.phase == Phase::Open {
            return Some(Transmit::Ping);
        }
        if let Some(Queued { serial, text }) = self.queue.pop_front() {
            self.queued_bytes = self.queued_bytes.saturating_sub(text.len());
            if let Some(serial) = serial {
                if let Some(bytes) = self.request_bytes.get_mut(&serial) {
                    *bytes = bytes.saturating_sub(text.len());
                }
            }
            // The client is reading, and the queue is first in, first out: every waiting stream
            // moves on, so none has stalled.
            for r in self.open.values_mut() {
                r.blocked_since = None;
            }
            return Some(Transmit::Text(text));
        }
        if self.phase == Phase::Closing {
            self.phase = Phase::Closed;
            let (code, reason) = self
                .close
                .take()
                .unwrap_or((close_code::NORMAL, String::new()));
            return Some(Transmit::Close { code, reason });
        }
        None
    }

    /// A request's single answer; `false` if the request is no longer open.
    pub fn push_result<T: Serialize + ?Sized>(&mut self, id: &str, body: &T) -> bool {
        let Some(serial) = self.open.get(id).map(|r| r.serial) else {
            return false;
        };
        match frame::result_text(id, body) {
            Some(text) => self.finish(id, serial, [text]),
            None => self.fail_unwritable(id, serial),
        }
        true
    }

    /// A request's failure; `false` if the request is no longer open.
    pub fn push_error(&mut self, id: &str, error: &ApiError) -> bool {
        let Some(serial) = self.open.get(id).map(|r| r.serial) else {
            return false;
        };
        self.finish(id, serial, [frame::error_text(Some(id), error)]);
        true
    }

    /// An event of a `chat_stream`: `finish` ends the stream (`event`, then `end`), `error` is
    /// sent as the request's `error` frame.
    pub fn push_chat_event(
        &mut self,
        now: Duration,
        id: &str,
        event: StreamEvent,
    ) -> Pushed<StreamEvent> {
        match event {
            StreamEvent::Error { error } => self.push_terminal_error(id, &error),
            event => {
                let terminal = event.is_terminal();
                self.push_event(now, id, event, terminal)
            }
        }
    }

    /// An event of an `mcp_call_stream`: `result` ends the stream (`event`, then `end`), `error`
    /// is sent as the request's `error` frame.
    pub fn push_tool_event(
        &mut self,
        now: Duration,
        id: &str,
        event: McpToolEvent,
    ) -> Pushed<McpToolEvent> {
        match event {
            McpToolEvent::Error { error } => self.push_terminal_error(id, &error),
            event => {
                let terminal = event.is_terminal();
                self.push_event(now, id, event, terminal)
            }
        }
    }

    fn push_terminal_error<E>(&mut self, id: &str, error: &ApiError) -> Pushed<E> {
        match self.push_error(id, error) {
            true => Pushed::Queued,
            false => Pushed::Gone,
        }
    }

    fn push_event<E: Serialize>(
        &mut self,
        now: Duration,
        id: &str,
        event: E,
        terminal: bool,
    ) -> Pushed<E> {
        let Some(serial) = self.open.get(id).map(|r| r.serial) else {
            return Pushed::Gone;
        };
        let Some(text) = frame::event_text(id, &event) else {
            self.fail_unwritable(id, serial);
            return Pushed::Gone;
        };
        if terminal {
            // The last event is final: always queued, like a result.
            self.finish(id, serial, [text, frame::end_text(id)]);
            return Pushed::Queued;
        }
        let mine = self.request_bytes.get(&serial).copied().unwrap_or(0);
        // An empty queue takes any one frame, so that an event larger than a limit still passes.
        let fits_stream = mine == 0 || mine + text.len() <= self.limits.max_stream_queued_bytes;
        let fits_all = self.queued_bytes == 0
            || self.queued_bytes + text.len() <= self.limits.max_queued_bytes;
        let Some(request) = self.open.get_mut(id) else {
            return Pushed::Gone;
        };
        if !(fits_stream && fits_all) {
            request.blocked_since.get_or_insert(now);
            return Pushed::Full(event);
        }
        request.blocked_since = None;
        self.enqueue(Some(serial), text);
        Pushed::Queued
    }

    /// Starts a graceful shutdown: new requests are refused with `unavailable`, and the
    /// connection closes with `1001` once the open ones have ended and their frames are sent.
    pub fn shut_down(&mut self) {
        self.draining = true;
        self.close_if_drained();
    }

    /// Closes now with `code` (one of [`close_code`]): queued frames are dropped and every open
    /// request is cancelled.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.close_now(code, reason);
    }

    /// Requests open now.
    pub fn open_requests(&self) -> usize {
        self.open.len()
    }

    /// The kind of the open request `id`.
    pub fn open_kind(&self, id: &str) -> Option<OpKind> {
        self.open.get(id).map(|r| r.kind)
    }

    /// Bytes queued for the client.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether requests may be started (authentication, if required, has succeeded).
    pub fn is_authenticated(&self) -> bool {
        self.auth == Auth::Done
    }

    /// Whether the connection is closing or closed: nothing more is read.
    pub fn is_closed(&self) -> bool {
        self.phase != Phase::Open
    }

    fn finish<const N: usize>(&mut self, id: &str, serial: u64, texts: [String; N]) {
        for text in texts {
            self.enqueue(Some(serial), text);
        }
        self.open.remove(id);
        self.request_bytes.remove(&serial);
        self.close_if_drained();
    }

    fn fail_unwritable(&mut self, id: &str, serial: u64) {
        let error = ApiError::internal("the answer could not be written as JSON");
        self.finish(id, serial, [frame::error_text(Some(id), &error)]);
    }

    fn enqueue(&mut self, serial: Option<u64>, text: String) {
        self.queued_bytes += text.len();
        if let Some(bytes) = serial.and_then(|s| self.request_bytes.get_mut(&s)) {
            *bytes += text.len();
        }
        self.queue.push_back(Queued { serial, text });
    }

    /// Queues an answer the client provoked without opening a request (refusals, unreadable
    /// frames): those are not bounded by the open-request cap, so a client that keeps provoking
    /// them without reading is closed instead.
    fn queue_control(&mut self, text: String) {
        if self.queued_bytes + text.len() > self.limits.max_queued_bytes {
            return self.close_now(
                close_code::NOT_READING,
                "the client sends but does not read",
            );
        }
        self.enqueue(None, text);
    }

    fn drop_queued(&mut self, serial: u64) {
        let mut dropped = 0;
        self.queue.retain(|q| {
            let keep = q.serial != Some(serial);
            if !keep {
                dropped += q.text.len();
            }
            keep
        });
        self.queued_bytes = self.queued_bytes.saturating_sub(dropped);
    }

    fn close_if_drained(&mut self) {
        if self.draining && self.open.is_empty() && self.phase == Phase::Open {
            self.close = Some((close_code::GOING_AWAY, "the server is shutting down".into()));
            self.phase = Phase::Closing;
        }
    }

    fn close_now(&mut self, code: u16, reason: &str) {
        if self.phase != Phase::Open {
            return;
        }
        self.cancel_all();
        self.clear_queue();
        self.ping_due = false;
        self.close = Some((code, close_reason(reason)));
        self.phase = Phase::Closing;
    }

    fn cancel_all(&mut self) {
        for (id, _) in std::mem::take(&mut self.open) {
            self.actions.push_back(Action::Cancel {
                id,
                reason: CancelReason::Closed,
            });
        }
        self.request_bytes.clear();
    }

    fn clear_queue(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
    }
}
