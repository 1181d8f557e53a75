//! `POST /api/tokens` end to end: the real proxy (in process, on loopback) with `[[keys]]`, the
//! mock provider and the built-in demo MCP server. A minted token is used for chat and MCP calls
//! within its scopes, refused outside them, once expired or altered, and cannot be widened.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::{ErrorCode, paths};

mod common;
use common::{ErrorReply, LoopbackProxy, ok_json};

/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The proxy and the keys the tests present.
struct Harness {
    proxy: LoopbackProxy,
    /// May use everything.
    full: String,
    /// May use `mock/*` and the demo server's `calculate` and `now`, 600 requests a minute.
    narrow: String,
}

/// The configuration of the suite's proxy, with `extra` TOML at the end; `hashes` are the
/// `[[keys]]` hashes of `full` and `narrow`.
fn config(full_hash: &keys::KeyHash, narrow_hash: &keys::KeyHash, extra: &str) -> Config {
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [[providers]]
        name = "mock"
        kind = "mock"
        models = ["demo", "other"]

        [[providers]]
        name = "mock2"
        kind = "mock"
        models = ["demo"]

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"

        [[keys]]
        name = "full"
        hash = "{full_hash}"
        models = ["*"]
        mcp = ["*"]

        [[keys]]
        name = "narrow"
        hash = "{narrow_hash}"
        models = ["mock/*"]
        mcp = ["demo/calculate", "demo/now"]
        [keys.limits]
        requests_per_minute = 600

        {extra}
        "#
    );
    Config::from_toml_str(&toml, "tokens test").unwrap()
}

async fn start_with(extra: &str) -> Harness {
    common::init_tracing();
    let (full, full_hash) = keys::generate().unwrap();
    let (narrow, narrow_hash) = keys::generate().unwrap();
    let proxy =
        LoopbackProxy::start(config(&full_hash, &narrow_hash, extra), REQUEST_TIMEOUT).await;
    Harness {
        proxy,
        full,
        narrow,
    }
}

async fn start() -> Harness {
    start_with("").await
}

impl Harness {
    async fn post_as(
        &self,
        credential: Option<&str>,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self.proxy.client.post(self.proxy.url(path)).json(body);
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        request.send().await.unwrap()
    }

    async fn get_as(&self, credential: &str, path: &str) -> reqwest::Response {
        self.proxy
            .client
            .get(self.proxy.url(path))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
    }

    /// Mints a token with `credential`; the whole answer.
    async fn mint(&self, credential: &str, body: &Value) -> Value {
        ok_json(self.post_as(Some(credential), paths::TOKENS, body).await).await
    }

    /// Mints a token with `credential`; the token.
    async fn token(&self, credential: &str, body: &Value) -> String {
        let answer = self.mint(credential, body).await;
        answer["token"].as_str().expect("a token").to_owned()
    }

    async fn chat(&self, credential: &str, model: &str) -> reqwest::Response {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "say hello"}]});
        self.post_as(Some(credential), paths::LLM_CHAT, &body).await
    }

    async fn call(&self, credential: &str, tool: &str, arguments: Value) -> reqwest::Response {
        let body = json!({"server": "demo", "name": tool, "arguments": arguments});
        self.post_as(Some(credential), paths::MCP_TOOL, &body).await
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

fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[tokio::test]
async fn a_minted_token_chats_and_calls_tools_within_its_scopes_only() {
    let h = start().await;
    let before = unix_now();
    let answer = h
        .mint(
            &h.narrow,
            &json!({"models": ["mock/demo"], "mcp": ["demo/calculate"]}),
        )
        .await;
    let token = answer["token"].as_str().unwrap();
    assert_eq!(
        answer["scopes"],
        json!({"models": ["mock/demo"], "mcp": ["demo/calculate"]})
    );
    // The caller's limits, as nothing narrower was asked for; the default lifetime, 15 minutes.
    assert_eq!(answer["limits"], json!({"requests_per_minute": 600}));
    let expires_at = answer["expires_at"].as_u64().unwrap();
    assert!(
        (before + 900..=unix_now() + 900).contains(&expires_at),
        "{answer}"
    );
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some("switchyard-minted"));

    let reply = ok_json(h.chat(token, "mock/demo").await).await;
    assert_eq!(reply["model"], "mock/demo", "{reply}");
    let result = ok_json(
        h.call(token, "calculate", json!({"expression": "6*7"}))
            .await,
    )
    .await;
    assert_eq!(result["structuredContent"]["value"], 42.0, "{result}");

    // The key may use these; the token may not.
    assert_eq!(h.chat(&h.narrow, "mock/other").await.status(), 200);
    let e = refused(
        h.chat(token, "mock/other").await,
        403,
        ErrorCode::Forbidden,
        &[token],
    )
    .await;
    assert!(
        e.error.message.contains("mock/other"),
        "{}",
        e.error.message
    );
    refused(
        h.call(token, "now", json!({})).await,
        403,
        ErrorCode::Forbidden,
        &[token],
    )
    .await;
    // Lists show only what the token may use.
    let models = ok_json(h.get_as(token, paths::LLM_MODELS).await).await;
    assert_eq!(
        models["providers"][0]["models"],
        json!(["mock/demo"]),
        "{models}"
    );
}

