//! The MCP gateway (`/mcp`) end to end: the real proxy (in process, on loopback) in front of the
//! rmcp test server twice, over stdio (`local`, sessions) and over stateless Streamable HTTP
//! (`remote`, 2026-07-28), reached by rmcp's own client over Streamable HTTP with each protocol
//! version the gateway speaks. Two keys: `alice` may use everything, `bob` one server's `echo`
//! and `slow`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest,
    ErrorCode, GetPromptRequestParams, Implementation, ProgressNotificationParam, ProtocolVersion,
    ReadResourceRequestParams, ResourceContents, ServerNotification, ServerResult,
    SubscriptionFilter,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RunningService,
    ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_tests::mcp_server::HttpTestServer;

mod common;
use common::LoopbackProxy;

const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bounds each wait for something the gateway should pass on.
const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    proxy: LoopbackProxy,
    alice: String,
    bob: String,
    /// The proxy's configuration, for starting another instance of it.
    config: Config,
    _remote: HttpTestServer,
}

impl Harness {
    /// Another instance of the proxy with the same configuration (the same keys, servers and
    /// session key), as a second instance behind a load balancer would be.
    async fn another_instance(&self) -> LoopbackProxy {
        LoopbackProxy::start(self.config.clone(), REQUEST_TIMEOUT).await
    }
}

async fn start() -> Harness {
    start_with("").await
}

/// The proxy, with `extra` added to its configuration.
async fn start_with(extra: &str) -> Harness {
    common::init_tracing();
    let remote = HttpTestServer::start("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let (alice, alice_hash) = keys::generate().unwrap();
    let (bob, bob_hash) = keys::generate().unwrap();
    let toml = format!(
        r#"
        [[mcp_servers]]
        name = "local"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]

        [[mcp_servers]]
        name = "remote"
        transport = "streamable_http"
        url = "{remote}"

        [[keys]]
        name = "alice"
        hash = "{alice_hash}"
        models = []
        mcp = ["*"]

        [[keys]]
        name = "bob"
        hash = "{bob_hash}"
        models = []
        mcp = ["local/echo", "local/slow"]

        {extra}
        "#,
        remote = remote.url(),
    );
    let config = Config::from_toml_str(&toml, "gateway test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config.clone(), REQUEST_TIMEOUT).await,
        alice,
        bob,
        config,
        _remote: remote,
    }
}

/// What a client saw arrive on its own.
#[derive(Default)]
struct Seen {
    tool_list_changes: Mutex<usize>,
    progress: Mutex<Vec<ProgressNotificationParam>>,
}

/// An MCP client speaking one protocol version, recording notifications.
#[derive(Clone)]
struct Client {
    version: ProtocolVersion,
    seen: Arc<Seen>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("gateway-test", "1"),
        )
        .with_protocol_version(self.version.clone())
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        *self.seen.tool_list_changes.lock().unwrap() += 1;
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen.progress.lock().unwrap().push(params);
    }
}

type Session = RunningService<RoleClient, Client>;

/// Connects to the gateway as the holder of `key`, speaking `version`.
async fn connect(h: &Harness, key: &str, version: ProtocolVersion) -> (Session, Arc<Seen>) {
    try_connect(h, key, version.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting with {version}: {e}"))
}

async fn try_connect(
    h: &Harness,
    key: &str,
    version: ProtocolVersion,
) -> Result<(Session, Arc<Seen>), String> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(h.proxy.url("/mcp")).auth_header(key);
    let transport = StreamableHttpClientTransport::from_config(config);
    let lifecycle = if version.has_initialize() {
        ClientLifecycleMode::Initialize
    } else {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![version.clone()],
        }
    };
    let seen = Arc::new(Seen::default());
    let client = Client {
        version,
        seen: Arc::clone(&seen),
    };
    let session = tokio::time::timeout(WAIT, client.serve_with_lifecycle(transport, lifecycle))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((session, seen))
}

/// The versions the gateway is asked for in every test that runs across versions.
fn versions() -> [ProtocolVersion; 3] {
    [
        ProtocolVersion::V_2025_06_18,
        ProtocolVersion::V_2025_11_25,
        ProtocolVersion::V_2026_07_28,
    ]
}

