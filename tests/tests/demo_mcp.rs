//! The built-in demo MCP server end to end: the real proxy (in-process, on loopback) with
//! `transport = "builtin"`, reached through `/api/mcp/*` (the pool's in-process session) and, as
//! an ordinary Streamable HTTP MCP server, at `/mcp/demo` by rmcp's own client and by hand-made
//! browser-like requests.

use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_shared::mcp::McpToolEvent;
use switchyard_shared::{ApiError, ErrorCode, paths};

mod common;
use common::{ErrorReply, LoopbackProxy, ok_json, read_tool_events, tool_text};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// An origin the configuration allows, as a page elsewhere would send it.
const PAGE_ORIGIN: &str = "http://page.test:5173";
/// The proxy's body limit in these tests.
const MAX_BODY: usize = 64 * 1024;

/// The proxy with the demo server, served over HTTP too, and a copy that is not.
async fn start() -> LoopbackProxy {
    common::init_tracing();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        cors_allowed_origins = ["{PAGE_ORIGIN}"]
        max_body_bytes = {MAX_BODY}

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"
        serve_http = true

        [[mcp_servers]]
        name = "private-demo"
        transport = "builtin"
        server = "demo"
        "#
    );
    let config = Config::from_toml_str(&toml, "demo_mcp test").unwrap();
    LoopbackProxy::start(config, REQUEST_TIMEOUT).await
}

/// The requests these cases make beside the shared ones.
impl LoopbackProxy {
    fn endpoint(&self) -> String {
        self.url("/mcp/demo")
    }

    /// A tool call through `/api/mcp/tool`; its `CallToolResult`.
    async fn call(&self, tool: &str, arguments: Value) -> Value {
        self.post_json(
            paths::MCP_TOOL,
            &json!({"server": "demo", "name": tool, "arguments": arguments}),
        )
        .await
    }

    /// A JSON-RPC message to `/mcp/demo`, as a browser page at `origin` would send it.
    async fn rpc(
        &self,
        origin: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.endpoint())
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

/// Reads the error body, checking it has the shared shape.
async fn error_of(response: reqwest::Response) -> (u16, ApiError) {
    let reply = ErrorReply::read(response).await;
    (reply.status, reply.error)
}

fn assert_tool_error(result: &Value, needle: &str) {
    assert_eq!(result["isError"], true, "{result}");
    let text = tool_text(result);
    assert!(text.contains(needle), "{needle:?} missing in {text:?}");
}

#[tokio::test]
async fn the_demo_is_listed_as_a_builtin_server() {
    let h = start().await;
    let list = h.get_json(paths::MCP_SERVERS, &[]).await;
    assert_eq!(
        list,
        json!({"servers": [
            {"name": "demo", "transport": "builtin"},
            {"name": "private-demo", "transport": "builtin"},
        ]})
    );
}

#[tokio::test]
async fn tools_are_described_for_models() {
    let h = start().await;
    let list = h
        .get_json(paths::MCP_LIST_TOOLS, &[("server", "demo")])
        .await;
    let tools = list["tools"].as_array().unwrap();
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no tool {name} in {list}"))
    };
    assert_eq!(tools.len(), 3, "{list}");
    for name in ["now", "calculate", "search_notes"] {
        let t = tool(name);
        assert!(t["description"].as_str().unwrap().len() > 60, "{t}");
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
    }
    let calculate = &tool("calculate")["inputSchema"];
    assert_eq!(calculate["required"], json!(["expression"]), "{calculate}");
    assert_eq!(calculate["properties"]["expression"]["type"], "string");
    assert!(
        calculate["properties"]["expression"]["description"]
            .as_str()
            .unwrap()
            .contains("12*(3+4)")
    );
    let search = &tool("search_notes")["inputSchema"];
    assert_eq!(search["required"], json!(["query"]), "{search}");
    assert_eq!(search["properties"]["limit"]["maximum"], 20, "{search}");
    let now = &tool("now")["inputSchema"];
    assert!(now.get("required").is_none_or(|r| r == &json!([])), "{now}");
    assert!(
        now["properties"]["timezone"]["description"]
            .as_str()
            .unwrap()
            .contains("+02:00")
    );
}

