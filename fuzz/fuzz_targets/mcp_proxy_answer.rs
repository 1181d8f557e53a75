//! What the SDK's proxy mode reads from the proxy's MCP routes: tool-call event streams (the same
//! events for any split, exactly one terminal event and it is last, and each event survives its
//! own encoding) and JSON answers (a result only on 2xx, the shared error body otherwise).
//!
//! serde_json reads a long decimal to within one unit in the last place unless its
//! `float_roundtrip` feature is on (it is not: it costs parsing speed and `.wasm` size), so a
//! number may change in its last bit when re-encoded: numbers are compared that closely.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rmcp::model::{CallToolResult, ListToolsResult};
use serde_json::Value;
use switchyard_fuzz::{Split, bytes};
use switchyard_shared::ErrorCode;
use switchyard_shared::mcp::{McpToolEvent, McpToolStreamDecoder, decode_proxy_answer};

fn decode(chunks: &[&[u8]]) -> Vec<McpToolEvent> {
    let mut decoder = McpToolStreamDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(decoder.push(chunk));
    }
    events.extend(decoder.finish());
    assert!(decoder.finish().is_none(), "a second end");
    events
}

fn stream(data: &[u8]) {
    let input = Split::read(data);
    let events = decode(&[input.body]);
    assert_eq!(decode(&input.chunks()), events);
    assert_eq!(decode(&bytes(input.body)), events);
    let terminal = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminal, 1, "{events:?}");
    assert!(events.last().is_some_and(McpToolEvent::is_terminal));
    let encoded: String = events.iter().map(McpToolEvent::to_sse).collect();
    let again = decode(&[encoded.as_bytes()]);
    assert_eq!(again.len(), events.len(), "{encoded:?}");
    for (a, b) in again.iter().zip(&events) {
        let (a, b) = (
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap(),
        );
        assert!(close(&a, &b), "{a} became {b}");
    }
}

/// Equal, but for numbers one or two units apart in their last place.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_sign_negative() == y.is_sign_negative() => {
                x.to_bits().abs_diff(y.to_bits()) <= 2
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

fn answer(status: u16, body: &[u8]) {
    let success = (200..300).contains(&status);
    let tools = decode_proxy_answer::<ListToolsResult>(status, Some("2"), body);
    let call = decode_proxy_answer::<CallToolResult>(status, Some("2"), body);
    for error in [tools.err(), call.err()].into_iter().flatten() {
        if success {
            assert_eq!(error.code, ErrorCode::UpstreamError, "{error:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data {
        [0, rest @ ..] => stream(rest),
        [_, a, b, body @ ..] => answer(100 + u16::from_le_bytes([*a, *b]) % 500, body),
        _ => {}
    }
});
