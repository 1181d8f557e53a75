//! Client authentication and scopes. One layer ([`authenticate`]) runs for every route: it reads
//! `Authorization: Bearer <credential>`, recognizes an API key (`keys.rs`) or a JWT (`jwt.rs`),
//! and puts the caller's [`Identity`] and [`Grants`] into the request's extensions, or answers
//! `401 unauthorized` itself. Handlers then check what is used against the caller's scopes
//! (`scopes.rs`) through the [`Caller`] extractor; the endpoints that serve built-in upstreams
//! over HTTP are guarded by `mounts.rs`.
//!
//! With no `[[keys]]` and no `[auth.jwt]`, every request is [`Identity::anonymous`] with every
//! scope (the proxy then listens on loopback only, see `config::check_listen`).

pub mod jwt;
pub mod keys;
pub(crate) mod mounts;
pub mod scopes;
pub mod tokens;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchyard_shared::{ApiError, ErrorCode};

pub use scopes::Scopes;

use self::jwt::JwtVerifier;
use self::keys::KeyHash;
use self::tokens::TokenMinter;
use crate::config::{Config, ObservabilityConfig};
use crate::error::AppError;
use crate::identity::{Grants, Identity, IdentitySource, MintedFrom};
use switchyard_shared::tokens::{TokenRequest, TokenResponse};

/// Recognizes callers by their `Authorization: Bearer` header, as the configuration says.
#[derive(Debug)]
pub struct Authenticator {
    keys: Vec<KnownKey>,
    jwt: Option<(Arc<JwtVerifier>, Arc<Grants>)>,
    /// Which paths are answered without credentials (the probes, and `/metrics` if public).
    observability: ObservabilityConfig,
    /// What an unauthenticated request gets: everything when no authentication is configured.
    anonymous: Arc<Grants>,
    /// Mints and recognizes the proxy's own tokens (`[auth.tokens]`), when on.
    tokens: Option<TokenMinter>,
}

#[derive(Debug)]
struct KnownKey {
    hash: KeyHash,
    identity: Identity,
    grants: Arc<Grants>,
}

impl Authenticator {
    /// The authenticator of a checked configuration (a JWKS file is read here; a JWKS URL is
    /// fetched by [`Self::start`]).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let keys = config
            .keys
            .iter()
            .map(|k| KnownKey {
                hash: k.hash.clone(),
                identity: Identity {
                    user: Arc::from(k.name.as_str()),
                    via: IdentitySource::ApiKey,
                },
                grants: Arc::new(Grants {
                    scopes: Scopes::new(&k.models, &k.mcp),
                    limits: k.limits,
                    minted: None,
                }),
            })
            .collect();
        let jwt = match &config.auth.jwt {
            Some(jwt) => {
                let verifier =
                    JwtVerifier::new(jwt).map_err(|e| anyhow::anyhow!("[auth.jwt]: {e}"))?;
                let grants = Grants {
                    scopes: Scopes::new(&jwt.models, &jwt.mcp),
                    limits: jwt.limits,
                    minted: None,
                };
                Some((Arc::new(verifier), Arc::new(grants)))
            }
            None => None,
        };
        let required = config.requires_auth();
        let tokens = if required && config.auth.tokens.enabled {
            Some(TokenMinter::new(&config.auth.tokens)?)
        } else {
            None
        };
        Ok(Authenticator {
            keys,
            jwt,
            tokens,
            observability: config.observability.clone(),
            anonymous: Arc::new(if required {
                Grants::none()
            } else {
                Grants::all()
            }),
        })
    }

    /// Whether requests must carry credentials.
    pub fn required(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// Fetches a JWKS URL and starts refreshing it; fails when the first fetch does.
    pub async fn start(&self) -> anyhow::Result<()> {
        if let Some((verifier, _)) = &self.jwt {
            verifier
                .start()
                .await
                .map_err(|e| anyhow::anyhow!("[auth.jwt]: {e}"))?;
        }
        Ok(())
    }

    /// Who sent a request for `path` with `headers`, or why it is refused.
    async fn recognize(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(Identity, Arc<Grants>), Refusal> {
        if !self.required() || crate::observability::exempt_from_auth(path, &self.observability) {
            return Ok((Identity::anonymous(), Arc::clone(&self.anonymous)));
        }
        let token = bearer(headers)?;
        self.recognize_token(token).await
    }

    /// Who a bearer credential stands for, or why it is refused.
    async fn recognize_token(&self, token: &str) -> Result<(Identity, Arc<Grants>), Refusal> {
        if let Some(minter) = &self.tokens
            && looks_like_jwt(token)
            && TokenMinter::claims_to_be_minted(token)
        {
            return self.recognize_minted(minter, token);
        }
        if let Some((verifier, grants)) = &self.jwt
            && looks_like_jwt(token)
        {
            return match verifier.verify_fresh(token).await {
                Ok(identity) => Ok((identity, Arc::clone(grants))),
                Err(reason) => Err(Refusal::invalid(reason.to_string())),
            };
        }
        if self.keys.is_empty() {
            return Err(Refusal::invalid("the token is malformed".to_owned()));
        }
        let presented = KeyHash::of(token);
        // Every entry is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for key in &self.keys {
            if key.hash.ct_eq(&presented) && found.is_none() {
                found = Some(key);
            }
        }
        match found {
            Some(key) => Ok((key.identity.clone(), Arc::clone(&key.grants))),
            None => Err(Refusal::invalid("the API key is not valid".to_owned())),
        }
    }
}

