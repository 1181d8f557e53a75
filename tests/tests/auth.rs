//! Client authentication end to end: the real proxy (in-process, on loopback) with `[[keys]]` and
//! `[auth.jwt]`, in front of the mock provider and the built-in demo MCP server (in process) and
//! of two upstreams that count what reaches them (the test LLM and the test MCP server), so that
//! every refusal can be shown to stop at the proxy.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::{ErrorCode, paths};
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};
use switchyard_tests::mcp_server::HttpTestServer;

mod common;
use common::{ErrorReply, LoopbackProxy, ok_json, read_tool_events};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// An origin the configuration allows.
const PAGE_ORIGIN: &str = "http://page.test:5173";
const ISSUER: &str = "https://id.test/";
const AUDIENCE: &str = "switchyard";
/// The shared secret of the HS256 tokens (an `oct` key of the JWKS file).
const JWT_SECRET: &[u8] = b"the auth suite's HMAC secret....";

/// The proxy, what it sits in front of, and the credentials the tests present.
struct Harness {
    proxy: LoopbackProxy,
    llm: FakeLlm,
    mcp: HttpTestServer,
    /// May use everything.
    full: String,
    /// May use `mock/demo`, the demo server's `calculate` and the test server's `echo`.
    narrow: String,
    _dir: tempfile::TempDir,
}

/// Another key, never configured.
fn stranger() -> String {
    keys::generate().unwrap().0
}

fn jwks_of(secret: &[u8], kid: &str) -> JwkSet {
    let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_secret(secret), Algorithm::HS256)
        .expect("an HMAC secret is a JWK");
    jwk.common.key_id = Some(kid.to_owned());
    JwkSet { keys: vec![jwk] }
}

/// An HS256 token signed with `secret`, with the usual claims changed by `overrides` (a `null`
/// removes a claim).
fn token_with(secret: &[u8], overrides: Value) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({"sub": "jwt-user", "iss": ISSUER, "aud": AUDIENCE,
                            "iat": now, "exp": now + 600});
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn token(overrides: Value) -> String {
    token_with(JWT_SECRET, overrides)
}

async fn start() -> Harness {
    common::init_tracing();
    let llm = FakeLlm::start(FakeLlmConfig::default()).await.unwrap();
    let mcp = HttpTestServer::start("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&jwks_of(JWT_SECRET, "hs")).unwrap(),
    )
    .unwrap();
    let (full, full_hash) = keys::generate().unwrap();
    let (narrow, narrow_hash) = keys::generate().unwrap();
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        cors_allowed_origins = ["{PAGE_ORIGIN}"]

        [[providers]]
        name = "mock"
        kind = "mock"
        models = ["demo", "other"]
        [providers.mock]
        chunk_delay_ms = 1
        serve_http = true

        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{llm}"
        models = ["echo"]

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"
        serve_http = true

        [[mcp_servers]]
        name = "private"
        transport = "builtin"
        server = "demo"

        [[mcp_servers]]
        name = "tools"
        transport = "streamable_http"
        url = "{mcp}"

        [[keys]]
        name = "full"
        hash = "{full_hash}"
        models = ["*"]
        mcp = ["*"]

        [[keys]]
        name = "narrow"
        hash = "{narrow_hash}"
        models = ["mock/demo"]
        mcp = ["demo/calculate", "tools/echo"]
        [keys.limits]
        requests_per_minute = 600

        [auth.jwt]
        issuer = "{ISSUER}"
        audience = "{AUDIENCE}"
        jwks_file = {jwks:?}
        algorithms = ["HS256"]
        leeway_s = 5
        models = ["mock/*"]
        mcp = ["demo/*"]
        "#,
        llm = llm.base_url(),
        mcp = mcp.url(),
    );
    let config = Config::from_toml_str(&toml, "auth test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, REQUEST_TIMEOUT).await,
        llm,
        mcp,
        full,
        narrow,
        _dir: dir,
    }
}

/// A request of the suite: method, path, JSON body.
#[derive(Clone, Copy)]
struct Call {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
}

const fn get(path: &'static str) -> Call {
    Call {
        method: "GET",
        path,
        body: None,
    }
}

const fn post(path: &'static str, body: &'static str) -> Call {
    Call {
        method: "POST",
        path,
        body: Some(body),
    }
}

