//! The OpenAI-compatible path against a real model: Gemma 3 270M behind llama.cpp's server
//! (`tests/real-llm/serve.py`), a server this project did not write. The scripted fake proves the
//! details; these tests prove that `shared`'s OpenAI translation and the proxy hold up against the
//! real thing, in both modes:
//!
//! - proxy: the real proxy (in-process, on loopback) in front of llama.cpp, read as a client
//!   reads it, with `shared`'s decoder;
//! - direct: `shared`'s route table builds the request to llama.cpp, reqwest executes it, and
//!   `shared` reads the answer, exactly as the SDK does in the browser.
//!
//! A model's words are not predictable, so only what holds for any answer is checked. The tests
//! are ignored in a plain `cargo test`; `cargo xtask test` starts the model and runs them with
//! `SWITCHYARD_REAL_LLM_URL` set to its `/v1` base URL.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use switchyard_proxy::Config;
use switchyard_shared::{
    ChatAccumulator, ChatRequest, ChatResponse, ChatStreamDecoder, FinishReason, Method,
    PreparedRequest, ProviderEndpoint, ProviderKind, RouteTable, StreamEvent, WireFormat, paths,
};

mod common;
use common::LoopbackProxy;

/// Where the model server's OpenAI-compatible API is, e.g. `http://127.0.0.1:PORT/v1`.
const URL_ENV: &str = "SWITCHYARD_REAL_LLM_URL";
/// The provider name (in the proxy's config and the direct route table) and the model name
/// `serve.py` gives the weights.
const PROVIDER: &str = "gemma";
const MODEL: &str = "gemma/gemma-3-270m";
/// The most tokens a test asks for: generation is slow on small CI machines.
const MAX_TOKENS: u32 = 16;
/// Bounds each request, so that a hung server fails the test instead of stalling the suite. The
/// tests queue for the server's one slot; an answer takes under a second on an idle 2-core
/// machine and ~2.5 s with the cores busy, so this leaves a wide margin.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn upstream_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{URL_ENV} is not set: these tests need a running model server; \
             `cargo xtask test` starts one (or run tests/real-llm/serve.py and set {URL_ENV} \
             to http://127.0.0.1:PORT/v1)"
        )
    })
}

/// The request every test sends: short, and greedy so that the model is as steady as it can be.
fn chat_body() -> serde_json::Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello in one word."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0
    })
}

/// Awaits `fut` for at most [`REQUEST_TIMEOUT`]; panics naming `what` when it takes longer.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {REQUEST_TIMEOUT:?}"))
}

/// The proxy, in-process on 127.0.0.1, with the model server as provider `gemma`.
async fn start_proxy() -> LoopbackProxy {
    let toml = format!(
        r#"
        [[providers]]
        name = "{PROVIDER}"
        kind = "openai"
        base_url = "{}"
        models = ["gemma-3-270m"]
        "#,
        upstream_url()
    );
    let config = Config::from_toml_str(&toml, "real-llm test").unwrap();
    LoopbackProxy::start(config, REQUEST_TIMEOUT).await
}

/// What every complete answer must satisfy, whatever the model said.
fn check_answer(reply: &ChatResponse) {
    assert_eq!(reply.model, MODEL, "the model name is `<provider>/<model>`");
    assert!(!reply.id.is_empty(), "llama.cpp sends a response id");
    let text = reply.message.content.as_deref().unwrap_or_default();
    assert!(!text.is_empty(), "no text in {reply:?}");
    assert!(reply.message.tool_calls.is_empty(), "{reply:?}");
    assert!(
        matches!(
            reply.finish_reason,
            FinishReason::Stop | FinishReason::Length
        ),
        "{reply:?}"
    );
    let usage = reply
        .usage
        .unwrap_or_else(|| panic!("no usage in {reply:?}"));
    assert!(usage.prompt_tokens > 0, "{usage:?}");
    assert!(
        (1..=MAX_TOKENS).contains(&usage.completion_tokens),
        "max_tokens was {MAX_TOKENS}: {usage:?}"
    );
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens,
        "{usage:?}"
    );
    if reply.finish_reason == FinishReason::Length {
        assert_eq!(usage.completion_tokens, MAX_TOKENS, "{reply:?}");
    }
}

