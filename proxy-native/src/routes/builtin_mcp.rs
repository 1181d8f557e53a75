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

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use crate::auth::mounts;
use crate::config::{BuiltinServer, ServerConfig};
use crate::demo::DemoServer;
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
        let endpoint = endpoint.route_layer(middleware::from_fn_with_state(
            Arc::<str>::from(config.name.as_str()),
            mounts::mcp_server,
        ));
        router = router.merge(endpoint);
    }
    router
}

fn http_config(server: &ServerConfig) -> StreamableHttpServerConfig {
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