/// One request to every kind of route, each of which would reach an upstream if let through.
const EVERY_ROUTE: [Call; 12] = [
    get("/api/llm/models"),
    post(
        "/api/llm/chat",
        r#"{"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}"#,
    ),
    post(
        "/api/llm/stream",
        r#"{"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}"#,
    ),
    get("/api/mcp/servers"),
    get("/api/mcp/listTools?server=tools"),
    post(
        "/api/mcp/tool",
        r#"{"server": "tools", "name": "echo", "arguments": {"message": "hi"}}"#,
    ),
    post(
        "/api/mcp/tool/stream",
        r#"{"server": "tools", "name": "echo", "arguments": {"message": "hi"}}"#,
    ),
    post(
        "/api/mcp/readResource",
        r#"{"server": "demo", "uri": "notes://index"}"#,
    ),
    get("/mock/mock/v1/models"),
    post(
        "/mock/mock/v1/chat/completions",
        r#"{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}"#,
    ),
    post(
        "/mcp/demo",
        r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#,
    ),
    get("/no/such/route"),
];

impl Harness {
    /// Sends `call` with `authorization` (a whole header value) and `extra` headers.
    async fn send(
        &self,
        call: Call,
        authorization: Option<&str>,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let url = self.proxy.url(call.path);
        let mut request = match call.method {
            "GET" => self.proxy.client.get(url),
            _ => self.proxy.client.post(url),
        };
        if let Some(body) = call.body {
            request = request
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .body(body);
        }
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn get_as(&self, key: &str, path: &str, query: &[(&str, &str)]) -> reqwest::Response {
        let url = reqwest::Url::parse_with_params(&self.proxy.url(path), query).unwrap();
        self.proxy
            .client
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    async fn post_as(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.proxy
            .client
            .post(self.proxy.url(path))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Panics if anything reached the counting upstreams.
    fn assert_upstreams_untouched(&self, what: &str) {
        assert_eq!(self.llm.observed().requests, 0, "{what} reached the LLM");
        let counters = self.mcp.counters();
        assert_eq!(
            counters.calls.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{what} reached an MCP tool"
        );
        assert_eq!(
            counters.sessions.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{what} opened an MCP session"
        );
    }
}

/// The error of `response`, checked to be the shared body with `status` and `code`, and to
/// carry none of `secrets`.
async fn refused(
    response: reqwest::Response,
    status: u16,
    code: ErrorCode,
    secrets: &[&str],
) -> ErrorReply {
    let reply = ErrorReply::read(response).await;
    reply.assert_json();
    assert_eq!(
        (reply.status, reply.error.code),
        (status, code),
        "{}",
        reply.text
    );
    for secret in secrets {
        assert!(
            !reply.text.contains(secret),
            "a credential was echoed: {}",
            reply.text
        );
    }
    reply
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "say hello"}]})
}

#[tokio::test]
async fn without_valid_credentials_every_route_is_401_and_nothing_is_reached() {
    let h = start().await;
    let wrong_key = stranger();
    let expired = token(json!({"exp": jsonwebtoken::get_current_timestamp() - 120}));
    let wrong_audience = token(json!({"aud": "another-service"}));
    let wrong_issuer = token(json!({"iss": "https://evil.test/"}));
    let forged = token_with(b"a secret the proxy does not know.", json!({}));
    let no_subject = token(json!({"sub": null}));
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "requires authentication"),
        (Some(format!("Bearer {wrong_key}")), "API key is not valid"),
        (Some(format!("Basic {}", h.full)), "must be `Bearer"),
        (Some("Bearer".to_owned()), "must be `Bearer"),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some(format!("Bearer {wrong_audience}")), "audience"),
        (Some(format!("Bearer {wrong_issuer}")), "issuer"),
        (Some(format!("Bearer {forged}")), "signature"),
        (Some(format!("Bearer {no_subject}")), "`sub`"),
        (Some("Bearer not.a.jwt".to_owned()), "malformed"),
    ];
    for (authorization, says) in &cases {
        for call in EVERY_ROUTE {
            let response = h.send(call, authorization.as_deref(), &[]).await;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let secret = authorization
                .as_deref()
                .and_then(|a| a.split_once(' ').map(|(_, s)| s))
                .unwrap_or("-");
            let reply = refused(response, 401, ErrorCode::Unauthorized, &[secret]).await;
            assert!(
                reply.error.message.contains(says),
                "{} {}: {says:?} in {:?}",
                call.method,
                call.path,
                reply.error.message
            );
            let challenge = challenge.unwrap_or_default();
            assert!(challenge.starts_with("Bearer realm="), "{challenge}");
            assert_eq!(
                challenge.contains("invalid_token"),
                authorization.is_some(),
                "{challenge}"
            );
        }
    }
    h.assert_upstreams_untouched("an unauthenticated request");
}

