//! What the proxy tells its operator: audit lines (`audit.rs`), Prometheus metrics
//! (`metrics.rs`) and readiness (`readiness.rs`), configured by `[observability]`.
//!
//! Requests, latencies and statuses are counted by a layer for every route alike; the facts only
//! a handler knows (model, tokens, tool outcome, upstream errors) are recorded where they become
//! known, through the audit records, which write their line and their metrics together.

mod audit;
mod metrics;
mod readiness;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use tower_http::request_id::RequestId;

pub use audit::{AUDIT_TARGET, ChatAudit, RequestFacts, ToolAudit};
pub use metrics::{Metrics, OpenSocket, TrackRequestsLayer};
pub use readiness::{Readiness, ReadinessReport};

use crate::config::ObservabilityConfig;
use crate::identity::{Identity, IdentitySource};
use crate::state::AppState;

/// Readiness: every configured upstream can be reached.
pub const READY: &str = "/readyz";
/// Prometheus metrics, in the text exposition format.
pub const METRICS: &str = "/metrics";

/// Whether `path` is answered without client credentials: the probes (`/healthz`, `/readyz`:
/// orchestrators hold no client key) and the API description (`/openapi.json`, which names no
/// upstream, key or server) always, `/metrics` when `metrics_public` is set.
pub fn exempt_from_auth(path: &str, config: &ObservabilityConfig) -> bool {
    path == switchyard_shared::paths::HEALTH
        || path == READY
        || path == crate::routes::openapi::OPENAPI_PATH
        || (path == METRICS && config.metrics_public)
}

/// The observability settings and state of one proxy.
#[derive(Debug)]
pub struct Observability {
    metrics: Metrics,
    readiness: Readiness,
    config: ObservabilityConfig,
}

impl Observability {
    /// Builds the recorder (when metrics are on) and the readiness cache.
    pub fn new(
        config: &ObservabilityConfig,
        models: &switchyard_shared::ModelList,
        servers: &[crate::config::McpServerConfig],
    ) -> anyhow::Result<Self> {
        let metrics = if config.metrics {
            Metrics::new(models, servers.iter().map(|s| s.name.as_str()))?
        } else {
            Metrics::disabled()
        };
        Ok(Observability {
            metrics,
            readiness: Readiness::new(config.readiness_timeout(), config.readiness_cache()),
            config: config.clone(),
        })
    }

    /// The metrics recorder (a no-op when metrics are off).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The cached readiness checks.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The `[observability]` settings.
    pub fn config(&self) -> &ObservabilityConfig {
        &self.config
    }
}

impl FromRequestParts<AppState> for RequestFacts {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        // Without an identity from the authentication layer, the caller is anonymous.
        let (user, auth) = match parts.extensions.get::<Identity>() {
            Some(identity) => (Arc::clone(&identity.user), auth_label(identity.via)),
            None => (Arc::from(Identity::ANONYMOUS), "anonymous"),
        };
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .map(audit::bounded)
            .unwrap_or_default();
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned())
            .unwrap_or_default();
        let observability = state.observability();
        Ok(RequestFacts {
            user,
            auth,
            request_id,
            route,
            started: Instant::now(),
            metrics: observability.metrics().clone(),
            audit_arguments: observability.config().audit_arguments,
        })
    }
}

impl RequestFacts {
    /// The facts of one request carried over a WebSocket (`/api/ws`): counted and audited under
    /// `route`, the HTTP route it stands for, and under the upgrade request's id followed by
    /// the frame's own (`<request id>/<frame id>`).
    pub fn for_socket(
        state: &AppState,
        identity: &Identity,
        request_id: &str,
        id: &str,
        route: &'static str,
    ) -> Self {
        let observability = state.observability();
        RequestFacts {
            user: Arc::clone(&identity.user),
            auth: auth_label(identity.via),
            request_id: audit::bounded(&format!("{request_id}/{id}")),
            route: route.to_owned(),
            started: Instant::now(),
            metrics: observability.metrics().clone(),
            audit_arguments: observability.config().audit_arguments,
        }
    }
}

fn auth_label(via: IdentitySource) -> &'static str {
    match via {
        IdentitySource::Anonymous => "anonymous",
        IdentitySource::ApiKey => "api_key",
        IdentitySource::Jwt => "jwt",
        IdentitySource::Token(_) => "token",
    }
}
