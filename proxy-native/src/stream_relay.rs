//! Relays an upstream's streamed answer to the client as the proxy's normalized event stream.
//!
//! Each upstream chunk is decoded by `shared` and the events it completes are sent at once; nothing
//! is held back. The relay ends after the terminal event, and dropping it (the client went away)
//! drops the upstream body, which closes the upstream connection.
//!
//! A [`RelayObserver`] sees every event a relay sends and is dropped with the relay: the audit
//! record of a stream lives there, and writes its line when the stream ends, however it ends.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use switchyard_shared::faces::openai;
use switchyard_shared::mcp::McpToolEvent;
use switchyard_shared::{ApiError, ChatStreamDecoder, StreamEvent, sse};

use crate::mcp::ToolEventStream;

/// Sees the events of one relayed stream; dropped when the relay ends (finished, failed, or
/// abandoned by the client).
pub trait RelayObserver<E>: Send + 'static {
    /// The response is about to go out.
    fn started(&mut self) {}
    /// `event` is being sent.
    fn event(&mut self, event: &E);
}

/// No observer.
impl<E> RelayObserver<E> for () {
    fn event(&mut self, _: &E) {}
}

/// Writes relayed events in the wire format of the face that serves the stream.
pub trait FrameEncoder: Send + 'static {
    /// Appends the SSE frames for `event` to `out`.
    fn encode(&mut self, event: &StreamEvent, out: &mut String);
}

/// The proxy's own format: one SSE event per normalized event.
struct NativeFrames;

impl FrameEncoder for NativeFrames {
    fn encode(&mut self, event: &StreamEvent, out: &mut String) {
        out.push_str(&event.to_sse());
    }
}

/// OpenAI's `chat.completion.chunk` events, ending with `[DONE]`.
impl FrameEncoder for openai::ChunkEncoder {
    fn encode(&mut self, event: &StreamEvent, out: &mut String) {
        for data in openai::ChunkEncoder::encode(self, event) {
            out.push_str(&sse::encode(None, &data));
        }
    }
}

/// A `text/event-stream` response carrying the events decoded from `chunks`.
pub fn sse_response<S>(
    decoder: ChatStreamDecoder,
    chunks: S,
    observer: impl RelayObserver<StreamEvent>,
) -> Response
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
{
    encoded_response(decoder, chunks, observer, NativeFrames)
}

/// The same relay for the OpenAI-compatible face: the events as `chat.completion.chunk`s.
pub fn openai_sse_response<S>(
    decoder: ChatStreamDecoder,
    chunks: S,
    observer: impl RelayObserver<StreamEvent>,
    encoder: openai::ChunkEncoder,
) -> Response
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
{
    encoded_response(decoder, chunks, observer, encoder)
}

fn encoded_response<S>(
    decoder: ChatStreamDecoder,
    chunks: S,
    mut observer: impl RelayObserver<StreamEvent>,
    encoder: impl FrameEncoder,
) -> Response
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
{
    observer.started();
    event_stream_response(Body::from_stream(encoded_frames(
        decoder, chunks, observer, encoder,
    )))
}

/// A `text/event-stream` response carrying a tool call's events, one write per event as it
/// happens. Dropping the body (the client went away) drops the call, which cancels it upstream.
pub fn tool_event_response(
    events: ToolEventStream,
    mut observer: impl RelayObserver<McpToolEvent>,
) -> Response {
    observer.started();
    let frames = futures::stream::unfold(Some((events, observer)), |state| async move {
        let (mut events, mut observer) = state?;
        let event = events.next().await?;
        observer.event(&event);
        let frame = Bytes::from(event.to_sse());
        // After the last event the call and the observer are dropped at once, as a chat relay
        // is, rather than whenever the server gets round to dropping the body.
        let rest = (!event.is_terminal()).then_some((events, observer));
        Some((Ok::<_, Infallible>(frame), rest))
    });
    event_stream_response(Body::from_stream(frames))
}

/// The events decoded from `chunks`, one by one, ending after the terminal event (`finish` or
/// `error`): the same relay as [`sse_response`], for a transport that frames events itself (the
/// WebSocket). Dropping the stream drops the upstream body, which ends the upstream request.
pub fn chat_events<S>(
    decoder: ChatStreamDecoder,
    chunks: S,
    mut observer: impl RelayObserver<StreamEvent>,
) -> impl Stream<Item = StreamEvent> + Send + 'static
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
{
    observer.started();
    let relay = Relay {
        decoder,
        chunks: Box::pin(chunks),
        observer,
        encoder: (),
    };
    let pending = std::collections::VecDeque::new();
    futures::stream::unfold(
        (Some(relay), pending),
        |(mut relay, mut pending)| async move {
            if pending.is_empty() {
                let mut current = relay.take()?;
                let events = current.next_events().await;
                for event in &events {
                    current.observer.event(event);
                }
                // After the terminal event the relay is dropped, which releases the upstream at once.
                if !events.last().is_some_and(StreamEvent::is_terminal) && !events.is_empty() {
                    relay = Some(current);
                }
                pending.extend(events);
            }
            let event = pending.pop_front()?;
            Some((event, (relay, pending)))
        },
    )
}