#[tokio::test]
async fn the_probes_need_no_credentials() {
    let h = start().await;
    let response = h.send(get(paths::HEALTH), None, &[]).await;
    assert_eq!(response.status(), 200);
    // Ready or not (the answer depends on the upstreams), but never a question of credentials.
    let response = h.send(get("/readyz"), None, &[]).await;
    assert!(
        matches!(response.status().as_u16(), 200 | 503),
        "{}",
        response.status()
    );
}

#[tokio::test]
async fn a_key_with_every_scope_works_end_to_end() {
    let h = start().await;
    let key = h.full.as_str();

    let models = ok_json(h.get_as(key, paths::LLM_MODELS, &[]).await).await;
    let listed: Vec<&str> = models["providers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["models"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, ["mock/demo", "mock/other", "fake/echo"]);

    let answer = ok_json(h.post_as(key, paths::LLM_CHAT, &chat("mock/demo")).await).await;
    assert!(
        answer["message"]["content"].as_str().unwrap().len() > 5,
        "{answer}"
    );
    let answer = ok_json(h.post_as(key, paths::LLM_CHAT, &chat("fake/echo")).await).await;
    assert!(answer["message"]["content"].is_string(), "{answer}");
    let stream = h.post_as(key, paths::LLM_STREAM, &chat("mock/demo")).await;
    assert_eq!(stream.status(), 200);
    let text = stream.text().await.unwrap();
    assert!(text.contains("\"finish\""), "{text}");

    let servers = ok_json(h.get_as(key, paths::MCP_SERVERS, &[]).await).await;
    assert_eq!(servers["servers"].as_array().unwrap().len(), 3, "{servers}");
    let tools = ok_json(
        h.get_as(key, paths::MCP_LIST_TOOLS, &[("server", "demo")])
            .await,
    )
    .await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 3, "{tools}");
    let result = ok_json(
        h.post_as(
            key,
            paths::MCP_TOOL,
            &json!({"server": "demo", "name": "calculate", "arguments": {"expression": "6*7"}}),
        )
        .await,
    )
    .await;
    assert_eq!(result["structuredContent"]["value"], 42.0, "{result}");

    // The direct-mode endpoints take the same key as a Bearer header, as `fetch` sends it.
    let answer = ok_json(
        h.post_as(key, "/mock/mock/v1/chat/completions", &chat("demo"))
            .await,
    )
    .await;
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "calculate", "arguments": {"expression": "3*3"}}});
    let answer = ok_json(h.post_as(key, "/mcp/demo", &call).await).await;
    assert_eq!(
        answer["result"]["structuredContent"]["value"], 9.0,
        "{answer}"
    );
}

