//! What the proxy tells its operator, end to end: the real proxy (in process, on loopback) with
//! the mock provider and the built-in demo MCP server, driven through its HTTP API, then read
//! through `/metrics` (parsed as Prometheus text), `/readyz`, and its log.
//!
//! The log is captured the way the binary writes it with `--log-format json` (the same JSON
//! formatter and default filter), by a process-wide subscriber: this suite is its own test
//! binary, and every case tells its lines apart by the `x-request-id`s it sends.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_shared::{ChatStreamDecoder, StreamEvent, Usage, WireFormat, paths};
use tracing_subscriber::fmt::MakeWriter;

mod common;
use common::{LoopbackProxy, read_tool_events};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
/// What must never appear in metrics, readiness answers or logs.
const UPSTREAM_KEY: &str = "sk-upstream-obs-2b7e91";
const CLIENT_TOKEN: &str = "client-token-obs-77d1c0";
/// Message contents and tool arguments, which are not logged by default.
const CHAT_MARKER: &str = "contentmarker5f1a";
const ARGUMENT_MARKER: &str = "argumentmarker93c2";
/// The same, for the case that logs arguments (the log is shared by every case).
const LOGGED_ARGUMENT: &str = "loggedargument1d8b";
const UNLOGGED_CONTENT: &str = "unloggedcontent6e0f";

// ---------------------------------------------------------------------------------------------
// The log, as `--log-format json` writes it.

/// Everything logged in this process, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process's log; installed by the first case that asks.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        // The binary's default filter and JSON format (see `init_logging` in main.rs).
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,rmcp=warn"))
            .with_ansi(false)
            .with_writer(log.clone())
            .json()
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned()
}

/// The audit lines (their `fields`) of requests whose id starts with `prefix`.
fn audit_lines(prefix: &str) -> Vec<Value> {
    log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "switchyard::audit")
        .map(|line| line["fields"].clone())
        .filter(|fields| {
            fields["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(prefix))
        })
        .collect()
}

