//! Auto mode in a real browser: each upstream is called directly until a direct call fails in a
//! way the proxy fixes, then through the proxy. The upstreams: the test upstream `fake` (open
//! CORS), a second one without CORS headers (`nocors`), a port nothing listens on (`refused`,
//! which the proxy knows as the CORS-less upstream), and MCP servers with (`stateless`) and
//! without (`nocors`) CORS headers. The fakes record the `Origin` of each chat request: the
//! browser sends one, the proxy does not, which tells which of them reached the upstream.
//! `cargo xtask browser auto` runs this file alone.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;
use switchyard_sdk_wasm::{
    AutoOptions, ClientCore, ClientOptions, FallbackProxy, McpServerEndpoint, Route, RouteChange,
    RouteReason,
};
use switchyard_shared::mcp::McpToolCall;
use switchyard_shared::{ChatRequest, ErrorCode, Message, ProviderEndpoint, ProviderKind};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

// This suite uses only some of the shared helpers.
#[allow(unused_macros, dead_code)]
mod common;
use common::setting;

/// The key the proxy holds for every test upstream; the CORS-less one accepts any key, so the
/// key it saw says who sent the request.
fn proxy_key() -> String {
    format!(
        "Bearer {}",
        setting(
            option_env!("SWITCHYARD_TEST_UPSTREAM_KEY"),
            "SWITCHYARD_TEST_UPSTREAM_KEY"
        )
    )
}

fn nocors_upstream() -> &'static str {
    setting(
        option_env!("SWITCHYARD_TEST_NOCORS_UPSTREAM"),
        "SWITCHYARD_TEST_NOCORS_UPSTREAM",
    )
}

/// An OpenAI-compatible provider without a key, as the page knows it.
fn provider(name: &str, base_url: &str) -> ProviderEndpoint {
    ProviderEndpoint {
        name: name.into(),
        kind: ProviderKind::OpenAi,
        base_url: base_url.into(),
        api_key: None,
    }
}

fn mcp_server(name: &str, url: &str) -> McpServerEndpoint {
    McpServerEndpoint {
        name: name.into(),
        url: url.into(),
        headers: Default::default(),
    }
}

/// An auto-mode client over the running proxy, and the route changes it reports.
fn auto_client(
    providers: Vec<ProviderEndpoint>,
    mcp_servers: Vec<McpServerEndpoint>,
) -> (ClientCore, Rc<RefCell<Vec<RouteChange>>>) {
    let client = ClientCore::new(ClientOptions::Auto(AutoOptions {
        providers,
        mcp_servers,
        proxy: FallbackProxy {
            base_url: setting(
                option_env!("SWITCHYARD_TEST_PROXY"),
                "SWITCHYARD_TEST_PROXY",
            )
            .into(),
            api_key: None,
        },
        retry: None,
        // The test upstream `fake` wants its key, as real providers do.
        allow_browser_secrets: true,
    }))
    .expect("valid options");
    let changes = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&changes);
    client.on_route_change(Rc::new(move |change: &RouteChange| {
        sink.borrow_mut().push(change.clone());
    }));
    (client, changes)
}

fn request(model: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

/// A fake's counters and last request, `GET /_observed` at the origin of `base_url`.
async fn observed(base_url: &str) -> Value {
    let origin = base_url
        .trim_end_matches('/')
        .rsplit_once('/')
        .map_or(base_url, |(origin, _)| origin);
    let window = web_sys::window().expect("a window");
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str(&format!("{origin}/_observed")))
            .await
            .expect("observed")
            .unchecked_into();
    let text = JsFuture::from(resp.text().expect("text"))
        .await
        .expect("body")
        .as_string()
        .expect("a string");
    serde_json::from_str(&text).expect("JSON")
}

fn requests(observed: &Value) -> u64 {
    observed["requests"].as_u64().expect("requests")
}

/// The page's own origin, as the browser sends it.
fn page_origin() -> String {
    web_sys::window()
        .expect("a window")
        .location()
        .origin()
        .expect("an origin")
}

#[wasm_bindgen_test]
async fn a_provider_that_allows_cors_stays_direct() {
    let fake = common::fake_provider();
    let (client, changes) = auto_client(vec![fake.clone()], vec![]);
    let before = requests(&observed(&fake.base_url).await);
    let answer = client
        .chat(&request("fake/echo", "hello"), None)
        .await
        .unwrap();
    assert_eq!(answer.message.content.as_deref(), Some("echo: hello"));
    let seen = observed(&fake.base_url).await;
    assert_eq!(requests(&seen), before + 1);
    assert_eq!(seen["last_origin"].as_str(), Some(page_origin().as_str()));
    assert_eq!(client.route_of("fake"), Route::Direct);
    assert!(changes.borrow().is_empty(), "{:?}", changes.borrow());
}