#[tokio::test]
async fn a_narrow_key_sees_and_uses_only_its_scopes() {
    let h = start().await;
    let key = h.narrow.as_str();
    let secrets = [key];

    // Models: listed and used only within `mock/demo`.
    let models = ok_json(h.get_as(key, paths::LLM_MODELS, &[]).await).await;
    assert_eq!(
        models,
        json!({"providers": [{"name": "mock", "kind": "openai", "models": ["mock/demo"]}]})
    );
    ok_json(h.post_as(key, paths::LLM_CHAT, &chat("mock/demo")).await).await;
    for (route, model) in [
        (paths::LLM_CHAT, "mock/other"),
        (paths::LLM_CHAT, "fake/echo"),
        (paths::LLM_STREAM, "fake/echo"),
        (paths::LLM_STREAM, "mock/other"),
        (paths::LLM_CHAT, "nowhere/x"),
    ] {
        let reply = refused(
            h.post_as(key, route, &chat(model)).await,
            403,
            ErrorCode::Forbidden,
            &secrets,
        )
        .await;
        assert!(
            reply.error.message.contains(&format!("\"{model}\"")),
            "{route} {model}: {}",
            reply.error.message
        );
        assert!(
            !reply.error.message.contains("narrow"),
            "the key is not named"
        );
    }

    // MCP servers: `private` is not listed, and nothing of it may be used.
    let servers = ok_json(h.get_as(key, paths::MCP_SERVERS, &[]).await).await;
    let names: Vec<&str> = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["demo", "tools"]);
    for (path, query) in [
        (paths::MCP_LIST_TOOLS, "private"),
        (paths::MCP_LIST_RESOURCES, "private"),
        (paths::MCP_LIST_PROMPTS, "private"),
    ] {
        let reply = refused(
            h.get_as(key, path, &[("server", query)]).await,
            403,
            ErrorCode::Forbidden,
            &secrets,
        )
        .await;
        assert!(reply.error.message.contains("\"private\""), "{path}");
    }
    refused(
        h.post_as(
            key,
            paths::MCP_READ_RESOURCE,
            &json!({"server": "private", "uri": "notes://index"}),
        )
        .await,
        403,
        ErrorCode::Forbidden,
        &secrets,
    )
    .await;

    // Tools: lists keep only the allowed ones; other calls are refused before any upstream.
    let tools = ok_json(
        h.get_as(key, paths::MCP_LIST_TOOLS, &[("server", "demo")])
            .await,
    )
    .await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["calculate"], "{tools}");
    for (route, server, tool) in [
        (paths::MCP_TOOL, "demo", "now"),
        (paths::MCP_TOOL_STREAM, "demo", "search_notes"),
        (paths::MCP_TOOL, "tools", "add"),
        (paths::MCP_TOOL_STREAM, "tools", "slow"),
        (paths::MCP_TOOL, "private", "calculate"),
    ] {
        let reply = refused(
            h.post_as(
                key,
                route,
                &json!({"server": server, "name": tool, "arguments": {}}),
            )
            .await,
            403,
            ErrorCode::Forbidden,
            &secrets,
        )
        .await;
        assert!(
            reply.error.message.contains(&format!("\"{tool}\"")),
            "{route} {server}/{tool}: {}",
            reply.error.message
        );
    }
    h.assert_upstreams_untouched("a request out of scope");

    // What is in scope works, on the counting server too.
    let result = ok_json(
        h.post_as(
            key,
            paths::MCP_TOOL,
            &json!({"server": "tools", "name": "echo", "arguments": {"message": "in scope"}}),
        )
        .await,
    )
    .await;
    assert_eq!(common::tool_text(&result), "Echo: in scope");
    let events = read_tool_events(
        h.post_as(
            key,
            paths::MCP_TOOL_STREAM,
            &json!({"server": "demo", "name": "calculate", "arguments": {"expression": "1+1"}}),
        )
        .await,
    )
    .await;
    assert!(format!("{events:?}").contains("1+1 = 2"), "{events:?}");
    let listed = ok_json(
        h.get_as(key, paths::MCP_LIST_TOOLS, &[("server", "tools")])
            .await,
    )
    .await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["echo"], "{listed}");
    assert_eq!(
        h.mcp
            .counters()
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn the_direct_mode_endpoints_apply_the_same_scopes() {
    let h = start().await;
    let key = h.narrow.as_str();

    // The mock's OpenAI-compatible endpoint: only `demo`, and only `demo` listed.
    ok_json(
        h.post_as(key, "/mock/mock/v1/chat/completions", &chat("demo"))
            .await,
    )
    .await;
    let reply = refused(
        h.post_as(key, "/mock/mock/v1/chat/completions", &chat("other"))
            .await,
        403,
        ErrorCode::Forbidden,
        &[key],
    )
    .await;
    assert!(
        reply.error.message.contains("\"mock/other\""),
        "{}",
        reply.text
    );
    let models = ok_json(h.get_as(key, "/mock/mock/v1/models", &[]).await).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["demo"], "{models}");

    // The demo server's MCP endpoint: `tools/list` narrowed, other tools refused.
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let answer = ok_json(h.post_as(key, "/mcp/demo", &list).await).await;
    let names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["calculate"], "{answer}");
    for tool in ["now", "search_notes"] {
        let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": tool, "arguments": {}}});
        let reply = refused(
            h.post_as(key, "/mcp/demo", &call).await,
            403,
            ErrorCode::Forbidden,
            &[key],
        )
        .await;
        assert!(reply.error.message.contains(tool), "{}", reply.text);
    }
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "calculate", "arguments": {"expression": "2*21"}}});
    let answer = ok_json(h.post_as(key, "/mcp/demo", &call).await).await;
    assert_eq!(
        answer["result"]["structuredContent"]["value"], 42.0,
        "{answer}"
    );
}

