//! Limits shared across instances: each test starts its own real `redis-server` on a loopback
//! port and two proxies (in process, each on its own port and with its own state) whose
//! `[cluster] redis_url` names it. A key's request rate and token budget hold across both; with
//! Redis killed, `on_redis_unavailable` decides (open: admitted and counted by each instance,
//! closed: `503 unavailable`), the metrics and one log line per instance say so, and once Redis is
//! back the limits are shared again.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::paths;

mod common;
use common::{ErrorReply, LoopbackProxy};
use switchyard_tests::redis_server::RedisServer;

/// The password Redis requires; it must never reach a log line or an answer.
const PASSWORD: &str = "s3cret-redis-pw";

struct Keys {
    /// At most 3 requests per minute.
    slow: String,
    /// At most 40 LLM tokens per minute.
    frugal: String,
    /// At most 3 requests per minute, used only once Redis is back.
    later: String,
    /// A high rate, to send requests that make the proxies ask Redis again.
    probe: String,
    /// No limits.
    free: String,
}

struct Cluster {
    redis: RedisServer,
    a: LoopbackProxy,
    b: LoopbackProxy,
    keys: Keys,
}

/// Two proxies sharing one fresh Redis, with `policy` while it is unreachable.
async fn start(policy: &str) -> Cluster {
    let redis = RedisServer::start(Some(PASSWORD));
    let mut entries = String::new();
    let mut key = |name: &str, limits: &str| {
        let (key, hash) = keys::generate().unwrap();
        entries.push_str(&format!(
            "[[keys]]\nname = \"{name}\"\nhash = \"{hash}\"\nmodels = [\"*\"]\nmcp = [\"*\"]\n{limits}\n"
        ));
        key
    };
    let keys = Keys {
        slow: key("slow", "[keys.limits]\nrequests_per_minute = 3"),
        frugal: key("frugal", "[keys.limits]\ntokens_per_minute = 40"),
        later: key("later", "[keys.limits]\nrequests_per_minute = 3"),
        probe: key("probe", "[keys.limits]\nrequests_per_minute = 10000"),
        free: key("free", ""),
    };
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [observability]
        metrics_public = true

        [cluster]
        redis_url = "{url}"
        on_redis_unavailable = "{policy}"
        # Generous, so that a loaded machine's first connection (AUTH, script load) fits.
        redis_timeout_ms = 1000

        [[providers]]
        name = "mock"
        kind = "mock"

        {entries}
        "#,
        url = redis.url(),
    );
    let config = || Config::from_toml_str(&toml, "cluster test").unwrap();
    let cluster = Cluster {
        a: LoopbackProxy::start(config(), Duration::from_secs(20)).await,
        b: LoopbackProxy::start(config(), Duration::from_secs(20)).await,
        redis,
        keys,
    };
    // Both have reached Redis before the first counted request.
    wait_until_redis_is_up_on_both(&cluster).await;
    cluster
}

fn hello() -> serde_json::Value {
    json!({"model": "mock/m", "messages": [{"role": "user", "content": "hello there"}]})
}

async fn chat(proxy: &LoopbackProxy, key: &str) -> reqwest::Response {
    proxy
        .client
        .post(proxy.url(paths::LLM_CHAT))
        .bearer_auth(key)
        .json(&hello())
        .send()
        .await
        .unwrap()
}

async fn stream(proxy: &LoopbackProxy, key: &str) -> reqwest::Response {
    proxy
        .client
        .post(proxy.url(paths::LLM_STREAM))
        .bearer_auth(key)
        .json(&hello())
        .send()
        .await
        .unwrap()
}

/// `429 rate_limited` saying `says`, with `Retry-After` within `retry`; the error as read.
async fn assert_limited(
    response: reqwest::Response,
    says: &str,
    retry: std::ops::RangeInclusive<u64>,
) {
    let error = ErrorReply::read(response).await;
    assert_eq!(error.status, 429, "{}", error.text);
    assert_eq!(error.error.code.as_str(), "rate_limited");
    assert!(
        error.error.message.contains(says),
        "{}",
        error.error.message
    );
    let header: u64 = error.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry.contains(&header), "Retry-After {header}");
    assert_eq!(error.error.retry_after, Some(header));
}

