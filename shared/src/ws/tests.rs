//! The protocol through its public interface: the server and client state machines alone, and
//! the two connected to each other with no I/O in between.

use core::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::chat::{ChatRequest, ChatResponse, FinishReason};
use crate::error::{ApiError, ErrorCode};
use crate::mcp::api::{McpListQuery, McpToolCall, McpToolEvent};
use crate::stream::StreamEvent;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn limits() -> Limits {
    Limits {
        max_frame_bytes: 4096,
        max_open_requests: 4,
        max_queued_bytes: 2048,
        max_stream_queued_bytes: 512,
        stall_timeout: s(30),
        auth_timeout: s(10),
        ping_interval: s(20),
        pong_timeout: s(20),
    }
}

fn chat_request() -> ChatRequest {
    serde_json::from_value(json!({
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}]
    }))
    .unwrap()
}

fn chat_response(text: &str) -> ChatResponse {
    serde_json::from_value(json!({
        "id": "chatcmpl-1",
        "model": "openai/gpt-4o-mini",
        "message": {"content": text},
        "finish_reason": "stop"
    }))
    .unwrap()
}

fn request(id: &str, op: &str) -> String {
    let body = match op {
        "chat" | "chat_stream" => {
            json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        }
        "mcp_call" | "mcp_call_stream" => json!({"server": "fs", "name": "echo"}),
        _ => Value::Null,
    };
    let mut frame = json!({"id": id, "op": op});
    if !body.is_null() {
        frame["body"] = body;
    }
    frame.to_string()
}

fn delta(text: &str) -> StreamEvent {
    StreamEvent::TextDelta { text: text.into() }
}

fn finish() -> StreamEvent {
    StreamEvent::Finish {
        finish_reason: FinishReason::Stop,
    }
}

fn server() -> ServerSession {
    ServerSession::new(s(0), limits(), true)
}

fn actions(server: &mut ServerSession) -> Vec<Action> {
    std::iter::from_fn(|| server.poll_action()).collect()
}

/// Everything the server would write now: text frames as JSON, and the close frame if any.
fn transmitted(server: &mut ServerSession) -> (Vec<Value>, Option<(u16, String)>) {
    let mut texts = Vec::new();
    let mut close = None;
    while let Some(t) = server.poll_transmit() {
        match t {
            Transmit::Text(text) => texts.push(serde_json::from_str(&text).unwrap()),
            Transmit::Close { code, reason } => close = Some((code, reason)),
            Transmit::Ping => texts.push(json!("<ping>")),
        }
    }
    (texts, close)
}