#[tokio::test]
async fn without_narrower_scopes_a_token_has_the_callers() {
    let h = start().await;
    let answer = h.mint(&h.narrow, &json!({})).await;
    assert_eq!(
        answer["scopes"],
        json!({"models": ["mock/*"], "mcp": ["demo/calculate", "demo/now"]})
    );
    let token = answer["token"].as_str().unwrap();
    assert_eq!(h.chat(token, "mock/other").await.status(), 200);
    refused(
        h.chat(token, "mock2/demo").await,
        403,
        ErrorCode::Forbidden,
        &[],
    )
    .await;
}

#[tokio::test]
async fn minting_is_for_authenticated_callers() {
    let h = start().await;
    let reply = refused(
        h.post_as(None, paths::TOKENS, &json!({})).await,
        401,
        ErrorCode::Unauthorized,
        &[],
    )
    .await;
    assert!(reply.headers.contains_key("www-authenticate"));
    let stranger = keys::generate().unwrap().0;
    refused(
        h.post_as(Some(&stranger), paths::TOKENS, &json!({})).await,
        401,
        ErrorCode::Unauthorized,
        &[&stranger],
    )
    .await;
}

#[tokio::test]
async fn a_token_wider_than_its_caller_is_refused() {
    let h = start().await;
    for (body, names) in [
        (json!({"models": ["*"]}), "\"*\""),
        (json!({"models": ["mock/demo", "mock2/demo"]}), "mock2/demo"),
        (json!({"models": ["mo*/demo"]}), "mo*/demo"),
        (json!({"mcp": ["demo/*"]}), "demo/*"),
        (
            json!({"limits": {"requests_per_minute": 601}}),
            "requests_per_minute",
        ),
    ] {
        let e = refused(
            h.post_as(Some(&h.narrow), paths::TOKENS, &body).await,
            403,
            ErrorCode::Forbidden,
            &[&h.narrow],
        )
        .await;
        assert!(
            e.error.message.contains(names),
            "{body}: {}",
            e.error.message
        );
    }
    // Malformed requests are the caller's mistake, not a scope question.
    for body in [
        json!({"models": ["no-slash"]}),
        json!({"ttl_seconds": 0}),
        json!({"limits": {"concurrent_streams": 0}}),
        json!({"scopes": ["*"]}),
    ] {
        refused(
            h.post_as(Some(&h.narrow), paths::TOKENS, &body).await,
            400,
            ErrorCode::BadRequest,
            &[],
        )
        .await;
    }
    // A lifetime above the maximum (an hour by default) is cut down to it.
    let answer = h.mint(&h.full, &json!({"ttl_seconds": 86_400})).await;
    assert!(
        answer["expires_at"].as_u64().unwrap() <= unix_now() + 3600,
        "{answer}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let h = start().await;
    let token = h.token(&h.full, &json!({"ttl_seconds": 1})).await;
    assert_eq!(h.chat(&token, "mock/demo").await.status(), 200);
    // One second of life and one of leeway; polled, so a slow machine only waits longer.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = h.chat(&token, "mock/demo").await;
        if response.status() == 401 {
            let e = refused(response, 401, ErrorCode::Unauthorized, &[&token]).await;
            assert!(e.error.message.contains("expired"), "{}", e.error.message);
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(Instant::now() < deadline, "the token is still accepted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_altered_or_foreign_token_is_refused() {
    let h = start().await;
    let narrow = h.token(&h.narrow, &json!({"models": ["mock/demo"]})).await;
    let wide = h.token(&h.full, &json!({})).await;
    let parts = |t: &str| t.split('.').map(str::to_owned).collect::<Vec<_>>();
    let (n, w) = (parts(&narrow), parts(&wide));
    // The wide token's claims under the narrow token's signature.
    let spliced = format!("{}.{}.{}", n[0], w[1], n[2]);
    // One character of the signature changed.
    let mut signature = n[2].clone().into_bytes();
    signature[3] = if signature[3] == b'A' { b'B' } else { b'A' };
    let resigned = format!(
        "{}.{}.{}",
        n[0],
        n[1],
        String::from_utf8(signature).unwrap()
    );
    // Signed by another proxy: each makes a random key of its own when none is configured.
    let other = start().await;
    let foreign = other.token(&other.full, &json!({})).await;
    for token in [&spliced, &resigned, &foreign] {
        let e = refused(
            h.chat(token, "mock/demo").await,
            401,
            ErrorCode::Unauthorized,
            &[token],
        )
        .await;
        assert!(e.error.message.contains("signature"), "{}", e.error.message);
    }
    assert_eq!(h.chat(&narrow, "mock/demo").await.status(), 200);
}

#[tokio::test]
async fn a_token_mints_only_narrower_and_shorter_tokens() {
    let h = start().await;
    let parent = h
        .mint(
            &h.full,
            &json!({"ttl_seconds": 600, "models": ["mock/*"], "mcp": ["demo/calculate"]}),
        )
        .await;
    let parent_token = parent["token"].as_str().unwrap();
    let parent_expiry = parent["expires_at"].as_u64().unwrap();
    // Asking for an hour gets no more than the parent has left.
    let child = h
        .mint(
            parent_token,
            &json!({"ttl_seconds": 3600, "models": ["mock/demo"]}),
        )
        .await;
    assert!(
        child["expires_at"].as_u64().unwrap() <= parent_expiry,
        "{child}"
    );
    assert_eq!(
        child["scopes"],
        json!({"models": ["mock/demo"], "mcp": ["demo/calculate"]})
    );
    let child_token = child["token"].as_str().unwrap();
    assert_eq!(h.chat(child_token, "mock/demo").await.status(), 200);
    refused(
        h.chat(child_token, "mock/other").await,
        403,
        ErrorCode::Forbidden,
        &[],
    )
    .await;
    // Wider than the parent, though within the key that minted the parent.
    for body in [
        json!({"models": ["mock2/demo"]}),
        json!({"mcp": ["demo/now"]}),
    ] {
        refused(
            h.post_as(Some(parent_token), paths::TOKENS, &body).await,
            403,
            ErrorCode::Forbidden,
            &[],
        )
        .await;
    }
}

#[tokio::test]
async fn tokens_spend_their_callers_budget_and_their_own() {
    let (metered, metered_hash) = keys::generate().unwrap();
    let h = start_with(&format!(
        "[[keys]]\nname = \"metered\"\nhash = \"{metered_hash}\"\nmodels = [\"*\"]\nmcp = []\n\
         [keys.limits]\nrequests_per_minute = 6\n"
    ))
    .await;
    // `metered` has 6 requests a minute: the mint and the token's requests all count in it,
    // so minting never adds to what a caller may spend.
    let token = h.token(&metered, &json!({})).await;
    for _ in 0..4 {
        assert_eq!(h.chat(&token, "mock/demo").await.status(), 200);
    }
    assert_eq!(h.chat(&metered, "mock/demo").await.status(), 200);
    refused(
        h.chat(&token, "mock/demo").await,
        429,
        ErrorCode::RateLimited,
        &[],
    )
    .await;
    refused(
        h.chat(&metered, "mock/demo").await,
        429,
        ErrorCode::RateLimited,
        &[],
    )
    .await;

    // A token with a narrower limit of its own is held to it; its caller is not.
    let limited = h
        .mint(&h.full, &json!({"limits": {"requests_per_minute": 1}}))
        .await;
    assert_eq!(limited["limits"], json!({"requests_per_minute": 1}));
    let limited = limited["token"].as_str().unwrap();
    assert_eq!(h.chat(limited, "mock/demo").await.status(), 200);
    refused(
        h.chat(limited, "mock/demo").await,
        429,
        ErrorCode::RateLimited,
        &[],
    )
    .await;
    assert_eq!(h.chat(&h.full, "mock/demo").await.status(), 200);
}

#[tokio::test]
async fn a_shared_signing_key_carries_tokens_across_instances_while_their_key_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("token-key");
    std::fs::write(&key_file, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let extra = format!(
        "[auth.tokens]\nsigning_key_file = {:?}\ndefault_ttl_s = 60\nmax_ttl_s = 120\n",
        key_file.to_string_lossy()
    );
    let (full, full_hash) = keys::generate().unwrap();
    let (_, narrow_hash) = keys::generate().unwrap();
    let a = LoopbackProxy::start(config(&full_hash, &narrow_hash, &extra), REQUEST_TIMEOUT).await;
    let minted = ok_json(
        a.client
            .post(a.url(paths::TOKENS))
            .bearer_auth(&full)
            .json(&json!({"ttl_seconds": 600}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        minted["expires_at"].as_u64().unwrap() <= unix_now() + 120,
        "{minted}"
    );
    let token = minted["token"].as_str().unwrap();
    let chat = json!({"model": "mock/demo", "messages": [{"role": "user", "content": "hi"}]});
    // Another instance with the same key and the same `[[keys]]` accepts it.
    let b = LoopbackProxy::start(config(&full_hash, &narrow_hash, &extra), REQUEST_TIMEOUT).await;
    let response = b
        .client
        .post(b.url(paths::LLM_CHAT))
        .bearer_auth(token)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // One where that key was replaced (the same name, another key) does not.
    let (_, other_hash) = keys::generate().unwrap();
    let c = LoopbackProxy::start(config(&other_hash, &narrow_hash, &extra), REQUEST_TIMEOUT).await;
    let response = c
        .client
        .post(c.url(paths::LLM_CHAT))
        .bearer_auth(token)
        .json(&chat)
        .send()
        .await
        .unwrap();
    let e = refused(response, 401, ErrorCode::Unauthorized, &[token]).await;
    assert!(
        e.error.message.contains("no longer configured"),
        "{}",
        e.error.message
    );
}

#[tokio::test]
async fn minting_can_be_turned_off() {
    let h = start_with("[auth.tokens]\nenabled = false\n").await;
    let e = refused(
        h.post_as(Some(&h.full), paths::TOKENS, &json!({})).await,
        404,
        ErrorCode::NotFound,
        &[],
    )
    .await;
    assert!(
        e.error.message.contains("[auth.tokens]"),
        "{}",
        e.error.message
    );
    // Nor is a token made elsewhere accepted.
    let other = start().await;
    let token = other.token(&other.full, &json!({})).await;
    refused(
        h.chat(&token, "mock/demo").await,
        401,
        ErrorCode::Unauthorized,
        &[&token],
    )
    .await;
}

#[test]
fn the_token_settings_are_checked() {
    for (extra, names) in [
        ("[auth.tokens]\nmax_ttl_s = 0\n", "auth.tokens.max_ttl_s"),
        (
            "[auth.tokens]\nmax_ttl_s = 100000\n",
            "auth.tokens.max_ttl_s",
        ),
        (
            "[auth.tokens]\ndefault_ttl_s = 7200\n",
            "auth.tokens.default_ttl_s",
        ),
        (
            "[auth.tokens]\nsigning_key_env = \"SWITCHYARD_TOKENS_TEST_UNSET\"\n",
            "SWITCHYARD_TOKENS_TEST_UNSET",
        ),
        (
            "[auth.tokens]\nsigning_key_file = \"/nonexistent/key\"\n",
            "auth.tokens.signing_key_file",
        ),
        ("[auth.tokens]\nttl = 5\n", "ttl"),
    ] {
        let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n{extra}");
        let e = Config::from_toml_str(&toml, "tokens test")
            .unwrap_err()
            .to_string();
        assert!(e.contains(names), "{extra}: {e}");
    }
}

#[tokio::test]
async fn a_jwt_user_mints_tokens_for_the_same_user() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    const SECRET: &[u8] = b"the tokens suite's HMAC secret..";
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let mut jwk =
        Jwk::from_encoding_key(&EncodingKey::from_secret(SECRET), Algorithm::HS256).unwrap();
    jwk.common.key_id = Some("hs".to_owned());
    std::fs::write(
        &jwks,
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
    )
    .unwrap();
    let h = start_with(&format!(
        "[auth.jwt]\nissuer = \"https://id.test/\"\naudience = \"switchyard\"\njwks_file = {:?}\n\
         algorithms = [\"HS256\"]\nmodels = [\"mock/demo\"]\nmcp = []\n",
        jwks.to_string_lossy()
    ))
    .await;
    let now = unix_now();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".to_owned());
    let jwt = jsonwebtoken::encode(
        &header,
        &json!({"sub": "jwt-user", "iss": "https://id.test/", "aud": "switchyard", "iat": now, "exp": now + 600}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let answer = h.mint(&jwt, &json!({})).await;
    assert_eq!(
        answer["scopes"],
        json!({"models": ["mock/demo"], "mcp": []})
    );
    let token = answer["token"].as_str().unwrap();
    assert_eq!(h.chat(token, "mock/demo").await.status(), 200);
    refused(
        h.chat(token, "mock/other").await,
        403,
        ErrorCode::Forbidden,
        &[],
    )
    .await;
    refused(
        h.post_as(Some(&jwt), paths::TOKENS, &json!({"models": ["mock/*"]}))
            .await,
        403,
        ErrorCode::Forbidden,
        &[],
    )
    .await;
}
