//! The `mock` provider kind end to end: the real proxy (in-process, on loopback) answering mock
//! providers through its `/api/llm/*` routes, and the same mocks served over HTTP at
//! `/mock/<name>/v1`, reached the way the SDK's direct mode reaches any OpenAI-compatible
//! provider (`shared`'s direct route table). Both paths must give the same answers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::config::ProviderConfig;
use switchyard_proxy::mock::MockScript;
use switchyard_shared::{
    ChatAccumulator, ChatRequest, ChatResponse, ChatStreamDecoder, ErrorBody, ErrorCode,
    FinishReason, Message, ModelList, ProviderEndpoint, ProviderKind, RouteTable, StreamEvent,
    ToolCall, ToolDefinition, Usage, WireFormat, paths,
};

mod common;
use common::{LoopbackProxy, execute};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pace of the scripted mock's streams.
const CHUNK_DELAY_MS: u64 = 25;
/// The demo script's provider name.
const DEMO: &str = "demo-mock";

/// A mock provider with a small script, another that is not served over HTTP, and (added in
/// code, as the proxy's no-config default does) one running the built-in demo script.
fn config_text(upstream: &str, chunk_delay_ms: u64) -> String {
    format!(
        r#"
        [server]
        cors_allowed_origins = ["http://app.test"]
        max_body_bytes = 65536
        [upstream]
        {upstream}

        [[providers]]
        name = "mock"
        kind = "mock"
        models = ["scripted"]
        [providers.mock]
        chunk_delay_ms = {chunk_delay_ms}
        serve_http = true
        fallback = "I only know a few tricks."
        [[providers.mock.rules]]
        match = '(?i)calculate\s+(?P<expr>[-+*/().\d\s]+)'
        tool_calls = [{{ name = "calc__evaluate", arguments = {{ expression = "{{expr}}" }} }}]
        reply = "{{expr}} = {{results}}"
        [[providers.mock.rules]]
        match = '(?i)weather in (\w+) and (\w+)'
        tool_calls = [
          {{ name = "weather", arguments = {{ city = "{{1}}" }} }},
          {{ name = "weather", arguments = {{ city = "{{2}}", units = "metric" }} }},
        ]
        reply = "{{1}}: {{results.1}}; {{2}}: {{results.2}}"
        [[providers.mock.rules]]
        match = '(?i)^say (.+)$'
        reply = "You asked me to say: {{1}}"

        [[providers]]
        name = "quiet"
        kind = "mock"
        "#
    )
}

/// The proxy with the mocks of [`config_text`], and a client.
async fn start() -> LoopbackProxy {
    start_with("", CHUNK_DELAY_MS).await
}

async fn start_with(upstream: &str, chunk_delay_ms: u64) -> LoopbackProxy {
    common::init_tracing();
    let mut config =
        Config::from_toml_str(&config_text(upstream, chunk_delay_ms), "mock_provider test")
            .unwrap();
    config
        .providers
        .push(ProviderConfig::mock(DEMO, MockScript::demo()));
    LoopbackProxy::start(config, REQUEST_TIMEOUT).await
}

/// The requests these cases make beside the shared ones: through the proxy and, as direct mode
/// does, to the mocks' own endpoints.
impl LoopbackProxy {
    /// The table a browser in direct mode would use for the mock served at `/mock/<name>/v1`.
    fn direct(&self, provider: &str) -> RouteTable {
        RouteTable::direct(vec![ProviderEndpoint {
            name: provider.to_owned(),
            kind: ProviderKind::OpenAi,
            base_url: self.url(&format!("/mock/{provider}/v1")),
            api_key: None,
        }])
        .unwrap()
    }

