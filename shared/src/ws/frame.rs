//! The frames themselves: the operations and their bodies, and how each frame is written and read.

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::chat::ChatRequest;
use crate::error::ApiError;
use crate::mcp::api::{McpGetPrompt, McpListQuery, McpReadResource, McpToolCall};
use crate::route::paths;

use super::{MAX_ID_LEN, Token, valid_id};

/// The kind of a request, named as on the wire (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `chat`
    Chat,
    /// `chat_stream`
    ChatStream,
    /// `models`
    Models,
    /// `mcp_servers`
    McpServers,
    /// `mcp_list_tools`
    McpListTools,
    /// `mcp_call`
    McpCall,
    /// `mcp_call_stream`
    McpCallStream,
    /// `mcp_list_resources`
    McpListResources,
    /// `mcp_read_resource`
    McpReadResource,
    /// `mcp_list_prompts`
    McpListPrompts,
    /// `mcp_get_prompt`
    McpGetPrompt,
}

impl OpKind {
    /// Every kind, in the order of the HTTP API's documentation.
    pub const ALL: [OpKind; 11] = [
        OpKind::Chat,
        OpKind::ChatStream,
        OpKind::Models,
        OpKind::McpServers,
        OpKind::McpListTools,
        OpKind::McpCall,
        OpKind::McpCallStream,
        OpKind::McpListResources,
        OpKind::McpReadResource,
        OpKind::McpListPrompts,
        OpKind::McpGetPrompt,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Chat => "chat",
            OpKind::ChatStream => "chat_stream",
            OpKind::Models => "models",
            OpKind::McpServers => "mcp_servers",
            OpKind::McpListTools => "mcp_list_tools",
            OpKind::McpCall => "mcp_call",
            OpKind::McpCallStream => "mcp_call_stream",
            OpKind::McpListResources => "mcp_list_resources",
            OpKind::McpReadResource => "mcp_read_resource",
            OpKind::McpListPrompts => "mcp_list_prompts",
            OpKind::McpGetPrompt => "mcp_get_prompt",
        }
    }

    /// The kind named `name` on the wire.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The HTTP route this operation stands for: audit records and metrics use it as the route,
    /// so a request counts alike over HTTP and over the socket.
    pub fn http_path(self) -> &'static str {
        match self {
            OpKind::Chat => paths::LLM_CHAT,
            OpKind::ChatStream => paths::LLM_STREAM,
            OpKind::Models => paths::LLM_MODELS,
            OpKind::McpServers => paths::MCP_SERVERS,
            OpKind::McpListTools => paths::MCP_LIST_TOOLS,
            OpKind::McpCall => paths::MCP_TOOL,
            OpKind::McpCallStream => paths::MCP_TOOL_STREAM,
            OpKind::McpListResources => paths::MCP_LIST_RESOURCES,
            OpKind::McpReadResource => paths::MCP_READ_RESOURCE,
            OpKind::McpListPrompts => paths::MCP_LIST_PROMPTS,
            OpKind::McpGetPrompt => paths::MCP_GET_PROMPT,
        }
    }

    /// Whether the answer is a stream of `event`s ending with `end`, rather than one `result`.
    pub fn is_stream(self) -> bool {
        matches!(self, OpKind::ChatStream | OpKind::McpCallStream)
    }
}

/// A request with its body: the same types the HTTP routes read.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// A chat completion.
    Chat(ChatRequest),
    /// A streamed chat completion.
    ChatStream(ChatRequest),
    /// The configured providers and models.
    Models,
    /// The configured MCP servers.
    McpServers,
    /// One page of a server's tools.
    McpListTools(McpListQuery),
    /// A tool call.
    McpCall(McpToolCall),
    /// A tool call with progress events.
    McpCallStream(McpToolCall),
    /// One page of a server's resources.
    McpListResources(McpListQuery),
    /// Read a resource.
    McpReadResource(McpReadResource),
    /// One page of a server's prompts.
    McpListPrompts(McpListQuery),
    /// Get a prompt.
    McpGetPrompt(McpGetPrompt),
}

