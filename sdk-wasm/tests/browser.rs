//! The SDK in a real browser, against the test upstream directly and through a running proxy.
//!
//! Every case runs in both modes: a difference between them is a bug. `cargo xtask test` starts
//! the servers and passes their addresses at compile time (a browser test has no environment).

#![cfg(target_arch = "wasm32")]

use switchyard_sdk_wasm::{ClientCore, ClientOptions, DirectOptions, ProxyOptions, RetryOptions};
use switchyard_shared::{
    ApiError, ChatRequest, ChatResponse, ErrorCode, FinishReason, Message, ProviderEndpoint,
    ProviderKind, StreamEvent, ToolDefinition,
};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[macro_use]
mod common;
use common::{Mode, fake_provider, setting, sleep_ms, upstream};

/// Both modes know the provider `fake`.
fn client(mode: Mode) -> ClientCore {
    common::client(mode, vec![fake_provider()], Vec::new())
}

fn request(model: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::system("be brief"), Message::user(text)],
        ..Default::default()
    }
}

async fn collect(
    client: &ClientCore,
    req: &ChatRequest,
) -> (Vec<StreamEvent>, Result<ChatResponse, ApiError>) {
    let mut stream = match client.chat_stream(req, None).await {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut events = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => break,
            Err(e) => return (events, Err(e)),
        }
    }
    let result = stream.final_message().await;
    (events, result)
}

/// Reads the upstream's counters (`GET /_observed`) to see what reached it.
async fn streams_cancelled() -> u64 {
    let origin = upstream().trim_end_matches("/v1");
    let window = web_sys::window().expect("a window");
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str(&format!("{origin}/_observed")))
            .await
            .expect("observed")
            .unchecked_into();
    let json = JsFuture::from(resp.json().expect("json"))
        .await
        .expect("body");
    js_sys::Reflect::get(&json, &"streams_cancelled".into())
        .ok()
        .and_then(|v| v.as_f64())
        .expect("streams_cancelled") as u64
}

/// The chat requests the upstream has received so far, failed attempts included.
async fn upstream_requests() -> u64 {
    let origin = upstream().trim_end_matches("/v1");
    let window = web_sys::window().expect("a window");
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str(&format!("{origin}/_observed")))
            .await
            .expect("observed")
            .unchecked_into();
    let json = JsFuture::from(resp.json().expect("json"))
        .await
        .expect("body");
    js_sys::Reflect::get(&json, &"requests".into())
        .ok()
        .and_then(|v| v.as_f64())
        .expect("requests") as u64
}

/// Makes the upstream fail its next chat requests (`POST /_fail`), e.g.
/// `{"times": 1, "fail": "unavailable"}`.
async fn fail_next(script: &str) {
    let origin = upstream().trim_end_matches("/v1");
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&script.into());
    let headers = web_sys::Headers::new().unwrap();
    headers.set("content-type", "application/json").unwrap();
    init.set_headers(&headers);
    let window = web_sys::window().expect("a window");
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str_and_init(&format!("{origin}/_fail"), &init))
            .await
            .expect("armed")
            .unchecked_into();
    assert_eq!(resp.status(), 204, "the upstream refused {script}");
}

// ---------------------------------------------------------------------------------------------
// The cases, each run in both modes.

async fn chat_returns_the_whole_answer(mode: Mode) {
    let r = client(mode)
        .chat(&request("fake/echo", "hello there"), None)
        .await
        .unwrap();
    assert_eq!(r.message.content.as_deref(), Some("echo: hello there"));
    assert_eq!(r.model, "fake/echo");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    let usage = r.usage.expect("usage");
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
}

async fn stream_yields_deltas_then_finish(mode: Mode) {
    let (events, result) = collect(&client(mode), &request("fake/echo", "one two three")).await;
    let answer = result.unwrap();
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "echo: one two three");
    assert_eq!(answer.message.content.as_deref(), Some(text.as_str()));
    assert!(
        matches!(events.first(), Some(StreamEvent::Start { model, .. }) if model == "fake/echo")
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::Usage { .. }))
    );
    assert!(matches!(
        events.last(),
        Some(StreamEvent::Finish {
            finish_reason: FinishReason::Stop
        })
    ));
}

