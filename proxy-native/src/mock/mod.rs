//! The `mock` provider kind: a deterministic, scripted stand-in for an LLM, for demos and for
//! testing frontends. Rules match the last user message with regular expressions and answer with
//! text or tool calls; the answer is streamed a word at a time at a configured pace.
//!
//! A mock is an OpenAI-compatible server (`openai.rs`) inside the proxy. The proxy reaches it the
//! way it reaches any provider: `shared`'s route table builds the request (to
//! [`IN_PROCESS_BASE_URL`]), `upstream.rs` executes it (handing it to the mock's router instead
//! of the network, chosen by provider name) and `shared` reads the answer. So a mock goes through
//! the same timeouts, stream relay and error mapping as a remote provider. With `serve_http`, the
//! same router is also mounted at `/mock/<name>/v1` for browsers in direct mode.

mod openai;
mod script;
mod template;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;

pub use script::{DEFAULT_CHUNK_DELAY_MS, MockScript, ScriptError};

/// The base URL the route table is given for mock providers. Requests to it never reach the
/// network: `upstream.rs` hands them to the mock by provider name, and `.invalid` can never
/// resolve, should one ever be sent.
pub const IN_PROCESS_BASE_URL: &str = "http://mock.invalid/v1";

/// The path prefix under which mocks with `serve_http` are served: `/mock/<name>/v1`.
pub const HTTP_PREFIX: &str = "/mock";

/// The model a mock lists when its configuration lists none (it answers to any model name).
pub const DEFAULT_MODEL: &str = "mock";

/// A configured mock provider: its name, its script and the models it lists.
#[derive(Debug)]
pub struct MockProvider {
    name: String,
    script: MockScript,
    models: Vec<String>,
}

impl MockProvider {
    /// A mock named `name` running `script`; `models` empty lists [`DEFAULT_MODEL`].
    pub fn new(name: impl Into<String>, script: MockScript, models: &[String]) -> Self {
        MockProvider {
            name: name.into(),
            script,
            models: listed_models(models),
        }
    }

    /// The provider name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The script.
    pub fn script(&self) -> &MockScript {
        &self.script
    }

    /// The models it lists (without the provider prefix).
    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// Where its OpenAI-compatible endpoint is served, if it is: `/mock/<name>/v1`.
    pub fn http_base_path(&self) -> Option<String> {
        self.script
            .serve_http
            .then(|| format!("{HTTP_PREFIX}/{}/v1", self.name))
    }
}

/// The models a mock lists: the configured ones, or [`DEFAULT_MODEL`].
pub fn listed_models(configured: &[String]) -> Vec<String> {
    if configured.is_empty() {
        vec![DEFAULT_MODEL.to_owned()]
    } else {
        configured.to_vec()
    }
}

/// The mock's routes relative to its base URL (`/chat/completions`, `/models`), for mounting at
/// `/mock/<name>/v1` behind the proxy's layers.
pub fn http_router<S>(mock: Arc<MockProvider>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    openai::router(mock)
}

/// The router the upstream module hands the mock's requests to: its routes under the path of
/// [`IN_PROCESS_BASE_URL`].
pub fn in_process_router(mock: Arc<MockProvider>) -> Router {
    Router::new()
        .nest("/v1", openai::router(mock))
        // The body is the proxy's own translation of a request already held to the body limit.
        .layer(DefaultBodyLimit::disable())
}