#[tokio::test]
async fn calculate_evaluates_and_reports_mistakes_as_tool_errors() {
    let h = start().await;
    let result = h.call("calculate", json!({"expression": "12*(3+4)"})).await;
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(tool_text(&result), "12*(3+4) = 84");
    assert_eq!(result["structuredContent"]["value"], 84.0);
    let result = h
        .call("calculate", json!({"expression": "-2^2 + 7 % 4 / 0.5"}))
        .await;
    assert_eq!(result["structuredContent"]["value"], 2.0, "{result}");

    let result = h.call("calculate", json!({"expression": "1/(2-2)"})).await;
    assert_tool_error(&result, "division by zero");
    let result = h.call("calculate", json!({"expression": "2*(3+"})).await;
    assert_tool_error(&result, "ends too early");
    let result = h.call("calculate", json!({"expression": "2 ** 3"})).await;
    assert_tool_error(&result, "unexpected \"*\" at position 4");
    let long = "1+".repeat(2000) + "1";
    let result = h.call("calculate", json!({"expression": long})).await;
    assert_tool_error(&result, "at most 1000");

    // Arguments that do not fit the schema are a tool error too, so a model can correct them.
    let result = h.call("calculate", json!({"expr": "1"})).await;
    assert_tool_error(&result, "unknown field `expr`");
}

#[tokio::test]
async fn now_answers_rfc3339_with_the_weekday_at_the_asked_offset() {
    let h = start().await;
    let result = h.call("now", json!({})).await;
    assert_eq!(result["isError"], false, "{result}");
    let now = &result["structuredContent"];
    let rfc3339 = now["rfc3339"].as_str().unwrap();
    assert!(rfc3339.ends_with('Z') && rfc3339.len() == 20, "{now}");
    let weekday = now["weekday"].as_str().unwrap();
    assert!(tool_text(&result).contains(rfc3339) && tool_text(&result).contains(weekday));
    let unix = now["unix_seconds"].as_i64().unwrap();
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((unix - system).abs() < 60, "{unix} vs {system}");

    let result = h.call("now", json!({"timezone": "-05:30"})).await;
    let now = &result["structuredContent"];
    assert!(
        now["rfc3339"].as_str().unwrap().ends_with("-05:30"),
        "{now}"
    );
    assert_eq!(now["utc_offset"], "-05:30");

    let result = h.call("now", json!({"timezone": "Europe/Paris"})).await;
    assert_tool_error(&result, "unsupported timezone");
}

