//! `/mock/<name>/v1/*`: the mock providers that set `serve_http`, as OpenAI-compatible endpoints,
//! so that a browser in direct mode can use one as an ordinary `openai` provider. The routes sit
//! behind the same layers as the rest of the API; their answers and errors are OpenAI's.

use std::sync::Arc;

use axum::Router;
use axum::middleware;

use crate::auth::mounts;
use crate::mock;
use crate::state::AppState;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    state
        .mocks()
        .iter()
        .filter_map(|m| Some((m.http_base_path()?, m)))
        .fold(Router::new(), |router, (path, m)| {
            // The caller's scopes apply here as on `/api/llm/*` (`auth::mounts`).
            let guard =
                middleware::from_fn_with_state(Arc::<str>::from(m.name()), mounts::mock_provider);
            router.nest(&path, mock::http_router(Arc::clone(m)).route_layer(guard))
        })
}
