//! The operator's routes: `/healthz` (the process is alive), `/readyz` (its upstreams can be
//! reached) and `/metrics` (Prometheus text).
//!
//! Probes come from orchestrators that hold no client key, so `/healthz` and `/readyz` are public;
//! `/metrics` is public only with `[observability] metrics_public = true`. An authentication
//! layer asks `observability::exempt_from_auth` which paths to let through.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use switchyard_shared::paths;

use crate::observability::{METRICS, READY};
use crate::state::AppState;

/// The probes, and `/metrics` when metrics are on.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route(paths::HEALTH, get(healthz))
        .route(READY, get(readyz));
    if state.observability().metrics().enabled() {
        router.route(METRICS, get(metrics))
    } else {
        router
    }
}

/// Liveness: the process answers; upstreams are not looked at.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)),
    security(()),
)]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when every upstream passed, else 503; the body names each check either way.
async fn readyz(State(state): State<AppState>) -> Response {
    let report = state.observability().readiness().report(&state).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(&*report)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .observability()
        .metrics()
        .render(state.mcp().session_counts(), state.mcp().failing_servers())
        .unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}
