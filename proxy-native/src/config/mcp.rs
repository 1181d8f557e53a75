//! The `[[mcp_servers]]` entries: which MCP servers clients may use, how the proxy reaches them
//! (a command it starts, a Streamable HTTP URL, or a server built into the proxy) and how long it
//! waits for them.
//!
//! Values that may be secret (environment variables for a child, HTTP headers) can be written in
//! the file or taken from the proxy's own environment (`env_from`, `headers_from`); either way
//! they are read once at start-up, kept as [`SecretString`]s and never shown by `Debug`, logs or
//! error messages (only their names are).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use secrecy::SecretString;
use serde::Deserialize;
use switchyard_shared::mcp::{McpTransport, namespace};

use super::ConfigError;

/// Variables a stdio server gets from the proxy's environment unless `inherit_env = true`: what
/// programs need to run (find executables, a home, a locale, a temp dir) and nothing that
/// typically holds a secret. The proxy's environment carries the LLM providers' keys, and an MCP
/// server is often third-party code.
pub const PASSED_THROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SYSTEMROOT",
    "WINDIR",
    "APPDATA",
    "LOCALAPPDATA",
    "USERPROFILE",
];

const DEFAULT_CALL_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 30_000;

/// The MCP servers built into the proxy (`transport = "builtin"`, `server = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinServer {
    /// Small deterministic tools (`now`, `calculate`, `search_notes`), a set of notes as
    /// resources, and a `summarize_notes` prompt: something real to try without installing a
    /// server.
    Demo,
}

/// Who shares an MCP server's session (`isolation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// One session for every caller: for servers without per-caller state.
    #[default]
    Shared,
    /// A session (for stdio, a process) of its own for each user, so no user can see or use
    /// what another's session holds.
    PerUser,
}

/// Users with a session of their own at once, per `per_user` server, unless the entry says.
const DEFAULT_MAX_USER_SESSIONS: usize = 32;

/// One `[[mcp_servers]]` entry.
///
/// Which keys apply depends on `transport`: `command`, `args`, `env`, `env_from`, `inherit_env`
/// and `cwd` for `"stdio"`; `url`, `headers` and `headers_from` for `"streamable_http"` and
/// `"sse"` (the legacy HTTP+SSE transport, whose `url` is the event stream, often `/sse`);
/// `server` and `serve_http` for `"builtin"`. A key of another kind is refused rather than
/// ignored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The name clients use; unique among MCP servers, without `/` or `__`, not ending in `_`.
    pub name: String,
    /// How the proxy reaches the server.
    pub transport: McpTransport,
    /// stdio: the program to start; a bare name is looked up on `PATH`, a relative path is taken
    /// from the proxy's working directory.
    #[serde(default)]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment variables given to it, with their values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: environment variables given to it, each taken from the named variable of the
    /// proxy's environment (`GITHUB_TOKEN = "SWITCHYARD_GITHUB_TOKEN"`).
    #[serde(default)]
    pub env_from: BTreeMap<String, String>,
    /// stdio: pass the proxy's whole environment on; by default only [`PASSED_THROUGH_ENV`].
    #[serde(default)]
    pub inherit_env: bool,
    /// stdio: the working directory; by default the proxy's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// streamable_http: the MCP endpoint, e.g. `http://127.0.0.1:3000/mcp`; sse: the event
    /// stream, e.g. `http://127.0.0.1:3000/sse`. Credentials belong in `headers_from`, not in
    /// the URL.
    #[serde(default)]
    pub url: Option<String>,
    /// streamable_http: headers sent with every request, with their values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// streamable_http: headers sent with every request, each value taken from the named
    /// variable of the proxy's environment (`Authorization = "REMOTE_MCP_AUTH"`, the variable
    /// holding e.g. `Bearer sk-...`).
    #[serde(default)]
    pub headers_from: BTreeMap<String, String>,
    /// builtin: which server built into the proxy.
    #[serde(default)]
    pub server: Option<BuiltinServer>,
    /// builtin: also offer it to clients as an MCP Streamable HTTP endpoint at `/mcp/<name>` on
    /// the proxy's own listener (so a browser in direct mode can reach it).
    #[serde(default)]
    pub serve_http: bool,
    /// Whether callers share one session or each user gets their own.
    #[serde(default)]
    pub isolation: Isolation,
    /// per_user: the most users with a session at once; a further user takes the place of the
    /// one idle the longest, or waits (429) while all are busy. Default 32.
    #[serde(default)]
    pub max_user_sessions: Option<usize>,
    /// Longest time one request (a tool call, a list, a read) may take, in milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// A session unused for this long is closed (a stdio server is stopped), in milliseconds;
    /// the next request opens a new one.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Longest time to start the server (or reach it) and complete the MCP handshake, in
    /// milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The complete environment additions (`env` and `env_from`), read at start-up.
    #[serde(skip)]
    pub resolved_env: Vec<(String, SecretString)>,
    /// The complete headers (`headers` and `headers_from`), read at start-up.
    #[serde(skip)]
    pub resolved_headers: Vec<(HeaderName, SecretString)>,
}

