//! Who a request acts for, and what it may do. The authentication layer puts an [`Identity`] and
//! its [`Grants`] into the request's extensions; everything after it (scopes, limits, per-user MCP
//! sessions, audit lines, metrics) reads them from there and never looks at credentials itself.
//! Handlers take both at once with the [`Caller`](crate::auth::Caller) extractor.

use std::sync::Arc;

use crate::auth::Scopes;
use crate::config::Limits;

/// The caller of a request, as established by the authentication layer.
///
/// Two identities are the same user only if both fields match: a key named `alice` and a JWT
/// whose `sub` is `alice` are different callers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The user the request acts for: a key's name, a JWT's `sub`, or [`Identity::ANONYMOUS`]
    /// when the proxy requires no authentication.
    pub user: Arc<str>,
    /// How the caller was recognized.
    pub via: IdentitySource,
}

/// How an [`Identity`] was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentitySource {
    /// No authentication is configured (loopback only), or the path is public.
    Anonymous,
    /// A `[[keys]]` entry.
    ApiKey,
    /// A verified JWT.
    Jwt,
    /// A token the proxy minted (`POST /api/tokens`) for a caller recognized by the named
    /// source: the same user, with the same budget and MCP sessions.
    Token(MintedFrom),
}

/// Who a minted token was minted for: a key's caller or a JWT's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MintedFrom {
    /// A `[[keys]]` entry (the token's `sub` is its name).
    ApiKey,
    /// A JWT user (the token's `sub` is the JWT's).
    Jwt,
}

impl IdentitySource {
    /// The source a caller's limits and sessions are kept under: a minted token's is the
    /// credential it was minted for, so that minting never adds a budget.
    pub fn principal(self) -> IdentitySource {
        match self {
            IdentitySource::Token(MintedFrom::ApiKey) => IdentitySource::ApiKey,
            IdentitySource::Token(MintedFrom::Jwt) => IdentitySource::Jwt,
            other => other,
        }
    }
}

impl Identity {
    /// The user name of requests when no authentication is configured.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The identity per-user state is kept under: a minted token's is its principal's, so that
    /// a token and the credential it was minted with share per-user MCP sessions.
    pub fn principal(&self) -> Identity {
        Identity {
            user: Arc::clone(&self.user),
            via: self.via.principal(),
        }
    }

    /// The identity of every request when the proxy requires no authentication.
    pub fn anonymous() -> Self {
        Identity {
            user: Arc::from(Self::ANONYMOUS),
            via: IdentitySource::Anonymous,
        }
    }
}

/// What a caller may use (scopes) and how much (limits): a key's, every JWT user's, or
/// everything when no authentication is configured.
#[derive(Debug, Clone)]
pub struct Grants {
    /// The models and MCP tools the caller may use.
    pub scopes: Scopes,
    /// The caller's limits (none when unset); a minted token's are its principal's.
    pub limits: Limits,
    /// What a minted token adds: its expiry and its own, narrower limits.
    pub minted: Option<MintedGrant>,
}

/// The part of a minted token's grants that a key's or a JWT's lack.
#[derive(Debug, Clone)]
pub struct MintedGrant {
    /// The token's id (`jti`), which its own budget is kept under.
    pub id: Arc<str>,
    /// When it expires, in Unix seconds: a token it mints expires no later.
    pub expires_at: u64,
    /// Its own limits, counted for it alone on top of its principal's; `None` when it asked
    /// for none narrower.
    pub limits: Option<Limits>,
}

impl Grants {
    /// The limits that bind this caller alone: a minted token's own, else the principal's.
    pub fn effective_limits(&self) -> Limits {
        self.minted
            .as_ref()
            .and_then(|m| m.limits)
            .unwrap_or(self.limits)
    }
}

impl Grants {
    /// Everything, without limits: requests when no authentication is configured.
    pub fn all() -> Self {
        Grants {
            scopes: Scopes::all(),
            limits: Limits::default(),
            minted: None,
        }
    }

    /// Nothing: requests to public paths when authentication is configured.
    pub fn none() -> Self {
        Grants {
            scopes: Scopes::none(),
            limits: Limits::default(),
            minted: None,
        }
    }
}
