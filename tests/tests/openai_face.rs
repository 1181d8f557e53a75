//! The OpenAI-compatible face (`/v1/chat/completions`, `/v1/models`) end to end: the real proxy
//! (in process, on loopback) with keys, scopes and a rate limit, in front of the scripted
//! OpenAI-compatible upstream. One suite drives it with OpenAI's official npm client
//! (`tests/clients/openai_face.mjs`); the other reads the wire bytes themselves.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::sse::SseDecoder;
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};

mod common;
use common::LoopbackProxy;

/// The upstream key; it must never reach a client.
const KEY: &str = "sk-test-openai-face-8d2e71";
/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

struct Harness {
    proxy: LoopbackProxy,
    _fake: FakeLlm,
    // The upstream key file must outlive the start-up that reads it.
    _key_dir: tempfile::TempDir,
    /// Any model, no limits.
    main: String,
    /// One request per minute.
    limited: String,
    /// Only `fake/tools`.
    narrow: String,
}

async fn start() -> Harness {
    common::init_tracing();
    let fake = FakeLlm::start(FakeLlmConfig {
        api_key: Some(KEY.to_owned()),
    })
    .await
    .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("fake.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let (main, main_hash) = keys::generate().unwrap();
    let (limited, limited_hash) = keys::generate().unwrap();
    let (narrow, narrow_hash) = keys::generate().unwrap();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        max_body_bytes = 4096

        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{base_url}"
        api_key_file = {key_file:?}
        models = ["echo", "tools"]

        [[keys]]
        name = "main"
        hash = "{main_hash}"
        models = ["*"]
        mcp = []

        [[keys]]
        name = "limited"
        hash = "{limited_hash}"
        models = ["*"]
        mcp = []
        [keys.limits]
        requests_per_minute = 1

        [[keys]]
        name = "narrow"
        hash = "{narrow_hash}"
        models = ["fake/tools"]
        mcp = []
        "#,
        base_url = fake.base_url(),
    );
    let config = Config::from_toml_str(&toml, "openai face test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, REQUEST_TIMEOUT).await,
        _fake: fake,
        _key_dir: key_dir,
        main,
        limited,
        narrow,
    }
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs OpenAI's npm client against the face; what it saw.
async fn run_openai_client(h: &Harness) -> Value {
    let package = repository().join("node_modules/openai/package.json");
    assert!(
        package.is_file(),
        "{} is missing: run npm ci at the repository root (cargo xtask test does)",
        package.display()
    );
    let run = tokio::process::Command::new("node")
        .arg(repository().join("tests/clients/openai_face.mjs"))
        .env("SWITCHYARD_V1", h.proxy.url("/v1"))
        .env("SWITCHYARD_KEY", &h.main)
        .env("SWITCHYARD_LIMITED_KEY", &h.limited)
        .env("SWITCHYARD_NARROW_KEY", &h.narrow)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the client finished within a minute")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains(KEY), "the upstream key reached a client");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn openais_own_client_chats_streams_lists_and_reads_errors_through_the_face() {
    let h = start().await;
    let seen = run_openai_client(&h).await;

    assert_eq!(
        seen["completion"],
        json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake/echo",
            "content": "echo: hello there", "role": "assistant", "finishReason": "stop",
            "usage": seen["completion"]["usage"].clone()
        })
    );
    let usage = &seen["completion"]["usage"];
    assert!(usage["total_tokens"].as_u64().unwrap() > 0, "{usage}");

    let stream = &seen["stream"];
    assert_eq!(stream["text"], "echo: hello there");
    assert_eq!(stream["finishReason"], "stop");
    assert_eq!(stream["ids"], json!(["chatcmpl-fake"]));
    assert!(stream["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(stream["chunks"].as_u64().unwrap() >= 3, "{stream}");

    let tool_calls = seen["toolStream"]["toolCalls"].as_array().unwrap();
    assert_eq!(seen["toolStream"]["finishReason"], "tool_calls");
    assert_eq!(tool_calls.len(), 1, "{tool_calls:?}");
    assert_eq!(tool_calls[0]["type"], "function");
    assert_eq!(tool_calls[0]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(tool_calls[0]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments.is_object(), "{arguments}");
    assert!(!tool_calls[0]["id"].as_str().unwrap().is_empty());

    assert_eq!(
        seen["models"],
        json!([{"id": "fake/echo", "owned_by": "fake"}, {"id": "fake/tools", "owned_by": "fake"}])
    );
    assert_eq!(seen["narrowModels"], json!(["fake/tools"]));

    let expect = |case: &str, class: &str, status: u16, kind: &str, code: &str| {
        let error = &seen[case];
        assert_eq!(error["class"], class, "{case}: {error}");
        assert_eq!(error["status"], status, "{case}: {error}");
        assert_eq!(error["type"], kind, "{case}: {error}");
        assert_eq!(error["code"], code, "{case}: {error}");
        error
    };
    let error = expect(
        "unsupportedParameter",
        "BadRequestError",
        400,
        "invalid_request_error",
        "bad_request",
    );
    assert_eq!(error["param"], "logit_bias");
    expect(
        "wrongKey",
        "AuthenticationError",
        401,
        "authentication_error",
        "unauthorized",
    );
    expect(
        "outOfScope",
        "PermissionDeniedError",
        403,
        "permission_error",
        "forbidden",
    );
    expect(
        "unknownProvider",
        "NotFoundError",
        404,
        "invalid_request_error",
        "not_found",
    );
    let error = expect(
        "upstreamRefused",
        "RateLimitError",
        429,
        "rate_limit_error",
        "rate_limited",
    );
    assert_eq!(
        error["retryAfter"], "7",
        "the upstream's Retry-After is passed on"
    );
    assert_eq!(seen["firstLimited"], Value::Null);
    let error = expect(
        "secondLimited",
        "RateLimitError",
        429,
        "rate_limit_error",
        "rate_limited",
    );
    assert!(error["retryAfter"].as_str().is_some(), "{error}");
    let error = &seen["brokenStream"];
    assert_eq!(error["class"], "APIError", "{error}");
    assert_eq!(error["code"], "stream_interrupted", "{error}");
    assert_eq!(error["type"], "api_error", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("before the answer was complete"),
        "{error}"
    );
}

/// The SSE `data` payloads of a whole streamed answer.
async fn data_of(mut response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut decoder = SseDecoder::new();
    let mut data = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        data.extend(decoder.push(&chunk).into_iter().map(|event| event.data));
    }
    data
}

#[tokio::test]
async fn the_wire_format_is_openais() {
    let h = start().await;
    let post = |body: Value, key: &str| {
        h.proxy
            .client
            .post(h.proxy.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let hello = json!([{"role": "user", "content": "hi"}]);

    let response = post(json!({"model": "fake/echo", "messages": hello}), &h.main)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let created = body["created"].as_u64().unwrap();
    assert!(created > 1_700_000_000, "{body}");
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": "fake/echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: hi", "refusal": null,
                "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
            "usage": body["usage"].clone()
        })
    );

    // Without `include_usage` there is no usage chunk; `[DONE]` ends the stream.
    let data = data_of(
        post(
            json!({"model": "fake/echo", "messages": hello, "stream": true}),
            &h.main,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["usage"].is_null()
        && c["choices"].as_array().unwrap().len() == 1));
    assert_eq!(
        chunks.last().unwrap()["choices"][0],
        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"})
    );

    // Refusals from every layer are in OpenAI's shape under /v1/, with the shared codes.
    let too_big =
        json!({"model": "fake/echo", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let cases = [
        (
            post(too_big, &h.main).await.unwrap(),
            413,
            "payload_too_large",
        ),
        (
            post(json!({"model": "fake/echo", "messages": hello}), "nope")
                .await
                .unwrap(),
            401,
            "unauthorized",
        ),
        (
            h.proxy
                .client
                .get(h.proxy.url("/v1/embeddings"))
                .bearer_auth(&h.main)
                .send()
                .await
                .unwrap(),
            404,
            "not_found",
        ),
        (
            h.proxy
                .client
                .get(h.proxy.url("/v1/chat/completions"))
                .bearer_auth(&h.main)
                .send()
                .await
                .unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            post(
                json!({"model": "fake/echo", "messages": hello, "n": 2}),
                &h.main,
            )
            .await
            .unwrap(),
            400,
            "bad_request",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_object().unwrap();
        assert_eq!(error["code"], code, "{body}");
        assert!(error["type"].is_string() && error["message"].is_string());
        assert!(error.contains_key("param"), "{body}");
        assert!(!body.to_string().contains(KEY));
    }

    // The proxy's own API keeps its own error shape.
    let response = h
        .proxy
        .client
        .post(h.proxy.url("/api/llm/chat"))
        .bearer_auth("nope")
        .json(&json!({"model": "fake/echo", "messages": hello}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["retryable"].is_boolean(), "{body}");
    assert!(body["error"].get("type").is_none(), "{body}");
}
