//! A table of bad and hostile requests against the real proxy (in process, on loopback) in front
//! of real upstreams: the test LLM (`fake`, which needs the upstream key), the in-process `mock`
//! (also served at `/mock/mock/v1`), the built-in `demo` MCP server (also served at `/mcp/demo`),
//! and the rmcp test server over Streamable HTTP (`rmcp`, whose counters are read) and over stdio
//! (`rmcp-stdio`).
//!
//! Each row is one request and the answer it must get: status, and the body's shape and error
//! code. After the table: none of the refused requests reached an upstream (the test LLM counted
//! no chat request beyond the rows that are meant to reach it, the rmcp server no tool call), and
//! the upstream key appears in no answer and in no line the proxy logged (at trace level). The
//! authentication rows run against the same setup with `[[keys]]` and `[auth.jwt]` added, and
//! also check that no client key or token comes back.
//!
//! Requests an HTTP client will not send (dot segments, CR or LF in a header, bytes that are not
//! text, two `Host`s, oversized headers) are written on the socket as they are.

use std::io;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::{ErrorBody, paths};
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};
use switchyard_tests::mcp_server::HttpTestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::LoopbackProxy;

/// The test LLM's key, held by the proxy only. It must never come back to a client or reach a log.
const UPSTREAM_KEY: &str = "sk-hostile-upstream-7d3e91c4b6";
/// The proxy's body limit in these tests.
const MAX_BODY: usize = 64 * 1024;
/// The one page origin the proxy is configured to allow.
const PAGE_ORIGIN: &str = "http://app.localhost:5173";
/// Bounds every request, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");

// ---------------------------------------------------------------------------------------------
// The table

/// How a row's request travels.
#[derive(Debug, Clone)]
enum Wire {
    /// Through an ordinary HTTP client.
    Client {
        method: Method,
        /// The path with its query.
        path: String,
        headers: Vec<(String, String)>,
        /// The content type (if any) and the bytes of the body.
        body: Option<(Option<&'static str>, Vec<u8>)>,
    },
    /// Written on the socket byte for byte, for what a client refuses to send.
    Raw {
        /// The request line and any header lines, each ending in CRLF.
        head: Vec<u8>,
        /// The `Host` value; the proxy's own address when `None`.
        host: Option<Vec<u8>>,
        body: Vec<u8>,
    },
}

/// What the body of a refusal must look like.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// The shared error body, `{"error":{"code","message",...}}`, with this code.
    Shared(&'static str),
    /// OpenAI's error body: the mock's OpenAI-compatible mount speaks to OpenAI clients.
    OpenAi,
    /// Refused by the MCP endpoint itself (rmcp's Streamable HTTP server): the status is the
    /// protocol's; the body is rmcp's.
    Mcp,
    /// Refused by the HTTP server before any route runs: only the status is the proxy's.
    Http,
    /// A JSON-RPC error response with this code, from the MCP endpoint.
    JsonRpc(i64),
    /// A tool result with `isError: true`: the tool refused its arguments, as MCP asks.
    ToolError,
    /// Anything, as long as it is not a failure of the proxy (a stream reports errors inside).
    Any,
}

/// Which upstream a row is meant to reach.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reach {
    /// None: the proxy refuses it itself.
    Nothing,
    /// The test LLM, once (an unknown model is the upstream's to refuse).
    Llm,
    /// An MCP server, for a listing or a lookup, never a tool call.
    McpLookup,
}

#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    wire: Wire,
    status: u16,
    shape: Shape,
    reach: Reach,
}

impl Row {
    fn client(name: &'static str, method: Method, path: impl Into<String>) -> Self {
        Row {
            name,
            wire: Wire::Client {
                method,
                path: path.into(),
                headers: Vec::new(),
                body: None,
            },
            status: 0,
            shape: Shape::Http,
            reach: Reach::Nothing,
        }
    }

    fn get(name: &'static str, path: impl Into<String>) -> Self {
        Self::client(name, Method::GET, path)
    }

    /// A JSON body.
    fn post(name: &'static str, path: impl Into<String>, body: Value) -> Self {
        Self::post_bytes(
            name,
            path,
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
        )
    }

    fn post_bytes(
        name: &'static str,
        path: impl Into<String>,
        content_type: Option<&'static str>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        let mut row = Self::client(name, Method::POST, path);
        if let Wire::Client { body: b, .. } = &mut row.wire {
            *b = Some((content_type, body.into()));
        }
        row
    }

