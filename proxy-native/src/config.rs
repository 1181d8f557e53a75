//! The proxy's configuration file (TOML): what it listens on, how long it waits for upstreams, and
//! which providers it may reach. Everything is checked here, at start-up, so that a mistake is
//! reported once with the file, the key and the problem, and never surfaces later as a request
//! failure. The `[[mcp_servers]]` entries are checked in `config/mcp.rs`.

mod auth;
mod cluster;
mod embedded;
mod mcp;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use switchyard_shared::{ProviderKind, RetryPolicy};

use crate::mock::MockScript;

pub use auth::{AuthConfig, JwtConfig, KeyConfig, Limits, TokensConfig};
pub use cluster::{ClusterConfig, RedisUnavailable, RedisUrl};
pub use embedded::embedded_default;
pub use mcp::{BuiltinServer, Isolation, McpServerConfig, PASSED_THROUGH_ENV};

/// The whole configuration; `Config::default()` runs with no providers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listening socket and the limits applied to every request.
    #[serde(default)]
    pub server: ServerConfig,
    /// Timeouts for requests to upstreams.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// The LLM providers clients may name (`"<provider>/<model>"`).
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// The MCP servers clients may name (a separate namespace from providers).
    #[serde(default)]
    pub mcp_servers: Vec<McpServerConfig>,
    /// The MCP gateway at `/mcp`.
    #[serde(default)]
    pub mcp_gateway: McpGatewayConfig,
    /// Audit lines, `/metrics` and `/readyz`.
    #[serde(default)]
    pub observability: ObservabilityConfig,
    /// The API keys clients may present, by their hashes (`[[keys]]`).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Other ways to authenticate clients (`[auth.jwt]`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Limits shared with other instances through Redis (`[cluster]`).
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// The `[server]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; a non-loopback address needs authentication (`[[keys]]` or
    /// `[auth.jwt]`).
    pub listen: SocketAddr,
    /// Browser origins allowed by CORS; empty sends no CORS headers, `["*"]` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// Largest accepted request body, in bytes; larger ones get `413 payload_too_large`.
    pub max_body_bytes: usize,
    /// Serve the demo web app at `/` (and what it needs at `/demo/config.json`).
    pub demo_page: bool,
    /// Host names accepted in the `Host` header besides loopback ones (`localhost`, `*.localhost`,
    /// 127.0.0.0/8, `::1`): a page whose own name resolves to 127.0.0.1 (DNS rebinding) must not
    /// be able to use the proxy.
    pub allowed_hosts: Vec<String>,
    /// How long open requests (streams above all) may run on after SIGTERM or Ctrl-C, in
    /// milliseconds; what is still open then is cut.
    pub shutdown_grace_ms: u64,
}

impl ServerConfig {
    /// [`ServerConfig::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            cors_allowed_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            demo_page: false,
            allowed_hosts: Vec::new(),
            shutdown_grace_ms: 10_000,
        }
    }
}

/// The `[upstream]` table; every value is in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Time allowed to open a connection to an upstream.
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers arrive.
    pub first_byte_timeout_ms: u64,
    /// Longest gap allowed between two chunks of a response body.
    pub idle_timeout_ms: u64,
    /// Time allowed for a whole non-streamed exchange.
    pub request_timeout_ms: u64,
    /// Upstream requests in flight at once (streams count until they end); more wait for a place
    /// within the first-byte timeout, then fail with `upstream_timeout`.
    pub max_concurrent_requests: usize,
    /// Attempts per request, the first included, for failures that are safe to repeat
    /// (unreachable upstream, 502, 503, 429 with `Retry-After`); 1 turns retries off.
    pub retry_max_attempts: u32,
    /// The pause before the first retry, before jitter; it doubles with each further one.
    pub retry_base_delay_ms: u64,
    /// The longest backoff pause (a `Retry-After` is honoured as given, if it fits the budget).
    pub retry_max_delay_ms: u64,
    /// Time from the first attempt within which every retry must start; below
    /// `first_byte_timeout_ms`, which covers all attempts. Default: 2 s, or the first-byte
    /// timeout if that is shorter.
    pub retry_budget_ms: Option<u64>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 300_000,
            max_concurrent_requests: 256,
            retry_max_attempts: RetryPolicy::DEFAULT.max_attempts,
            retry_base_delay_ms: RetryPolicy::DEFAULT.base_delay.as_millis() as u64,
            retry_max_delay_ms: RetryPolicy::DEFAULT.max_delay.as_millis() as u64,
            retry_budget_ms: None,
        }
    }
}

