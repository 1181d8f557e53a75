//! Proxy mode over the proxy's WebSocket (`transport: "websocket"`), in a real browser against
//! the running proxy: many streams share one socket, a cancelled stream stops its upstream, and
//! a token travels in the first frame. The conformance and MCP suites run their proxy-mode cases
//! over the socket too.

#![cfg(target_arch = "wasm32")]

use switchyard_sdk_wasm::{ClientCore, ClientOptions, ProxyOptions, Transport};
use switchyard_shared::{ChatRequest, ErrorCode, Message, StreamEvent};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[macro_use]
#[allow(unused_macros)]
mod common;
use common::{Mode, setting, sleep_ms};

#[wasm_bindgen(inline_js = "
export function sockets_opened() {
    if (globalThis.__socketsOpened === undefined) {
        const Native = globalThis.WebSocket;
        globalThis.__socketsOpened = 0;
        globalThis.WebSocket = class extends Native {
            constructor(...args) {
                super(...args);
                globalThis.__socketsOpened += 1;
            }
        };
    }
    return globalThis.__socketsOpened;
}
")]
extern "C" {
    /// How many `WebSocket`s the page has opened (counting starts at the first call).
    fn sockets_opened() -> u32;
}

fn client() -> ClientCore {
    common::client(Mode::ProxyWebSocket, Vec::new(), Vec::new())
}

fn request(script: &str, text: &str) -> ChatRequest {
    ChatRequest {
        model: format!("fake/{script}"),
        messages: vec![Message::user(text)],
        ..Default::default()
    }
}

/// The text of a whole stream, or its error.
async fn streamed_text(client: &ClientCore, text: &str) -> Result<String, String> {
    let mut stream = client
        .chat_stream(&request("echo", text), None)
        .await
        .map_err(|e| e.message)?;
    let mut out = String::new();
    for _ in 0..10_000 {
        match stream.next().await {
            Ok(Some(StreamEvent::TextDelta { text })) => out.push_str(&text),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(out),
            Err(e) => return Err(e.message),
        }
    }
    Err("the stream did not end".into())
}

/// The test upstream's count of streams whose client went away.
async fn streams_cancelled() -> u64 {
    let base = common::upstream();
    let origin = base
        .trim_end_matches('/')
        .rsplit_once('/')
        .map_or(base, |(origin, _)| origin);
    let window = web_sys::window().expect("a window");
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str(&format!("{origin}/_observed")))
            .await
            .expect("observed")
            .unchecked_into();
    let json = JsFuture::from(resp.json().expect("json"))
        .await
        .expect("body");
    js_sys::Reflect::get(&json, &"streams_cancelled".into())
        .ok()
        .and_then(|v| v.as_f64())
        .expect("streams_cancelled") as u64
}

#[wasm_bindgen_test]
async fn twenty_streams_share_one_socket() {
    let before = sockets_opened();
    let client = client();
    let texts: Vec<String> = (0..20).map(|i| format!("stream number {i}")).collect();
    let results =
        futures::future::join_all(texts.iter().map(|text| streamed_text(&client, text))).await;
    for (text, result) in texts.iter().zip(results) {
        assert_eq!(result, Ok(format!("echo: {text}")));
    }
    // A single answer takes the same socket.
    let answer = client.chat(&request("echo", "once more"), None).await;
    assert_eq!(
        answer.expect("an answer").message.content.as_deref(),
        Some("echo: once more")
    );
    assert_eq!(sockets_opened() - before, 1, "one socket for every call");
}

#[wasm_bindgen_test]
async fn a_cancelled_stream_on_the_socket_stops_its_upstream() {
    let before = streams_cancelled().await;
    let client = client();
    let controller = web_sys::AbortController::new().unwrap();
    let mut stream = client
        .chat_stream(&request("long", "x"), Some(&controller.signal()))
        .await
        .expect("a stream");
    assert!(matches!(
        stream.next().await,
        Ok(Some(StreamEvent::Start { .. }))
    ));
    controller.abort();
    let mut outcome = Ok(None);
    for _ in 0..500 {
        outcome = stream.next().await;
        if !matches!(outcome, Ok(Some(_))) {
            break;
        }
    }
    assert_eq!(outcome.unwrap_err().code, ErrorCode::Aborted);
    let mut cancelled = false;
    for _ in 0..60 {
        if streams_cancelled().await > before {
            cancelled = true;
            break;
        }
        sleep_ms(50).await;
    }
    assert!(cancelled, "the upstream stream was not cancelled");
    // Only the stream ended: the socket goes on carrying calls.
    assert_eq!(
        streamed_text(&client, "after the cancel").await,
        Ok("echo: after the cancel".into())
    );
}

#[wasm_bindgen_test]
async fn a_token_is_sent_in_the_first_frame() {
    let proxy = setting(
        option_env!("SWITCHYARD_TEST_AUTH_PROXY"),
        "SWITCHYARD_TEST_AUTH_PROXY",
    );
    let key = setting(
        option_env!("SWITCHYARD_TEST_AUTH_PROXY_KEY"),
        "SWITCHYARD_TEST_AUTH_PROXY_KEY",
    );
    let with_key = |api_key: Option<&str>| {
        ClientCore::new(ClientOptions::Proxy(ProxyOptions {
            base_url: proxy.into(),
            api_key: api_key.map(Into::into),
            retry: None,
            transport: Transport::Websocket,
        }))
        .expect("valid options")
    };
    assert_eq!(
        streamed_text(&with_key(Some(key)), "with a key").await,
        Ok("echo: with a key".into())
    );
    let e = with_key(None)
        .chat(&request("echo", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized, "{}", e.message);
    let e = with_key(Some("not-the-key"))
        .chat(&request("echo", "x"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized, "{}", e.message);
}

#[wasm_bindgen_test]
async fn an_unreachable_proxy_fails_the_call_and_the_next_call_tries_again() {
    let client = ClientCore::new(ClientOptions::Proxy(ProxyOptions {
        base_url: "http://127.0.0.1:9".into(),
        api_key: None,
        retry: None,
        transport: Transport::Websocket,
    }))
    .expect("valid options");
    let before = sockets_opened();
    for _ in 0..2 {
        let e = client.chat(&request("echo", "x"), None).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NetworkError, "{}", e.message);
    }
    assert_eq!(
        sockets_opened() - before,
        2,
        "a lost socket is opened again"
    );
}
