//! Everything the handlers share, created once at start-up from the configuration: the upstream
//! client, the route table, the MCP session pool and the settings the layers need. Handlers never
//! read the config file.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use switchyard_shared::{ModelList, ProviderEndpoint, ProviderInfo, RouteTable};

use crate::config::{Config, ServerConfig};
use crate::mcp::McpPool;
use crate::upstream::Upstream;

/// Shared, cheaply clonable application state.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    routes: RouteTable,
    upstream: Upstream,
    models: ModelList,
    mcp: McpPool,
    server: ServerConfig,
}

impl AppState {
    /// Builds the state from a checked configuration.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        // The proxy reaches its upstreams through the same direct-mode table as the SDK, so
        // both modes build identical upstream requests.
        let endpoints = config
            .providers
            .iter()
            .map(|p| ProviderEndpoint {
                name: p.name.clone(),
                kind: p.kind,
                base_url: p.base_url.clone(),
                api_key: p.api_key.as_ref().map(|k| k.expose_secret().to_owned()),
            })
            .collect();
        let routes = RouteTable::direct(endpoints).context("invalid provider configuration")?;
        let models = ModelList {
            providers: config
                .providers
                .iter()
                .map(|p| ProviderInfo {
                    name: p.name.clone(),
                    kind: p.kind,
                    models: p.models.iter().map(|m| format!("{}/{m}", p.name)).collect(),
                })
                .collect(),
        };
        let upstream = Upstream::new(&config.upstream).context("cannot create the HTTP client")?;
        Ok(AppState {
            inner: Arc::new(Inner {
                routes,
                upstream,
                models,
                mcp: McpPool::new(&config.mcp_servers),
                server: config.server.clone(),
            }),
        })
    }

    /// The table that turns a chat request into an upstream request.
    pub fn routes(&self) -> &RouteTable {
        &self.inner.routes
    }

    /// The upstream client.
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// What `GET /api/llm/models` answers.
    pub fn models(&self) -> &ModelList {
        &self.inner.models
    }

    /// The MCP servers and their live sessions.
    pub fn mcp(&self) -> &McpPool {
        &self.inner.mcp
    }

    /// Server settings used by the layers (CORS, body limit).
    pub fn server(&self) -> &ServerConfig {
        &self.inner.server
    }
}