impl UpstreamConfig {
    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Self::first_byte_timeout_ms`] as a duration.
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }

    /// [`Self::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The retry settings as `shared`'s policy; the budget never exceeds the first-byte timeout.
    pub fn retry_policy(&self) -> RetryPolicy {
        let budget = self
            .retry_budget_ms
            .unwrap_or(RetryPolicy::DEFAULT.budget.as_millis() as u64)
            .min(self.first_byte_timeout_ms);
        RetryPolicy {
            max_attempts: self.retry_max_attempts,
            base_delay: Duration::from_millis(self.retry_base_delay_ms),
            max_delay: Duration::from_millis(self.retry_max_delay_ms),
            budget: Duration::from_millis(budget),
        }
    }
}

/// The `[mcp_gateway]` table: `/mcp`, one MCP server offering every configured one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpGatewayConfig {
    /// Serve the gateway at `/mcp`.
    pub enabled: bool,
    /// Sessions (clients of protocol versions up to 2025-11-25) open at once; a further client's
    /// `initialize` is answered 503 until one ends. Stateless (2026-07-28) requests are not
    /// counted.
    pub max_sessions: usize,
    /// Of those, the most one caller may hold.
    pub max_sessions_per_user: usize,
    /// A session without requests from its client for this long is closed, in milliseconds;
    /// the client's next request in it restores it.
    pub session_idle_timeout_ms: u64,
    /// How long a session id stays valid after its `initialize`, in milliseconds; then its
    /// client must initialize again.
    pub session_max_age_ms: u64,
    /// The environment variable holding the key that seals session ids (32 bytes, base64 or
    /// hex). Every instance that should resume the others' sessions needs the same key.
    pub session_key_env: Option<String>,
    /// A file holding that key, instead of `session_key_env`.
    pub session_key_file: Option<PathBuf>,
    /// The key itself, read from `session_key_env` or `session_key_file` when the file is
    /// loaded; without one, a random key is made at start-up.
    #[serde(skip)]
    pub session_key: Option<SessionKey>,
}

/// A 256-bit key; its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Reads a key written as base64 (standard or URL-safe, padded or not) or as hex.
    pub fn parse(text: &str) -> Result<SessionKey, String> {
        use base64::Engine as _;
        use base64::alphabet::{STANDARD, URL_SAFE};
        use base64::engine::DecodePaddingMode;
        use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
        let lenient =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            GeneralPurpose::new(&STANDARD, lenient)
                .decode(text)
                .or_else(|_| GeneralPurpose::new(&URL_SAFE, lenient).decode(text))
                .ok()
        };
        match bytes.map(<[u8; 32]>::try_from) {
            Some(Ok(key)) => Ok(SessionKey(key)),
            _ => Err(
                "must be 32 random bytes written as base64 or hex (`openssl rand -base64 32`)"
                    .into(),
            ),
        }
    }
}

impl Default for McpGatewayConfig {
    fn default() -> Self {
        McpGatewayConfig {
            enabled: true,
            max_sessions: 1_000,
            max_sessions_per_user: 16,
            session_idle_timeout_ms: 300_000,
            session_max_age_ms: 86_400_000,
            session_key_env: None,
            session_key_file: None,
            session_key: None,
        }
    }
}

impl McpGatewayConfig {
    /// [`Self::session_idle_timeout_ms`] as a duration.
    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.session_idle_timeout_ms)
    }

    /// [`Self::session_max_age_ms`] as a duration.
    pub fn session_max_age(&self) -> Duration {
        Duration::from_millis(self.session_max_age_ms)
    }
}

/// The `[observability]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityConfig {
    /// Record Prometheus metrics and serve them at `GET /metrics`. On by default: they carry no
    /// secrets and no user content, only configured names and bounded labels.
    pub metrics: bool,
    /// Serve `/metrics` without client authentication (for a scraper that holds no key); without
    /// it, `/metrics` asks for the same credentials as the API once authentication is configured.
    pub metrics_public: bool,
    /// Put each tool call's arguments into its audit line. Off by default: arguments are user
    /// data. Chat messages are never logged.
    pub audit_arguments: bool,
    /// Longest wait for one upstream's readiness check (`/readyz`), in milliseconds.
    pub readiness_timeout_ms: u64,
    /// How long a `/readyz` answer is reused, in milliseconds, so that frequent probes do not
    /// reach the upstreams each time; 0 checks on every probe.
    pub readiness_cache_ms: u64,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig {
            metrics: true,
            metrics_public: false,
            audit_arguments: false,
            readiness_timeout_ms: 2_000,
            readiness_cache_ms: 5_000,
        }
    }
}

