//! MCP from the browser, directly (Streamable HTTP) and through the proxy, against the reference
//! server `@modelcontextprotocol/server-everything` (session-based, up to 2025-11-25) and an rmcp
//! server speaking the stateless 2026-07-28 revision. Every case runs in both modes, and proxy mode
//! once more over the proxy's WebSocket.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;

use rmcp::model::CallToolResult;
use switchyard_sdk_wasm::{ClientCore, ClientOptions, DirectOptions, McpServerEndpoint};
use switchyard_shared::ErrorCode;
use switchyard_shared::mcp::McpToolCall;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[macro_use]
mod common;
use common::{Mode, mcp_servers, setting, sleep_ms};

/// Both modes know the same two servers by the same names: `everything` and `stateless`.
fn client(mode: Mode) -> ClientCore {
    common::client(mode, Vec::new(), mcp_servers())
}

fn call(server: &str, name: &str, arguments: serde_json::Value) -> McpToolCall {
    McpToolCall {
        server: server.into(),
        name: name.into(),
        arguments: arguments.as_object().cloned(),
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The cases, each run in both modes.

async fn servers_are_listed(mode: Mode) {
    let servers = client(mode).mcp().list_servers().await.unwrap();
    for name in ["everything", "stateless"] {
        assert!(
            servers.iter().any(|s| s.name == name),
            "{name} in {servers:?}"
        );
    }
}

async fn tools_are_listed(mode: Mode) {
    let client = client(mode);
    let tools = client.mcp().list_tools("everything").await.unwrap();
    for name in ["echo", "get-sum", "trigger-long-running-operation"] {
        assert!(tools.iter().any(|t| t.name == name), "{name} missing");
    }
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert_eq!(
        echo.input_schema.get("type").and_then(|v| v.as_str()),
        Some("object")
    );
}

async fn tools_are_called(mode: Mode) {
    let client = client(mode);
    let r = client
        .mcp()
        .call_tool(
            call("everything", "echo", serde_json::json!({"message": "hi"})),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "Echo: hi");
    assert_ne!(r.is_error, Some(true));
    let r = client
        .mcp()
        .call_tool(
            call("everything", "get-sum", serde_json::json!({"a": 2, "b": 3})),
            None,
            None,
        )
        .await
        .unwrap();
    assert!(text_of(&r).contains('5'), "{}", text_of(&r));
}

async fn progress_is_reported_while_a_tool_runs(mode: Mode) {
    let seen = RefCell::new(Vec::new());
    let report = |p: switchyard_sdk_wasm::McpProgress| seen.borrow_mut().push(p.progress);
    let r = client(mode)
        .mcp()
        .call_tool(
            call(
                "everything",
                "trigger-long-running-operation",
                serde_json::json!({"duration": 1, "steps": 3}),
            ),
            None,
            Some(&report),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    let seen = seen.into_inner();
    assert!(seen.len() >= 2, "progress reports: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "progress increases: {seen:?}"
    );
}

async fn resources_are_listed_and_read(mode: Mode) {
    let client = client(mode);
    let resources = client.mcp().list_resources("everything").await.unwrap();
    assert!(resources.len() >= 7, "{} resources", resources.len());
    let first = &resources[0];
    let read = client
        .mcp()
        .read_resource("everything", &first.uri)
        .await
        .unwrap();
    let json = serde_json::to_value(&read).unwrap();
    assert_eq!(json["contents"][0]["uri"], first.uri.as_str());
    assert!(
        json["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

async fn prompts_are_listed_and_filled(mode: Mode) {
    let client = client(mode);
    let prompts = client.mcp().list_prompts("everything").await.unwrap();
    assert!(prompts.iter().any(|p| p.name == "args-prompt"));
    let args = serde_json::json!({"city": "Paris"}).as_object().cloned();
    let prompt = client
        .mcp()
        .get_prompt("everything", "args-prompt", args)
        .await
        .unwrap();
    let json = serde_json::to_value(&prompt).unwrap();
    assert!(
        json["messages"][0]["content"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Paris"),
        "{json}"
    );
}

async fn unknown_servers_and_tools_are_not_found(mode: Mode) {
    let client = client(mode);
    let e = client.mcp().list_tools("nope").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = client
        .mcp()
        .call_tool(
            call("everything", "no-such-tool", serde_json::json!({})),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("no-such-tool"), "{}", e.message);
}

async fn aborting_a_tool_call_rejects_with_aborted(mode: Mode) {
    let controller = web_sys::AbortController::new().unwrap();
    let client = client(mode);
    let mcp = client.mcp();
    let signal = controller.signal();
    let pending = mcp.call_tool(
        call(
            "everything",
            "trigger-long-running-operation",
            serde_json::json!({"duration": 5, "steps": 5}),
        ),
        Some(&signal),
        None,
    );
    let abort_soon = async {
        sleep_ms(300).await;
        controller.abort();
    };
    let (result, ()) = futures_join(pending, abort_soon).await;
    assert_eq!(result.unwrap_err().code, ErrorCode::Aborted);
}

/// The rmcp test server's counters (its `stats` tool) as `server`, reached in `mode`.
async fn rmcp_stats(mode: Mode, server: &str) -> serde_json::Value {
    let result = client(mode)
        .mcp()
        .call_tool(call(server, "stats", serde_json::json!({})), None, None)
        .await
        .unwrap();
    serde_json::from_str(&text_of(&result)).unwrap()
}

/// Aborting a call stops it at the server, not only in the page: the server sees its `slow` call
/// end early. Through the proxy (here to the rmcp server over stdio, a session) the server is
/// told so with `notifications/cancelled`; directly, the stateless revision has no session to
/// send a notice in, and the closed request is the cancellation.
async fn aborting_a_tool_call_stops_it_at_the_server(mode: Mode) {
    let server = match mode {
        Mode::Direct => "stateless",
        Mode::Proxy | Mode::ProxyWebSocket => "rmcp-stdio",
    };
    let before = rmcp_stats(mode, server).await;
    let controller = web_sys::AbortController::new().unwrap();
    let client = client(mode);
    let mcp = client.mcp();
    let signal = controller.signal();
    let pending = mcp.call_tool(
        call(
            server,
            "slow",
            serde_json::json!({"steps": 50, "delay_ms": 100}),
        ),
        Some(&signal),
        None,
    );
    let abort_soon = async {
        sleep_ms(300).await;
        controller.abort();
    };
    let (result, ()) = futures_join(pending, abort_soon).await;
    assert_eq!(result.unwrap_err().code, ErrorCode::Aborted);
    let count = |stats: &serde_json::Value, name: &str| stats[name].as_u64().unwrap();
    let mut after = before.clone();
    for _ in 0..40 {
        after = rmcp_stats(mode, server).await;
        let cancelled = count(&after, "cancelled") > count(&before, "cancelled");
        let told = count(&after, "cancel_notices") > count(&before, "cancel_notices");
        if cancelled && (told || matches!(mode, Mode::Direct)) {
            return;
        }
        sleep_ms(50).await;
    }
    panic!("{server} did not see the call cancelled: before {before}, after {after}");
}

async fn the_stateless_revision_works_like_the_others(mode: Mode) {
    let client = client(mode);
    // Four items a page: lists longer than that prove the cursors were followed.
    let tools = client.mcp().list_tools("stateless").await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    assert!(tools.len() > 4, "{} tools", tools.len());
    let resources = client.mcp().list_resources("stateless").await.unwrap();
    assert_eq!(resources.len(), 5);
    let prompts = client.mcp().list_prompts("stateless").await.unwrap();
    assert_eq!(prompts.len(), 5);
    let r = client
        .mcp()
        .call_tool(
            call("stateless", "echo", serde_json::json!({"message": "hi"})),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "Echo: hi");
}

/// Runs two futures to completion together (the browser has one thread).
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    futures::future::join(a, b).await
}

in_both_modes!(
    servers_are_listed,
    tools_are_listed,
    tools_are_called,
    progress_is_reported_while_a_tool_runs,
    resources_are_listed_and_read,
    prompts_are_listed_and_filled,
    unknown_servers_and_tools_are_not_found,
    aborting_a_tool_call_rejects_with_aborted,
    aborting_a_tool_call_stops_it_at_the_server,
    the_stateless_revision_works_like_the_others,
);

/// A server that answers but does not allow the page's origin is `cors_blocked`, not a vague
/// network error: the page's own server under another name (`localhost`) sends no CORS headers.
#[wasm_bindgen_test]
async fn direct_mode_names_a_cors_refusal() {
    let port = setting(
        option_env!("SWITCHYARD_TEST_PAGE_PORT"),
        "SWITCHYARD_TEST_PAGE_PORT",
    );
    let client = ClientCore::new(ClientOptions::Direct(DirectOptions {
        allow_browser_secrets: false,
        retry: None,
        providers: Vec::new(),
        mcp_servers: vec![McpServerEndpoint {
            name: "nocors".into(),
            url: format!("http://localhost:{port}/mcp"),
            headers: Default::default(),
        }],
    }))
    .unwrap();
    let e = client.mcp().list_tools("nocors").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::CorsBlocked, "{}", e.message);
    assert!(e.message.contains("Mcp-Session-Id"), "{}", e.message);
}

/// Only the proxy reaches a stdio server.
#[wasm_bindgen_test]
async fn proxy_mode_reaches_a_stdio_server() {
    let r = client(Mode::Proxy)
        .mcp()
        .call_tool(
            call(
                "everything-stdio",
                "echo",
                serde_json::json!({"message": "via stdio"}),
            ),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(text_of(&r), "Echo: via stdio");
}

/// The same cases through the proxy's WebSocket, as `proxy_ws::<case>`.
macro_rules! over_the_websocket {
    ($($case:ident),* $(,)?) => {
        mod proxy_ws {
            $(
                #[super::wasm_bindgen_test]
                async fn $case() {
                    super::$case(super::Mode::ProxyWebSocket).await
                }
            )*
        }
    };
}

over_the_websocket!(
    servers_are_listed,
    tools_are_listed,
    tools_are_called,
    progress_is_reported_while_a_tool_runs,
    resources_are_listed_and_read,
    prompts_are_listed_and_filled,
    unknown_servers_and_tools_are_not_found,
    aborting_a_tool_call_rejects_with_aborted,
    aborting_a_tool_call_stops_it_at_the_server,
    the_stateless_revision_works_like_the_others,
);
