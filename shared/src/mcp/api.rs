//! The proxy's MCP routes, described once: request bodies, the servers list and the events of a
//! streamed tool call. Results are MCP's own (`rmcp` model types), passed through unchanged.

use rmcp::model::{CallToolResult, JsonObject};
use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

use crate::error::ApiError;

/// How the proxy reaches an MCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum McpTransport {
    /// A child process speaking JSON-RPC on stdin/stdout.
    Stdio,
    /// MCP Streamable HTTP.
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05).
    Sse,
    /// A server built into the proxy, running in its process.
    Builtin,
}

/// One MCP server a client may use, without its address or command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpServerInfo {
    /// The name clients use.
    pub name: String,
    /// How it is reached.
    pub transport: McpTransport,
}

/// The body of `GET /api/mcp/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpServerList {
    /// Configured servers.
    pub servers: Vec<McpServerInfo>,
}

/// The query of the list routes (`listTools`, `listResources`, `listPrompts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct McpListQuery {
    /// The configured server name.
    pub server: String,
    /// The `nextCursor` of the previous page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The body of `POST /api/mcp/tool` and `POST /api/mcp/tool/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpToolCall {
    /// The configured server name.
    pub server: String,
    /// The tool name.
    pub name: String,
    /// The tool's arguments (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub arguments: Option<JsonObject>,
}

/// The body of `POST /api/mcp/readResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpReadResource {
    /// The configured server name.
    pub server: String,
    /// The resource URI.
    pub uri: String,
}

/// The body of `POST /api/mcp/getPrompt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct McpGetPrompt {
    /// The configured server name.
    pub server: String,
    /// The prompt name.
    pub name: String,
    /// The prompt's arguments (MCP prompt arguments are strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<HashMap<String, String>>))]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One event of a streamed tool call (`POST /api/mcp/tool/stream`), tagged by `type`: any number
/// of `progress`, then exactly one `result` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum McpToolEvent {
    /// The server reported progress.
    Progress {
        /// Progress so far (increases with every notification).
        progress: f64,
        /// The total, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<f64>,
        /// A human-readable note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The call completed (a tool-level failure is a result with `isError: true`).
    Result {
        /// The tool's result, as MCP defines it.
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        result: CallToolResult,
    },
    /// The call failed.
    Error {
        /// What went wrong.
        error: ApiError,
    },
}

impl McpToolEvent {
    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, McpToolEvent::Progress { .. })
    }

    /// The event as one SSE frame.
    pub fn to_sse(&self) -> String {
        // Serializing these plain data types cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        crate::sse::encode(None, &json)
    }

    /// Reads an event from its JSON text, as the derived `Deserialize` does but without its
    /// buffering (see `json.rs`): the tag first, then the variant's fields.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        #[serde(variant_identifier, rename_all = "snake_case")]
        enum Kind {
            Progress,
            Result,
            Error,
        }
        #[derive(Deserialize)]
        struct Progress {
            progress: f64,
            #[serde(default)]
            total: Option<f64>,
            #[serde(default)]
            message: Option<String>,
        }
        #[derive(Deserialize)]
        struct Done {
            result: CallToolResult,
        }
        #[derive(Deserialize)]
        struct Failure {
            error: ApiError,
        }
        use crate::json::fields;
        Ok(
            match crate::json::type_tag(bytes, "internally tagged enum McpToolEvent")? {
                Kind::Progress => {
                    let Progress {
                        progress,
                        total,
                        message,
                    } = fields(bytes)?;
                    McpToolEvent::Progress {
                        progress,
                        total,
                        message,
                    }
                }
                Kind::Result => McpToolEvent::Result {
                    result: fields::<Done>(bytes)?.result,
                },
                Kind::Error => McpToolEvent::Error {
                    error: fields::<Failure>(bytes)?.error,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_calls_refuse_unknown_fields() {
        let ok: McpToolCall = serde_json::from_value(
            json!({"server": "everything", "name": "echo", "arguments": {"message": "hi"}}),
        )
        .unwrap();
        assert_eq!(ok.name, "echo");
        let err = serde_json::from_value::<McpToolCall>(
            json!({"server": "x", "name": "y", "command": "rm -rf /"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("command"));
    }

    #[test]
    fn tool_events_round_trip_as_sse() {
        let events = [
            McpToolEvent::Progress {
                progress: 1.0,
                total: Some(3.0),
                message: None,
            },
            McpToolEvent::Result {
                result: CallToolResult::success(vec![rmcp::model::ContentBlock::text("Echo: hi")]),
            },
        ];
        let mut decoder = crate::sse::SseDecoder::new();
        let text: String = events.iter().map(McpToolEvent::to_sse).collect();
        let decoded: Vec<McpToolEvent> = decoder
            .push(text.as_bytes())
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        assert_eq!(decoded, events);
        assert!(!decoded[0].is_terminal() && decoded[1].is_terminal());
        let wire: serde_json::Value = serde_json::from_str(&events[1].to_sse()[6..]).unwrap();
        assert_eq!(wire["result"]["content"][0]["text"], "Echo: hi");
    }
}