impl Operation {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Operation::Chat(_) => OpKind::Chat,
            Operation::ChatStream(_) => OpKind::ChatStream,
            Operation::Models => OpKind::Models,
            Operation::McpServers => OpKind::McpServers,
            Operation::McpListTools(_) => OpKind::McpListTools,
            Operation::McpCall(_) => OpKind::McpCall,
            Operation::McpCallStream(_) => OpKind::McpCallStream,
            Operation::McpListResources(_) => OpKind::McpListResources,
            Operation::McpReadResource(_) => OpKind::McpReadResource,
            Operation::McpListPrompts(_) => OpKind::McpListPrompts,
            Operation::McpGetPrompt(_) => OpKind::McpGetPrompt,
        }
    }

    /// Reads the body of a request of kind `kind`; absent for the kinds that take none.
    fn read(kind: OpKind, body: Option<Value>) -> Result<Operation, ApiError> {
        fn typed<T: DeserializeOwned>(kind: OpKind, body: Option<Value>) -> Result<T, ApiError> {
            let body = body.ok_or_else(|| {
                ApiError::bad_request(format!("`{}` needs a `body`", kind.as_str()))
            })?;
            serde_json::from_value(body).map_err(|e| {
                let e = e.to_string();
                let e = crate::error::truncate(&e, 500);
                ApiError::bad_request(format!("invalid `body` for `{}`: {e}", kind.as_str()))
            })
        }
        Ok(match kind {
            OpKind::Chat => Operation::Chat(typed(kind, body)?),
            OpKind::ChatStream => Operation::ChatStream(typed(kind, body)?),
            OpKind::Models | OpKind::McpServers => {
                if body.is_some_and(|b| !b.is_null()) {
                    return Err(ApiError::bad_request(format!(
                        "`{}` takes no `body`",
                        kind.as_str()
                    )));
                }
                match kind {
                    OpKind::Models => Operation::Models,
                    _ => Operation::McpServers,
                }
            }
            OpKind::McpListTools => Operation::McpListTools(typed(kind, body)?),
            OpKind::McpCall => Operation::McpCall(typed(kind, body)?),
            OpKind::McpCallStream => Operation::McpCallStream(typed(kind, body)?),
            OpKind::McpListResources => Operation::McpListResources(typed(kind, body)?),
            OpKind::McpReadResource => Operation::McpReadResource(typed(kind, body)?),
            OpKind::McpListPrompts => Operation::McpListPrompts(typed(kind, body)?),
            OpKind::McpGetPrompt => Operation::McpGetPrompt(typed(kind, body)?),
        })
    }
}

/// A request frame as written: `{"id", "op", "body"}`.
pub(super) struct RequestFrame<'a> {
    pub id: &'a str,
    pub op: &'a Operation,
}

impl Serialize for RequestFrame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("op", self.op.kind().as_str())?;
        match self.op {
            Operation::Chat(b) | Operation::ChatStream(b) => m.serialize_entry("body", b)?,
            Operation::Models | Operation::McpServers => {}
            Operation::McpListTools(q)
            | Operation::McpListResources(q)
            | Operation::McpListPrompts(q) => m.serialize_entry("body", q)?,
            Operation::McpCall(c) | Operation::McpCallStream(c) => m.serialize_entry("body", c)?,
            Operation::McpReadResource(r) => m.serialize_entry("body", r)?,
            Operation::McpGetPrompt(p) => m.serialize_entry("body", p)?,
        }
        m.end()
    }
}

/// The text of a request frame.
pub(super) fn request_text(id: &str, op: &Operation) -> String {
    to_text(&RequestFrame { id, op })
}

/// The text of the `auth` frame.
pub(super) fn auth_text(token: &str) -> String {
    #[derive(Serialize)]
    struct Auth<'a> {
        op: &'static str,
        token: &'a str,
    }
    to_text(&Auth { op: "auth", token })
}

