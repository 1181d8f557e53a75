//! What the fake providers ([`crate::fake_anthropic`], [`crate::fake_gemini`]) share: SSE bodies
//! sent frame by frame (paced when a script asks), counters that tell a stream the client broke
//! off from one that ran to its end, and the open CORS of hosted APIs, so that the SDK's direct
//! mode reaches them from a page.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, RETRY_AFTER};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream;
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};

/// Stream counters, as `GET /_observed` reports them.
#[derive(Debug, Default)]
pub struct StreamCounters {
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
}

/// A snapshot of [`StreamCounters`].
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StreamCounts {
    /// Streamed bodies begun.
    pub streams_started: u64,
    /// Streamed bodies that reached their scripted end.
    pub streams_completed: u64,
    /// Streamed bodies dropped (the client went away) before their end.
    pub streams_cancelled: u64,
}

impl StreamCounters {
    /// The counts now.
    pub fn snapshot(&self) -> StreamCounts {
        StreamCounts {
            streams_started: self.started.load(Ordering::SeqCst),
            streams_completed: self.completed.load(Ordering::SeqCst),
            streams_cancelled: self.cancelled.load(Ordering::SeqCst),
        }
    }
}

/// Lives inside a body: hyper drops the body when the client goes away, so a guard dropped
/// before its last frame was handed over is exactly a cancelled stream.
struct Guard {
    counters: Arc<StreamCounters>,
    completed: bool,
}

impl Guard {
    fn complete(&mut self) {
        if !self.completed {
            self.completed = true;
            self.counters.completed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.completed {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A `text/event-stream` response of `frames` (each a whole SSE event), with `pace` between
/// them if given.
pub fn sse_response(
    frames: Vec<String>,
    pace: Option<Duration>,
    counters: Arc<StreamCounters>,
) -> Response {
    counters.started.fetch_add(1, Ordering::SeqCst);
    let guard = Guard {
        counters,
        completed: false,
    };
    let body = stream::unfold(
        (frames.into_iter(), guard, true),
        move |(mut frames, mut guard, first)| async move {
            let Some(frame) = frames.next() else {
                guard.complete();
                return None;
            };
            if let (Some(pace), false) = (pace, first) {
                tokio::time::sleep(pace).await;
            }
            // Counted when the last frame is handed over: a client that has just read it must
            // already see the stream as complete.
            if frames.as_slice().is_empty() {
                guard.complete();
            }
            Some((
                Ok::<_, std::io::Error>(Bytes::from(frame)),
                (frames, guard, false),
            ))
        },
    );
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// CORS as hosted APIs answer it: any origin, the provider's own request headers, and
/// `Retry-After` readable by the page.
pub fn browser_cors(headers: &[&'static str]) -> CorsLayer {
    let mut allowed = vec![CONTENT_TYPE];
    allowed.extend(headers.iter().map(|h| HeaderName::from_static(h)));
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(allowed)
        .expose_headers([RETRY_AFTER])
}

/// Splits text into "word + the spaces after it", so that the pieces join back into the text.
pub fn words(text: &str) -> Vec<&str> {
    text.split_inclusive(' ').collect()
}

/// The `agent` script the fakes share with [`crate::fake_llm`]: lines `call <tool> <JSON>` in
/// the last user text ask for those calls; once results are back the answer is
/// `tool said: <results in order, joined by " | ">`.
pub fn agent_calls(last_user_text: &str) -> Vec<(String, serde_json::Value)> {
    last_user_text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("call "))
        .map(|rest| {
            let (name, arguments) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let arguments = serde_json::from_str(arguments.trim())
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default()));
            (name.to_owned(), arguments)
        })
        .collect()
}

/// Delay between the frames of the `long` scripts.
pub const LONG_PACE: Duration = Duration::from_millis(20);
/// Number of words the `long` scripts stream.
pub const LONG_WORDS: usize = 200;
/// Words the `length` scripts answer before they stop for the token limit.
pub const LENGTH_WORDS: usize = 3;

/// The text of the `long` scripts.
pub fn long_text() -> String {
    (0..LONG_WORDS).map(|i| format!("tok{i} ")).collect()
}

/// The answer of the `length` scripts: `text` cut to [`LENGTH_WORDS`] words.
pub fn cut_to_limit(text: &str) -> String {
    text.split(' ')
        .take(LENGTH_WORDS)
        .collect::<Vec<_>>()
        .join(" ")
}
