//! Proxy mode over one WebSocket (`transport: "websocket"`): the browser's `WebSocket` carries
//! `shared`'s [`ClientSession`], which makes every decision; this shell only moves text frames,
//! brings the clock and the heartbeat timer, and hands each request what arrived for it.
//!
//! The socket is opened on first use and opened again on the first use after it was lost. A
//! browser `WebSocket` cannot be paused, so each stream's unread events are held in a queue of
//! at most [`Limits::max_stream_queued_bytes`]: a stream read slower than that fails (and is
//! cancelled on the proxy) instead of filling the page's memory.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use core::time::Duration;
use serde::de::DeserializeOwned;
use serde_json::Value;
use switchyard_shared::mcp::decode_proxy_result;
use switchyard_shared::ws::{self, ClientSession, Limits, Operation, Reply, StreamItem, Transmit};
use switchyard_shared::{ApiError, ErrorCode};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue, prelude::wasm_bindgen};
use web_sys::{AbortSignal, CloseEvent, MessageEvent, WebSocket};

use crate::fetch;

#[wasm_bindgen]
extern "C" {
    /// The global `setTimeout`, with its handle.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsValue;

    /// The global `clearTimeout`.
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(handle: &JsValue);
}

/// The session's clock: wall time, which the heartbeat tolerates going back.
fn now() -> Duration {
    Duration::from_millis(js_sys::Date::now().max(0.0) as u64)
}

/// What a request received: a single answer, or one event of a stream.
pub(crate) enum Answer {
    /// The body of the HTTP route's answer; the request has ended.
    Result(Value),
    /// An event of a stream.
    Event(StreamItem),
}

/// The WebSocket of one client, opened on first use.
pub(crate) struct WsLink {
    url: String,
    token: Option<String>,
    socket: RefCell<Option<Rc<Socket>>>,
}

impl WsLink {
    /// The link to the proxy at `base_url` (`http(s)://`, already checked), authenticating with
    /// `token` in the first frame, never in the URL.
    pub(crate) fn new(base_url: &str, token: Option<String>) -> Result<Self, ApiError> {
        let base = base_url.trim_end_matches('/');
        let url = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}{}", ws::PATH)
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}{}", ws::PATH)
        } else {
            return Err(ApiError::bad_request(
                "the proxy baseUrl must start with http:// or https://",
            ));
        };
        Ok(WsLink {
            url,
            token: token.filter(|t| !t.is_empty()),
            socket: RefCell::new(None),
        })
    }

    /// The open socket, or a new one when there is none or it was lost.
    fn socket(&self) -> Result<Rc<Socket>, ApiError> {
        let mut current = self.socket.borrow_mut();
        if let Some(socket) = current.as_ref().filter(|s| s.usable()) {
            return Ok(socket.clone());
        }
        let socket = Socket::open(&self.url, self.token.as_deref())?;
        *current = Some(socket.clone());
        Ok(socket)
    }

    /// Sends `op`; `signal` cancels it on the proxy.
    pub(crate) fn start(
        &self,
        op: &Operation,
        signal: Option<&AbortSignal>,
    ) -> Result<WsRequest, ApiError> {
        if signal.is_some_and(AbortSignal::aborted) {
            return Err(fetch::aborted());
        }
        self.socket()?.start(op, signal)
    }

    /// Sends `op` and reads its single answer as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        op: &Operation,
        signal: Option<&AbortSignal>,
    ) -> Result<T, ApiError> {
        decode_proxy_result(&self.call_raw(op, signal).await?)
    }

    /// Sends `op`; its single answer as JSON text, for the readers the HTTP routes' answers use
    /// (reading from a `Value` would compile each answer type's reading code a second time).
    pub(crate) async fn call_raw(
        &self,
        op: &Operation,
        signal: Option<&AbortSignal>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut request = self.start(op, signal)?;
        match request.next().await? {
            Some(Answer::Result(body)) => serde_json::to_vec(&body).map_err(|e| {
                ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("unreadable answer from the proxy: {e}"),
                )
            }),
            _ => Err(ApiError::new(
                ErrorCode::UpstreamError,
                "the proxy answered a single request with a stream",
            )),
        }
    }
}

/// What has arrived for one request and is not read yet.
#[derive(Default)]
struct Slot {
    queue: VecDeque<(Result<Option<Answer>, ApiError>, usize)>,
    bytes: usize,
    waker: Option<Waker>,
}

