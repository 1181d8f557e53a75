//! `GET /readyz`: whether the configured upstreams can be reached, checked at most once per
//! `readiness_cache_ms` however often it is asked.
//!
//! - An LLM provider answered in process (a mock) is always ready; a remote one is asked
//!   `GET <base_url>/models` without its key, and any answer below 500 counts (reachability,
//!   not credentials: no key leaves the proxy, no tokens are spent).
//! - An MCP server is ready when the pool holds a live session for it or can open one; the pool's
//!   session is reused (a stdio server is not started per probe), and a server in its backoff
//!   window is reported failed at once, without a new attempt.
//!
//! Each check is bounded by `readiness_timeout_ms`, and all run at once. The report names the
//! failing upstreams and their error codes, never an address, a command or a key.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchyard_shared::{ApiError, ErrorCode, RouteTable};
use tokio::time::Instant;

use crate::state::AppState;

/// The readiness checks and their last report.
#[derive(Debug)]
pub struct Readiness {
    timeout: Duration,
    reuse_for: Duration,
    // Held while checking, so that probes arriving meanwhile wait for this check and share it
    // instead of starting their own.
    last: tokio::sync::Mutex<Option<(Instant, Arc<ReadinessReport>)>>,
}

/// The body of `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    /// `"ready"` when every check passed, else `"not_ready"`.
    pub status: &'static str,
    /// One entry per configured upstream, in configuration order (providers first).
    pub checks: Vec<UpstreamCheck>,
}

/// The check of one upstream.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamCheck {
    /// The configured name.
    pub name: String,
    /// `"provider"` or `"mcp_server"`.
    pub kind: &'static str,
    /// `"ok"` or `"failed"`.
    pub status: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
}

impl ReadinessReport {
    /// Whether every upstream passed.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.error.is_none())
    }
}

impl Readiness {
    /// Checks bounded by `timeout` each, whose report is reused for `reuse_for`.
    pub fn new(timeout: Duration, reuse_for: Duration) -> Self {
        Readiness {
            timeout,
            reuse_for,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The current report: the last one if it is recent enough, else a new one.
    pub async fn report(&self, state: &AppState) -> Arc<ReadinessReport> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = &*last
            && at.elapsed() < self.reuse_for
        {
            return Arc::clone(report);
        }
        let report = Arc::new(self.check(state).await);
        *last = Some((Instant::now(), Arc::clone(&report)));
        report
    }

    async fn check(&self, state: &AppState) -> ReadinessReport {
        let providers = match state.routes() {
            RouteTable::Direct { providers } => providers.as_slice(),
            RouteTable::Proxy { .. } => &[],
        };
        let provider_checks = providers.iter().map(|p| async move {
            let result = self
                .bounded(&p.name, state.upstream().probe(&p.name, &p.base_url))
                .await;
            outcome(&p.name, "provider", result)
        });
        let server_checks = state.mcp().configs().map(|s| async move {
            let result = self
                .bounded(&s.name, state.mcp().ensure_session(&s.name))
                .await;
            outcome(&s.name, "mcp_server", result)
        });
        let (mut checks, servers) = futures::future::join(
            futures::future::join_all(provider_checks),
            futures::future::join_all(server_checks),
        )
        .await;
        checks.extend(servers);
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.error.is_some())
            .map(|c| c.name.as_str())
            .collect();
        if !failed.is_empty() {
            tracing::warn!(?failed, "readiness check failed");
        }
        let status = if failed.is_empty() {
            "ready"
        } else {
            "not_ready"
        };
        ReadinessReport { status, checks }
    }

    async fn bounded(
        &self,
        name: &str,
        check: impl Future<Output = Result<(), ApiError>>,
    ) -> Result<(), ApiError> {
        tokio::time::timeout(self.timeout, check)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "'{name}' did not pass its readiness check within {} ms",
                        self.timeout.as_millis()
                    ),
                ))
            })
    }
}

fn outcome(name: &str, kind: &'static str, result: Result<(), ApiError>) -> UpstreamCheck {
    let error = result.err().map(|e| {
        tracing::debug!(upstream = name, kind, code = %e.code, reason = %e.message, "not ready");
        e.code
    });
    UpstreamCheck {
        name: name.to_owned(),
        kind,
        status: if error.is_none() { "ok" } else { "failed" },
        error,
    }
}
