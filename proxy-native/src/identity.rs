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
}

impl Identity {
    /// The user name of requests when no authentication is configured.
    pub const ANONYMOUS: &'static str = "anonymous";

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
    /// The caller's limits (none when unset).
    pub limits: Limits,
}

impl Grants {
    /// Everything, without limits: requests when no authentication is configured.
    pub fn all() -> Self {
        Grants {
            scopes: Scopes::all(),
            limits: Limits::default(),
        }
    }

    /// Nothing: requests to public paths when authentication is configured.
    pub fn none() -> Self {
        Grants {
            scopes: Scopes::none(),
            limits: Limits::default(),
        }
    }
}
