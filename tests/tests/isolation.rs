//! Per-user MCP isolation end to end: the real proxy (in process, on loopback) with two API keys
//! and a JWT issuer, in front of the rmcp test server started over stdio twice, once as a
//! `per_user` server and once shared. Each user must get a process and a session of their own,
//! keep them across requests, and never see another user's session state.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::{ErrorCode, paths};

mod common;
use common::{ErrorReply, LoopbackProxy, ok_json, tool_text};

const RMCP_SERVER: &str = env!("CARGO_BIN_EXE_mcp-test-server");
/// Bounds every request a test makes, so that a regression fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const ISSUER: &str = "https://id.test/";
const AUDIENCE: &str = "switchyard";
const JWT_SECRET: &[u8] = b"the isolation suite's HMAC key..";

/// The proxy and the credentials of its users.
struct Harness {
    proxy: LoopbackProxy,
    alice: String,
    bob: String,
    carol: String,
    _dir: tempfile::TempDir,
}

/// A caller: a bearer credential.
struct User<'a> {
    harness: &'a Harness,
    credential: &'a str,
}

impl User<'_> {
    async fn call(&self, server: &str, tool: &str, arguments: Value) -> reqwest::Response {
        let body = json!({"server": server, "name": tool, "arguments": arguments});
        self.harness
            .proxy
            .client
            .post(self.harness.proxy.url(paths::MCP_TOOL))
            .bearer_auth(self.credential)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn text(&self, server: &str, tool: &str) -> String {
        let result = ok_json(self.call(server, tool, json!({})).await).await;
        tool_text(&result).to_owned()
    }

    async fn pid(&self, server: &str) -> u32 {
        let text = self.text(server, "pid").await;
        text.parse().unwrap_or_else(|_| panic!("not a pid: {text}"))
    }

    /// Every page of the server's tool list.
    async fn tool_names(&self, server: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let mut query = vec![("server", server.to_owned())];
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let url = reqwest::Url::parse_with_params(
                &self.harness.proxy.url(paths::MCP_LIST_TOOLS),
                query,
            )
            .unwrap();
            let response = self
                .harness
                .proxy
                .client
                .get(url)
                .bearer_auth(self.credential)
                .send()
                .await
                .unwrap();
            let page = ok_json(response).await;
            names.extend(
                page["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned()),
            );
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return names,
            }
        }
        panic!("the tool list of {server} did not end");
    }

    /// Starts a `slow` call on a stream and keeps it open: the user's slot is busy meanwhile.
    async fn busy(&self, server: &str) -> reqwest::Response {
        let body = json!({"server": server, "name": "slow",
                          "arguments": {"steps": 200, "delay_ms": 100}});
        let mut response = self
            .harness
            .proxy
            .client
            .post(self.harness.proxy.url(paths::MCP_TOOL_STREAM))
            .bearer_auth(self.credential)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // The first progress event proves the call reached the server.
        let first = response.chunk().await.unwrap();
        assert!(first.is_some_and(|c| String::from_utf8_lossy(&c).contains("progress")));
        response
    }
}

impl Harness {
    fn user<'a>(&'a self, credential: &'a str) -> User<'a> {
        User {
            harness: self,
            credential,
        }
    }
}

/// An HS256 token for `sub`.
fn token(sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600});
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(JWT_SECRET)).unwrap()
}

async fn start(max_user_sessions: usize) -> Harness {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let mut jwk =
        Jwk::from_encoding_key(&EncodingKey::from_secret(JWT_SECRET), Algorithm::HS256).unwrap();
    jwk.common.key_id = Some("hs".to_owned());
    std::fs::write(
        &jwks,
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
    )
    .unwrap();
    let (alice, alice_hash) = keys::generate().unwrap();
    let (bob, bob_hash) = keys::generate().unwrap();
    let (carol, carol_hash) = keys::generate().unwrap();
    let toml = format!(
        r#"
        [observability]
        metrics_public = true

        [[mcp_servers]]
        name = "private"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]
        isolation = "per_user"
        max_user_sessions = {max_user_sessions}

        [[mcp_servers]]
        name = "common"
        transport = "stdio"
        command = {RMCP_SERVER:?}
        args = ["--stdio"]

        [[keys]]
        name = "alice"
        hash = "{alice_hash}"
        models = []
        mcp = ["*"]

        [[keys]]
        name = "bob"
        hash = "{bob_hash}"
        models = []
        mcp = ["*"]

        [[keys]]
        name = "carol"
        hash = "{carol_hash}"
        models = []
        mcp = ["*"]

        [auth.jwt]
        issuer = "{ISSUER}"
        audience = "{AUDIENCE}"
        jwks_file = {jwks:?}
        algorithms = ["HS256"]
        models = []
        mcp = ["*"]
        "#
    );
    let config = Config::from_toml_str(&toml, "isolation test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, REQUEST_TIMEOUT).await,
        alice,
        bob,
        carol,
        _dir: dir,
    }
}