fn default_call_timeout_ms() -> u64 {
    DEFAULT_CALL_TIMEOUT_MS
}

fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

/// Names only: values of `env` and `headers` may be credentials.
impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("McpServerConfig");
        d.field("name", &self.name)
            .field("transport", &self.transport);
        match self.transport {
            McpTransport::Stdio => d
                .field("command", &self.command)
                .field("args", &self.args)
                .field("env", &self.env.keys().collect::<Vec<_>>())
                .field("env_from", &self.env_from)
                .field("inherit_env", &self.inherit_env)
                .field("cwd", &self.cwd),
            McpTransport::StreamableHttp | McpTransport::Sse => d
                .field("url", &self.url)
                .field("headers", &self.headers.keys().collect::<Vec<_>>())
                .field("headers_from", &self.headers_from),
            McpTransport::Builtin => d
                .field("server", &self.server)
                .field("serve_http", &self.serve_http),
        };
        d.field("isolation", &self.isolation)
            .field("max_user_sessions", &self.max_user_sessions)
            .field("call_timeout_ms", &self.call_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl McpServerConfig {
    /// The built-in demo server under `name`, with the default timeouts and served over HTTP at
    /// `/mcp/<name>`; checked like an entry of the file.
    pub fn builtin_demo(name: &str) -> Result<Self, ConfigError> {
        let mut servers = [McpServerConfig {
            name: name.to_owned(),
            transport: McpTransport::Builtin,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            env_from: BTreeMap::new(),
            inherit_env: false,
            cwd: None,
            url: None,
            headers: BTreeMap::new(),
            headers_from: BTreeMap::new(),
            server: Some(BuiltinServer::Demo),
            serve_http: true,
            isolation: Isolation::Shared,
            max_user_sessions: None,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            resolved_env: Vec::new(),
            resolved_headers: Vec::new(),
        }];
        check_and_resolve(&mut servers, "the built-in demo MCP server")?;
        let [server] = servers;
        Ok(server)
    }

    /// The path of its Streamable HTTP endpoint on the proxy, when `serve_http` is set.
    pub fn http_path(&self) -> Option<String> {
        (self.transport == McpTransport::Builtin && self.serve_http)
            .then(|| format!("/mcp/{}", self.name))
    }

    /// per_user: the most users with a session at once.
    pub fn user_sessions_limit(&self) -> usize {
        self.max_user_sessions.unwrap_or(DEFAULT_MAX_USER_SESSIONS)
    }

    /// [`Self::call_timeout_ms`] as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// [`Self::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Checks every entry, and completes them: relative commands become absolute, and the
/// environment and header values (literal or from the environment) are read.
pub(super) fn check_and_resolve(
    servers: &mut [McpServerConfig],
    origin: &str,
) -> Result<(), ConfigError> {
    for i in 0..servers.len() {
        let (earlier, rest) = servers.split_at_mut(i);
        let server = &mut rest[0];
        let key = |field: &str| format!("mcp_servers[{i}].{field}");
        let invalid =
            |field: &str, problem: String| ConfigError::invalid(origin, key(field), problem);
        if server.name.is_empty() || server.name.contains('/') {
            return Err(invalid(
                "name",
                format!("{:?} must be non-empty and contain no '/'", server.name),
            ));
        }
        // The gateway (`/mcp`) names a tool `<server>__<tool>` and must split it back.
        if !namespace::is_gateway_server_name(&server.name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} may not contain \"__\" or end with '_': the MCP gateway at /mcp names \
                     this server's tools \"<server>__<tool>\"",
                    server.name
                ),
            ));
        }
        if let Some(j) = earlier.iter().position(|s| s.name == server.name) {
            return Err(invalid(
                "name",
                format!("{:?} is already used by mcp_servers[{j}]", server.name),
            ));
        }
        for (field, value) in [
            ("call_timeout_ms", server.call_timeout_ms),
            ("idle_timeout_ms", server.idle_timeout_ms),
            ("connect_timeout_ms", server.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0".into()));
            }
        }
        match (server.isolation, server.max_user_sessions) {
            (Isolation::Shared, Some(_)) => {
                return Err(invalid(
                    "max_user_sessions",
                    "applies only to isolation = \"per_user\"".into(),
                ));
            }
            (Isolation::PerUser, Some(0)) => {
                return Err(invalid(
                    "max_user_sessions",
                    "must be greater than 0".into(),
                ));
            }
            _ => {}
        }
        match server.transport {
            McpTransport::Stdio => check_stdio(server, &key, origin)?,
            McpTransport::StreamableHttp | McpTransport::Sse => check_http(server, &key, origin)?,
            McpTransport::Builtin => check_builtin(server, &key, origin)?,
        }
    }
    Ok(())
}