#[wasm_bindgen_test]
async fn a_provider_without_cors_moves_to_the_proxy_after_the_first_call() {
    let upstream = nocors_upstream();
    let (client, changes) = auto_client(vec![provider("nocors", upstream)], vec![]);
    let before = requests(&observed(upstream).await);
    assert_eq!(client.route_of("nocors"), Route::Direct);

    let answer = client
        .chat(&request("nocors/echo", "first"), None)
        .await
        .unwrap();
    assert_eq!(answer.message.content.as_deref(), Some("echo: first"));
    assert_eq!(
        *changes.borrow(),
        vec![RouteChange {
            upstream: "nocors".into(),
            route: Route::Proxy,
            reason: RouteReason::CorsBlocked,
        }]
    );
    assert_eq!(client.route_of("nocors"), Route::Proxy);
    // The browser's preflight was refused, so only the proxy's request reached the upstream.
    let seen = observed(upstream).await;
    assert_eq!(requests(&seen), before + 1);
    assert_eq!(seen["last_origin"], Value::Null);
    assert_eq!(
        seen["last_authorization"].as_str(),
        Some(proxy_key().as_str())
    );

    let mut stream = client
        .chat_stream(&request("nocors/echo", "second"), None)
        .await
        .unwrap();
    let answer = stream.final_message().await.unwrap();
    assert_eq!(answer.message.content.as_deref(), Some("echo: second"));
    let seen = observed(upstream).await;
    assert_eq!(requests(&seen), before + 2);
    assert_eq!(seen["last_origin"], Value::Null);
    assert_eq!(changes.borrow().len(), 1, "{:?}", changes.borrow());
}

#[wasm_bindgen_test]
async fn an_unreachable_provider_moves_to_the_proxy_that_reaches_it() {
    let refused = setting(
        option_env!("SWITCHYARD_TEST_REFUSED"),
        "SWITCHYARD_TEST_REFUSED",
    );
    let upstream = nocors_upstream();
    let (client, changes) = auto_client(vec![provider("refused", refused)], vec![]);
    let before = requests(&observed(upstream).await);
    let answer = client
        .chat(&request("refused/echo", "anyone there"), None)
        .await
        .unwrap();
    assert_eq!(
        answer.message.content.as_deref(),
        Some("echo: anyone there")
    );
    assert_eq!(
        *changes.borrow(),
        vec![RouteChange {
            upstream: "refused".into(),
            route: Route::Proxy,
            reason: RouteReason::NetworkError,
        }]
    );
    assert_eq!(client.route_of("refused"), Route::Proxy);
    assert_eq!(requests(&observed(upstream).await), before + 1);
}

#[wasm_bindgen_test]
async fn an_error_the_upstream_answered_is_reported_and_not_resent() {
    let fake = common::fake_provider();
    let (client, changes) = auto_client(vec![fake.clone()], vec![]);
    let before = requests(&observed(&fake.base_url).await);
    let err = client
        .chat(&request("fake/fail-500", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::UpstreamError, "{err:?}");
    assert_eq!(requests(&observed(&fake.base_url).await), before + 1);
    assert_eq!(client.route_of("fake"), Route::Direct);
    assert!(changes.borrow().is_empty(), "{:?}", changes.borrow());
}

#[wasm_bindgen_test]
async fn an_mcp_server_that_allows_cors_stays_direct() {
    let stateless = setting(
        option_env!("SWITCHYARD_TEST_MCP_STATELESS"),
        "SWITCHYARD_TEST_MCP_STATELESS",
    );
    let (client, changes) = auto_client(vec![], vec![mcp_server("stateless", stateless)]);
    let tools = client.mcp().list_tools("stateless").await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    assert_eq!(client.route_of("stateless"), Route::Direct);
    assert!(changes.borrow().is_empty(), "{:?}", changes.borrow());
}

#[wasm_bindgen_test]
async fn an_mcp_server_without_cors_moves_to_the_proxy() {
    let url = setting(
        option_env!("SWITCHYARD_TEST_MCP_NOCORS"),
        "SWITCHYARD_TEST_MCP_NOCORS",
    );
    let (client, changes) = auto_client(vec![], vec![mcp_server("nocors", url)]);
    // Nothing but the proxy can reach this server: answers mean the proxy carried the calls.
    let tools = client.mcp().list_tools("nocors").await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    assert_eq!(
        *changes.borrow(),
        vec![RouteChange {
            upstream: "nocors".into(),
            route: Route::Proxy,
            reason: RouteReason::CorsBlocked,
        }]
    );
    assert_eq!(client.route_of("nocors"), Route::Proxy);
    let result = client
        .mcp()
        .call_tool(
            McpToolCall {
                server: "nocors".into(),
                name: "echo".into(),
                arguments: serde_json::json!({"message": "via the proxy"})
                    .as_object()
                    .cloned(),
            },
            None,
            None,
        )
        .await
        .unwrap();
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    assert_eq!(text, ["Echo: via the proxy"]);
    assert_eq!(changes.borrow().len(), 1, "{:?}", changes.borrow());
}