fn arguments(value: Value) -> rmcp::model::JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn call(session: &Session, name: &str, args: Value) -> Result<String, ServiceError> {
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments(args));
    let result = session.call_tool(params).await?;
    let text = result
        .content
        .first()
        .and_then(|content| content.as_text())
        .map(|text| text.text.clone())
        .unwrap_or_default();
    Ok(text)
}

/// Sends a tool call and returns its handle (its progress token, a way to cancel, the answer).
async fn start_call(
    session: &Session,
    params: CallToolRequestParams,
) -> rmcp::service::RequestHandle<RoleClient> {
    session
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap()
}

/// The JSON-RPC error of a failed request.
fn rpc_error(error: ServiceError) -> rmcp::model::ErrorData {
    match error {
        ServiceError::McpError(error) => error,
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

/// A raw `initialize` (2025-11-25) to the gateway, with `key` as the bearer credential if any.
fn raw_initialize(h: &Harness, key: Option<&str>) -> reqwest::RequestBuilder {
    let request = h
        .proxy
        .client
        .post(h.proxy.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
        );
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

#[tokio::test]
async fn every_server_is_one_server_in_every_version() {
    let h = start().await;
    for version in versions() {
        let (session, _) = connect(&h, &h.alice, version.clone()).await;
        let info = session.peer_info().expect("server info");
        let name = info.server_info.as_ref().map(|i| i.name.as_str());
        assert_eq!(name, Some("switchyard-gateway"), "{version}");

        // Both servers' tools, all pages, named by server (the test server pages its lists).
        let mut names: Vec<String> = session
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|tool| tool.name.into_owned())
            .collect();
        names.sort();
        for expected in ["local__echo", "local__add", "remote__echo", "remote__slow"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{version}: {expected} missing from {names:?}"
            );
        }
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("local__") || n.starts_with("remote__")),
            "{names:?}"
        );

        // Calls reach the server the name says, with the arguments.
        assert_eq!(
            call(&session, "local__echo", json!({"message": "hi"}))
                .await
                .unwrap(),
            "Echo: hi"
        );
        assert_eq!(
            call(&session, "remote__add", json!({"a": 2, "b": 3}))
                .await
                .unwrap(),
            "5"
        );
        // Each upstream speaks its own version, whatever the client speaks.
        assert_eq!(
            call(&session, "remote__protocol_version", json!({}))
                .await
                .unwrap(),
            "2026-07-28"
        );

        // Prompts and resources, named the same way.
        let prompts = session.list_all_prompts().await.unwrap();
        for expected in ["local__greeting", "local__plain-4", "remote__plain-1"] {
            assert!(
                prompts.iter().any(|p| p.name == expected),
                "{version}: {expected} missing"
            );
        }
        let got = session
            .get_prompt(GetPromptRequestParams::new("remote__plain-1"))
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&got.messages).unwrap()[0]["content"]["text"],
            "This is plain-1.",
            "{version}"
        );
        let resources = session.list_all_resources().await.unwrap();
        let resource = resources
            .iter()
            .find(|r| r.uri.starts_with("switchyard://remote/"))
            .unwrap_or_else(|| panic!("no remote resource in {resources:?}"));
        let read = session
            .read_resource(ReadResourceRequestParams::new(resource.uri.clone()))
            .await
            .unwrap();
        let uris: Vec<&str> = read
            .contents
            .iter()
            .map(|c| match c {
                ResourceContents::TextResourceContents { uri, .. }
                | ResourceContents::BlobResourceContents { uri, .. } => uri.as_str(),
                _ => "",
            })
            .collect();
        assert!(
            uris.iter().all(|uri| *uri == resource.uri),
            "{version}: contents name {uris:?}, not {}",
            resource.uri
        );

        // Names that are not the gateway's, or of no server, are refused as bad parameters.
        for name in ["echo", "nowhere__echo", "local__no_such_tool"] {
            let error = rpc_error(call(&session, name, json!({})).await.unwrap_err());
            assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{name}: {error:?}");
        }
        let error = session
            .read_resource(ReadResourceRequestParams::new("test://static/1"))
            .await
            .unwrap_err();
        assert_eq!(rpc_error(error).code, ErrorCode::INVALID_PARAMS);
        session.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn scopes_narrow_what_the_gateway_offers() {
    let h = start().await;
    for version in versions() {
        let (session, _) = connect(&h, &h.bob, version.clone()).await;
        let mut names: Vec<String> = session
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|tool| tool.name.into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["local__echo", "local__slow"], "{version}");
        assert_eq!(
            call(&session, "local__echo", json!({"message": "bob"}))
                .await
                .unwrap(),
            "Echo: bob"
        );
        // Out of scope: refused, with the taxonomy's code in the error's data.
        let error = rpc_error(
            call(&session, "local__add", json!({"a": 1, "b": 1}))
                .await
                .unwrap_err(),
        );
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(error.data.unwrap()["code"], "forbidden");
        let error = rpc_error(
            call(&session, "remote__echo", json!({"message": "x"}))
                .await
                .unwrap_err(),
        );
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{error:?}");
        // A server outside the scopes has no resources for this caller.
        let resources = session.list_all_resources().await.unwrap();
        assert!(
            resources
                .iter()
                .all(|r| r.uri.starts_with("switchyard://local/")),
            "{resources:?}"
        );
        session.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn the_gateway_needs_a_key_and_a_session_keeps_its_owner() {
    let h = start().await;
    // Without a key, or with a wrong one: refused before any MCP is spoken.
    for key in [None, Some("not-a-key")] {
        let response = raw_initialize(&h, key).send().await.unwrap();
        assert_eq!(response.status(), 401, "{key:?}");
    }

    // Alice's session, used with Bob's key: refused.
    let response = raw_initialize(&h, Some(&h.alice)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let session_id = response
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_owned();
    drop(response.text().await);
    let in_session = |key: &str, body: Value| {
        h.proxy
            .client
            .post(h.proxy.url("/mcp"))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session_id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body)
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let status = in_session(&h.alice, initialized)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let alice_list = in_session(&h.alice, list.clone()).send().await.unwrap();
    assert_eq!(alice_list.status(), 200);
    assert!(alice_list.text().await.unwrap().contains("local__add"));
    // Bob holding Alice's session id learns nothing and changes nothing: every kind of request
    // in it is answered as an unknown session would be.
    let bob_list = in_session(&h.bob, list.clone()).send().await.unwrap();
    assert_eq!(bob_list.status(), 404);
    let body = bob_list.text().await.unwrap();
    assert!(!body.contains("local__add"), "{body}");
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 2}});
    assert_eq!(
        in_session(&h.bob, cancel).send().await.unwrap().status(),
        404
    );
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = h
            .proxy
            .client
            .request(method.clone(), h.proxy.url("/mcp"))
            .bearer_auth(&h.bob)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session_id)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method}");
    }
    // The session is still Alice's, and still works.
    let again = in_session(&h.alice, list).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("local__add"));
}