/// Refuses keys that belong to the other transport: silently ignoring them would hide a mistake
/// (an `env` table that never reaches an HTTP server, say).
fn refuse_foreign_keys(
    server: &McpServerConfig,
    key: &dyn Fn(&str) -> String,
    origin: &str,
) -> Result<(), ConfigError> {
    let transport = transport_name(server.transport);
    let stdio_keys = [
        ("command", server.command.is_some()),
        ("args", !server.args.is_empty()),
        ("env", !server.env.is_empty()),
        ("env_from", !server.env_from.is_empty()),
        ("inherit_env", server.inherit_env),
        ("cwd", server.cwd.is_some()),
    ];
    let http_keys = [
        ("url", server.url.is_some()),
        ("headers", !server.headers.is_empty()),
        ("headers_from", !server.headers_from.is_empty()),
    ];
    let builtin_keys = [
        ("server", server.server.is_some()),
        ("serve_http", server.serve_http),
    ];
    let foreign: Vec<&(&str, bool)> = match server.transport {
        McpTransport::Stdio => http_keys.iter().chain(&builtin_keys).collect(),
        McpTransport::StreamableHttp | McpTransport::Sse => {
            stdio_keys.iter().chain(&builtin_keys).collect()
        }
        McpTransport::Builtin => stdio_keys.iter().chain(&http_keys).collect(),
    };
    if let Some((field, _)) = foreign.into_iter().find(|(_, set)| *set) {
        return Err(ConfigError::invalid(
            origin,
            key(field),
            format!("does not apply to transport \"{transport}\""),
        ));
    }
    Ok(())
}

