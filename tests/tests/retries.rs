//! Upstream retries end to end: the real proxy in front of the scripted upstream, which fails
//! the next requests on demand and counts every attempt. What is retried (an unreachable
//! upstream, 502/503, 429 with a `Retry-After` that fits the budget) is answered or reported
//! after the retries; everything else reaches the upstream exactly once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_shared::{
    ChatResponse, ChatStreamDecoder, ErrorCode, StreamEvent, WireFormat, paths,
};
use switchyard_tests::fake_llm::{FailNext, FailWith, FakeLlm, FakeLlmConfig};

mod common;
use common::{ErrorReply, LoopbackProxy};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Harness {
    proxy: LoopbackProxy,
    fake: FakeLlm,
}

/// The fake upstream and the proxy in front of it; `upstream` holds extra `[upstream]` lines,
/// `base_url` replaces the fake's address.
async fn start(upstream: &str, base_url: Option<String>) -> Harness {
    common::init_tracing();
    let fake = FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    let base_url = base_url.unwrap_or_else(|| fake.base_url());
    let toml = format!(
        r#"
        [upstream]
        {upstream}
        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{base_url}"
        models = ["echo"]
        "#
    );
    let config = Config::from_toml_str(&toml, "retries test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, REQUEST_TIMEOUT).await,
        fake,
    }
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn fail(times: u32, with: FailWith) -> FailNext {
    FailNext { times, with }
}

fn rate_limited(retry_after: &str) -> FailWith {
    FailWith::RateLimited {
        retry_after: retry_after.to_owned(),
    }
}

impl Harness {
    async fn chat(&self, model: &str) -> reqwest::Response {
        self.proxy.post(paths::LLM_CHAT, &chat_body(model)).await
    }

    async fn answer(&self, model: &str) -> ChatResponse {
        let response = self.chat(model).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Every event of a stream, read to its end.
    async fn stream_events(&self, model: &str) -> Vec<StreamEvent> {
        let mut response = self.proxy.post(paths::LLM_STREAM, &chat_body(model)).await;
        assert_eq!(response.status(), 200);
        let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
        let mut events = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            events.extend(decoder.push(&chunk));
        }
        events.extend(decoder.finish());
        events
    }

    fn attempts(&self) -> u64 {
        self.fake.observed().requests
    }

    /// `switchyard_upstream_retries_total` for `reason`, 0 when the series does not exist.
    async fn retries(&self, reason: &str) -> u64 {
        let text = self.proxy.get("/metrics", &[]).await.text().await.unwrap();
        let series =
            format!("switchyard_upstream_retries_total{{upstream=\"fake\",reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_503_is_retried_and_the_answer_comes_once() {
    let h = start("", None).await;
    h.fake.fail_next(fail(1, FailWith::Unavailable));
    let reply = h.answer("fake/echo").await;
    assert_eq!(reply.message.content.as_deref(), Some("echo: hello"));
    assert_eq!(h.attempts(), 2);
    assert_eq!(h.retries("unavailable").await, 1);

    // A stream answered 503 before its body is retried the same way.
    h.fake.reset();
    h.fake.fail_next(fail(1, FailWith::Unavailable));
    let events = h.stream_events("fake/echo").await;
    assert_eq!(text_of(&events), "echo: hello");
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    assert_eq!(h.attempts(), 2);
    assert_eq!(h.fake.observed().streams_started, 1);
}

#[tokio::test]
async fn a_503_that_persists_is_reported_after_the_last_attempt() {
    let h = start("", None).await;
    h.fake.fail_next(fail(10, FailWith::Unavailable));
    let reply = ErrorReply::read(h.chat("fake/echo").await).await;
    assert_eq!(
        (reply.status, reply.error.code, reply.error.retryable),
        (502, ErrorCode::UpstreamError, true)
    );
    assert!(reply.error.message.contains("503"), "{}", reply.text);
    assert_eq!(h.attempts(), 3);
    assert_eq!(h.retries("unavailable").await, 2);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let h = start("", None).await;
    h.fake.fail_next(fail(1, rate_limited("1")));
    let started = Instant::now();
    let reply = h.answer("fake/echo").await;
    assert_eq!(reply.message.content.as_deref(), Some("echo: hello"));
    assert_eq!(h.attempts(), 2);
    // Honouring the upstream's word is a lower bound, not a performance claim.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.retries("rate_limited").await, 1);
}

#[tokio::test]
async fn a_429_whose_retry_after_exceeds_the_budget_is_passed_on() {
    let h = start("", None).await;
    h.fake.fail_next(fail(1, rate_limited("5")));
    let reply = ErrorReply::read(h.chat("fake/echo").await).await;
    assert_eq!(
        (reply.status, reply.error.code, reply.error.retry_after),
        (429, ErrorCode::RateLimited, Some(5))
    );
    assert_eq!(reply.headers["retry-after"], "5");
    assert_eq!(h.attempts(), 1);
    assert_eq!(h.retries("rate_limited").await, 0);
}

#[tokio::test]
async fn other_failures_reach_the_upstream_once() {
    let h = start("", None).await;
    for (model, status, code) in [
        ("fake/fail-400", 400, ErrorCode::BadRequest),
        ("fake/fail-401", 502, ErrorCode::UpstreamUnauthorized),
        ("fake/fail-500", 502, ErrorCode::UpstreamError),
    ] {
        h.fake.reset();
        let reply = ErrorReply::read(h.chat(model).await).await;
        assert_eq!((reply.status, reply.error.code), (status, code), "{model}");
        assert_eq!(h.attempts(), 1, "{model}");
    }
    // A 429 without Retry-After says nothing about when to come back.
    h.fake.reset();
    h.fake.fail_next(fail(1, rate_limited("soon")));
    let reply = ErrorReply::read(h.chat("fake/echo").await).await;
    assert_eq!(reply.error.code, ErrorCode::RateLimited);
    assert_eq!(h.attempts(), 1);
    // A connection closed after the request was read: the upstream may be working on it.
    h.fake.reset();
    h.fake.fail_next(fail(1, FailWith::Close));
    let reply = ErrorReply::read(h.chat("fake/echo").await).await;
    assert_eq!(
        (reply.status, reply.error.code),
        (502, ErrorCode::UpstreamError)
    );
    assert_eq!(h.attempts(), 1);
}

#[tokio::test]
async fn a_stream_cut_after_its_first_chunk_is_not_retried() {
    let h = start("", None).await;
    let events = h.stream_events("fake/reset-stream").await;
    assert_eq!(text_of(&events), "ab");
    match events.last() {
        Some(StreamEvent::Error { error }) => assert_eq!(error.code, ErrorCode::StreamInterrupted),
        other => panic!("expected stream_interrupted, got {other:?}"),
    }
    assert_eq!(h.attempts(), 1);
}

#[tokio::test]
async fn an_unreachable_upstream_is_retried_up_to_the_limit() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = start("", Some(format!("http://{closed}/v1"))).await;
    let reply = ErrorReply::read(h.chat("fake/echo").await).await;
    assert_eq!(
        (reply.status, reply.error.code),
        (502, ErrorCode::UpstreamError)
    );
    assert!(
        reply
            .error
            .message
            .contains("could not reach upstream 'fake'"),
        "{}",
        reply.text
    );
    // Three attempts: two retries.
    assert_eq!(h.retries("unreachable").await, 2);
}

#[tokio::test]
async fn retries_can_be_turned_off() {
    let h = start("retry_max_attempts = 1", None).await;
    // Armed over HTTP, as the browser suites arm it.
    let armed = h
        .proxy
        .client
        .post(format!("http://{}/_fail", h.fake.local_addr()))
        .json(&json!({"times": 1, "fail": "unavailable"}))
        .send()
        .await
        .unwrap();
    assert_eq!(armed.status(), 204);
    let reply = ErrorReply::read(h.chat("fake/echo").await).await;
    assert_eq!(reply.error.code, ErrorCode::UpstreamError);
    assert_eq!(h.attempts(), 1);
    assert_eq!(h.retries("unavailable").await, 0);
    // The next request is answered: the script failed one request only.
    assert_eq!(
        h.answer("fake/echo").await.message.content.as_deref(),
        Some("echo: hello")
    );
}
