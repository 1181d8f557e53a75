//! The proxy's `/api/llm/*` face end to end: the real proxy (in-process, on loopback) in front of
//! the scripted OpenAI-compatible upstream. Every answer is read the way a client reads it, with
//! `shared`'s decoder.

use std::ops::Deref;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_shared::{
    ApiError, ChatResponse, ChatStreamDecoder, ErrorCode, ModelList, StreamEvent, WireFormat, paths,
};
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};

mod common;
use common::{ErrorReply, LoopbackProxy};

/// The upstream key; the fake rejects any other, and it must never reach a client.
const KEY: &str = "sk-test-proxy-e2e-3f9a1c";
/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings that differ between tests; TOML lines for `[server]` and `[upstream]`.
#[derive(Default)]
struct Setup {
    server: &'static str,
    upstream: &'static str,
    /// Replaces the fake's address (to point at a closed port).
    base_url: Option<String>,
}

/// A fake upstream, the proxy in front of it, and a client.
struct Harness {
    proxy: LoopbackProxy,
    fake: FakeLlm,
    // The key file must outlive the start-up that reads it; kept for clarity.
    _key_dir: tempfile::TempDir,
}

/// The cases speak to the proxy through the harness.
impl Deref for Harness {
    type Target = LoopbackProxy;

    fn deref(&self) -> &LoopbackProxy {
        &self.proxy
    }
}

async fn start() -> Harness {
    start_with(Setup::default()).await
}

async fn start_with(setup: Setup) -> Harness {
    common::init_tracing();
    let fake = FakeLlm::start(FakeLlmConfig {
        api_key: Some(KEY.to_owned()),
    })
    .await
    .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("fake.key");
    // The key reaches the proxy the way an operator would give it: through a file it reads.
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let base_url = setup.base_url.unwrap_or_else(|| fake.base_url());
    let toml = format!(
        r#"
        [server]
        {server}
        [upstream]
        {upstream}
        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{base_url}"
        api_key_file = {key_file:?}
        models = ["echo", "tools"]
        "#,
        server = setup.server,
        upstream = setup.upstream,
    );
    let config = Config::from_toml_str(&toml, "llm_proxy test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, REQUEST_TIMEOUT).await,
        fake,
        _key_dir: key_dir,
    }
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn tools_body(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"name": "get_weather", "parameters": {"type": "object"}}]
    })
}

/// Reads the error body, checking it is JSON of the shared shape; with its `Retry-After`.
async fn error_of(response: reqwest::Response) -> (u16, Option<String>, ApiError, String) {
    let reply = ErrorReply::read(response).await;
    reply.assert_json();
    let retry_after = reply
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (reply.status, retry_after, reply.error, reply.text)
}

/// Reads a whole event stream; panics if it does not end with its terminal event.
async fn events_of(mut response: reqwest::Response) -> Vec<StreamEvent> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // Browsers may drain an aborted keep-alive response instead of closing it; a stream's
    // connection must close so that aborting it cancels the upstream.
    assert_eq!(response.headers()["connection"], "close");
    let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
    let mut events = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        events.extend(decoder.push(&chunk));
    }
    assert!(
        decoder.is_done(),
        "the stream ended without a terminal event: {events:?}"
    );
    events
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

fn terminal_error(events: &[StreamEvent]) -> ErrorCode {
    match events.last() {
        Some(StreamEvent::Error { error }) => error.code,
        other => panic!("expected a final error event, got {other:?}"),
    }
}

#[tokio::test]
async fn chat_answers_with_the_normalized_response() {
    let h = start().await;
    let response = h.post(paths::LLM_CHAT, &chat_body("fake/echo")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let text = response.text().await.unwrap();
    assert!(!text.contains(KEY), "{text}");
    let reply: ChatResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(reply.message.content.as_deref(), Some("echo: hello"));
    assert_eq!(reply.model, "fake/echo");
    assert!(reply.usage.is_some());
    let observed = h.fake.observed();
    assert_eq!(
        observed.last_authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(observed.last_body.unwrap()["model"], "echo");
}

#[tokio::test]
async fn stream_forwards_normalized_events() {
    let h = start().await;
    let response = h.post(paths::LLM_STREAM, &chat_body("fake/echo")).await;
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let events = events_of(response).await;
    assert!(matches!(&events[0], StreamEvent::Start { model, .. } if model == "fake/echo"));
    assert_eq!(text_of(&events), "echo: hello");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::Usage { .. }))
    );
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    let observed = h.fake.observed();
    assert_eq!(
        (observed.streams_started, observed.streams_completed),
        (1, 1)
    );
}

