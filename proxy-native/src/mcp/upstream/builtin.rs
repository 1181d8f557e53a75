//! Built-in upstreams: a server that runs inside the proxy, reached over an in-memory pipe.
//!
//! The pipe carries the same newline-delimited JSON-RPC as a stdio server's stdin and stdout, so
//! a built-in server goes through exactly the session handling of the other transports
//! (handshake, deadlines, `notifications/cancelled`, idle close), and its messages are encoded
//! and decoded like anyone else's. Dropping the session closes the pipe, which ends the server.

use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tracing::Instrument;

use crate::config::{BuiltinServer, McpServerConfig};
use crate::demo::DemoServer;

/// Bytes buffered in each direction of the pipe; a larger message simply waits for the reader.
const PIPE_BUFFER: usize = 64 * 1024;

/// The client's end of the pipe.
pub(super) type Pipe =
    AsyncRwTransport<RoleClient, ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

/// Starts the configured built-in server on a new pipe and returns the client's end.
pub(super) fn start(config: &McpServerConfig) -> Result<Pipe, String> {
    // The configuration was checked at start-up: a built-in entry always names its server.
    let server = config
        .server
        .ok_or_else(|| "names no built-in server".to_owned())?;
    let (client_end, server_end) = tokio::io::duplex(PIPE_BUFFER);
    let name = config.name.clone();
    let serving = async move {
        let running = match server {
            BuiltinServer::Demo => DemoServer::new().serve(server_end).await,
        };
        match running {
            // Returns when the client's end is dropped or the session is cancelled.
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(error) => {
                tracing::warn!(server = %name, %error, "the built-in MCP server did not start a session");
            }
        }
    };
    tokio::spawn(serving.instrument(tracing::Span::current()));
    let (read, write) = tokio::io::split(client_end);
    Ok(AsyncRwTransport::new_client(read, write))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchyard_shared::ErrorCode;
    use switchyard_shared::mcp::McpToolCall;

    use crate::config::McpServerConfig;
    use crate::identity::Identity;
    use crate::mcp::McpPool;

    fn me() -> Identity {
        Identity::anonymous()
    }

    fn pool() -> McpPool {
        McpPool::new(&[McpServerConfig::builtin_demo("demo").unwrap()])
    }

    fn call(name: &str, arguments: serde_json::Value) -> McpToolCall {
        McpToolCall {
            server: "demo".into(),
            name: name.into(),
            arguments: arguments.as_object().cloned(),
        }
    }

    #[tokio::test]
    async fn the_pool_reaches_the_demo_server_in_process() {
        let pool = pool();
        assert_eq!(
            pool.protocol_version(&me(), "demo").await.unwrap(),
            "2026-07-28"
        );
        let tools = pool.list_tools(&me(), "demo", None).await.unwrap();
        let mut names: Vec<_> = tools.tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["calculate", "now", "search_notes"]);
        let result = pool
            .call_tool(&me(), call("calculate", json!({"expression": "6*7"})))
            .await
            .unwrap();
        assert_eq!(result.is_error, Some(false));
        assert_eq!(
            result.structured_content,
            Some(json!({"expression": "6*7", "value": 42.0}))
        );
        let resources = pool.list_resources(&me(), "demo", None).await.unwrap();
        assert!(resources.resources.iter().any(|r| r.uri == "notes://index"));
        let prompt = pool
            .get_prompt(
                &me(),
                "demo",
                "summarize_notes".into(),
                json!({"topic": "sourdough"}).as_object().cloned(),
            )
            .await
            .unwrap();
        assert_eq!(prompt.messages.len(), 1);
        pool.shutdown().await;
    }

    #[tokio::test]
    async fn a_closed_session_is_reopened_with_a_fresh_server() {
        let pool = pool();
        pool.list_tools(&me(), "demo", None).await.unwrap();
        // Closing ends the server task; the next request starts another one.
        pool.shutdown().await;
        let error = pool
            .call_tool(&me(), call("no_such_tool", json!({})))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NotFound);
        let result = pool
            .call_tool(&me(), call("now", json!({"timezone": "+01:00"})))
            .await
            .unwrap();
        let text = serde_json::to_string(&result.content).unwrap();
        assert!(text.contains("+01:00"), "{text}");
    }
}
