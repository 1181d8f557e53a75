//! `[[keys]]` and `[auth.jwt]`: who may call the proxy, what each caller may use (scopes) and how
//! much (limits). With neither, the proxy requires no authentication and listens on loopback
//! only. Checked at start-up, each mistake named by its key.

use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::ConfigError;
use crate::auth::jwt::KeySet;
use crate::auth::keys::{KeyHash, is_key_name};
use crate::auth::scopes::{ModelPattern, ToolPattern};

/// One `[[keys]]` entry: an API key, by its hash, with what it may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key's name, unique: the user id of its requests in logs, metrics and audit lines.
    pub name: String,
    /// `"sha256:<hex>"` of the key, as `switchyard keys new` prints it; the key itself is never
    /// stored.
    pub hash: KeyHash,
    /// The models it may use: `"<provider>/<model>"` globs (`"openai/*"`, `"mock/demo"`, `"*"`).
    pub models: Vec<ModelPattern>,
    /// The MCP tools it may use: `"<server>/<tool>"` globs (`"demo/*"`, `"everything/echo"`).
    pub mcp: Vec<ToolPattern>,
    /// How much it may use (`[keys.limits]`); unlimited when absent.
    #[serde(default)]
    pub limits: Limits,
}

/// The limits of one caller (a key, or each JWT user). Parsed and checked here; enforced by the
/// rate limiter. An absent value means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute, over every route.
    pub requests_per_minute: Option<NonZeroU32>,
    /// Streams (chat streams, streamed tool calls) open at once.
    pub concurrent_streams: Option<NonZeroU32>,
    /// LLM tokens per minute, counted from the usage the upstreams report.
    pub tokens_per_minute: Option<NonZeroU64>,
}

/// The `[auth]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// JWT bearer tokens from an identity provider (`[auth.jwt]`).
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Short-lived tokens the proxy mints for its callers (`[auth.tokens]`, `POST /api/tokens`).
    #[serde(default)]
    pub tokens: TokensConfig,
}

/// The `[auth.tokens]` table: `POST /api/tokens`, which gives an authenticated caller a
/// short-lived token with at most its own scopes and limits, for a browser to hold instead of a
/// long-lived key. On whenever `[[keys]]` or `[auth.jwt]` is set, unless `enabled = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Mint tokens and accept them (default `true`; there is nothing to mint without
    /// `[[keys]]` or `[auth.jwt]`).
    pub enabled: bool,
    /// The lifetime of a token whose request names none, in seconds (default 900).
    pub default_ttl_s: u64,
    /// The longest lifetime a token is given, in seconds (default 3600, at most 86400).
    pub max_ttl_s: u64,
    /// The environment variable holding the HS256 signing key (32 bytes, base64 or hex). Every
    /// instance that should accept the others' tokens needs the same key.
    pub signing_key_env: Option<String>,
    /// A file holding that key, instead of `signing_key_env`.
    pub signing_key_file: Option<PathBuf>,
    /// The key itself, read when the file is loaded; without one, a random key is made at
    /// start-up, and tokens are accepted by that process only.
    #[serde(skip)]
    pub signing_key: Option<crate::config::SessionKey>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            enabled: true,
            default_ttl_s: 900,
            max_ttl_s: 3600,
            signing_key_env: None,
            signing_key_file: None,
            signing_key: None,
        }
    }
}

/// Largest accepted `max_ttl_s`: a token that lives for days is a long-lived key again.
const MAX_TOKEN_TTL_S: u64 = 86_400;

/// The `[auth.jwt]` table: which tokens are accepted, and what their users may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The required `iss`.
    pub issuer: String,
    /// The audience `aud` must contain.
    pub audience: String,
    /// A JWKS file, read at start-up (set this or `jwks_url`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start-up and every `jwks_refresh_s` (https, or http on loopback).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The accepted `alg`s (default `["RS256"]`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock difference allowed on `exp` and `nbf` (default 30, at most 300).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// Seconds between two fetches of `jwks_url` (default 300, at least 10).
    #[serde(default = "default_jwks_refresh_s")]
    pub jwks_refresh_s: u64,
    /// The models every JWT user may use, as in `[[keys]]`.
    pub models: Vec<ModelPattern>,
    /// The MCP tools every JWT user may use, as in `[[keys]]`.
    pub mcp: Vec<ToolPattern>,
    /// The limits of each JWT user (`[auth.jwt.limits]`), counted per `sub`.
    #[serde(default)]
    pub limits: Limits,
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}