#[tokio::test]
async fn streamed_tool_calls_are_assembled() {
    let h = start().await;
    let calls = |events: &[StreamEvent]| -> Vec<(String, String)> {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall { call, .. } => {
                    Some((call.name.clone(), call.arguments.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let events = events_of(h.post(paths::LLM_STREAM, &tools_body("fake/tools")).await).await;
    assert_eq!(
        calls(&events),
        [(
            "get_weather".to_owned(),
            r#"{"query":"weather in Paris"}"#.to_owned()
        )]
    );
    let events = events_of(
        h.post(paths::LLM_STREAM, &tools_body("fake/parallel-tools"))
            .await,
    )
    .await;
    assert_eq!(
        calls(&events),
        [
            ("get_weather".to_owned(), r#"{"city":"Paris"}"#.to_owned()),
            ("get_weather".to_owned(), r#"{"city":"Tokyo"}"#.to_owned()),
        ]
    );
    // The tools were sent upstream in the provider's format.
    let sent = h.fake.observed().last_body.unwrap();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn upstream_failures_map_to_the_taxonomy() {
    let h = start().await;

    let (status, retry_after, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/fail-429")).await).await;
    assert_eq!(
        (status, error.code, error.retryable),
        (429, ErrorCode::RateLimited, true)
    );
    assert_eq!(retry_after.as_deref(), Some("7"));
    assert_eq!(error.retry_after, Some(7));

    let (status, _, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/fail-500")).await).await;
    assert_eq!((status, error.code), (502, ErrorCode::UpstreamError));

    let (status, _, error, text) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/fail-401")).await).await;
    assert_eq!((status, error.code), (502, ErrorCode::UpstreamUnauthorized));
    assert!(!text.contains("sk-te") && !text.contains(KEY), "{text}");

    let (status, _, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/fail-404")).await).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));

    let (status, _, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/fail-400")).await).await;
    assert_eq!((status, error.code), (400, ErrorCode::BadRequest));

    // A stream that fails before it starts is an ordinary JSON error, not an event stream.
    let (status, _, error, _) =
        error_of(h.post(paths::LLM_STREAM, &chat_body("fake/fail-503")).await).await;
    assert_eq!((status, error.code), (502, ErrorCode::UpstreamError));
}

#[tokio::test]
async fn unknown_providers_and_models_are_not_found() {
    let h = start().await;
    let before = h.fake.observed().requests;
    let (status, _, error, _) = error_of(h.post(paths::LLM_CHAT, &chat_body("nope/x")).await).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
    assert_eq!(
        h.fake.observed().requests,
        before,
        "nothing was sent upstream"
    );
    let (status, _, error, _) = error_of(
        h.post(paths::LLM_CHAT, &chat_body("fake/no-such-model"))
            .await,
    )
    .await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let h = start_with(Setup {
        server: "max_body_bytes = 4096",
        ..Setup::default()
    })
    .await;
    let send_raw = |body: String, content_type: &'static str| {
        h.client
            .post(h.url(paths::LLM_CHAT))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let (status, _, error, _) = error_of(
        send_raw("{not json".into(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error.code), (400, ErrorCode::BadRequest));

    let mut body = chat_body("fake/echo");
    body["base_url"] = json!("http://169.254.169.254/");
    let (status, _, error, _) = error_of(h.post(paths::LLM_CHAT, &body).await).await;
    assert_eq!((status, error.code), (400, ErrorCode::BadRequest));
    assert!(error.message.contains("base_url"), "{}", error.message);

    let (status, _, error, _) = error_of(
        send_raw(chat_body("fake/echo").to_string(), "text/plain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error.code), (400, ErrorCode::BadRequest));

    let (status, _, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("no-slash")).await).await;
    assert_eq!((status, error.code), (400, ErrorCode::BadRequest));

    let mut big = chat_body("fake/echo");
    big["messages"][0]["content"] = json!("x".repeat(8 * 1024));
    let (status, _, error, _) = error_of(h.post(paths::LLM_CHAT, &big).await).await;
    assert_eq!((status, error.code), (413, ErrorCode::PayloadTooLarge));
    let (status, _, error, _) = error_of(h.post(paths::LLM_STREAM, &big).await).await;
    assert_eq!((status, error.code), (413, ErrorCode::PayloadTooLarge));

    assert_eq!(h.fake.observed().requests, 0, "nothing was sent upstream");
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    // Two different values, so that each error shows which timeout fired.
    let h = start_with(Setup {
        upstream: "first_byte_timeout_ms = 300\nidle_timeout_ms = 400",
        ..Setup::default()
    })
    .await;
    // No response headers: the first-byte timeout, for a chat and for a stream.
    let started = Instant::now();
    let (status, _, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/stall")).await).await;
    assert_eq!((status, error.code), (504, ErrorCode::UpstreamTimeout));
    assert_eq!(
        error.message,
        "upstream 'fake' did not answer within 300 ms"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let (status, _, error, _) =
        error_of(h.post(paths::LLM_STREAM, &chat_body("fake/stall")).await).await;
    assert_eq!((status, error.code), (504, ErrorCode::UpstreamTimeout));
    assert_eq!(
        error.message,
        "upstream 'fake' did not answer within 300 ms"
    );

    // Silence after the first chunk: the idle timeout, as the stream's last event.
    let mut response = h
        .post(paths::LLM_STREAM, &chat_body("fake/stall-stream"))
        .await;
    let (_, decoder) = read_until_text(&mut response, "partial").await;
    let started = Instant::now();
    let rest = rest_within(Duration::from_secs(2), response, decoder).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    match rest.last() {
        Some(StreamEvent::Error { error }) => {
            assert_eq!(error.code, ErrorCode::UpstreamTimeout);
            assert_eq!(error.message, "upstream 'fake' sent nothing for 400 ms");
        }
        other => panic!("expected the idle timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_whole_exchange_is_bounded_by_the_request_timeout() {
    let h = start_with(Setup {
        upstream: "first_byte_timeout_ms = 5000\nrequest_timeout_ms = 300",
        ..Setup::default()
    })
    .await;
    let started = Instant::now();
    let (status, _, error, _) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/stall")).await).await;
    assert_eq!((status, error.code), (504, ErrorCode::UpstreamTimeout));
    assert!(error.message.contains("300 ms"), "{}", error.message);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Reads a chat stream until its text is `text`; the events so far and the decoder.
async fn read_until_text(
    response: &mut reqwest::Response,
    text: &str,
) -> (Vec<StreamEvent>, ChatStreamDecoder) {
    assert_eq!(response.status(), 200);
    let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
    let mut events = Vec::new();
    while !text_of(&events).starts_with(text) {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended early");
        events.extend(decoder.push(&chunk));
    }
    (events, decoder)
}

/// The rest of a stream whose upstream is about to be cut: it must end, with a terminal event,
/// within a second of the cut.
async fn rest_after_cut(
    response: reqwest::Response,
    decoder: ChatStreamDecoder,
) -> Vec<StreamEvent> {
    rest_within(Duration::from_secs(1), response, decoder).await
}

/// The rest of a stream, which must end with a terminal event within `limit`.
async fn rest_within(
    limit: Duration,
    mut response: reqwest::Response,
    mut decoder: ChatStreamDecoder,
) -> Vec<StreamEvent> {
    let rest = async {
        let mut events = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            events.extend(decoder.push(&chunk));
        }
        assert!(decoder.is_done(), "no terminal event: {events:?}");
        events
    };
    tokio::time::timeout(limit, rest)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {limit:?}"))
}

#[tokio::test]
async fn a_cut_upstream_stream_ends_with_stream_interrupted() {
    let h = start().await;
    // The body ends cleanly but without finish or [DONE].
    let events = events_of(
        h.post(paths::LLM_STREAM, &chat_body("fake/drop-stream"))
            .await,
    )
    .await;
    assert_eq!(text_of(&events), "ab");
    assert_eq!(terminal_error(&events), ErrorCode::StreamInterrupted);
    // The connection breaks mid-body, 50 ms after the last text: the client learns of it
    // within a second (the read is bounded from the moment that text arrived, before the cut).
    let mut response = h
        .post(paths::LLM_STREAM, &chat_body("fake/reset-stream"))
        .await;
    let (_, decoder) = read_until_text(&mut response, "ab").await;
    let rest = rest_after_cut(response, decoder).await;
    assert_eq!(terminal_error(&rest), ErrorCode::StreamInterrupted);
}

#[tokio::test]
async fn an_upstream_process_that_dies_mid_stream_ends_it_with_stream_interrupted() {
    // The fake as a process of its own, so that it can be killed outright.
    let mut upstream = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-llm"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = upstream.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let origin = line.strip_prefix("listening on ").unwrap().to_owned();
    let h = start_with(Setup {
        base_url: Some(format!("{origin}/v1")),
        ..Setup::default()
    })
    .await;
    // `long` writes 200 chunks, 20 ms apart.
    let mut response = h.post(paths::LLM_STREAM, &chat_body("fake/long")).await;
    let (_, decoder) = read_until_text(&mut response, "tok0 tok1 ").await;
    upstream.start_kill().unwrap();
    let rest = rest_after_cut(response, decoder).await;
    assert_eq!(
        terminal_error(&rest),
        ErrorCode::StreamInterrupted,
        "{rest:?}"
    );
    let _ = upstream.wait().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_named_without_its_address() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = start_with(Setup {
        base_url: Some(format!("http://{closed}/v1")),
        ..Setup::default()
    })
    .await;
    let (status, _, error, text) =
        error_of(h.post(paths::LLM_CHAT, &chat_body("fake/echo")).await).await;
    assert_eq!(
        (status, error.code, error.retryable),
        (502, ErrorCode::UpstreamError, true)
    );
    assert!(
        error.message.contains("could not reach upstream 'fake'"),
        "{text}"
    );
    assert!(!text.contains(&closed.port().to_string()), "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_stream() {
    let h = start().await;
    let mut response = h.post(paths::LLM_STREAM, &chat_body("fake/long")).await;
    assert_eq!(response.status(), 200);
    let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
    while decoder
        .push(&response.chunk().await.unwrap().unwrap())
        .is_empty()
    {}
    assert_eq!(h.fake.observed().streams_started, 1);
    drop(response);

    let deadline = Instant::now() + Duration::from_secs(3);
    let observed = loop {
        let observed = h.fake.observed();
        if observed.streams_cancelled == 1 || Instant::now() > deadline {
            break observed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(observed.streams_cancelled, 1, "{observed:?}");
    assert_eq!(observed.streams_completed, 0);
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let h = start().await;
    let text = h
        .client
        .get(h.url(paths::LLM_MODELS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list: ModelList = serde_json::from_str(&text).unwrap();
    assert_eq!(list.providers.len(), 1);
    assert_eq!(list.providers[0].name, "fake");
    assert_eq!(list.providers[0].models, ["fake/echo", "fake/tools"]);
    assert!(!text.contains("127.0.0.1") && !text.contains(KEY), "{text}");

    let health = h.client.get(h.url(paths::HEALTH)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    let response = h.client.get(h.url("/api/nothing")).send().await.unwrap();
    let (status, _, error, _) = error_of(response).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));

    let response = h.client.get(h.url(paths::LLM_CHAT)).send().await.unwrap();
    let allow = response.headers().get("allow").cloned();
    let (status, _, error, _) = error_of(response).await;
    assert_eq!((status, error.code), (405, ErrorCode::MethodNotAllowed));
    assert_eq!(allow.as_ref().and_then(|v| v.to_str().ok()), Some("POST"));
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let h = start().await;
    let response = h
        .client
        .get(h.url(paths::HEALTH))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let response = h.client.get(h.url("/missing")).send().await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let h = start_with(Setup {
        server: r#"cors_allowed_origins = ["http://allowed.test"]"#,
        ..Setup::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        h.client
            .request(reqwest::Method::OPTIONS, h.url(paths::LLM_STREAM))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("http://allowed.test").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://allowed.test"
    );
    let denied = preflight("http://evil.test").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));

    let response = h
        .client
        .get(h.url(paths::HEALTH))
        .header("origin", "http://allowed.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://allowed.test"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let h = start().await;
    let response = h
        .client
        .get(h.url(paths::HEALTH))
        .header("origin", "http://allowed.test")
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn the_server_stops_when_asked() {
    let mut h = start().await;
    assert_eq!(
        h.client
            .get(h.url(paths::HEALTH))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let result = tokio::time::timeout(Duration::from_secs(5), h.proxy.stop())
        .await
        .expect("the proxy did not stop within 5 s");
    assert!(result.is_ok(), "{result:?}");
}
