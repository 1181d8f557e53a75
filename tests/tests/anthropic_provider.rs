//! An Anthropic provider end to end: the real proxy (in process, on loopback) in front of the
//! fake Messages API, through the proxy's own routes and its OpenAI-compatible face. The
//! answers are the same normalized ones an OpenAI-style provider gives.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_shared::sse::SseDecoder;
use switchyard_shared::{
    ChatResponse, ChatStreamDecoder, ErrorCode, FinishReason, StreamEvent, WireFormat, paths,
};
use switchyard_tests::fake_anthropic::{FakeAnthropic, MESSAGE_ID};

mod common;
use common::{ErrorReply, LoopbackProxy};

/// The provider key the fake accepts; it must never reach a client.
const KEY: &str = "sk-ant-test-5c0ffee";

struct Harness {
    proxy: LoopbackProxy,
    fake: FakeAnthropic,
    _key_dir: tempfile::TempDir,
}

async fn start() -> Harness {
    common::init_tracing();
    let fake = FakeAnthropic::start(KEY).await.unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("anthropic.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let wrong_file = key_dir.path().join("wrong.key");
    std::fs::write(&wrong_file, "sk-ant-wrong\n").unwrap();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [[providers]]
        name = "claude"
        kind = "anthropic"
        base_url = "{base_url}"
        api_key_file = {key_file:?}

        [[providers]]
        name = "wrongkey"
        kind = "anthropic"
        base_url = "{base_url}"
        api_key_file = {wrong_file:?}
        "#,
        base_url = fake.base_url(),
    );
    let config = Config::from_toml_str(&toml, "anthropic test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, Duration::from_secs(20)).await,
        fake,
        _key_dir: key_dir,
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"}
    ]})
}

async fn events_of(mut response: reqwest::Response) -> Vec<StreamEvent> {
    assert_eq!(response.status(), 200);
    let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
    let mut events = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        events.extend(decoder.push(&chunk));
    }
    assert!(decoder.is_done(), "{events:?}");
    events
}

#[tokio::test]
async fn chats_and_streams_through_the_proxys_routes() {
    let h = start().await;
    let answer: ChatResponse = serde_json::from_value(
        h.proxy
            .post_json(paths::LLM_CHAT, &chat("claude/echo"))
            .await,
    )
    .unwrap();
    assert_eq!(answer.id, MESSAGE_ID);
    assert_eq!(answer.model, "claude/claude-fake-echo");
    assert_eq!(answer.message.content.as_deref(), Some("echo: hello there"));
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let usage = answer.usage.unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);

    // What reached Anthropic is in its own shape, with its headers and the proxy's key.
    let seen = h.fake.observed();
    let header = |name: &str| {
        seen.last_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(header("authorization"), None);
    let body = seen.last_body.unwrap();
    assert_eq!(body["system"], "be brief");
    assert_eq!(body["model"], "echo");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hello there"}]}])
    );

    // A streamed tool call, then the result sent back as a tool message.
    let tools = json!({
        "model": "claude/tools",
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"name": "get_weather", "parameters": {"type": "object"}}]
    });
    let events = events_of(h.proxy.post(paths::LLM_STREAM, &tools).await).await;
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCall { call, .. } => Some(call.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0].name, "get_weather");
    let arguments: Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::Usage { .. }))
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finish {
            finish_reason: FinishReason::ToolCalls
        })
    );
    let follow_up = json!({
        "model": "claude/tools",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [calls[0]]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"}
        ]
    });
    let answer = h.proxy.post_json(paths::LLM_CHAT, &follow_up).await;
    assert_eq!(
        answer["message"]["content"], "The tool said: result sunny",
        "{answer}"
    );
    let sent = h.fake.observed().last_body.unwrap();
    assert_eq!(sent["messages"][1]["content"][1]["type"], "tool_use");
    assert_eq!(
        sent["messages"][1]["content"][1]["input"],
        json!({"city": "Paris"})
    );
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"})
    );
}

#[tokio::test]
async fn the_openai_face_reaches_an_anthropic_provider() {
    let h = start().await;
    let mut body = chat("claude/echo");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut response = h.proxy.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    let mut decoder = SseDecoder::new();
    let mut data = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        data.extend(decoder.push(&chunk).into_iter().map(|e| e.data));
    }
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: hello there");
    assert!(
        chunks
            .iter()
            .all(|c| c["model"] == "claude/claude-fake-echo")
    );
    assert!(
        chunks.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn anthropics_errors_map_onto_the_shared_codes() {
    let h = start().await;
    let refused = |response| async move {
        let reply = ErrorReply::read(response).await;
        reply.assert_json();
        assert!(!reply.text.contains(KEY));
        reply
    };
    let reply = refused(
        h.proxy
            .post(paths::LLM_CHAT, &chat("claude/fail-429"))
            .await,
    )
    .await;
    assert_eq!(
        (reply.status, reply.error.code),
        (429, ErrorCode::RateLimited)
    );
    assert_eq!(reply.headers["retry-after"], "7");
    let reply = refused(
        h.proxy
            .post(paths::LLM_CHAT, &chat("claude/fail-529"))
            .await,
    )
    .await;
    assert_eq!(
        (reply.status, reply.error.code),
        (502, ErrorCode::UpstreamError)
    );
    assert!(reply.error.retryable);
    assert!(
        reply.error.message.contains("Overloaded"),
        "{:?}",
        reply.error
    );
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat("claude/nope")).await).await;
    assert_eq!((reply.status, reply.error.code), (404, ErrorCode::NotFound));
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat("wrongkey/echo")).await).await;
    assert_eq!(reply.error.code, ErrorCode::UpstreamUnauthorized);

    // Refused before anything is sent upstream.
    let before = h.fake.observed().requests;
    let mut body = chat("claude/echo");
    body["seed"] = json!(7);
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &body).await).await;
    assert_eq!(
        (reply.status, reply.error.code),
        (400, ErrorCode::BadRequest)
    );
    assert!(reply.error.message.contains("seed"), "{:?}", reply.error);
    assert_eq!(h.fake.observed().requests, before);

    // An `error` event after the stream began ends it with that error.
    let events = events_of(
        h.proxy
            .post(paths::LLM_STREAM, &chat("claude/error-stream"))
            .await,
    )
    .await;
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })));
    let Some(StreamEvent::Error { error }) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(error.code, ErrorCode::UpstreamError);
    assert!(error.message.contains("Overloaded"), "{error:?}");
}
