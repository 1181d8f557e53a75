//! The Switchyard proxy: an axum server that lets browsers reach LLM APIs and MCP servers through
//! upstreams named in its configuration, holding their keys.
//!
//! Request and response formats, provider translation and the error taxonomy all come from
//! `switchyard-shared`; this crate only moves bytes (see `upstream`) and adds the server concerns
//! (see `layers`).

#![warn(missing_docs)]

pub mod auth;
pub mod config;
mod demo;
mod error;
mod extract;
pub mod identity;
mod layers;
pub mod limits;
pub mod mcp;
pub mod mock;
pub mod observability;
mod routes;
pub mod shutdown;
mod state;
mod stream_relay;
mod upstream;

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::{Config, ConfigError};
pub use routes::router;
pub use state::AppState;

/// Serves `config` on `listener` until Ctrl-C or SIGTERM, then drains open requests.
pub async fn serve(config: Config, listener: TcpListener) -> anyhow::Result<()> {
    serve_until(config, listener, shutdown::signal()).await
}

/// Serves `config` on `listener` until `stop` resolves, then drains open requests for at most
/// `[server] shutdown_grace_ms`.
pub async fn serve_until(
    config: Config,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    config::check_listen(addr, config.requires_auth()).map_err(anyhow::Error::msg)?;
    if !addr.ip().is_loopback() {
        // Clients reach a non-loopback address by some name, and the Host guard (layers.rs)
        // answers only loopback names and `allowed_hosts`.
        tracing::info!(
            allowed_hosts = ?config.server.allowed_hosts,
            "listening beyond loopback: only requests whose Host is a loopback name or one of \
             server.allowed_hosts are answered; list there the names clients use"
        );
    }
    if config.providers.is_empty() {
        tracing::warn!("no providers are configured: every chat request will be answered 404");
    }
    if !config.requires_auth() {
        for server in &config.mcp_servers {
            if server.isolation == config::Isolation::PerUser {
                tracing::warn!(
                    server = %server.name,
                    "isolation = \"per_user\" without [[keys]] or [auth.jwt]: every request is \
                     the same anonymous user, so all share one session"
                );
            }
        }
    }
    let state = AppState::new(&config)?;
    state.auth().start().await?;
    let app = router(state.clone());

    tracing::info!(%addr, "serving");
    let grace = config.server.shutdown_grace();
    let served = shutdown::serve_draining(listener, app, grace, stop, state.drain().clone()).await;
    // Stdio MCP servers are child processes: stop them before the proxy exits.
    state.mcp().shutdown().await;
    served.context("server failed")
}