fn check_stdio(
    server: &mut McpServerConfig,
    key: &dyn Fn(&str) -> String,
    origin: &str,
) -> Result<(), ConfigError> {
    refuse_foreign_keys(server, key, origin)?;
    let invalid = |field: &str, problem: String| ConfigError::invalid(origin, key(field), problem);
    let command = match server.command.as_deref() {
        None => {
            return Err(invalid(
                "command",
                "is required for transport \"stdio\"".into(),
            ));
        }
        Some(c) if c.trim().is_empty() => {
            return Err(invalid("command", "must not be empty".into()));
        }
        Some(c) => c,
    };
    server.command = Some(locate_command(command).map_err(|p| invalid("command", p))?);
    if let Some(cwd) = &server.cwd
        && !cwd.is_dir()
    {
        return Err(invalid(
            "cwd",
            format!("{} is not an existing directory", cwd.display()),
        ));
    }
    let mut resolved = Vec::with_capacity(server.env.len() + server.env_from.len());
    for (name, value) in &server.env {
        check_env_name(name).map_err(|p| invalid(&format!("env.{name}"), p))?;
        resolved.push((name.clone(), SecretString::from(value.clone())));
    }
    for (name, source) in &server.env_from {
        let field = format!("env_from.{name}");
        check_env_name(name).map_err(|p| invalid(&field, p))?;
        if server.env.contains_key(name) {
            return Err(invalid(
                &field,
                format!("{name} is also set in env; set it once"),
            ));
        }
        let value = read_variable(source).map_err(|p| invalid(&field, p))?;
        resolved.push((name.clone(), value));
    }
    server.resolved_env = resolved;
    Ok(())
}

fn check_http(
    server: &mut McpServerConfig,
    key: &dyn Fn(&str) -> String,
    origin: &str,
) -> Result<(), ConfigError> {
    refuse_foreign_keys(server, key, origin)?;
    let invalid = |field: &str, problem: String| ConfigError::invalid(origin, key(field), problem);
    let Some(url) = server.url.as_deref() else {
        return Err(invalid(
            "url",
            format!(
                "is required for transport \"{}\"",
                transport_name(server.transport)
            ),
        ));
    };
    check_url(url).map_err(|p| invalid("url", p))?;
    let mut resolved = Vec::with_capacity(server.headers.len() + server.headers_from.len());
    let mut push = |field: String, name: &str, value: SecretString| {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&field, format!("{name:?} is not a valid header name")))?;
        if is_transport_header(&header) {
            return Err(invalid(
                &field,
                format!("{header} is set by the MCP transport itself"),
            ));
        }
        if resolved.iter().any(|(h, _)| *h == header) {
            return Err(invalid(&field, format!("{header} is set twice")));
        }
        // The value is checked but never quoted: it may be a credential.
        if HeaderValue::from_str(secrecy::ExposeSecret::expose_secret(&value)).is_err() {
            return Err(invalid(
                &field,
                "the value is not a valid header value (control characters or non-ASCII)".into(),
            ));
        }
        resolved.push((header, value));
        Ok(())
    };
    for (name, value) in &server.headers {
        push(
            format!("headers.{name}"),
            name,
            SecretString::from(value.clone()),
        )?;
    }
    for (name, source) in &server.headers_from {
        let field = format!("headers_from.{name}");
        let value = read_variable(source).map_err(|p| invalid(&field, p))?;
        push(field, name, value)?;
    }
    server.resolved_headers = resolved;
    Ok(())
}

fn check_builtin(
    server: &mut McpServerConfig,
    key: &dyn Fn(&str) -> String,
    origin: &str,
) -> Result<(), ConfigError> {
    refuse_foreign_keys(server, key, origin)?;
    let invalid = |field: &str, problem: String| ConfigError::invalid(origin, key(field), problem);
    if server.server.is_none() {
        return Err(invalid(
            "server",
            "is required for transport \"builtin\" (the one built-in server is \"demo\")".into(),
        ));
    }
    if server.serve_http && !super::is_path_segment(&server.name) {
        return Err(invalid(
            "name",
            format!(
                "{:?} is served at /mcp/<name> (serve_http = true), so it may only contain \
                 ASCII letters, digits, '-', '_', '.' and '~', and must not start with '.'",
                server.name
            ),
        ));
    }
    Ok(())
}

