//! One list of cases for every provider kind in both modes, in a real browser: the OpenAI-compatible
//! test upstream (`fake`), the fake Anthropic API (`anthropic`) and the fake Gemini API (`gemini`),
//! each reached directly and through the running proxy, over HTTP and over its WebSocket. Each
//! case asserts the same normalized answer whichever wire format carried it: a difference between
//! providers or modes is a bug.
//!
//! The three fakes script the same models by the same names (`echo`, `agent`, `length`, `long`,
//! `drop-stream`, `error-stream`, `fail-*`), each in its own provider's format. `cargo xtask test` starts them and
//! the proxy, and passes their addresses at compile time; `cargo xtask browser conformance` runs
//! this file alone.

#![cfg(target_arch = "wasm32")]

use serde_json::{Value, json};
use switchyard_sdk_wasm::ClientCore;
use switchyard_shared::{
    ApiError, ChatRequest, ChatResponse, ErrorCode, FinishReason, Message, ProviderEndpoint,
    StreamEvent, ToolCall, ToolDefinition,
};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test_configure;

wasm_bindgen_test_configure!(run_in_browser);

// The shared `in_both_modes!` covers one provider; this suite has its own for all three.
#[macro_use]
#[allow(unused_macros)]
mod common;
use common::{Mode, sleep_ms};

/// The provider a case runs against, by the name both the client and the proxy give it.
#[derive(Clone, Copy, Debug)]
enum Provider {
    Fake,
    Anthropic,
    Gemini,
}

impl Provider {
    fn endpoint(self) -> ProviderEndpoint {
        match self {
            Provider::Fake => common::fake_provider(),
            Provider::Anthropic => common::anthropic_provider(),
            Provider::Gemini => common::gemini_provider(),
        }
    }

    fn name(self) -> String {
        self.endpoint().name
    }

    /// `"<provider>/<script>"`.
    fn model(self, script: &str) -> String {
        format!("{}/{script}", self.name())
    }

    /// The fake's counters, `GET /_observed` at its origin.
    async fn streams_cancelled(self) -> u64 {
        let base = self.endpoint().base_url;
        let origin = base
            .trim_end_matches('/')
            .rsplit_once('/')
            .map_or(base.as_str(), |(origin, _)| origin);
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
}

/// A client in `mode` that knows `provider` (the proxy knows all three by the same names).
fn client(provider: Provider, mode: Mode) -> ClientCore {
    common::client(mode, vec![provider.endpoint()], Vec::new())
}

fn request(provider: Provider, script: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: provider.model(script),
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

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The answer's model names the provider and the scripted model (each fake adds its own
/// decoration, as real providers add versions).
fn assert_model(provider: Provider, model: &str, script: &str) {
    let rest = model
        .strip_prefix(&format!("{}/", provider.name()))
        .unwrap_or_else(|| panic!("{model:?} is not prefixed with {provider:?}'s name"));
    assert!(rest.contains(script), "{model:?}");
}

fn assert_usage_adds_up(answer: &ChatResponse) {
    let usage = answer.usage.expect("usage");
    assert!(usage.prompt_tokens > 0, "{usage:?}");
    assert!(usage.completion_tokens > 0, "{usage:?}");
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: Some("Current weather".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

async fn a_chat_returns_the_whole_answer(provider: Provider, mode: Mode) {
    let answer = client(provider, mode)
        .chat(&request(provider, "echo", "hello there"), None)
        .await
        .unwrap();
    assert_eq!(answer.message.content.as_deref(), Some("echo: hello there"));
    assert!(answer.message.tool_calls.is_empty());
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert_model(provider, &answer.model, "echo");
    assert_usage_adds_up(&answer);
}

async fn a_stream_brings_the_text_in_pieces(provider: Provider, mode: Mode) {
    let (events, result) = collect(
        &client(provider, mode),
        &request(provider, "echo", "one two three"),
    )
    .await;
    let answer = result.unwrap();
    let Some(StreamEvent::Start { model, .. }) = events.first() else {
        panic!("the stream does not begin with `start`: {events:?}");
    };
    assert_model(provider, model, "echo");
    let deltas = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::TextDelta { .. }))
        .count();
    assert!(deltas > 1, "one delta for the whole text: {events:?}");
    assert_eq!(text_of(&events), "echo: one two three");
    assert_eq!(
        answer.message.content.as_deref(),
        Some("echo: one two three")
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finish {
            finish_reason: FinishReason::Stop
        })
    );
    assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1);
    assert_eq!(answer.model, *model);
}