impl ObservabilityConfig {
    /// [`Self::readiness_timeout_ms`] as a duration.
    pub fn readiness_timeout(&self) -> Duration {
        Duration::from_millis(self.readiness_timeout_ms)
    }

    /// [`Self::readiness_cache_ms`] as a duration.
    pub fn readiness_cache(&self) -> Duration {
        Duration::from_millis(self.readiness_cache_ms)
    }
}

/// One `[[providers]]` entry.
///
/// Which keys apply depends on `kind`: `base_url`, `api_key_env` and `api_key_file` for a remote
/// provider (`"openai"`), the `[providers.mock]` table for `"mock"`. A key of the other kind is
/// refused rather than ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The name clients use in model ids; unique, without `/`.
    pub name: String,
    /// A remote provider's wire format, or the built-in mock.
    pub kind: ProviderConfigKind,
    /// Remote: the API base URL, e.g. `https://api.openai.com/v1` (required).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Remote: name of the environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Remote: file holding the API key (surrounding whitespace is ignored); relative to the
    /// working directory.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Models listed by `GET /api/llm/models` (any model is still passed on). A mock that lists
    /// none lists `mock`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Mock: its script (`[providers.mock]`); without one, every message gets the fallback reply.
    #[serde(default)]
    pub mock: Option<MockScript>,
    /// The key itself, read from `api_key_env` or `api_key_file` when the file is loaded.
    #[serde(skip)]
    pub api_key: Option<SecretString>,
}

impl ProviderConfig {
    /// A mock provider named `name` running `script`, for configurations built in code (e.g.
    /// `ProviderConfig::mock("mock", MockScript::demo())`); it lists the model `mock` unless
    /// `models` is set.
    pub fn mock(name: impl Into<String>, script: MockScript) -> Self {
        ProviderConfig {
            name: name.into(),
            kind: ProviderConfigKind::Mock,
            base_url: None,
            api_key_env: None,
            api_key_file: None,
            models: Vec::new(),
            mock: Some(script),
            api_key: None,
        }
    }
}

/// What a provider's `kind` names: one of `shared`'s wire formats, spoken to a remote API, or
/// `"mock"`, the scripted provider the proxy answers itself.
///
/// `mock` is the proxy's own: it is not a [`ProviderKind`], so the SDK's direct mode cannot be
/// given one (it reaches a mock served over HTTP as an ordinary `openai` provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderConfigKind {
    /// A remote API in this wire format.
    Remote(ProviderKind),
    /// The built-in scripted provider.
    Mock,
}

impl<'de> Deserialize<'de> for ProviderConfigKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::IntoDeserializer;

        let name = String::deserialize(deserializer)?;
        if name == "mock" {
            return Ok(ProviderConfigKind::Mock);
        }
        // `shared` names its wire formats; its error lists them, and `mock` is added here.
        ProviderKind::deserialize(name.as_str().into_deserializer())
            .map(ProviderConfigKind::Remote)
            .map_err(|e: serde::de::value::Error| {
                serde::de::Error::custom(format!("{e} or `mock`"))
            })
    }
}

/// Whether `name` can be served as a path segment (`/mock/<name>/v1`, `/mcp/<name>`) as it is:
/// characters that URLs escape, or that the router reads as patterns (`{`, `*`), would make an
/// endpoint nobody can reach, and a leading `.` makes `.`/`..` segments.
pub fn is_path_segment(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// A configuration mistake: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The content is wrong.
    #[error("{}", format_invalid(.origin, .key.as_deref(), .problem))]
    Invalid {
        /// The file (or other source) of the configuration.
        origin: String,
        /// The offending key, e.g. `providers[1].base_url`, when one can be named.
        key: Option<String>,
        /// What is wrong.
        problem: String,
    },
}

fn format_invalid(origin: &str, key: Option<&str>, problem: &str) -> String {
    match key {
        Some(key) => format!("{origin}: `{key}`: {problem}"),
        None => format!("{origin}: {problem}"),
    }
}