    /// A non-streamed answer through the proxy's `/api/llm/chat`.
    async fn proxy_chat(&self, req: &ChatRequest) -> ChatResponse {
        let response = self.post(paths::LLM_CHAT, &json!(req)).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A streamed answer through the proxy's `/api/llm/stream`.
    async fn proxy_stream(&self, req: &ChatRequest) -> Vec<StreamEvent> {
        let response = self.post(paths::LLM_STREAM, &json!(req)).await;
        read_events(
            response,
            ChatStreamDecoder::new(WireFormat::Switchyard, None),
        )
        .await
        .0
    }

    /// A non-streamed answer from the mock's own endpoint, read by `shared` as direct mode does.
    async fn direct_chat(&self, req: &ChatRequest) -> ChatResponse {
        let provider = provider_of(req);
        let prepared = self.direct(provider).chat(req, false).unwrap();
        let response = execute(&self.client, &prepared.http).await;
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        prepared.decode_response(status, None, &body).unwrap()
    }

    /// A streamed answer from the mock's own endpoint, read by `shared` as direct mode does.
    async fn direct_stream(&self, req: &ChatRequest) -> Vec<StreamEvent> {
        let prepared = self.direct(provider_of(req)).chat(req, true).unwrap();
        let response = execute(&self.client, &prepared.http).await;
        read_events(response, prepared.stream_decoder()).await.0
    }
}

fn provider_of(req: &ChatRequest) -> &str {
    req.model.split_once('/').unwrap().0
}

/// Reads a whole event stream with `decoder`; also returns when each event arrived. Panics if
/// the stream does not end with its terminal event.
async fn read_events(
    mut response: reqwest::Response,
    mut decoder: ChatStreamDecoder,
) -> (Vec<StreamEvent>, Vec<Instant>) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        let new = decoder.push(&chunk);
        arrivals.extend(new.iter().map(|_| Instant::now()));
        events.extend(new);
    }
    events.extend(decoder.finish());
    assert!(
        events.last().is_some_and(StreamEvent::is_terminal),
        "the stream ended without a terminal event: {events:?}"
    );
    (events, arrivals)
}

fn folded(events: &[StreamEvent]) -> ChatResponse {
    let mut acc = ChatAccumulator::new();
    events.iter().for_each(|e| acc.push(e));
    acc.result().unwrap()
}

fn request(model: &str, messages: Vec<Message>, tools: &[&str]) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages,
        tools: tools
            .iter()
            .map(|name| ToolDefinition {
                name: (*name).to_owned(),
                description: None,
                parameters: json!({"type": "object"}),
            })
            .collect(),
        ..Default::default()
    }
}

/// `req` followed by `answer`'s tool calls and one result per call (`results[i]` for call i).
fn with_results(req: &ChatRequest, answer: &ChatResponse, results: &[&str]) -> ChatRequest {
    let mut next = req.clone();
    next.messages.push(answer.message.clone().into());
    for (call, result) in answer.message.tool_calls.iter().zip(results) {
        next.messages.push(Message::Tool {
            tool_call_id: call.id.clone(),
            content: (*result).to_owned(),
        });
    }
    next
}

fn arguments(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap()
}

async fn openai_error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
            && body["error"]["type"].is_string(),
        "not an OpenAI error body: {body}"
    );
    (status, body)
}

#[tokio::test]
async fn chat_answers_from_the_script_deterministically() {
    let h = start().await;
    let req = request("mock/scripted", vec![Message::user("say hello world")], &[]);
    let reply = h.proxy_chat(&req).await;
    assert_eq!(
        reply.message.content.as_deref(),
        Some("You asked me to say: hello world")
    );
    assert!(reply.message.tool_calls.is_empty());
    assert_eq!(reply.model, "mock/scripted");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    // Tokens are words: 3 in the question, 7 in the answer.
    assert_eq!(
        reply.usage,
        Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 7,
            total_tokens: 10
        })
    );
    assert!(reply.id.starts_with("chatcmpl-mock-"), "{}", reply.id);
    assert_eq!(
        h.proxy_chat(&req).await,
        reply,
        "the same question, the same answer"
    );

    let other = h
        .proxy_chat(&request(
            "mock/any-model-name",
            vec![Message::user("hm?")],
            &[],
        ))
        .await;
    assert_eq!(
        other.message.content.as_deref(),
        Some("I only know a few tricks.")
    );
    assert_eq!(other.model, "mock/any-model-name");
    assert_ne!(other.id, reply.id);

    // A mock without a script answers everything with the built-in fallback.
    let quiet = h
        .proxy_chat(&request("quiet/m", vec![Message::user("hello")], &[]))
        .await;
    assert!(
        quiet
            .message
            .content
            .as_deref()
            .unwrap()
            .contains("mock model"),
        "{quiet:?}"
    );
}