impl Slot {
    fn push(&mut self, item: Result<Option<Answer>, ApiError>, size: usize) {
        self.queue.push_back((item, size));
        self.bytes += size;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The JS callbacks of a socket, kept alive as long as it is.
struct Handlers {
    on_open: Closure<dyn FnMut()>,
    on_message: Closure<dyn FnMut(MessageEvent)>,
    on_close: Closure<dyn FnMut(CloseEvent)>,
    on_timer: Closure<dyn FnMut()>,
}

struct State {
    session: ClientSession,
    max_queued: usize,
    /// The open requests, by id.
    slots: BTreeMap<String, Rc<RefCell<Slot>>>,
    /// The pending heartbeat timer.
    timer: Option<JsValue>,
}

/// One `WebSocket` and its session.
struct Socket {
    ws: WebSocket,
    state: RefCell<State>,
    handlers: RefCell<Option<Handlers>>,
}

impl Socket {
    fn open(url: &str, token: Option<&str>) -> Result<Rc<Socket>, ApiError> {
        let ws = WebSocket::new(url)
            .map_err(|_| ApiError::bad_request(format!("{url:?} is not a valid WebSocket URL")))?;
        let limits = Limits::default();
        let socket = Rc::new(Socket {
            ws,
            state: RefCell::new(State {
                max_queued: limits.max_stream_queued_bytes,
                session: ClientSession::new(now(), limits, token),
                slots: BTreeMap::new(),
                timer: None,
            }),
            handlers: RefCell::new(None),
        });
        // The callbacks hold the socket weakly: the requests and the link own it.
        let weak = Rc::downgrade(&socket);
        let with = move |f: fn(&Socket)| {
            let weak: Weak<Socket> = weak.clone();
            move || {
                if let Some(socket) = weak.upgrade() {
                    f(&socket);
                }
            }
        };
        let on_message = {
            let weak = Rc::downgrade(&socket);
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                // The proxy sends text frames only.
                if let (Some(socket), Some(text)) = (weak.upgrade(), e.data().as_string()) {
                    socket.on_text(&text);
                }
            })
        };
        let on_close = {
            let weak = Rc::downgrade(&socket);
            Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
                if let Some(socket) = weak.upgrade() {
                    socket.on_closed(e.code(), &e.reason());
                }
            })
        };
        let handlers = Handlers {
            on_open: Closure::<dyn FnMut()>::new(with(|s| {
                s.flush();
                s.arm_timer();
            })),
            on_message,
            on_close,
            on_timer: Closure::<dyn FnMut()>::new(with(Socket::on_timer)),
        };
        socket
            .ws
            .set_onopen(Some(handlers.on_open.as_ref().unchecked_ref()));
        socket
            .ws
            .set_onmessage(Some(handlers.on_message.as_ref().unchecked_ref()));
        socket
            .ws
            .set_onclose(Some(handlers.on_close.as_ref().unchecked_ref()));
        *socket.handlers.borrow_mut() = Some(handlers);
        Ok(socket)
    }

    /// Whether new requests may use this socket.
    fn usable(&self) -> bool {
        self.ws.ready_state() <= WebSocket::OPEN && !self.state.borrow().session.is_closed()
    }

    fn start(
        self: &Rc<Self>,
        op: &Operation,
        signal: Option<&AbortSignal>,
    ) -> Result<WsRequest, ApiError> {
        let slot = Rc::new(RefCell::new(Slot::default()));
        let id = {
            let mut state = self.state.borrow_mut();
            let id = state.session.start(op)?;
            state.slots.insert(id.clone(), slot.clone());
            id
        };
        self.flush();
        let abort = signal.map(|signal| AbortHook::new(signal, Rc::downgrade(self), id.clone()));
        Ok(WsRequest {
            socket: self.clone(),
            id,
            slot,
            _abort: abort,
            done: false,
        })
    }

    /// Puts on the socket what the session queued; frames wait in the session until it opens.
    fn flush(&self) {
        if self.ws.ready_state() != WebSocket::OPEN {
            return;
        }
        loop {
            let next = self.state.borrow_mut().session.poll_transmit();
            match next {
                None => return,
                Some(Transmit::Text(text)) => {
                    // A failed send means the socket is closing: its close event fails the rest.
                    if self.ws.send_with_str(&text).is_err() {
                        return;
                    }
                }
                Some(Transmit::Close { code, reason }) => {
                    let _ = self.ws.close_with_code_and_reason(code, &reason);
                }
                // Only the server sends WebSocket pings.
                Some(Transmit::Ping) => {}
            }
        }
    }

    fn on_text(&self, text: &str) {
        {
            let mut state = self.state.borrow_mut();
            if let Some(reply) = state.session.on_text(now(), text) {
                state.deliver(reply, text.len());
            }
        }
        // A frame that breaks the protocol queues a `cancel`.
        self.flush();
    }

    fn on_closed(&self, code: u16, reason: &str) {
        let mut state = self.state.borrow_mut();
        for reply in state.session.on_closed(code, reason) {
            state.deliver(reply, 0);
        }
        // Requests the session no longer knew of (none, unless cancelled meanwhile) end too.
        let error = ws::error_for_close(code, reason, false);
        for (_, slot) in std::mem::take(&mut state.slots) {
            slot.borrow_mut().push(Err(error.clone()), 0);
        }
        if let Some(timer) = state.timer.take() {
            clear_timeout(&timer);
        }
    }

    fn on_timer(&self) {
        {
            let mut state = self.state.borrow_mut();
            state.timer = None;
            for reply in state.session.on_timeout(now()) {
                state.deliver(reply, 0);
            }
        }
        // A ping, or the close frame of a heartbeat timeout.
        self.flush();
        self.arm_timer();
    }

    /// Sets the timer for the session's next deadline, unless one is set.
    fn arm_timer(&self) {
        let mut state = self.state.borrow_mut();
        let Some(deadline) = state.session.next_deadline() else {
            return;
        };
        if state.timer.is_some() {
            return;
        }
        let ms = deadline.saturating_sub(now()).as_millis();
        let ms = i32::try_from(ms).unwrap_or(i32::MAX).max(1);
        if let Some(handlers) = self.handlers.borrow().as_ref() {
            state.timer = Some(set_timeout(handlers.on_timer.as_ref().unchecked_ref(), ms));
        }
    }

    /// Stops request `id`: the proxy is told, and a reader still waiting gets `aborted`.
    fn cancel(&self, id: &str) {
        {
            let mut state = self.state.borrow_mut();
            state.session.cancel(id);
            if let Some(slot) = state.slots.remove(id) {
                slot.borrow_mut().push(Err(fetch::aborted()), 0);
            }
        }
        self.flush();
    }
}

