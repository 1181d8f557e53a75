//! Tests of the fake LLM itself: if the equipment is wrong, every test that
//! relies on it proves nothing.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig, Observed};

async fn start() -> FakeLlm {
    FakeLlm::start(FakeLlmConfig::default()).await.unwrap()
}

async fn post_chat(llm: &FakeLlm, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", llm.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Payloads of the `data:` events of a complete SSE body.
fn sse_payloads(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

/// Polls the counters until `pred` holds; disconnect detection is async.
async fn wait_for(llm: &FakeLlm, pred: impl Fn(&Observed) -> bool) -> Observed {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let observed = llm.observed();
        if pred(&observed) || Instant::now() > deadline {
            return observed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn echo_non_streaming() {
    let llm = start().await;
    let body = json!({
        "model": "echo",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
                {"type": "text", "text": "world"}
            ]}
        ]
    });
    let response = post_chat(&llm, body.clone()).await;
    assert_eq!(response.status(), 200);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["object"], "chat.completion");
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "echo: hello world"
    );
    assert_eq!(value["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        value["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );
    let observed = llm.observed();
    assert_eq!(observed.requests, 1);
    assert_eq!(observed.last_body, Some(body));
    assert_eq!(observed.streams_started, 0);
}

#[tokio::test]
async fn echo_streaming_reassembles_exactly() {
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({
            "model": "echo",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi  there\nfriend"}]
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let payloads = sse_payloads(&response.text().await.unwrap());
    assert_eq!(payloads.last().unwrap(), "[DONE]");

    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: hi  there\nfriend");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 7);

    // Completion is counted when `[DONE]` is handed out, so no polling needed.
    let observed = llm.observed();
    assert_eq!(
        (observed.streams_started, observed.streams_completed),
        (1, 1)
    );
    assert_eq!(observed.streams_cancelled, 0);
}

#[tokio::test]
async fn parallel_tool_calls_stream_in_fragments() {
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({
            "model": "parallel-tools",
            "stream": true,
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
        }),
    )
    .await;
    let payloads = sse_payloads(&response.text().await.unwrap());
    let mut arguments = [String::new(), String::new()];
    let mut finish = None;
    for payload in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(payload).unwrap();
        let choice = &chunk["choices"][0];
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(name) = call["function"]["name"].as_str() {
                assert_eq!(name, "get_weather");
                assert_eq!(call["id"], format!("call_{}", index + 1));
            }
            arguments[index].push_str(call["function"]["arguments"].as_str().unwrap());
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
    }
    assert_eq!(arguments, [r#"{"city":"Paris"}"#, r#"{"city":"Tokyo"}"#]);
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn rate_limit_sends_retry_after() {
    let llm = start().await;
    let response = post_chat(&llm, json!({"model": "fail-429", "messages": []})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn errors_use_openai_shape() {
    let llm = start().await;
    let unknown = post_chat(&llm, json!({"model": "gpt-9", "messages": []})).await;
    assert_eq!(unknown.status(), 404);
    let value: Value = unknown.json().await.unwrap();
    assert_eq!(
        value["error"]["message"],
        "The model `gpt-9` does not exist"
    );
    assert_eq!(value["error"]["code"], "model_not_found");

    let invalid = reqwest::Client::new()
        .post(format!("{}/chat/completions", llm.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let value: Value = invalid.json().await.unwrap();
    assert_eq!(value["error"]["type"], "invalid_request_error");

    let leaky = post_chat(&llm, json!({"model": "fail-401", "messages": []})).await;
    assert_eq!(leaky.status(), 401);
    let text = leaky.text().await.unwrap();
    assert!(text.contains("Incorrect API key provided: sk-te************cret"));
    assert_eq!(llm.observed().requests, 3);
}

#[tokio::test]
async fn api_key_is_enforced() {
    let llm = FakeLlm::start(FakeLlmConfig {
        api_key: Some("sk-fake-key".into()),
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", llm.base_url());
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "x"}]});

    let missing = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let value: Value = missing.json().await.unwrap();
    assert_eq!(value["error"]["type"], "invalid_request_error");

    let wrong = client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let right = client
        .post(&url)
        .bearer_auth("sk-fake-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let observed = llm.observed();
    assert_eq!(observed.requests, 3);
    assert_eq!(
        observed.last_authorization.as_deref(),
        Some("Bearer sk-fake-key")
    );

    let models = client
        .get(format!("{}/models", llm.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
}

#[tokio::test]
async fn dropping_long_stream_counts_as_cancelled() {
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({"model": "long", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("tok2 ") {
        let bytes = body.next().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    drop(body);

    let observed = wait_for(&llm, |o| o.streams_cancelled == 1).await;
    assert_eq!(observed.streams_cancelled, 1, "{observed:?}");
    assert_eq!(observed.streams_completed, 0);
}

#[tokio::test]
async fn dropping_stalled_stream_counts_as_cancelled() {
    // No writes happen while stalled, so this checks the server notices a
    // silent client disconnect too (what proxy timeout tests depend on).
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({"model": "stall-stream", "stream": true, "messages": []}),
    )
    .await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("partial"));
    drop(body);

    let observed = wait_for(&llm, |o| o.streams_cancelled == 1).await;
    assert_eq!(observed.streams_cancelled, 1, "{observed:?}");
}

#[tokio::test]
async fn drop_stream_ends_without_done() {
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({"model": "drop-stream", "stream": true, "messages": []}),
    )
    .await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"finish_reason\":\"stop\""));
    assert_eq!(sse_payloads(&text).len(), 3);
}

#[tokio::test]
async fn dropping_the_server_cuts_inflight_streams() {
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({"model": "stall-stream", "stream": true, "messages": []}),
    )
    .await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(llm);
    let end = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .expect("client should see the server go away");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

#[tokio::test]
async fn cors_preflight_and_observed_endpoint() {
    let llm = start().await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/chat/completions", llm.base_url()),
        )
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    post_chat(&llm, json!({"model": "echo", "messages": []})).await;
    let root = llm.base_url().trim_end_matches("/v1").to_owned();
    let observed: Value = client
        .get(format!("{root}/_observed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(observed["requests"], 1);
    let reset = client.post(format!("{root}/_reset")).send().await.unwrap();
    assert!(reset.status().is_success());
    assert_eq!(llm.observed().requests, 0);
}

#[tokio::test]
async fn reset_stream_delivers_chunks_then_fails() {
    let llm = start().await;
    let response = post_chat(
        &llm,
        json!({"model": "reset-stream", "stream": true, "messages": []}),
    )
    .await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let error = loop {
        match body.next().await {
            Some(Ok(bytes)) => seen.push_str(std::str::from_utf8(&bytes).unwrap()),
            Some(Err(error)) => break error,
            None => panic!("body ended cleanly: {seen}"),
        }
    };
    assert!(seen.contains(r#""content":"b""#), "{seen} / {error}");
    assert!(!seen.contains("[DONE]"));
}
