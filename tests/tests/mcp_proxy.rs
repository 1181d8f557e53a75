//! The proxy's `/api/mcp/*` face end to end: the real proxy (in-process, on loopback) in front of
//! real MCP servers: the reference server `@modelcontextprotocol/server-everything` (Node.js) over
//! stdio and Streamable HTTP, and the rmcp test server (2026-07-28) over stdio and stateless HTTP.
//! Answers are read the way a client reads them, with `shared`'s types.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::identity::Identity;
use switchyard_proxy::mcp::McpPool;
use switchyard_shared::mcp::{McpServerList, McpToolEvent, McpTransport};
use switchyard_shared::sse::SseDecoder;
use switchyard_shared::{ApiError, ErrorCode, paths};
use switchyard_tests::mcp_server::HttpTestServer;
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;
use common::{ErrorReply, LoopbackProxy, ok_json, read_tool_events, tool_text};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// server-everything's entry point, installed by `npm ci` at the repository root.
fn everything_js() -> String {
    let path =
        repository().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        path.is_file(),
        "{} is missing: run npm ci at the repository root (cargo xtask test does)",
        path.display()
    );
    path.display().to_string()
}

/// The preload that keeps Node servers on 127.0.0.1 (server-everything binds all interfaces).
fn loopback_cjs() -> String {
    repository()
        .join("tests/mcp/loopback.cjs")
        .display()
        .to_string()
}

/// server-everything over HTTP (Streamable HTTP, or the legacy SSE transport), as a child
/// process; killed when dropped.
struct EverythingHttp {
    child: tokio::process::Child,
    port: u16,
    legacy_sse: bool,
}

impl EverythingHttp {
    /// Starts it on `port` (0: any free port) and waits until it listens.
    async fn start(port: u16) -> Self {
        Self::start_serving(port, false).await
    }

    /// The same, speaking the legacy HTTP+SSE transport.
    async fn start_sse(port: u16) -> Self {
        Self::start_serving(port, true).await
    }

    async fn start_serving(port: u16, legacy_sse: bool) -> Self {
        let mode = if legacy_sse { "sse" } else { "streamableHttp" };
        let mut child = tokio::process::Command::new("node")
            .args(["-r", &loopback_cjs(), &everything_js(), mode])
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            // It logs every request to stdout; nobody reads it, so it must not fill a pipe.
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to run the MCP tests");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let port = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // Written by loopback.cjs once the server listens.
                if let Some(origin) = line.strip_prefix("listening on http://127.0.0.1:") {
                    return origin.trim().parse::<u16>().unwrap();
                }
            }
            panic!("server-everything exited before listening");
        })
        .await
        .expect("server-everything did not start within 15 s");
        // Keep draining stderr so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        EverythingHttp {
            child,
            port,
            legacy_sse,
        }
    }

    fn url(&self) -> String {
        let path = if self.legacy_sse { "sse" } else { "mcp" };
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// What differs between tests.
#[derive(Default)]
struct Setup {
    /// Also start server-everything over Streamable HTTP (a Node process; slower).
    everything_http: bool,
    /// Also start server-everything over the legacy SSE transport.
    everything_sse: bool,
}

/// The upstreams, the proxy in front of them, and a client.
struct Harness {
    proxy: LoopbackProxy,
    nonce: String,
    config: Config,
    rmcp_http: HttpTestServer,
    everything_http: Option<EverythingHttp>,
    everything_sse: Option<EverythingHttp>,
}

/// The cases speak to the proxy through the harness.
impl Deref for Harness {
    type Target = LoopbackProxy;

    fn deref(&self) -> &LoopbackProxy {
        &self.proxy
    }
}

/// A word unique to one harness, passed to its server-everything (which ignores it) so that the
/// test can find that process, and only that one, among the processes it started.
fn nonce() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "switchyard-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// The proxy's MCP servers: every transport, plus variants with short timeouts.
fn config_toml(
    rmcp_http: &str,
    everything_http: Option<&str>,
    everything_sse: Option<&str>,
    nonce: &str,
) -> String {
    let node = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        format!("command = \"node\"\nargs = [{}]", args.join(", "))
    };
    let everything_stdio = node(&["-r", &loopback_cjs(), &everything_js(), "stdio", nonce]);
    // A port nothing listens on (bound, then released).
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [[mcp_servers]]
        name = "everything"
        transport = "stdio"
        {everything_stdio}

        [[mcp_servers]]
        name = "rmcp"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]
        env = {{ SWITCHYARD_TEST_GREETING = "hello from the config" }}
        env_from = {{ SWITCHYARD_TEST_PATH_COPY = "PATH" }}

        [[mcp_servers]]
        name = "rmcp-http"
        transport = "streamable_http"
        url = "{rmcp_http}"

        [[mcp_servers]]
        name = "rmcp-quick"
        transport = "streamable_http"
        url = "{rmcp_http}"
        call_timeout_ms = 300

        [[mcp_servers]]
        name = "rmcp-down"
        transport = "streamable_http"
        url = "http://127.0.0.1:{closed_port}/mcp"

        [[mcp_servers]]
        name = "rmcp-broken"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--no-such-flag"]

        [[mcp_servers]]
        name = "rmcp-idle"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]
        idle_timeout_ms = 300
        "#
    );
    if let Some(url) = everything_sse {
        toml.push_str(&format!(
            "\n[[mcp_servers]]\nname = \"everything-sse\"\ntransport = \"sse\"\nurl = \"{url}\"\n"
        ));
    }
    if let Some(url) = everything_http {
        toml.push_str(&format!(
            "\n[[mcp_servers]]\nname = \"everything-http\"\ntransport = \"streamable_http\"\nurl = \"{url}\"\n"
        ));
    }
    toml
}