#[tokio::test]
async fn jwt_users_get_the_configured_scopes() {
    let h = start().await;
    let jwt = token(json!({}));
    let models = ok_json(h.get_as(&jwt, paths::LLM_MODELS, &[]).await).await;
    let names: Vec<&str> = models["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["mock"], "{models}");
    ok_json(h.post_as(&jwt, paths::LLM_CHAT, &chat("mock/other")).await).await;
    refused(
        h.post_as(&jwt, paths::LLM_CHAT, &chat("fake/echo")).await,
        403,
        ErrorCode::Forbidden,
        &[&jwt],
    )
    .await;
    let servers = ok_json(h.get_as(&jwt, paths::MCP_SERVERS, &[]).await).await;
    assert_eq!(
        servers,
        json!({"servers": [{"name": "demo", "transport": "builtin"}]})
    );
    refused(
        h.post_as(
            &jwt,
            paths::MCP_TOOL,
            &json!({"server": "tools", "name": "echo", "arguments": {"message": "x"}}),
        )
        .await,
        403,
        ErrorCode::Forbidden,
        &[&jwt],
    )
    .await;
    // Within the leeway, a token that has just expired still works.
    let late = token(json!({"exp": jsonwebtoken::get_current_timestamp() - 2}));
    ok_json(h.get_as(&late, paths::LLM_MODELS, &[]).await).await;
    h.assert_upstreams_untouched("a JWT user's request out of scope");
}

#[tokio::test]
async fn foreign_origins_are_refused_on_every_route() {
    let h = start().await;
    let authorization = format!("Bearer {}", h.full);
    for call in EVERY_ROUTE.into_iter().chain([get(paths::HEALTH)]) {
        for origin in ["http://evil.test", "null", "https://page.test:5173"] {
            let response = h
                .send(call, Some(&authorization), &[("origin", origin)])
                .await;
            let reply = refused(response, 403, ErrorCode::Forbidden, &[&h.full]).await;
            assert!(
                reply.error.message.contains("cors_allowed_origins"),
                "{}",
                reply.text
            );
        }
    }
    // Even without credentials the Origin is what is refused: no page learns whether a key works.
    let response = h
        .send(
            get(paths::LLM_MODELS),
            None,
            &[("origin", "http://evil.test")],
        )
        .await;
    refused(response, 403, ErrorCode::Forbidden, &[]).await;
    h.assert_upstreams_untouched("a request from a foreign origin");

    // The listed origin and the proxy's own pass.
    for origin in [PAGE_ORIGIN, h.proxy.base.as_str()] {
        let response = h
            .send(
                get(paths::LLM_MODELS),
                Some(&authorization),
                &[("origin", origin)],
            )
            .await;
        assert_eq!(response.status(), 200, "{origin}");
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_at_start_up() {
    common::init_tracing();
    let secret: &[u8] = b"a secret served by the test JWKS.";
    let jwks = serde_json::to_value(jwks_of(secret, "hs")).unwrap();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = |url: &str| {
        Config::from_toml_str(
            &format!(
                r#"
                [[providers]]
                name = "mock"
                kind = "mock"
                [auth.jwt]
                issuer = "{ISSUER}"
                audience = "{AUDIENCE}"
                jwks_url = "{url}"
                algorithms = ["HS256"]
                models = ["*"]
                mcp = ["*"]
                "#
            ),
            "jwks url test",
        )
        .unwrap()
    };
    let proxy =
        LoopbackProxy::start(config(&format!("http://{addr}/jwks.json")), REQUEST_TIMEOUT).await;
    let response = proxy
        .client
        .get(proxy.url(paths::LLM_MODELS))
        .bearer_auth(token_with(secret, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = proxy
        .client
        .get(proxy.url(paths::LLM_MODELS))
        .bearer_auth(token(json!({})))
        .send()
        .await
        .unwrap();
    refused(response, 401, ErrorCode::Unauthorized, &[]).await;
    server.abort();

    // Without the keys no token could ever be accepted: the proxy does not start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = switchyard_proxy::serve_until(
        config(&format!("http://{addr}/missing.json")),
        listener,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("cannot fetch the JWKS"), "{message}");
}

#[tokio::test]
async fn listening_beyond_loopback_needs_authentication() {
    // The listener is bound on every interface, but only loopback is ever sent anything.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = switchyard_proxy::serve_until(Config::default(), listener, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    for says in ["0.0.0.0", "switchyard keys new", "[[keys]]", "127.0.0.1"] {
        assert!(message.contains(says), "{says:?} in {message}");
    }

    let (key, hash) = keys::generate().unwrap();
    let config = Config::from_toml_str(
        &format!(
            "[server]\nlisten = \"0.0.0.0:0\"\n[[keys]]\nname = \"ci\"\nhash = \"{hash}\"\nmodels = [\"*\"]\nmcp = [\"*\"]\n"
        ),
        "beyond loopback test",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(switchyard_proxy::serve_until(config, listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}{}", paths::LLM_MODELS);
    let mut status = None;
    for _ in 0..100 {
        if let Ok(response) = client.get(&url).bearer_auth(&key).send().await {
            status = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(200));
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
