//! Everything the handlers share, created once at start-up from the configuration: the upstream
//! client, the route table, the mock providers, the MCP session pool and the settings the layers
//! need. Handlers never read the config file.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use switchyard_shared::{ModelList, ProviderEndpoint, ProviderInfo, ProviderKind, RouteTable};

use crate::auth::Authenticator;
use crate::config::{Config, McpGatewayConfig, ProviderConfig, ProviderConfigKind, ServerConfig};
use crate::limits::Limiter;
use crate::mcp::McpPool;
use crate::mock::{self, MockProvider};
use crate::observability::Observability;
use crate::shutdown::Drain;
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
    mocks: Vec<Arc<MockProvider>>,
    mcp: McpPool,
    server: ServerConfig,
    gateway: McpGatewayConfig,
    auth: Arc<Authenticator>,
    observability: Observability,
    limiter: Arc<Limiter>,
    drain: Drain,
}

impl AppState {
    /// Builds the state from a checked configuration.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        // The proxy reaches its upstreams through the same direct-mode table as the SDK, so
        // both modes build identical upstream requests.
        let endpoints = config
            .providers
            .iter()
            .map(endpoint)
            .collect::<anyhow::Result<_>>()?;
        let routes = RouteTable::direct(endpoints).context("invalid provider configuration")?;
        let mut upstream =
            Upstream::new(&config.upstream).context("cannot create the HTTP client")?;
        let mut mocks = Vec::new();
        for p in &config.providers {
            if p.kind != ProviderConfigKind::Mock {
                continue;
            }
            let script = p.mock.clone().unwrap_or_default();
            // Checked when a file is loaded; a configuration built in code is checked here (the
            // router would panic on a path it cannot parse).
            script.check().map_err(|e| {
                anyhow::anyhow!("mock provider {:?}: `{}`: {}", p.name, e.key, e.problem)
            })?;
            let mock = Arc::new(MockProvider::new(&p.name, script, &p.models));
            if mock.http_base_path().is_some() && !crate::config::is_path_segment(&p.name) {
                anyhow::bail!(
                    "mock provider {:?} cannot be served at /mock/<name>/v1: its name may only \
                     contain letters, digits, '-', '_', '.' and '~'",
                    p.name
                );
            }
            upstream =
                upstream.with_in_process(&p.name, mock::in_process_router(Arc::clone(&mock)));
            mocks.push(mock);
        }
        let models = ModelList {
            providers: config
                .providers
                .iter()
                .map(|p| {
                    let (kind, models) = match p.kind {
                        ProviderConfigKind::Remote(kind) => (kind, p.models.clone()),
                        // Listed by the wire format it is reached with.
                        ProviderConfigKind::Mock => {
                            (ProviderKind::OpenAi, mock::listed_models(&p.models))
                        }
                    };
                    ProviderInfo {
                        name: p.name.clone(),
                        kind,
                        models: models.iter().map(|m| format!("{}/{m}", p.name)).collect(),
                    }
                })
                .collect(),
        };
        let observability =
            Observability::new(&config.observability, &models, &config.mcp_servers)?;
        let limiter = Arc::new(
            Limiter::new(&config.cluster, observability.metrics())
                .context("cannot set up the shared limits ([cluster])")?,
        );
        let upstream = upstream.with_metrics(observability.metrics().clone());
        Ok(AppState {
            inner: Arc::new(Inner {
                routes,
                upstream,
                models,
                mocks,
                mcp: McpPool::new(&config.mcp_servers),
                server: config.server.clone(),
                gateway: config.mcp_gateway.clone(),
                auth: Arc::new(Authenticator::new(config)?),
                observability,
                limiter,
                drain: Drain::default(),
            }),
        })
    }

    /// The graceful shutdown, as WebSocket connections follow it.
    pub(crate) fn drain(&self) -> &Drain {
        &self.inner.drain
    }

    /// Every caller's request rate, open streams and token budget.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
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

    /// The mock providers (whether or not they are served over HTTP).
    pub fn mocks(&self) -> &[Arc<MockProvider>] {
        &self.inner.mocks
    }

    /// The MCP servers and their live sessions.
    pub fn mcp(&self) -> &McpPool {
        &self.inner.mcp
    }

    /// Who may call the proxy, and with what scopes.
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.inner.auth
    }

    /// The MCP gateway's settings.
    pub fn gateway(&self) -> &McpGatewayConfig {
        &self.inner.gateway
    }

    /// Server settings used by the layers (CORS, body limit).
    pub fn server(&self) -> &ServerConfig {
        &self.inner.server
    }

    /// Metrics, readiness and the audit settings.
    pub fn observability(&self) -> &Observability {
        &self.inner.observability
    }
}

/// Where the route table sends `p`'s requests. A mock gets an address that is never dialled: the
/// upstream module answers its provider name in process.
fn endpoint(p: &ProviderConfig) -> anyhow::Result<ProviderEndpoint> {
    let (kind, base_url) = match p.kind {
        ProviderConfigKind::Remote(kind) => {
            let base_url = p
                .base_url
                .clone()
                .with_context(|| format!("provider {:?} has no base_url", p.name))?;
            (kind, base_url)
        }
        ProviderConfigKind::Mock => (ProviderKind::OpenAi, mock::IN_PROCESS_BASE_URL.to_owned()),
    };
    Ok(ProviderEndpoint {
        name: p.name.clone(),
        kind,
        base_url,
        api_key: p.api_key.as_ref().map(|k| k.expose_secret().to_owned()),
    })
}