async fn start() -> Harness {
    start_with(Setup::default()).await
}

async fn start_with(setup: Setup) -> Harness {
    common::init_tracing();
    let rmcp_http = HttpTestServer::start("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let everything_http = if setup.everything_http {
        Some(EverythingHttp::start(0).await)
    } else {
        None
    };
    let everything_sse = if setup.everything_sse {
        Some(EverythingHttp::start_sse(0).await)
    } else {
        None
    };
    let nonce = nonce();
    let toml = config_toml(
        &rmcp_http.url(),
        everything_http.as_ref().map(EverythingHttp::url).as_deref(),
        everything_sse.as_ref().map(EverythingHttp::url).as_deref(),
        &nonce,
    );
    let config = Config::from_toml_str(&toml, "mcp_proxy test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config.clone(), REQUEST_TIMEOUT).await,
        nonce,
        config,
        rmcp_http,
        everything_http,
        everything_sse,
    }
}

impl Harness {
    async fn call(&self, server: &str, tool: &str, arguments: Value) -> reqwest::Response {
        let body = json!({"server": server, "name": tool, "arguments": arguments});
        self.post(paths::MCP_TOOL, &body).await
    }

    /// Calls a tool and returns the text of its (successful) result.
    async fn call_text(&self, server: &str, tool: &str, arguments: Value) -> String {
        let result = ok_json(self.call(server, tool, arguments).await).await;
        assert_ne!(result["isError"], true, "{result}");
        tool_text(&result).to_owned()
    }

    async fn stream(&self, server: &str, tool: &str, arguments: Value) -> reqwest::Response {
        let body = json!({"server": server, "name": tool, "arguments": arguments});
        self.post(paths::MCP_TOOL_STREAM, &body).await
    }

    /// Stops the proxy as a signal would, and waits until it has finished.
    async fn stop_proxy(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), self.proxy.stop())
            .await
            .expect("the proxy did not stop")
            .unwrap();
    }
}

/// Reads the error body, checking it is JSON of the shared shape.
async fn error_of(response: reqwest::Response) -> (u16, ApiError) {
    let reply = ErrorReply::read(response).await;
    reply.assert_json();
    (reply.status, reply.error)
}

/// Checks the headers of a tool stream.
fn assert_stream_headers(response: &reqwest::Response) {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    // As for chat streams: a closed connection is what cancels the upstream call when the
    // browser aborts.
    assert_eq!(response.headers()["connection"], "close");
}

/// Reads a whole tool stream; it must end with exactly one terminal event.
async fn events_of(response: reqwest::Response) -> Vec<McpToolEvent> {
    assert_stream_headers(&response);
    let events = read_tool_events(response).await;
    let terminal = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminal, 1, "{events:?}");
    assert!(events.last().unwrap().is_terminal(), "{events:?}");
    events
}

/// Reads a tool stream until its first event.
async fn first_event(response: &mut reqwest::Response) -> McpToolEvent {
    let mut decoder = SseDecoder::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream ended early");
        if let Some(event) = decoder.push(&chunk).into_iter().next() {
            return serde_json::from_str(&event.data).unwrap();
        }
    }
}

/// The rmcp test server's counters, read through the proxy with its `stats` tool.
async fn stats(h: &Harness, server: &str) -> Value {
    serde_json::from_str(&h.call_text(server, "stats", json!({})).await).unwrap()
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
    })
}

