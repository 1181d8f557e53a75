//! MCP through the proxy: the request each operation makes to the proxy's `/api/mcp/*` routes, and
//! how their answers are read. (Direct mode speaks MCP itself, with a session per server.)

use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::mcp::api::{McpGetPrompt, McpReadResource, McpToolCall, McpToolEvent};
use crate::route::{HttpRequest, Method, paths};
use crate::sse::SseDecoder;

/// An MCP operation addressed to the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum McpProxyOp<'a> {
    /// `GET /api/mcp/servers`.
    ListServers,
    /// One page of tools.
    ListTools {
        /// Server name.
        server: &'a str,
        /// The previous page's `nextCursor`.
        cursor: Option<&'a str>,
    },
    /// A tool call; `stream` asks for progress events (`/api/mcp/tool/stream`).
    CallTool {
        /// The call.
        call: &'a McpToolCall,
        /// Whether to receive progress as it happens.
        stream: bool,
    },
    /// One page of resources.
    ListResources {
        /// Server name.
        server: &'a str,
        /// The previous page's `nextCursor`.
        cursor: Option<&'a str>,
    },
    /// Read one resource.
    ReadResource(&'a McpReadResource),
    /// One page of prompts.
    ListPrompts {
        /// Server name.
        server: &'a str,
        /// The previous page's `nextCursor`.
        cursor: Option<&'a str>,
    },
    /// Get a prompt.
    GetPrompt(&'a McpGetPrompt),
}

/// The request for `op` to the proxy at `base_url` (already checked by `RouteTable::proxy`).
pub fn proxy_request(base_url: &str, api_key: Option<&str>, op: &McpProxyOp<'_>) -> HttpRequest {
    let list = |path: &str, server: &str, cursor: Option<&str>| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("server", server);
        if let Some(c) = cursor {
            query.append_pair("cursor", c);
        }
        (Method::Get, format!("{path}?{}", query.finish()), None)
    };
    let (method, path, body) = match op {
        McpProxyOp::ListServers => (Method::Get, paths::MCP_SERVERS.to_owned(), None),
        McpProxyOp::ListTools { server, cursor } => list(paths::MCP_LIST_TOOLS, server, *cursor),
        McpProxyOp::ListResources { server, cursor } => {
            list(paths::MCP_LIST_RESOURCES, server, *cursor)
        }
        McpProxyOp::ListPrompts { server, cursor } => {
            list(paths::MCP_LIST_PROMPTS, server, *cursor)
        }
        McpProxyOp::CallTool { call, stream } => {
            let path = if *stream {
                paths::MCP_TOOL_STREAM
            } else {
                paths::MCP_TOOL
            };
            (Method::Post, path.to_owned(), json(*call))
        }
        McpProxyOp::ReadResource(r) => {
            (Method::Post, paths::MCP_READ_RESOURCE.to_owned(), json(*r))
        }
        McpProxyOp::GetPrompt(p) => (Method::Post, paths::MCP_GET_PROMPT.to_owned(), json(*p)),
    };
    let mut headers = Vec::with_capacity(3);
    if body.is_some() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    if matches!(op, McpProxyOp::CallTool { stream: true, .. }) {
        headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
    }
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        headers.push(("authorization".to_owned(), format!("Bearer {key}")));
    }
    HttpRequest {
        method,
        url: format!("{base_url}{path}"),
        headers,
        body,
    }
}

/// A request body as JSON text; serializing these (strings and JSON values) cannot fail.
fn json<T: serde::Serialize>(body: &T) -> Option<String> {
    Some(serde_json::to_string(body).unwrap_or_default())
}

/// Reads a proxy answer: the result on 2xx, the shared error body otherwise.
pub fn decode_proxy_answer<T: DeserializeOwned>(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    if (200..300).contains(&status) {
        decode_proxy_result(body)
    } else {
        Err(decode_proxy_error(status, retry_after, body))
    }
}

/// Reads the body of a 2xx proxy answer as `T`.
pub fn decode_proxy_result<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    crate::json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("unreadable answer from the proxy: {e}"),
        )
    })
}

/// Reads a non-2xx proxy answer: the shared error body, or an error from the status alone.
pub fn decode_proxy_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> ApiError {
    ErrorBody::parse(body)
        .unwrap_or_else(|| ApiError::from_upstream_status(status, None, retry_after))
}