impl ConfigError {
    fn invalid(origin: &str, key: impl fmt::Display, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: origin.to_owned(),
            key: Some(key.to_string()),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Reads, checks and completes (API keys) the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses, checks and completes a configuration; `origin` names its source in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config = parse(text, origin)?;
        config.validate(origin)?;
        for (i, provider) in config.providers.iter_mut().enumerate() {
            provider.api_key = read_api_key(provider, origin, i)?;
        }
        mcp::check_and_resolve(&mut config.mcp_servers, origin)?;
        config.mcp_gateway.session_key = read_session_key(&config.mcp_gateway, origin)?;
        let tokens = &config.auth.tokens;
        config.auth.tokens.signing_key = read_key(
            tokens.signing_key_env.as_deref(),
            tokens.signing_key_file.as_deref(),
            "auth.tokens.signing_key",
            origin,
        )?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        auth::check(&self.keys, &self.auth, origin)?;
        cluster::check(&self.cluster, origin)?;
        check_listen(self.server.listen, self.requires_auth())
            .map_err(|problem| ConfigError::invalid(origin, "server.listen", problem))?;
        validate_origins(&self.server.cors_allowed_origins, origin)?;
        for (i, host) in self.server.allowed_hosts.iter().enumerate() {
            let fits = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
            if !fits {
                return Err(ConfigError::invalid(
                    origin,
                    format!("server.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name (no port, scheme or path)"),
                ));
            }
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                origin,
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        let u = &self.upstream;
        for (key, value) in [
            ("connect_timeout_ms", u.connect_timeout_ms),
            ("first_byte_timeout_ms", u.first_byte_timeout_ms),
            ("idle_timeout_ms", u.idle_timeout_ms),
            ("request_timeout_ms", u.request_timeout_ms),
            ("max_concurrent_requests", u.max_concurrent_requests as u64),
            ("retry_max_attempts", u64::from(u.retry_max_attempts)),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    origin,
                    format!("upstream.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if let Some(budget) = u.retry_budget_ms
            && budget >= u.first_byte_timeout_ms
        {
            // The first-byte timeout covers every attempt and pause; a budget as long leaves the
            // last attempt no time to be answered.
            return Err(ConfigError::invalid(
                origin,
                "upstream.retry_budget_ms",
                format!(
                    "must be less than upstream.first_byte_timeout_ms ({})",
                    u.first_byte_timeout_ms
                ),
            ));
        }
        let g = &self.mcp_gateway;
        for (key, value) in [
            ("max_sessions", g.max_sessions as u64),
            ("max_sessions_per_user", g.max_sessions_per_user as u64),
            ("session_idle_timeout_ms", g.session_idle_timeout_ms),
            ("session_max_age_ms", g.session_max_age_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    origin,
                    format!("mcp_gateway.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        for (i, p) in self.providers.iter().enumerate() {
            validate_provider(i, p, &self.providers[..i], origin)?;
        }
        if self.observability.readiness_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                origin,
                "observability.readiness_timeout_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// Checks `providers[index]`; `earlier` are the entries before it.
fn validate_provider(
    index: usize,
    p: &ProviderConfig,
    earlier: &[ProviderConfig],
    origin: &str,
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("providers[{index}].{field}");
    if p.name.is_empty() || p.name.contains('/') {
        return Err(ConfigError::invalid(
            origin,
            key("name"),
            format!("{:?} must be non-empty and contain no '/'", p.name),
        ));
    }
    if let Some(j) = earlier.iter().position(|q| q.name == p.name) {
        return Err(ConfigError::invalid(
            origin,
            key("name"),
            format!("{:?} is already used by providers[{j}]", p.name),
        ));
    }
    match p.kind {
        ProviderConfigKind::Remote(kind) => {
            let Some(base_url) = &p.base_url else {
                return Err(ConfigError::invalid(
                    origin,
                    key("base_url"),
                    format!("is required for kind {:?}", kind.as_str()),
                ));
            };
            check_base_url(base_url)
                .map_err(|problem| ConfigError::invalid(origin, key("base_url"), problem))?;
            if p.mock.is_some() {
                return Err(ConfigError::invalid(
                    origin,
                    key("mock"),
                    "only a provider of kind \"mock\" has a script",
                ));
            }
        }
        ProviderConfigKind::Mock => {
            // A mock is answered inside the proxy: there is nothing to reach and no key to hold.
            for (field, set) in [
                ("base_url", p.base_url.is_some()),
                ("api_key_env", p.api_key_env.is_some()),
                ("api_key_file", p.api_key_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::invalid(
                        origin,
                        key(field),
                        "a mock provider is answered inside the proxy and takes no base_url or key",
                    ));
                }
            }
            if let Some(script) = &p.mock {
                script.check().map_err(|e| {
                    ConfigError::invalid(origin, key(&format!("mock.{}", e.key)), e.problem)
                })?;
                if script.serve_http && !is_path_segment(&p.name) {
                    return Err(ConfigError::invalid(
                        origin,
                        key("name"),
                        format!(
                            "{:?} is served at /mock/<name>/v1 (serve_http), so it may only \
                             contain letters, digits, '-', '_', '.' and '~'",
                            p.name
                        ),
                    ));
                }
            }
        }
    }
    if p.api_key_env.is_some() && p.api_key_file.is_some() {
        return Err(ConfigError::invalid(
            origin,
            key("api_key_file"),
            "set either api_key_env or api_key_file, not both",
        ));
    }
    if let Some(m) = p.models.iter().position(|m| m.is_empty()) {
        return Err(ConfigError::invalid(
            origin,
            key(&format!("models[{m}]")),
            "must not be empty",
        ));
    }
    Ok(())
}

/// Deserializes, naming the key of a type error through `serde_path_to_error`; the `toml` crate's
/// own message adds the line, column and a snippet.
fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |key: Option<String>, error: toml::de::Error| ConfigError::Invalid {
        origin: origin.to_owned(),
        key,
        problem: error.to_string().trim_end().to_owned(),
    };
    let deserializer = toml::de::Deserializer::parse(text).map_err(|e| invalid(None, e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = (key != ".").then_some(key);
        let mut inner = e.into_inner();
        // Errors raised through the path tracker lose the document; give it back for the snippet,
        // except for a key's `hash` (a key pasted there by mistake must not be repeated into logs)
        // and the Redis URL (it may carry a password).
        let secret = key
            .as_deref()
            .is_some_and(|k| k.ends_with(".hash") || k == "cluster.redis_url");
        inner.set_input((!secret).then_some(text));
        invalid(key, inner)
    })
}

impl Config {
    /// Whether clients must authenticate: some `[[keys]]` or `[auth.jwt]` is configured.
    pub fn requires_auth(&self) -> bool {
        !self.keys.is_empty() || self.auth.jwt.is_some()
    }
}

/// Refuses addresses other hosts could reach unless clients must authenticate: otherwise anyone
/// who can connect could spend the configured API keys and use the MCP servers.
pub fn check_listen(addr: SocketAddr, requires_auth: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || requires_auth {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr}: no client authentication is configured, so anyone who \
             can reach that address could use the proxy. Either bind a loopback address \
             (127.0.0.1 or ::1), or configure authentication: run `switchyard keys new --name \
             <client>` and paste the `[[keys]]` block it prints into the config file (or set up \
             `[auth.jwt]`); then list the host names clients use in `server.allowed_hosts`"
        ))
    }
}

fn validate_origins(origins: &[String], origin: &str) -> Result<(), ConfigError> {
    let wildcard = origins.iter().any(|o| o == "*");
    for (i, o) in origins.iter().enumerate() {
        let key = format!("server.cors_allowed_origins[{i}]");
        if wildcard && origins.len() > 1 {
            return Err(ConfigError::invalid(
                origin,
                key,
                "\"*\" allows every origin and cannot be combined with others",
            ));
        }
        if o == "*" {
            continue;
        }
        let url = reqwest::Url::parse(o).map_err(|e| {
            ConfigError::invalid(origin, &key, format!("{o:?} is not an origin: {e}"))
        })?;
        // Browsers send the origin as scheme://host[:port]; anything more never matches.
        if url.origin().ascii_serialization() != *o {
            return Err(ConfigError::invalid(
                origin,
                key,
                format!(
                    "{o:?} is not an origin; expected scheme://host[:port] like \"http://localhost:5173\""
                ),
            ));
        }
    }
    Ok(())
}

fn check_base_url(base_url: &str) -> Result<(), String> {
    let url =
        reqwest::Url::parse(base_url).map_err(|e| format!("{base_url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("must be an absolute http(s) URL, got {base_url:?}"));
    }
    // Credentials in a URL end up in logs and error reports; keys belong in api_key_env/file.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain credentials; put the key in api_key_env or api_key_file".into(),
        );
    }
    Ok(())
}

fn read_api_key(
    p: &ProviderConfig,
    origin: &str,
    index: usize,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(var) = &p.api_key_env {
        let key = format!("providers[{index}].api_key_env");
        // The value is never put into a message, only the variable's name.
        return match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                Ok(Some(SecretString::from(value.trim().to_owned())))
            }
            Ok(_) => Err(ConfigError::invalid(
                origin,
                key,
                format!("environment variable {var} is empty"),
            )),
            Err(_) => Err(ConfigError::invalid(
                origin,
                key,
                format!("environment variable {var} is not set (or not valid UTF-8)"),
            )),
        };
    }
    if let Some(path) = &p.api_key_file {
        let key = format!("providers[{index}].api_key_file");
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(origin, &key, format!("cannot read {}: {e}", path.display()))
        })?;
        let value = text.trim();
        if value.is_empty() {
            return Err(ConfigError::invalid(
                origin,
                key,
                format!("{} is empty", path.display()),
            ));
        }
        return Ok(Some(SecretString::from(value.to_owned())));
    }
    Ok(None)
}