fn default_leeway_s() -> u64 {
    30
}

fn default_jwks_refresh_s() -> u64 {
    300
}

/// Largest accepted `leeway_s`: more would keep expired tokens alive for long.
const MAX_LEEWAY_S: u64 = 300;
/// Smallest accepted `jwks_refresh_s`, so that the identity provider is not polled hard.
const MIN_JWKS_REFRESH_S: u64 = 10;

/// Checks `keys` and `auth`; `origin` names the configuration in errors.
pub(super) fn check(
    keys: &[KeyConfig],
    auth: &AuthConfig,
    origin: &str,
) -> Result<(), ConfigError> {
    for (i, key) in keys.iter().enumerate() {
        let field = |f: &str| format!("keys[{i}].{f}");
        if !is_key_name(&key.name) {
            return Err(ConfigError::invalid(
                origin,
                field("name"),
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-', '_', '.' or '@'",
                    key.name
                ),
            ));
        }
        let earlier = &keys[..i];
        if let Some(j) = earlier.iter().position(|k| k.name == key.name) {
            return Err(ConfigError::invalid(
                origin,
                field("name"),
                format!("{:?} is already used by keys[{j}]", key.name),
            ));
        }
        if let Some(j) = earlier.iter().position(|k| k.hash == key.hash) {
            return Err(ConfigError::invalid(
                origin,
                field("hash"),
                format!("is the same key as keys[{j}]; give each client its own key"),
            ));
        }
    }
    if let Some(jwt) = &auth.jwt {
        check_jwt(jwt, origin)?;
    }
    check_tokens(&auth.tokens, origin)
}

fn check_tokens(tokens: &TokensConfig, origin: &str) -> Result<(), ConfigError> {
    let invalid = |f: &str, problem: String| {
        ConfigError::invalid(origin, format!("auth.tokens.{f}"), problem)
    };
    if tokens.max_ttl_s == 0 || tokens.max_ttl_s > MAX_TOKEN_TTL_S {
        return Err(invalid(
            "max_ttl_s",
            format!("must be 1 to {MAX_TOKEN_TTL_S} seconds"),
        ));
    }
    if tokens.default_ttl_s == 0 || tokens.default_ttl_s > tokens.max_ttl_s {
        return Err(invalid(
            "default_ttl_s",
            format!("must be 1 to max_ttl_s ({}) seconds", tokens.max_ttl_s),
        ));
    }
    if tokens.signing_key_env.is_some() && tokens.signing_key_file.is_some() {
        return Err(invalid(
            "signing_key_file",
            "set either signing_key_env or signing_key_file, not both".into(),
        ));
    }
    Ok(())
}

fn check_jwt(jwt: &JwtConfig, origin: &str) -> Result<(), ConfigError> {
    let invalid =
        |f: &str, problem: String| ConfigError::invalid(origin, format!("auth.jwt.{f}"), problem);
    for (f, value) in [("issuer", &jwt.issuer), ("audience", &jwt.audience)] {
        if value.trim().is_empty() {
            return Err(invalid(f, "must not be empty".into()));
        }
    }
    if jwt.algorithms.is_empty() {
        return Err(invalid(
            "algorithms",
            "must name at least one algorithm, e.g. [\"RS256\"]".into(),
        ));
    }
    if jwt.leeway_s > MAX_LEEWAY_S {
        return Err(invalid(
            "leeway_s",
            format!("must be at most {MAX_LEEWAY_S} seconds"),
        ));
    }
    if jwt.jwks_refresh_s < MIN_JWKS_REFRESH_S {
        return Err(invalid(
            "jwks_refresh_s",
            format!("must be at least {MIN_JWKS_REFRESH_S} seconds"),
        ));
    }
    match (&jwt.jwks_file, &jwt.jwks_url) {
        (Some(_), Some(_)) => Err(invalid(
            "jwks_url",
            "set either jwks_file or jwks_url, not both".into(),
        )),
        (None, None) => Err(invalid(
            "jwks_file",
            "set jwks_file or jwks_url: the keys tokens are signed with".into(),
        )),
        (Some(path), None) => KeySet::from_file(path, &jwt.algorithms)
            .map(drop)
            .map_err(|problem| invalid("jwks_file", problem)),
        (None, Some(url)) => check_jwks_url(url).map_err(|problem| invalid("jwks_url", problem)),
    }
}