/// The text of a `cancel` frame.
pub(super) fn cancel_text(id: &str) -> String {
    #[derive(Serialize)]
    struct Cancel<'a> {
        op: &'static str,
        id: &'a str,
    }
    to_text(&Cancel { op: "cancel", id })
}

/// The text of the client's `ping` frame.
pub(super) const PING_TEXT: &str = r#"{"op":"ping"}"#;

/// The text of the server's `pong` frame.
pub(super) const PONG_TEXT: &str = r#"{"type":"pong"}"#;

/// A client frame, read.
#[derive(Debug, PartialEq)]
pub(super) enum ClientFrame {
    Auth(Token),
    Request { id: String, op: Box<Operation> },
    Cancel { id: String },
    Ping,
}

/// Why a client frame was refused: either the frame cannot be tied to a request (`id: None`), or
/// it is a request whose `op` or `body` is wrong.
#[derive(Debug, PartialEq)]
pub(super) struct FrameError {
    pub id: Option<String>,
    pub error: ApiError,
}

impl FrameError {
    fn connection(message: impl Into<String>) -> Self {
        FrameError {
            id: None,
            error: ApiError::bad_request(message),
        }
    }
}

/// Reads a client frame. Members are checked by hand rather than by a derived type so that a
/// request with a wrong `op` or `body` is still answered under its `id`.
pub(super) fn read_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let mut members: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        let e = e.to_string();
        let e = crate::error::truncate(&e, 500);
        FrameError::connection(format!("the frame is not a JSON object: {e}"))
    })?;
    let op = match members.remove("op") {
        Some(Value::String(op)) => op,
        _ => return Err(FrameError::connection("the frame has no string `op`")),
    };
    let id = match members.remove("id") {
        None => None,
        Some(Value::String(id)) if valid_id(&id) => Some(id),
        Some(_) => {
            return Err(FrameError::connection(format!(
                "`id` must be a string of 1 to {MAX_ID_LEN} characters from A-Z a-z 0-9 . _ : -"
            )));
        }
    };
    let allowed: &[&str] = match op.as_str() {
        "auth" => &["token"],
        "cancel" | "ping" => &[],
        _ => &["body"],
    };
    if let Some(extra) = members.keys().find(|k| !allowed.contains(&k.as_str())) {
        let extra = crate::error::truncate(extra, 64);
        return Err(FrameError {
            id: id.filter(|_| !matches!(op.as_str(), "auth" | "cancel" | "ping")),
            error: ApiError::bad_request(format!("unknown member `{extra}` in a `{op}` frame")),
        });
    }
    match op.as_str() {
        "auth" => match (id, members.remove("token")) {
            (None, Some(Value::String(token))) => Ok(ClientFrame::Auth(Token(token))),
            _ => Err(FrameError::connection(
                "`auth` takes a string `token` and no `id`",
            )),
        },
        "ping" => match id {
            None => Ok(ClientFrame::Ping),
            Some(_) => Err(FrameError::connection("`ping` takes no `id`")),
        },
        "cancel" => match id {
            Some(id) => Ok(ClientFrame::Cancel { id }),
            None => Err(FrameError::connection("`cancel` needs an `id`")),
        },
        name => {
            let Some(id) = id else {
                return Err(FrameError::connection(format!(
                    "`{}` needs an `id`",
                    crate::error::truncate(name, 64)
                )));
            };
            let Some(kind) = OpKind::from_name(name) else {
                let error = ApiError::bad_request(format!(
                    "unknown `op` `{}`",
                    crate::error::truncate(name, 64)
                ));
                return Err(FrameError {
                    id: Some(id),
                    error,
                });
            };
            match Operation::read(kind, members.remove("body")) {
                Ok(op) => Ok(ClientFrame::Request {
                    id,
                    op: Box::new(op),
                }),
                Err(error) => Err(FrameError {
                    id: Some(id),
                    error,
                }),
            }
        }
    }
}

/// The text of a `result` frame; `None` if `body` cannot be written as JSON.
pub(super) fn result_text<T: Serialize + ?Sized>(id: &str, body: &T) -> Option<String> {
    #[derive(Serialize)]
    struct Result<'a, T: ?Sized> {
        r#type: &'static str,
        id: &'a str,
        body: &'a T,
    }
    serde_json::to_string(&Result {
        r#type: "result",
        id,
        body,
    })
    .ok()
}

