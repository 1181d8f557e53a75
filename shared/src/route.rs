//! The routing table: for each operation and mode, the HTTP request to make and how to read its
//! answer. Direct mode targets the provider; proxy mode targets the proxy's `/api/*` routes. The
//! proxy itself reaches its upstreams through a direct-mode table, so all three paths share it.

use serde::{Deserialize, Serialize};

#[cfg(feature = "wasm")]
use tsify::Tsify;

use crate::chat::{ChatRequest, ChatResponse, ModelId};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::providers::{self, ProviderKind};
use crate::stream::ChatStreamDecoder;

/// Paths of the proxy's HTTP API.
pub mod paths {
    /// `POST`: a non-streamed chat completion.
    pub const LLM_CHAT: &str = "/api/llm/chat";
    /// `POST`: a streamed chat completion (`text/event-stream` of normalized events).
    pub const LLM_STREAM: &str = "/api/llm/stream";
    /// `GET`: configured providers and models.
    pub const LLM_MODELS: &str = "/api/llm/models";
    /// `POST`: mint a short-lived token for the caller (`shared::tokens`).
    pub const TOKENS: &str = "/api/tokens";
    /// `GET`: liveness.
    pub const HEALTH: &str = "/healthz";
    /// `GET`: the configured MCP servers.
    pub const MCP_SERVERS: &str = "/api/mcp/servers";
    /// `GET ?server=NAME[&cursor=C]`: one page of a server's tools.
    pub const MCP_LIST_TOOLS: &str = "/api/mcp/listTools";
    /// `POST`: call a tool; answers its result.
    pub const MCP_TOOL: &str = "/api/mcp/tool";
    /// `POST`: call a tool; answers `text/event-stream` of progress, then the result.
    pub const MCP_TOOL_STREAM: &str = "/api/mcp/tool/stream";
    /// `GET ?server=NAME[&cursor=C]`: one page of a server's resources.
    pub const MCP_LIST_RESOURCES: &str = "/api/mcp/listResources";
    /// `POST`: read a resource.
    pub const MCP_READ_RESOURCE: &str = "/api/mcp/readResource";
    /// `GET ?server=NAME[&cursor=C]`: one page of a server's prompts.
    pub const MCP_LIST_PROMPTS: &str = "/api/mcp/listPrompts";
    /// `POST`: get a prompt with its arguments filled in.
    pub const MCP_GET_PROMPT: &str = "/api/mcp/getPrompt";
    /// Where the OpenAI-compatible face begins; errors under it take OpenAI's shape.
    pub const OPENAI_PREFIX: &str = "/v1/";
    /// `POST`: OpenAI's Chat Completions, streamed or not, for any configured provider.
    pub const OPENAI_CHAT_COMPLETIONS: &str = "/v1/chat/completions";
    /// `GET`: the models the caller may use, in OpenAI's list format.
    pub const OPENAI_MODELS: &str = "/v1/models";
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
}

impl Method {
    /// The method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A request to make, described without doing it.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body, for POST.
    pub body: Option<String>,
}

/// Headers whose values are credentials.
fn is_secret_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "authorization"
            | "x-api-key"
            | "x-goog-api-key"
            | "api-key"
            | "proxy-authorization"
            | "cookie"
    )
}

// Written by hand so that a request logged with `{:?}` never shows a credential.
impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_header(k) { "<redacted>" } else { v };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_len", &self.body.as_ref().map(String::len))
            .finish()
    }
}

/// How a response body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// The proxy's own normalized JSON and event stream.
    Switchyard,
    /// A provider's native format.
    Provider(ProviderKind),
}

/// A request ready to execute, and what is needed to read its answer.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// What to send.
    pub http: HttpRequest,
    /// How the answer is encoded.
    pub format: WireFormat,
    /// The provider name, prefixed to model names in answers.
    pub provider: Option<String>,
}

