//! The demo web app at `/` (when `[server] demo_page` is on) and `GET /demo/config.json`, which
//! tells the page where the proxy serves its own upstreams, for the page's direct mode.
//!
//! The app is `www-demo/dist` (built by `cargo xtask demo`). Debug builds read it from disk on
//! every request, so a rebuilt page shows up without restarting; release builds embed it, so the
//! binary is all a deployment needs. When it was never built, `/` explains how to build it.
//!
//! Only the app's own paths are routed (`/`, `/assets/...`, and the top-level files of the build),
//! so every other path keeps the API's JSON 404 and 405 answers.

use axum::Router;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use rust_embed::Embed;
use serde::Serialize;
use switchyard_shared::{ApiError, ErrorCode};

use crate::error::AppError;
use crate::state::AppState;

#[derive(Embed)]
#[folder = "../www-demo/dist/"]
#[allow_missing = true]
struct DemoApp;

/// The path of the demo's configuration.
const CONFIG_PATH: &str = "/demo/config.json";

/// Vite puts content-hashed files here: a new build means new names, so they never go stale.
const ASSETS: &str = "assets/";

const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Everything else (the HTML above all) is revalidated, so a new build is seen at once.
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");
const NOSNIFF: (HeaderName, HeaderValue) = (
    HeaderName::from_static("x-content-type-options"),
    HeaderValue::from_static("nosniff"),
);

/// The page's routes; none when `demo_page` is off.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    if !state.server().demo_page {
        return Router::new();
    }
    let mut router = Router::new()
        .route("/", get(file))
        .route(&format!("/{ASSETS}{{*path}}"), get(file))
        .route(CONFIG_PATH, get(demo_config));
    // Files at the top of the build (the favicon, `index.html`) as found at start-up; a name
    // without an extension is never routed, so the build cannot shadow an API path.
    for name in DemoApp::iter() {
        if !name.contains('/') && name.contains('.') {
            router = router.route(&format!("/{name}"), get(file));
        }
    }
    router
}

async fn file(uri: Uri, headers: HeaderMap) -> Result<Response, AppError> {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        path => path,
    };
    // Debug builds read the files from disk, and the router does not normalise `..`: only plain
    // names reach the file lookup.
    let plain = path
        .split('/')
        .all(|part| !matches!(part, "" | "." | "..") && !part.contains('\\'));
    let found = if plain { DemoApp::get(path) } else { None };
    let Some(found) = found else {
        if path == "index.html" {
            return Ok(not_built());
        }
        return Err(AppError(ApiError::new(
            ErrorCode::NotFound,
            format!("no file {} in the demo page", uri.path()),
        )));
    };
    let hash = found.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let etag = HeaderValue::from_str(&etag).expect("hex digits fit a header");
    let cache = if path.starts_with(ASSETS) {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let fresh = headers.get(IF_NONE_MATCH).is_some_and(|tags| {
        tags.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii() == etag.as_bytes())
    });
    if fresh {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag), (CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    Ok((
        [
            (CONTENT_TYPE, content_type(found.metadata.mimetype())),
            (ETAG, etag),
            (CACHE_CONTROL, cache),
            NOSNIFF,
        ],
        found.data,
    )
        .into_response())
}

/// Text gets an explicit charset: Vite writes UTF-8, and browsers would otherwise guess.
fn content_type(mime: &str) -> HeaderValue {
    let text = mime.starts_with("text/") || mime == "application/json" || mime == "image/svg+xml";
    let value = if text && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `/` when `www-demo/dist` is missing (a debug build run before the page was built, or a
/// release build made without it).
fn not_built() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            NOSNIFF,
        ],
        NOT_BUILT_PAGE,
    )
        .into_response()
}

