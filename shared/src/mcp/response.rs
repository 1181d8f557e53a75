//! Reading one HTTP answer of the Streamable HTTP transport into the JSON-RPC answer it carries.
//!
//! A POSTed request is answered either with `application/json` (one JSON-RPC response) or with
//! `text/event-stream`, whose events carry JSON-RPC messages: the server's notifications and
//! requests first, then the response with the request's id. A notification is answered `202
//! Accepted` with no body. An HTTP error may carry a JSON-RPC error in its body. The reader takes
//! the status and headers, then body chunks split anywhere, and settles on one [`Answer`].

use std::collections::VecDeque;

use rmcp::model::{NumberOrString, ProgressNotificationParam};
use serde_json::Value;

use super::headers;
use super::jsonrpc::{Incoming, RpcError, id_matches};
use crate::sse::{SseDecoder, SseEvent};

/// What the reader is waiting for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// The id of the request sent; `None` when a notification was sent.
    pub id: Option<i64>,
    /// The progress token the request carried, when progress was asked for.
    pub progress_token: Option<i64>,
}

/// What one HTTP answer amounted to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// The response to the request: a result. `message` is the whole JSON-RPC message, from which
    /// the expected result type is read.
    Result {
        message: Vec<u8>,
        result_type: Option<String>,
    },
    /// A JSON-RPC error: the response to the request, or the body of an HTTP error.
    Error(RpcError),
    /// A 2xx answer to a notification.
    Accepted,
    /// A non-2xx answer without a JSON-RPC error; `message` is its text, when it says something.
    Http { message: Option<String> },
    /// The body ended before the response to the request.
    Interrupted,
    /// The server answered with something that is not MCP.
    Unreadable(String),
}

/// Reads one HTTP answer.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    /// The HTTP status.
    pub status: u16,
    /// The `Mcp-Session-Id` header, if the server sent one.
    pub session_id: Option<String>,
    /// The `Retry-After` header, for 429 and 503.
    pub retry_after: Option<String>,
    expect: Expect,
    body: Body,
    answer: Option<Answer>,
}

#[derive(Debug)]
enum Body {
    /// 2xx `application/json` (or no content type): read whole, parsed at the end.
    Json(Vec<u8>),
    /// 2xx `text/event-stream`: each message is handled as soon as its event completes, so
    /// progress reaches the caller while the request runs.
    Sse(SseDecoder),
    /// Not 2xx: the first bytes, to look for a JSON-RPC error or an explanation.
    Error(Vec<u8>),
    /// Nothing more to read: the answer is known.
    Done,
}

/// Error bodies are kept up to this size; explanations are short, and an error page must not
/// fill memory.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