impl State {
    /// Hands `reply` (from a frame of `size` bytes) to its request.
    fn deliver(&mut self, reply: Reply, size: usize) {
        let (id, item, last) = match reply {
            Reply::Result { id, body } => (id, Ok(Some(Answer::Result(body))), true),
            Reply::Event { id, event } => (id, Ok(Some(Answer::Event(event))), false),
            Reply::End { id } => (id, Ok(None), true),
            Reply::Error { id, error } => (id, Err(error), true),
            // About the connection, not a request: nothing has ended, and requests go on.
            Reply::Connection(_) => return,
        };
        let Some(slot) = self.slots.get(&id).cloned() else {
            return;
        };
        let mut slot = slot.borrow_mut();
        if !last && slot.bytes.saturating_add(size) > self.max_queued {
            // The page reads slower than the proxy sends, and a WebSocket cannot be paused.
            self.session.cancel(&id);
            self.slots.remove(&id);
            slot.push(
                Err(ApiError::new(
                    ErrorCode::StreamInterrupted,
                    format!(
                        "the stream was stopped: more than {} bytes of its events were waiting \
                         to be read",
                        self.max_queued
                    ),
                )),
                0,
            );
            return;
        }
        if last {
            self.slots.remove(&id);
        }
        slot.push(item, size);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        if let Some(timer) = self.state.get_mut().timer.take() {
            clear_timeout(&timer);
        }
        let _ = self.ws.close();
    }
}

/// Cancels a request when its `AbortSignal` fires; removed with the request.
struct AbortHook {
    signal: AbortSignal,
    handler: Closure<dyn FnMut()>,
}

impl AbortHook {
    fn new(signal: &AbortSignal, socket: Weak<Socket>, id: String) -> Self {
        let handler = Closure::<dyn FnMut()>::new(move || {
            if let Some(socket) = socket.upgrade() {
                socket.cancel(&id);
            }
        });
        let _ = signal.add_event_listener_with_callback("abort", handler.as_ref().unchecked_ref());
        AbortHook {
            signal: signal.clone(),
            handler,
        }
    }
}

impl Drop for AbortHook {
    fn drop(&mut self) {
        let _ = self
            .signal
            .remove_event_listener_with_callback("abort", self.handler.as_ref().unchecked_ref());
    }
}

/// One request on the socket; dropping it before its end cancels it on the proxy.
pub(crate) struct WsRequest {
    socket: Rc<Socket>,
    id: String,
    slot: Rc<RefCell<Slot>>,
    _abort: Option<AbortHook>,
    done: bool,
}

impl WsRequest {
    /// The next answer or event; `Ok(None)` once a stream has ended.
    pub(crate) async fn next(&mut self) -> Result<Option<Answer>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let slot = &self.slot;
        let item = std::future::poll_fn(|cx| {
            let mut slot = slot.borrow_mut();
            match slot.queue.pop_front() {
                Some((item, size)) => {
                    slot.bytes -= size;
                    Poll::Ready(item)
                }
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        if !matches!(item, Ok(Some(Answer::Event(_)))) {
            self.done = true;
        }
        item
    }

    /// Stops the request; the proxy stops its upstream.
    pub(crate) fn cancel(&mut self) {
        if !self.done {
            self.done = true;
            self.socket.cancel(&self.id);
        }
    }
}

impl Drop for WsRequest {
    fn drop(&mut self) {
        self.cancel();
    }
}
