//! `GET /api/ws` end to end: the real proxy (in process, on loopback) in front of the scripted
//! OpenAI-compatible upstream, the in-process mock provider and the built-in demo MCP server,
//! driven by a native WebSocket client. Frames are written and read as the protocol
//! (`switchyard_shared::ws`) describes them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard_proxy::Config;
use switchyard_proxy::auth::keys;
use switchyard_shared::paths;
use switchyard_tests::fake_llm::{FakeLlm, FakeLlmConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::LoopbackProxy;

/// The fake upstream's key.
const UPSTREAM_KEY: &str = "sk-test-websocket-7c1e";
/// Bounds every wait, so that a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);
/// The HTTP body limit the proxy is given; frames may be this plus the envelope.
const MAX_BODY: usize = 8 * 1024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Harness {
    proxy: LoopbackProxy,
    fake: FakeLlm,
    /// Every scope, no limits.
    main: String,
    /// Only the mock provider's models.
    narrow: String,
    /// At most 2 requests per minute.
    slow: String,
    /// At most 1 open stream.
    single: String,
    _key_dir: tempfile::TempDir,
}

async fn start() -> Harness {
    common::init_tracing();
    let fake = FakeLlm::start(FakeLlmConfig {
        api_key: Some(UPSTREAM_KEY.to_owned()),
    })
    .await
    .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("fake.key");
    std::fs::write(&key_file, UPSTREAM_KEY).unwrap();
    let mut keys = BTreeMap::new();
    let mut entries = String::new();
    for (name, models, limits) in [
        ("main", r#"["*"]"#, ""),
        ("narrow", r#"["mock/*"]"#, ""),
        ("slow", r#"["*"]"#, "[keys.limits]\nrequests_per_minute = 2"),
        (
            "single",
            r#"["*"]"#,
            "[keys.limits]\nconcurrent_streams = 1",
        ),
    ] {
        let (key, hash) = keys::generate().unwrap();
        entries.push_str(&format!(
            "[[keys]]\nname = \"{name}\"\nhash = \"{hash}\"\nmodels = {models}\nmcp = [\"*\"]\n{limits}\n"
        ));
        keys.insert(name, key);
    }
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        max_body_bytes = {MAX_BODY}
        shutdown_grace_ms = 2000

        [[providers]]
        name = "fake"
        kind = "openai"
        base_url = "{base_url}"
        api_key_file = {key_file:?}
        models = ["echo", "long"]

        [[providers]]
        name = "mock"
        kind = "mock"
        [providers.mock]
        chunk_delay_ms = 20

        [[mcp_servers]]
        name = "demo"
        transport = "builtin"
        server = "demo"

        {entries}
        "#,
        base_url = fake.base_url(),
    );
    let config = Config::from_toml_str(&toml, "websocket test").unwrap();
    Harness {
        proxy: LoopbackProxy::start(config, WAIT).await,
        fake,
        main: keys["main"].clone(),
        narrow: keys["narrow"].clone(),
        slow: keys["slow"].clone(),
        single: keys["single"].clone(),
        _key_dir: key_dir,
    }
}

impl Harness {
    fn ws_url(&self, query: &str) -> String {
        format!(
            "{}{}{query}",
            self.proxy.base.replacen("http", "ws", 1),
            switchyard_shared::ws::PATH
        )
    }

    /// Opens a socket, with `key` in the `Authorization` header when given.
    async fn connect(&self, key: Option<&str>) -> Socket {
        self.connect_to(key, "", None).await.unwrap()
    }

    /// Opens a socket at `/api/ws<query>`, with an `Origin` when given; the HTTP status of a
    /// refused upgrade.
    async fn connect_to(
        &self,
        key: Option<&str>,
        query: &str,
        origin: Option<&str>,
    ) -> Result<Socket, u16> {
        let mut request = self.ws_url(query).into_client_request().unwrap();
        if let Some(key) = key {
            let value = format!("Bearer {key}").parse().unwrap();
            request.headers_mut().insert("authorization", value);
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the upgrade is answered in time")
        {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("upgrade failed: {other}"),
        }
    }

    /// Opens a socket and authenticates it with a first `auth` frame.
    async fn connect_with_frame(&self, key: &str) -> Socket {
        let mut ws = self.connect(None).await;
        send(&mut ws, json!({"op": "auth", "token": key})).await;
        ws
    }
}

async fn send(ws: &mut Socket, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// The next frame from the server, as JSON; panics on a close.
async fn recv(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame arrives in time")
            .expect("the socket is open")
            .expect("the socket reads");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message: {other:?}"),
        }
    }
}

/// Reads until the server closes; its close code and reason.
async fn closed(ws: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the close arrives in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => panic!("a close without a code"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("the socket failed before a close frame: {error}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

/// Reads frames until every id in `ids` has ended; each id's frames, in order.
async fn until_ended(ws: &mut Socket, ids: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let mut frames: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut open: Vec<&str> = ids.to_vec();
    while !open.is_empty() {
        let frame = recv(ws).await;
        let id = frame["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a frame without id: {frame}"))
            .to_owned();
        let kind = frame["type"].as_str().unwrap().to_owned();
        frames.entry(id.clone()).or_default().push(frame);
        if matches!(kind.as_str(), "result" | "end" | "error") {
            open.retain(|open| *open != id);
        }
    }
    frames
}

/// The text of a chat stream's `text_delta` events, checking it ended with `finish` and `end`.
fn streamed_text(frames: &[Value]) -> String {
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "end", "{frames:?}");
    let finish = &frames[frames.len() - 2];
    assert_eq!(finish["event"]["type"], "finish", "{frames:?}");
    frames
        .iter()
        .filter(|f| f["type"] == "event" && f["event"]["type"] == "text_delta")
        .map(|f| f["event"]["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_kind_of_request_is_answered_over_a_socket_authenticated_by_header() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    send(
        &mut ws,
        json!({"id": "c", "op": "chat", "body": chat("fake/echo")}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(
        (&answer["type"], &answer["id"]),
        (&json!("result"), &json!("c"))
    );
    assert_eq!(answer["body"]["model"], "fake/echo", "{answer}");
    assert_eq!(
        answer["body"]["message"]["content"], "echo: hello there",
        "{answer}"
    );

    send(&mut ws, json!({"id": "m", "op": "models"})).await;
    let models = recv(&mut ws).await;
    assert_eq!(models["type"], "result", "{models}");
    assert!(models["body"].to_string().contains("mock"), "{models}");

    send(
        &mut ws,
        json!({"id": "l", "op": "mcp_list_tools", "body": {"server": "demo"}}),
    )
    .await;
    let tools = recv(&mut ws).await;
    let names: Vec<&str> = tools["body"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"calculate"), "{tools}");

    let call = json!({"server": "demo", "name": "calculate", "arguments": {"expression": "6*7"}});
    send(&mut ws, json!({"id": "t", "op": "mcp_call", "body": call})).await;
    let result = recv(&mut ws).await;
    assert_eq!(
        (&result["type"], &result["id"]),
        (&json!("result"), &json!("t"))
    );
    assert_eq!(result["body"]["content"][0]["text"], "6*7 = 42", "{result}");

    send(
        &mut ws,
        json!({"id": "s", "op": "mcp_call_stream", "body": call}),
    )
    .await;
    let frames = until_ended(&mut ws, &["s"]).await.remove("s").unwrap();
    assert_eq!(frames.last().unwrap()["type"], "end", "{frames:?}");
    let last_event = &frames[frames.len() - 2];
    assert_eq!(last_event["event"]["type"], "result", "{frames:?}");

    // Counted under the HTTP routes they stand for, and the socket itself.
    let metrics = h
        .proxy
        .client
        .get(h.proxy.url("/metrics"))
        .bearer_auth(&h.main)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_websocket_connections 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"switchyard_http_requests_total{route="/api/mcp/tool",method="POST",status="200"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_first_auth_frame_authenticates_and_a_bad_one_closes_with_1008() {
    let h = start().await;
    let mut ws = h.connect_with_frame(&h.main).await;
    send(
        &mut ws,
        json!({"id": "1", "op": "chat", "body": chat("mock/m")}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "result");

    let mut ws = h.connect_with_frame("sk-not-a-key").await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(!reason.contains("sk-not-a-key"), "{reason}");

    // Without credentials, a request first is refused: authentication comes first.
    let mut ws = h.connect(None).await;
    send(&mut ws, json!({"id": "1", "op": "models"})).await;
    assert_eq!(closed(&mut ws).await.0, 1008);

    // A wrong header refuses the upgrade itself.
    assert_eq!(
        h.connect_to(Some("sk-wrong"), "", None).await.err(),
        Some(401)
    );
}

#[tokio::test]
async fn a_token_in_the_url_is_not_taken() {
    let h = start().await;
    for query in [
        format!("?token={}", h.main),
        format!("?access_token={}", h.main),
        format!("?authorization=Bearer%20{}", h.main),
    ] {
        let mut ws = h.connect_to(None, &query, None).await.unwrap();
        send(&mut ws, json!({"id": "1", "op": "models"})).await;
        assert_eq!(closed(&mut ws).await.0, 1008, "{query}");
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_like_on_every_route() {
    let h = start().await;
    let refused = h
        .connect_to(Some(&h.main), "", Some("http://evil.example"))
        .await;
    assert_eq!(refused.err(), Some(403));
    let own = h.proxy.base.clone();
    assert!(h.connect_to(Some(&h.main), "", Some(&own)).await.is_ok());
}

#[tokio::test]
async fn two_streams_interleave_under_their_own_ids() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    send(
        &mut ws,
        json!({"id": "a", "op": "chat_stream", "body": chat("mock/m")}),
    )
    .await;
    send(
        &mut ws,
        json!({"id": "b", "op": "chat_stream", "body": chat("mock/m")}),
    )
    .await;
    let frames = until_ended(&mut ws, &["a", "b"]).await;
    let (a, b) = (streamed_text(&frames["a"]), streamed_text(&frames["b"]));
    assert!(!a.is_empty());
    assert_eq!(a, b, "the same prompt gets the same scripted answer");
}

#[tokio::test]
async fn twenty_streams_over_one_socket_all_complete() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    let ids: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for id in &ids {
        send(
            &mut ws,
            json!({"id": id, "op": "chat_stream", "body": chat("mock/m")}),
        )
        .await;
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let frames = until_ended(&mut ws, &refs).await;
    let first = streamed_text(&frames["s0"]);
    for id in &ids {
        assert_eq!(streamed_text(&frames[id]), first, "{id}");
    }
}

#[tokio::test]
async fn cancel_stops_the_upstream_stream_and_unknown_ids_are_ignored() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    send(
        &mut ws,
        json!({"id": "x", "op": "chat_stream", "body": chat("fake/long")}),
    )
    .await;
    let first = recv(&mut ws).await;
    assert_eq!(
        (&first["type"], &first["id"]),
        (&json!("event"), &json!("x"))
    );
    send(&mut ws, json!({"op": "cancel", "id": "x"})).await;
    let ended = loop {
        let frame = recv(&mut ws).await;
        if frame["type"] != "event" {
            break frame;
        }
    };
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["error"]["code"], "aborted", "{ended}");

    let deadline = Instant::now() + Duration::from_secs(5);
    let observed = loop {
        let observed = h.fake.observed();
        if observed.streams_cancelled == 1 || Instant::now() > deadline {
            break observed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(observed.streams_cancelled, 1, "{observed:?}");
    assert_eq!(observed.streams_completed, 0, "{observed:?}");

    // A cancel of an id that is not open is ignored: the next answer is the ping's.
    send(&mut ws, json!({"op": "cancel", "id": "never-opened"})).await;
    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "pong"}));
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    let huge = "x".repeat(MAX_BODY * 3);
    let body = json!({"model": "mock/m", "messages": [{"role": "user", "content": huge}]});
    // The server may close before it has read all of it; the write's outcome does not matter.
    let _ = ws
        .send(Message::text(
            json!({"id": "1", "op": "chat", "body": body}).to_string(),
        ))
        .await;
    assert_eq!(closed(&mut ws).await.0, 1009);
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    ws.send(Message::binary(b"{}".to_vec())).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, 1003);
}

#[tokio::test]
async fn a_model_out_of_scope_is_forbidden_under_its_id() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.narrow)).await;
    send(
        &mut ws,
        json!({"id": "no", "op": "chat", "body": chat("fake/echo")}),
    )
    .await;
    let refused = recv(&mut ws).await;
    assert_eq!(
        (&refused["type"], &refused["id"]),
        (&json!("error"), &json!("no"))
    );
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    assert_eq!(h.fake.observed().requests, 0, "nothing went upstream");
    // The connection stays usable for what is in scope.
    send(
        &mut ws,
        json!({"id": "yes", "op": "chat", "body": chat("mock/m")}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "result");
}

#[tokio::test]
async fn each_request_is_admitted_against_the_callers_rate() {
    let h = start().await;
    // Authenticated by frame, so that the upgrade itself spends nothing.
    let mut ws = h.connect_with_frame(&h.slow).await;
    for id in ["1", "2"] {
        send(&mut ws, json!({"id": id, "op": "models"})).await;
        assert_eq!(recv(&mut ws).await["type"], "result", "{id}");
    }
    send(&mut ws, json!({"id": "3", "op": "models"})).await;
    let refused = recv(&mut ws).await;
    assert_eq!(
        (&refused["type"], &refused["id"]),
        (&json!("error"), &json!("3"))
    );
    assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
}

#[tokio::test]
async fn a_socket_dropped_mid_stream_gives_its_stream_place_back() {
    let h = start().await;
    let mut ws = h.connect(Some(&h.single)).await;
    send(
        &mut ws,
        json!({"id": "a", "op": "chat_stream", "body": chat("fake/long")}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "event");
    // The place is taken: a second stream of the same key is refused.
    send(
        &mut ws,
        json!({"id": "b", "op": "chat_stream", "body": chat("mock/m")}),
    )
    .await;
    let refused = loop {
        let frame = recv(&mut ws).await;
        if frame["id"] == "b" {
            break frame;
        }
    };
    assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
    drop(ws);

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let response = h
            .proxy
            .client
            .post(h.proxy.url(paths::LLM_STREAM))
            .bearer_auth(&h.single)
            .json(&chat("mock/m"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 200 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 200, "the dropped socket's stream place came back");
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.fake.observed().streams_cancelled == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.fake.observed().streams_cancelled,
        1,
        "the upstream stream stopped"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    let (close, stopped) = tokio::join!(closed(&mut ws), h.proxy.stop());
    stopped.unwrap();
    assert_eq!(close.0, 1001, "{}", close.1);
    assert_eq!(CloseCode::from(close.0), CloseCode::Away);
}

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish_before_closing_with_1001() {
    let mut h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    send(
        &mut ws,
        json!({"id": "a", "op": "chat_stream", "body": chat("mock/m")}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "event");
    let read = async {
        let frames = until_ended(&mut ws, &["a"]).await;
        (frames, closed(&mut ws).await)
    };
    let ((frames, close), stopped) = tokio::join!(read, h.proxy.stop());
    stopped.unwrap();
    let frames = &frames["a"];
    assert_eq!(frames.last().unwrap()["type"], "end", "{frames:?}");
    assert_eq!(frames[frames.len() - 2]["event"]["type"], "finish");
    assert_eq!(close.0, 1001, "{}", close.1);
}

#[tokio::test]
async fn a_stream_outlasting_the_grace_period_is_cut_and_the_socket_closed_with_1001() {
    let mut h = start().await;
    let mut ws = h.connect(Some(&h.main)).await;
    send(
        &mut ws,
        json!({"id": "long", "op": "chat_stream", "body": chat("fake/long")}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "event");
    // The stream takes 4 s; the grace period is 2 s.
    let (close, stopped) = tokio::join!(closed(&mut ws), h.proxy.stop());
    stopped.unwrap();
    assert_eq!(close.0, 1001, "{}", close.1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.fake.observed().streams_cancelled == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let observed = h.fake.observed();
    assert_eq!(
        (observed.streams_cancelled, observed.streams_completed),
        (1, 0),
        "{observed:?}"
    );
}