/// A tool call's events, one by one, ending after the terminal one: the same relay as
/// [`tool_event_response`], for a transport that frames events itself. Dropping the stream
/// drops the call, which cancels it upstream.
pub fn tool_events(
    events: ToolEventStream,
    mut observer: impl RelayObserver<McpToolEvent>,
) -> impl Stream<Item = McpToolEvent> + Send + 'static {
    observer.started();
    futures::stream::unfold(Some((events, observer)), |state| async move {
        let (mut events, mut observer) = state?;
        let event = events.next().await?;
        observer.event(&event);
        let rest = (!event.is_terminal()).then_some((events, observer));
        Some((event, rest))
    })
}

/// A `text/event-stream` response with the headers every stream of the proxy carries.
pub fn event_stream_response(body: Body) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // Tells nginx-like reverse proxies not to buffer, which would defeat streaming.
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
        // A stream's connection is not reused. When a browser aborts a keep-alive HTTP/1.1
        // response, Chromium may drain the rest (up to ~16 KB) to reuse the socket instead of
        // closing it, and the upstream would go on generating; a connection that cannot be reused
        // is closed at once, which is what cancels the upstream request.
        (CONNECTION, HeaderValue::from_static("close")),
    ];
    (headers, body).into_response()
}

/// The SSE frames for `chunks`: one write per upstream chunk that completes events, and always a
/// terminal event (`finish` or `error`) last.
fn encoded_frames<S, O, E>(
    decoder: ChatStreamDecoder,
    chunks: S,
    observer: O,
    encoder: E,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
    O: RelayObserver<StreamEvent>,
    E: FrameEncoder,
{
    let relay = Relay {
        decoder,
        chunks: Box::pin(chunks),
        observer,
        encoder,
    };
    futures::stream::unfold(Some(relay), |state| async move {
        let mut relay = state?;
        let events = relay.next_events().await;
        if events.is_empty() {
            return None;
        }
        let terminal = events.last().is_some_and(StreamEvent::is_terminal);
        for event in &events {
            relay.observer.event(event);
        }
        let mut frame = String::new();
        for event in &events {
            relay.encoder.encode(event, &mut frame);
        }
        // After the terminal event the relay is dropped, which releases the upstream at once.
        Some((Ok(Bytes::from(frame)), (!terminal).then_some(relay)))
    })
}

struct Relay<S, O, E> {
    decoder: ChatStreamDecoder,
    chunks: std::pin::Pin<Box<S>>,
    observer: O,
    encoder: E,
}

impl<S, O, E> Relay<S, O, E>
where
    S: Stream<Item = Result<Bytes, ApiError>>,
{
    /// Reads upstream chunks until some complete events (empty only when nothing can follow).
    async fn next_events(&mut self) -> Vec<StreamEvent> {
        loop {
            let events = match self.chunks.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(error)) => return vec![StreamEvent::Error { error }],
                None => return self.decoder.finish(),
            };
            if !events.is_empty() {
                return events;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_shared::{ErrorCode, ProviderKind, WireFormat};

    fn decode(frames: Vec<Result<Bytes, Infallible>>) -> Vec<StreamEvent> {
        let mut d = ChatStreamDecoder::new(WireFormat::Switchyard, None);
        let mut out = Vec::new();
        for f in frames {
            out.extend(d.push(&f.unwrap()));
        }
        out
    }

    async fn relay(chunks: Vec<Result<Bytes, ApiError>>) -> Vec<StreamEvent> {
        let decoder = ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::OpenAi), Some("p"));
        let frames = encoded_frames(decoder, futures::stream::iter(chunks), (), NativeFrames)
            .collect::<Vec<_>>()
            .await;
        decode(frames)
    }

    fn chunk(text: &str) -> Result<Bytes, ApiError> {
        Ok(Bytes::from(text.to_owned()))
    }

    const HELLO: &str =
        "data: {\"id\":\"r\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\n";

    #[tokio::test]
    async fn a_complete_stream_ends_with_finish() {
        let events = relay(vec![
            chunk(HELLO),
            chunk("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"),
            chunk(HELLO),
        ])
        .await;
        assert!(matches!(&events[0], StreamEvent::Start { model, .. } if model == "p/m"));
        assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    }

    #[tokio::test]
    async fn an_upstream_error_becomes_the_last_event() {
        let timeout = ApiError::new(ErrorCode::UpstreamTimeout, "slow");
        let events = relay(vec![chunk(HELLO), Err(timeout.clone()), chunk(HELLO)]).await;
        assert_eq!(events.last(), Some(&StreamEvent::Error { error: timeout }));
    }

    /// Records what it saw, and that it was dropped.
    #[derive(Clone, Default)]
    struct Seen(std::sync::Arc<std::sync::Mutex<(bool, Vec<StreamEvent>, bool)>>);

    struct Observer(Seen);

    impl RelayObserver<StreamEvent> for Observer {
        fn started(&mut self) {
            (self.0).0.lock().unwrap().0 = true;
        }
        fn event(&mut self, event: &StreamEvent) {
            (self.0).0.lock().unwrap().1.push(event.clone());
        }
    }

    impl Drop for Observer {
        fn drop(&mut self) {
            (self.0).0.lock().unwrap().2 = true;
        }
    }

    #[tokio::test]
    async fn the_observer_sees_every_event_and_goes_with_the_last() {
        let seen = Seen::default();
        let decoder = ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::OpenAi), Some("p"));
        let chunks = vec![
            chunk(HELLO),
            chunk(
                "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
            ),
        ];
        let mut frames = std::pin::pin!(encoded_frames(
            decoder,
            futures::stream::iter(chunks).chain(futures::stream::pending()),
            Observer(seen.clone()),
            NativeFrames,
        ));
        let mut sent = Vec::new();
        while let Some(frame) = frames.next().await {
            sent.push(frame);
            if (seen.0).lock().unwrap().2 {
                break;
            }
        }
        // Dropped right after the terminal event, though the upstream never ended its body.
        let (_, events, dropped) = &*seen.0.lock().unwrap();
        assert!(dropped);
        assert_eq!(events, &decode(sent));
        assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    }

    #[tokio::test]
    async fn an_abandoned_stream_drops_its_observer() {
        let seen = Seen::default();
        let decoder = ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::OpenAi), Some("p"));
        let chunks = futures::stream::iter(vec![chunk(HELLO)]).chain(futures::stream::pending());
        let response = sse_response(decoder, chunks, Observer(seen.clone()));
        assert!((seen.0).lock().unwrap().0, "started");
        let mut body = response.into_body().into_data_stream();
        assert!(body.next().await.is_some());
        assert!(!(seen.0).lock().unwrap().2);
        drop(body);
        assert!((seen.0).lock().unwrap().2, "dropped with the body");
    }

    #[tokio::test]
    async fn chat_events_are_the_relays_events_one_by_one_and_end_with_the_terminal_one() {
        let seen = Seen::default();
        let decoder = ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::OpenAi), Some("p"));
        let chunks = vec![
            chunk(HELLO),
            chunk(
                "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
            ),
        ];
        // The upstream never ends its body: the events stop at `finish` all the same.
        let chunks = futures::stream::iter(chunks).chain(futures::stream::pending());
        let events: Vec<StreamEvent> = chat_events(decoder, chunks, Observer(seen.clone()))
            .collect()
            .await;
        let (started, observed, dropped) = &*seen.0.lock().unwrap();
        assert!(*started && *dropped);
        assert_eq!(observed, &events);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, StreamEvent::TextDelta { .. }))
        );
        assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    }

    #[tokio::test]
    async fn dropping_chat_events_drops_the_observer() {
        let seen = Seen::default();
        let decoder = ChatStreamDecoder::new(WireFormat::Provider(ProviderKind::OpenAi), Some("p"));
        let chunks = futures::stream::iter(vec![chunk(HELLO)]).chain(futures::stream::pending());
        let mut events = Box::pin(chat_events(decoder, chunks, Observer(seen.clone())));
        assert!(events.next().await.is_some());
        assert!(!(seen.0).lock().unwrap().2);
        drop(events);
        assert!((seen.0).lock().unwrap().2, "dropped with the events");
    }

    #[tokio::test]
    async fn a_cut_stream_ends_with_stream_interrupted() {
        let events = relay(vec![chunk(HELLO)]).await;
        assert!(matches!(
            events.last(),
            Some(StreamEvent::Error { error }) if error.code == ErrorCode::StreamInterrupted
        ));
    }
}