impl PreparedRequest {
    /// Reads a non-streamed answer, successful or not.
    pub fn decode_response(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
    ) -> Result<ChatResponse, ApiError> {
        if !(200..300).contains(&status) {
            return Err(self.decode_error(status, retry_after, body));
        }
        match self.format {
            WireFormat::Switchyard => crate::json::from_slice(body).map_err(|e| {
                ApiError::new(
                    ErrorCode::UpstreamError,
                    format!("unreadable chat response: {e}"),
                )
            }),
            WireFormat::Provider(kind) => {
                providers::parse_chat_response(kind, self.provider.as_deref().unwrap_or(""), body)
            }
        }
    }

    /// Reads a failed answer (status outside 2xx) into the taxonomy.
    pub fn decode_error(&self, status: u16, retry_after: Option<&str>, body: &[u8]) -> ApiError {
        match self.format {
            // The proxy already speaks the taxonomy; keep its code and message as they are.
            WireFormat::Switchyard => ErrorBody::parse(body)
                .unwrap_or_else(|| ApiError::from_upstream_status(status, None, retry_after)),
            WireFormat::Provider(kind) => {
                providers::upstream_error(kind, status, retry_after, body)
            }
        }
    }

    /// A decoder for this request's streamed answer.
    pub fn stream_decoder(&self) -> ChatStreamDecoder {
        ChatStreamDecoder::new(self.format, self.provider.as_deref())
    }
}

/// Where a provider is reached in direct mode (and by the proxy).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderEndpoint {
    /// The name used in model ids (`"<name>/<model>"`).
    pub name: String,
    /// The wire format.
    pub kind: ProviderKind,
    /// The API base, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The API key, sent as the provider expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "wasm", tsify(optional))]
    pub api_key: Option<String>,
}

// Written by hand so that the key never reaches a log.
impl std::fmt::Debug for ProviderEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderEndpoint")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which requests to make for each operation: to providers directly, or to a proxy.
#[derive(Debug, Clone)]
pub enum RouteTable {
    /// Straight to the providers.
    Direct {
        /// The providers, by name.
        providers: Vec<ProviderEndpoint>,
    },
    /// Through a Switchyard proxy.
    Proxy {
        /// The proxy's origin, e.g. `http://127.0.0.1:3001`.
        base_url: String,
        /// The key the proxy expects, if it requires one.
        api_key: Option<String>,
    },
}

impl RouteTable {
    /// A direct-mode table; checks names and URLs.
    pub fn direct(providers: Vec<ProviderEndpoint>) -> Result<Self, ApiError> {
        for (i, p) in providers.iter().enumerate() {
            if p.name.is_empty() || p.name.contains('/') {
                return Err(ApiError::bad_request(format!(
                    "provider name {:?} must be non-empty and contain no '/'",
                    p.name
                )));
            }
            if providers[..i].iter().any(|q| q.name == p.name) {
                return Err(ApiError::bad_request(format!(
                    "provider name {:?} is used twice",
                    p.name
                )));
            }
            check_http_url(&p.base_url, &format!("baseUrl of provider {:?}", p.name))?;
        }
        Ok(RouteTable::Direct { providers })
    }

    /// A proxy-mode table; checks the URL.
    pub fn proxy(base_url: &str, api_key: Option<String>) -> Result<Self, ApiError> {
        check_http_url(base_url, "the proxy baseUrl")?;
        Ok(RouteTable::Proxy {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    /// The request for a chat completion, streamed or not.
    pub fn chat(&self, req: &ChatRequest, stream: bool) -> Result<PreparedRequest, ApiError> {
        req.validate()?;
        match self {
            RouteTable::Direct { providers } => {
                let id = ModelId::parse(&req.model)?;
                let endpoint = providers
                    .iter()
                    .find(|p| p.name == id.provider)
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::NotFound,
                            format!("no provider named {:?} is configured", id.provider),
                        )
                    })?;
                Ok(PreparedRequest {
                    http: providers::build_chat(endpoint, id.model, req, stream)?,
                    format: WireFormat::Provider(endpoint.kind),
                    provider: Some(endpoint.name.clone()),
                })
            }
            RouteTable::Proxy { base_url, api_key } => {
                let path = if stream {
                    paths::LLM_STREAM
                } else {
                    paths::LLM_CHAT
                };
                let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
                if stream {
                    headers.push(("accept".to_owned(), "text/event-stream".to_owned()));
                }
                if let Some(key) = api_key.as_deref().filter(|k| !k.is_empty()) {
                    headers.push(("authorization".to_owned(), format!("Bearer {key}")));
                }
                Ok(PreparedRequest {
                    http: HttpRequest {
                        method: Method::Post,
                        url: format!("{base_url}{path}"),
                        headers,
                        // A request that deserialized from JSON serializes back without error.
                        body: Some(serde_json::to_string(req).unwrap_or_default()),
                    },
                    format: WireFormat::Switchyard,
                    provider: None,
                })
            }
        }
    }
}

