//! DNS rebinding: a page whose own name resolves to 127.0.0.1 sends its name in `Host`; the proxy
//! answers only to loopback names and the configured `allowed_hosts`, on every route.

use std::time::Duration;

use switchyard_proxy::Config;

mod common;
use common::{ErrorReply, LoopbackProxy};

async fn start() -> LoopbackProxy {
    let config = Config::from_toml_str(
        r#"
        [server]
        listen = "127.0.0.1:0"
        allowed_hosts = ["switchyard.internal"]

        [[providers]]
        name = "mock"
        kind = "mock"
        [providers.mock]
        serve_http = true
        "#,
        "host_guard test",
    )
    .unwrap();
    LoopbackProxy::start(config, Duration::from_secs(20)).await
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_every_route() {
    let proxy = start().await;
    for path in [
        "/api/llm/models",
        "/api/mcp/servers",
        "/mock/mock/v1/models",
        "/healthz",
    ] {
        let response = proxy
            .client
            .get(proxy.url(path))
            .header("host", "rebound.example:3001")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let error = ErrorReply::read(response).await;
        assert_eq!(error.error.code.as_str(), "forbidden", "{path}");
        assert!(error.error.message.contains("allowed_hosts"), "{path}");
    }
    let chat = proxy
        .client
        .post(proxy.url("/api/llm/chat"))
        .header("host", "rebound.example")
        .json(&serde_json::json!({"model": "mock/x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 403);
}

#[tokio::test]
async fn loopback_names_and_allowed_hosts_are_served() {
    let proxy = start().await;
    let port = proxy.base.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("switchyard.internal:{port}"),
    ] {
        let response = proxy
            .client
            .get(proxy.url("/api/llm/models"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}