impl ResponseReader {
    /// Starts reading an answer from its status and headers.
    pub fn new(status: u16, headers: &[(String, String)], expect: Expect) -> Self {
        let value = |name: &str| {
            headers::find(headers, name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let media_type = headers::find(headers, "content-type").map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let mut answer = None;
        let body = if !(200..300).contains(&status) {
            Body::Error(Vec::new())
        } else if expect.id.is_none() {
            // A notification has been taken; whatever the body says does not matter.
            answer = Some(Answer::Accepted);
            Body::Done
        } else {
            match media_type.as_deref() {
                None | Some("application/json") => Body::Json(Vec::new()),
                Some("text/event-stream") => Body::Sse(SseDecoder::new()),
                Some(t) if t.ends_with("+json") => Body::Json(Vec::new()),
                Some(other) => {
                    answer = Some(Answer::Unreadable(format!(
                        "the MCP server answered with content-type {other:?} instead of JSON or an event stream"
                    )));
                    Body::Done
                }
            }
        };
        ResponseReader {
            status,
            session_id: value(headers::SESSION_ID),
            retry_after: value("retry-after"),
            expect,
            body,
            answer,
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Feeds body bytes. Progress notifications for the request are appended to `progress`, in
    /// the order they arrive.
    pub fn push(&mut self, chunk: &[u8], progress: &mut VecDeque<ProgressNotificationParam>) {
        let events = match &mut self.body {
            Body::Json(buf) => {
                buf.extend_from_slice(chunk);
                return;
            }
            Body::Error(buf) => {
                let room = ERROR_BODY_LIMIT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                return;
            }
            Body::Sse(decoder) => decoder.push(chunk),
            Body::Done => return,
        };
        for event in events {
            self.on_event(event, progress);
            if self.answer.is_some() {
                // Whatever follows the response is not for this request.
                self.body = Body::Done;
                return;
            }
        }
    }

    /// The body has ended: settles the answer.
    pub fn finish(&mut self) {
        if self.answer.is_some() {
            return;
        }
        self.answer = Some(match std::mem::replace(&mut self.body, Body::Done) {
            Body::Json(buf) => {
                let text = buf.trim_ascii_start();
                if text.is_empty() {
                    Answer::Interrupted
                } else if text.starts_with(b"[") {
                    Answer::Unreadable("the MCP server answered with a JSON-RPC batch".into())
                } else {
                    self.on_message(buf, &mut VecDeque::new());
                    self.answer.take().unwrap_or(Answer::Interrupted)
                }
            }
            Body::Error(buf) => error_answer(&buf),
            Body::Sse(_) | Body::Done => Answer::Interrupted,
        });
    }

    /// The answer, once it is known (possibly before the body has ended).
    pub fn answer(&self) -> Option<&Answer> {
        self.answer.as_ref()
    }

    /// Takes the answer, once it is known.
    pub fn take_answer(&mut self) -> Option<Answer> {
        self.answer.take()
    }

    fn on_event(&mut self, event: SseEvent, progress: &mut VecDeque<ProgressNotificationParam>) {
        // Events of other types are not JSON-RPC messages; events without data are the priming
        // events servers send to make a stream resumable (`id: X`, `data: `).
        if event.event.as_deref().is_some_and(|e| e != "message") || event.data.trim().is_empty() {
            return;
        }
        self.on_message(event.data.into_bytes(), progress);
    }

    /// Handles one JSON-RPC message; takes its bytes so that a result is kept without a copy.
    fn on_message(&mut self, bytes: Vec<u8>, progress: &mut VecDeque<ProgressNotificationParam>) {
        let msg: Incoming = match crate::json::from_slice(&bytes) {
            Ok(msg) => msg,
            Err(e) => {
                self.answer = Some(Answer::Unreadable(format!(
                    "the MCP server sent a message that is not JSON-RPC: {e}"
                )));
                return;
            }
        };
        if let Some(method) = &msg.method {
            if msg.id.is_none() && method == "notifications/progress" {
                if let Some(p) = self.progress_of(&bytes) {
                    progress.push_back(p);
                }
            }
            // Other notifications, and server requests (sampling, elicitation, roots, ping), are
            // not answered by this client: it declares no capabilities that invite them.
            return;
        }
        let Some(expected) = self.expect.id else {
            return;
        };
        let ours = |id: &Option<Value>| id.as_ref().is_some_and(|id| id_matches(id, expected));
        self.answer = match (msg.error, msg.result) {
            // An error with a null id is about a message the server could not read: ours.
            (Some(error), _) if msg.id.is_none() || ours(&msg.id) => Some(Answer::Error(error)),
            (None, Some(head)) if ours(&msg.id) => Some(Answer::Result {
                message: bytes,
                result_type: head.result_type,
            }),
            (None, None) if ours(&msg.id) => Some(Answer::Unreadable(
                "the MCP server sent a response with neither result nor error".into(),
            )),
            // A response to another request: not for this exchange.
            _ => None,
        };
    }

    /// The progress a notification reports, if it is for this request. Its `params` are read
    /// from the message's bytes (as a result is) rather than from a JSON value, so that the
    /// progress types are compiled for one reader only.
    fn progress_of(&self, message: &[u8]) -> Option<ProgressNotificationParam> {
        #[derive(serde::Deserialize)]
        struct Notification {
            params: ProgressNotificationParam,
        }
        let token = self.expect.progress_token?;
        let p = crate::json::from_slice::<Notification>(message)
            .ok()?
            .params;
        let ours = match &p.progress_token.0 {
            NumberOrString::Number(n) => *n == token,
            NumberOrString::String(s) => s.parse::<i64>().ok() == Some(token),
        };
        ours.then_some(p)
    }
}

fn error_answer(body: &[u8]) -> Answer {
    if let Ok(Incoming {
        error: Some(error), ..
    }) = crate::json::from_slice::<Incoming>(body)
    {
        return Answer::Error(error);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    // An HTML error page says nothing a caller can use.
    let message = (!text.is_empty() && !text.starts_with('<')).then(|| text.to_owned());
    Answer::Http { message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(content_type: &str) -> Vec<(String, String)> {
        vec![("Content-Type".into(), content_type.into())]
    }

    const REQUEST: Expect = Expect {
        id: Some(5),
        progress_token: Some(5),
    };

    fn read(status: u16, content_type: &str, body: &[u8], split: usize) -> (Answer, usize) {
        let mut reader = ResponseReader::new(status, &headers(content_type), REQUEST);
        let mut progress = VecDeque::new();
        for chunk in body.chunks(split.max(1)) {
            reader.push(chunk, &mut progress);
        }
        reader.finish();
        (reader.take_answer().unwrap(), progress.len())
    }

    fn sse(messages: &[Value]) -> String {
        messages
            .iter()
            .map(|m| crate::sse::encode(None, &m.to_string()))
            .collect()
    }

    #[test]
    fn json_and_sse_bodies_give_the_same_answer_for_any_split() {
        let response = json!({"jsonrpc": "2.0", "id": 5, "result": {"tools": []}});
        let stream = format!(
            "id: prime\ndata: \n\n{}",
            sse(&[
                json!({"jsonrpc": "2.0", "method": "notifications/progress",
                       "params": {"progressToken": 5, "progress": 1}}),
                json!({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "info", "data": "x"}}),
                json!({"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage", "params": {}}),
                json!({"jsonrpc": "2.0", "id": 4, "result": {}}),
                response.clone(),
            ])
        );
        for split in [1, 2, 3, 7, 64, usize::MAX] {
            let (answer, n) = read(
                200,
                "application/json",
                response.to_string().as_bytes(),
                split,
            );
            assert!(
                matches!(answer, Answer::Result { ref message, .. } if serde_json::from_slice::<Value>(message).unwrap() == response),
                "{answer:?}"
            );
            assert_eq!(n, 0);
            let (answer, n) = read(200, "text/event-stream", stream.as_bytes(), split);
            assert!(matches!(answer, Answer::Result { .. }), "{answer:?}");
            assert_eq!(n, 1, "split {split}");
        }
    }

    #[test]
    fn answers_of_each_kind() {
        let err = json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -32602, "message": "bad"}});
        let cases: Vec<(u16, &str, String, Answer)> = vec![
            (
                200,
                "application/json; charset=utf-8",
                err.to_string(),
                Answer::Error(RpcError {
                    code: -32602,
                    message: "bad".into(),
                    data: None,
                }),
            ),
            (200, "application/json", String::new(), Answer::Interrupted),
            (
                200,
                "text/event-stream",
                "data: {\"jsonrpc\":\"2.0\",\"id\":5,\"res".into(),
                Answer::Interrupted,
            ),
            (
                404,
                "application/json",
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": "Session not found"}}).to_string(),
                Answer::Error(RpcError {
                    code: -32001,
                    message: "Session not found".into(),
                    data: None,
                }),
            ),
            (
                502,
                "text/plain",
                " upstream down \n".into(),
                Answer::Http {
                    message: Some("upstream down".into()),
                },
            ),
            (
                500,
                "text/html",
                "<html>oops</html>".into(),
                Answer::Http { message: None },
            ),
            (
                200,
                "application/json",
                "[]".into(),
                Answer::Unreadable("the MCP server answered with a JSON-RPC batch".into()),
            ),
        ];
        for (status, ct, body, expected) in cases {
            assert_eq!(read(status, ct, body.as_bytes(), 3).0, expected, "{body}");
        }
        assert!(matches!(
            read(200, "text/html", b"<html>", 3).0,
            Answer::Unreadable(m) if m.contains("text/html")
        ));
        assert!(matches!(
            read(200, "text/event-stream", b"data: not json\n\n", 3).0,
            Answer::Unreadable(m) if m.contains("not JSON-RPC")
        ));
    }

    #[test]
    fn the_answer_is_known_before_the_stream_ends_and_later_bytes_are_ignored() {
        let mut reader = ResponseReader::new(200, &headers("text/event-stream"), REQUEST);
        let mut progress = VecDeque::new();
        let body = sse(&[json!({"jsonrpc": "2.0", "id": 5, "result": {}})]);
        reader.push(body.as_bytes(), &mut progress);
        assert!(matches!(reader.answer(), Some(Answer::Result { .. })));
        reader.push(
            b"data: {\"jsonrpc\":\"2.0\",\"id\":5,\"error\":{\"code\":1}}\n\n",
            &mut progress,
        );
        reader.finish();
        assert!(matches!(reader.take_answer(), Some(Answer::Result { .. })));
    }

    #[test]
    fn notifications_are_accepted_on_any_2xx_and_read_headers() {
        let mut h = headers("text/plain");
        h.push(("MCP-Session-Id".into(), " s1 ".into()));
        h.push(("Retry-After".into(), "3".into()));
        let expect = Expect {
            id: None,
            progress_token: None,
        };
        let reader = ResponseReader::new(202, &h, expect);
        assert_eq!(reader.answer(), Some(&Answer::Accepted));
        assert_eq!(reader.session_id.as_deref(), Some("s1"));
        assert_eq!(reader.retry_after.as_deref(), Some("3"));
        assert!(ResponseReader::new(400, &h, expect).answer().is_none());
    }

    #[test]
    fn progress_is_kept_only_for_the_requests_token() {
        let notes = sse(&[
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": 5, "progress": 1, "total": 3, "message": "a"}}),
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": 6, "progress": 2}}),
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": "5", "progress": 2}}),
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progress": 2}}),
        ]);
        let mut reader = ResponseReader::new(200, &headers("text/event-stream"), REQUEST);
        let mut progress = VecDeque::new();
        reader.push(notes.as_bytes(), &mut progress);
        let got: Vec<(f64, Option<f64>)> = progress.iter().map(|p| (p.progress, p.total)).collect();
        assert_eq!(got, vec![(1.0, Some(3.0)), (2.0, None)]);

        let mut reader = ResponseReader::new(
            200,
            &headers("text/event-stream"),
            Expect {
                id: Some(5),
                progress_token: None,
            },
        );
        let mut progress = VecDeque::new();
        reader.push(notes.as_bytes(), &mut progress);
        assert!(progress.is_empty());
    }

    #[test]
    fn error_bodies_are_bounded() {
        let mut reader = ResponseReader::new(500, &headers("text/plain"), REQUEST);
        let mut progress = VecDeque::new();
        for _ in 0..100 {
            reader.push(&[b'x'; 1024], &mut progress);
        }
        reader.finish();
        match reader.take_answer() {
            Some(Answer::Http { message: Some(m) }) => assert_eq!(m.len(), ERROR_BODY_LIMIT),
            other => panic!("{other:?}"),
        }
    }
}