/// The text of an `event` frame; `None` if `event` cannot be written as JSON.
pub(super) fn event_text<T: Serialize + ?Sized>(id: &str, event: &T) -> Option<String> {
    #[derive(Serialize)]
    struct Event<'a, T: ?Sized> {
        r#type: &'static str,
        id: &'a str,
        event: &'a T,
    }
    serde_json::to_string(&Event {
        r#type: "event",
        id,
        event,
    })
    .ok()
}

/// The text of an `end` frame.
pub(super) fn end_text(id: &str) -> String {
    #[derive(Serialize)]
    struct End<'a> {
        r#type: &'static str,
        id: &'a str,
    }
    to_text(&End { r#type: "end", id })
}

/// The text of an `error` frame, for a request or (`id: None`) for the connection.
pub(super) fn error_text(id: Option<&str>, error: &ApiError) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        error: &'a ApiError,
    }
    to_text(&Error {
        r#type: "error",
        id,
        error,
    })
}

/// A server frame, read by the client. Members it does not know are skipped, so that the server
/// may add some.
#[derive(Debug, Deserialize)]
pub(super) struct ServerFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub event: Option<Value>,
    #[serde(default)]
    pub error: Option<ApiError>,
}

/// Writes frames made of strings, maps and numbers, which cannot fail.
fn to_text<T: Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn chat() -> ChatRequest {
        serde_json::from_value(json!({
            "model": "openai/gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap()
    }

    fn every_operation() -> Vec<Operation> {
        let query = McpListQuery {
            server: "fs".into(),
            cursor: Some("next".into()),
        };
        let call = McpToolCall {
            server: "fs".into(),
            name: "read".into(),
            arguments: Some(serde_json::Map::from_iter([("path".into(), json!("/a"))])),
        };
        vec![
            Operation::Chat(chat()),
            Operation::ChatStream(chat()),
            Operation::Models,
            Operation::McpServers,
            Operation::McpListTools(query.clone()),
            Operation::McpCall(call.clone()),
            Operation::McpCallStream(call),
            Operation::McpListResources(query.clone()),
            Operation::McpReadResource(McpReadResource {
                server: "fs".into(),
                uri: "file:///a".into(),
            }),
            Operation::McpListPrompts(query),
            Operation::McpGetPrompt(McpGetPrompt {
                server: "fs".into(),
                name: "greet".into(),
                arguments: None,
            }),
        ]
    }

    #[test]
    fn every_operation_round_trips_and_covers_every_kind() {
        let ops = every_operation();
        let kinds: Vec<OpKind> = ops.iter().map(Operation::kind).collect();
        assert_eq!(kinds, OpKind::ALL);
        for op in ops {
            let text = request_text("r-1", &op);
            assert_eq!(
                read_client_frame(&text),
                Ok(ClientFrame::Request {
                    id: "r-1".into(),
                    op: Box::new(op.clone())
                }),
                "{text}"
            );
            assert_eq!(OpKind::from_name(op.kind().as_str()), Some(op.kind()));
        }
    }

    #[test]
    fn bodies_are_the_http_routes_bodies() {
        let wire: Value =
            serde_json::from_str(&request_text("7", &Operation::Chat(chat()))).unwrap();
        assert_eq!(wire["body"], serde_json::to_value(chat()).unwrap());
        assert_eq!(wire["op"], "chat");
        let wire: Value = serde_json::from_str(&request_text("8", &Operation::Models)).unwrap();
        assert_eq!(wire, json!({"id": "8", "op": "models"}));
        // Every route of the HTTP API but health and the OpenAI face has an operation.
        let routes: Vec<&str> = OpKind::ALL.iter().map(|k| k.http_path()).collect();
        for path in [
            paths::LLM_CHAT,
            paths::LLM_STREAM,
            paths::LLM_MODELS,
            paths::MCP_SERVERS,
            paths::MCP_LIST_TOOLS,
            paths::MCP_TOOL,
            paths::MCP_TOOL_STREAM,
            paths::MCP_LIST_RESOURCES,
            paths::MCP_READ_RESOURCE,
            paths::MCP_LIST_PROMPTS,
            paths::MCP_GET_PROMPT,
        ] {
            assert!(routes.contains(&path), "{path}");
        }
    }

    #[test]
    fn a_bad_body_is_answered_under_its_id() {
        let e = read_client_frame(r#"{"id":"a","op":"chat","body":{"model":"x","base_url":"y"}}"#)
            .unwrap_err();
        assert_eq!(e.id.as_deref(), Some("a"));
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert!(e.error.message.contains("base_url"), "{}", e.error.message);
        let e = read_client_frame(r#"{"id":"b","op":"chat"}"#).unwrap_err();
        assert!(e.error.message.contains("needs a `body`"));
        let e = read_client_frame(r#"{"id":"c","op":"models","body":{"x":1}}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("c"));
        let e = read_client_frame(r#"{"id":"d","op":"teleport","body":{}}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("d"));
        assert!(e.error.message.contains("unknown `op`"));
        let e = read_client_frame(r#"{"id":"e","op":"models","extra":1}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("e"));
    }

    #[test]
    fn frames_without_a_usable_id_concern_the_connection() {
        for text in [
            "not json",
            "[1,2]",
            r#"{"id":"a"}"#,
            r#"{"op":"chat","body":{}}"#,
            r#"{"op":"models","id":""}"#,
            r#"{"op":"models","id":7}"#,
            r#"{"op":"models","id":"has space"}"#,
            &format!(r#"{{"op":"models","id":"{}"}}"#, "x".repeat(MAX_ID_LEN + 1)),
            r#"{"op":"cancel"}"#,
            r#"{"op":"auth"}"#,
            r#"{"op":"auth","token":"t","id":"1"}"#,
            r#"{"op":"ping","id":"1"}"#,
        ] {
            let e = read_client_frame(text).unwrap_err();
            assert_eq!(e.id, None, "{text}");
            assert_eq!(e.error.code, ErrorCode::BadRequest);
        }
        assert!(
            read_client_frame(&format!(
                r#"{{"op":"models","id":"{}"}}"#,
                "x".repeat(MAX_ID_LEN)
            ))
            .is_ok()
        );
    }

    #[test]
    fn control_frames_read() {
        assert_eq!(
            read_client_frame(&auth_text("sk-1")),
            Ok(ClientFrame::Auth(Token("sk-1".into())))
        );
        assert_eq!(
            read_client_frame(&cancel_text("9")),
            Ok(ClientFrame::Cancel { id: "9".into() })
        );
        assert_eq!(read_client_frame(PING_TEXT), Ok(ClientFrame::Ping));
        assert!(!format!("{:?}", Token("sk-secret".into())).contains("secret"));
    }

    #[test]
    fn server_frames_have_their_documented_shape() {
        let e = ApiError::new(ErrorCode::NotFound, "no such tool");
        let wire = |t: String| serde_json::from_str::<Value>(&t).unwrap();
        assert_eq!(
            wire(result_text("1", &json!({"a": 1})).unwrap()),
            json!({"type": "result", "id": "1", "body": {"a": 1}})
        );
        assert_eq!(
            wire(event_text("2", &json!({"type": "text_delta", "text": "x"})).unwrap()),
            json!({"type": "event", "id": "2", "event": {"type": "text_delta", "text": "x"}})
        );
        assert_eq!(wire(end_text("2")), json!({"type": "end", "id": "2"}));
        assert_eq!(
            wire(error_text(Some("3"), &e)),
            json!({"type": "error", "id": "3", "error": {"code": "not_found", "message": "no such tool", "retryable": false}})
        );
        assert_eq!(wire(error_text(None, &e))["id"], Value::Null);
        assert_eq!(wire(PONG_TEXT.into()), json!({"type": "pong"}));
    }
}