/// The value of the series of `name` whose labels include every one of `labels`; `None` when
/// there is none.
async fn metric(proxy: &LoopbackProxy, name: &str, labels: &[&str]) -> Option<f64> {
    let text = proxy
        .client
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Sends requests of the `probe` key to both proxies (at most 15 s) until both report Redis up:
/// a proxy asks a Redis that was down again only when a request comes.
async fn wait_until_redis_is_up_on_both(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut up = true;
        for proxy in [&c.a, &c.b] {
            let status = proxy
                .client
                .get(proxy.url(paths::LLM_MODELS))
                .bearer_auth(&c.keys.probe)
                .send()
                .await
                .unwrap()
                .status();
            assert!(status == 200 || status == 503, "{status}");
            up &= metric(proxy, "switchyard_cluster_redis_up", &[]).await == Some(1.0);
        }
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the proxies did not see Redis back within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The proxies' log lines of one test. Each test runs its proxies on its own current-thread
/// runtime, so every line they log is written on the test's thread: one global subscriber writes
/// each line to the capture of the thread it comes from. (Per-thread subscribers would be simpler,
/// but `tracing` caches whether a log statement is enabled across threads, and lines went missing.)
#[derive(Clone, Default)]
struct LogLines(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: RefCell<Option<LogLines>> = const { RefCell::new(None) };
}

/// Writes to the capture of the current thread, if it has one.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(lines) = &*capture.borrow() {
                lines.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogLines {
    /// Captures this thread's log lines at `info` and above from now on.
    fn capture() -> Self {
        static SUBSCRIBER: Once = Once::new();
        SUBSCRIBER.call_once(|| {
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(|| ThreadCapture)
                .try_init()
                .expect("no other subscriber in this suite");
        });
        let lines = LogLines::default();
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(lines.clone()));
        lines
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

#[tokio::test]
async fn a_request_rate_holds_across_instances() {
    let c = start("open").await;
    // Alternating between the instances: three in all, whichever answers.
    for proxy in [&c.a, &c.b, &c.a] {
        assert_eq!(chat(proxy, &c.keys.slow).await.status(), 200);
    }
    // The fourth is refused on either one, as one instance alone would (one request every 20 s).
    assert_limited(
        chat(&c.b, &c.keys.slow).await,
        "3 requests per minute",
        1..=20,
    )
    .await;
    let models =
        c.a.client
            .get(c.a.url(paths::LLM_MODELS))
            .bearer_auth(&c.keys.slow)
            .send()
            .await
            .unwrap();
    assert_limited(models, "3 requests per minute", 1..=20).await;
    // Another key's budget is its own, and a key without limits never waits for Redis.
    assert_eq!(chat(&c.b, &c.keys.later).await.status(), 200);
    for proxy in [&c.a, &c.b, &c.a, &c.b] {
        assert_eq!(chat(proxy, &c.keys.free).await.status(), 200);
    }
    assert_eq!(
        metric(&c.a, "switchyard_cluster_redis_up", &[]).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn tokens_charged_on_one_instance_close_the_budget_on_the_other() {
    let c = start("open").await;
    // The mock's answer is a few dozen tokens: instance A closes the budget within a few chats.
    let mut refused = None;
    for _ in 0..5 {
        let response = chat(&c.a, &c.keys.frugal).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    assert_limited(
        refused.expect("the token budget closed on A"),
        "40 LLM tokens per minute",
        50..=60,
    )
    .await;
    // B has not answered this key once, and refuses it: chats and streams alike, before any
    // upstream work.
    assert_limited(
        chat(&c.b, &c.keys.frugal).await,
        "40 LLM tokens per minute",
        50..=60,
    )
    .await;
    assert_limited(
        stream(&c.b, &c.keys.frugal).await,
        "40 LLM tokens per minute",
        50..=60,
    )
    .await;
}

#[tokio::test]
async fn tokens_reported_by_a_stream_count_on_the_other_instance() {
    let c = start("open").await;
    let mut closed = false;
    for _ in 0..5 {
        let response = stream(&c.a, &c.keys.frugal).await;
        if response.status() == 429 {
            closed = true;
            break;
        }
        assert_eq!(response.status(), 200);
        // The usage is charged when the stream reports it, on a task of its own.
        response.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the streams' tokens closed the budget on A");
    assert_limited(
        chat(&c.b, &c.keys.frugal).await,
        "40 LLM tokens per minute",
        50..=60,
    )
    .await;
}

#[tokio::test]
async fn fail_open_admits_while_redis_is_down_and_shares_again_once_it_is_back() {
    let logs = LogLines::capture();
    let mut c = start("open").await;
    assert_eq!(chat(&c.a, &c.keys.slow).await.status(), 200);
    assert_eq!(chat(&c.b, &c.keys.slow).await.status(), 200);

    c.redis.kill();
    // Each instance now counts on its own: three more on each, whatever Redis had counted.
    for proxy in [&c.a, &c.b] {
        for _ in 0..3 {
            assert_eq!(chat(proxy, &c.keys.slow).await.status(), 200);
        }
        assert_limited(
            chat(proxy, &c.keys.slow).await,
            "3 requests per minute",
            1..=20,
        )
        .await;
    }
    for proxy in [&c.a, &c.b] {
        assert_eq!(
            metric(proxy, "switchyard_cluster_redis_up", &[]).await,
            Some(0.0)
        );
        let decided = metric(
            proxy,
            "switchyard_cluster_policy_decisions_total",
            &["check=\"requests\"", "policy=\"open\""],
        )
        .await
        .unwrap_or(0.0);
        assert!(decided >= 4.0, "{decided}");
    }
    // One warning per instance, not one per request; where Redis is, never its password.
    let down = "Redis cannot be reached";
    assert_eq!(logs.count(down), 2, "{}", logs.text());
    assert!(logs.text().contains(&c.redis.address()), "{}", logs.text());

    c.redis.restart();
    wait_until_redis_is_up_on_both(&c).await;
    assert!(logs.count("Redis answers") >= 4, "{}", logs.text());
    assert_eq!(logs.count(down), 2, "{}", logs.text());
    // Shared again: alternating, the fourth is refused (each instance alone has seen two).
    for proxy in [&c.a, &c.b, &c.a] {
        assert_eq!(chat(proxy, &c.keys.later).await.status(), 200);
    }
    assert_limited(
        chat(&c.b, &c.keys.later).await,
        "3 requests per minute",
        1..=20,
    )
    .await;
    assert!(!logs.text().contains(PASSWORD), "{}", logs.text());
}

#[tokio::test]
async fn fail_closed_refuses_limited_callers_with_503_until_redis_is_back() {
    let logs = LogLines::capture();
    let mut c = start("closed").await;
    assert_eq!(chat(&c.a, &c.keys.slow).await.status(), 200);

    c.redis.kill();
    for proxy in [&c.a, &c.b, &c.a] {
        let error = ErrorReply::read(chat(proxy, &c.keys.slow).await).await;
        assert_eq!(
            (error.status, error.error.code.as_str()),
            (503, "unavailable"),
            "{}",
            error.text
        );
        assert!(error.error.retryable);
        assert_eq!(error.headers["retry-after"], "1");
        assert!(!error.text.contains(PASSWORD), "{}", error.text);
    }
    // A caller without request or token limits does not depend on Redis.
    assert_eq!(chat(&c.b, &c.keys.free).await.status(), 200);
    let refused = metric(
        &c.a,
        "switchyard_cluster_policy_decisions_total",
        &["check=\"requests\"", "policy=\"closed\""],
    )
    .await
    .unwrap_or(0.0);
    assert!(refused >= 2.0, "{refused}");
    assert_eq!(
        metric(&c.b, "switchyard_cluster_redis_up", &[]).await,
        Some(0.0)
    );
    // The refusals are not each logged as failures: one warning per instance says why.
    assert_eq!(logs.count("Redis cannot be reached"), 2, "{}", logs.text());
    assert_eq!(logs.count("request failed"), 0, "{}", logs.text());

    c.redis.restart();
    wait_until_redis_is_up_on_both(&c).await;
    // Redis came back empty: the key's budget is whole again, and shared.
    for proxy in [&c.b, &c.a, &c.b] {
        assert_eq!(chat(proxy, &c.keys.slow).await.status(), 200);
    }
    assert_limited(
        chat(&c.a, &c.keys.slow).await,
        "3 requests per minute",
        1..=20,
    )
    .await;
    assert!(!logs.text().contains(PASSWORD), "{}", logs.text());
}

#[tokio::test]
async fn a_redis_that_does_not_answer_is_given_up_on_after_the_timeout() {
    let mut c = start("closed").await;
    assert_eq!(chat(&c.a, &c.keys.slow).await.status(), 200);
    // Hung, with its connections open: only the timeout (1 s) ends the wait, and the request
    // is answered by the policy rather than left waiting (the client gives up after 20 s).
    c.redis.pause();
    for proxy in [&c.a, &c.b] {
        let error = ErrorReply::read(chat(proxy, &c.keys.slow).await).await;
        assert_eq!(
            (error.status, error.error.code.as_str()),
            (503, "unavailable"),
            "{}",
            error.text
        );
    }
    assert_eq!(
        metric(&c.a, "switchyard_cluster_redis_up", &[]).await,
        Some(0.0)
    );
    c.redis.resume();
    wait_until_redis_is_up_on_both(&c).await;
    // Shared again.
    for proxy in [&c.b, &c.a, &c.b] {
        assert_eq!(chat(proxy, &c.keys.later).await.status(), 200);
    }
    assert_limited(
        chat(&c.a, &c.keys.later).await,
        "3 requests per minute",
        1..=20,
    )
    .await;
}