async fn usage_is_the_same_streamed_or_not(provider: Provider, mode: Mode) {
    let client = client(provider, mode);
    let req = request(provider, "echo", "count these four words");
    let whole = client.chat(&req, None).await.unwrap();
    let (events, streamed) = collect(&client, &req).await;
    let streamed = streamed.unwrap();
    assert_usage_adds_up(&whole);
    assert_eq!(streamed.usage, whole.usage);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::Usage { .. }))
            .count(),
        1,
        "{events:?}"
    );
}

async fn a_tool_call_goes_round_trip(provider: Provider, mode: Mode) {
    let client = client(provider, mode);
    let mut req = request(provider, "agent", r#"call get_weather {"city":"Paris"}"#);
    req.tools = vec![weather_tool()];

    // Streamed: the call arrives as deltas and one complete call, and the turn ends for it.
    let (events, result) = collect(&client, &req).await;
    let answer = result.unwrap();
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    let [call] = &answer.message.tool_calls[..] else {
        panic!("one call expected: {:?}", answer.message.tool_calls);
    };
    assert_eq!(call.name, "get_weather");
    assert!(!call.id.is_empty());
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert!(
        events.iter().any(|e| matches!(e,
            StreamEvent::ToolCallDelta { index: 0, id: Some(id), name: Some(name), .. }
                if *id == call.id && name == "get_weather")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::ToolCall { index: 0, call: c } if c == call)),
        "{events:?}"
    );

    // Not streamed: the same call.
    let whole = client.chat(&req, None).await.unwrap();
    assert_eq!(whole.finish_reason, FinishReason::ToolCalls);
    assert_eq!(whole.message.tool_calls.len(), 1);
    assert_eq!(whole.message.tool_calls[0].name, "get_weather");
    let whole_arguments: Value =
        serde_json::from_str(&whole.message.tool_calls[0].arguments).unwrap();
    assert_eq!(whole_arguments, arguments);

    // The result goes back under the call's id, and the model answers with it.
    req.messages.push(Message::Assistant {
        content: answer.message.content.clone(),
        tool_calls: vec![ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        }],
        name: None,
    });
    req.messages.push(Message::Tool {
        tool_call_id: call.id.clone(),
        content: "sunny".into(),
    });
    let answer = client.chat(&req, None).await.unwrap();
    assert_eq!(answer.message.content.as_deref(), Some("tool said: sunny"));
    assert!(answer.message.tool_calls.is_empty());
    assert_eq!(answer.finish_reason, FinishReason::Stop);
}

async fn stop_reasons_are_normalized(provider: Provider, mode: Mode) {
    let client = client(provider, mode);
    let mut tools = request(provider, "agent", "call get_weather {}");
    tools.tools = vec![weather_tool()];
    for (req, reason, text) in [
        (
            request(provider, "echo", "one two three four"),
            FinishReason::Stop,
            Some("echo: one two three four"),
        ),
        (
            request(provider, "length", "one two three four"),
            FinishReason::Length,
            Some("echo: one two"),
        ),
        (tools, FinishReason::ToolCalls, None),
    ] {
        let whole = client.chat(&req, None).await.unwrap();
        assert_eq!(whole.finish_reason, reason, "{}", req.model);
        assert_eq!(whole.message.content.as_deref(), text, "{}", req.model);
        let (events, streamed) = collect(&client, &req).await;
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish {
                finish_reason: reason
            }),
            "{}",
            req.model
        );
        assert_eq!(streamed.unwrap().finish_reason, reason);
    }
}