fn read_session_key(g: &McpGatewayConfig, origin: &str) -> Result<Option<SessionKey>, ConfigError> {
    if g.session_key_env.is_some() && g.session_key_file.is_some() {
        return Err(ConfigError::invalid(
            origin,
            "mcp_gateway.session_key_file",
            "set either session_key_env or session_key_file, not both",
        ));
    }
    read_key(
        g.session_key_env.as_deref(),
        g.session_key_file.as_deref(),
        "mcp_gateway.session_key",
        origin,
    )
}

/// A 32-byte key from the environment variable `env` or the file `file` (`<field>_env`,
/// `<field>_file` in errors); `None` when neither is set.
fn read_key(
    env: Option<&str>,
    file: Option<&Path>,
    field: &str,
    origin: &str,
) -> Result<Option<SessionKey>, ConfigError> {
    let (key, text) = match (env, file) {
        (Some(var), _) => (
            format!("{field}_env"),
            // The value is never put into a message, only the variable's name.
            std::env::var(var).map_err(|_| {
                ConfigError::invalid(
                    origin,
                    format!("{field}_env"),
                    format!("environment variable {var} is not set (or not valid UTF-8)"),
                )
            })?,
        ),
        (None, Some(path)) => (
            format!("{field}_file"),
            std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    origin,
                    format!("{field}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?,
        ),
        (None, None) => return Ok(None),
    };
    SessionKey::parse(&text)
        .map(Some)
        .map_err(|problem| ConfigError::invalid(origin, key, problem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const ORIGIN: &str = "/etc/switchyard/test.toml";

    fn error(text: &str) -> String {
        Config::from_toml_str(text, ORIGIN).unwrap_err().to_string()
    }

    fn assert_names(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{part:?} missing in:\n{message}");
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = Config::from_toml_str("", ORIGIN).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
        assert!(c.server.cors_allowed_origins.is_empty());
        assert_eq!(c.upstream.request_timeout(), Duration::from_secs(300));
        assert!(c.providers.is_empty());
    }

    #[test]
    fn observability_defaults_and_settings() {
        let c = Config::from_toml_str("", ORIGIN).unwrap();
        let o = &c.observability;
        assert!(o.metrics && !o.metrics_public && !o.audit_arguments);
        assert_eq!(o.readiness_timeout(), Duration::from_secs(2));
        assert_eq!(o.readiness_cache(), Duration::from_secs(5));
        let c = Config::from_toml_str(
            "[observability]\nmetrics = false\naudit_arguments = true\nreadiness_cache_ms = 0\n",
            ORIGIN,
        )
        .unwrap();
        assert!(!c.observability.metrics && c.observability.audit_arguments);
        assert_eq!(c.observability.readiness_cache(), Duration::ZERO);
        let m = error("[observability]\nreadiness_timeout_ms = 0\n");
        assert_names(
            &m,
            &["`observability.readiness_timeout_ms`", "greater than 0"],
        );
        let m = error("[observability]\naudit_messages = true\n");
        assert_names(&m, &["unknown field `audit_messages`"]);
    }

    #[test]
    fn retries_are_on_by_default_and_fit_the_first_byte_timeout() {
        let c = Config::from_toml_str("", ORIGIN).unwrap();
        assert_eq!(c.upstream.retry_policy(), RetryPolicy::DEFAULT);
        let c = Config::from_toml_str("[upstream]\nretry_max_attempts = 1\n", ORIGIN).unwrap();
        assert!(!c.upstream.retry_policy().enabled());
        // A short first-byte timeout shortens the default budget rather than being refused.
        let c = Config::from_toml_str("[upstream]\nfirst_byte_timeout_ms = 300\n", ORIGIN).unwrap();
        assert_eq!(c.upstream.retry_policy().budget, Duration::from_millis(300));
        let c = Config::from_toml_str(
            "[upstream]\nretry_budget_ms = 500\nretry_base_delay_ms = 10\nretry_max_delay_ms = 40\n",
            ORIGIN,
        )
        .unwrap();
        let p = c.upstream.retry_policy();
        assert_eq!(
            (p.budget, p.base_delay, p.max_delay),
            (
                Duration::from_millis(500),
                Duration::from_millis(10),
                Duration::from_millis(40)
            )
        );
        let m = error("[upstream]\nfirst_byte_timeout_ms = 1000\nretry_budget_ms = 1000\n");
        assert_names(
            &m,
            &["`upstream.retry_budget_ms`", "first_byte_timeout_ms (1000)"],
        );
        let m = error("[upstream]\nretry_max_attempts = 0\n");
        assert_names(&m, &["`upstream.retry_max_attempts`", "greater than 0"]);
    }

    #[test]
    fn a_full_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "  sk-from-file\n").unwrap();
        let text = format!(
            r#"
            [server]
            listen = "[::1]:0"
            cors_allowed_origins = ["http://localhost:5173"]
            max_body_bytes = 10
            [upstream]
            first_byte_timeout_ms = 300
            [[providers]]
            name = "local"
            kind = "openai"
            base_url = "http://127.0.0.1:9000/v1"
            api_key_file = {key_file:?}
            models = ["llama3.2"]
            "#
        );
        let c = Config::from_toml_str(&text, ORIGIN).unwrap();
        assert_eq!(c.upstream.first_byte_timeout(), Duration::from_millis(300));
        assert_eq!(c.upstream.idle_timeout(), Duration::from_secs(60));
        let p = &c.providers[0];
        assert_eq!(p.kind, ProviderConfigKind::Remote(ProviderKind::OpenAi));
        assert_eq!(p.api_key.as_ref().unwrap().expose_secret(), "sk-from-file");
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-from-file"), "{shown}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_the_place() {
        let m = error("[server\nlisten = 1");
        assert_names(&m, &[ORIGIN, "line 1"]);
    }

    #[test]
    fn type_errors_name_the_key() {
        let m = error(
            r#"
            [[providers]]
            name = "a"
            kind = "openai"
            base_url = "http://x"
            [[providers]]
            name = "b"
            kind = "openai"
            base_url = 7
            "#,
        );
        assert_names(&m, &[ORIGIN, "`providers[1].base_url`", "line 9", "string"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let m = error("[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n");
        assert_names(&m, &[ORIGIN, "unknown field `port`", "server"]);
        let m = error(
            "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://x\"\nkey = \"k\"\n",
        );
        assert_names(&m, &["unknown field `key`", "providers[0]"]);
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let m = error(
            "[[providers]]\nname = \"a\"\nkind = \"smoke-signals\"\nbase_url = \"http://x\"\n",
        );
        assert_names(
            &m,
            &["`providers[0].kind`", "smoke-signals", "openai", "mock"],
        );
    }

    #[test]
    fn semantic_errors_name_the_key_and_the_problem() {
        let provider = |name: &str, url: &str| {
            format!("[[providers]]\nname = {name:?}\nkind = \"openai\"\nbase_url = {url:?}\n")
        };
        let m = error(&(provider("a", "http://x") + &provider("b", "ftp://x")));
        assert_names(&m, &[ORIGIN, "`providers[1].base_url`", "http(s)"]);
        let m = error(&(provider("a", "http://x") + &provider("a", "http://y")));
        assert_names(&m, &["`providers[1].name`", "already used"]);
        let m = error(&provider("a/b", "http://x"));
        assert_names(&m, &["`providers[0].name`", "'/'"]);
        let m = error(&provider("a", "http://user:pw@x"));
        assert_names(&m, &["`providers[0].base_url`", "credentials"]);
        assert!(!m.contains("pw"), "{m}");
        let m = error("[upstream]\nidle_timeout_ms = 0\n");
        assert_names(&m, &["`upstream.idle_timeout_ms`", "greater than 0"]);
        let m = error("[server]\ncors_allowed_origins = [\"http://a.test/path\"]\n");
        assert_names(&m, &["`server.cors_allowed_origins[0]`", "not an origin"]);
        let m = error("[server]\ncors_allowed_origins = [\"*\", \"http://a.test\"]\n");
        assert_names(&m, &["`server.cors_allowed_origins[0]`", "\"*\""]);
    }

    #[test]
    fn mock_providers_need_no_address_and_take_a_script() {
        let c = Config::from_toml_str(
            r#"
            [[providers]]
            name = "mock"
            kind = "mock"
            [providers.mock]
            chunk_delay_ms = 5
            serve_http = true
            [[providers.mock.rules]]
            match = '(?i)hello (\w+)'
            reply = "Hi {1}"
            [[providers]]
            name = "plain"
            kind = "mock"
            "#,
            ORIGIN,
        )
        .unwrap();
        assert_eq!(c.providers[0].kind, ProviderConfigKind::Mock);
        let script = c.providers[0].mock.as_ref().unwrap();
        assert_eq!((script.chunk_delay_ms, script.serve_http), (5, true));
        assert!(c.providers[1].mock.is_none());
        let built = ProviderConfig::mock("demo", MockScript::demo());
        assert_eq!(built.kind, ProviderConfigKind::Mock);
    }

    #[test]
    fn keys_of_the_other_kind_are_refused() {
        let m = error("[[providers]]\nname = \"a\"\nkind = \"openai\"\n");
        assert_names(
            &m,
            &[ORIGIN, "`providers[0].base_url`", "required", "openai"],
        );
        let m = error(
            "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://x\"\n[providers.mock]\n",
        );
        assert_names(&m, &["`providers[0].mock`", "\"mock\""]);
        for key in [
            "base_url = \"http://x\"",
            "api_key_env = \"K\"",
            "api_key_file = \"k\"",
        ] {
            let m = error(&format!(
                "[[providers]]\nname = \"a\"\nkind = \"mock\"\n{key}\n"
            ));
            let field = key.split(' ').next().unwrap();
            assert_names(
                &m,
                &[&format!("`providers[0].{field}`"), "inside the proxy"],
            );
        }
    }

    #[test]
    fn script_mistakes_name_their_key() {
        let m = error(
            "[[providers]]\nname = \"a\"\nkind = \"mock\"\n[[providers.mock.rules]]\nmatch = '(a'\nreply = \"x\"\n",
        );
        assert_names(
            &m,
            &[
                ORIGIN,
                "`providers[0].mock.rules[0].match`",
                "line 5",
                "regular expression",
            ],
        );
        let m = error(
            "[[providers]]\nname = \"a\"\nkind = \"mock\"\n[[providers.mock.rules]]\nmatch = '(a)'\nreply = \"{2}\"\n",
        );
        assert_names(&m, &["`providers[0].mock.rules[0].reply`", "`{2}`"]);
        let m = error(
            "[[providers]]\nname = \"a\"\nkind = \"mock\"\n[[providers.mock.rules]]\ntool_calls = [{ name = \" \" }]\n",
        );
        assert_names(
            &m,
            &["`providers[0].mock.rules[0].tool_calls[0].name`", "empty"],
        );
        let m = error(
            "[[providers]]\nname = \"a:b\"\nkind = \"mock\"\n[providers.mock]\nserve_http = true\n",
        );
        assert_names(&m, &["`providers[0].name`", "serve_http"]);
    }

    #[test]
    fn a_missing_key_variable_is_named() {
        let var = "SWITCHYARD_TEST_VARIABLE_THAT_IS_NEVER_SET";
        let m = error(&format!(
            "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key_env = {var:?}\n"
        ));
        assert_names(&m, &[ORIGIN, "`providers[0].api_key_env`", var, "not set"]);
    }

    #[test]
    fn a_missing_or_empty_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        for path in [empty, dir.path().join("absent")] {
            let m = error(&format!(
                "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key_file = {path:?}\n"
            ));
            assert_names(
                &m,
                &["`providers[0].api_key_file`", &path.display().to_string()],
            );
        }
    }

    #[test]
    fn non_loopback_listen_is_refused() {
        for addr in ["0.0.0.0:3001", "192.0.2.1:80", "[::]:3001"] {
            let m = error(&format!("[server]\nlisten = {addr:?}\n"));
            assert_names(
                &m,
                &[ORIGIN, "`server.listen`", "127.0.0.1", "authentication"],
            );
        }
        let m = error("[server]\nlisten = \"localhost\"\n");
        assert_names(&m, &["`server.listen`", "socket address"]);
    }

    #[test]
    fn unreadable_files_are_named() {
        let m = Config::load(Path::new("/nonexistent/switchyard.toml"))
            .unwrap_err()
            .to_string();
        assert_names(&m, &["/nonexistent/switchyard.toml"]);
    }
}
