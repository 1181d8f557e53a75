//! `/openapi.json` against the routes that exist: the real proxy (in process, on loopback) with
//! a key, the mock provider and the built-in demo MCP server. Every operation the document
//! names answers on the proxy, and every route of the proxy's API is in the document.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::paths;

mod common;
use common::LoopbackProxy;

/// The operations of the proxy's own API, as (method, path).
fn api_routes() -> BTreeSet<(String, String)> {
    [
        ("post", paths::LLM_CHAT),
        ("post", paths::LLM_STREAM),
        ("get", paths::LLM_MODELS),
        ("get", paths::MCP_SERVERS),
        ("get", paths::MCP_LIST_TOOLS),
        ("post", paths::MCP_TOOL),
        ("post", paths::MCP_TOOL_STREAM),
        ("get", paths::MCP_LIST_RESOURCES),
        ("post", paths::MCP_READ_RESOURCE),
        ("get", paths::MCP_LIST_PROMPTS),
        ("post", paths::MCP_GET_PROMPT),
        ("post", paths::TOKENS),
        ("get", paths::HEALTH),
        ("get", switchyard_shared::ws::PATH),
    ]
    .into_iter()
    .map(|(method, path)| (method.to_owned(), path.to_owned()))
    .collect()
}

async fn start() -> (LoopbackProxy, String) {
    common::init_tracing();
    let (key, hash) = keys::generate().unwrap();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [[providers]]
        name = "mock"
        kind = "mock"

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"

        [[keys]]
        name = "main"
        hash = "{hash}"
        models = ["*"]
        mcp = ["*"]
        "#
    );
    let config = Config::from_toml_str(&toml, "openapi test").unwrap();
    (
        LoopbackProxy::start(config, Duration::from_secs(20)).await,
        key,
    )
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes_that_answer() {
    let (proxy, key) = start().await;
    // Served without a key: it names no upstream, key or server.
    let response = proxy
        .client
        .get(proxy.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    assert_eq!(documented, api_routes());

    for (method, path) in &documented {
        let request = match method.as_str() {
            "get" => proxy.client.get(proxy.url(path)),
            _ => proxy.client.post(proxy.url(path)).json(&json!({})),
        };
        let response = request.bearer_auth(&key).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        // An empty body or a missing query is refused by the route itself; a route that did not
        // exist would answer the router's 404 or 405.
        assert!(
            status == 200 || (status == 400 && body.contains("bad_request")),
            "{method} {path}: {status} {body}"
        );
        assert!(!body.contains("no route for"), "{method} {path}: {body}");
    }

    // The operations name the shared types as their bodies.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ChatRequest",
        "ChatResponse",
        "StreamEvent",
        "ErrorBody",
        "ErrorCode",
        "McpToolCall",
        "McpToolEvent",
        "ModelList",
    ] {
        assert!(schemas.contains_key(name), "{name} is missing");
    }
    let required: Vec<&str> = schemas["ChatRequest"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["model", "messages"]);
    assert_eq!(
        doc["paths"][paths::LLM_CHAT]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/ChatRequest"
    );
    assert!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("bearer")
    );
}