impl Authenticator {
    /// The caller a credential sent other than in the `Authorization` header stands for (the
    /// first frame of a WebSocket, `/api/ws`), with the same checks; `401 unauthorized` with the
    /// reason, which never contains the credential.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller, ApiError> {
        if !self.required() {
            return Ok(Caller {
                identity: Identity::anonymous(),
                grants: Arc::clone(&self.anonymous),
            });
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(ApiError::new(ErrorCode::Unauthorized, "the token is empty"));
        }
        match self.recognize_token(token).await {
            Ok((identity, grants)) => Ok(Caller { identity, grants }),
            Err(Refusal::Missing) => Err(ApiError::new(ErrorCode::Unauthorized, "no token")),
            Err(Refusal::Invalid(message)) => Err(ApiError::new(ErrorCode::Unauthorized, message)),
        }
    }

    /// The caller a minted token stands for: its user, while still configured, with the
    /// token's scopes.
    fn recognize_minted(
        &self,
        minter: &TokenMinter,
        token: &str,
    ) -> Result<(Identity, Arc<Grants>), Refusal> {
        let verified = minter
            .verify(token)
            .map_err(|reason| Refusal::invalid(reason.to_string()))?;
        let principal = match verified.from {
            // The same key, not only the same name: a replaced key takes its tokens with it.
            MintedFrom::ApiKey => self
                .keys
                .iter()
                .find(|k| {
                    *k.identity.user == *verified.user
                        && verified.key_fingerprint.as_deref() == Some(&k.hash.fingerprint())
                })
                .map(|k| &k.grants),
            MintedFrom::Jwt => self.jwt.as_ref().map(|(_, grants)| grants),
        };
        let Some(principal) = principal else {
            return Err(Refusal::invalid(
                "the credential this token was minted with is no longer configured".to_owned(),
            ));
        };
        verified.grants(principal).map_err(Refusal::invalid)
    }

    /// A token for `caller`, as `request` asks (`POST /api/tokens`); `404 not_found` when
    /// minting is off.
    pub fn mint(&self, caller: &Caller, request: &TokenRequest) -> Result<TokenResponse, ApiError> {
        let Some(minter) = &self.tokens else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "this proxy mints no tokens: it needs [[keys]] or [auth.jwt], and \
                 [auth.tokens] enabled",
            ));
        };
        let key_fingerprint = match caller.identity.via.principal() {
            IdentitySource::ApiKey => self
                .keys
                .iter()
                .find(|k| k.identity.user == caller.identity.user)
                .map(|k| k.hash.fingerprint()),
            _ => None,
        };
        minter.mint(&caller.identity, &caller.grants, key_fingerprint, request)
    }
}

/// A JWT is three base64url parts; keys made by `switchyard keys new` have no dot.
fn looks_like_jwt(token: &str) -> bool {
    !token.starts_with(keys::KEY_PREFIX) && token.split('.').count() == 3
}

/// The credential of `Authorization: Bearer <credential>`.
fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::Missing);
    };
    let malformed = || {
        Refusal::invalid("the Authorization header must be `Bearer <API key or token>`".to_owned())
    };
    if values.next().is_some() {
        return Err(Refusal::invalid("send one Authorization header".to_owned()));
    }
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, credential) = text.split_once(' ').ok_or_else(malformed)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(malformed());
    }
    Ok(credential)
}

/// Why a request is answered `401`; its message never contains the credential.
#[derive(Debug)]
enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// A credential that was not accepted, and why.
    Invalid(String),
}

impl Refusal {
    fn invalid(message: String) -> Self {
        Refusal::Invalid(message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // RFC 6750: the challenge names the scheme, and says when a presented token was bad.
        let (message, challenge) = match self {
            Refusal::Missing => (
                "this proxy requires authentication: send `Authorization: Bearer <API key or token>`"
                    .to_owned(),
                r#"Bearer realm="switchyard""#,
            ),
            Refusal::Invalid(message) => (
                message,
                r#"Bearer realm="switchyard", error="invalid_token""#,
            ),
        };
        let mut response =
            AppError(ApiError::new(ErrorCode::Unauthorized, message)).into_response();
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        response
    }
}

/// The authentication layer: recognizes the caller, or answers `401 unauthorized`.
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let outcome = auth
        .recognize(request.uri().path(), request.headers())
        .await;
    // Nothing after this layer needs the credential; dropping it keeps it out of every later
    // log, echo or upstream request, whatever those do with headers.
    request.headers_mut().remove(AUTHORIZATION);
    match outcome {
        Ok((identity, grants)) => {
            request.extensions_mut().insert(identity);
            request.extensions_mut().insert(grants);
            next.run(request).await
        }
        // The WebSocket route may be opened without the header: its first frame then carries
        // the credential (`ws::ServerSession`), never the URL. Nothing is recorded in the
        // extensions, so nothing downstream can mistake the request for an authenticated one.
        Err(Refusal::Missing) if request.uri().path() == switchyard_shared::ws::PATH => {
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The caller of a request and what it may do, as the authentication layer established them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the caller is.
    pub identity: Identity,
    /// What the caller may use.
    pub grants: Arc<Grants>,
}

impl Caller {
    /// The caller the authentication layer recorded in a request's extensions, if it did.
    pub fn of(extensions: &axum::http::Extensions) -> Option<Self> {
        Some(Caller {
            identity: extensions.get::<Identity>()?.clone(),
            grants: Arc::clone(extensions.get::<Arc<Grants>>()?),
        })
    }

    /// The caller's scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.grants.scopes
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only a route outside the authentication layer gets `None`: refuse, never guess.
        Caller::of(&parts.extensions).ok_or_else(|| {
            AppError(ApiError::internal(
                "the request did not pass the authentication layer",
            ))
        })
    }
}
