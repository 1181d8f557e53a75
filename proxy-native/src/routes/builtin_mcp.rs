//! `/mcp/<name>`: built-in MCP servers with `serve_http = true`, offered to clients as ordinary
//! MCP Streamable HTTP endpoints on the proxy's own listener (a browser in direct mode reaches
//! them like any remote MCP server; proxy mode reaches the same server through `/api/mcp/*`).
//!
//! rmcp's `StreamableHttpService` speaks the protocol. It runs without sessions: a 2026-07-28
//! request stands alone anyway, and an older client's `initialize` is answered without an
//! `Mcp-Session-Id`, which the protocol allows. So nothing is kept between requests and there is
//! no session to expire or to leak, however many clients come and go.
//!
//! The proxy's layers (request id, tracing, the Host and Origin guards, CORS, authentication) wrap
//! these routes like every other; the body limit is rmcp's own (set to `max_body_bytes`), because
//! the service reads the body itself. The caller's scopes are applied by `auth::mounts`: the
//! server must be in them, each `tools/call` is checked and `tools/list` answers are narrowed.
//!
//! A JSON body that is not one JSON-RPC message is refused here with 400 and a JSON-RPC error
//! (-32700 unreadable, -32600 not a message), as the MCP TypeScript SDK answers: rmcp 3.11 answers
//! it 415, as if the media type were wrong.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use crate::auth::mounts;
use crate::config::{BuiltinServer, ServerConfig};
use crate::demo::DemoServer;
use crate::extract::buffer_body;
use crate::state::AppState;

/// The endpoints of the built-in servers that ask for one.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let server = state.server();
    let mut router = Router::new();
    for config in state.mcp().configs() {
        let (Some(path), Some(builtin)) = (config.http_path(), config.server) else {
            continue;
        };
        let endpoint = match builtin {
            BuiltinServer::Demo => {
                // Every request gets a fresh handler; cloning one built up front spares
                // rebuilding the tool and prompt tables each time.
                let prototype = DemoServer::new();
                Router::new().route_service(
                    &path,
                    StreamableHttpService::new(
                        move || Ok(prototype.clone()),
                        Arc::new(NeverSessionManager::default()),
                        http_config(server),
                    ),
                )
            }
        };
        // The scope guard runs first: a caller without access learns nothing more.
        let endpoint = endpoint
            .route_layer(middleware::from_fn(refuse_malformed))
            .route_layer(middleware::from_fn_with_state(
                Arc::<str>::from(config.name.as_str()),
                mounts::mcp_server,
            ));
        router = router.merge(endpoint);
    }
    router
}

pub(super) fn http_config(server: &ServerConfig) -> StreamableHttpServerConfig {
    // `Host` and `Origin` are checked for every route by the proxy's layers, which know
    // `allowed_hosts` and the proxy's own origin; rmcp's narrower default list (localhost,
    // 127.0.0.1, ::1) would refuse the names a proxy listening beyond loopback is reached by.
    StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_legacy_session_mode(false)
        // A plain JSON answer when the handler sends nothing before its result: simpler for
        // browsers and `curl` than a one-event stream.
        .with_json_response(true)
        .with_max_request_body_bytes(server.max_body_bytes)
}

/// Refuses a JSON POST body that is not one JSON-RPC message with 400 and the JSON-RPC error for
/// it. Other media types are left to the endpoint, whose 415 is right for them.
async fn refuse_malformed(request: Request, next: Next) -> Response {
    match read_message(request).await {
        Ok((request, _)) => next.run(request).await,
        Err(refusal) => refusal,
    }
}

/// The JSON-RPC message of a JSON POST, with the request given back for the endpoint; `None`
/// for other requests. A body that is not one message is refused (400, JSON-RPC error).
pub(super) async fn read_message(
    request: Request,
) -> Result<(Request, Option<ClientJsonRpcMessage>), Response> {
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if request.method() != Method::POST || !is_json {
        return Ok((request, None));
    }
    let (request, body) = buffer_body(request)
        .await
        .map_err(IntoResponse::into_response)?;
    match parse_message(&body) {
        Ok(message) => Ok((request, Some(message))),
        Err((code, message)) => Err(json_rpc_error(
            StatusCode::BAD_REQUEST,
            serde_json::Value::Null,
            code,
            message,
        )),
    }
}

/// An HTTP answer carrying a JSON-RPC error, for the request `id` (`null`: none in particular).
pub(super) fn json_rpc_error(
    status: StatusCode,
    id: serde_json::Value,
    code: i32,
    message: &str,
) -> Response {
    let error = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    (status, axum::Json(error)).into_response()
}

/// `body` as one JSON-RPC message from a client (the type rmcp reads it as), or the JSON-RPC
/// error code and message for what is wrong with it.
fn parse_message(body: &[u8]) -> Result<ClientJsonRpcMessage, (i32, &'static str)> {
    use serde_json::error::Category;
    // One pass: the error's category tells unreadable JSON from JSON of the wrong shape.
    serde_json::from_slice::<ClientJsonRpcMessage>(body).map_err(|e| {
        if matches!(
            e.classify(),
            Category::Syntax | Category::Eof | Category::Io
        ) {
            (-32700, "Parse error: the body is not JSON")
        } else {
            (
                -32600,
                "Invalid Request: the body is not one JSON-RPC 2.0 request, notification or response",
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_message;

    #[test]
    fn only_one_json_rpc_message_passes() {
        let code = |body: &str| parse_message(body.as_bytes()).err().map(|(code, _)| code);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            None
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        assert_eq!(code("{not json"), Some(-32700));
        assert_eq!(code(""), Some(-32700));
        for invalid in [
            "[]",
            r#""tools/call""#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
            r#"{"id":1,"method":"tools/list"}"#,
        ] {
            assert_eq!(code(invalid), Some(-32600), "{invalid}");
        }
    }
}
