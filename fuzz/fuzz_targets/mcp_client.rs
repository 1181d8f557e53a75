//! The sans-IO MCP client (Streamable HTTP) against a server that answers anything: the status,
//! content type, session header and body of every answer come from the input, JSON or SSE
//! framed. Checked: no panic; the call ends (at most a handful of requests, never a read after
//! the body ended); every request goes to the configured URL; and the outcome, the progress and
//! the requests sent are the same whether the bodies arrive whole or in pieces.
//!
//! Input: `[op][answer][0xFF 0xFE][answer]...`, each answer `[status][content type][flags]
//! [chunk length][body]`. `0xFF 0xFE` never occurs in UTF-8 text, so JSON bodies stay intact.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use rmcp::model::ProtocolVersion;
use serde::de::DeserializeOwned;
use switchyard_fuzz::chunks;
use switchyard_shared::mcp::{McpCall, McpHttpClient, Step};
use switchyard_shared::{ApiError, ErrorCode};

const URL: &str = "http://127.0.0.1:9/mcp";
const STATUSES: [u16; 12] = [200, 200, 202, 400, 401, 404, 405, 408, 413, 429, 500, 503];
const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("text/event-stream"),
    None,
    Some("application/json; charset=utf-8"),
    Some("text/html"),
    Some("application/problem+json"),
];
/// Discover, initialize and its confirmation, the request; then once more after an expired
/// session or a dropped version.
const MOST_REQUESTS: usize = 8;

struct Answer<'a> {
    status: u16,
    headers: Vec<(String, String)>,
    chunk: u8,
    body: &'a [u8],
}

fn answers(data: &[u8]) -> Vec<Answer<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let (segment, next) = match rest.windows(2).position(|w| w == [0xFF, 0xFE]) {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let (head, body) = segment.split_at(segment.len().min(4));
        let byte = |i: usize| head.get(i).copied().unwrap_or(0);
        let mut headers = Vec::new();
        if let Some(ct) = CONTENT_TYPES[usize::from(byte(1)) % CONTENT_TYPES.len()] {
            headers.push(("Content-Type".to_owned(), ct.to_owned()));
        }
        if byte(2) & 1 != 0 {
            headers.push(("Mcp-Session-Id".to_owned(), format!("s-{}", byte(2) >> 1)));
        }
        if byte(2) & 2 != 0 {
            headers.push(("Retry-After".to_owned(), "3".to_owned()));
        }
        out.push(Answer {
            status: STATUSES[usize::from(byte(0)) % STATUSES.len()],
            headers,
            chunk: byte(3),
            body,
        });
        match next {
            Some(next) => rest = next,
            None => return out,
        }
    }
}

/// What one run amounted to, compared between the whole and the split runs.
#[derive(Debug, PartialEq)]
struct Run {
    sent: Vec<String>,
    progress: Vec<String>,
    outcome: Result<String, ApiError>,
}

fn drive<T: DeserializeOwned + Debug>(
    client: &mut McpHttpClient,
    mut call: McpCall<T>,
    answers: &[Answer<'_>],
    split: bool,
    cancel_at: Option<usize>,
) -> Run {
    let mut run = Run {
        sent: Vec::new(),
        progress: Vec::new(),
        outcome: Err(ApiError::internal("no more answers")),
    };
    let mut answers = answers.iter();
    let mut body: Vec<&[u8]> = Vec::new();
    let mut ended = true;
    loop {
        match call.poll(client) {
            Step::Send(request) => {
                assert_eq!(request.url, URL, "requests go where the client was pointed");
                run.sent.push(format!("{request:?}"));
                assert!(run.sent.len() <= MOST_REQUESTS, "{:#?}", run.sent);
                let Some(answer) = answers.next() else {
                    return run;
                };
                call.on_response(answer.status, &answer.headers);
                // Cancelling once a response has begun is the same moment however its body is
                // split.
                if cancel_at == Some(run.sent.len()) {
                    if let Some(notice) = call.cancel(client, None) {
                        assert_eq!(notice.url, URL);
                    }
                    match call.poll(client) {
                        Step::Failed(e) => assert_eq!(e.code, ErrorCode::Aborted, "{e:?}"),
                        other => panic!("a cancelled call went on: {other:?}"),
                    }
                    run.outcome = Err(ApiError::new(ErrorCode::Aborted, "cancelled"));
                    return run;
                }
                body = if split {
                    chunks(&[answer.chunk], answer.body)
                } else {
                    vec![answer.body]
                };
                body.reverse();
                ended = false;
            }
            Step::Receive => {
                assert!(!ended, "asked to read after the body ended");
                match body.pop() {
                    Some(chunk) => call.on_body(chunk),
                    None => {
                        call.on_end();
                        ended = true;
                    }
                }
            }
            Step::Progress(p) => run.progress.push(format!("{p:?}")),
            Step::Done(result) => {
                run.outcome = Ok(format!("{result:?}"));
                return run;
            }
            Step::Failed(error) => {
                run.outcome = Err(error);
                return run;
            }
        }
    }
}

fn client(pin: u8) -> McpHttpClient {
    let client =
        McpHttpClient::new(URL, vec![("authorization".into(), "Bearer k".into())]).unwrap();
    match pin % 3 {
        0 => client,
        1 => client
            .with_protocol_version(ProtocolVersion::V_2026_07_28)
            .unwrap(),
        _ => client
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
            .unwrap(),
    }
}

fn run_op(op: u8, answers: &[Answer<'_>], split: bool) -> Run {
    let mut client = client(op >> 2);
    let cancel_at = (op & 0x80 != 0).then_some(usize::from(op >> 4 & 3) + 1);
    let run = match op % 4 {
        0 => {
            let call = client.connect();
            drive(&mut client, call, answers, split, cancel_at)
        }
        1 => {
            let call = client.list_tools(Some("c1".into()));
            drive(&mut client, call, answers, split, cancel_at)
        }
        2 => {
            let args = serde_json::json!({"message": "hi"});
            let call = client.call_tool("echo", args.as_object().cloned(), true);
            drive(&mut client, call, answers, split, cancel_at)
        }
        _ => {
            let call = client.read_resource("notes://note/1");
            drive(&mut client, call, answers, split, cancel_at)
        }
    };
    // Whatever happened, the client can still describe itself and be closed.
    let _ = format!("{client:?}");
    if let Some(delete) = client.close() {
        assert_eq!(delete.url, URL);
    }
    run
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let answers = answers(rest);
    let whole = run_op(op, &answers, false);
    let split = run_op(op, &answers, true);
    assert_eq!(split, whole);
});