#[tokio::test]
async fn streams_are_paced_a_word_at_a_time() {
    let h = start().await;
    let req = request(
        "mock/scripted",
        vec![Message::user("say one two three four five six")],
        &[],
    );
    let response = h.post(paths::LLM_STREAM, &json!(req)).await;
    let (events, arrivals) = read_events(
        response,
        ChatStreamDecoder::new(WireFormat::Switchyard, None),
    )
    .await;
    let deltas: Vec<(usize, &str)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            StreamEvent::TextDelta { text } => Some((i, text.as_str())),
            _ => None,
        })
        .collect();
    let words: Vec<&str> = deltas.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        words,
        [
            "You ", "asked ", "me ", "to ", "say: ", "one ", "two ", "three ", "four ", "five ",
            "six"
        ]
    );
    // Each word is its own upstream chunk, paced by chunk_delay_ms, and relayed as it comes.
    let first = arrivals[deltas[0].0];
    let last = arrivals[deltas[deltas.len() - 1].0];
    let least = Duration::from_millis(CHUNK_DELAY_MS * (deltas.len() as u64 - 1) / 2);
    assert!(
        last - first >= least,
        "{:?} between the first and the last word",
        last - first
    );
    assert!(matches!(
        &events[..],
        [StreamEvent::Start { model, .. }, .., StreamEvent::Usage { .. }, StreamEvent::Finish { finish_reason: FinishReason::Stop }]
            if model == "mock/scripted"
    ));
    assert_eq!(folded(&events), h.proxy_chat(&req).await);
}

#[tokio::test]
async fn a_tool_round_trip_through_the_proxy() {
    let h = start().await;
    let req = request(
        "mock/scripted",
        vec![
            Message::system("be brief"),
            Message::user("Please calculate 6 * 7"),
        ],
        &["calc__evaluate", "other"],
    );
    let first = h.proxy_chat(&req).await;
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.message.content, None);
    let [call] = &first.message.tool_calls[..] else {
        panic!("one call expected: {first:?}");
    };
    assert_eq!(call.name, "calc__evaluate");
    assert_eq!(arguments(call), json!({"expression": "6 * 7"}));

    // Streamed, the same calls arrive as deltas and then complete.
    let events = h.proxy_stream(&req).await;
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolCallDelta { .. }))
            .count()
            >= 2,
        "{events:?}"
    );
    assert_eq!(folded(&events), first);

    let second = with_results(&req, &first, &["42"]);
    let answer = h.proxy_chat(&second).await;
    assert_eq!(answer.message.content.as_deref(), Some("6 * 7 = 42"));
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert_eq!(folded(&h.proxy_stream(&second).await), answer);
}

#[tokio::test]
async fn parallel_calls_and_fall_through() {
    let h = start().await;
    let req = request(
        "mock/scripted",
        vec![Message::user("weather in Paris and Oslo")],
        &["weather"],
    );
    let first = h.proxy_chat(&req).await;
    let calls = &first.message.tool_calls;
    assert_eq!(calls.len(), 2, "{first:?}");
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(arguments(&calls[0]), json!({"city": "Paris"}));
    assert_eq!(
        arguments(&calls[1]),
        json!({"city": "Oslo", "units": "metric"})
    );
    let answer = h
        .proxy_chat(&with_results(&req, &first, &["sun", "snow"]))
        .await;
    assert_eq!(
        answer.message.content.as_deref(),
        Some("Paris: sun; Oslo: snow")
    );

    // Without the tool, the rule is passed over (here to the fallback).
    let req = request(
        "mock/scripted",
        vec![Message::user("calculate 1+1")],
        &["weather"],
    );
    let reply = h.proxy_chat(&req).await;
    assert_eq!(
        reply.message.content.as_deref(),
        Some("I only know a few tricks.")
    );
}