/// `kill -9 PID`.
fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// The live processes whose command line contains `word`.
fn processes_with(word: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(word))
                && !is_zombie(pid)
        })
        .collect()
}

/// Whether the process is still there, as a zombie too: it is gone once its parent has reaped
/// it. (A multi-threaded process such as node shows as a zombie while its other threads still
/// hold its pipes open; only after reaping is it certain that the proxy saw it go.)
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn the_servers_are_listed_by_name_and_transport() {
    let h = start().await;
    let list: McpServerList =
        serde_json::from_value(h.get_json(paths::MCP_SERVERS, &[]).await).unwrap();
    let names: Vec<_> = list
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.transport))
        .collect();
    assert_eq!(
        names,
        [
            ("everything", McpTransport::Stdio),
            ("rmcp", McpTransport::Stdio),
            ("rmcp-http", McpTransport::StreamableHttp),
            ("rmcp-quick", McpTransport::StreamableHttp),
            ("rmcp-down", McpTransport::StreamableHttp),
            ("rmcp-broken", McpTransport::Stdio),
            ("rmcp-idle", McpTransport::Stdio),
        ]
    );
    // Neither commands nor URLs leave the proxy.
    let text = h.get(paths::MCP_SERVERS, &[]).await.text().await.unwrap();
    assert!(
        !text.contains("node") && !text.contains("127.0.0.1"),
        "{text}"
    );
}

#[tokio::test]
async fn tool_lists_are_passed_through_page_by_page() {
    let h = start().await;
    let everything = h
        .get_json(paths::MCP_LIST_TOOLS, &[("server", "everything")])
        .await;
    let names: Vec<&str> = everything["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"echo") && names.contains(&"get-sum"),
        "{names:?}"
    );

    // The rmcp server pages by four; each cursor goes to it and back unchanged.
    let mut pages = vec![
        h.get_json(paths::MCP_LIST_TOOLS, &[("server", "rmcp-http")])
            .await,
    ];
    while let Some(cursor) = pages.last().and_then(|page| page["nextCursor"].as_str()) {
        assert!(pages.len() < 10, "the pages do not end");
        let cursor = cursor.to_owned();
        pages.push(
            h.get_json(
                paths::MCP_LIST_TOOLS,
                &[("server", "rmcp-http"), ("cursor", &cursor)],
            )
            .await,
        );
    }
    let sizes: Vec<usize> = pages
        .iter()
        .map(|page| page["tools"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [4, 4, 1]);
    let all: Vec<&str> = pages
        .iter()
        .flat_map(|page| page["tools"].as_array().unwrap())
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        all,
        [
            "add",
            "announce",
            "echo",
            "env",
            "pid",
            "protocol_version",
            "reveal",
            "slow",
            "stats"
        ]
    );

    // A cursor the server does not know is its error, passed on as a bad request.
    let (status, error) = error_of(
        h.get(
            paths::MCP_LIST_TOOLS,
            &[("server", "rmcp"), ("cursor", "nonsense")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, error.code),
        (400, ErrorCode::BadRequest),
        "{error:?}"
    );
    assert!(error.message.contains("cursor"), "{error:?}");
}

#[tokio::test]
async fn echo_works_over_every_transport() {
    let h = start_with(Setup {
        everything_http: true,
        ..Setup::default()
    })
    .await;
    for server in ["everything", "everything-http", "rmcp", "rmcp-http"] {
        let text = h.call_text(server, "echo", json!({"message": "hi"})).await;
        assert_eq!(text, "Echo: hi", "{server}");
    }
}

#[tokio::test]
async fn tools_compute_with_their_arguments() {
    let h = start().await;
    let sum = h
        .call_text("everything", "get-sum", json!({"a": 2, "b": 3}))
        .await;
    assert!(sum.contains('5'), "{sum}");
    assert_eq!(
        h.call_text("rmcp", "add", json!({"a": 2, "b": 3.5})).await,
        "5.5"
    );
    // Invalid arguments are the tool's own error result, not a failed request.
    let result = ok_json(h.call("rmcp-http", "add", json!({"a": "two"})).await).await;
    assert_eq!(result["isError"], true, "{result}");
}

#[tokio::test]
async fn a_long_running_tool_streams_its_progress_then_its_result() {
    let h = start().await;
    let events = events_of(
        h.stream(
            "everything",
            "trigger-long-running-operation",
            json!({"duration": 1, "steps": 3}),
        )
        .await,
    )
    .await;
    let progress: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            McpToolEvent::Progress {
                progress, total, ..
            } => {
                assert_eq!(*total, Some(3.0));
                Some(*progress)
            }
            _ => None,
        })
        .collect();
    assert!(progress.len() >= 2, "{events:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    let McpToolEvent::Result { result } = events.last().unwrap() else {
        panic!("{events:?}")
    };
    assert_ne!(result.is_error, Some(true));

    for server in ["rmcp", "rmcp-http"] {
        let events = events_of(
            h.stream(server, "slow", json!({"steps": 3, "delay_ms": 30}))
                .await,
        )
        .await;
        assert_eq!(events.len(), 4, "{server}: {events:?}");
        assert!(matches!(
            &events[0],
            McpToolEvent::Progress { progress, message: Some(m), .. } if *progress == 1.0 && m == "step 1 of 3"
        ));
        let McpToolEvent::Result { result } = &events[3] else {
            panic!("{events:?}")
        };
        let text = serde_json::to_value(result).unwrap();
        assert_eq!(tool_text(&text), "done after 3 steps");
    }
}