#[tokio::test]
async fn search_notes_ranks_and_limits() {
    let h = start().await;
    let result = h
        .call("search_notes", json!({"query": "rust", "limit": 3}))
        .await;
    assert_eq!(result["isError"], false, "{result}");
    let results = result["structuredContent"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{result}");
    assert_eq!(results[0]["id"], "rust-ownership");
    for hit in results {
        let id = hit["id"].as_str().unwrap();
        assert_eq!(hit["uri"], format!("notes://note/{id}"));
        assert!(!hit["title"].as_str().unwrap().is_empty());
        assert!(tool_text(&result).contains(id), "{result}");
    }
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    let result = h
        .call("search_notes", json!({"query": "sourdough starter"}))
        .await;
    assert_eq!(result["structuredContent"]["results"][0]["id"], "sourdough");
    let result = h
        .call("search_notes", json!({"query": "quantum chromodynamics"}))
        .await;
    assert_eq!(result["isError"], false);
    assert_eq!(result["structuredContent"]["results"], json!([]));
    assert!(tool_text(&result).starts_with("No notes match"));
    let result = h.call("search_notes", json!({"query": "the and of"})).await;
    assert_tool_error(&result, "no words to search for");
    let result = h
        .call("search_notes", json!({"query": "rust ".repeat(200)}))
        .await;
    assert_tool_error(&result, "too long");
}

#[tokio::test]
async fn a_streamed_call_ends_with_its_result() {
    let h = start().await;
    let response = h
        .post(
            paths::MCP_TOOL_STREAM,
            &json!({"server": "demo", "name": "calculate", "arguments": {"expression": "2^10"}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let events = read_tool_events(response).await;
    let [McpToolEvent::Result { result }] = &events[..] else {
        panic!("one result expected: {events:?}")
    };
    assert_eq!(
        result.structured_content,
        Some(json!({"expression": "2^10", "value": 1024.0}))
    );
}

#[tokio::test]
async fn unknown_tools_and_servers_are_404() {
    let h = start().await;
    let (status, error) = error_of(
        h.post(
            paths::MCP_TOOL,
            &json!({"server": "demo", "name": "weather", "arguments": {}}),
        )
        .await,
    )
    .await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
    assert!(error.message.contains("weather"), "{error:?}");
}

#[tokio::test]
async fn the_notes_are_resources() {
    let h = start().await;
    let list = h
        .get_json(paths::MCP_LIST_RESOURCES, &[("server", "demo")])
        .await;
    let resources = list["resources"].as_array().unwrap();
    assert_eq!(resources[0]["uri"], "notes://index", "{list}");
    assert!((16..=26).contains(&resources.len()), "{list}");
    assert!(resources.iter().all(|r| r["mimeType"] == "text/markdown"));
    let note = resources
        .iter()
        .find(|r| r["uri"] == "notes://note/risotto")
        .unwrap_or_else(|| panic!("no risotto in {list}"));
    assert_eq!(note["title"], "A reliable mushroom risotto");

    let index = h
        .post_json(
            paths::MCP_READ_RESOURCE,
            &json!({"server": "demo", "uri": "notes://index"}),
        )
        .await;
    let text = index["contents"][0]["text"].as_str().unwrap();
    for r in &resources[1..] {
        assert!(text.contains(r["uri"].as_str().unwrap()), "{text}");
    }
    let read = h
        .post_json(
            paths::MCP_READ_RESOURCE,
            &json!({"server": "demo", "uri": "notes://note/risotto"}),
        )
        .await;
    assert_eq!(read["contents"][0]["uri"], "notes://note/risotto");
    assert_eq!(read["contents"][0]["mimeType"], "text/markdown");
    let text = read["contents"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("# A reliable mushroom risotto") && text.contains("arborio"));

    // The session speaks 2026-07-28, where an unknown resource is "invalid params".
    let (status, error) = error_of(
        h.post(
            paths::MCP_READ_RESOURCE,
            &json!({"server": "demo", "uri": "notes://note/nope"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, error.code),
        (400, ErrorCode::BadRequest),
        "{error:?}"
    );
    assert!(error.message.contains("notes://index"), "{error:?}");
}

#[tokio::test]
async fn summarize_notes_carries_the_matching_notes() {
    let h = start().await;
    let list = h
        .get_json(paths::MCP_LIST_PROMPTS, &[("server", "demo")])
        .await;
    assert_eq!(list["prompts"][0]["name"], "summarize_notes", "{list}");
    let argument = &list["prompts"][0]["arguments"][0];
    assert_eq!(
        (&argument["name"], &argument["required"]),
        (&json!("topic"), &json!(true))
    );

    let prompt = h
        .post_json(
            paths::MCP_GET_PROMPT,
            &json!({"server": "demo", "name": "summarize_notes", "arguments": {"topic": "travel"}}),
        )
        .await;
    let messages = prompt["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{prompt}");
    assert_eq!(messages[0]["role"], "user");
    let text = messages[0]["content"]["text"].as_str().unwrap();
    assert!(text.starts_with("Summarize what the following notes say about \"travel\""));
    assert!(
        text.contains("# Packing light for a week of travel"),
        "{text}"
    );
    assert!(
        text.contains("tram 28"),
        "the notes' text is included: {text}"
    );

    let (status, error) = error_of(
        h.post(
            paths::MCP_GET_PROMPT,
            &json!({"server": "demo", "name": "summarize_notes", "arguments": {"topic": "zyzzyva"}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, error.code),
        (400, ErrorCode::BadRequest),
        "{error:?}"
    );
    assert!(
        error.message.contains("cooking"),
        "topics are suggested: {error:?}"
    );
}

async fn open(url: &str, mode: ClientLifecycleMode) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    tokio::time::timeout(REQUEST_TIMEOUT, ().serve_with_lifecycle(transport, mode))
        .await
        .expect("the MCP handshake timed out")
        .unwrap()
}

#[tokio::test]
async fn the_http_endpoint_serves_an_ordinary_mcp_client() {
    let h = start().await;
    // Stateless 2026-07-28, and the session-based handshake of older clients.
    let stateless = ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    };
    for (mode, version) in [
        (stateless, "2026-07-28"),
        (ClientLifecycleMode::Initialize, "2025-11-25"),
    ] {
        let client = open(&h.endpoint(), mode).await;
        let info = client.peer_info().unwrap();
        assert_eq!(info.protocol_version.as_str(), version);
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("switchyard-demo")
        );
        let tools = client.list_all_tools().await.unwrap();
        let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["calculate", "now", "search_notes"]);
        let mut arguments = serde_json::Map::new();
        arguments.insert("expression".into(), json!("12*(3+4)"));
        let result = client
            .call_tool(CallToolRequestParams::new("calculate").with_arguments(arguments))
            .await
            .unwrap();
        assert_eq!(result.is_error, Some(false));
        assert_eq!(
            result.structured_content,
            Some(json!({"expression": "12*(3+4)", "value": 84.0}))
        );
        let mut arguments = serde_json::Map::new();
        arguments.insert("expression".into(), json!("1/0"));
        let result = client
            .call_tool(CallToolRequestParams::new("calculate").with_arguments(arguments))
            .await
            .unwrap();
        assert_eq!(result.is_error, Some(true), "{result:?}");
        let resources = client.list_all_resources().await.unwrap();
        assert!(resources.iter().any(|r| r.uri == "notes://note/lisbon"));
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn only_servers_that_ask_are_served_over_http() {
    let h = start().await;
    let response = h
        .client
        .post(h.url("/mcp/private-demo"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
}

const INITIALIZE: &str = r#"{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "page", "version": "1"}}}"#;

#[tokio::test]
async fn browsers_get_cors_and_no_session_to_keep() {
    let h = start().await;
    let preflight = h
        .client
        .request(reqwest::Method::OPTIONS, h.endpoint())
        .header("origin", PAGE_ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, accept, authorization, mcp-session-id, mcp-protocol-version, mcp-method, mcp-name, last-event-id",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        PAGE_ORIGIN
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in [
        "content-type",
        "accept",
        "authorization",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    ] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }

    // An older client's handshake is answered without a session: nothing is kept for it.
    let initialize: Value = serde_json::from_str(INITIALIZE).unwrap();
    let response = h.rpc(Some(PAGE_ORIGIN), &[], &initialize).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        PAGE_ORIGIN
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("mcp-session-id"), "{exposed}");
    assert!(response.headers().get("mcp-session-id").is_none());
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-06-18",
        "{answer}"
    );

    // Every later request stands alone.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "calculate", "arguments": {"expression": "3*3"}}});
    let response = h
        .rpc(
            Some(PAGE_ORIGIN),
            &[("mcp-protocol-version", "2025-06-18")],
            &call,
        )
        .await;
    let answer = ok_json(response).await;
    assert_eq!(
        answer["result"]["structuredContent"]["value"], 9.0,
        "{answer}"
    );
}

#[tokio::test]
async fn foreign_origins_and_hosts_are_refused() {
    let h = start().await;
    let initialize: Value = serde_json::from_str(INITIALIZE).unwrap();
    // The proxy's own pages may call it, as may listed origins and clients that are not pages.
    let own = h.base.clone();
    for origin in [Some(own.as_str()), Some(PAGE_ORIGIN), None] {
        let response = h.rpc(origin, &[], &initialize).await;
        assert_eq!(response.status(), 200, "{origin:?}");
    }
    let response = h.rpc(Some("http://evil.test"), &[], &initialize).await;
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error.code),
        (403, ErrorCode::Forbidden),
        "{error:?}"
    );
    // A name that resolves to the proxy but is not loopback: DNS rebinding.
    let response = h
        .rpc(None, &[("host", "rebind.evil.test")], &initialize)
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let h = start().await;
    let mut big: Value = serde_json::from_str(INITIALIZE).unwrap();
    big["params"]["clientInfo"]["name"] = json!("x".repeat(MAX_BODY + 1));
    let response = h.rpc(None, &[], &big).await;
    assert_eq!(response.status(), 413);
}
