//! What the end-to-end suites share: the real proxy in process on a loopback port with a client
//! for it, and readers for the proxy's JSON answers, errors and tool streams.
#![allow(dead_code, reason = "each suite uses a part of this module")]

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;
use switchyard_proxy::Config;
use switchyard_shared::mcp::McpToolEvent;
use switchyard_shared::sse::SseDecoder;
use switchyard_shared::{ApiError, ErrorBody, HttpRequest, Method};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Shows the proxy's log in the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        // Several tests share the process; only the first installs the subscriber.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The proxy, serving in process on a loopback port, and a client for it. Dropping it aborts
/// the proxy.
pub struct LoopbackProxy {
    /// The proxy's origin, `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client whose every request is bounded, so that a regression fails instead of hanging.
    pub client: reqwest::Client,
    task: JoinHandle<anyhow::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoopbackProxy {
    /// Starts the proxy with `config`; the client gives up on a request after `request_timeout`.
    pub async fn start(config: Config, request_timeout: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard_proxy::serve_until(config, listener, async {
            let _ = stopped.await;
        }));
        LoopbackProxy {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(request_timeout)
                .build()
                .unwrap(),
            task,
            stop: Some(stop),
        }
    }

    /// Stops the proxy as a signal would; its result once it has finished.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let stop = self.stop.take().expect("the proxy is stopped once");
        stop.send(()).expect("the proxy was still serving");
        (&mut self.task).await.expect("the proxy's task panicked")
    }

    /// The address of `path` on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Gets `path` with `query`.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
        let url = reqwest::Url::parse_with_params(&self.url(path), query).unwrap();
        self.client.get(url).send().await.unwrap()
    }

    /// Gets `path` with `query`; the JSON of its successful answer.
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Value {
        ok_json(self.get(path, query).await).await
    }

    /// Posts `body` to `path`; the JSON of its successful answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Value {
        ok_json(self.post(path, body).await).await
    }
}

/// The JSON of a successful answer; panics, showing the body, on any other status.
pub async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// An error answer whose body is the shared error body.
pub struct ErrorReply {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The error the body carries.
    pub error: ApiError,
    /// The body as sent.
    pub text: String,
}

impl ErrorReply {
    /// Reads an error answer; panics unless its body is the shared error body.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let error = ErrorBody::parse(text.as_bytes())
            .unwrap_or_else(|| panic!("not the shared error body: {text}"));
        ErrorReply {
            status,
            headers,
            error,
            text,
        }
    }

    /// Panics unless the error was sent as JSON.
    pub fn assert_json(&self) {
        assert_eq!(
            self.headers["content-type"], "application/json",
            "errors are JSON"
        );
    }
}

/// Every event of a tool stream (`/api/mcp/tool/stream`), read to its end.
pub async fn read_tool_events(mut response: reqwest::Response) -> Vec<McpToolEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        for event in decoder.push(&chunk) {
            events.push(serde_json::from_str::<McpToolEvent>(&event.data).unwrap());
        }
    }
    events
}

/// The text of a tool result's first content block.
pub fn tool_text(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {result}"))
}

/// Sends a request that `shared` described, the way the proxy and the SDK execute them.
pub async fn execute(client: &reqwest::Client, http: &HttpRequest) -> reqwest::Response {
    let mut request = match http.method {
        Method::Get => client.get(&http.url),
        Method::Post => client.post(&http.url),
    };
    for (name, value) in &http.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &http.body {
        request = request.body(body.clone());
    }
    request.send().await.unwrap()
}
