//! Per-caller limits end to end: the real proxy (in process, on loopback) with keys whose
//! `[keys.limits]` cap requests per minute, open streams and LLM tokens per minute, in front of
//! the in-process mock provider and the built-in demo MCP server. Over a limit: `429
//! rate_limited` with `Retry-After`, and each key has its own budget.

use std::time::Duration;

use serde_json::json;
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::paths;

mod common;
use common::{ErrorReply, LoopbackProxy};

struct Harness {
    proxy: LoopbackProxy,
    /// At most 3 requests per minute.
    slow: String,
    /// At most 1 open stream.
    single: String,
    /// At most 40 LLM tokens per minute.
    frugal: String,
    /// No limits.
    free: String,
}

async fn start() -> Harness {
    let (slow, slow_hash) = keys::generate().unwrap();
    let (single, single_hash) = keys::generate().unwrap();
    let (frugal, frugal_hash) = keys::generate().unwrap();
    let (free, free_hash) = keys::generate().unwrap();
    let key = |name: &str, hash: &keys::KeyHash, limits: &str| {
        format!(
            "[[keys]]\nname = \"{name}\"\nhash = \"{hash}\"\nmodels = [\"*\"]\nmcp = [\"*\"]\n{limits}\n"
        )
    };
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [[providers]]
        name = "mock"
        kind = "mock"
        [providers.mock]
        chunk_delay_ms = 100

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"

        {}
        {}
        {}
        {}
        "#,
        key("slow", &slow_hash, "[keys.limits]\nrequests_per_minute = 3"),
        key(
            "single",
            &single_hash,
            "[keys.limits]\nconcurrent_streams = 1"
        ),
        key(
            "frugal",
            &frugal_hash,
            "[keys.limits]\ntokens_per_minute = 40"
        ),
        key("free", &free_hash, ""),
    );
    let config = Config::from_toml_str(&toml, "limits test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, Duration::from_secs(20)).await,
        slow,
        single,
        frugal,
        free,
    }
}

fn hello() -> serde_json::Value {
    json!({"model": "mock/m", "messages": [{"role": "user", "content": "hello there"}]})
}

impl Harness {
    async fn chat(&self, key: &str) -> reqwest::Response {
        self.proxy
            .client
            .post(self.proxy.url(paths::LLM_CHAT))
            .bearer_auth(key)
            .json(&hello())
            .send()
            .await
            .unwrap()
    }

    async fn stream(&self, key: &str) -> reqwest::Response {
        self.proxy
            .client
            .post(self.proxy.url(paths::LLM_STREAM))
            .bearer_auth(key)
            .json(&hello())
            .send()
            .await
            .unwrap()
    }
}

async fn assert_limited(response: reqwest::Response, says: &str) {
    let error = ErrorReply::read(response).await;
    assert_eq!(error.status, 429, "{}", error.text);
    assert_eq!(error.error.code.as_str(), "rate_limited");
    assert!(
        error.error.message.contains(says),
        "{}",
        error.error.message
    );
    let retry: u64 = error.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry >= 1 && error.error.retry_after == Some(retry),
        "{retry}"
    );
}

#[tokio::test]
async fn requests_over_the_rate_are_refused_per_key() {
    let h = start().await;
    for _ in 0..3 {
        assert_eq!(h.chat(&h.slow).await.status(), 200);
    }
    // Every route counts, not only chat.
    let models = h
        .proxy
        .client
        .get(h.proxy.url(paths::LLM_MODELS))
        .bearer_auth(&h.slow)
        .send()
        .await
        .unwrap();
    assert_limited(models, "3 requests per minute").await;
    assert_limited(h.chat(&h.slow).await, "3 requests per minute").await;
    // Another key's budget is its own.
    for _ in 0..5 {
        assert_eq!(h.chat(&h.free).await.status(), 200);
    }
}

#[tokio::test]
async fn one_stream_at_a_time_and_the_place_comes_back_when_it_ends() {
    let h = start().await;
    let first = h.stream(&h.single).await;
    assert_eq!(first.status(), 200);
    assert_limited(h.stream(&h.single).await, "streams are already open").await;
    // A plain chat is not a stream.
    assert_eq!(h.chat(&h.single).await.status(), 200);
    // Reading the first stream to its end frees the place.
    first.bytes().await.unwrap();
    let mut again = h.stream(&h.single).await.status();
    for _ in 0..20 {
        if again == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = h.stream(&h.single).await.status();
    }
    assert_eq!(again, 200);
    // A client that goes away frees it too.
    drop(h.stream(&h.single).await);
    let mut after_drop = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = h.stream(&h.single).await;
        after_drop = response.status().as_u16();
        if after_drop == 200 {
            break;
        }
    }
    assert_eq!(after_drop, 200);
}

#[tokio::test]
async fn tokens_reported_by_answers_close_the_budget() {
    let h = start().await;
    // The mock's fallback answer is a few dozen words; two answers pass 40 tokens.
    let mut refused = None;
    for _ in 0..5 {
        let response = h.chat(&h.frugal).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    assert_limited(
        refused.expect("the token budget closed"),
        "40 LLM tokens per minute",
    )
    .await;
    // Streams count their reported usage too; and the refusal comes before any upstream work.
    assert_limited(h.stream(&h.frugal).await, "40 LLM tokens per minute").await;
    assert_eq!(h.chat(&h.free).await.status(), 200);
}

#[tokio::test]
async fn the_proxy_caps_its_upstream_requests_in_flight() {
    let config = Config::from_toml_str(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [upstream]
        max_concurrent_requests = 1
        first_byte_timeout_ms = 300

        [[providers]]
        name = "mock"
        kind = "mock"
        [providers.mock]
        chunk_delay_ms = 50
        "#,
        "upstream cap test",
    )
    .unwrap();
    let proxy = LoopbackProxy::start(config, Duration::from_secs(20)).await;
    let send = |path: &'static str| proxy.client.post(proxy.url(path)).json(&hello()).send();
    let open = send(paths::LLM_STREAM).await.unwrap();
    assert_eq!(open.status(), 200);
    // The open stream holds the only place: the next request waits its first-byte time, then fails.
    let busy = ErrorReply::read(send(paths::LLM_CHAT).await.unwrap()).await;
    assert_eq!(
        (busy.status, busy.error.code.as_str()),
        (504, "upstream_timeout"),
        "{}",
        busy.text
    );
    assert!(
        busy.error.message.contains("all 1 upstream connections"),
        "{}",
        busy.error.message
    );
    // Once the stream has ended, the place is free again.
    open.bytes().await.unwrap();
    assert_eq!(send(paths::LLM_CHAT).await.unwrap().status(), 200);
}
