//! What `switchyard serve` runs with no config file: something that works with no setup. The
//! mock provider (scripted to use the demo tools), the built-in demo MCP server and the demo page,
//! plus OpenAI when `OPENAI_API_KEY` is set and Ollama when one answers on this machine.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use switchyard_shared::ProviderKind;

use super::{Config, McpServerConfig, ProviderConfig, ProviderConfigKind, ServerConfig};
use crate::mock::MockScript;

/// The variable a local OpenAI key is read from, as OpenAI's own tools do.
const OPENAI_KEY_ENV: &str = "OPENAI_API_KEY";
/// Models listed for OpenAI (any other model name is still passed on).
const OPENAI_MODELS: &[&str] = &["gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini"];
/// Where Ollama listens unless `OLLAMA_HOST` says otherwise (the variable Ollama itself reads).
const OLLAMA_DEFAULT_HOST: &str = "127.0.0.1:11434";
/// A local Ollama answers its model list at once; start-up must not wait on a missing one.
const OLLAMA_PROBE: Duration = Duration::from_millis(500);

/// The embedded default, and one line per choice it made, to be logged at start-up.
pub async fn embedded_default() -> anyhow::Result<(Config, Vec<String>)> {
    let mut notes = Vec::new();
    let mut mock = ProviderConfig::mock("mock", MockScript::demo());
    mock.models = vec!["demo".to_owned()];
    let mut providers = vec![mock];
    notes.push(
        "provider `mock`: a scripted model (`mock/demo`) that uses the demo tools; \
         also served at /mock/mock/v1 for direct mode"
            .to_owned(),
    );
    if let Some(openai) = openai_from_env() {
        providers.push(openai);
        notes.push(format!(
            "provider `openai`: {OPENAI_KEY_ENV} is set (the key stays in this process)"
        ));
    }
    let ollama_host = std::env::var("OLLAMA_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| OLLAMA_DEFAULT_HOST.to_owned());
    match probe_ollama(&ollama_host).await {
        Some(ollama) => {
            notes.push(format!(
                "provider `ollama`: Ollama answered at {ollama_host} with {} model(s)",
                ollama.models.len()
            ));
            providers.push(ollama);
        }
        None => notes.push(format!("no Ollama answered at {ollama_host}")),
    }
    let demo = McpServerConfig::builtin_demo("demo")?;
    notes.push(
        "MCP server `demo`: built in (time, calculator, notes search); \
         also served at /mcp/demo for direct mode"
            .to_owned(),
    );
    notes.push("the demo page is served at /".to_owned());
    let config = Config {
        server: ServerConfig {
            demo_page: true,
            ..ServerConfig::default()
        },
        providers,
        mcp_servers: vec![demo],
        ..Config::default()
    };
    Ok((config, notes))
}

fn openai_from_env() -> Option<ProviderConfig> {
    let key = std::env::var(OPENAI_KEY_ENV).ok()?;
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    Some(ProviderConfig {
        name: "openai".to_owned(),
        kind: ProviderConfigKind::Remote(ProviderKind::OpenAi),
        base_url: Some("https://api.openai.com/v1".to_owned()),
        api_key_env: Some(OPENAI_KEY_ENV.to_owned()),
        api_key_file: None,
        models: OPENAI_MODELS.iter().map(|m| (*m).to_owned()).collect(),
        mock: None,
        api_key: Some(SecretString::from(key.to_owned())),
    })
}

#[derive(Deserialize)]
struct OllamaTags {
    #[serde(default)]
    models: Vec<OllamaModel>,
}

#[derive(Deserialize)]
struct OllamaModel {
    name: String,
}

/// Ollama, as an OpenAI-compatible provider, if it answers `GET /api/tags` on `host`. Only a
/// loopback host is probed: the default must never reach beyond this machine by itself. This is
/// start-up discovery, not a request path, so it has its own short-lived client rather than
/// going through `upstream.rs`.
async fn probe_ollama(host: &str) -> Option<ProviderConfig> {
    let origin = if host.contains("://") {
        host.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", host.trim_end_matches('/'))
    };
    let mut url = reqwest::Url::parse(&origin).ok()?;
    // `OLLAMA_HOST=0.0.0.0` makes Ollama listen everywhere; this machine reaches it on loopback.
    match url.host_str() {
        Some("0.0.0.0") => url.set_host(Some("127.0.0.1")).ok()?,
        Some("[::]") => url.set_host(Some("[::1]")).ok()?,
        _ => {}
    }
    let origin = url.as_str().trim_end_matches('/').to_owned();
    let host = url.host_str()?;
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback || url.scheme() != "http" {
        return None;
    }
    let client = reqwest::Client::builder()
        .timeout(OLLAMA_PROBE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?;
    let response = client.get(format!("{origin}/api/tags")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let tags: OllamaTags = response.json().await.ok()?;
    Some(ProviderConfig {
        name: "ollama".to_owned(),
        kind: ProviderConfigKind::Remote(ProviderKind::OpenAi),
        base_url: Some(format!("{origin}/v1")),
        api_key_env: None,
        api_key_file: None,
        models: tags.models.into_iter().map(|m| m.name).collect(),
        mock: None,
        api_key: None,
    })
}