async fn streamed_tool_calls_are_assembled(mode: Mode) {
    let mut req = request("fake/parallel-tools", "weather?");
    req.tools = vec![ToolDefinition {
        name: "get_weather".into(),
        description: Some("Current weather".into()),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }];
    let (events, result) = collect(&client(mode), &req).await;
    let answer = result.unwrap();
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    let calls = &answer.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
    assert_eq!(calls[1].arguments, r#"{"city":"Tokyo"}"#);
    let deltas = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::ToolCallDelta { .. }))
        .count();
    assert!(deltas > 2, "arguments arrive in pieces");
}

async fn a_tool_result_goes_back_to_the_model(mode: Mode) {
    let mut req = request("fake/tools", "weather?");
    req.messages.push(Message::Assistant {
        content: None,
        name: None,
        tool_calls: vec![switchyard_shared::ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        }],
    });
    req.messages.push(Message::Tool {
        tool_call_id: "call_1".into(),
        content: "sunny".into(),
    });
    let r = client(mode).chat(&req, None).await.unwrap();
    assert_eq!(r.message.content.as_deref(), Some("tool said: sunny"));
}

async fn rate_limits_are_retryable_with_a_delay(mode: Mode) {
    let e = client(mode)
        .chat(&request("fake/fail-429", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.retryable);
    assert_eq!(e.http_status(), 429);
    let e = collect(&client(mode), &request("fake/fail-429", "x"))
        .await
        .1
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
}

async fn upstream_failures_are_upstream_errors(mode: Mode) {
    for model in ["fake/fail-500", "fake/fail-503"] {
        let e = client(mode)
            .chat(&request(model, "x"), None)
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.retryable),
            (ErrorCode::UpstreamError, true),
            "{model}"
        );
    }
}