    /// `request_line` (e.g. `GET /x HTTP/1.1`) on the socket, with `Host` and
    /// `Connection: close` added.
    fn raw(name: &'static str, request_line: impl AsRef<[u8]>) -> Self {
        let mut head = request_line.as_ref().to_vec();
        head.extend_from_slice(b"\r\n");
        Row {
            wire: Wire::Raw {
                head,
                host: None,
                body: Vec::new(),
            },
            ..Self::get(name, "")
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        match &mut self.wire {
            Wire::Client { headers, .. } => headers.push((name.to_owned(), value.into())),
            Wire::Raw { head, .. } => {
                head.extend_from_slice(format!("{name}: {}\r\n", value.into()).as_bytes());
            }
        }
        self
    }

    /// A header line as bytes (raw rows only): what no client would send.
    fn raw_line(mut self, line: impl AsRef<[u8]>) -> Self {
        let Wire::Raw { head, .. } = &mut self.wire else {
            panic!("{}: raw header lines need a raw row", self.name);
        };
        head.extend_from_slice(line.as_ref());
        head.extend_from_slice(b"\r\n");
        self
    }

    /// The `Host` to send (raw rows only).
    fn host(mut self, value: impl AsRef<[u8]>) -> Self {
        let Wire::Raw { host, .. } = &mut self.wire else {
            panic!("{}: set Host with .header on client rows", self.name);
        };
        *host = Some(value.as_ref().to_vec());
        self
    }

    /// A body (raw rows only), sent with its `Content-Length`.
    fn raw_body(mut self, content_type: &str, bytes: impl AsRef<[u8]>) -> Self {
        self = self.raw_line(format!("Content-Type: {content_type}"));
        let Wire::Raw { body, .. } = &mut self.wire else {
            unreachable!()
        };
        *body = bytes.as_ref().to_vec();
        self
    }

    fn expect(mut self, status: u16, shape: Shape) -> Self {
        self.status = status;
        self.shape = shape;
        self
    }

    fn reaches(mut self, reach: Reach) -> Self {
        self.reach = reach;
        self
    }
}

fn shared(code: &'static str) -> Shape {
    Shape::Shared(code)
}

/// A chat request for `model` that the proxy would otherwise forward.
fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// `chat("fake/echo")` with `key` set to `value` at the top level.
fn chat_with(key: &str, value: Value) -> Value {
    let mut body = chat("fake/echo");
    body[key] = value;
    body
}

fn tool(server: &str, name: &str, arguments: Value) -> Value {
    json!({"server": server, "name": name, "arguments": arguments})
}

/// A JSON-RPC request to a built-in MCP endpoint, as a page in direct mode sends it.
fn mcp_post(name: &'static str, body: impl Into<Vec<u8>>) -> Row {
    Row::post_bytes(name, "/mcp/demo", Some("application/json"), body)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
}

/// `[[[...]]]` nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Every row the proxy must refuse, by kind of attack.
fn table() -> Vec<Row> {
    let big = "x".repeat(MAX_BODY + 1);
    vec![
        // --- Unknown upstreams: a client only names what the configuration names.
        Row::post("unknown provider", paths::LLM_CHAT, chat("nope/echo"))
            .expect(404, shared("not_found")),
        Row::post("model id without a provider", paths::LLM_CHAT, chat("echo"))
            .expect(400, shared("bad_request")),
        Row::post("empty model id", paths::LLM_STREAM, chat(""))
            .expect(400, shared("bad_request")),
        Row::post(
            "unknown model: the upstream says so",
            paths::LLM_CHAT,
            chat("fake/no-such-model"),
        )
        .expect(404, shared("not_found"))
        .reaches(Reach::Llm),
        Row::get("unknown MCP server", "/api/mcp/listTools?server=nope")
            .expect(404, shared("not_found")),
        Row::post(
            "unknown MCP server, tool call",
            paths::MCP_TOOL,
            tool("nope", "echo", json!({})),
        )
        .expect(404, shared("not_found")),
        Row::post(
            "unknown tool on the rmcp server",
            paths::MCP_TOOL,
            tool("rmcp", "rm_rf", json!({})),
        )
        .expect(404, shared("not_found"))
        .reaches(Reach::McpLookup),
        Row::post(
            "unknown tool on the built-in server, streamed",
            paths::MCP_TOOL_STREAM,
            tool("demo", "shell", json!({"cmd": "id"})),
        )
        .expect(404, shared("not_found")),
        Row::post(
            "unknown prompt",
            paths::MCP_GET_PROMPT,
            json!({"server": "demo", "name": "nope"}),
        )
        .expect(400, shared("bad_request"))
        .reaches(Reach::McpLookup),
        Row::get("unknown mock mount", "/mock/nope/v1/models").expect(404, shared("not_found")),
        // --- Upstream URLs, commands and keys chosen by the client: refused, never ignored.
        Row::post(
            "base_url in a chat request",
            paths::LLM_CHAT,
            chat_with("base_url", json!("http://169.254.169.254/latest")),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "api_key in a chat request",
            paths::LLM_STREAM,
            chat_with("api_key", json!("sk-attacker")),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "a provider entry in a chat request",
            paths::LLM_CHAT,
            chat_with(
                "provider",
                json!({"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}),
            ),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "a URL as the model id",
            paths::LLM_CHAT,
            chat("http://127.0.0.1:1/v1"),
        )
        .expect(404, shared("not_found")),
        Row::post(
            "url beside a tool call",
            paths::MCP_TOOL,
            json!({"server": "rmcp", "name": "echo", "arguments": {"message": "x"}, "url": "http://127.0.0.1:1/mcp"}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "command beside a tool call on a stdio server",
            paths::MCP_TOOL,
            json!({"server": "rmcp-stdio", "name": "echo", "arguments": {"message": "x"}, "command": "/bin/sh", "args": ["-c", "id"]}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "transport and headers beside a streamed tool call",
            paths::MCP_TOOL_STREAM,
            json!({"server": "rmcp", "name": "echo", "arguments": {"message": "x"}, "transport": "stdio", "headers": {"Authorization": "Bearer x"}}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "a command as the server name",
            paths::MCP_TOOL,
            tool("/bin/sh", "echo", json!({"message": "x"})),
        )
        .expect(404, shared("not_found")),
        Row::get(
            "a URL as the server name",
            "/api/mcp/listResources?server=http%3A%2F%2F127.0.0.1%3A1%2Fmcp",
        )
        .expect(404, shared("not_found")),
        Row::get(
            "url beside a listing",
            "/api/mcp/listTools?server=rmcp&url=http%3A%2F%2F127.0.0.1%3A1%2Fmcp",
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "url beside a resource read",
            paths::MCP_READ_RESOURCE,
            json!({"server": "demo", "uri": "notes://index", "url": "http://127.0.0.1:1/"}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "command beside a prompt",
            paths::MCP_GET_PROMPT,
            json!({"server": "demo", "name": "summarize_notes", "arguments": {"topic": "rust"}, "command": "id"}),
        )
        .expect(400, shared("bad_request")),
        // Since 2026-07-28 an unknown resource is "invalid params" (-32602), hence 400.
        Row::post(
            "a file URI is the server's to refuse, never the proxy's to open",
            paths::MCP_READ_RESOURCE,
            json!({"server": "demo", "uri": "file:///etc/passwd"}),
        )
        .expect(400, shared("bad_request"))
        .reaches(Reach::McpLookup),
        // --- Bodies: too large, not JSON, not the declared type.
        Row::post(
            "oversize chat body",
            paths::LLM_CHAT,
            json!({"model": "fake/echo", "messages": [{"role": "user", "content": big}]}),
        )
        .expect(413, shared("payload_too_large")),
        Row::post(
            "huge tool arguments",
            paths::MCP_TOOL,
            tool("rmcp", "echo", json!({"message": big})),
        )
        .expect(413, shared("payload_too_large")),
        Row::post(
            "a long expression under the body limit: the tool refuses it",
            paths::MCP_TOOL,
            tool("demo", "calculate", json!({"expression": "1+".repeat(20_000) + "1"})),
        )
        .expect(200, Shape::ToolError),
        Row::post(
            "parentheses nested a thousand deep: the tool refuses them",
            paths::MCP_TOOL,
            tool(
                "demo",
                "calculate",
                json!({"expression": format!("{}1{}", "(".repeat(499), ")".repeat(499))}),
            ),
        )
        .expect(200, Shape::ToolError),
        Row::post(
            "arguments that do not fit the schema",
            paths::MCP_TOOL_STREAM,
            tool("demo", "search_notes", json!({"query": {"$ne": null}, "limit": 1e12})),
        )
        .expect(200, Shape::Any),
        Row::post_bytes(
            "truncated JSON",
            paths::LLM_CHAT,
            Some("application/json"),
            r#"{"model": "fake/echo", "messages": ["#,
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "JSON followed by more",
            paths::LLM_CHAT,
            Some("application/json"),
            format!("{} {{\"model\":\"fake/echo\"}}", chat("fake/echo")),
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "the model named twice (parsers that disagree on which wins)",
            paths::LLM_CHAT,
            Some("application/json"),
            r#"{"model": "mock/x", "model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}"#,
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "nesting deep enough to exhaust a recursive parser",
            paths::MCP_TOOL,
            Some("application/json"),
            format!(
                r#"{{"server": "rmcp", "name": "echo", "arguments": {{"message": {}}}}}"#,
                nested(10_000)
            ),
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "bytes that are not UTF-8",
            paths::LLM_CHAT,
            Some("application/json"),
            b"{\"model\": \"fake/echo\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}"
                .to_vec(),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "a number out of range",
            paths::LLM_CHAT,
            chat_with("temperature", json!(1e300)),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "no messages",
            paths::LLM_CHAT,
            json!({"model": "fake/echo", "messages": []}),
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "JSON sent as text/plain",
            paths::LLM_CHAT,
            Some("text/plain"),
            chat("fake/echo").to_string(),
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "JSON sent with no content type",
            paths::MCP_TOOL,
            None,
            tool("rmcp", "echo", json!({"message": "x"})).to_string(),
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "a form instead of JSON",
            paths::LLM_STREAM,
            Some("application/x-www-form-urlencoded"),
            "model=fake%2Fecho&messages=hi",
        )
        .expect(400, shared("bad_request")),
        Row::post_bytes(
            "multipart instead of JSON",
            paths::MCP_TOOL,
            Some("multipart/form-data; boundary=x"),
            "--x\r\nContent-Disposition: form-data; name=\"server\"\r\n\r\nrmcp\r\n--x--\r\n",
        )
        .expect(400, shared("bad_request")),
        Row::get("a listing without its server", paths::MCP_LIST_TOOLS)
            .expect(400, shared("bad_request")),
        // --- Header injection: CR/LF where a client can put them, and oversized headers.
        Row::post(
            "CR/LF in a tool name (it would become the Mcp-Name header upstream)",
            paths::MCP_TOOL,
            tool("rmcp", "echo\r\nX-Injected: 1", json!({"message": "x"})),
        )
        .expect(404, shared("not_found"))
        .reaches(Reach::McpLookup),
        Row::post(
            "CR/LF in a resource URI (it would become the Mcp-Name header upstream)",
            paths::MCP_READ_RESOURCE,
            json!({"server": "rmcp", "uri": "test://x\r\nX-Injected: 1"}),
        )
        .expect(400, shared("bad_request"))
        .reaches(Reach::McpLookup),
        Row::raw("CR/LF inside a header value", "GET /healthz HTTP/1.1")
            .raw_line("X-Request-Id: a\rX-Injected: 1")
            .expect(400, Shape::Http),
        Row::raw("a header line without a colon", "GET /healthz HTTP/1.1")
            .raw_line("X-Injected 1")
            .expect(400, Shape::Http),
        Row::raw("a header of 512 KiB", "GET /healthz HTTP/1.1")
            .raw_line(format!("X-Big: {}", "a".repeat(512 * 1024)))
            .expect(431, Shape::Http),
        Row::raw("two hundred headers", "GET /healthz HTTP/1.1")
            .raw_line(
                (0..200)
                    .map(|i| format!("X-H{i}: {i}"))
                    .collect::<Vec<_>>()
                    .join("\r\n"),
            )
            .expect(431, Shape::Http),
        Row::raw(
            "CR/LF in the path (response splitting through the 404 message)",
            "GET /api/nope%0d%0aX-Injected:%201 HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        // --- Path traversal, literal and encoded, on every route with a path.
        Row::raw("dot segments under /assets", "GET /assets/../../Cargo.toml HTTP/1.1")
            .expect(404, shared("not_found")),
        Row::raw(
            "encoded slashes under /assets",
            "GET /assets/..%2f..%2fCargo.toml HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        Row::raw(
            "encoded dots under /assets",
            "GET /assets/%2e%2e/%2e%2e/Cargo.toml HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        Row::raw(
            "doubly encoded dots under /assets",
            "GET /assets/%252e%252e/%252e%252e/Cargo.toml HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        Row::raw(
            "backslashes under /assets",
            "GET /assets/..%5c..%5cCargo.toml HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        Row::raw("an absolute path under /assets", "GET /assets//etc/passwd HTTP/1.1")
            .expect(404, shared("not_found")),
        Row::raw("an encoded slash after /mcp/", "POST /mcp/..%2fdemo HTTP/1.1")
            .raw_body("application/json", "{}")
            .expect(404, shared("not_found")),
        Row::raw("dot segments after /mcp/demo", "POST /mcp/demo/../demo HTTP/1.1")
            .raw_body("application/json", "{}")
            .expect(404, shared("not_found")),
        Row::raw(
            "dot segments out of the mock mount",
            "GET /mock/mock/v1/../../../api/llm/models HTTP/1.1",
        )
        .expect(404, Shape::OpenAi),
        Row::raw(
            "an encoded slash in the mock's name",
            "GET /mock/..%2fmock/v1/models HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        Row::raw("dot segments under /api", "GET /api/mcp/../llm/models HTTP/1.1")
            .expect(404, shared("not_found")),
        Row::raw(
            "dot segments under /demo",
            "GET /demo/../../proxy-native/Cargo.toml HTTP/1.1",
        )
        .expect(404, shared("not_found")),
        // --- Host: only loopback names and `allowed_hosts` (DNS rebinding).
        Row::post("a foreign Host", paths::LLM_CHAT, chat("fake/echo"))
            .header("host", "rebound.example:3001")
            .expect(403, shared("forbidden")),
        Row::post(
            "a Host that only begins with localhost",
            paths::MCP_TOOL,
            tool("rmcp", "echo", json!({"message": "x"})),
        )
        .header("host", "localhost.rebound.example")
        .expect(403, shared("forbidden")),
        Row::raw("a Host that is not text", "GET /api/llm/models HTTP/1.1")
            .host(b"127.0.0.1\xff.rebound.example")
            .expect(403, shared("forbidden")),
        Row::raw("an empty Host", "GET /api/llm/models HTTP/1.1")
            .host("")
            .expect(403, shared("forbidden")),
        Row::raw("a foreign Host on the MCP endpoint", "POST /mcp/demo HTTP/1.1")
            .host("rebound.example")
            .raw_body("application/json", "{}")
            .expect(403, shared("forbidden")),
        // RFC 9112, 3.2: two Host lines are refused, and an absolute-form target names the host.
        Row::raw(
            "two Host headers, the second foreign",
            "GET /api/llm/models HTTP/1.1",
        )
        .raw_line("Host: localhost")
        .host("rebound.example")
        .expect(400, shared("bad_request")),
        Row::raw(
            "an absolute-form target naming a foreign host",
            "GET http://rebound.example/api/llm/models HTTP/1.1",
        )
        .expect(403, shared("forbidden")),
        // --- Origin: a page on another origin may not use the proxy at all.
        Row::post("a foreign Origin", paths::LLM_CHAT, chat("fake/echo"))
            .header("origin", "http://evil.example")
            .expect(403, shared("forbidden")),
        Row::post(
            "a foreign Origin calling a tool",
            paths::MCP_TOOL,
            tool("rmcp", "echo", json!({"message": "x"})),
        )
        .header("origin", "http://evil.example")
        .expect(403, shared("forbidden")),
        Row::post(
            "the null Origin (sandboxed frames, file: pages)",
            paths::MCP_TOOL_STREAM,
            tool("rmcp", "echo", json!({"message": "x"})),
        )
        .header("origin", "null")
        .expect(403, shared("forbidden")),
        Row::post(
            "the proxy's own origin over https (another origin)",
            paths::LLM_STREAM,
            chat("fake/echo"),
        )
        .header("origin", "https://127.0.0.1")
        .expect(403, shared("forbidden")),
        Row::get("a foreign Origin reading the servers", paths::MCP_SERVERS)
            .header("origin", "http://localhost.evil.example")
            .expect(403, shared("forbidden")),
        mcp_post(
            "a foreign Origin on the MCP endpoint",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .header("origin", "http://evil.example")
        .expect(403, shared("forbidden")),
        // --- Methods and routes.
        Row::get("GET on the chat route", paths::LLM_CHAT)
            .expect(405, shared("method_not_allowed")),
        Row::client("PUT on the tool route", Method::PUT, paths::MCP_TOOL)
            .expect(405, shared("method_not_allowed")),
        Row::client("DELETE on the health route", Method::DELETE, paths::HEALTH)
            .expect(405, shared("method_not_allowed")),
        Row::post("POST on the model list", paths::LLM_MODELS, json!({}))
            .expect(405, shared("method_not_allowed")),
        Row::client("TRACE on the servers list", Method::TRACE, paths::MCP_SERVERS)
            .expect(405, shared("method_not_allowed")),
        Row::get("an unknown API route", "/api/llm/completions").expect(404, shared("not_found")),
        Row::get("a dotfile", "/.env").expect(404, shared("not_found")),
        Row::post(
            "an MCP method as a path",
            "/api/mcp/tools/call",
            tool("rmcp", "echo", json!({})),
        )
        .expect(404, shared("not_found")),
        // --- JSON-RPC garbage on the built-in MCP endpoint.
        // Up to 2025-11-25 a JSON-RPC error travels in a 200.
        mcp_post(
            "an unknown JSON-RPC method",
            r#"{"jsonrpc":"2.0","id":1,"method":"shell/exec","params":{"command":"id"}}"#,
        )
        .expect(200, Shape::JsonRpc(-32601)),
        mcp_post(
            "an unknown tool on the MCP endpoint",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"shell","arguments":{"cmd":"id"}}}"#,
        )
        .expect(200, Shape::JsonRpc(-32602)),
        mcp_post(
            "oversize JSON-RPC on the MCP endpoint",
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"calculate","arguments":{{"expression":"{big}"}}}}}}"#
            ),
        )
        .expect(413, Shape::Mcp),
        Row::post_bytes(
            "JSON-RPC as text/plain on the MCP endpoint",
            "/mcp/demo",
            Some("text/plain"),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .header("accept", "application/json, text/event-stream")
        .expect(415, Shape::Mcp),
        Row::post_bytes(
            "JSON-RPC without Accept on the MCP endpoint",
            "/mcp/demo",
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .expect(406, Shape::Mcp),
        // --- The mock's OpenAI-compatible mount: OpenAI's error shapes.
        Row::post_bytes(
            "not JSON at the mock mount",
            "/mock/mock/v1/chat/completions",
            Some("application/json"),
            "{not json",
        )
        .expect(400, Shape::OpenAi),
        Row::post(
            "no messages at the mock mount",
            "/mock/mock/v1/chat/completions",
            json!({"model": "mock", "messages": []}),
        )
        .expect(400, Shape::OpenAi),
        Row::post(
            "messages of the wrong type at the mock mount",
            "/mock/mock/v1/chat/completions",
            json!({"model": "mock", "messages": "hello"}),
        )
        .expect(400, Shape::OpenAi),
        Row::post(
            "oversize body at the mock mount",
            "/mock/mock/v1/chat/completions",
            json!({"model": "mock", "messages": [{"role": "user", "content": big}]}),
        )
        .expect(413, Shape::OpenAi),
        Row::get("GET at the mock's chat route", "/mock/mock/v1/chat/completions")
            .expect(405, Shape::OpenAi),
        Row::post(
            "an unknown route at the mock mount",
            "/mock/mock/v1/embeddings",
            json!({"input": "x"}),
        )
        .expect(404, Shape::OpenAi),
    ]
}

/// The credentials the authentication rows present, made when their proxy starts.
struct Credentials {
    /// A key that may use everything.
    full: String,
    /// A key that may use `mock/*`, the demo server's `calculate` and the rmcp server's `echo`.
    narrow: String,
    /// A key of the right form that was never configured.
    stranger: String,
    /// A valid JWT (scopes: `mock/*`, `demo/*`).
    jwt: String,
    expired: String,
    other_audience: String,
    other_secret: String,
    /// Signed with HS384 where only HS256 is allowed.
    other_algorithm: String,
    /// A valid token with its signature cut off.
    unsigned: String,
}

impl Credentials {
    /// Everything a client presents, which no answer or log line may repeat.
    fn all(&self) -> Vec<String> {
        vec![
            self.full.clone(),
            self.narrow.clone(),
            self.stranger.clone(),
            self.jwt.clone(),
        ]
    }
}

fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

/// Authentication and authorization (`[[keys]]`, `[auth.jwt]`, scopes), against a proxy that
/// requires credentials ([`start_authenticated`]). Each row would reach an upstream if let
/// through. Limits (requests, streams, tokens per minute) have their own suites.
fn authentication_rows(c: &Credentials) -> Vec<Row> {
    let chat_fake = || chat("fake/echo");
    vec![
        Row::post("no credentials", paths::LLM_CHAT, chat_fake())
            .expect(401, shared("unauthorized")),
        Row::post("a key never issued", paths::LLM_CHAT, chat_fake())
            .header("authorization", bearer(&c.stranger))
            .expect(401, shared("unauthorized")),
        Row::post(
            "a key in the query string",
            format!("{}?api_key={}", paths::LLM_CHAT, c.full),
            chat_fake(),
        )
        .expect(401, shared("unauthorized")),
        Row::post(
            "a key as Basic credentials",
            paths::MCP_TOOL,
            tool("rmcp", "echo", json!({"message": "x"})),
        )
        .header("authorization", format!("Basic {}", c.full))
        .expect(401, shared("unauthorized")),
        Row::post(
            "Bearer without a credential",
            paths::LLM_STREAM,
            chat_fake(),
        )
        .header("authorization", "Bearer")
        .expect(401, shared("unauthorized")),
        Row::post("an expired JWT", paths::LLM_CHAT, chat("mock/x"))
            .header("authorization", bearer(&c.expired))
            .expect(401, shared("unauthorized")),
        Row::post(
            "a JWT for another audience",
            paths::LLM_CHAT,
            chat("mock/x"),
        )
        .header("authorization", bearer(&c.other_audience))
        .expect(401, shared("unauthorized")),
        Row::post(
            "a JWT signed with another key",
            paths::LLM_CHAT,
            chat("mock/x"),
        )
        .header("authorization", bearer(&c.other_secret))
        .expect(401, shared("unauthorized")),
        Row::post(
            "a JWT signed with an algorithm not allowed",
            paths::LLM_CHAT,
            chat("mock/x"),
        )
        .header("authorization", bearer(&c.other_algorithm))
        .expect(401, shared("unauthorized")),
        Row::post(
            "a JWT without its signature",
            paths::LLM_CHAT,
            chat("mock/x"),
        )
        .header("authorization", bearer(&c.unsigned))
        .expect(401, shared("unauthorized")),
        Row::post(
            "a model outside the key's scopes",
            paths::LLM_CHAT,
            chat_fake(),
        )
        .header("authorization", bearer(&c.narrow))
        .expect(403, shared("forbidden")),
        Row::post(
            "a model outside the key's scopes, streamed",
            paths::LLM_STREAM,
            chat_fake(),
        )
        .header("authorization", bearer(&c.narrow))
        .expect(403, shared("forbidden")),
        Row::post(
            "a tool outside the key's scopes",
            paths::MCP_TOOL,
            tool("rmcp", "add", json!({"a": 1, "b": 2})),
        )
        .header("authorization", bearer(&c.narrow))
        .expect(403, shared("forbidden")),
        Row::post(
            "a server outside the JWT's scopes",
            paths::MCP_TOOL_STREAM,
            tool("rmcp", "echo", json!({"message": "x"})),
        )
        .header("authorization", bearer(&c.jwt))
        .expect(403, shared("forbidden")),
        Row::post(
            "a model outside the JWT's scopes",
            paths::LLM_CHAT,
            chat_fake(),
        )
        .header("authorization", bearer(&c.jwt))
        .expect(403, shared("forbidden")),
        Row::post(
            "a good key from a foreign Origin",
            paths::LLM_CHAT,
            chat_fake(),
        )
        .header("authorization", bearer(&c.full))
        .header("origin", "http://evil.example")
        .expect(403, shared("forbidden")),
    ]
}

/// Fields the proxy does not know inside a chat request's messages, tools, content parts, tool
/// choice and earlier tool calls: refused like those at the top level, never dropped.
fn nested_unknown_field_rows() -> Vec<Row> {
    vec![
        Row::post(
            "base_url inside a message",
            paths::LLM_CHAT,
            json!({"model": "fake/echo", "messages": [{"role": "user", "content": "hi", "base_url": "http://127.0.0.1:1/v1"}]}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "url inside a tool definition",
            paths::LLM_STREAM,
            json!({"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "f", "url": "http://127.0.0.1:1/"}]}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "fetch inside a content part",
            paths::LLM_CHAT,
            json!({"model": "fake/echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "fetch": "http://127.0.0.1:1/"}]}]}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "headers inside a tool choice",
            paths::LLM_CHAT,
            json!({"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "f"}], "tool_choice": {"tool": {"name": "f", "headers": {"x": "y"}}}}),
        )
        .expect(400, shared("bad_request")),
        Row::post(
            "api_key inside an earlier tool call",
            paths::LLM_CHAT,
            json!({"model": "fake/echo", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}", "api_key": "sk-x"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}
            ]}),
        )
        .expect(400, shared("bad_request")),
    ]
}

/// A body that is not one JSON-RPC message, sent to a built-in server's `/mcp/<name>`: 400 and
/// JSON-RPC's -32700 (not JSON) or -32600 (not a message), as the TypeScript SDK answers.
fn malformed_json_rpc_rows() -> Vec<Row> {
    vec![
        mcp_post("not JSON on the MCP endpoint", "{not json").expect(400, Shape::JsonRpc(-32700)),
        mcp_post("a JSON-RPC batch on the MCP endpoint", "[]").expect(400, Shape::JsonRpc(-32600)),
        mcp_post(
            "a JSON-RPC message without a method",
            r#"{"jsonrpc":"2.0","id":1}"#,
        )
        .expect(400, Shape::JsonRpc(-32600)),
        mcp_post("a JSON string on the MCP endpoint", r#""tools/call""#)
            .expect(400, Shape::JsonRpc(-32600)),
        mcp_post(
            "JSON-RPC 1.0 on the MCP endpoint",
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
        )
        .expect(400, Shape::JsonRpc(-32600)),
    ]
}

// ---------------------------------------------------------------------------------------------
// The harness

/// The upstreams and the proxy in front of them.
struct Harness {
    proxy: LoopbackProxy,
    fake: FakeLlm,
    rmcp: HttpTestServer,
    /// The upstream key, and the credentials clients present: none may come back or be logged.
    secrets: Vec<String>,
    _key_dir: tempfile::TempDir,
}

/// The proxy without authentication (loopback only, every caller anonymous).
async fn start() -> Harness {
    start_with(|_| String::new()).await
}

/// The proxy with `auth` (TOML, given the folder it may write files into) added to its
/// configuration.
async fn start_with(auth: impl FnOnce(&std::path::Path) -> String) -> Harness {
    capture_logs();
    let fake = FakeLlm::start(FakeLlmConfig {
        api_key: Some(UPSTREAM_KEY.to_owned()),
    })
    .await
    .unwrap();
    let rmcp = HttpTestServer::start("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("fake.key");
    std::fs::write(&key_file, format!("{UPSTREAM_KEY}\n")).unwrap();
    let toml = format!(
        r#"
        [server]
        max_body_bytes = {MAX_BODY}
        demo_page = true
        cors_allowed_origins = ["{PAGE_ORIGIN}"]

        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{base_url}"
        api_key_file = {key_file:?}
        models = ["echo"]

        [[providers]]
        name = "mock"
        kind = "mock"
        [providers.mock]
        serve_http = true
        chunk_delay_ms = 0

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"
        serve_http = true

        [[mcp_servers]]
        name = "rmcp"
        transport = "streamable_http"
        url = "{rmcp_url}"

        [[mcp_servers]]
        name = "rmcp-stdio"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]

        {auth}
        "#,
        base_url = fake.base_url(),
        rmcp_url = rmcp.url(),
        auth = auth(key_dir.path()),
    );
    let config = Config::from_toml_str(&toml, "hostile test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, REQUEST_TIMEOUT).await,
        fake,
        rmcp,
        secrets: vec![UPSTREAM_KEY.to_owned()],
        _key_dir: key_dir,
    }
}

const ISSUER: &str = "https://id.hostile.test/";
const AUDIENCE: &str = "switchyard";
const JWT_SECRET: &[u8] = b"the hostile suite's HMAC secret.";

/// An HS256 (or `algorithm`) token signed with `secret`, with the usual claims changed by
/// `overrides`.
fn jwt(secret: &[u8], algorithm: Algorithm, overrides: Value) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({"sub": "jwt-user", "iss": ISSUER, "aud": AUDIENCE,
                            "iat": now, "exp": now + 600});
    for (k, v) in overrides.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut header = Header::new(algorithm);
    header.kid = Some("hs".to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// The proxy requiring credentials: two keys and JWTs, each with scopes.
async fn start_authenticated() -> (Harness, Credentials) {
    let (full, full_hash) = keys::generate().unwrap();
    let (narrow, narrow_hash) = keys::generate().unwrap();
    let valid = jwt(JWT_SECRET, Algorithm::HS256, json!({}));
    let credentials = Credentials {
        full,
        narrow,
        stranger: keys::generate().unwrap().0,
        jwt: valid.clone(),
        expired: jwt(
            JWT_SECRET,
            Algorithm::HS256,
            json!({"exp": jsonwebtoken::get_current_timestamp() - 3600}),
        ),
        other_audience: jwt(
            JWT_SECRET,
            Algorithm::HS256,
            json!({"aud": "another-service"}),
        ),
        other_secret: jwt(
            b"not the configured secret, no...",
            Algorithm::HS256,
            json!({}),
        ),
        other_algorithm: jwt(JWT_SECRET, Algorithm::HS384, json!({})),
        unsigned: format!("{}.", valid.rsplit_once('.').unwrap().0),
    };
    let mut h = start_with(|dir| {
        let mut jwk =
            Jwk::from_encoding_key(&EncodingKey::from_secret(JWT_SECRET), Algorithm::HS256)
                .unwrap();
        jwk.common.key_id = Some("hs".to_owned());
        let jwks = dir.join("jwks.json");
        std::fs::write(
            &jwks,
            serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
        )
        .unwrap();
        format!(
            r#"
            [[keys]]
            name = "full"
            hash = "{full_hash}"
            models = ["*"]
            mcp = ["*"]

            [[keys]]
            name = "narrow"
            hash = "{narrow_hash}"
            models = ["mock/*"]
            mcp = ["demo/calculate", "rmcp/echo"]

            [auth.jwt]
            issuer = "{ISSUER}"
            audience = "{AUDIENCE}"
            jwks_file = {jwks:?}
            algorithms = ["HS256"]
            leeway_s = 5
            models = ["mock/*"]
            mcp = ["demo/*"]
            "#
        )
    })
    .await;
    h.secrets.extend(credentials.all());
    (h, credentials)
}

/// Everything the proxy logs in this process, at trace level.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(Mutex::default)
}

struct LogWriter;

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        logs()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of this test process, at every level, to [`logs`].
fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// What came back.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl Harness {
    async fn send(&self, wire: &Wire) -> Reply {
        match wire {
            Wire::Client {
                method,
                path,
                headers,
                body,
            } => {
                let mut request = self
                    .proxy
                    .client
                    .request(method.clone(), self.proxy.url(path));
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                if let Some((content_type, bytes)) = body {
                    if let Some(ct) = content_type {
                        request = request.header("content-type", *ct);
                    }
                    request = request.body(bytes.clone());
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect();
                let body = response.bytes().await.unwrap().to_vec();
                Reply {
                    status,
                    headers,
                    body,
                }
            }
            Wire::Raw { head, host, body } => self.send_raw(head, host.as_deref(), body).await,
        }
    }

    async fn send_raw(&self, head: &[u8], host: Option<&[u8]>, body: &[u8]) -> Reply {
        let addr = self.proxy.base.trim_start_matches("http://");
        let mut request = head.to_vec();
        request.extend_from_slice(b"Host: ");
        request.extend_from_slice(host.unwrap_or(addr.as_bytes()));
        request.extend_from_slice(b"\r\nConnection: close\r\n");
        if !body.is_empty() {
            request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        let (mut reader, mut writer) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        // Read while writing: a server refusing an oversized head answers and closes before it
        // has read it all, and the reset that follows may discard an answer left unread. The
        // write half stays open until the answer is in, as closing it may end the exchange.
        let write = async move {
            let _ = writer.write_all(&request).await;
            writer
        };
        let read = async {
            let mut answer = Vec::new();
            let _ = reader.read_to_end(&mut answer).await;
            answer
        };
        let (_writer, answer) =
            tokio::time::timeout(REQUEST_TIMEOUT, async { tokio::join!(write, read) })
                .await
                .expect("the proxy answered in time");
        parse_response(&answer)
    }
}

/// Reads an HTTP/1.1 response that ends when the connection closes.
fn parse_response(bytes: &[u8]) -> Reply {
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..text_end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut body = bytes[text_end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case(b"chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}

/// What is wrong with `reply` as an answer to `row`, if anything.
fn check(row: &Row, reply: &Reply) -> Result<(), String> {
    let body = String::from_utf8_lossy(&reply.body);
    let shown = || {
        format!(
            "{} {}",
            reply.status,
            body.chars().take(300).collect::<String>()
        )
    };
    if reply.status != row.status {
        return Err(format!("expected {}, got {}", row.status, shown()));
    }
    if row.shape != Shape::Http && reply.header("x-request-id").is_none() {
        return Err(format!("no x-request-id on {}", shown()));
    }
    match row.shape {
        Shape::Shared(code) => {
            if reply.header("content-type") != Some(b"application/json".as_slice()) {
                return Err(format!("the shared error body is JSON: {}", shown()));
            }
            let Some(error) = ErrorBody::parse(&reply.body) else {
                return Err(format!("not the shared error body: {}", shown()));
            };
            if error.code.as_str() != code || error.message.is_empty() {
                return Err(format!("expected code {code}, got {}", shown()));
            }
            if error.http_status() != reply.status {
                return Err(format!("the status does not follow the code: {}", shown()));
            }
            if code == "method_not_allowed" && reply.header("allow").is_none() {
                return Err(format!("a 405 lists the allowed methods: {reply:?}"));
            }
        }
        Shape::OpenAi => {
            let value: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let fits = value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
                && value["error"]["type"].is_string();
            if !fits {
                return Err(format!("not an OpenAI error body: {}", shown()));
            }
        }
        Shape::JsonRpc(code) => {
            let value: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            if value["jsonrpc"] != "2.0" || value["error"]["code"] != code {
                return Err(format!("expected JSON-RPC error {code}, got {}", shown()));
            }
        }
        Shape::ToolError => {
            let value: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            if value["isError"] != true {
                return Err(format!("not a tool error: {}", shown()));
            }
        }
        Shape::Mcp | Shape::Http | Shape::Any => {}
    }
    Ok(())
}

/// Whether one of `secrets` shows anywhere in `bytes`.
fn leaks(secrets: &[String], bytes: &[u8]) -> bool {
    secrets
        .iter()
        .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
}

/// Sends every row; returns the rows whose answer was wrong, with what was wrong.
async fn run(h: &Harness, rows: &[Row]) -> Vec<String> {
    let mut failures = Vec::new();
    for row in rows {
        assert_ne!(row.status, 0, "{}: the row has no expectation", row.name);
        let reply = h.send(&row.wire).await;
        if let Err(problem) = check(row, &reply) {
            failures.push(format!("{}: {problem}", row.name));
        }
        let leaked = leaks(&h.secrets, &reply.body)
            || reply.headers.iter().any(|(_, v)| leaks(&h.secrets, v));
        if leaked {
            failures.push(format!("{}: a key or token is in the answer", row.name));
        }
    }
    failures
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn hostile_requests_are_refused_before_any_upstream_and_leak_nothing() {
    let h = start().await;
    let mut rows = table();
    rows.extend(nested_unknown_field_rows());
    rows.extend(malformed_json_rpc_rows());
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let failures = run(&h, &rows).await;
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    let meant_for_the_llm = rows.iter().filter(|r| r.reach == Reach::Llm).count() as u64;
    let observed = h.fake.observed();
    assert_eq!(
        observed.requests, meant_for_the_llm,
        "chat requests that reached the test LLM: {observed:?}"
    );
    assert_eq!(
        h.rmcp
            .counters()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "tool calls that reached the rmcp server"
    );

    // The counters do count: one good chat and one good tool call get through, with the key.
    let reply = h
        .send(&Row::post("control", paths::LLM_CHAT, chat("fake/echo")).wire)
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let observed = h.fake.observed();
    assert_eq!(observed.requests, meant_for_the_llm + 1);
    assert_eq!(
        observed.last_authorization.as_deref(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert!(!leaks(&h.secrets, &reply.body));
    let reply = h
        .send(
            &Row::post(
                "control",
                paths::MCP_TOOL,
                tool("rmcp", "echo", json!({"message": "x"})),
            )
            .wire,
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        h.rmcp
            .counters()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let logs = logs().lock().unwrap_or_else(PoisonError::into_inner);
    assert!(!logs.is_empty(), "the proxy's log is captured");
    assert!(
        !leaks(&h.secrets, &logs),
        "the upstream key is in the proxy's log"
    );
}

#[tokio::test]
async fn unauthenticated_and_out_of_scope_requests_are_refused_before_any_upstream() {
    let (h, credentials) = start_authenticated().await;
    let rows = authentication_rows(&credentials);
    let failures = run(&h, &rows).await;
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    let observed = h.fake.observed();
    assert_eq!(observed.requests, 0, "reached the test LLM: {observed:?}");
    assert_eq!(
        h.rmcp
            .counters()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "tool calls that reached the rmcp server"
    );

    // The credentials do work where their scopes allow.
    let allowed = [
        Row::post("control", paths::LLM_CHAT, chat("fake/echo"))
            .header("authorization", bearer(&credentials.full)),
        Row::post(
            "control",
            paths::MCP_TOOL,
            tool("rmcp", "echo", json!({"message": "x"})),
        )
        .header("authorization", bearer(&credentials.narrow)),
        Row::post("control", paths::LLM_CHAT, chat("mock/x"))
            .header("authorization", bearer(&credentials.jwt)),
    ];
    for row in &allowed {
        let reply = h.send(&row.wire).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(!leaks(&h.secrets, &reply.body));
    }
    assert_eq!(h.fake.observed().requests, 1);
    assert_eq!(
        h.rmcp
            .counters()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let logs = logs().lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        !leaks(&h.secrets, &logs),
        "a key or token is in the proxy's log"
    );
}