/// Whether the process is still running (Linux: its `/proc` entry, which a reaped process loses).
fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (bounded) for the process to end.
async fn ends(pid: u32) -> bool {
    for _ in 0..100 {
        if !running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The value of the pool's sessions gauge for `server`.
async fn sessions_gauge(proxy: &LoopbackProxy, server: &str) -> f64 {
    let text = proxy
        .client
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap();
    let text = text.text().await.unwrap();
    let prefix = format!("switchyard_mcp_pool_sessions{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no sessions gauge for {server} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn each_user_gets_a_process_and_a_session_of_their_own() {
    let h = start(8).await;
    let (alice, bob) = (h.user(&h.alice), h.user(&h.bob));

    let alice_pid = alice.pid("private").await;
    let bob_pid = bob.pid("private").await;
    assert_ne!(alice_pid, bob_pid, "two users, two processes");
    assert_eq!(
        alice.pid("private").await,
        alice_pid,
        "kept across requests"
    );
    assert_eq!(bob.pid("private").await, bob_pid);
    assert_eq!(sessions_gauge(&h.proxy, "private").await, 2.0);

    // Session state stays with its user: only Alice's session lists (and runs) `revealed`.
    assert!(
        !alice
            .tool_names("private")
            .await
            .contains(&"revealed".to_owned())
    );
    alice.text("private", "reveal").await;
    assert!(
        alice
            .tool_names("private")
            .await
            .contains(&"revealed".to_owned())
    );
    // The proxy looks a tool list up again at most once a second before calling a tool unknown.
    let mut found = false;
    for _ in 0..40 {
        if alice.call("private", "revealed", json!({})).await.status() == 200 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "Alice can call the tool her session revealed");
    // Past the once-a-second look-up, so Bob's refusal comes from his own server's list.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        !bob.tool_names("private")
            .await
            .contains(&"revealed".to_owned())
    );
    let refused = ErrorReply::read(bob.call("private", "revealed", json!({})).await).await;
    assert_eq!(refused.status, 404, "{}", refused.text);
    assert_eq!(refused.error.code, ErrorCode::NotFound);
    assert!(!refused.text.contains("alice"), "{}", refused.text);

    // The readiness check opens a session of its own, never one of a user's.
    let ready = h
        .proxy
        .client
        .get(h.proxy.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(sessions_gauge(&h.proxy, "private").await, 3.0);
    assert_eq!(alice.pid("private").await, alice_pid);
    assert_eq!(bob.pid("private").await, bob_pid);

    // A shared server is one process for everybody.
    let shared = alice.pid("common").await;
    assert_eq!(bob.pid("common").await, shared);
    assert_ne!(shared, alice_pid);
    assert_ne!(shared, bob_pid);
}

/// A token the proxy mints (`POST /api/tokens`) for `credential`.
async fn minted(h: &Harness, credential: &str) -> String {
    let answer = ok_json(
        h.proxy
            .client
            .post(h.proxy.url(paths::TOKENS))
            .bearer_auth(credential)
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    answer["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_minted_token_is_the_user_it_was_minted_for() {
    let h = start(8).await;
    let by_key = h.user(&h.alice).pid("private").await;
    let alice_token = minted(&h, &h.alice).await;
    assert_eq!(
        h.user(&alice_token).pid("private").await,
        by_key,
        "a key and its token, one session"
    );
    let jwt = token("alice");
    let by_jwt = h.user(&jwt).pid("private").await;
    assert_ne!(by_jwt, by_key);
    let jwt_token = minted(&h, &jwt).await;
    assert_eq!(h.user(&jwt_token).pid("private").await, by_jwt);
    let bob_token = minted(&h, &h.bob).await;
    let by_bob = h.user(&bob_token).pid("private").await;
    assert!(by_bob != by_key && by_bob != by_jwt);
}

#[tokio::test]
async fn a_jwt_user_named_like_a_key_is_another_user() {
    let h = start(8).await;
    let key_alice = h.user(&h.alice);
    let jwt_alice = token("alice");
    let jwt_alice = h.user(&jwt_alice);
    let jwt_again = token("alice");
    let jwt_again = h.user(&jwt_again);
    let jwt_bob = token("bob");
    let jwt_bob = h.user(&jwt_bob);

    let by_key = key_alice.pid("private").await;
    let by_token = jwt_alice.pid("private").await;
    assert_ne!(by_key, by_token, "a key and a token are told apart");
    assert_eq!(
        jwt_again.pid("private").await,
        by_token,
        "the same sub, the same session"
    );
    assert_ne!(jwt_bob.pid("private").await, by_token);
}

#[tokio::test]
async fn a_new_user_takes_the_place_of_the_one_idle_the_longest() {
    let h = start(2).await;
    let (alice, bob, carol) = (h.user(&h.alice), h.user(&h.bob), h.user(&h.carol));

    let alice_pid = alice.pid("private").await;
    let bob_pid = bob.pid("private").await;
    // Bob was active last, so Alice's session is the one to go.
    let carol_pid = carol.pid("private").await;
    assert!(
        ends(alice_pid).await,
        "the idle session's process is stopped"
    );
    assert!(running(bob_pid));
    assert_eq!(bob.pid("private").await, bob_pid, "Bob keeps his session");
    assert_eq!(sessions_gauge(&h.proxy, "private").await, 2.0);

    // Alice comes back to a new session; Carol, now idle the longest, makes room.
    let alice_again = alice.pid("private").await;
    assert_ne!(alice_again, alice_pid);
    assert!(ends(carol_pid).await);
    assert!(running(bob_pid));
}

#[tokio::test]
async fn when_every_place_is_busy_a_new_user_is_told_to_retry() {
    let h = start(2).await;
    let (alice, bob, carol) = (h.user(&h.alice), h.user(&h.bob), h.user(&h.carol));
    let alice_call = alice.busy("private").await;
    let bob_call = bob.busy("private").await;

    let refused = ErrorReply::read(carol.call("private", "pid", json!({})).await).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.error.code, ErrorCode::RateLimited);
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(!refused.text.contains("alice") && !refused.text.contains("bob"));
    // Other servers are not affected.
    carol.pid("common").await;

    // Once a call ends, its user's session is idle and can make room.
    drop(alice_call);
    let mut carol_pid = None;
    for _ in 0..100 {
        let response = carol.call("private", "pid", json!({})).await;
        if response.status() == 200 {
            let result = ok_json(response).await;
            carol_pid = tool_text(&result).parse::<u32>().ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(carol_pid.is_some(), "Carol got in after Alice's call ended");
    drop(bob_call);
}