#[tokio::test]
async fn progress_reaches_the_client_under_its_own_token() {
    let h = start().await;
    for version in versions() {
        let (session, seen) = connect(&h, &h.alice, version.clone()).await;
        let params = CallToolRequestParams::new("local__slow")
            .with_arguments(arguments(json!({"steps": 3, "delay_ms": 20})));
        // rmcp's client puts a progress token of its own choosing into every request.
        let handle = start_call(&session, params).await;
        let token = handle.progress_token.clone();
        let result = match handle.await_response().await.unwrap() {
            ServerResult::CallToolResult(result) => result,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            result.content[0].as_text().unwrap().text,
            "done after 3 steps"
        );
        let progress = seen.progress.lock().unwrap().clone();
        let steps: Vec<f64> = progress.iter().map(|p| p.progress).collect();
        assert_eq!(steps, [1.0, 2.0, 3.0], "{version}");
        assert!(
            progress
                .iter()
                .all(|p| p.progress_token == token && p.total == Some(3.0)),
            "{version}: {progress:?} (token {token:?})"
        );
        session.cancel().await.unwrap();
    }
}

/// The number the test server's `stats` tool reports under `key`.
async fn stat(session: &Session, key: &str) -> u64 {
    let text = call(session, "local__stats", json!({})).await.unwrap();
    let stats: Value = serde_json::from_str(&text).unwrap();
    stats[key].as_u64().unwrap()
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream() {
    let h = start().await;
    let (session, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    let before = stat(&session, "cancelled").await;
    let params = CallToolRequestParams::new("local__slow")
        .with_arguments(arguments(json!({"steps": 100, "delay_ms": 100})));
    let handle = start_call(&session, params).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.cancel(Some("changed my mind".into())).await.unwrap();
    let mut cancelled = before;
    for _ in 0..100 {
        cancelled = stat(&session, "cancelled").await;
        if cancelled > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cancelled,
        before + 1,
        "the server's slow call was not cancelled"
    );
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn changed_tool_lists_are_passed_on() {
    let h = start().await;
    // A session (2025-11-25): the change arrives on the session's own event stream.
    let (session, seen) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    let tools = session.list_all_tools().await.unwrap();
    assert!(!tools.iter().any(|t| t.name == "local__revealed"));
    // Bob may not use the server's `announce`, but he may use the server: he hears of it too.
    let (bob, bob_seen) = connect(&h, &h.bob, ProtocolVersion::V_2025_11_25).await;

    // 2026-07-28: `subscriptions/listen`.
    let (stateless, _) = connect(&h, &h.alice, ProtocolVersion::V_2026_07_28).await;
    let mut subscription = stateless
        .peer()
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .unwrap();
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));

    assert_eq!(
        call(&session, "local__announce", json!({})).await.unwrap(),
        "announced"
    );
    tokio::time::timeout(WAIT, async {
        loop {
            if *seen.tool_list_changes.lock().unwrap() > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the session's client heard of the change");
    tokio::time::timeout(WAIT, async {
        while *bob_seen.tool_list_changes.lock().unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("Bob's client heard of the change");
    let notification = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("the subscription heard of the change")
        .unwrap()
        .expect("an open subscription");
    assert!(
        matches!(
            notification,
            ServerNotification::ToolListChangedNotification(_)
        ),
        "{notification:?}"
    );
    let tools = session.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "local__revealed"));
    bob.cancel().await.unwrap();
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn sessions_are_bounded() {
    let h = start_with("[mcp_gateway]\nmax_sessions = 2\n").await;
    let (first, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    let (second, _) = connect(&h, &h.bob, ProtocolVersion::V_2025_11_25).await;
    let refused = raw_initialize(&h, Some(&h.alice)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["id"], 1, "the refusal answers the initialize: {body}");
    assert_eq!(body["error"]["code"], -32000, "{body}");
    // Stateless requests need no place.
    let (stateless, _) = connect(&h, &h.alice, ProtocolVersion::V_2026_07_28).await;
    assert_eq!(
        call(&stateless, "local__echo", json!({"message": "still"}))
            .await
            .unwrap(),
        "Echo: still"
    );
    // A closed session frees its place.
    first.cancel().await.unwrap();
    let mut reopened = Err(String::new());
    for _ in 0..50 {
        reopened = try_connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (third, _) = reopened.expect("a place after a session closed");
    third.cancel().await.unwrap();
    second.cancel().await.unwrap();
}

#[tokio::test]
async fn a_malformed_body_is_a_json_rpc_error() {
    let h = start().await;
    for (body, code) in [("{not json", -32700), ("[]", -32600)] {
        let response = h
            .proxy
            .client
            .post(h.proxy.url("/mcp"))
            .bearer_auth(&h.alice)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn a_disabled_gateway_is_not_found() {
    let h = start_with("[mcp_gateway]\nenabled = false\n").await;
    let response = h
        .proxy
        .client
        .post(h.proxy.url("/mcp"))
        .bearer_auth(&h.alice)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An npm package's file, installed by `npm ci` at the repository root.
fn node_module(path: &str) -> PathBuf {
    let file = repository().join("node_modules").join(path);
    assert!(
        file.is_file(),
        "{} is missing: run npm ci at the repository root (cargo xtask test does)",
        file.display()
    );
    file
}

/// The proxy with the reference server (`@modelcontextprotocol/server-everything`, over stdio)
/// as a third server, `everything`.
async fn start_with_everything() -> Harness {
    let everything = node_module("@modelcontextprotocol/server-everything/dist/index.js");
    start_with(&format!(
        r#"
        [[mcp_servers]]
        name = "everything"
        transport = "stdio"
        command = "node"
        args = [{everything:?}, "stdio"]
        "#,
        everything = everything.display().to_string()
    ))
    .await
}

/// Runs `program` with `args` and `env` in `cwd` (bounded to a minute); its standard output,
/// after checking that it succeeded.
async fn run_node(program: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> String {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the client finished within a minute")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} failed: {}\n{stdout}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_typescript_sdks_client_uses_the_gateway() {
    let h = start_with_everything().await;
    node_module("@modelcontextprotocol/sdk/package.json");
    let script = repository().join("tests/clients/mcp_gateway.mjs");
    let stdout = run_node(
        Path::new("node"),
        &[&script.display().to_string()],
        &[
            ("SWITCHYARD_MCP", &h.proxy.url("/mcp")),
            ("SWITCHYARD_KEY", &h.alice),
            ("SWITCHYARD_NARROW_KEY", &h.bob),
        ],
        &repository(),
    )
    .await;
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(seen["server"], "switchyard-gateway");
    // The SDK negotiates its newest version with an `initialize` handshake: a session.
    assert_eq!(seen["protocolVersion"], "2025-11-25", "{seen}");
    assert_eq!(seen["sessionId"], true);
    assert_eq!(seen["capabilities"]["tools"]["listChanged"], true, "{seen}");
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in ["local__echo", "remote__echo", "everything__echo"] {
        assert!(tools.contains(&expected), "{expected} not in {tools:?}");
    }
    assert_eq!(seen["echo"], "Echo: from ts");
    assert_eq!(seen["everythingEcho"], "Echo: reference");
    assert_eq!(seen["slow"], "done after 3 steps");
    assert_eq!(
        seen["progress"],
        json!([
            {"progress": 1, "total": 3},
            {"progress": 2, "total": 3},
            {"progress": 3, "total": 3},
        ])
    );
    assert!(seen["aborted"].is_object(), "{seen}");
    assert_eq!(seen["cancelledUpstream"], 1, "{seen}");
    assert!(
        seen["prompts"]
            .as_array()
            .unwrap()
            .contains(&json!("local__greeting")),
        "{seen}"
    );
    assert_eq!(seen["prompt"], "Please greet Ada warmly.");
    assert_eq!(seen["read"]["contents"], json!([seen["read"]["asked"]]));
    assert_eq!(seen["unknownTool"]["code"], -32602, "{seen}");
    assert_eq!(seen["notNamespaced"]["code"], -32602, "{seen}");
    assert_eq!(seen["toolListChanges"], 1, "{seen}");
    assert_eq!(seen["revealed"], true);
    assert_eq!(seen["narrowTools"], json!(["local__echo", "local__slow"]));
    assert_eq!(
        seen["narrowForbidden"]["data"]["code"], "forbidden",
        "{seen}"
    );
    assert_eq!(seen["wrongKey"]["code"], 401, "{seen}");
}

#[tokio::test]
async fn the_mcp_inspector_cli_lists_and_calls_through_the_gateway() {
    let h = start_with_everything().await;
    let inspector = node_module("@modelcontextprotocol/inspector/cli/build/cli.js");
    // The Inspector looks for its own package.json at `../package.json` from the working
    // directory (and imports it from its module's): it must run where that path does not exist.
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let url = h.proxy.url("/mcp");
    let header = format!("Authorization: Bearer {}", h.alice);
    let inspect = |method: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            inspector.display().to_string(),
            "--cli".into(),
            url.clone(),
            "--transport".into(),
            "http".into(),
            "--header".into(),
            header.clone(),
            "--method".into(),
            method.into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let args = inspect("tools/list", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let listed: Value =
        serde_json::from_str(&run_node(Path::new("node"), &args, &[], &cwd).await).unwrap();
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"everything__echo"), "{names:?}");
    assert!(names.contains(&"local__add"), "{names:?}");

    let args = inspect(
        "tools/call",
        &[
            "--tool-name",
            "everything__echo",
            "--tool-arg",
            "message=inspected",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let called: Value =
        serde_json::from_str(&run_node(Path::new("node"), &args, &[], &cwd).await).unwrap();
    assert_eq!(called["content"][0]["text"], "Echo: inspected", "{called}");

    let args = inspect("resources/list", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let resources: Value =
        serde_json::from_str(&run_node(Path::new("node"), &args, &[], &cwd).await).unwrap();
    assert!(
        resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("switchyard://everything/"))),
        "{resources}"
    );
}

#[tokio::test]
async fn the_callers_rate_limit_applies_to_the_gateway() {
    let (limited, limited_hash) = keys::generate().unwrap();
    let h = start_with(&format!(
        r#"
        [[keys]]
        name = "limited"
        hash = "{limited_hash}"
        models = []
        mcp = ["*"]
        [keys.limits]
        requests_per_minute = 2
        "#
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 1..=3 {
        let response = raw_initialize(&h, Some(&limited)).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Another key's budget is its own.
    let (session, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn a_server_that_cannot_start_is_left_out_of_lists() {
    let h = start_with(
        r#"
        [[mcp_servers]]
        name = "broken"
        transport = "stdio"
        command = "false"
        "#,
    )
    .await;
    let (session, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    let names: Vec<String> = session
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|tool| tool.name.into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "local__echo"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("broken__")),
        "{names:?}"
    );
    // Calling it reports why.
    let error = rpc_error(call(&session, "broken__echo", json!({})).await.unwrap_err());
    assert_eq!(error.code, ErrorCode::INTERNAL_ERROR, "{error:?}");
    assert!(error.message.contains("broken"), "{error:?}");
    session.cancel().await.unwrap();
}

#[tokio::test]
async fn one_caller_cannot_take_every_session_place() {
    let h = start_with("[mcp_gateway]\nmax_sessions_per_user = 2\n").await;
    let (first, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    let (second, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    let refused = raw_initialize(&h, Some(&h.alice)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("this caller")),
        "{body}"
    );
    // Another caller still gets a place.
    let (bob, _) = connect(&h, &h.bob, ProtocolVersion::V_2025_11_25).await;
    bob.cancel().await.unwrap();
    second.cancel().await.unwrap();
    first.cancel().await.unwrap();
}

/// A JSON-RPC request in the session `session` to the instance at `base`, as `key`; the
/// status and the JSON-RPC message answering it.
async fn in_session(
    h: &Harness,
    base: &LoopbackProxy,
    key: &str,
    session: &str,
    body: Value,
) -> (u16, Value) {
    let response = h
        .proxy
        .client
        .post(base.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    // A JSON body, or the last `data:` line of an event stream.
    let message = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .rev()
            .filter_map(|line| line.strip_prefix("data:"))
            .find_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
            .unwrap_or(Value::Null)
    });
    (status, message)
}

/// Opens a session with a raw `initialize` and `notifications/initialized` on `base`; its id.
async fn open_session(h: &Harness, base: &LoopbackProxy, key: &str) -> String {
    let response = h
        .proxy
        .client
        .post(base.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(response.text().await);
    let (status, _) = in_session(
        h,
        base,
        key,
        &session,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(status, 202);
    session
}

fn echo_call(id: u64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "local__echo", "arguments": {"message": message}}})
}

fn text_of(message: &Value) -> &str {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

/// A config line naming a file that holds a fresh session key.
fn session_key_config(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("session.key");
    let key: String = (0..32).map(|i| format!("{:02x}", i * 7 + 3)).collect();
    std::fs::write(&path, key).unwrap();
    format!("session_key_file = {:?}", path.display().to_string())
}

#[tokio::test]
async fn a_session_its_client_left_frees_its_place_and_comes_back() {
    let h =
        start_with("[mcp_gateway]\nsession_idle_timeout_ms = 1000\nmax_sessions_per_user = 1\n")
            .await;
    let left = open_session(&h, &h.proxy, &h.alice).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The next opening sweeps: the left session's place is free again...
    let (session, _) = connect(&h, &h.alice, ProtocolVersion::V_2025_11_25).await;
    // ...so the left one, back, needs a place like an opening and finds none...
    let (status, refused) = in_session(&h, &h.proxy, &h.alice, &left, echo_call(2, "x")).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(
        refused["id"], 2,
        "the refusal answers the request: {refused}"
    );
    // ...until the other one ends; then it resumes where it was, without a new `initialize`.
    session.cancel().await.unwrap();
    let mut resumed = (0, Value::Null);
    for attempt in 0..50 {
        resumed = in_session(
            &h,
            &h.proxy,
            &h.alice,
            &left,
            echo_call(3 + attempt, "back"),
        )
        .await;
        if resumed.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(resumed.0, 200, "{}", resumed.1);
    assert_eq!(text_of(&resumed.1), "Echo: back", "{}", resumed.1);
}

#[tokio::test]
async fn any_instance_with_the_key_resumes_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_with(&format!("[mcp_gateway]\n{}\n", session_key_config(&dir))).await;
    let other = h.another_instance().await;
    let session = open_session(&h, &h.proxy, &h.alice).await;
    // The id is sealed: it names neither the caller nor the instance's own id.
    assert!(
        session.starts_with("sy1.") && !session.contains("alice"),
        "{session}"
    );
    for (id, instance) in [(2, &other), (3, &h.proxy), (4, &other)] {
        let (status, answer) =
            in_session(&h, instance, &h.alice, &session, echo_call(id, "hop")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(text_of(&answer), "Echo: hop", "{answer}");
    }
    let (status, listed) = in_session(
        &h,
        &other,
        &h.alice,
        &session,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["result"]["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == "remote__echo")),
        "{listed}"
    );
    // Another caller holding the id, a forged id and an id changed by one character: unknown.
    let mut changed = session.clone().into_bytes();
    let middle = changed.len() / 2;
    changed[middle] = if changed[middle] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    for (key, id) in [
        (&h.bob, session.as_str()),
        (
            &h.alice,
            "sy1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        (&h.alice, changed.as_str()),
    ] {
        let (status, _) = in_session(&h, &other, key, id, echo_call(6, "no")).await;
        assert_eq!(status, 404, "{id}");
    }
    // Ended by its client, it is not resumed.
    let ended = h
        .proxy
        .client
        .delete(other.url("/mcp"))
        .bearer_auth(&h.alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    let (status, _) = in_session(&h, &other, &h.alice, &session, echo_call(7, "gone")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn without_a_shared_key_sessions_stay_on_their_instance() {
    let h = start().await;
    let other = h.another_instance().await;
    let session = open_session(&h, &h.proxy, &h.alice).await;
    let (status, _) = in_session(&h, &other, &h.alice, &session, echo_call(2, "x")).await;
    assert_eq!(status, 404);
    let (status, answer) = in_session(&h, &h.proxy, &h.alice, &session, echo_call(3, "x")).await;
    assert_eq!((status, text_of(&answer)), (200, "Echo: x"), "{answer}");
}

#[tokio::test]
async fn a_session_id_expires() {
    let h = start_with("[mcp_gateway]\nsession_max_age_ms = 1000\n").await;
    let session = open_session(&h, &h.proxy, &h.alice).await;
    let (status, _) = in_session(&h, &h.proxy, &h.alice, &session, echo_call(2, "x")).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = in_session(&h, &h.proxy, &h.alice, &session, echo_call(3, "x")).await;
    assert_eq!(status, 404, "clients initialize again on 404");
}

#[tokio::test]
async fn progress_and_subscriptions_hold_the_callers_stream_places() {
    let (streamer, streamer_hash) = keys::generate().unwrap();
    let h = start_with(&format!(
        r#"
        [[keys]]
        name = "streamer"
        hash = "{streamer_hash}"
        models = []
        mcp = ["*"]
        [keys.limits]
        concurrent_streams = 1
        "#
    ))
    .await;
    let (stateless, _) = connect(&h, &streamer, ProtocolVersion::V_2026_07_28).await;
    let subscription = stateless
        .peer()
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .unwrap();
    // Its one place is taken by the subscription: a call reporting progress is refused...
    let (session, _) = connect(&h, &streamer, ProtocolVersion::V_2025_11_25).await;
    let params = CallToolRequestParams::new("local__slow")
        .with_arguments(arguments(json!({"steps": 1, "delay_ms": 10})));
    let refused = start_call(&session, params.clone())
        .await
        .await_response()
        .await
        .unwrap_err();
    let error = rpc_error(refused);
    assert_eq!(
        error.data.unwrap()["code"],
        "rate_limited",
        "{}",
        error.message
    );
    // ...and allowed once the subscription ends.
    drop(subscription);
    stateless.cancel().await.unwrap();
    let mut answered = None;
    for _ in 0..50 {
        let attempt = start_call(&session, params.clone())
            .await
            .await_response()
            .await;
        if attempt.is_ok() {
            answered = Some(attempt);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered.is_some(), "the place was never given back");
    session.cancel().await.unwrap();
}