/// What every complete event stream must satisfy; returns the answer it adds up to.
fn check_stream(events: &[StreamEvent]) -> ChatResponse {
    assert!(
        matches!(events.first(), Some(StreamEvent::Start { .. })),
        "the stream begins with `start`: {events:?}"
    );
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!deltas.is_empty(), "no text_delta in {events:?}");
    assert_eq!(
        events.iter().filter(|e| e.is_terminal()).count(),
        1,
        "exactly one terminal event: {events:?}"
    );
    assert!(
        matches!(events.last(), Some(StreamEvent::Finish { .. })),
        "the stream ends with `finish`: {events:?}"
    );
    let mut accumulator = ChatAccumulator::new();
    for event in events {
        accumulator.push(event);
    }
    let reply = accumulator
        .result()
        .unwrap_or_else(|e| panic!("the events do not add up to an answer: {e:?}"));
    assert_eq!(
        reply.message.content.as_deref(),
        Some(deltas.concat().as_str()),
        "the accumulated text is the deltas, in order"
    );
    check_answer(&reply);
    reply
}

/// Reads a streamed body to its end with `decoder`, as a client does.
async fn read_stream(
    mut response: reqwest::Response,
    mut decoder: ChatStreamDecoder,
) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        events.extend(decoder.push(&chunk));
    }
    // A body that ends without a terminal event turns into an `error` event here.
    events.extend(decoder.finish());
    events
}

/// Sends a chat request that `shared` described (always a POST).
async fn execute(client: &reqwest::Client, prepared: &PreparedRequest) -> reqwest::Response {
    assert_eq!(prepared.http.method, Method::Post);
    common::execute(client, &prepared.http).await
}

fn direct_route_table() -> RouteTable {
    RouteTable::direct(vec![ProviderEndpoint {
        name: PROVIDER.to_owned(),
        kind: ProviderKind::OpenAi,
        base_url: upstream_url(),
        api_key: None,
    }])
    .unwrap()
}

fn chat_request() -> ChatRequest {
    serde_json::from_value(chat_body()).unwrap()
}

#[tokio::test]
#[ignore = "needs a real model: run by cargo xtask test"]
async fn proxy_chat_answers() {
    let proxy = start_proxy().await;
    let client = reqwest::Client::new();
    let (status, text) = bounded("the proxied chat", async {
        let response = client
            .post(format!("{}{}", proxy.base, paths::LLM_CHAT))
            .json(&chat_body())
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    })
    .await;
    assert_eq!(status, 200, "{text}");
    let reply: ChatResponse = serde_json::from_str(&text).unwrap();
    check_answer(&reply);
}

#[tokio::test]
#[ignore = "needs a real model: run by cargo xtask test"]
async fn proxy_stream_answers() {
    let proxy = start_proxy().await;
    let client = reqwest::Client::new();
    let events = bounded("the proxied stream", async {
        let response = client
            .post(format!("{}{}", proxy.base, paths::LLM_STREAM))
            .json(&chat_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        read_stream(
            response,
            ChatStreamDecoder::new(WireFormat::Switchyard, None),
        )
        .await
    })
    .await;
    let reply = check_stream(&events);
    assert!(
        reply.usage.is_some(),
        "the proxy forwards the usage llama.cpp reports at the end of the stream"
    );
}

#[tokio::test]
#[ignore = "needs a real model: run by cargo xtask test"]
async fn direct_chat_answers() {
    let prepared = direct_route_table().chat(&chat_request(), false).unwrap();
    assert_eq!(
        prepared.http.url,
        format!("{}/chat/completions", upstream_url())
    );
    let client = reqwest::Client::new();
    let (status, retry_after, body) = bounded("the direct chat", async {
        let response = execute(&client, &prepared).await;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, retry_after, response.bytes().await.unwrap())
    })
    .await;
    let reply = prepared
        .decode_response(status, retry_after.as_deref(), &body)
        .unwrap_or_else(|e| {
            panic!(
                "shared could not read llama.cpp's answer ({e:?}): {}",
                String::from_utf8_lossy(&body)
            )
        });
    check_answer(&reply);
}