#[tokio::test]
async fn the_demo_script_drives_the_demo_tools() {
    let h = start().await;
    let tools = ["demo__now", "demo__calculate", "demo__search_notes"];
    let model = format!("{DEMO}/mock");
    let req = request(
        &model,
        vec![Message::user("What time is it, and what is 12*(3+4)?")],
        &tools,
    );
    let first = h.proxy_chat(&req).await;
    let names: Vec<&str> = first
        .message
        .tool_calls
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["demo__now", "demo__calculate"]);
    assert_eq!(
        arguments(&first.message.tool_calls[1]),
        json!({"expression": "12*(3+4)"})
    );
    let results = ["Friday, 2026-01-02T03:04:05Z (UTC+00:00)", "12*(3+4) = 84"];
    let answer = h.proxy_chat(&with_results(&req, &first, &results)).await;
    let text = answer.message.content.unwrap();
    assert!(
        text.contains(results[0]) && text.contains(results[1]),
        "{text}"
    );

    // Without tools, the demo says what it can do.
    let plain = h
        .proxy_chat(&request(
            &model,
            vec![Message::user("What time is it?")],
            &[],
        ))
        .await;
    assert!(
        plain
            .message
            .content
            .unwrap()
            .contains("Calculate 12*(3+4)"),
        "the fallback suggests prompts"
    );
}

#[tokio::test]
async fn the_http_endpoint_gives_the_same_answers_as_the_proxy() {
    let h = start().await;
    let calc = request(
        "mock/scripted",
        vec![Message::user("calculate (1+2)*3")],
        &["calc__evaluate"],
    );
    let first = h.proxy_chat(&calc).await;
    let weather = request(
        "mock/scripted",
        vec![Message::user("weather in Rome and Lima")],
        &["weather"],
    );
    let weather_first = h.proxy_chat(&weather).await;
    let demo = request(
        &format!("{DEMO}/mock"),
        vec![Message::user("Search my notes for rust")],
        &["demo__search_notes"],
    );
    let demo_first = h.proxy_chat(&demo).await;
    let cases = [
        request("mock/scripted", vec![Message::user("say it twice")], &[]),
        request("mock/scripted", vec![Message::user("nothing matches")], &[]),
        calc.clone(),
        with_results(&calc, &first, &["9"]),
        weather.clone(),
        with_results(&weather, &weather_first, &["rain", "fog"]),
        demo.clone(),
        with_results(&demo, &demo_first, &["1 notes match \"rust\": ..."]),
    ];
    for req in &cases {
        let (proxied, direct) = tokio::join!(h.proxy_chat(req), h.direct_chat(req));
        assert_eq!(direct, proxied, "{req:?}");
        // Streams are paced: both at once.
        let (streamed, direct) = tokio::join!(h.proxy_stream(req), h.direct_stream(req));
        assert_eq!(direct, streamed, "{req:?}");
        assert_eq!(folded(&streamed), proxied);
    }
}

