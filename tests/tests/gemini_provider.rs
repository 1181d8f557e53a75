//! A Gemini provider end to end: the real proxy (in process, on loopback) in front of the fake
//! Gemini API, through the proxy's own routes and its OpenAI-compatible face. The answers are
//! the same normalized ones the other providers give.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_shared::sse::SseDecoder;
use switchyard_shared::{
    ChatResponse, ChatStreamDecoder, ErrorCode, FinishReason, StreamEvent, WireFormat, paths,
};
use switchyard_tests::fake_gemini::{FakeGemini, RESPONSE_ID};

mod common;
use common::{ErrorReply, LoopbackProxy};

/// The provider key the fake accepts; it must never reach a client or a URL.
const KEY: &str = "AIzaSy-test-5c0ffee";

struct Harness {
    proxy: LoopbackProxy,
    fake: FakeGemini,
    _key_dir: tempfile::TempDir,
}

async fn start() -> Harness {
    common::init_tracing();
    let fake = FakeGemini::start(KEY).await.unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("gemini.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let wrong_file = key_dir.path().join("wrong.key");
    std::fs::write(&wrong_file, "AIzaSy-wrong\n").unwrap();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [[providers]]
        name = "gem"
        kind = "gemini"
        base_url = "{base_url}"
        api_key_file = {key_file:?}

        [[providers]]
        name = "wrongkey"
        kind = "gemini"
        base_url = "{base_url}"
        api_key_file = {wrong_file:?}
        "#,
        base_url = fake.base_url(),
    );
    let config = Config::from_toml_str(&toml, "gemini test").unwrap();
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
    let mut body = chat("gem/echo");
    body["temperature"] = json!(0.25);
    body["max_tokens"] = json!(64);
    let answer: ChatResponse =
        serde_json::from_value(h.proxy.post_json(paths::LLM_CHAT, &body).await).unwrap();
    assert_eq!(answer.id, RESPONSE_ID);
    assert_eq!(answer.model, "gem/echo-fake-001");
    assert_eq!(answer.message.content.as_deref(), Some("echo: hello there"));
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let usage = answer.usage.unwrap();
    // "be brief" and "hello there": four words; "echo: hello there": three.
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (4, 3, 7)
    );

    // What reached Google is in its own shape, with the key in its header and not in the URL.
    let seen = h.fake.observed();
    let header = |name: &str| {
        seen.last_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-goog-api-key").as_deref(), Some(KEY));
    assert_eq!(header("authorization"), None);
    assert_eq!(seen.last_uri, "/v1beta/models/echo:generateContent");
    let sent = seen.last_body.unwrap();
    assert_eq!(
        sent,
        json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
            "generationConfig": {"temperature": 0.25, "maxOutputTokens": 64}
        })
    );

    // A streamed tool call, then the result sent back as a tool message.
    let tools = json!({
        "model": "gem/tools",
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"name": "get_weather", "parameters": {"type": "object"}}]
    });
    let events = events_of(h.proxy.post(paths::LLM_STREAM, &tools).await).await;
    assert_eq!(
        h.fake.observed().last_uri,
        "/v1beta/models/tools:streamGenerateContent?alt=sse"
    );
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCall { call, .. } => Some(call.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0].id, "call_0");
    assert_eq!(calls[0].name, "get_weather");
    let arguments: Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    let Some(StreamEvent::Usage { usage }) = events.iter().rev().nth(1) else {
        panic!("{events:?}");
    };
    // The last chunk's counts: the three words and the call.
    assert_eq!(usage.completion_tokens, 3 + 5);
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finish {
            finish_reason: FinishReason::ToolCalls
        })
    );
    let follow_up = json!({
        "model": "gem/tools",
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
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Let me check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "skip_thought_signature_validator"}
        ]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
        ]})
    );
}

#[tokio::test]
async fn the_openai_face_reaches_a_gemini_provider() {
    let h = start().await;
    let answer = h
        .proxy
        .post_json(paths::OPENAI_CHAT_COMPLETIONS, &chat("gem/echo"))
        .await;
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["model"], "gem/echo-fake-001");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["total_tokens"], 7);

    let mut body = chat("gem/echo");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut response = h.proxy.post(paths::OPENAI_CHAT_COMPLETIONS, &body).await;
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
    assert!(chunks.iter().all(|c| c["model"] == "gem/echo-fake-001"));
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 7);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
}

#[tokio::test]
async fn googles_errors_map_onto_the_shared_codes() {
    let h = start().await;
    let refused = |response| async move {
        let reply = ErrorReply::read(response).await;
        reply.assert_json();
        assert!(!reply.text.contains(KEY));
        reply
    };
    // Google gives the delay in the body; the proxy passes it on as `Retry-After`.
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat("gem/fail-429")).await).await;
    assert_eq!(
        (reply.status, reply.error.code, reply.error.retry_after),
        (429, ErrorCode::RateLimited, Some(7))
    );
    assert_eq!(reply.headers["retry-after"], "7");
    assert!(
        reply.error.message.contains("exceeded your current quota"),
        "{:?}",
        reply.error
    );
    for model in ["gem/fail-500", "gem/fail-503"] {
        let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat(model)).await).await;
        assert_eq!(
            (reply.status, reply.error.code, reply.error.retryable),
            (502, ErrorCode::UpstreamError, true),
            "{model}"
        );
    }
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat("gem/fail-400")).await).await;
    assert_eq!(
        (reply.status, reply.error.code),
        (400, ErrorCode::BadRequest)
    );
    assert!(reply.error.message.contains("scripted bad request"));
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat("gem/nope")).await).await;
    assert_eq!((reply.status, reply.error.code), (404, ErrorCode::NotFound));
    // Google answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID).
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat("wrongkey/echo")).await).await;
    assert_eq!(
        (reply.status, reply.error.code),
        (502, ErrorCode::UpstreamUnauthorized)
    );
    assert!(!reply.text.contains("AIzaSy-wrong"));

    // Refused before anything is sent upstream: a model that would leave its path segment,
    // and a tool result that answers no call.
    let before = h.fake.observed().requests;
    for model in ["gem/echo:streamGenerateContent?key=x", "gem/..%2F..%2Fx"] {
        let reply = refused(h.proxy.post(paths::LLM_CHAT, &chat(model)).await).await;
        assert_eq!(
            (reply.status, reply.error.code),
            (400, ErrorCode::BadRequest),
            "{model}"
        );
    }
    let orphan = json!({"model": "gem/echo", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_9", "content": "x"}
    ]});
    let reply = refused(h.proxy.post(paths::LLM_CHAT, &orphan).await).await;
    assert_eq!(reply.error.code, ErrorCode::BadRequest);
    assert!(reply.error.message.contains("call_9"), "{:?}", reply.error);
    assert_eq!(h.fake.observed().requests, before);

    // An error chunk after the stream began ends it with that error; a body that ends without
    // a finish reason is a cut stream.
    let events = events_of(
        h.proxy
            .post(paths::LLM_STREAM, &chat("gem/error-stream"))
            .await,
    )
    .await;
    assert!(matches!(events.first(), Some(StreamEvent::Start { .. })));
    let Some(StreamEvent::Error { error }) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(error.code, ErrorCode::UpstreamError);
    assert!(error.message.contains("overloaded"), "{error:?}");
    let events = events_of(
        h.proxy
            .post(paths::LLM_STREAM, &chat("gem/drop-stream"))
            .await,
    )
    .await;
    let Some(StreamEvent::Error { error }) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(error.code, ErrorCode::StreamInterrupted);
}