const NOT_BUILT_PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard: the demo page is not built</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem; }
  code, pre { font-family: ui-monospace, monospace; background: #8881; padding: .1rem .3rem; border-radius: 4px; }
  pre { padding: .75rem 1rem; }
</style>
<h1>The demo page is not built</h1>
<p>This proxy serves the demo web app from <code>www-demo/dist</code>, which does not exist yet.
From a clone of the repository, build everything and start the demo with:</p>
<pre>cargo xtask demo</pre>
<p>or build only the page (after <code>cargo xtask sdk</code>):</p>
<pre>cd www-demo &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>A debug build of the proxy picks the page up at once; a release build embeds it when it is
compiled, so build the page first. The API (<code>/api/...</code>) works either way.</p>
</html>
"#;

/// What the page's direct mode needs: the upstreams this proxy serves on its own paths.
#[derive(Debug, Serialize)]
struct DemoConfig {
    /// The model the page starts with.
    default_model: String,
    /// Mock providers, each an OpenAI-compatible API at `base_path`.
    providers: Vec<DirectProvider>,
    /// Built-in MCP servers served over Streamable HTTP at `path`.
    mcp_servers: Vec<DirectMcpServer>,
}

#[derive(Debug, Serialize)]
struct DirectProvider {
    name: String,
    kind: &'static str,
    base_path: String,
    models: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DirectMcpServer {
    name: String,
    path: String,
}

async fn demo_config(State(state): State<AppState>) -> Json<DemoConfig> {
    Json(direct_config(&state))
}

fn direct_config(state: &AppState) -> DemoConfig {
    let providers: Vec<DirectProvider> = state
        .mocks()
        .iter()
        .filter_map(|mock| {
            Some(DirectProvider {
                name: mock.name().to_owned(),
                // A mock speaks the OpenAI-compatible wire format on its own path.
                kind: "openai",
                base_path: mock.http_base_path()?,
                models: mock
                    .models()
                    .iter()
                    .map(|m| format!("{}/{m}", mock.name()))
                    .collect(),
            })
        })
        .collect();
    let mcp_servers = state
        .mcp()
        .configs()
        .filter_map(|server| {
            Some(DirectMcpServer {
                name: server.name.clone(),
                path: server.http_path()?,
            })
        })
        .collect();
    // A model both modes can reach, when there is one.
    let default_model = providers
        .iter()
        .find_map(|p| p.models.first().cloned())
        .or_else(|| {
            state
                .models()
                .providers
                .iter()
                .find_map(|p| p.models.first().cloned())
        })
        .unwrap_or_default();
    DemoConfig {
        default_model,
        providers,
        mcp_servers,
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::config::{Config, McpServerConfig, ProviderConfig};
    use crate::mock::MockScript;

    fn demo_config(demo_page: bool) -> Config {
        let mut mock = ProviderConfig::mock("mock", MockScript::demo());
        mock.models = vec!["demo".to_owned()];
        let mut config = Config {
            providers: vec![mock],
            mcp_servers: vec![McpServerConfig::builtin_demo("demo").unwrap()],
            ..Config::default()
        };
        config.server.demo_page = demo_page;
        config
    }

    async fn send(config: &Config, method: Method, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let app = crate::router(AppState::new(config).unwrap());
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, body.to_vec())
    }

    fn error_code(body: &[u8]) -> String {
        let body: Value = serde_json::from_slice(body).unwrap();
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn the_config_names_what_the_proxy_serves_for_direct_mode() {
        let (status, headers, body) = send(&demo_config(true), Method::GET, CONFIG_PATH).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "default_model": "mock/demo",
                "providers": [{"name": "mock", "kind": "openai", "base_path": "/mock/mock/v1",
                               "models": ["mock/demo"]}],
                "mcp_servers": [{"name": "demo", "path": "/mcp/demo"}],
            })
        );
    }

    #[tokio::test]
    async fn the_page_answers_at_the_root_whether_built_or_not() {
        let (status, headers, body) = send(&demo_config(true), Method::GET, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(String::from_utf8_lossy(&body).contains("<html"));
    }

    #[tokio::test]
    async fn the_api_keeps_its_json_errors() {
        let config = demo_config(true);
        let (status, _, body) = send(&config, Method::GET, "/assets/missing.js").await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let (status, _, body) = send(&config, Method::GET, "/api/missing").await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let (status, _, body) = send(&config, Method::POST, "/").await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
    }

    #[tokio::test]
    async fn paths_that_climb_out_of_the_build_are_not_found() {
        let config = demo_config(true);
        // The file exists relative to the build folder in a checkout, as any file of the repo.
        for path in [
            "/assets/../../Cargo.toml",
            "/assets/../../../../../../etc/hostname",
            "/assets/./x.js",
            "/assets//x.js",
            "/assets/..\\..\\Cargo.toml",
        ] {
            let (status, _, body) = send(&config, Method::GET, path).await;
            assert_eq!(
                (status, error_code(&body).as_str()),
                (StatusCode::NOT_FOUND, "not_found"),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn without_demo_page_nothing_is_served_at_the_root() {
        let config = demo_config(false);
        for path in ["/", CONFIG_PATH] {
            let (status, _, body) = send(&config, Method::GET, path).await;
            assert_eq!(
                (status, error_code(&body).as_str()),
                (StatusCode::NOT_FOUND, "not_found")
            );
        }
    }

    #[test]
    fn text_gets_a_charset_and_binaries_keep_their_type() {
        assert_eq!(content_type("text/html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("text/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("application/wasm"), "application/wasm");
        assert_eq!(content_type("image/png"), "image/png");
    }
}