fn started_ids(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

// --- server: authentication -------------------------------------------------------------------

#[test]
fn auth_as_first_frame_is_checked_by_the_driver_then_requests_run() {
    let mut srv = ServerSession::new(s(0), limits(), false);
    assert!(!srv.is_authenticated());
    srv.on_text(s(1), r#"{"op":"auth","token":"sk-good"}"#);
    assert_eq!(
        actions(&mut srv),
        [Action::Authenticate {
            token: Token("sk-good".into())
        }]
    );
    srv.auth_result(Ok(()));
    assert!(srv.is_authenticated());
    srv.on_text(s(2), &request("1", "models"));
    assert_eq!(
        actions(&mut srv),
        [Action::Start {
            id: "1".into(),
            op: Box::new(Operation::Models)
        }]
    );
    assert_eq!(transmitted(&mut srv), (vec![], None));
}

#[test]
fn a_request_before_auth_closes_with_policy_violation() {
    let mut srv = ServerSession::new(s(0), limits(), false);
    srv.on_text(s(1), &request("1", "models"));
    assert!(actions(&mut srv).is_empty());
    let (texts, close) = transmitted(&mut srv);
    assert!(texts.is_empty());
    let (code, reason) = close.unwrap();
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert!(reason.contains("authenticate first"), "{reason}");
    // Nothing more is read.
    srv.on_text(s(2), r#"{"op":"auth","token":"t"}"#);
    assert!(actions(&mut srv).is_empty());
    assert!(srv.is_closed());
}

#[test]
fn a_refused_token_closes_with_the_errors_message_and_not_the_token() {
    let mut srv = ServerSession::new(s(0), limits(), false);
    srv.on_text(s(1), r#"{"op":"auth","token":"sk-wrong-secret"}"#);
    actions(&mut srv);
    srv.auth_result(Err(ApiError::new(
        ErrorCode::Unauthorized,
        "the API key is not valid",
    )));
    let (_, close) = transmitted(&mut srv);
    let (code, reason) = close.unwrap();
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert_eq!(reason, "the API key is not valid");
    assert!(!srv.is_authenticated());
}

#[test]
fn a_late_or_repeated_auth_frame_closes() {
    // Authenticated at the upgrade: `auth` is refused.
    let mut srv = server();
    srv.on_text(s(1), r#"{"op":"auth","token":"t"}"#);
    assert_eq!(
        transmitted(&mut srv).1.map(|c| c.0),
        Some(close_code::POLICY_VIOLATION)
    );
    // Authenticated by a first frame, then a second one after a request.
    let mut srv = ServerSession::new(s(0), limits(), false);
    srv.on_text(s(1), r#"{"op":"auth","token":"t"}"#);
    srv.auth_result(Ok(()));
    srv.on_text(s(2), &request("1", "chat_stream"));
    srv.on_text(s(3), r#"{"op":"auth","token":"t"}"#);
    let acts = actions(&mut srv);
    assert!(acts.contains(&Action::Cancel {
        id: "1".into(),
        reason: CancelReason::Closed
    }));
    assert_eq!(
        transmitted(&mut srv).1.map(|c| c.0),
        Some(close_code::POLICY_VIOLATION)
    );
}

#[test]
fn a_frame_while_the_token_is_being_checked_closes() {
    let mut srv = ServerSession::new(s(0), limits(), false);
    srv.on_text(s(1), r#"{"op":"auth","token":"t"}"#);
    srv.on_text(s(1), &request("1", "models"));
    assert_eq!(started_ids(&actions(&mut srv)), Vec::<&str>::new());
    assert_eq!(
        transmitted(&mut srv).1.map(|c| c.0),
        Some(close_code::POLICY_VIOLATION)
    );
    // A late answer to the check changes nothing.
    srv.auth_result(Ok(()));
    assert!(!srv.is_authenticated());
}

#[test]
fn no_auth_frame_in_time_closes() {
    let mut srv = ServerSession::new(s(100), limits(), false);
    assert_eq!(srv.next_deadline(), Some(s(110)));
    srv.on_timeout(s(109));
    assert!(!srv.is_closed());
    srv.on_timeout(s(110));
    let (code, reason) = transmitted(&mut srv).1.unwrap();
    assert_eq!(code, close_code::POLICY_VIOLATION);
    assert!(reason.contains("no `auth` frame"), "{reason}");
    assert_eq!(srv.next_deadline(), None);
}

// --- server: frames, ids, errors --------------------------------------------------------------

#[test]
fn an_oversize_frame_closes_before_parsing_and_cancels_open_requests() {
    let mut srv = server();
    srv.on_text(s(1), &request("1", "chat_stream"));
    actions(&mut srv);
    // At the limit: read (and refused as JSON), the connection stays.
    srv.on_text(s(1), &"x".repeat(limits().max_frame_bytes));
    assert!(!srv.is_closed());
    transmitted(&mut srv);
    // One byte more: closed, although it would be a valid request.
    let mut big = request("2", "models");
    big.push_str(&" ".repeat(limits().max_frame_bytes));
    srv.on_text(s(2), &big);
    assert_eq!(
        actions(&mut srv),
        [Action::Cancel {
            id: "1".into(),
            reason: CancelReason::Closed
        }]
    );
    let (texts, close) = transmitted(&mut srv);
    assert!(texts.is_empty());
    let (code, reason) = close.unwrap();
    assert_eq!(code, close_code::MESSAGE_TOO_BIG);
    assert!(reason.contains("4096"), "{reason}");
    assert_eq!(srv.push_chat_event(s(3), "1", delta("x")), Pushed::Gone);
}

#[test]
fn a_body_at_the_http_limit_fits_in_a_frame() {
    let limits = Limits::with_body_limit(2000);
    let mut srv = ServerSession::new(s(0), limits.clone(), true);
    let call = McpToolCall {
        server: "fs".into(),
        name: "write".into(),
        arguments: Some(serde_json::Map::from_iter([(
            "text".into(),
            json!("z".repeat(1900)),
        )])),
    };
    let body = serde_json::to_string(&call).unwrap();
    assert!(body.len() <= 2000);
    let mut client = ClientSession::new(s(0), limits, None);
    let id = client.start(&Operation::McpCall(call)).unwrap();
    let Some(Transmit::Text(frame)) = client.poll_transmit() else {
        panic!("the request is sent");
    };
    srv.on_text(s(1), &frame);
    assert_eq!(started_ids(&actions(&mut srv)), [id.as_str()]);
}

#[test]
fn binary_frames_close_with_unsupported_data() {
    let mut srv = server();
    srv.on_binary(s(1));
    assert_eq!(
        transmitted(&mut srv).1.map(|c| c.0),
        Some(close_code::UNSUPPORTED_DATA)
    );
}

#[test]
fn bad_requests_are_answered_under_their_id_and_unreadable_frames_for_the_connection() {
    let mut srv = server();
    srv.on_text(
        s(1),
        r#"{"id":"a","op":"chat","body":{"model":"x","messages":[],"temperature":"hot"}}"#,
    );
    srv.on_text(s(1), r#"{"id":"b","op":"warp"}"#);
    srv.on_text(s(1), "{not json");
    srv.on_text(s(1), r#"{"id":"","op":"models"}"#);
    assert!(actions(&mut srv).is_empty());
    let (texts, close) = transmitted(&mut srv);
    assert_eq!(close, None);
    let ids: Vec<&Value> = texts.iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&json!("a"), &json!("b"), &Value::Null, &Value::Null]);
    for t in &texts {
        assert_eq!(t["type"], "error");
        assert_eq!(t["error"]["code"], "bad_request");
    }
    // Nothing stays open: the ids may be used.
    srv.on_text(s(2), &request("a", "models"));
    assert_eq!(started_ids(&actions(&mut srv)), ["a"]);
}

#[test]
fn a_duplicate_open_id_is_refused_for_the_connection_and_the_first_request_goes_on() {
    let mut srv = server();
    srv.on_text(s(1), &request("x", "chat"));
    srv.on_text(s(1), &request("x", "models"));
    srv.on_text(s(1), r#"{"id":"x","op":"chat"}"#);
    assert_eq!(started_ids(&actions(&mut srv)), ["x"]);
    let (texts, _) = transmitted(&mut srv);
    assert_eq!(texts.len(), 2);
    for t in &texts {
        assert_eq!(t["id"], Value::Null);
        assert!(
            t["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already open")
        );
    }
    assert_eq!(srv.open_kind("x"), Some(OpKind::Chat));
    assert!(srv.push_result("x", &chat_response("hi")));
    let (texts, _) = transmitted(&mut srv);
    assert_eq!(texts[0]["type"], "result");
    assert_eq!(texts[0]["body"]["message"]["content"], "hi");
    // Ended: the id is free again.
    srv.on_text(s(2), &request("x", "models"));
    assert_eq!(started_ids(&actions(&mut srv)), ["x"]);
}

#[test]
fn requests_beyond_the_cap_are_refused_with_rate_limited() {
    let mut srv = server();
    for i in 0..5 {
        srv.on_text(s(1), &request(&i.to_string(), "chat"));
    }
    assert_eq!(started_ids(&actions(&mut srv)), ["0", "1", "2", "3"]);
    let (texts, _) = transmitted(&mut srv);
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0]["id"], "4");
    assert_eq!(texts[0]["error"]["code"], "rate_limited");
    assert_eq!(srv.open_requests(), 4);
    // One ends, one more may start.
    assert!(srv.push_error("0", &ApiError::new(ErrorCode::UpstreamTimeout, "slow")));
    srv.on_text(s(2), &request("5", "chat"));
    assert_eq!(started_ids(&actions(&mut srv)), ["5"]);
}

#[test]
fn errors_end_requests_and_later_pushes_are_gone() {
    let mut srv = server();
    srv.on_text(s(1), &request("1", "mcp_call"));
    actions(&mut srv);
    let e = ApiError::new(ErrorCode::NotFound, "no tool `echo` on `fs`");
    assert!(srv.push_error("1", &e));
    assert!(!srv.push_result("1", &json!({})));
    assert!(!srv.push_error("1", &e));
    let (texts, _) = transmitted(&mut srv);
    assert_eq!(
        texts,
        [
            json!({"type": "error", "id": "1", "error": {"code": "not_found", "message": "no tool `echo` on `fs`", "retryable": false}})
        ]
    );
}

// --- server: streams, cancel, backpressure ------------------------------------------------------

#[test]
fn interleaved_streams_keep_their_order_and_end_once() {
    let mut srv = server();
    srv.on_text(s(1), &request("a", "chat_stream"));
    srv.on_text(s(1), &request("b", "chat_stream"));
    srv.on_text(s(1), &request("t", "mcp_call_stream"));
    srv.on_text(s(1), &request("u", "mcp_call_stream"));
    assert_eq!(started_ids(&actions(&mut srv)), ["a", "b", "t", "u"]);
    let now = s(2);
    assert_eq!(srv.push_chat_event(now, "a", delta("a1")), Pushed::Queued);
    assert_eq!(srv.push_chat_event(now, "b", delta("b1")), Pushed::Queued);
    let progress = McpToolEvent::Progress {
        progress: 1.0,
        total: Some(2.0),
        message: None,
    };
    assert_eq!(srv.push_tool_event(now, "t", progress), Pushed::Queued);
    assert_eq!(srv.push_chat_event(now, "a", delta("a2")), Pushed::Queued);
    assert_eq!(srv.push_chat_event(now, "b", finish()), Pushed::Queued);
    let failed = McpToolEvent::Error {
        error: ApiError::new(ErrorCode::UpstreamError, "the MCP server failed"),
    };
    assert_eq!(srv.push_tool_event(now, "u", failed), Pushed::Queued);
    let result = McpToolEvent::Result {
        result: rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text("done")]),
    };
    assert_eq!(srv.push_tool_event(now, "t", result), Pushed::Queued);
    assert_eq!(srv.push_chat_event(now, "a", finish()), Pushed::Queued);
    assert_eq!(srv.push_chat_event(now, "a", delta("late")), Pushed::Gone);
    assert_eq!(srv.open_requests(), 0);

    let (texts, _) = transmitted(&mut srv);
    let of = |id: &str| -> Vec<String> {
        texts
            .iter()
            .filter(|t| t["id"] == id)
            .map(|t| match t["type"].as_str().unwrap() {
                "event" => format!("event:{}", t["event"]["type"].as_str().unwrap()),
                other => other.to_owned(),
            })
            .collect()
    };
    assert_eq!(
        of("a"),
        [
            "event:text_delta",
            "event:text_delta",
            "event:finish",
            "end"
        ]
    );
    assert_eq!(of("b"), ["event:text_delta", "event:finish", "end"]);
    assert_eq!(of("t"), ["event:progress", "event:result", "end"]);
    assert_eq!(of("u"), ["error"]);
    let a: Vec<&Value> = texts
        .iter()
        .filter(|t| t["id"] == "a" && t["type"] == "event")
        .map(|t| &t["event"]["text"])
        .collect();
    assert_eq!(a[..2], [&json!("a1"), &json!("a2")]);
}

#[test]
fn cancel_of_an_open_stream_drops_its_queue_and_answers_aborted() {
    let mut srv = server();
    srv.on_text(s(1), &request("a", "chat_stream"));
    srv.on_text(s(1), &request("b", "chat_stream"));
    actions(&mut srv);
    for i in 0..3 {
        let _ = srv.push_chat_event(s(1), "a", delta(&format!("a{i}")));
    }
    let _ = srv.push_chat_event(s(1), "b", delta("b0"));
    let before = srv.queued_bytes();
    srv.on_text(s(2), r#"{"op":"cancel","id":"a"}"#);
    assert_eq!(
        actions(&mut srv),
        [Action::Cancel {
            id: "a".into(),
            reason: CancelReason::Client
        }]
    );
    assert!(srv.queued_bytes() < before);
    assert_eq!(srv.push_chat_event(s(2), "a", delta("more")), Pushed::Gone);
    let (texts, _) = transmitted(&mut srv);
    let kinds: Vec<(String, String)> = texts
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("b".into(), "event".into()), ("a".into(), "error".into())]
    );
    assert_eq!(texts[1]["error"]["code"], "aborted");
    // The other stream is untouched.
    assert_eq!(srv.push_chat_event(s(3), "b", finish()), Pushed::Queued);
}

#[test]
fn cancel_of_an_unknown_id_is_ignored() {
    let mut srv = server();
    srv.on_text(s(1), r#"{"op":"cancel","id":"nope"}"#);
    assert!(actions(&mut srv).is_empty());
    assert_eq!(transmitted(&mut srv), (vec![], None));
}

#[test]
fn a_slow_reader_makes_the_stream_wait_then_stops_it() {
    let mut srv = server();
    srv.on_text(s(0), &request("a", "chat_stream"));
    srv.on_text(s(0), &request("b", "chat"));
    actions(&mut srv);
    let chunk = "x".repeat(100);
    let mut queued = 0;
    let refused = loop {
        match srv.push_chat_event(s(1), "a", delta(&chunk)) {
            Pushed::Queued => queued += 1,
            Pushed::Full(event) => break event,
            Pushed::Gone => panic!("the stream is open"),
        }
        assert!(queued < 100, "the stream queue has no bound");
    };
    assert_eq!(refused, delta(&chunk));
    assert!(srv.queued_bytes() <= limits().max_stream_queued_bytes);
    // Final frames are always taken.
    assert!(srv.push_result("b", &chat_response(&"y".repeat(600))));
    // Transmitting one frame makes room.
    assert!(matches!(srv.poll_transmit(), Some(Transmit::Text(_))));
    assert_eq!(
        srv.push_chat_event(s(2), "a", delta(&chunk)),
        Pushed::Queued
    );
    // The client reads no more: the stream waits, then is stopped.
    assert!(matches!(
        srv.push_chat_event(s(3), "a", delta(&chunk)),
        Pushed::Full(_)
    ));
    assert_eq!(srv.next_deadline(), Some(s(20))); // the heartbeat comes first
    srv.on_timeout(s(20));
    srv.on_pong(s(21));
    assert!(srv.next_deadline() <= Some(s(33)));
    srv.on_timeout(s(32));
    assert!(actions(&mut srv).is_empty());
    srv.on_timeout(s(33));
    assert_eq!(
        actions(&mut srv),
        [Action::Cancel {
            id: "a".into(),
            reason: CancelReason::Stalled
        }]
    );
    let (texts, close) = transmitted(&mut srv);
    assert_eq!(close, None);
    let last = texts.last().unwrap();
    assert_eq!(last["id"], "a");
    assert_eq!(last["error"]["code"], "stream_interrupted");
    // What was queued of the stream was dropped for the error; the result of `b` stays.
    assert!(
        texts
            .iter()
            .any(|t| t["id"] == "b" && t["type"] == "result")
    );
    assert_eq!(srv.queued_bytes(), 0);
}

#[test]
fn a_stream_waiting_behind_others_is_not_stalled_while_the_client_reads() {
    let mut srv = server();
    srv.on_text(s(0), &request("a", "chat_stream"));
    srv.on_text(s(0), &request("b", "chat_stream"));
    actions(&mut srv);
    let chunk = "x".repeat(100);
    assert_eq!(srv.push_chat_event(s(1), "b", delta("b")), Pushed::Queued);
    while let Pushed::Queued = srv.push_chat_event(s(1), "a", delta(&chunk)) {}
    // `a` waits from 1 s; at 25 s the client reads `b`'s frame, then nothing more.
    srv.on_pong(s(25));
    srv.on_timeout(s(25));
    let Some(Transmit::Text(first)) = srv.poll_transmit() else {
        panic!("a frame is queued");
    };
    assert!(first.contains(r#""id":"b""#), "{first}");
    // `a`'s own queue is still full: it waits again, from 27 s.
    assert!(matches!(
        srv.push_chat_event(s(27), "a", delta(&chunk)),
        Pushed::Full(_)
    ));
    srv.on_pong(s(40));
    srv.on_timeout(s(40));
    assert!(
        actions(&mut srv).is_empty(),
        "stopped although the client read"
    );
    srv.on_pong(s(57));
    srv.on_timeout(s(57));
    assert_eq!(
        actions(&mut srv),
        [Action::Cancel {
            id: "a".into(),
            reason: CancelReason::Stalled
        }]
    );
    assert_eq!(srv.open_kind("b"), Some(OpKind::ChatStream));
}

#[test]
fn the_queue_of_all_streams_is_bounded_too() {
    let wide_streams = Limits {
        max_stream_queued_bytes: 1024,
        ..limits()
    };
    let mut srv = ServerSession::new(s(0), wide_streams, true);
    for id in ["a", "b", "c", "d"] {
        srv.on_text(s(0), &request(id, "chat_stream"));
    }
    actions(&mut srv);
    let chunk = "x".repeat(200);
    for _ in 0..10 {
        for id in ["a", "b", "c", "d"] {
            let _ = srv.push_chat_event(s(1), id, delta(&chunk));
        }
    }
    assert!(srv.queued_bytes() <= limits().max_queued_bytes);
    assert!(srv.queued_bytes() > limits().max_queued_bytes - 300);
}

#[test]
fn a_client_that_sends_without_reading_is_closed() {
    let mut srv = server();
    let mut sent = 0;
    while !srv.is_closed() {
        srv.on_text(s(1), r#"{"id":"q","op":"nonsense"}"#);
        sent += 1;
        assert!(sent < 1000, "the refusals queue has no bound");
        assert!(srv.queued_bytes() <= limits().max_queued_bytes);
    }
    assert_eq!(
        transmitted(&mut srv).1.map(|c| c.0),
        Some(close_code::NOT_READING)
    );
}

#[test]
fn ping_is_answered_with_pong_unless_frames_are_queued() {
    let mut srv = server();
    srv.on_text(s(1), r#"{"op":"ping"}"#);
    assert_eq!(transmitted(&mut srv).0, [json!({"type": "pong"})]);
    srv.on_text(s(1), &request("a", "chat_stream"));
    let _ = srv.push_chat_event(s(1), "a", delta("x"));
    srv.on_text(s(1), r#"{"op":"ping"}"#);
    let (texts, _) = transmitted(&mut srv);
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0]["type"], "event");
}

#[test]
fn the_server_pings_a_silent_client_and_closes_when_it_stays_silent() {
    let mut srv = server();
    srv.on_text(s(1), &request("a", "chat_stream"));
    actions(&mut srv);
    assert_eq!(srv.next_deadline(), Some(s(21)));
    srv.on_timeout(s(21));
    assert_eq!(srv.poll_transmit(), Some(Transmit::Ping));
    // The pong arrives: no close.
    srv.on_pong(s(22));
    srv.on_timeout(s(41));
    assert!(!srv.is_closed());
    assert_eq!(srv.next_deadline(), Some(s(42)));
    srv.on_timeout(s(42));
    assert_eq!(srv.poll_transmit(), Some(Transmit::Ping));
    srv.on_timeout(s(61));
    assert!(!srv.is_closed());
    srv.on_timeout(s(62));
    assert_eq!(
        actions(&mut srv),
        [Action::Cancel {
            id: "a".into(),
            reason: CancelReason::Closed
        }]
    );
    assert_eq!(
        transmitted(&mut srv).1.map(|c| c.0),
        Some(close_code::HEARTBEAT_TIMEOUT)
    );
}

#[test]
fn shutdown_refuses_new_requests_and_closes_after_the_open_ones() {
    let mut srv = server();
    srv.on_text(s(1), &request("a", "chat"));
    actions(&mut srv);
    srv.shut_down();
    srv.on_text(s(1), &request("b", "chat"));
    assert!(actions(&mut srv).is_empty());
    let (texts, close) = transmitted(&mut srv);
    assert_eq!(close, None);
    assert_eq!(texts[0]["id"], "b");
    assert_eq!(texts[0]["error"]["code"], "unavailable");
    assert!(srv.push_result("a", &chat_response("bye")));
    let (texts, close) = transmitted(&mut srv);
    assert_eq!(texts[0]["type"], "result");
    assert_eq!(close.map(|c| c.0), Some(close_code::GOING_AWAY));
}

#[test]
fn a_lost_socket_cancels_every_open_request() {
    let mut srv = server();
    srv.on_text(s(1), &request("a", "chat_stream"));
    srv.on_text(s(1), &request("b", "mcp_call"));
    actions(&mut srv);
    srv.on_closed();
    let mut cancelled: Vec<_> = actions(&mut srv);
    cancelled.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        cancelled,
        [
            Action::Cancel {
                id: "a".into(),
                reason: CancelReason::Closed
            },
            Action::Cancel {
                id: "b".into(),
                reason: CancelReason::Closed
            }
        ]
    );
    assert_eq!(srv.poll_transmit(), None);
    assert!(!srv.push_result("b", &json!({})));
}

// --- client -----------------------------------------------------------------------------------

fn texts_of(client: &mut ClientSession) -> Vec<String> {
    std::iter::from_fn(|| client.poll_transmit())
        .map(|t| match t {
            Transmit::Text(text) => text,
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn the_client_authenticates_first_and_numbers_its_requests() {
    let mut c = ClientSession::new(s(0), limits(), Some("sk-1"));
    let a = c.start(&Operation::Models).unwrap();
    let b = c.start(&Operation::ChatStream(chat_request())).unwrap();
    assert_ne!(a, b);
    assert!(valid_id(&a) && valid_id(&b));
    let sent: Vec<Value> = texts_of(&mut c)
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    assert_eq!(sent[0], json!({"op": "auth", "token": "sk-1"}));
    assert_eq!(sent[1], json!({"id": a, "op": "models"}));
    assert_eq!(sent[2]["op"], "chat_stream");
    assert_eq!(c.open_requests(), 2);
    let c = ClientSession::new(s(0), limits(), Some("sk-secret-1"));
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn losing_the_socket_fails_every_open_request() {
    let mut c = ClientSession::new(s(0), limits(), None);
    let unary = c.start(&Operation::Chat(chat_request())).unwrap();
    let begun = c.start(&Operation::ChatStream(chat_request())).unwrap();
    let waiting = c.start(&Operation::ChatStream(chat_request())).unwrap();
    let event = json!({"type": "event", "id": begun, "event": {"type": "text_delta", "text": "x"}});
    assert!(matches!(
        c.on_text(s(1), &event.to_string()),
        Some(Reply::Event { .. })
    ));
    let failed = c.on_closed(close_code::ABNORMAL, "");
    let code_of = |id: &str| {
        failed
            .iter()
            .find_map(|r| match r {
                Reply::Error { id: i, error } if i == id => Some(error.code),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(failed.len(), 3);
    assert_eq!(code_of(&unary), ErrorCode::NetworkError);
    assert_eq!(code_of(&begun), ErrorCode::StreamInterrupted);
    assert_eq!(code_of(&waiting), ErrorCode::NetworkError);
    assert_eq!(c.open_requests(), 0);
    let later = c.start(&Operation::Models).unwrap_err();
    assert_eq!(later.code, ErrorCode::NetworkError);
    assert!(later.retryable);
    assert!(c.is_closed());
    assert_eq!(c.on_text(s(2), &event.to_string()), None);
}

#[test]
fn close_codes_name_their_cause() {
    let e = error_for_close(
        close_code::POLICY_VIOLATION,
        "the API key is not valid",
        true,
    );
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(e.message.contains("the API key is not valid"));
    assert!(!e.retryable);
    assert_eq!(
        error_for_close(close_code::MESSAGE_TOO_BIG, "", false).code,
        ErrorCode::PayloadTooLarge
    );
    assert_eq!(
        error_for_close(close_code::INTERNAL_ERROR, "", false).code,
        ErrorCode::Internal
    );
    assert_eq!(
        error_for_close(close_code::GOING_AWAY, "", true).code,
        ErrorCode::StreamInterrupted
    );
    assert_eq!(
        error_for_close(close_code::HEARTBEAT_TIMEOUT, "", false).code,
        ErrorCode::NetworkError
    );
}

#[test]
fn the_client_skips_unknown_ids_and_types_and_reports_connection_errors() {
    let mut c = ClientSession::new(s(0), limits(), None);
    let id = c.start(&Operation::Models).unwrap();
    assert_eq!(
        c.on_text(s(1), r#"{"type":"result","id":"999","body":{}}"#),
        None
    );
    assert_eq!(c.on_text(s(1), r#"{"type":"end","id":"999"}"#), None);
    assert_eq!(
        c.on_text(s(1), &format!(r#"{{"type":"progress_v9","id":"{id}"}}"#)),
        None
    );
    assert_eq!(c.on_text(s(1), r#"{"type":"pong"}"#), None);
    let e = ApiError::bad_request("the frame is not a JSON object");
    assert_eq!(
        c.on_text(s(1), &json!({"type": "error", "error": e}).to_string()),
        Some(Reply::Connection(e))
    );
    assert!(matches!(
        c.on_text(s(1), "garbage"),
        Some(Reply::Connection(ApiError {
            code: ErrorCode::UpstreamError,
            ..
        }))
    ));
    assert_eq!(c.open_requests(), 1);
    assert_eq!(
        c.on_text(
            s(1),
            &format!(r#"{{"type":"result","id":"{id}","body":{{"providers":[]}}}}"#)
        ),
        Some(Reply::Result {
            id,
            body: json!({"providers": []})
        })
    );
}

#[test]
fn a_frame_that_does_not_fit_the_request_fails_it_and_cancels_it() {
    let mut c = ClientSession::new(s(0), limits(), None);
    let id = c.start(&Operation::ChatStream(chat_request())).unwrap();
    texts_of(&mut c);
    let reply = c.on_text(
        s(1),
        &format!(r#"{{"type":"result","id":"{id}","body":{{}}}}"#),
    );
    assert!(matches!(
        reply,
        Some(Reply::Error {
            error: ApiError {
                code: ErrorCode::UpstreamError,
                ..
            },
            ..
        })
    ));
    assert_eq!(
        texts_of(&mut c),
        [format!(r#"{{"op":"cancel","id":"{id}"}}"#)]
    );
    let id = c.start(&Operation::ChatStream(chat_request())).unwrap();
    let reply = c.on_text(
        s(1),
        &format!(r#"{{"type":"event","id":"{id}","event":{{"type":"no_such_event"}}}}"#),
    );
    assert!(matches!(reply, Some(Reply::Error { .. })));
    assert_eq!(c.open_requests(), 0);
}

#[test]
fn the_client_refuses_oversize_and_surplus_requests_alone() {
    let mut c = ClientSession::new(s(0), limits(), None);
    let big = McpToolCall {
        server: "fs".into(),
        name: "write".into(),
        arguments: Some(serde_json::Map::from_iter([(
            "text".into(),
            json!("z".repeat(limits().max_frame_bytes)),
        )])),
    };
    let e = c.start(&Operation::McpCall(big)).unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    assert!(texts_of(&mut c).is_empty());
    for _ in 0..limits().max_open_requests {
        c.start(&Operation::Models).unwrap();
    }
    let e = c.start(&Operation::Models).unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(texts_of(&mut c).len(), limits().max_open_requests);
}

#[test]
fn the_client_pings_a_silent_server_and_gives_up_on_it() {
    let mut c = ClientSession::new(s(0), limits(), None);
    let id = c.start(&Operation::Models).unwrap();
    texts_of(&mut c);
    assert!(c.on_timeout(s(19)).is_empty());
    assert!(texts_of(&mut c).is_empty());
    assert!(c.on_timeout(s(20)).is_empty());
    assert_eq!(texts_of(&mut c), [r#"{"op":"ping"}"#]);
    let failed = c.on_timeout(s(40));
    assert_eq!(failed.len(), 1);
    assert!(matches!(
        &failed[0],
        Reply::Error { id: i, error } if *i == id && error.code == ErrorCode::NetworkError
    ));
    assert!(matches!(
        c.poll_transmit(),
        Some(Transmit::Close {
            code: close_code::HEARTBEAT_TIMEOUT,
            ..
        })
    ));
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn a_cancelled_request_hears_nothing_more() {
    let mut c = ClientSession::new(s(0), limits(), None);
    let id = c.start(&Operation::ChatStream(chat_request())).unwrap();
    texts_of(&mut c);
    assert!(c.cancel(&id));
    assert!(!c.cancel(&id));
    assert_eq!(
        texts_of(&mut c),
        [format!(r#"{{"op":"cancel","id":"{id}"}}"#)]
    );
    let late =
        json!({"type": "error", "id": id, "error": ApiError::new(ErrorCode::Aborted, "cancelled")});
    assert_eq!(c.on_text(s(1), &late.to_string()), None);
}

// --- both ends, connected ---------------------------------------------------------------------

/// A client and a server joined without I/O, with a backend that answers each operation.
struct Pair {
    client: ClientSession,
    server: ServerSession,
    replies: Vec<Reply>,
    now: Duration,
}

impl Pair {
    fn new(token: Option<&str>) -> Self {
        Pair {
            client: ClientSession::new(s(0), limits(), token),
            server: ServerSession::new(s(0), limits(), token.is_none()),
            replies: Vec::new(),
            now: s(0),
        }
    }

    fn act(&mut self, acts: &mut Vec<Action>) {
        while let Some(a) = self.server.poll_action() {
            if let Action::Authenticate { token } = &a {
                let ok = token.0 == "sk-good";
                self.server.auth_result(if ok {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        ErrorCode::Unauthorized,
                        "the API key is not valid",
                    ))
                });
            }
            acts.push(a);
        }
    }

    /// Moves frames both ways until neither side has more; returns the server's actions.
    fn pump(&mut self) -> Vec<Action> {
        let mut acts = Vec::new();
        loop {
            let mut moved = false;
            // As a driver does: each frame's actions are carried out before the next frame is
            // read (the token is checked before any request is).
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Text(text) => self.server.on_text(self.now, &text),
                    Transmit::Ping => self.server.on_pong(self.now),
                    Transmit::Close { .. } => self.server.on_closed(),
                }
                self.act(&mut acts);
            }
            self.act(&mut acts);
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                match t {
                    Transmit::Text(text) => {
                        self.replies.extend(self.client.on_text(self.now, &text))
                    }
                    Transmit::Ping => self.server.on_pong(self.now),
                    Transmit::Close { code, reason } => {
                        self.replies.extend(self.client.on_closed(code, &reason));
                    }
                }
            }
            if !moved {
                return acts;
            }
        }
    }
}

#[test]
fn round_trip_of_every_kind_of_answer() {
    let mut p = Pair::new(Some("sk-good"));
    let chat = p.client.start(&Operation::Chat(chat_request())).unwrap();
    let stream = p
        .client
        .start(&Operation::ChatStream(chat_request()))
        .unwrap();
    let tools = p
        .client
        .start(&Operation::McpListTools(McpListQuery {
            server: "fs".into(),
            cursor: None,
        }))
        .unwrap();
    let acts = p.pump();
    assert!(matches!(acts[0], Action::Authenticate { .. }));
    assert_eq!(started_ids(&acts), [&chat, &stream, &tools]);

    // Answers arrive interleaved, in any order.
    let now = s(1);
    assert_eq!(
        p.server.push_chat_event(now, &stream, delta("Hel")),
        Pushed::Queued
    );
    assert!(p.server.push_error(
        &tools,
        &ApiError::new(ErrorCode::NotFound, "no server `fs`")
    ));
    assert_eq!(
        p.server.push_chat_event(now, &stream, delta("lo")),
        Pushed::Queued
    );
    assert!(p.server.push_result(&chat, &chat_response("hi")));
    assert_eq!(
        p.server.push_chat_event(now, &stream, finish()),
        Pushed::Queued
    );
    p.pump();

    let mut text = String::new();
    let mut ended = false;
    for r in &p.replies {
        match r {
            Reply::Result { id, body } => {
                assert_eq!(id, &chat);
                let answer: ChatResponse = serde_json::from_value(body.clone()).unwrap();
                assert_eq!(answer, chat_response("hi"));
            }
            Reply::Event { id, event } => {
                assert_eq!(id, &stream);
                assert!(!ended);
                if let StreamItem::Chat(StreamEvent::TextDelta { text: t }) = event {
                    text.push_str(t);
                }
            }
            Reply::End { id } => {
                assert_eq!(id, &stream);
                ended = true;
            }
            Reply::Error { id, error } => {
                assert_eq!(id, &tools);
                assert_eq!(error.code, ErrorCode::NotFound);
            }
            Reply::Connection(e) => panic!("{e}"),
        }
    }
    assert_eq!((text.as_str(), ended), ("Hello", true));
    assert_eq!(p.client.open_requests(), 0);
    assert_eq!(p.server.open_requests(), 0);
}

#[test]
fn round_trip_cancel_stops_the_server_side_too() {
    let mut p = Pair::new(None);
    let id = p
        .client
        .start(&Operation::McpCallStream(McpToolCall {
            server: "fs".into(),
            name: "slow".into(),
            arguments: None,
        }))
        .unwrap();
    p.pump();
    assert!(p.client.cancel(&id));
    let acts = p.pump();
    assert_eq!(
        acts,
        [Action::Cancel {
            id: id.clone(),
            reason: CancelReason::Client
        }]
    );
    let progress = McpToolEvent::Progress {
        progress: 1.0,
        total: None,
        message: None,
    };
    assert_eq!(p.server.push_tool_event(s(1), &id, progress), Pushed::Gone);
    // The server's `aborted` answer reached a client that had already forgotten the id.
    assert!(p.replies.is_empty());
}

#[test]
fn round_trip_bad_token_fails_the_pipelined_requests_as_unauthorized() {
    let mut p = Pair::new(Some("sk-bad"));
    let id = p.client.start(&Operation::Models).unwrap();
    p.pump();
    assert!(p.server.is_closed());
    assert_eq!(p.replies.len(), 1);
    assert!(matches!(
        &p.replies[0],
        Reply::Error { id: i, error } if *i == id && error.code == ErrorCode::Unauthorized
    ));
}

// --- properties -------------------------------------------------------------------------------

/// Properties over generated schedules (proptest builds natively only).
#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However the streams' events and the socket's writes interleave, and however often the
        /// queue is full, every stream reaches the client whole and in order, and the server's
        /// queue stays within its bound.
        #[test]
        fn interleaved_streams_arrive_whole_and_in_order(
            lengths in proptest::collection::vec(0usize..12, 1..5),
            schedule in proptest::collection::vec((0usize..5, any::<bool>(), 1usize..120), 0..400),
        ) {
            let mut p = Pair::new(None);
            let ids: Vec<String> = lengths
                .iter()
                .map(|_| p.client.start(&Operation::ChatStream(chat_request())).unwrap())
                .collect();
            p.pump();
            let mut sent = vec![0usize; ids.len()];
            let mut done = vec![false; ids.len()];
            let now = s(1);
            let step = |p: &mut Pair, k: usize, size: usize, sent: &mut [usize], done: &mut [bool]| {
                if done[k] {
                    return;
                }
                let event = if sent[k] == lengths[k] {
                    finish()
                } else {
                    delta(&format!("{}:{}:{}", k, sent[k], "x".repeat(size)))
                };
                match p.server.push_chat_event(now, &ids[k], event) {
                    Pushed::Queued if sent[k] == lengths[k] => done[k] = true,
                    Pushed::Queued => sent[k] += 1,
                    Pushed::Full(_) => {}
                    Pushed::Gone => panic!("stream {k} is open"),
                }
                let finals = 200 * ids.len();
                assert!(p.server.queued_bytes() <= limits().max_queued_bytes + finals);
            };
            for (k, write, size) in schedule {
                step(&mut p, k % ids.len(), size, &mut sent, &mut done);
                if write {
                    if let Some(Transmit::Text(text)) = p.server.poll_transmit() {
                        p.replies.extend(p.client.on_text(now, &text));
                    }
                }
            }
            // Then the client reads everything, until every stream has ended.
            for _ in 0..10_000 {
                if done.iter().all(|d| *d) {
                    break;
                }
                for k in 0..ids.len() {
                    step(&mut p, k, 10, &mut sent, &mut done);
                }
                p.pump();
            }
            p.pump();
            prop_assert!(done.iter().all(|d| *d));
            for (k, id) in ids.iter().enumerate() {
                let mine: Vec<&Reply> = p.replies.iter().filter(|r| match r {
                    Reply::Event { id: i, .. } | Reply::End { id: i } => i == id,
                    _ => false,
                }).collect();
                prop_assert_eq!(mine.len(), lengths[k] + 2);
                for (n, r) in mine[..lengths[k]].iter().enumerate() {
                    let Reply::Event { event: StreamItem::Chat(StreamEvent::TextDelta { text }), .. } = r else {
                        panic!("{r:?}");
                    };
                    let prefix = format!("{k}:{n}:");
                    prop_assert!(text.starts_with(&prefix));
                }
                let ended = matches!(mine[lengths[k] + 1], Reply::End { .. });
                prop_assert!(ended);
            }
            prop_assert_eq!(p.client.open_requests(), 0);
            prop_assert_eq!(p.server.queued_bytes(), 0);
        }

        /// Whatever arrives, the server neither panics nor writes anything but JSON, and a close
        /// is its last frame.
        #[test]
        fn any_input_yields_json_frames_or_a_close(
            frames in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    "\\{\"(id|op|body|token)\":\"[a-z_]{0,12}\"(,\"(id|op|body)\":(\"[a-z0-9_]{0,8}\"|\\{\\}|1))?\\}",
                    Just(r#"{"id":"1","op":"chat_stream","body":{"model":"a/b","messages":[]}}"#.to_owned()),
                    Just(r#"{"op":"cancel","id":"1"}"#.to_owned()),
                ],
                0..40,
            ),
            authenticated in any::<bool>(),
        ) {
            let mut srv = ServerSession::new(s(0), limits(), authenticated);
            for (n, f) in frames.iter().enumerate() {
                srv.on_text(s(n as u64), f);
                while let Some(a) = srv.poll_action() {
                    if let Action::Authenticate { .. } = a {
                        srv.auth_result(Ok(()));
                    }
                }
                srv.on_timeout(s(n as u64));
            }
            let mut closed = false;
            while let Some(t) = srv.poll_transmit() {
                prop_assert!(!closed);
                match t {
                    Transmit::Text(text) => {
                        prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
                    }
                    Transmit::Ping => {}
                    Transmit::Close { reason, .. } => {
                        prop_assert!(reason.len() <= 123);
                        closed = true;
                    }
                }
            }
        }
    }
}