fn transport_name(transport: McpTransport) -> &'static str {
    match transport {
        McpTransport::Stdio => "stdio",
        McpTransport::StreamableHttp => "streamable_http",
        McpTransport::Sse => "sse",
        McpTransport::Builtin => "builtin",
    }
}

/// Headers that rmcp's Streamable HTTP client manages; a configured value would conflict.
fn is_transport_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type"
            | "accept"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "last-event-id"
            | "host"
            | "content-length"
    )
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(format!("must be an absolute http(s) URL, got {url:?}"));
    }
    // Credentials in a URL end up in logs and error reports; they belong in headers_from.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not contain credentials; send them with headers_from".into());
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(format!("{name:?} is not a valid environment variable name"));
    }
    Ok(())
}

/// Reads a variable of the proxy's environment; messages name it, never its value.
fn read_variable(source: &str) -> Result<SecretString, String> {
    match std::env::var(source) {
        Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
        Ok(_) => Err(format!("environment variable {source} is empty")),
        Err(_) => Err(format!(
            "environment variable {source} is not set (or not valid UTF-8)"
        )),
    }
}

/// Finds the program now, so that a typo stops the proxy at start-up rather than failing the
/// first call. A bare name is searched on `PATH` (and kept bare, so the child's lookup is the
/// same); a path is made absolute against the proxy's working directory, because a relative
/// program path combined with `cwd` means different things on different platforms.
fn locate_command(command: &str) -> Result<String, String> {
    let path = Path::new(command);
    if path.components().count() > 1 || path.is_absolute() {
        let absolute =
            std::path::absolute(path).map_err(|e| format!("cannot resolve {command:?}: {e}"))?;
        if !absolute.is_file() {
            return Err(format!("{} does not exist", absolute.display()));
        }
        return Ok(absolute.display().to_string());
    }
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(command);
            candidate.is_file() || (cfg!(windows) && candidate.with_extension("exe").is_file())
        })
    });
    if found {
        Ok(command.to_owned())
    } else {
        Err(format!("{command:?} was not found on PATH"))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::{BuiltinServer, Isolation, McpServerConfig, McpTransport};
    use crate::config::Config;

    const ORIGIN: &str = "/etc/switchyard/mcp.toml";

    fn error(text: &str) -> String {
        Config::from_toml_str(text, ORIGIN).unwrap_err().to_string()
    }

    fn assert_names(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{part:?} missing in:\n{message}");
        }
    }

    /// `sh` is on PATH everywhere these tests run.
    const STDIO: &str = "[[mcp_servers]]\nname = \"s\"\ntransport = \"stdio\"\ncommand = \"sh\"\n";
    const HTTP: &str = "[[mcp_servers]]\nname = \"h\"\ntransport = \"streamable_http\"\nurl = \"http://127.0.0.1:9/mcp\"\n";

    #[test]
    fn both_transports_parse_with_defaults() {
        let c = Config::from_toml_str(&format!("{STDIO}{HTTP}"), ORIGIN).unwrap();
        let [s, h] = &c.mcp_servers[..] else {
            panic!("two servers expected")
        };
        assert_eq!(s.command.as_deref(), Some("sh"));
        assert_eq!(s.call_timeout().as_millis(), 60_000);
        assert_eq!(s.idle_timeout().as_millis(), 300_000);
        assert_eq!(h.url.as_deref(), Some("http://127.0.0.1:9/mcp"));
        assert_eq!(s.isolation, Isolation::Shared);
        let c =
            Config::from_toml_str(&format!("{STDIO}isolation = \"per_user\"\n"), ORIGIN).unwrap();
        assert_eq!(c.mcp_servers[0].isolation, Isolation::PerUser);
        assert_eq!(c.mcp_servers[0].user_sessions_limit(), 32);
    }

    #[test]
    fn env_and_headers_come_from_the_file_or_the_environment_and_stay_hidden() {
        // PATH is set wherever tests run; setting a variable here would race other threads.
        let from_env = std::env::var("PATH").unwrap();
        let text = r#"
            [[mcp_servers]]
            name = "s"
            transport = "stdio"
            command = "sh"
            args = ["-c", "true"]
            env = { PLAIN = "literal-secret-value" }
            env_from = { TOKEN = "PATH" }
            [[mcp_servers]]
            name = "h"
            transport = "streamable_http"
            url = "http://127.0.0.1:9/mcp"
            headers = { "X-Team" = "blue-team-secret" }
            headers_from = { Authorization = "PATH" }
            "#;
        let c = Config::from_toml_str(text, ORIGIN).unwrap();
        let env: Vec<_> = c.mcp_servers[0]
            .resolved_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            env,
            [
                ("PLAIN", "literal-secret-value"),
                ("TOKEN", from_env.as_str())
            ]
        );
        let headers: Vec<_> = c.mcp_servers[1]
            .resolved_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-team", "blue-team-secret"),
                ("authorization", from_env.as_str())
            ]
        );
        let shown = format!("{c:?}");
        for secret in [
            "literal-secret-value",
            "blue-team-secret",
            from_env.as_str(),
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(
            shown.contains("PLAIN") && shown.contains("TOKEN"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_transports_are_refused_naming_the_key() {
        let m = error("[[mcp_servers]]\nname = \"a\"\ntransport = \"carrier-pigeon\"\n");
        assert_names(
            &m,
            &[
                ORIGIN,
                "`mcp_servers[0].transport`",
                "carrier-pigeon",
                "stdio",
                "streamable_http",
            ],
        );
    }

    #[test]
    fn sse_takes_a_url_and_headers_like_streamable_http() {
        let c = Config::from_toml_str(
            "[[mcp_servers]]\nname = \"a\"\ntransport = \"sse\"\nurl = \"http://127.0.0.1:9/sse\"\nheaders = { \"X-A\" = \"b\" }\n",
            ORIGIN,
        )
        .unwrap();
        assert_eq!(c.mcp_servers[0].resolved_headers.len(), 1);
        let m = error("[[mcp_servers]]\nname = \"a\"\ntransport = \"sse\"\n");
        assert_names(&m, &["`mcp_servers[0].url`", "required", "\"sse\""]);
        let m = error(
            "[[mcp_servers]]\nname = \"a\"\ntransport = \"sse\"\nurl = \"http://x/sse\"\ncommand = \"sh\"\n",
        );
        assert_names(&m, &["`mcp_servers[0].command`", "does not apply", "sse"]);
    }

    #[test]
    fn what_each_transport_needs_is_required() {
        let m = error("[[mcp_servers]]\nname = \"a\"\ntransport = \"stdio\"\n");
        assert_names(&m, &["`mcp_servers[0].command`", "required"]);
        let m = error("[[mcp_servers]]\nname = \"a\"\ntransport = \"streamable_http\"\n");
        assert_names(&m, &["`mcp_servers[0].url`", "required"]);
        let m = error(&format!("{STDIO}url = \"http://x/mcp\"\n"));
        assert_names(&m, &["`mcp_servers[0].url`", "does not apply", "stdio"]);
        let m = error(&format!("{HTTP}command = \"sh\"\n"));
        assert_names(&m, &["`mcp_servers[0].command`", "does not apply"]);
    }

    #[test]
    fn a_missing_source_variable_is_named_and_its_value_never_shown() {
        let var = "SWITCHYARD_TEST_MCP_VARIABLE_THAT_IS_NEVER_SET";
        let m = error(&format!("{STDIO}env_from = {{ TOKEN = \"{var}\" }}\n"));
        assert_names(
            &m,
            &[ORIGIN, "`mcp_servers[0].env_from.TOKEN`", var, "not set"],
        );
        let m = error(&format!(
            "{HTTP}headers_from = {{ Authorization = \"{var}\" }}\n"
        ));
        assert_names(&m, &["`mcp_servers[0].headers_from.Authorization`", var]);
    }

    #[test]
    fn semantic_errors_name_the_key_and_the_problem() {
        let m = error(&format!("{STDIO}{STDIO}"));
        assert_names(&m, &["`mcp_servers[1].name`", "already used"]);
        let m = error(&STDIO.replace("\"s\"", "\"a/b\""));
        assert_names(&m, &["`mcp_servers[0].name`", "'/'"]);
        let m = error(&STDIO.replace("\"sh\"", "\"no-such-program-3f1a\""));
        assert_names(&m, &["`mcp_servers[0].command`", "not found on PATH"]);
        let m = error(&STDIO.replace("\"sh\"", "\"./no/such/file\""));
        assert_names(&m, &["`mcp_servers[0].command`", "does not exist"]);
        let m = error(&format!("{STDIO}cwd = \"/no/such/dir\"\n"));
        assert_names(&m, &["`mcp_servers[0].cwd`", "/no/such/dir"]);
        let m = error(&format!("{STDIO}call_timeout_ms = 0\n"));
        assert_names(&m, &["`mcp_servers[0].call_timeout_ms`", "greater than 0"]);
        let m = error(&HTTP.replace("http://127.0.0.1:9/mcp", "ftp://x/mcp"));
        assert_names(&m, &["`mcp_servers[0].url`", "http(s)"]);
        let m = error(&HTTP.replace("http://127.0.0.1", "http://user:pw@127.0.0.1"));
        assert_names(&m, &["`mcp_servers[0].url`", "credentials"]);
        assert!(!m.contains("pw@"), "{m}");
        let m = error(&format!("{HTTP}headers = {{ \"bad header\" = \"x\" }}\n"));
        assert_names(&m, &["`mcp_servers[0].headers.bad header`", "header name"]);
        let m = error(&format!(
            "{HTTP}headers = {{ \"Mcp-Session-Id\" = \"x\" }}\n"
        ));
        assert_names(
            &m,
            &["`mcp_servers[0].headers.Mcp-Session-Id`", "transport"],
        );
        let m = error(&format!(
            "{HTTP}headers = {{ \"X-A\" = \"line\\nbreak-secret\" }}\n"
        ));
        assert_names(
            &m,
            &["`mcp_servers[0].headers.X-A`", "not a valid header value"],
        );
        assert!(!m.contains("break-secret"), "{m}");
        let m = error(&format!("{STDIO}isolation = \"per_process\"\n"));
        assert_names(&m, &["unknown variant `per_process`", "per_user"]);
        let m = error(&format!("{STDIO}max_user_sessions = 4\n"));
        assert_names(&m, &["`mcp_servers[0].max_user_sessions`", "per_user"]);
        let m = error(&format!(
            "{STDIO}isolation = \"per_user\"\nmax_user_sessions = 0\n"
        ));
        assert_names(
            &m,
            &["`mcp_servers[0].max_user_sessions`", "greater than 0"],
        );
        let m = error(&format!("{STDIO}frobnicate = true\n"));
        assert_names(&m, &["unknown field `frobnicate`", "mcp_servers[0]"]);
    }

    const BUILTIN: &str =
        "[[mcp_servers]]\nname = \"demo\"\ntransport = \"builtin\"\nserver = \"demo\"\n";

    #[test]
    fn builtin_servers_name_their_server_and_may_be_served_over_http() {
        let c = Config::from_toml_str(BUILTIN, ORIGIN).unwrap();
        let demo = &c.mcp_servers[0];
        assert_eq!(demo.transport, McpTransport::Builtin);
        assert_eq!(demo.server, Some(BuiltinServer::Demo));
        assert!(!demo.serve_http);
        assert_eq!(demo.http_path(), None);
        let c = Config::from_toml_str(&format!("{BUILTIN}serve_http = true\n"), ORIGIN).unwrap();
        assert_eq!(c.mcp_servers[0].http_path().as_deref(), Some("/mcp/demo"));
        let shown = format!("{:?}", c.mcp_servers[0]);
        assert!(
            shown.contains("Demo") && shown.contains("serve_http: true"),
            "{shown}"
        );
    }

    #[test]
    fn builtin_mistakes_name_the_key() {
        let m = error("[[mcp_servers]]\nname = \"a\"\ntransport = \"builtin\"\n");
        assert_names(
            &m,
            &[ORIGIN, "`mcp_servers[0].server`", "required", "\"demo\""],
        );
        let m = error(&BUILTIN.replace("server = \"demo\"", "server = \"weather\""));
        assert_names(&m, &["`mcp_servers[0].server`", "weather", "demo"]);
        let m = error(&format!("{BUILTIN}command = \"sh\"\n"));
        assert_names(
            &m,
            &["`mcp_servers[0].command`", "does not apply", "\"builtin\""],
        );
        let m = error(&format!("{BUILTIN}url = \"http://x/mcp\"\n"));
        assert_names(&m, &["`mcp_servers[0].url`", "does not apply"]);
        let m = error(&format!("{STDIO}serve_http = true\n"));
        assert_names(
            &m,
            &["`mcp_servers[0].serve_http`", "does not apply", "stdio"],
        );
        let m = error(&format!("{HTTP}server = \"demo\"\n"));
        assert_names(&m, &["`mcp_servers[0].server`", "does not apply"]);
        let m = error(&format!("{BUILTIN}serve_http = \"yes\"\n"));
        assert_names(&m, &["mcp_servers[0].serve_http", "bool"]);
    }

    #[test]
    fn a_served_builtin_needs_a_name_fit_for_a_path() {
        for name in ["my demo", "d{x}", "*", "..", ".hidden", "café"] {
            let text = BUILTIN.replace("\"demo\"\ntransport", &format!("{name:?}\ntransport"));
            // Without an endpoint, any name will do.
            assert!(Config::from_toml_str(&text, ORIGIN).is_ok(), "{name}");
            let m = error(&format!("{text}serve_http = true\n"));
            assert_names(&m, &["`mcp_servers[0].name`", "/mcp/<name>"]);
        }
        let text = BUILTIN.replace("\"demo\"\ntransport", "\"demo-2.v1_x~\"\ntransport");
        assert!(Config::from_toml_str(&format!("{text}serve_http = true\n"), ORIGIN).is_ok());
    }

    #[test]
    fn the_builtin_demo_constructor_gives_a_checked_served_entry() {
        let demo = McpServerConfig::builtin_demo("demo").unwrap();
        assert_eq!(demo.name, "demo");
        assert_eq!(demo.transport, McpTransport::Builtin);
        assert_eq!(demo.server, Some(BuiltinServer::Demo));
        assert_eq!(demo.http_path().as_deref(), Some("/mcp/demo"));
        assert_eq!(demo.call_timeout_ms, 60_000);
        let m = McpServerConfig::builtin_demo("no/slash")
            .unwrap_err()
            .to_string();
        assert_names(&m, &["built-in demo MCP server", "name"]);
        let m = McpServerConfig::builtin_demo("with space")
            .unwrap_err()
            .to_string();
        assert_names(&m, &["/mcp/<name>"]);
    }

    #[test]
    fn names_are_a_separate_namespace_from_providers() {
        let text = format!(
            "[[providers]]\nname = \"s\"\nkind = \"openai\"\nbase_url = \"http://x\"\n{STDIO}"
        );
        assert!(Config::from_toml_str(&text, ORIGIN).is_ok());
    }
}
