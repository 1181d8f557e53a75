//! Relays an upstream's streamed answer to the client as the proxy's normalized event stream.
//!
//! Each upstream chunk is decoded by `shared` and the events it completes are sent at once; nothing
//! is held back. The relay ends after the terminal event, and dropping it (the client went away)
//! drops the upstream body, which closes the upstream connection.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use switchyard_shared::{ApiError, ChatStreamDecoder, StreamEvent};

/// A `text/event-stream` response carrying the events decoded from `chunks`.
pub fn sse_response<S>(decoder: ChatStreamDecoder, chunks: S) -> Response
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
{
    event_stream_response(Body::from_stream(sse_frames(decoder, chunks)))
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
pub fn sse_frames<S>(
    decoder: ChatStreamDecoder,
    chunks: S,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, ApiError>> + Send + 'static,
{
    let relay = Relay {
        decoder,
        chunks: Box::pin(chunks),
    };
    futures::stream::unfold(Some(relay), |state| async move {
        let mut relay = state?;
        let events = relay.next_events().await;
        if events.is_empty() {
            return None;
        }
        let terminal = events.last().is_some_and(StreamEvent::is_terminal);
        let frame: String = events.iter().map(StreamEvent::to_sse).collect();
        // After the terminal event the relay is dropped, which releases the upstream at once.
        Some((Ok(Bytes::from(frame)), (!terminal).then_some(relay)))
    })
}

struct Relay<S> {
    decoder: ChatStreamDecoder,
    chunks: std::pin::Pin<Box<S>>,
}

impl<S> Relay<S>
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
        let frames = sse_frames(decoder, futures::stream::iter(chunks))
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

    #[tokio::test]
    async fn a_cut_stream_ends_with_stream_interrupted() {
        let events = relay(vec![chunk(HELLO)]).await;
        assert!(matches!(
            events.last(),
            Some(StreamEvent::Error { error }) if error.code == ErrorCode::StreamInterrupted
        ));
    }
}