#[tokio::test]
async fn include_usage_is_honoured() {
    let h = start().await;
    let url = h.url("/mock/mock/v1/chat/completions");
    let body = |options: Value| {
        let mut body = json!({
            "model": "scripted",
            "messages": [{"role": "user", "content": "say hi"}],
            "stream": true,
        });
        if !options.is_null() {
            body["stream_options"] = options;
        }
        body
    };
    let sse = |body: Value| {
        let client = h.client.clone();
        let url = url.clone();
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    for options in [Value::Null, json!({"include_usage": false})] {
        let text = sse(body(options)).await;
        assert!(!text.contains("\"usage\""), "{text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    let text = sse(body(json!({"include_usage": true}))).await;
    let usage: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|chunk| !chunk["usage"].is_null())
        .collect();
    assert_eq!(usage.len(), 1, "{text}");
    assert_eq!(usage[0]["choices"], json!([]));
    assert_eq!(
        usage[0]["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8})
    );
}

#[tokio::test]
async fn the_http_endpoint_speaks_openai_and_sits_behind_the_layers() {
    let h = start().await;
    let chat_url = h.url("/mock/mock/v1/chat/completions");

    let models: Value = h
        .client
        .get(h.url("/mock/mock/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "scripted");

    let response = h
        .client
        .post(&chat_url)
        .header("content-type", "application/json")
        .header("x-request-id", "mock-req-1")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "mock-req-1");
    let (status, _) = openai_error_of(response).await;
    assert_eq!(status, 400);

    let response = h
        .client
        .post(&chat_url)
        .json(&json!({"model": "scripted", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error_of(response).await.0, 400);

    let response = h.client.get(&chat_url).send().await.unwrap();
    assert_eq!(openai_error_of(response).await.0, 405);

    let response = h
        .client
        .post(h.url("/mock/mock/v1/embeddings"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error_of(response).await.0, 404);

    // The proxy's body limit applies here too.
    let big = "x".repeat(100_000);
    let response = h
        .client
        .post(&chat_url)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": big}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai_error_of(response).await.0, 413);

    // Direct mode reads these errors like any provider's.
    let table = h.direct("mock");
    let prepared = table
        .chat(&request("mock/m", vec![Message::user("x")], &[]), false)
        .unwrap();
    let error = prepared.decode_error(405, None, br#"{"error":{"message":"nope","type":"t"}}"#);
    assert!(error.message.contains("nope"));

    // A page on a configured origin may call it (CORS from the proxy's layers).
    let preflight = h
        .client
        .request(reqwest::Method::OPTIONS, &chat_url)
        .header("origin", "http://app.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://app.test"
    );
}

#[tokio::test]
async fn only_served_mocks_have_an_endpoint_and_models_list_them() {
    let h = start().await;
    let response = h
        .client
        .get(h.url("/mock/quiet/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error = ErrorBody::parse(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(error.code, ErrorCode::NotFound);

    let text = h
        .client
        .get(h.url(paths::LLM_MODELS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("invalid"), "no address is shown: {text}");
    let models: ModelList = serde_json::from_str(&text).unwrap();
    let listed: Vec<(&str, ProviderKind, &[String])> = models
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p.kind, &p.models[..]))
        .collect();
    assert_eq!(
        listed,
        [
            (
                "mock",
                ProviderKind::OpenAi,
                &["mock/scripted".to_owned()][..]
            ),
            (
                "quiet",
                ProviderKind::OpenAi,
                &["quiet/mock".to_owned()][..]
            ),
            (DEMO, ProviderKind::OpenAi, &[format!("{DEMO}/mock")][..]),
        ]
    );
}

#[tokio::test]
async fn the_proxys_timeouts_apply_to_mocks() {
    // A mock slower than the idle timeout: how a frontend test gets a timeout on demand.
    let h = start_with("idle_timeout_ms = 100", 400).await;
    let req = request("mock/scripted", vec![Message::user("say slowly now")], &[]);
    let events = h.proxy_stream(&req).await;
    assert!(
        matches!(events.last(), Some(StreamEvent::Error { error }) if error.code == ErrorCode::UpstreamTimeout),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StreamEvent::Start { .. })),
        "the stream had begun: {events:?}"
    );
    // Not streamed, the answer is whole at once.
    let reply = h.proxy_chat(&req).await;
    assert_eq!(
        reply.message.content.as_deref(),
        Some("You asked me to say: slowly now")
    );
}

#[tokio::test]
async fn configuration_mistakes_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[[providers.mock.rules]]\nmatch = '(unclosed'\nreply = \"x\"\n",
            "providers[0].mock.rules[0].match",
            "regular expression",
        ),
        (
            "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[[providers.mock.rules]]\nmatch = 'a'\nreply = \"{2}\"\n",
            "providers[0].mock.rules[0].reply",
            "no such capture group",
        ),
        (
            "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[[providers.mock.rules]]\ntool_calls = [{ name = \"\" }]\n",
            "providers[0].mock.rules[0].tool_calls[0].name",
            "must not be empty",
        ),
        (
            "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[providers.mock]\nspeed = 3\n",
            "providers[0].mock",
            "unknown field `speed`",
        ),
        (
            "[[providers]]\nname = \"m\"\nkind = \"mock\"\nbase_url = \"http://x\"\n",
            "providers[0].base_url",
            "inside the proxy",
        ),
        (
            "[[providers]]\nname = \"a b\"\nkind = \"mock\"\n[providers.mock]\nserve_http = true\n",
            "providers[0].name",
            "/mock/<name>/v1",
        ),
    ];
    for (i, (text, key, problem)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("mock-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        for part in [path.to_str().unwrap(), key, problem] {
            assert!(message.contains(part), "{part:?} missing in:\n{message}");
        }
    }
}
