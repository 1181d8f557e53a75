//! Liveness.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use switchyard_shared::paths;

use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(paths::HEALTH, get(healthz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