#[tokio::test]
async fn errors_before_a_stream_starts_are_plain_json() {
    let h = start().await;
    let (status, error) = error_of(h.stream("nowhere", "echo", json!({})).await).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
    let (status, error) = error_of(h.stream("rmcp", "no-such-tool", json!({})).await).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
}

#[tokio::test]
async fn resources_are_listed_and_read() {
    let h = start().await;
    let list = h
        .get_json(paths::MCP_LIST_RESOURCES, &[("server", "everything")])
        .await;
    let uris: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(
        uris.iter()
            .all(|u| u.starts_with("demo://resource/static/document/"))
            && uris.len() >= 2,
        "{uris:?}"
    );
    let read = h
        .post_json(
            paths::MCP_READ_RESOURCE,
            &json!({"server": "everything", "uri": uris[0]}),
        )
        .await;
    assert_eq!(read["contents"][0]["uri"], uris[0]);
    assert!(!read["contents"][0]["text"].as_str().unwrap().is_empty());

    let page = h
        .get_json(
            paths::MCP_LIST_RESOURCES,
            &[("server", "rmcp-http"), ("cursor", "4")],
        )
        .await;
    assert_eq!(page["resources"][0]["uri"], "test://resource/5", "{page}");
    let read = h
        .post_json(
            paths::MCP_READ_RESOURCE,
            &json!({"server": "rmcp", "uri": "test://resource/2"}),
        )
        .await;
    assert_eq!(read["contents"][0]["text"], "content of resource 2");
    // Since 2026-07-28 an unknown resource is "invalid params" (-32602), which the shared
    // mapping makes a bad request; older servers answer -32002, a 404.
    let (status, error) = error_of(
        h.post(
            paths::MCP_READ_RESOURCE,
            &json!({"server": "rmcp", "uri": "test://resource/99"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, error.code),
        (400, ErrorCode::BadRequest),
        "{error:?}"
    );
}

#[tokio::test]
async fn prompts_are_listed_and_filled_in_with_arguments() {
    let h = start().await;
    let list = h
        .get_json(paths::MCP_LIST_PROMPTS, &[("server", "everything")])
        .await;
    let names: Vec<&str> = list["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"simple-prompt") && names.contains(&"args-prompt"),
        "{names:?}"
    );
    let prompt = h
        .post_json(
            paths::MCP_GET_PROMPT,
            &json!({"server": "everything", "name": "args-prompt", "arguments": {"city": "Paris", "state": "Texas"}}),
        )
        .await;
    let text = prompt["messages"][0]["content"]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{prompt}");

    let prompt = h
        .post_json(
            paths::MCP_GET_PROMPT,
            &json!({"server": "rmcp-http", "name": "greeting", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(
        prompt["messages"][0]["content"]["text"],
        "Please greet Ada warmly."
    );
    let first = h
        .get_json(paths::MCP_LIST_PROMPTS, &[("server", "rmcp")])
        .await;
    assert_eq!(first["nextCursor"], "4", "{first}");
}

#[tokio::test]
async fn unknown_servers_and_tools_are_404() {
    let h = start().await;
    let (status, error) = error_of(h.call("nowhere", "echo", json!({})).await).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
    assert_eq!(error.message, "no MCP server named 'nowhere' is configured");
    for path in [
        paths::MCP_LIST_TOOLS,
        paths::MCP_LIST_RESOURCES,
        paths::MCP_LIST_PROMPTS,
    ] {
        let (status, _) = error_of(h.get(path, &[("server", "nowhere")]).await).await;
        assert_eq!(status, 404, "{path}");
    }

    // Unknown tools are answered from the cached tool list, without a tools/call upstream.
    let before = stats(&h, "rmcp").await["calls"].as_u64().unwrap();
    let (status, error) = error_of(h.call("rmcp", "no-such-tool", json!({})).await).await;
    assert_eq!((status, error.code), (404, ErrorCode::NotFound));
    assert!(error.message.contains("no-such-tool"), "{error:?}");
    let after = stats(&h, "rmcp").await["calls"].as_u64().unwrap();
    assert_eq!(after, before, "the server saw no call");
    // server-everything would have answered with an isError result.
    let (status, _) = error_of(h.call("everything", "no-such-tool", json!({})).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_bodies_and_queries_are_400() {
    let h = start().await;
    let bad_bodies = [
        (
            paths::MCP_TOOL,
            json!({"server": "rmcp", "name": "echo", "command": "rm -rf /"}),
        ),
        (paths::MCP_TOOL, json!({"server": "rmcp"})),
        (
            paths::MCP_TOOL,
            json!({"server": "rmcp", "name": "echo", "arguments": [1, 2]}),
        ),
        (paths::MCP_TOOL_STREAM, json!({"name": "echo"})),
        (
            paths::MCP_READ_RESOURCE,
            json!({"server": "rmcp", "url": "x"}),
        ),
        (paths::MCP_GET_PROMPT, json!({"server": "rmcp"})),
    ];
    for (path, body) in bad_bodies {
        let (status, error) = error_of(h.post(path, &body).await).await;
        assert_eq!(
            (status, error.code),
            (400, ErrorCode::BadRequest),
            "{path} {body}"
        );
    }
    let response = h
        .client
        .post(h.url(paths::MCP_TOOL))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 400);
    for query in [
        &[][..],
        &[("server", "rmcp"), ("url", "http://evil.test/mcp")][..],
    ] {
        let (status, error) = error_of(h.get(paths::MCP_LIST_TOOLS, query).await).await;
        assert_eq!(
            (status, error.code),
            (400, ErrorCode::BadRequest),
            "{query:?}"
        );
    }
    // A wrong method is 405, as on every route.
    let response = h.get(paths::MCP_TOOL, &[]).await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn a_call_over_its_timeout_is_504_and_cancelled_upstream() {
    let h = start().await;
    let started = Instant::now();
    let response = h
        .call("rmcp-quick", "slow", json!({"steps": 50, "delay_ms": 100}))
        .await;
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error.code),
        (504, ErrorCode::UpstreamTimeout),
        "{error:?}"
    );
    assert!(error.retryable);
    assert!(error.message.contains("300 ms"), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let counters = h.rmcp_http.counters();
    eventually("the server saw the call cancelled", async || {
        counters.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    // The session is still good.
    assert_eq!(
        h.call_text("rmcp-quick", "echo", json!({"message": "after"}))
            .await,
        "Echo: after"
    );
}

#[tokio::test]
async fn a_client_leaving_a_stream_cancels_the_upstream_call() {
    let h = start().await;
    // stateless HTTP (2026-07-28)
    let mut response = h
        .stream("rmcp-http", "slow", json!({"steps": 100, "delay_ms": 50}))
        .await;
    assert_stream_headers(&response);
    assert!(matches!(
        first_event(&mut response).await,
        McpToolEvent::Progress { .. }
    ));
    drop(response);
    let counters = h.rmcp_http.counters();
    eventually("the HTTP server saw the call cancelled", async || {
        counters.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    // A 2026-07-28 request has no session to post a notice in: the closed exchange is the
    // whole cancellation.
    assert_eq!(counters.cancel_notices.load(Ordering::SeqCst), 0);

    // stdio: the server is told, with `notifications/cancelled`.
    let mut response = h
        .stream("rmcp", "slow", json!({"steps": 100, "delay_ms": 50}))
        .await;
    assert!(matches!(
        first_event(&mut response).await,
        McpToolEvent::Progress { .. }
    ));
    drop(response);
    eventually("the stdio server saw the call cancelled", async || {
        let stats = stats(&h, "rmcp").await;
        stats["cancelled"] == 1 && stats["cancel_notices"] == 1
    })
    .await;
}

#[tokio::test]
async fn one_session_serves_every_call() {
    let h = start().await;
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(h.call_text("rmcp", "pid", json!({})).await);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "one process: {pids:?}");
    assert_eq!(stats(&h, "rmcp").await["sessions"], 1);

    let calls: Vec<_> = (0..10)
        .map(|i| h.call_text("rmcp-http", "echo", json!({"message": i.to_string()})))
        .collect();
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers[7], "Echo: 7");
    assert_eq!(h.rmcp_http.counters().sessions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_killed_stdio_server_is_restarted_by_the_next_call() {
    let h = start().await;
    let first: u32 = h.call_text("rmcp", "pid", json!({})).await.parse().unwrap();
    kill(first);
    // Once it has died and the proxy has seen it go (a request written to a dying process may
    // have been read, and a tool call is not repeated then), the call that finds the session dead
    // starts a new server and still succeeds.
    eventually("the server died", async || !process_exists(first)).await;
    let second: u32 = h.call_text("rmcp", "pid", json!({})).await.parse().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        h.call_text("rmcp", "echo", json!({"message": "x"})).await,
        "Echo: x"
    );

    // The same with server-everything: the restart is invisible to the client.
    assert_eq!(
        h.call_text("everything", "echo", json!({"message": "a"}))
            .await,
        "Echo: a"
    );
    let pid = processes_with(&h.nonce);
    assert_eq!(pid.len(), 1, "this harness's server-everything: {pid:?}");
    kill(pid[0]);
    eventually("server-everything died", async || !process_exists(pid[0])).await;
    assert_eq!(
        h.call_text("everything", "echo", json!({"message": "b"}))
            .await,
        "Echo: b"
    );
}

#[tokio::test]
async fn an_http_session_the_server_forgot_is_opened_again() {
    let mut h = start_with(Setup {
        everything_http: true,
        ..Setup::default()
    })
    .await;
    assert_eq!(
        h.call_text("everything-http", "echo", json!({"message": "1"}))
            .await,
        "Echo: 1"
    );
    // A restarted server knows no sessions; it answers the old one with 400 (not 404).
    let port = h.everything_http.as_ref().unwrap().port;
    h.everything_http.take().unwrap().stop().await;
    h.everything_http = Some(EverythingHttp::start(port).await);
    assert_eq!(
        h.call_text("everything-http", "echo", json!({"message": "2"}))
            .await,
        "Echo: 2"
    );
}

#[tokio::test]
async fn an_idle_session_is_closed_and_reopened_on_demand() {
    let h = start().await;
    let first: u32 = h
        .call_text("rmcp-idle", "pid", json!({}))
        .await
        .parse()
        .unwrap();
    eventually("the idle server was stopped", async || {
        !process_exists(first)
    })
    .await;
    let second: u32 = h
        .call_text("rmcp-idle", "pid", json!({}))
        .await
        .parse()
        .unwrap();
    assert_ne!(first, second);
}

#[tokio::test]
async fn stdio_servers_stop_with_the_proxy() {
    let mut h = start().await;
    let rmcp: u32 = h.call_text("rmcp", "pid", json!({})).await.parse().unwrap();
    assert!(process_exists(rmcp));
    h.stop_proxy().await;
    eventually("the stdio server exited", async || !process_exists(rmcp)).await;
}

#[tokio::test]
async fn protocol_versions_are_negotiated_per_server() {
    let h = start().await;
    // The rmcp server speaks 2026-07-28 (server/discover, no handshake), over both transports.
    for server in ["rmcp", "rmcp-http"] {
        let version = h.call_text(server, "protocol_version", json!({})).await;
        assert_eq!(version, "2026-07-28", "{server}");
    }
    // server-everything does not: the proxy falls back to initialize.
    let pool = McpPool::new(&h.config.mcp_servers);
    let anyone = Identity::anonymous();
    assert_eq!(
        pool.protocol_version(&anyone, "everything").await.unwrap(),
        "2025-11-25"
    );
    assert_eq!(
        pool.protocol_version(&anyone, "rmcp-http").await.unwrap(),
        "2026-07-28"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn a_stdio_server_gets_only_the_environment_it_is_given() {
    let h = start().await;
    let env = async |name: &str| h.call_text("rmcp", "env", json!({"name": name})).await;
    assert_eq!(
        env("SWITCHYARD_TEST_GREETING").await,
        "hello from the config"
    );
    let path = std::env::var("PATH").unwrap();
    assert_eq!(env("SWITCHYARD_TEST_PATH_COPY").await, path);
    // What programs need is passed through...
    assert_eq!(env("PATH").await, path);
    // ...and nothing else of the proxy's environment (which holds the providers' keys).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it for tests");
    assert!(!manifest.is_empty());
    assert_eq!(env("CARGO_MANIFEST_DIR").await, "");
}

#[tokio::test]
async fn the_legacy_sse_transport_carries_calls_progress_and_lists() {
    let mut h = start_with(Setup {
        everything_sse: true,
        ..Setup::default()
    })
    .await;
    let server = "everything-sse";
    assert_eq!(
        h.call_text(server, "echo", json!({"message": "sse"})).await,
        "Echo: sse"
    );
    let events = events_of(
        h.stream(
            server,
            "trigger-long-running-operation",
            json!({"duration": 1, "steps": 2}),
        )
        .await,
    )
    .await;
    assert!(
        matches!(events[0], McpToolEvent::Progress { .. }),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(McpToolEvent::Result { .. })),
        "{events:?}"
    );
    let prompts = h
        .get_json(paths::MCP_LIST_PROMPTS, &[("server", server)])
        .await;
    assert!(
        !prompts["prompts"].as_array().unwrap().is_empty(),
        "{prompts}"
    );

    // The session lives as long as the event stream: a restarted server gets a new one.
    let port = h.everything_sse.as_ref().unwrap().port;
    h.everything_sse.take().unwrap().stop().await;
    h.everything_sse = Some(EverythingHttp::start_sse(port).await);
    let mut answer = None;
    // The proxy notices the stream's end a moment after the server is gone.
    eventually("the SSE session was reopened", async || {
        let response = h.call(server, "echo", json!({"message": "again"})).await;
        if response.status() == 200 {
            answer = Some(tool_text(&response.json::<Value>().await.unwrap()).to_owned());
        }
        answer.is_some()
    })
    .await;
    assert_eq!(answer.as_deref(), Some("Echo: again"));
}

#[tokio::test]
async fn a_tool_added_without_notice_is_found_after_a_moment() {
    let h = start().await;
    let (status, _) = error_of(h.call("rmcp", "revealed", json!({})).await).await;
    assert_eq!(status, 404, "not listed yet");
    assert_eq!(h.call_text("rmcp", "reveal", json!({})).await, "revealed");
    // The server does not announce the change (2026-07-28 only does on a listen stream), so the
    // proxy looks its list up again before calling a tool unknown, at most once a second.
    eventually("the new tool is callable", async || {
        h.call("rmcp", "revealed", json!({})).await.status() == 200
    })
    .await;
}

#[tokio::test]
async fn unreachable_and_crashing_servers_are_502_with_backoff() {
    let h = start().await;
    let (status, error) = error_of(h.call("rmcp-down", "echo", json!({})).await).await;
    assert_eq!(
        (status, error.code),
        (502, ErrorCode::UpstreamError),
        "{error:?}"
    );
    assert!(error.retryable);
    assert_eq!(error.message, "could not reach MCP server 'rmcp-down'");
    // Within the backoff window the last error is answered at once, with a delay to wait.
    let response = h.call("rmcp-down", "echo", json!({})).await;
    let retry_after = response.headers().get("retry-after").cloned();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 502);
    assert_eq!(error.retry_after, Some(1), "{error:?}");
    assert_eq!(retry_after.unwrap(), "1");
    assert!(
        error
            .message
            .starts_with("MCP server 'rmcp-down' is failing to start"),
        "{error:?}"
    );

    let (status, error) = error_of(h.call("rmcp-broken", "echo", json!({})).await).await;
    assert_eq!(
        (status, error.code),
        (502, ErrorCode::UpstreamError),
        "{error:?}"
    );
    assert!(
        error.message.contains("exited during start-up"),
        "{error:?}"
    );
    // Other servers are not affected.
    assert_eq!(
        h.call_text("rmcp", "echo", json!({"message": "ok"})).await,
        "Echo: ok"
    );
}

/// A stdio server that fails on start until it is repaired: every start appends a line to
/// `spawns`, and the script exits 1 until the file `repaired` exists, then runs the rmcp test
/// server.
struct FlakyServer {
    dir: tempfile::TempDir,
}

impl FlakyServer {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "echo start >> '{spawns}'\n[ -e '{repaired}' ] || exit 1\nexec '{RMCP_SERVER}' --stdio\n",
            spawns = dir.path().join("spawns").display(),
            repaired = dir.path().join("repaired").display(),
        );
        std::fs::write(dir.path().join("server.sh"), script).unwrap();
        FlakyServer { dir }
    }

    /// The proxy's configuration entry for it.
    fn toml(&self, name: &str) -> String {
        format!(
            "[[mcp_servers]]\nname = \"{name}\"\ntransport = \"stdio\"\ncommand = \"/bin/sh\"\nargs = [{:?}]\n",
            self.dir.path().join("server.sh").display().to_string()
        )
    }

    /// How many times it was started.
    fn spawns(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("spawns"))
            .map_or(0, |text| text.lines().count())
    }

    fn repair(&self) {
        std::fs::write(self.dir.path().join("repaired"), "").unwrap();
    }
}

/// The value of the breaker gauge for `server` in the proxy's metrics.
async fn breaker_open(proxy: &LoopbackProxy, server: &str) -> String {
    let text = proxy.get("/metrics", &[]).await.text().await.unwrap();
    let series = format!("switchyard_mcp_breaker_open{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_owned()
}

/// The delay, in seconds, that a breaker's error names ("... tried again in 0.4 s").
fn retried_in(error: &ApiError) -> f64 {
    let (_, rest) = error
        .message
        .split_once("tried again in ")
        .unwrap_or_else(|| panic!("no delay in {error:?}"));
    rest.trim_end_matches(" s").parse().unwrap()
}

#[tokio::test]
async fn a_server_failing_to_start_opens_a_breaker_that_closes_when_it_recovers() {
    common::init_tracing();
    let flaky = FlakyServer::new();
    let config = Config::from_toml_str(&flaky.toml("flaky"), "breaker test").unwrap();
    let proxy = LoopbackProxy::start(config, REQUEST_TIMEOUT).await;
    let call = async || {
        let body = json!({"server": "flaky", "name": "echo", "arguments": {"message": "hi"}});
        proxy.post(paths::MCP_TOOL, &body).await
    };
    assert_eq!(breaker_open(&proxy, "flaky").await, "0");

    // The first call starts the server, which exits.
    let (status, error) = error_of(call().await).await;
    assert_eq!((status, error.code), (502, ErrorCode::UpstreamError));
    assert!(
        error.message.contains("exited during start-up"),
        "{error:?}"
    );
    assert_eq!(flaky.spawns(), 1);

    // The breaker is open: calls are answered at once, say why and when, and start nothing.
    for _ in 0..5 {
        let response = call().await;
        assert_eq!(response.headers()["retry-after"], "1");
        let (status, error) = error_of(response).await;
        assert_eq!((status, error.code), (502, ErrorCode::UpstreamError));
        assert!(error.retryable);
        assert!(
            error
                .message
                .starts_with("MCP server 'flaky' is failing to start (1 failed attempts in a row"),
            "{error:?}"
        );
        assert!(
            error.message.contains("exited during start-up"),
            "{error:?}"
        );
        assert!(retried_in(&error) <= 0.25, "{error:?}");
    }
    assert_eq!(flaky.spawns(), 1, "no start while the breaker is open");
    assert_eq!(breaker_open(&proxy, "flaky").await, "1");

    // After the delay one call tries again; it fails, and the next delay is twice as long.
    let mut failures = 1;
    while failures < 3 {
        let (_, error) = error_of(call().await).await;
        if error.message.contains("is failing to start") {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        failures += 1;
        assert_eq!(flaky.spawns(), failures);
        let (_, error) = error_of(call().await).await;
        assert!(
            error
                .message
                .contains(&format!("({failures} failed attempts in a row")),
            "{error:?}"
        );
        // 0.25 s doubled per failure; the call above came a moment after the failed start.
        let delay = 0.25 * f64::from(1 << (failures - 1));
        let named = retried_in(&error);
        assert!(
            named > delay / 2.0 && named <= delay,
            "{named} for {delay}: {error:?}"
        );
    }
    assert_eq!(flaky.spawns(), 3);

    // Repaired: after the delay the next call starts it and succeeds, and the breaker closes.
    flaky.repair();
    let started = Instant::now();
    let answer = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the breaker never closed"
        );
        let response = call().await;
        if response.status() == 200 {
            break ok_json(response).await;
        }
        let (_, error) = error_of(response).await;
        assert!(error.message.contains("is failing to start"), "{error:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(tool_text(&answer), "Echo: hi");
    assert_eq!(flaky.spawns(), 4);
    assert_eq!(breaker_open(&proxy, "flaky").await, "0");
    for _ in 0..3 {
        assert_eq!(
            ok_json(call().await).await["content"][0]["text"],
            "Echo: hi"
        );
    }
    assert_eq!(flaky.spawns(), 4, "later calls use the running server");
}
