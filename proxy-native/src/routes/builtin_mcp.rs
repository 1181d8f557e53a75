//! `/mcp/<name>`: built-in MCP servers with `serve_http = true`, offered to clients as ordinary
//! MCP Streamable HTTP endpoints on the proxy's own listener (a browser in direct mode reaches
//! them like any remote MCP server; proxy mode reaches the same server through `/api/mcp/*`).
//!
//! rmcp's `StreamableHttpService` speaks the protocol. It runs without sessions: a 2026-07-28
//! request stands alone anyway, and an older client's `initialize` is answered without an
//! `Mcp-Session-Id`, which the protocol allows. So nothing is kept between requests and there is
//! no session to expire or to leak, however many clients come and go.
//!
//! The proxy's layers (request id, tracing, CORS) wrap these routes like every other; the body
//! limit is rmcp's own (set to `max_body_bytes`), because the service reads the body itself.
//! Requests from a browser page must come from the proxy's own origin or an origin allowed by
//! `cors_allowed_origins` (the MCP specification asks servers to check `Origin`). `Host` is checked
//! for every route by the proxy's layers (DNS rebinding), and rmcp checks it again here.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::{HOST, ORIGIN};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use switchyard_shared::{ApiError, ErrorCode};

use crate::config::{BuiltinServer, ServerConfig};
use crate::demo::DemoServer;
use crate::error::AppError;
use crate::state::AppState;

/// The endpoints of the built-in servers that ask for one.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let server = state.server();
    let origins = Arc::new(OriginPolicy::new(&server.cors_allowed_origins));
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
            Arc::clone(&origins),
            check_origin,
        ));
        router = router.merge(endpoint);
    }
    router
}

fn http_config(server: &ServerConfig) -> StreamableHttpServerConfig {
    // The default `allowed_hosts` (localhost, 127.0.0.1, ::1) are right while the proxy refuses
    // to listen anywhere but on loopback; `Origin` is checked by `check_origin`, which also knows
    // the proxy's own origin.
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        // A plain JSON answer when the handler sends nothing before its result: simpler for
        // browsers and `curl` than a one-event stream.
        .with_json_response(true)
        .with_max_request_body_bytes(server.max_body_bytes)
}

/// Which `Origin`s may call a built-in endpoint.
#[derive(Debug)]
struct OriginPolicy {
    any: bool,
    listed: Vec<String>,
}

impl OriginPolicy {
    fn new(cors_allowed_origins: &[String]) -> Self {
        OriginPolicy {
            any: cors_allowed_origins.iter().any(|o| o == "*"),
            listed: cors_allowed_origins.to_vec(),
        }
    }

    /// Whether a request with `origin`, sent to `host`, may proceed: any origin with `"*"`, a
    /// listed origin, or the proxy's own (a page it serves itself).
    fn admits(&self, origin: &HeaderValue, host: Option<&str>) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.any
            || self.listed.iter().any(|o| o == origin)
            || host.is_some_and(|host| {
                origin
                    .strip_prefix("http://")
                    .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
            })
    }
}

/// Refuses browser requests from origins that are not allowed; requests without `Origin` (not
/// from a browser page) pass.
async fn check_origin(
    State(policy): State<Arc<OriginPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(ORIGIN) {
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if !policy.admits(origin, host) {
            tracing::warn!(origin = ?origin, "refused a request from an origin that is not allowed");
            return AppError(ApiError::new(
                ErrorCode::Forbidden,
                "this origin may not call the MCP endpoint; add it to server.cors_allowed_origins",
            ))
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(allowed: &[&str], origin: &str, host: Option<&str>) -> bool {
        let allowed: Vec<String> = allowed.iter().map(|o| (*o).to_owned()).collect();
        OriginPolicy::new(&allowed).admits(&HeaderValue::from_str(origin).unwrap(), host)
    }

    #[test]
    fn the_proxys_own_origin_and_listed_origins_are_admitted() {
        let host = Some("127.0.0.1:3001");
        assert!(admits(&[], "http://127.0.0.1:3001", host));
        assert!(admits(&[], "http://LOCALHOST:3001", Some("localhost:3001")));
        assert!(admits(
            &["http://localhost:5173"],
            "http://localhost:5173",
            host
        ));
        assert!(admits(&["*"], "https://anything.example", host));
    }

    #[test]
    fn other_origins_are_refused() {
        let host = Some("127.0.0.1:3001");
        assert!(!admits(&[], "http://127.0.0.1:3002", host));
        assert!(!admits(&[], "https://127.0.0.1:3001", host));
        assert!(!admits(&[], "http://evil.example", host));
        assert!(!admits(&[], "null", host));
        assert!(!admits(&[], "http://127.0.0.1:3001", None));
        assert!(!admits(
            &["http://localhost:5173"],
            "http://localhost:5174",
            host
        ));
    }
}