/// The one audit line of request `id`; waits a little, as a stream's line is written when the
/// server lets go of it.
async fn audit_line(id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = audit_lines(id)
            .into_iter()
            .filter(|l| l["request_id"] == id)
            .collect();
        match lines.len() {
            1 => return lines.into_iter().next().unwrap(),
            0 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            n => panic!("{n} audit lines for {id}:\n{}", log_text()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy and its requests.

/// A mock provider with a listed model, a provider nobody answers (with a key), the demo MCP
/// server, and `extra` (more TOML) after them.
async fn start(extra: &str) -> (LoopbackProxy, tempfile::TempDir) {
    log();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, UPSTREAM_KEY).unwrap();
    let toml = format!(
        r#"
        [[providers]]
        name = "mock"
        kind = "mock"
        models = ["scripted"]
        [providers.mock]
        chunk_delay_ms = 1
        [[providers.mock.rules]]
        match = '(?i)^say (.+)$'
        reply = "You asked me to say: {{1}}"

        [[providers]]
        name = "remote"
        kind = "openai"
        base_url = "http://127.0.0.1:9/v1"
        api_key_file = {key_file:?}

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"

        {extra}
        "#
    );
    let config = Config::from_toml_str(&toml, "observability test").unwrap();
    (LoopbackProxy::start(config, REQUEST_TIMEOUT).await, dir)
}

/// The requests these cases make, each with its own request id.
impl LoopbackProxy {
    async fn send(&self, id: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("x-request-id", id)
            .header("authorization", format!("Bearer {CLIENT_TOKEN}"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A chat through `/api/llm/chat`: its status and body.
    async fn chat(&self, id: &str, model: &str, text: &str) -> (u16, Value) {
        let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
        let response = self.send(id, paths::LLM_CHAT, &body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A streamed chat through `/api/llm/stream`, read to its end: its events.
    async fn stream(&self, id: &str, model: &str, text: &str) -> Vec<StreamEvent> {
        let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
        let mut response = self.send(id, paths::LLM_STREAM, &body).await;
        assert_eq!(response.status(), 200);
        let mut decoder = ChatStreamDecoder::new(WireFormat::Switchyard, None);
        let mut events = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            events.extend(decoder.push(&chunk));
        }
        events
    }

    /// A tool call of the demo server through `/api/mcp/tool`: its status and body.
    async fn tool(&self, id: &str, tool: &str, arguments: Value) -> (u16, Value) {
        let body = json!({"server": "demo", "name": tool, "arguments": arguments});
        let response = self.send(id, paths::MCP_TOOL, &body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn metrics_text(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
        );
        response.text().await.unwrap()
    }

    async fn readyz(&self) -> (u16, Value) {
        let response = self.client.get(self.url("/readyz")).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        for secret in [UPSTREAM_KEY, "127.0.0.1", "http://"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        (status, serde_json::from_str(&text).unwrap())
    }
}

fn usage_of(events: &[StreamEvent]) -> Usage {
    events
        .iter()
        .find_map(|e| match e {
            StreamEvent::Usage { usage } => Some(*usage),
            _ => None,
        })
        .expect("the stream reports its usage")
}

// ---------------------------------------------------------------------------------------------
// Prometheus text.

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (one sample per line; comments skipped).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The value of the series `name` with exactly `labels`; 0 when it does not exist.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map_or(0.0, |s| s.value)
}

// ---------------------------------------------------------------------------------------------
// Metrics.

#[tokio::test]
async fn metrics_count_requests_tokens_tool_calls_and_errors_under_bounded_labels() {
    let (proxy, _dir) = start("").await;
    let (status, plain) = proxy.chat("m-1", "mock/scripted", "say one two").await;
    assert_eq!(status, 200, "{plain}");
    let (status, unlisted) = proxy
        .chat("m-2", "mock/secret-model-e4a1", "say three")
        .await;
    assert_eq!(status, 200, "{unlisted}");
    let streamed = proxy
        .stream("m-3", "mock/scripted", "say four five six")
        .await;
    assert!(matches!(streamed.last(), Some(StreamEvent::Finish { .. })));
    let (status, _) = proxy.chat("m-4", "ghost-provider-0c9f/x", "hi").await;
    assert_eq!(status, 404);
    let (status, refused) = proxy.chat("m-5", "remote/some-model", "hi").await;
    assert_eq!(status, 502, "{refused}");
    let (status, _) = proxy
        .tool("m-6", "calculate", json!({"expression": "2+3"}))
        .await;
    assert_eq!(status, 200);
    let (status, failed) = proxy
        .tool("m-7", "calculate", json!({"expression": "1/0"}))
        .await;
    assert_eq!(
        (status, &failed["isError"]),
        (200, &json!(true)),
        "{failed}"
    );
    let (status, _) = proxy.tool("m-8", "no-such-tool-77aa", json!({})).await;
    assert_eq!(status, 404);
    let body = json!({"server": "demo", "name": "now", "arguments": {}});
    let events = read_tool_events(proxy.send("m-9", paths::MCP_TOOL_STREAM, &body).await).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let response = proxy
        .client
        .get(proxy.url("/api/no-such-route-31b"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let text = proxy.metrics_text().await;
    let m = parse_metrics(&text);

    // Requests, by route template and status; the unknown path is "unmatched".
    let requests = "switchyard_http_requests_total";
    let chat = [("route", "/api/llm/chat"), ("method", "POST")];
    let with_status = |status| [chat[0], chat[1], ("status", status)];
    assert_eq!(value(&m, requests, &with_status("200")), 2.0, "{text}");
    assert_eq!(value(&m, requests, &with_status("404")), 1.0, "{text}");
    assert_eq!(value(&m, requests, &with_status("502")), 1.0, "{text}");
    let stream = [
        ("route", "/api/llm/stream"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(value(&m, requests, &stream), 1.0);
    let unmatched = [("route", "unmatched"), ("method", "GET"), ("status", "404")];
    assert_eq!(value(&m, requests, &unmatched), 1.0, "{text}");
    let latency = "switchyard_http_request_duration_seconds_count";
    assert_eq!(value(&m, latency, &chat), 4.0, "{text}");
    let le_inf = [chat[0], chat[1], ("le", "+Inf")];
    assert_eq!(
        value(
            &m,
            "switchyard_http_request_duration_seconds_bucket",
            &le_inf
        ),
        4.0
    );

    // Chats and tokens by provider and listed model; the unlisted model is "unknown".
    let chats = "switchyard_llm_requests_total";
    let labels = |provider, model, stream, outcome| {
        [
            ("provider", provider),
            ("model", model),
            ("stream", stream),
            ("outcome", outcome),
        ]
    };
    assert_eq!(
        value(&m, chats, &labels("mock", "scripted", "false", "ok")),
        1.0
    );
    assert_eq!(
        value(&m, chats, &labels("mock", "scripted", "true", "ok")),
        1.0
    );
    assert_eq!(
        value(&m, chats, &labels("mock", "unknown", "false", "ok")),
        1.0
    );
    assert_eq!(
        value(
            &m,
            chats,
            &labels("unknown", "unknown", "false", "not_found")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            chats,
            &labels("remote", "unknown", "false", "upstream_error")
        ),
        1.0,
        "{text}"
    );
    let tokens = "switchyard_llm_tokens_total";
    let plain_usage: Usage = serde_json::from_value(plain["usage"].clone()).unwrap();
    let streamed_usage = usage_of(&streamed);
    let unlisted_usage: Usage = serde_json::from_value(unlisted["usage"].clone()).unwrap();
    let scripted = |kind| [("provider", "mock"), ("model", "scripted"), ("kind", kind)];
    assert_eq!(
        value(&m, tokens, &scripted("prompt")),
        f64::from(plain_usage.prompt_tokens + streamed_usage.prompt_tokens)
    );
    assert_eq!(
        value(&m, tokens, &scripted("completion")),
        f64::from(plain_usage.completion_tokens + streamed_usage.completion_tokens)
    );
    let unknown = [
        ("provider", "mock"),
        ("model", "unknown"),
        ("kind", "completion"),
    ];
    assert_eq!(
        value(&m, tokens, &unknown),
        f64::from(unlisted_usage.completion_tokens)
    );
    assert!(plain_usage.completion_tokens > 0);
    let chat_duration = [("provider", "mock"), ("stream", "true")];
    assert_eq!(
        value(
            &m,
            "switchyard_llm_request_duration_seconds_count",
            &chat_duration
        ),
        1.0
    );

    // Upstream failures, by configured name and code; a refused request is not one.
    let errors = "switchyard_upstream_errors_total";
    let remote = [
        ("upstream_kind", "llm"),
        ("upstream", "remote"),
        ("code", "upstream_error"),
    ];
    assert_eq!(value(&m, errors, &remote), 1.0, "{text}");
    assert_eq!(m.iter().filter(|s| s.name == errors).count(), 1, "{text}");

    // Tool calls by server, stream and outcome; the session the pool holds; no stream open.
    let calls = "switchyard_mcp_tool_calls_total";
    let tool = |stream, outcome| [("server", "demo"), ("stream", stream), ("outcome", outcome)];
    assert_eq!(value(&m, calls, &tool("false", "ok")), 1.0, "{text}");
    assert_eq!(value(&m, calls, &tool("false", "tool_error")), 1.0);
    assert_eq!(value(&m, calls, &tool("false", "not_found")), 1.0);
    assert_eq!(value(&m, calls, &tool("true", "ok")), 1.0);
    assert_eq!(
        value(
            &m,
            "switchyard_mcp_tool_call_duration_seconds_count",
            &[("server", "demo")]
        ),
        4.0
    );
    assert_eq!(
        value(&m, "switchyard_mcp_pool_sessions", &[("server", "demo")]),
        1.0
    );
    for kind in ["chat", "tool_call"] {
        let active = m
            .iter()
            .find(|s| s.name == "switchyard_active_streams" && s.labels["kind"] == kind)
            .unwrap_or_else(|| panic!("no active {kind} streams series:\n{text}"));
        assert_eq!(active.value, 0.0);
    }

    // Nothing a client made up, and no secret, is a label or anywhere in the text.
    for leaked in [
        "secret-model-e4a1",
        "ghost-provider-0c9f",
        "no-such-tool-77aa",
        "no-such-route-31b",
        CHAT_MARKER,
        UPSTREAM_KEY,
        CLIENT_TOKEN,
        "127.0.0.1",
    ] {
        assert!(!text.contains(leaked), "{leaked} in the metrics:\n{text}");
    }
    assert!(
        text.contains("# TYPE switchyard_llm_tokens_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP switchyard_active_streams "), "{text}");
}

#[tokio::test]
async fn an_open_stream_is_counted_until_it_ends() {
    let (proxy, _dir) = start(
        r#"
        [[providers]]
        name = "slow"
        kind = "mock"
        [providers.mock]
        chunk_delay_ms = 200
        "#,
    )
    .await;
    let body = json!({"model": "slow/m", "messages": [{"role": "user", "content": "anything"}]});
    let mut response = proxy.send("open-1", paths::LLM_STREAM, &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    let active = |text: &str| {
        value(
            &parse_metrics(text),
            "switchyard_active_streams",
            &[("kind", "chat")],
        )
    };
    assert_eq!(active(&proxy.metrics_text().await), 1.0);
    // The client goes away mid-stream: the chat is audited as aborted and no longer active.
    drop(response);
    let line = audit_line("open-1").await;
    assert_eq!(line["outcome"], "aborted", "{line}");
    assert_eq!(line["stream"], true);
    assert_eq!(active(&proxy.metrics_text().await), 0.0);
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let (proxy, _dir) = start("[observability]\nmetrics = false").await;
    let response = proxy
        .client
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // Everything else works as before.
    let (status, _) = proxy.chat("off-1", "mock/scripted", "say hi").await;
    assert_eq!(status, 200);
    assert_eq!(audit_line("off-1").await["outcome"], "ok");
}

// ---------------------------------------------------------------------------------------------
// Audit lines.

#[tokio::test]
async fn one_audit_line_per_chat_and_tool_call_without_contents_or_arguments() {
    let (proxy, _dir) = start("").await;
    let say = format!("say {CHAT_MARKER}");
    let (status, answer) = proxy.chat("a-chat", "mock/scripted", &say).await;
    assert_eq!(status, 200);
    let streamed = proxy.stream("a-stream", "mock/scripted", &say).await;
    let (status, _) = proxy.chat("a-failed", "remote/gpt", &say).await;
    assert_eq!(status, 502);
    let expression = format!("2+3 {ARGUMENT_MARKER}");
    let (status, _) = proxy
        .tool("a-tool", "calculate", json!({"expression": expression}))
        .await;
    assert_eq!(status, 200);
    let body = json!({"server": "demo", "name": "calculate", "arguments": {"expression": "1+1"}});
    let events = read_tool_events(
        proxy
            .send("a-tool-stream", paths::MCP_TOOL_STREAM, &body)
            .await,
    )
    .await;
    assert_eq!(events.len(), 1);

    let chat = audit_line("a-chat").await;
    assert_eq!(chat["message"], "chat");
    assert_eq!(chat["kind"], "chat");
    assert_eq!(chat["user"], "anonymous");
    assert_eq!(chat["auth"], "anonymous");
    assert_eq!(chat["route"], "/api/llm/chat");
    assert_eq!(chat["upstream"], "mock");
    assert_eq!(chat["model"], "mock/scripted");
    assert_eq!(chat["stream"], false);
    assert_eq!(chat["outcome"], "ok");
    assert_eq!(chat["finish_reason"], "stop");
    assert_eq!(chat["prompt_tokens"], answer["usage"]["prompt_tokens"]);
    assert_eq!(
        chat["completion_tokens"],
        answer["usage"]["completion_tokens"]
    );
    assert_eq!(chat["total_tokens"], answer["usage"]["total_tokens"]);
    assert!(chat["duration_ms"].is_u64(), "{chat}");

    let stream = audit_line("a-stream").await;
    let usage = usage_of(&streamed);
    assert_eq!(
        (&stream["route"], &stream["stream"], &stream["outcome"]),
        (&json!("/api/llm/stream"), &json!(true), &json!("ok"))
    );
    assert_eq!(stream["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(stream["completion_tokens"], usage.completion_tokens);
    assert_eq!(stream["total_tokens"], usage.total_tokens);

    let failed = audit_line("a-failed").await;
    assert_eq!(
        (&failed["upstream"], &failed["outcome"]),
        (&json!("remote"), &json!("upstream_error"))
    );
    assert!(failed.get("prompt_tokens").is_none(), "{failed}");

    let tool = audit_line("a-tool").await;
    assert_eq!(tool["message"], "tool_call");
    assert_eq!(tool["kind"], "tool_call");
    assert_eq!(tool["user"], "anonymous");
    assert_eq!(tool["route"], "/api/mcp/tool");
    assert_eq!(tool["upstream"], "demo");
    assert_eq!(tool["tool"], "calculate");
    assert_eq!(
        tool["outcome"], "tool_error",
        "the marker is not arithmetic: {tool}"
    );
    assert!(tool.get("arguments").is_none(), "{tool}");
    let tool_stream = audit_line("a-tool-stream").await;
    assert_eq!(
        (
            &tool_stream["route"],
            &tool_stream["stream"],
            &tool_stream["outcome"]
        ),
        (&json!("/api/mcp/tool/stream"), &json!(true), &json!("ok"))
    );

    // One line each, and contents, arguments and secrets nowhere in the log.
    assert_eq!(audit_lines("a-").len(), 5);
    let log = log_text();
    for absent in [CHAT_MARKER, ARGUMENT_MARKER, UPSTREAM_KEY, CLIENT_TOKEN] {
        assert!(!log.contains(absent), "{absent} is in the log");
    }
}

#[tokio::test]
async fn tool_arguments_are_audited_when_configured() {
    let (proxy, _dir) = start("[observability]\naudit_arguments = true").await;
    let (status, _) = proxy
        .tool("args-1", "search_notes", json!({"query": LOGGED_ARGUMENT}))
        .await;
    assert_eq!(status, 200);
    let line = audit_line("args-1").await;
    let arguments: Value = serde_json::from_str(line["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"query": LOGGED_ARGUMENT}));
    // Chat contents stay out even so.
    let contents = format!("say {UNLOGGED_CONTENT}");
    let (status, _) = proxy.chat("args-2", "mock/scripted", &contents).await;
    assert_eq!(status, 200);
    assert_eq!(audit_line("args-2").await["outcome"], "ok");
    assert!(!log_text().contains(UNLOGGED_CONTENT));
}

#[tokio::test]
async fn audit_lines_and_metrics_name_the_authenticated_user() {
    let (key, hash) = switchyard_proxy::auth::keys::generate().unwrap();
    let keys = format!(
        r#"
        [[keys]]
        name = "alice"
        hash = "{hash}"
        models = ["mock/*"]
        mcp = ["demo/*"]
        "#
    );
    let (proxy, _dir) = start(&keys).await;
    let body =
        json!({"model": "mock/scripted", "messages": [{"role": "user", "content": "say hi"}]});
    let response = proxy
        .client
        .post(proxy.url(paths::LLM_CHAT))
        .header("x-request-id", "user-1")
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = audit_line("user-1").await;
    assert_eq!(
        (&line["user"], &line["auth"]),
        (&json!("alice"), &json!("api_key"))
    );

    // `/metrics` asks for the same credentials as the API unless it is made public.
    let metrics = proxy.client.get(proxy.url("/metrics"));
    assert_eq!(metrics.send().await.unwrap().status(), 401);
    let metrics = proxy.client.get(proxy.url("/metrics")).bearer_auth(&key);
    let text = metrics.send().await.unwrap().text().await.unwrap();
    assert!(text.contains("switchyard_llm_requests_total"), "{text}");
    assert!(!text.contains(&key) && !text.contains("alice"), "{text}");
    assert!(!log_text().contains(&key), "the client key is in the log");

    // The probes need no key: orchestrators hold none (`remote` is down, hence 503, not 401).
    let (status, _) = proxy.readyz().await;
    assert_eq!(status, 503);
    let health = proxy
        .client
        .get(proxy.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let (public, _dir) = start(&format!("{keys}\n[observability]\nmetrics_public = true")).await;
    let response = public
        .client
        .get(public.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Readiness.

#[tokio::test]
async fn ready_when_every_upstream_is() {
    log();
    let config = Config::from_toml_str(
        r#"
        [[providers]]
        name = "mock"
        kind = "mock"
        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"
        "#,
        "readiness test",
    )
    .unwrap();
    let proxy = LoopbackProxy::start(config, REQUEST_TIMEOUT).await;
    let (status, body) = proxy.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": [
            {"name": "mock", "kind": "provider", "status": "ok"},
            {"name": "demo", "kind": "mcp_server", "status": "ok"},
        ]})
    );
    // Liveness is only the process.
    let health = proxy
        .client
        .get(proxy.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn not_ready_names_the_upstreams_that_fail() {
    let (proxy, _dir) = start(
        r#"
        [[mcp_servers]]
        name = "broken"
        transport = "stdio"
        command = "false"
        [observability]
        readiness_timeout_ms = 3000
        "#,
    )
    .await;
    let (status, body) = proxy.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    let checks: BTreeMap<String, Value> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c.clone()))
        .collect();
    assert_eq!(checks["mock"]["status"], "ok");
    assert_eq!(checks["demo"]["status"], "ok");
    assert_eq!(checks["remote"]["status"], "failed", "{body}");
    assert_eq!(checks["remote"]["error"], "upstream_error", "{body}");
    assert_eq!(checks["broken"]["status"], "failed", "{body}");
    assert!(checks["broken"]["error"].is_string(), "{body}");
    assert!(!body.to_string().contains("false\""), "no command: {body}");
    // Liveness does not depend on upstreams.
    let health = proxy
        .client
        .get(proxy.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// An HTTP server on loopback that counts the connections it accepts (one per request: it
/// closes each) and answers each with a 200.
async fn counting_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    (format!("http://{addr}/v1"), count)
}

#[tokio::test]
async fn a_probe_storm_reaches_the_upstream_once() {
    log();
    let (base_url, connections) = counting_upstream().await;
    let config = Config::from_toml_str(
        &format!(
            r#"
            [[providers]]
            name = "counted"
            kind = "openai"
            base_url = "{base_url}"
            [observability]
            readiness_cache_ms = 60000
            "#
        ),
        "readiness test",
    )
    .unwrap();
    let proxy = LoopbackProxy::start(config, REQUEST_TIMEOUT).await;
    let probes = (0..20).map(|_| proxy.readyz());
    for (status, body) in futures::future::join_all(probes).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn readiness_reuses_the_pools_stdio_session() {
    log();
    let config = Config::from_toml_str(
        &format!(
            r#"
            [[mcp_servers]]
            name = "stdio"
            transport = "stdio"
            command = {RMCP_SERVER:?}
            args = ["--stdio"]
            [observability]
            readiness_cache_ms = 0
            "#
        ),
        "readiness test",
    )
    .unwrap();
    let proxy = LoopbackProxy::start(config, REQUEST_TIMEOUT).await;
    for _ in 0..5 {
        let (status, body) = proxy.readyz().await;
        assert_eq!(status, 200, "{body}");
    }
    // Every probe found the one session the first opened, and a call uses it too.
    let body = json!({"server": "stdio", "name": "stats", "arguments": {}});
    let result = proxy.post_json(paths::MCP_TOOL, &body).await;
    let stats: Value = serde_json::from_str(common::tool_text(&result)).unwrap();
    assert_eq!(stats["sessions"], 1, "{stats}");
}

#[tokio::test]
async fn requests_over_a_websocket_are_audited_and_counted_under_their_http_routes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (proxy, _dir) = start("").await;
    let url = format!(
        "{}{}",
        proxy.base.replacen("http", "ws", 1),
        switchyard_shared::ws::PATH
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-request-id", "ws-audit".parse().unwrap());
    let (mut ws, _) =
        tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
    let say = format!("say {CHAT_MARKER}");
    let chat = json!({"model": "mock/scripted", "messages": [{"role": "user", "content": say}]});
    let call = json!({"server": "demo", "name": "calculate", "arguments": {"expression": "1+1"}});
    for frame in [
        json!({"id": "c", "op": "chat", "body": chat}),
        json!({"id": "s", "op": "chat_stream", "body": chat}),
        json!({"id": "t", "op": "mcp_call", "body": call}),
    ] {
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    let mut ended = 0;
    while ended < 3 {
        let message = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if matches!(frame["type"].as_str(), Some("result" | "end" | "error")) {
                assert_ne!(frame["type"], "error", "{frame}");
                ended += 1;
            }
        }
    }

    let chat = audit_line("ws-audit/c").await;
    assert_eq!(
        (&chat["route"], &chat["stream"], &chat["outcome"]),
        (&json!("/api/llm/chat"), &json!(false), &json!("ok"))
    );
    let stream = audit_line("ws-audit/s").await;
    assert_eq!(
        (&stream["route"], &stream["stream"], &stream["outcome"]),
        (&json!("/api/llm/stream"), &json!(true), &json!("ok"))
    );
    assert!(stream["total_tokens"].is_u64(), "{stream}");
    let tool = audit_line("ws-audit/t").await;
    assert_eq!(
        (&tool["route"], &tool["tool"], &tool["outcome"]),
        (&json!("/api/mcp/tool"), &json!("calculate"), &json!("ok"))
    );
    assert!(!log_text().contains(CHAT_MARKER), "contents are not logged");

    let metrics = proxy.metrics_text().await;
    for line in [
        r#"switchyard_http_requests_total{route="/api/llm/chat",method="POST",status="200"} 1"#,
        r#"switchyard_http_requests_total{route="/api/llm/stream",method="POST",status="200"} 1"#,
        "switchyard_websocket_connections 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}
