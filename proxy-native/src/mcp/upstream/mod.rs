//! The only code that talks to MCP servers: it opens a session over the configured transport
//! (one file per transport: `stdio.rs`, `http.rs` for Streamable HTTP (a transport of the
//! proxy's own, see there why), `sse.rs` for the legacy HTTP+SSE transport, `builtin.rs` for
//! servers inside the proxy) and negotiates the protocol version. Everything above works on the
//! resulting [`Connection`], whatever the transport.

mod builtin;
mod http;
pub(crate) mod link;
mod sse;
mod stdio;

use std::sync::Arc;

use rmcp::RoleClient;
use rmcp::model::ProtocolVersion;
use rmcp::service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt, RunningService};
use switchyard_shared::mcp::McpTransport;
use switchyard_shared::{ApiError, ErrorCode};

pub(crate) use self::http::{DirectRequests, OwnProgress, RequestError};
use self::link::{LinkState, Tracked};
use super::handler::ProxyClientHandler;
use crate::config::McpServerConfig;

/// An established MCP session.
pub(crate) struct Connection {
    /// rmcp's client service: its peer sends requests, dropping it ends the session.
    pub service: RunningService<RoleClient, ProxyClientHandler>,
    /// What the transport saw of the connection.
    pub link: Arc<LinkState>,
    /// Streamable HTTP: requests sent on the caller's task rather than through the service.
    pub direct: Option<DirectRequests>,
}

/// 2026-07-28 first (`server/discover`, no handshake, stateless over HTTP); a server that
/// answers the probe as a legacy server gets the `initialize` handshake, offering 2025-11-25
/// (it may answer with an older version it supports, such as 2025-06-18).
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

/// Starts or reaches the server and completes the MCP lifecycle. Timeouts are the caller's.
pub(crate) async fn connect(
    config: &McpServerConfig,
    handler: ProxyClientHandler,
) -> Result<Connection, ApiError> {
    let name = config.name.as_str();
    let started = match config.transport {
        McpTransport::Stdio => {
            let process = stdio::spawn(config).map_err(|error| {
                tracing::warn!(server = name, %error, "cannot start the MCP server");
                ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("could not start MCP server '{name}': {error}"),
                )
            })?;
            let (transport, link) = Tracked::new(process);
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map(|service| Connection {
                    service,
                    link,
                    direct: None,
                })
        }
        McpTransport::StreamableHttp => {
            // The transport records delivery itself: a request is delivered once the server
            // answers its POST, before the answer has been read.
            let link = Arc::new(LinkState::default());
            let transport = http::transport(config, Arc::clone(&link))
                .map_err(|problem| ApiError::internal(format!("MCP server '{name}': {problem}")))?;
            let direct = transport.direct_requests();
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map(|service| Connection {
                    service,
                    link,
                    direct: Some(direct),
                })
        }
        McpTransport::Builtin => {
            let transport = builtin::start(config)
                .map_err(|problem| ApiError::internal(format!("MCP server '{name}' {problem}")))?;
            let (transport, link) = Tracked::new(transport);
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map(|service| Connection {
                    service,
                    link,
                    direct: None,
                })
        }
        McpTransport::Sse => {
            let transport = sse::connect(config).await.map_err(|problem| {
                tracing::warn!(server = name, %problem, "cannot open the MCP event stream");
                ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("could not reach MCP server '{name}'"),
                )
            })?;
            let (transport, link) = Tracked::new(transport);
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map(|service| Connection {
                    service,
                    link,
                    direct: None,
                })
        }
    };
    started.map_err(|error| handshake_error(name, config.transport, &error))
}

fn handshake_error(name: &str, transport: McpTransport, error: &ClientInitializeError) -> ApiError {
    tracing::warn!(server = name, error = %describe(error), "MCP session could not be established");
    let message = match error {
        ClientInitializeError::JsonRpcError(data) => {
            return ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "MCP server '{name}' refused the MCP handshake: {}",
                    truncate(&data.message, 300)
                ),
            );
        }
        ClientInitializeError::NoCompatibleProtocolVersion {
            server_supported, ..
        } => format!(
            "MCP server '{name}' speaks no protocol version the proxy supports (it offers {})",
            server_supported
                .iter()
                .map(ProtocolVersion::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        // Its pipes broke: on reading (closed) or, when it exited before the `initialize` was
        // written, on writing (a transport error). Spawning it already succeeded.
        ClientInitializeError::ConnectionClosed(_)
        | ClientInitializeError::TransportError { .. }
            if transport == McpTransport::Stdio =>
        {
            format!(
                "MCP server '{name}' exited during start-up (see the proxy's log for its stderr)"
            )
        }
        ClientInitializeError::TransportError { .. }
        | ClientInitializeError::ConnectionClosed(_) => {
            format!("could not reach MCP server '{name}'")
        }
        _ => format!("MCP server '{name}' failed the MCP handshake"),
    };
    ApiError::new(ErrorCode::UpstreamError, message)
}

/// An error and its sources on one line, for the log. URLs that reqwest puts in its messages are
/// replaced: an upstream URL may carry a token in its query.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut urls = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(url) = e
            .downcast_ref::<reqwest::Error>()
            .and_then(reqwest::Error::url)
        {
            urls.push(url.to_string());
        }
        let text = e.to_string();
        // Many errors repeat their source in their own message; keep each text once.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    let mut line = parts.join(": ");
    for url in urls {
        line = line.replace(&url, "<url>");
    }
    line
}

pub(crate) use switchyard_shared::error::truncate;
