//! `GET /openapi.json`: the OpenAPI 3.1 description of the proxy's own API (`/api/*` and the
//! liveness probe), generated from the handlers' annotations and the shared types they read and
//! write, so the schemas cannot drift from the code. A test holds the document to the routes
//! that answer (`tests/tests/openapi.rs`).

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchyard_shared::ErrorBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::state::AppState;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard proxy",
        description = "LLM chat and MCP for web frontends, with the upstream keys kept in the proxy. \
                       Errors share one body (`ErrorBody`) with a stable `code`."
    ),
    paths(
        super::llm::chat,
        super::llm::stream,
        super::llm::models,
        super::mcp::servers,
        super::mcp::list_tools,
        super::mcp::call_tool,
        super::mcp::call_tool_stream,
        super::mcp::list_resources,
        super::mcp::read_resource,
        super::mcp::list_prompts,
        super::mcp::get_prompt,
        super::ws::upgrade,
        super::tokens::mint,
        super::health::healthz,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerKeys),
    tags(
        (name = "llm", description = "Chat with any configured provider by `<provider>/<model>`"),
        (name = "mcp", description = "Configured MCP servers, by name"),
        (name = "ws", description = "The same operations over one WebSocket"),
        (name = "auth", description = "Short-lived tokens for browsers"),
        (name = "operations", description = "Probes")
    )
)]
struct ApiDoc;

/// The error answers every operation of the API may give, in the shared body.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "read by the OpenAPI derive only")]
pub(super) enum Refusals {
    /// Refused by the proxy or the upstream.
    #[response(
        status = "4XX",
        description = "Refused: the body names the code (bad_request, unauthorized, forbidden, \
                       not_found, payload_too_large, rate_limited, ...)"
    )]
    Refused(ErrorBody),
    /// The upstream failed.
    #[response(
        status = "5XX",
        description = "The upstream failed or timed out (upstream_error, upstream_timeout, ...)"
    )]
    Failed(ErrorBody),
}

/// Keys and JWTs go in `Authorization: Bearer`; a proxy without `[[keys]]` or `[auth.jwt]`
/// takes requests without it, hence the empty alternative on every operation.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON text, built once.
fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        // A derived document always serializes.
        doc.to_json().unwrap_or_default()
    })
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(OPENAPI_PATH, get(openapi_json))
}

async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document(),
    )
        .into_response()
}