async fn upstream_errors_map_to_the_same_codes(provider: Provider, mode: Mode) {
    let client = client(provider, mode);
    let key = provider.endpoint().api_key.expect("a key");
    for (script, code, retryable, status) in [
        ("fail-429", ErrorCode::RateLimited, true, 429),
        ("fail-500", ErrorCode::UpstreamError, true, 502),
        ("fail-401", ErrorCode::UpstreamUnauthorized, false, 502),
        ("no-such-model", ErrorCode::NotFound, false, 404),
    ] {
        let req = request(provider, script, "x");
        let whole = client.chat(&req, None).await.unwrap_err();
        let (events, streamed) = collect(&client, &req).await;
        let streamed = streamed.unwrap_err();
        assert!(events.is_empty(), "{script}: {events:?}");
        for e in [&whole, &streamed] {
            assert_eq!(
                (e.code, e.retryable, e.http_status()),
                (code, retryable, status),
                "{script}: {e:?}"
            );
            assert!(!e.message.contains(&key), "{script}: {e:?}");
        }
        if code == ErrorCode::RateLimited {
            assert_eq!(whole.retry_after, Some(7), "{whole:?}");
            assert_eq!(streamed.retry_after, Some(7), "{streamed:?}");
        }
    }
}

async fn a_cut_stream_is_interrupted(provider: Provider, mode: Mode) {
    let (events, result) = collect(
        &client(provider, mode),
        &request(provider, "drop-stream", "x"),
    )
    .await;
    assert_eq!(result.unwrap_err().code, ErrorCode::StreamInterrupted);
    assert!(
        matches!(events.first(), Some(StreamEvent::Start { .. })),
        "{events:?}"
    );
    assert!(!text_of(&events).is_empty(), "the text before the cut");
}

async fn an_error_mid_stream_ends_it(provider: Provider, mode: Mode) {
    let (events, result) = collect(
        &client(provider, mode),
        &request(provider, "error-stream", "x"),
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(
        (error.code, error.retryable),
        (ErrorCode::UpstreamError, true),
        "{error:?}"
    );
    assert_eq!(text_of(&events), "partial");
    assert!(
        !events.iter().any(StreamEvent::is_terminal),
        "the error is the end: {events:?}"
    );
}

async fn a_cancelled_stream_stops_the_upstream(provider: Provider, mode: Mode) {
    let before = provider.streams_cancelled().await;
    let controller = web_sys::AbortController::new().unwrap();
    let client = client(provider, mode);
    let mut stream = client
        .chat_stream(&request(provider, "long", "x"), Some(&controller.signal()))
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
        if provider.streams_cancelled().await > before {
            return;
        }
        sleep_ms(50).await;
    }
    panic!("the upstream stream was not cancelled");
}

/// Defines every case for every provider in both modes, as `<provider>::<mode>::<case>`; proxy
/// mode runs twice, over HTTP (`proxy`) and over the WebSocket (`proxy_ws`).
macro_rules! for_every_provider_and_mode {
    ($($case:ident),* $(,)?) => {
        for_every_provider_and_mode!(@provider fake, Fake; $($case),*);
        for_every_provider_and_mode!(@provider anthropic, Anthropic; $($case),*);
        for_every_provider_and_mode!(@provider gemini, Gemini; $($case),*);
    };
    (@provider $module:ident, $provider:ident; $($case:ident),*) => {
        mod $module {
            for_every_provider_and_mode!(@mode direct, Direct, $provider; $($case),*);
            for_every_provider_and_mode!(@mode proxy, Proxy, $provider; $($case),*);
            for_every_provider_and_mode!(@mode proxy_ws, ProxyWebSocket, $provider; $($case),*);
        }
    };
    (@mode $module:ident, $mode:ident, $provider:ident; $($case:ident),*) => {
        mod $module {
            $(
                #[wasm_bindgen_test::wasm_bindgen_test]
                async fn $case() {
                    crate::$case(crate::Provider::$provider, crate::Mode::$mode).await
                }
            )*
        }
    };
}

for_every_provider_and_mode!(
    a_chat_returns_the_whole_answer,
    a_stream_brings_the_text_in_pieces,
    usage_is_the_same_streamed_or_not,
    a_tool_call_goes_round_trip,
    stop_reasons_are_normalized,
    upstream_errors_map_to_the_same_codes,
    a_cut_stream_is_interrupted,
    an_error_mid_stream_ends_it,
    a_cancelled_stream_stops_the_upstream,
);