#[tokio::test]
#[ignore = "needs a real model: run by cargo xtask test"]
async fn direct_stream_answers() {
    let prepared = direct_route_table().chat(&chat_request(), true).unwrap();
    let client = reqwest::Client::new();
    let events = bounded("the direct stream", async {
        let response = execute(&client, &prepared).await;
        assert_eq!(response.status(), 200);
        read_stream(response, prepared.stream_decoder()).await
    })
    .await;
    let reply = check_stream(&events);
    assert!(
        reply.usage.is_some(),
        "shared asks for usage (`stream_options.include_usage`) and reads it from the last chunk"
    );
}

/// The Python interpreter of the real model's virtualenv, which also holds OpenAI's Python
/// client (`cargo xtask test` sets it).
const PYTHON_ENV: &str = "SWITCHYARD_REAL_LLM_PYTHON";

#[tokio::test]
#[ignore = "needs a real model: run by cargo xtask test"]
async fn openais_python_client_chats_and_streams_through_the_face() {
    let python = std::env::var(PYTHON_ENV)
        .unwrap_or_else(|_| panic!("{PYTHON_ENV} is not set: `cargo xtask test` sets it"));
    let (key, hash) = switchyard_proxy::auth::keys::generate().unwrap();
    let toml = format!(
        r#"
        [[providers]]
        name = "{PROVIDER}"
        kind = "openai"
        base_url = "{}"
        models = ["gemma-3-270m"]

        [[keys]]
        name = "python"
        hash = "{hash}"
        models = ["{MODEL}"]
        mcp = []
        "#,
        upstream_url()
    );
    let config = Config::from_toml_str(&toml, "real-llm test").unwrap();
    let proxy = LoopbackProxy::start(config, REQUEST_TIMEOUT).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/openai_face.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .env("SWITCHYARD_V1", format!("{}/v1", proxy.base))
        .env("SWITCHYARD_KEY", &key)
        .env("SWITCHYARD_MODEL", MODEL)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = bounded("OpenAI's Python client", run)
        .await
        .expect("the virtualenv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let completion = &seen["completion"];
    assert_eq!(completion["object"], "chat.completion", "{seen}");
    assert_eq!(completion["model"], MODEL);
    assert_eq!(completion["role"], "assistant");
    assert!(
        completion["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{seen}"
    );
    assert!(
        matches!(
            completion["finish_reason"].as_str(),
            Some("stop" | "length")
        ),
        "{seen}"
    );
    let usage = &completion["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        ),
        "{seen}"
    );

    // The stream arrives in several chunks, adds up to text, and ends with its usage.
    let stream = &seen["stream"];
    assert!(stream["chunks"].as_u64().is_some_and(|n| n > 2), "{seen}");
    assert!(
        stream["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{seen}"
    );
    assert!(
        matches!(stream["finish_reason"].as_str(), Some("stop" | "length")),
        "{seen}"
    );
    assert!(
        stream["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=u64::from(MAX_TOKENS)).contains(&n)),
        "{seen}"
    );

    assert_eq!(seen["models"], serde_json::json!([MODEL]));
    assert_eq!(
        seen["out_of_scope"],
        serde_json::json!({"class": "PermissionDeniedError", "status": 403, "code": "forbidden"})
    );
    assert_eq!(
        seen["wrong_key"],
        serde_json::json!({"class": "AuthenticationError", "status": 401, "code": "unauthorized"})
    );
}