fn check_http_url(url: &str, what: &str) -> Result<(), ApiError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be an absolute http(s) URL, got {url:?}"
        ))),
    }
}

/// The body of `GET /api/llm/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelList {
    /// Configured providers.
    pub providers: Vec<ProviderInfo>,
}

/// One configured provider, without its address or key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "wasm", derive(Tsify))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderInfo {
    /// The name used in model ids.
    pub name: String,
    /// The wire format.
    pub kind: ProviderKind,
    /// Model ids (`"<provider>/<model>"`) the operator listed; empty when any model is passed on.
    pub models: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;

    fn req(model: &str) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            messages: vec![Message::user("hi")],
            ..Default::default()
        }
    }

    fn direct() -> RouteTable {
        RouteTable::direct(vec![ProviderEndpoint {
            name: "local".into(),
            kind: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:9000/v1".into(),
            api_key: Some("sk-secret".into()),
        }])
        .unwrap()
    }

    #[test]
    fn direct_mode_targets_the_provider() {
        let p = direct().chat(&req("local/llama"), true).unwrap();
        assert_eq!(p.http.url, "http://127.0.0.1:9000/v1/chat/completions");
        assert_eq!(p.format, WireFormat::Provider(ProviderKind::OpenAi));
        assert_eq!(p.provider.as_deref(), Some("local"));
    }

    #[test]
    fn proxy_mode_targets_the_proxy_routes() {
        let table = RouteTable::proxy("http://127.0.0.1:3001/", Some("k".into())).unwrap();
        let chat = table.chat(&req("local/llama"), false).unwrap();
        assert_eq!(chat.http.url, "http://127.0.0.1:3001/api/llm/chat");
        let stream = table.chat(&req("local/llama"), true).unwrap();
        assert_eq!(stream.http.url, "http://127.0.0.1:3001/api/llm/stream");
        assert_eq!(stream.format, WireFormat::Switchyard);
        let sent: ChatRequest = serde_json::from_str(stream.http.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent, req("local/llama"));
    }

    #[test]
    fn unknown_providers_and_bad_ids_are_refused() {
        assert_eq!(
            direct().chat(&req("other/m"), false).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            direct().chat(&req("nomodel"), false).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn tables_refuse_bad_configuration() {
        assert!(RouteTable::proxy("127.0.0.1:3001", None).is_err());
        let dup = ProviderEndpoint {
            name: "a".into(),
            kind: ProviderKind::OpenAi,
            base_url: "https://x".into(),
            api_key: None,
        };
        assert!(RouteTable::direct(vec![dup.clone(), dup]).is_err());
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let p = direct().chat(&req("local/llama"), false).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn proxy_errors_keep_their_code_and_upstream_errors_are_mapped() {
        let proxied = RouteTable::proxy("http://p", None)
            .unwrap()
            .chat(&req("a/b"), false)
            .unwrap();
        let body = ApiError::new(ErrorCode::UpstreamTimeout, "slow").to_body_json();
        assert_eq!(
            proxied.decode_error(504, None, body.as_bytes()).code,
            ErrorCode::UpstreamTimeout
        );
        let direct = direct().chat(&req("local/m"), false).unwrap();
        let e = direct.decode_error(429, Some("3"), br#"{"error":{"message":"slow down"}}"#);
        assert_eq!((e.code, e.retry_after), (ErrorCode::RateLimited, Some(3)));
        assert!(e.message.contains("slow down"));
    }
}
