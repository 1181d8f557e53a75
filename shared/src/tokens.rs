//! `POST /api/tokens`: the body a caller sends to have the proxy mint a short-lived token, and
//! the answer. The token stands for the caller, with at most the caller's scopes and limits, so
//! that a browser can hold it instead of a long-lived key.

use serde::{Deserialize, Serialize};

/// The body of `POST /api/tokens`; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// How long the token lives, in seconds: the proxy's `default_ttl_s` when absent, cut down to
    /// its `max_ttl_s` (and, when a minted token asks, to that token's own expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// The models the token may use (`"<provider>/<model>"` globs), each within the caller's;
    /// all of the caller's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The MCP tools the token may use (`"<server>/<tool>"` globs), each within the caller's;
    /// all of the caller's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Vec<String>>,
    /// Limits of the token's own, each at most the caller's; the caller's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TokenLimits>,
}

/// Limits of a minted token; an absent value is the caller's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Streams open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_streams: Option<u32>,
    /// LLM tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// What a minted token may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenScopes {
    /// `"<provider>/<model>"` globs.
    pub models: Vec<String>,
    /// `"<server>/<tool>"` globs.
    pub mcp: Vec<String>,
}

/// The answer of `POST /api/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The token, sent as `Authorization: Bearer <token>` (the SDK's proxy-mode `apiKey`).
    pub token: String,
    /// When it stops being accepted, in Unix seconds.
    pub expires_at: u64,
    /// What it may use.
    pub scopes: TokenScopes,
    /// Its limits (absent values are unlimited). Its requests count against the caller's
    /// budget as well.
    pub limits: TokenLimits,
}