/// Turns the proxy's tool-call event stream into [`McpToolEvent`]s; a stream that ends without
/// its `result` or `error` yields `stream_interrupted`.
#[derive(Debug, Default)]
pub struct McpToolStreamDecoder {
    sse: SseDecoder,
    done: bool,
}

impl McpToolStreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds body bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<McpToolEvent> {
        let mut out = Vec::new();
        let Self { sse, done } = self;
        sse.push_with(chunk, |e| {
            if *done {
                return;
            }
            let event = McpToolEvent::from_json(e.data.as_bytes()).unwrap_or_else(|err| {
                McpToolEvent::Error {
                    error: ApiError::new(
                        ErrorCode::UpstreamError,
                        format!("unreadable tool event: {err}"),
                    ),
                }
            });
            *done = event.is_terminal();
            out.push(event);
        });
        out
    }

    /// Ends the body; an error if the final event never came.
    pub fn finish(&mut self) -> Option<McpToolEvent> {
        (!std::mem::replace(&mut self.done, true)).then(|| McpToolEvent::Error {
            error: ApiError::new(
                ErrorCode::StreamInterrupted,
                "the tool call's stream ended before its result",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{CallToolResult, ContentBlock, ListToolsResult};

    #[test]
    fn list_routes_encode_the_server_and_cursor() {
        let req = proxy_request(
            "http://p",
            Some("k"),
            &McpProxyOp::ListTools {
                server: "my server&x",
                cursor: Some("c=1"),
            },
        );
        assert_eq!(req.method, Method::Get);
        assert_eq!(
            req.url,
            "http://p/api/mcp/listTools?server=my+server%26x&cursor=c%3D1"
        );
        assert!(req.body.is_none());
        assert!(
            req.headers
                .contains(&("authorization".into(), "Bearer k".into()))
        );
    }

    #[test]
    fn tool_calls_post_their_body_to_the_plain_or_stream_route() {
        let call = McpToolCall {
            server: "s".into(),
            name: "echo".into(),
            arguments: serde_json::json!({"message": "hi"}).as_object().cloned(),
        };
        let plain = proxy_request(
            "http://p",
            None,
            &McpProxyOp::CallTool {
                call: &call,
                stream: false,
            },
        );
        assert_eq!(plain.url, "http://p/api/mcp/tool");
        let sent: McpToolCall = serde_json::from_str(plain.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent, call);
        let streamed = proxy_request(
            "http://p",
            None,
            &McpProxyOp::CallTool {
                call: &call,
                stream: true,
            },
        );
        assert_eq!(streamed.url, "http://p/api/mcp/tool/stream");
        assert!(
            streamed
                .headers
                .contains(&("accept".into(), "text/event-stream".into()))
        );
    }

    #[test]
    fn answers_decode_to_results_or_the_shared_error() {
        let ok: ListToolsResult =
            decode_proxy_answer(200, None, br#"{"tools": [], "nextCursor": "2"}"#).unwrap();
        assert_eq!(ok.next_cursor.as_deref(), Some("2"));
        let body = ApiError::new(ErrorCode::NotFound, "no MCP server named x").to_body_json();
        let e = decode_proxy_answer::<ListToolsResult>(404, None, body.as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = decode_proxy_answer::<ListToolsResult>(503, None, b"gateway down").unwrap_err();
        assert_eq!(e.code, ErrorCode::UpstreamError);
    }

    #[test]
    fn tool_streams_end_with_their_result_or_are_interrupted() {
        let events = [
            McpToolEvent::Progress {
                progress: 1.0,
                total: Some(2.0),
                message: None,
            },
            McpToolEvent::Result {
                result: CallToolResult::success(vec![ContentBlock::text("ok")]),
            },
        ];
        let text: String = events.iter().map(McpToolEvent::to_sse).collect();
        let mut d = McpToolStreamDecoder::new();
        let (head, tail) = text.as_bytes().split_at(text.len() / 2);
        let mut got = d.push(head);
        got.extend(d.push(tail));
        assert_eq!(got, events);
        assert_eq!(d.finish(), None);

        let mut cut = McpToolStreamDecoder::new();
        cut.push(events[0].to_sse().as_bytes());
        assert!(matches!(
            cut.finish(),
            Some(McpToolEvent::Error { error }) if error.code == ErrorCode::StreamInterrupted
        ));
    }
}