/// The keys that decide who may call the proxy must not travel in clear text, except on this
/// machine.
fn check_jwks_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    let loopback = url.host_str().is_some_and(|host| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" if url.has_host() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "must be an https URL (http only on loopback), got {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ORIGIN: &str = "/etc/switchyard/auth.toml";
    const HASH: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const OTHER_HASH: &str =
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn error(text: &str) -> String {
        Config::from_toml_str(text, ORIGIN).unwrap_err().to_string()
    }

    fn assert_names(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{part:?} missing in:\n{message}");
        }
    }

    fn key(name: &str, hash: &str, extra: &str) -> String {
        format!(
            "[[keys]]\nname = {name:?}\nhash = {hash:?}\nmodels = [\"mock/*\"]\nmcp = [\"demo/*\"]\n{extra}\n"
        )
    }

    #[test]
    fn keys_parse_with_scopes_and_limits() {
        let text = key(
            "ci",
            HASH,
            "[keys.limits]\nrequests_per_minute = 60\nconcurrent_streams = 2\ntokens_per_minute = 100000",
        ) + &key("web", OTHER_HASH, "");
        let c = Config::from_toml_str(&text, ORIGIN).unwrap();
        assert!(c.requires_auth());
        assert_eq!(c.keys.len(), 2);
        let limits = c.keys[0].limits;
        assert_eq!(limits.requests_per_minute.map(|n| n.get()), Some(60));
        assert_eq!(limits.concurrent_streams.map(|n| n.get()), Some(2));
        assert_eq!(limits.tokens_per_minute.map(|n| n.get()), Some(100_000));
        assert_eq!(c.keys[1].limits, super::Limits::default());
        assert_eq!(c.keys[0].models[0].0.as_str(), "mock/*");
        assert!(!Config::from_toml_str("", ORIGIN).unwrap().requires_auth());
    }

    #[test]
    fn key_mistakes_name_the_key() {
        let m = error(&key("ci", "sy_the-key-itself", ""));
        assert_names(&m, &[ORIGIN, "`keys[0].hash`", "keys new"]);
        assert!(
            !m.contains("the-key-itself"),
            "the value is not repeated: {m}"
        );
        let m = error(&(key("ci", HASH, "") + &key("ci", OTHER_HASH, "")));
        assert_names(&m, &["`keys[1].name`", "already used by keys[0]"]);
        let m = error(&(key("a", HASH, "") + &key("b", HASH, "")));
        assert_names(&m, &["`keys[1].hash`", "same key as keys[0]"]);
        let m = error(&key("a b", HASH, ""));
        assert_names(&m, &["`keys[0].name`", "letters"]);
        let m = error(&key("ci", HASH, "").replace("\"mock/*\"", "\"mock/*\", \"openai\""));
        assert_names(&m, &["`keys[0].models[1]`", "<provider>/<model>"]);
        let m = error(&key("ci", HASH, "").replace("\"demo/*\"", "\"demo/[x\""));
        assert_names(&m, &["`keys[0].mcp[0]`", "not a valid glob"]);
        let m = error(&key("ci", HASH, "[keys.limits]\nrequests_per_minute = 0"));
        assert_names(&m, &["`keys[0].limits.requests_per_minute`", "nonzero"]);
        let m = error(&key("ci", HASH, "[keys.limits]\nbursts = 3"));
        assert_names(&m, &["keys[0].limits", "unknown field `bursts`"]);
        let m = error(&format!(
            "[[keys]]\nname = \"ci\"\nhash = {HASH:?}\nmodels = []\n"
        ));
        assert_names(&m, &["keys[0]", "missing field `mcp`"]);
    }

    #[test]
    fn non_loopback_listen_needs_authentication() {
        for addr in ["0.0.0.0:3001", "[::]:3001", "192.0.2.1:80"] {
            let listen = format!("[server]\nlisten = {addr:?}\n");
            let m = error(&listen);
            assert_names(
                &m,
                &[
                    ORIGIN,
                    "`server.listen`",
                    "127.0.0.1",
                    "authentication",
                    "switchyard keys new",
                    "[[keys]]",
                    "allowed_hosts",
                ],
            );
            let c = Config::from_toml_str(&(listen + &key("ci", HASH, "")), ORIGIN).unwrap();
            assert_eq!(c.server.listen, addr.parse().unwrap());
        }
    }

    fn jwt(extra: &str) -> String {
        format!(
            "[auth.jwt]\nissuer = \"https://id.test/\"\naudience = \"switchyard\"\n\
             models = [\"*\"]\nmcp = []\n{extra}\n"
        )
    }

    #[test]
    fn jwt_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "h"}]}"#,
        )
        .unwrap();
        let file = format!("jwks_file = {jwks:?}");
        let c = Config::from_toml_str(&jwt(&format!("{file}\nalgorithms = [\"HS256\"]")), ORIGIN)
            .unwrap();
        assert!(c.requires_auth());
        let j = c.auth.jwt.unwrap();
        assert_eq!((j.leeway_s, j.jwks_refresh_s), (30, 300));
        assert!(
            !format!("{:?}", j).contains("c2VjcmV0"),
            "no key material in Debug"
        );

        for (extra, key, says) in [
            ("", "`auth.jwt.jwks_file`", "set jwks_file or jwks_url"),
            (
                "jwks_url = \"https://id.test/jwks\"\njwks_file = \"x\"",
                "`auth.jwt.jwks_url`",
                "not both",
            ),
            (
                "jwks_url = \"http://id.test/jwks\"",
                "`auth.jwt.jwks_url`",
                "https",
            ),
            (
                "jwks_url = \"https://u:p@id.test/jwks\"",
                "`auth.jwt.jwks_url`",
                "credentials",
            ),
            // An RS256 verifier has no use for an HMAC secret.
            (&file, "`auth.jwt.jwks_file`", "no signing key"),
            (
                "jwks_file = \"/nonexistent/jwks.json\"",
                "`auth.jwt.jwks_file`",
                "/nonexistent/jwks.json",
            ),
            (
                "jwks_url = \"https://id.test/jwks\"\nalgorithms = []",
                "`auth.jwt.algorithms`",
                "at least one",
            ),
            (
                "jwks_url = \"https://id.test/jwks\"\nalgorithms = [\"none\"]",
                "auth.jwt.algorithms[0]",
                "RS256",
            ),
            (
                "jwks_url = \"https://id.test/jwks\"\nleeway_s = 3600",
                "`auth.jwt.leeway_s`",
                "at most",
            ),
            (
                "jwks_url = \"https://id.test/jwks\"\njwks_refresh_s = 1",
                "`auth.jwt.jwks_refresh_s`",
                "at least",
            ),
        ] {
            let m = error(&jwt(extra));
            assert_names(&m, &[ORIGIN, key, says]);
        }
        let m = error(
            &jwt("jwks_url = \"https://id.test/jwks\"")
                .replace("issuer = \"https://id.test/\"", "issuer = \" \""),
        );
        assert_names(&m, &["`auth.jwt.issuer`", "empty"]);
        // http is accepted on loopback, where nothing travels over a network.
        for url in [
            "http://127.0.0.1:9/jwks",
            "http://localhost:9/jwks",
            "http://[::1]:9/",
        ] {
            Config::from_toml_str(&jwt(&format!("jwks_url = {url:?}")), ORIGIN).unwrap();
        }
    }
}