async fn rejected_upstream_credentials_are_not_echoed(mode: Mode) {
    let e = client(mode)
        .chat(&request("fake/fail-401", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnauthorized);
    assert!(!e.message.contains("sk-"), "{}", e.message);
}

async fn unknown_models_and_providers_are_not_found(mode: Mode) {
    let e = client(mode)
        .chat(&request("fake/no-such-model", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = client(mode)
        .chat(&request("nope/echo", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
}

async fn malformed_requests_are_refused_before_sending(mode: Mode) {
    let e = client(mode)
        .chat(&request("no-provider-prefix", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    let mut req = request("fake/echo", "x");
    req.messages.clear();
    let e = client(mode).chat(&req, None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
}

async fn a_cut_stream_is_interrupted(mode: Mode) {
    let (events, result) = collect(&client(mode), &request("fake/drop-stream", "x")).await;
    assert_eq!(result.unwrap_err().code, ErrorCode::StreamInterrupted);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::TextDelta { .. })),
        "deltas before the cut arrive"
    );
}

async fn aborting_mid_stream_cancels_the_upstream(mode: Mode) {
    let before = streams_cancelled().await;
    let controller = web_sys::AbortController::new().unwrap();
    let client = client(mode);
    let mut stream = client
        .chat_stream(&request("fake/long", "x"), Some(&controller.signal()))
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Ok(Some(StreamEvent::Start { .. }))
    ));
    controller.abort();
    let mut outcome = Ok(None);
    for _ in 0..500 {
        outcome = stream.next().await;
        if !matches!(outcome, Ok(Some(_))) {
            break;
        }
    }
    assert_eq!(outcome.unwrap_err().code, ErrorCode::Aborted);
    // The upstream sees its stream dropped: the browser closed its connection, and in proxy mode
    // the proxy passed the close on.
    for _ in 0..60 {
        if streams_cancelled().await > before {
            return;
        }
        sleep_ms(50).await;
    }
    panic!("the upstream stream was not cancelled");
}

async fn an_aborted_signal_rejects_at_once(mode: Mode) {
    let controller = web_sys::AbortController::new().unwrap();
    controller.abort();
    let e = client(mode)
        .chat(&request("fake/echo", "x"), Some(&controller.signal()))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Aborted);
}

async fn breaking_off_a_stream_closes_it(mode: Mode) {
    let before = streams_cancelled().await;
    let client = client(mode);
    let mut stream = client
        .chat_stream(&request("fake/long", "x"), None)
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_some());
    stream.cancel();
    assert_eq!(
        stream.final_message().await.unwrap_err().code,
        ErrorCode::Aborted
    );
    for _ in 0..60 {
        if streams_cancelled().await > before {
            return;
        }
        sleep_ms(50).await;
    }
    panic!("the upstream stream was not cancelled");
}

async fn a_503_before_the_answer_is_retried(mode: Mode) {
    // Directly the SDK retries; through the proxy the proxy does, and the SDK sees the answer.
    let before = upstream_requests().await;
    fail_next(r#"{"times": 1, "fail": "unavailable"}"#).await;
    let r = client(mode)
        .chat(&request("fake/echo", "again"), None)
        .await
        .unwrap();
    assert_eq!(r.message.content.as_deref(), Some("echo: again"));
    assert_eq!(upstream_requests().await - before, 2);

    let before = upstream_requests().await;
    fail_next(r#"{"times": 1, "fail": "unavailable"}"#).await;
    let (events, result) = collect(&client(mode), &request("fake/echo", "streamed")).await;
    assert_eq!(
        result.unwrap().message.content.as_deref(),
        Some("echo: streamed")
    );
    assert!(matches!(events.last(), Some(StreamEvent::Finish { .. })));
    assert_eq!(upstream_requests().await - before, 2);
}

async fn failures_that_are_not_safe_to_repeat_are_sent_once(mode: Mode) {
    for (model, code) in [
        ("fake/fail-400", ErrorCode::BadRequest),
        ("fake/fail-401", ErrorCode::UpstreamUnauthorized),
        ("fake/fail-500", ErrorCode::UpstreamError),
    ] {
        let before = upstream_requests().await;
        let e = client(mode)
            .chat(&request(model, "x"), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, code, "{model}");
        assert_eq!(upstream_requests().await - before, 1, "{model}");
    }
    // A stream cut after its first events is not started again.
    let before = upstream_requests().await;
    let (_, result) = collect(&client(mode), &request("fake/drop-stream", "x")).await;
    assert_eq!(result.unwrap_err().code, ErrorCode::StreamInterrupted);
    assert_eq!(upstream_requests().await - before, 1);
}

in_both_modes!(
    a_503_before_the_answer_is_retried,
    failures_that_are_not_safe_to_repeat_are_sent_once,
    chat_returns_the_whole_answer,
    stream_yields_deltas_then_finish,
    streamed_tool_calls_are_assembled,
    a_tool_result_goes_back_to_the_model,
    rate_limits_are_retryable_with_a_delay,
    upstream_failures_are_upstream_errors,
    rejected_upstream_credentials_are_not_echoed,
    unknown_models_and_providers_are_not_found,
    malformed_requests_are_refused_before_sending,
    a_cut_stream_is_interrupted,
    aborting_mid_stream_cancels_the_upstream,
    an_aborted_signal_rejects_at_once,
    breaking_off_a_stream_closes_it,
);

// ---------------------------------------------------------------------------------------------
// Mode-specific behaviour.

#[wasm_bindgen_test]
async fn retries_can_be_turned_off() {
    // Directly only: through the proxy, the proxy's own setting decides.
    let client = ClientCore::new(ClientOptions::Direct(DirectOptions {
        // The test providers carry keys, as real ones would.
        allow_browser_secrets: true,
        providers: vec![fake_provider()],
        mcp_servers: Vec::new(),
        retry: Some(RetryOptions {
            max_attempts: Some(1),
            ..Default::default()
        }),
    }))
    .unwrap();
    let before = upstream_requests().await;
    fail_next(r#"{"times": 1, "fail": "unavailable"}"#).await;
    let e = client
        .chat(&request("fake/echo", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamError);
    assert_eq!(upstream_requests().await - before, 1);
}

#[wasm_bindgen_test]
fn retry_options_are_checked() {
    let e = ClientCore::new(ClientOptions::Direct(DirectOptions {
        allow_browser_secrets: false,
        providers: Vec::new(),
        mcp_servers: Vec::new(),
        retry: Some(RetryOptions {
            max_attempts: Some(0),
            ..Default::default()
        }),
    }))
    .err()
    .expect("refused");
    assert_eq!(e.code, ErrorCode::BadRequest);
}

/// Direct-mode options with `providers` and the browser-secrets flag as given.
fn direct_options(providers: Vec<ProviderEndpoint>, allow_browser_secrets: bool) -> ClientOptions {
    ClientOptions::Direct(DirectOptions {
        allow_browser_secrets,
        providers,
        mcp_servers: Vec::new(),
        retry: None,
    })
}

#[wasm_bindgen_test]
fn a_provider_key_in_direct_mode_is_refused_without_the_flag() {
    let e = ClientCore::new(direct_options(vec![fake_provider()], false))
        .err()
        .expect("refused");
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(e.code.http_status(), 400);
    for part in [
        "\"fake\"",
        "anyone using this page",
        "proxy",
        "/api/tokens",
        "allowBrowserSecrets",
    ] {
        assert!(
            e.message.contains(part),
            "{part:?} missing in: {}",
            e.message
        );
    }
    // The refusal names the risk; it never repeats the key.
    let key = fake_provider().api_key.expect("a key");
    assert!(!e.message.contains(&key), "{}", e.message);
}

#[wasm_bindgen_test]
async fn a_provider_key_in_direct_mode_is_accepted_with_the_flag() {
    let client = ClientCore::new(direct_options(vec![fake_provider()], true)).expect("accepted");
    let answer = client
        .chat(&request("fake/echo", "with the flag"), None)
        .await
        .expect("an answer");
    assert_eq!(
        answer.message.content.as_deref(),
        Some("echo: with the flag")
    );
}

#[wasm_bindgen_test]
fn a_keyless_provider_in_direct_mode_needs_no_flag() {
    let keyless = ProviderEndpoint {
        api_key: None,
        ..fake_provider()
    };
    let empty = ProviderEndpoint {
        name: "empty".into(),
        api_key: Some(String::new()),
        ..fake_provider()
    };
    assert!(ClientCore::new(direct_options(vec![keyless, empty], false)).is_ok());
}

/// A token from the authenticating test proxy (`POST /api/tokens`), minted with its key for
/// `body`: what a page's own backend would do for it.
async fn minted_token(body: &str) -> String {
    let proxy = setting(
        option_env!("SWITCHYARD_TEST_AUTH_PROXY"),
        "SWITCHYARD_TEST_AUTH_PROXY",
    );
    let key = setting(
        option_env!("SWITCHYARD_TEST_AUTH_PROXY_KEY"),
        "SWITCHYARD_TEST_AUTH_PROXY_KEY",
    );
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&body.into());
    let headers = web_sys::Headers::new().unwrap();
    headers.set("content-type", "application/json").unwrap();
    headers
        .set("authorization", &format!("Bearer {key}"))
        .unwrap();
    init.set_headers(&headers);
    let window = web_sys::window().expect("a window");
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str_and_init(&format!("{proxy}/api/tokens"), &init))
            .await
            .expect("minted")
            .unchecked_into();
    assert_eq!(resp.status(), 200, "the proxy refused to mint");
    let json = JsFuture::from(resp.json().expect("json"))
        .await
        .expect("body");
    js_sys::Reflect::get(&json, &"token".into())
        .ok()
        .and_then(|v| v.as_string())
        .expect("a token")
}

#[wasm_bindgen_test]
async fn proxy_mode_works_with_a_minted_token_within_its_scopes() {
    let token = minted_token(r#"{"models": ["fake/echo"], "ttl_seconds": 300}"#).await;
    let client = ClientCore::new(ClientOptions::Proxy(ProxyOptions {
        base_url: setting(
            option_env!("SWITCHYARD_TEST_AUTH_PROXY"),
            "SWITCHYARD_TEST_AUTH_PROXY",
        )
        .into(),
        api_key: Some(token),
        retry: None,
        transport: Default::default(),
    }))
    .expect("valid options");
    let answer = client
        .chat(&request("fake/echo", "by token"), None)
        .await
        .expect("an answer");
    assert_eq!(answer.message.content.as_deref(), Some("echo: by token"));
    // The key may use every `fake` model; the token only `fake/echo`.
    let e = client
        .chat(&request("fake/other", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message);
    // Without the token the proxy refuses the page.
    let anonymous = ClientCore::new(ClientOptions::Proxy(ProxyOptions {
        base_url: setting(
            option_env!("SWITCHYARD_TEST_AUTH_PROXY"),
            "SWITCHYARD_TEST_AUTH_PROXY",
        )
        .into(),
        api_key: None,
        retry: None,
        transport: Default::default(),
    }))
    .expect("valid options");
    let e = anonymous
        .chat(&request("fake/echo", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized, "{}", e.message);
}

#[wasm_bindgen_test]
async fn direct_mode_reports_an_unreachable_provider_as_a_network_error() {
    let client = ClientCore::new(ClientOptions::Direct(DirectOptions {
        allow_browser_secrets: false,
        retry: None,
        mcp_servers: Vec::new(),
        providers: vec![ProviderEndpoint {
            name: "down".into(),
            kind: ProviderKind::OpenAi,
            // Port 9 (discard) is closed on test machines.
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
        }],
    }))
    .unwrap();
    let e = client
        .chat(&request("down/m", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NetworkError);
    assert!(e.retryable);
}

/// The test page's own server, named `localhost` instead of `127.0.0.1`: another origin, one
/// that answers but sends no CORS headers.
fn origin_without_cors() -> String {
    let port = setting(
        option_env!("SWITCHYARD_TEST_PAGE_PORT"),
        "SWITCHYARD_TEST_PAGE_PORT",
    );
    format!("http://localhost:{port}")
}

#[wasm_bindgen_test]
async fn direct_mode_reports_a_provider_without_cors_as_cors_blocked() {
    let client = ClientCore::new(ClientOptions::Direct(DirectOptions {
        allow_browser_secrets: false,
        retry: None,
        mcp_servers: Vec::new(),
        providers: vec![ProviderEndpoint {
            name: "nocors".into(),
            kind: ProviderKind::OpenAi,
            base_url: format!("{}/v1", origin_without_cors()),
            api_key: None,
        }],
    }))
    .unwrap();
    let e = client
        .chat(&request("nocors/m", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::CorsBlocked, "{}", e.message);
    assert!(!e.retryable);
    assert!(
        e.message.contains("Access-Control-Allow-Origin"),
        "{}",
        e.message
    );
}

#[wasm_bindgen_test]
async fn proxy_mode_reports_an_unreachable_proxy_as_a_network_error() {
    let client = ClientCore::new(ClientOptions::Proxy(ProxyOptions {
        base_url: "http://127.0.0.1:9".into(),
        api_key: None,
        retry: None,
        transport: Default::default(),
    }))
    .unwrap();
    let e = client
        .chat(&request("fake/echo", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NetworkError);
}

#[wasm_bindgen_test]
fn invalid_options_are_refused() {
    let e = ClientCore::new(ClientOptions::Proxy(ProxyOptions {
        base_url: "localhost:3001".into(),
        api_key: None,
        retry: None,
        transport: Default::default(),
    }))
    .err()
    .expect("refused");
    assert_eq!(e.code, ErrorCode::BadRequest);
}
