//! Tokens the proxy mints (`[auth.tokens]`, `POST /api/tokens`): short-lived HS256 JWTs that stand
//! for the caller who asked, with at most that caller's scopes and limits, so that a browser can
//! hold one instead of a long-lived key.
//!
//! A token carries its user (`sub`), whether that user is a key's or a JWT's (`src`), its scopes,
//! its own limits and its expiry. It is recognized by its `kid` before any other JWT check, and
//! accepted only while its principal is still configured and its scopes are still within the
//! principal's: removing or narrowing a key takes its tokens with it. Its requests count against
//! the principal's budget (and its own limits, when it has narrower ones), so minting never
//! adds to what a caller may spend.
//!
//! A minted token may mint another, within its own scopes and limits and expiring no later than
//! itself.
//!
//! The signing key comes from `signing_key_env` or `signing_key_file`; without one, a random key
//! is made at start-up and the tokens are accepted by that process alone.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use switchyard_shared::error::truncate;
use switchyard_shared::tokens::{TokenLimits, TokenRequest, TokenResponse, TokenScopes};
use switchyard_shared::{ApiError, ErrorCode};

use super::Scopes;
use super::jwt::TokenError;
use crate::config::{Limits, TokensConfig};
use crate::identity::{Grants, Identity, IdentitySource, MintedFrom, MintedGrant};

/// The `kid` of every minted token: how the authentication layer tells them from an identity
/// provider's.
pub const KID: &str = "switchyard-minted";
/// The `iss` and `aud` of minted tokens: this proxy, for itself.
const ISSUER: &str = "switchyard";
/// Seconds of clock difference allowed on `exp`: instances that share a key may disagree a
/// little, and a token lives minutes, not seconds.
const LEEWAY_S: u64 = 1;

/// The claims of a minted token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    /// `"key"` or `"jwt"`: which kind of credential the user was recognized by.
    src: Source,
    iat: u64,
    exp: u64,
    /// The token's id, which its own budget is kept under.
    jti: String,
    models: Vec<String>,
    mcp: Vec<String>,
    /// Its own limits, when narrower than its principal's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lim: Option<TokenLimits>,
    /// The fingerprint of the key it was minted with (`src = "key"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kfp: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Source {
    Key,
    Jwt,
}

impl From<MintedFrom> for Source {
    fn from(from: MintedFrom) -> Self {
        match from {
            MintedFrom::ApiKey => Source::Key,
            MintedFrom::Jwt => Source::Jwt,
        }
    }
}

impl From<Source> for MintedFrom {
    fn from(source: Source) -> Self {
        match source {
            Source::Key => MintedFrom::ApiKey,
            Source::Jwt => MintedFrom::Jwt,
        }
    }
}

/// A verified minted token, before its principal is looked up.
#[derive(Debug)]
pub struct Verified {
    /// The user it acts for.
    pub user: String,
    /// The kind of credential that user has.
    pub from: MintedFrom,
    /// The fingerprint of the key it was minted with, for a key's user.
    pub key_fingerprint: Option<String>,
    scopes: Scopes,
    limits: Option<Limits>,
    id: String,
    expires_at: u64,
}

impl Verified {
    /// The identity and grants of the token, given its principal's current grants; refused when
    /// the token's scopes are no longer within them (the principal was narrowed since).
    pub fn grants(self, principal: &Grants) -> Result<(Identity, Arc<Grants>), String> {
        if let Some(outside) = principal.scopes.first_outside(&self.scopes) {
            return Err(format!(
                "the token's scope \"{}\" is no longer within its user's",
                truncate(outside, 200)
            ));
        }
        let identity = Identity {
            user: Arc::from(self.user),
            via: IdentitySource::Token(self.from),
        };
        let grants = Grants {
            scopes: self.scopes,
            limits: principal.limits,
            minted: Some(MintedGrant {
                id: Arc::from(self.id),
                expires_at: self.expires_at,
                limits: self.limits,
            }),
        };
        Ok((identity, Arc::new(grants)))
    }
}

/// Mints and verifies tokens with one key.
pub struct TokenMinter {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    default_ttl: u64,
    max_ttl: u64,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TokenMinter")
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// A minter for `config`, with its key or a random one.
    pub fn new(config: &TokensConfig) -> anyhow::Result<Self> {
        let key = match &config.signing_key {
            Some(key) => key.0,
            None => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key)
                    .map_err(|e| anyhow::anyhow!("[auth.tokens]: no random signing key: {e}"))?;
                tracing::info!(
                    "[auth.tokens] has no signing key: tokens are signed with a random key and \
                     accepted by this process only (set signing_key_env or signing_key_file to \
                     share one between instances)"
                );
                key
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Ok(TokenMinter {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            default_ttl: config.default_ttl_s,
            max_ttl: config.max_ttl_s,
        })
    }

    /// Whether `token` says it is a minted one (its header's `kid`); its signature is not
    /// checked yet.
    pub fn claims_to_be_minted(token: &str) -> bool {
        jsonwebtoken::decode_header(token).is_ok_and(|h| h.kid.as_deref() == Some(KID))
    }

    /// The token's claims, if it is one of ours, unexpired and untouched.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        let scopes = Scopes::parse(&claims.models, &claims.mcp).map_err(|_| TokenError::Invalid)?;
        let limits = match claims.lim {
            Some(lim) => Some(limits_of(&lim).map_err(|_| TokenError::Invalid)?),
            None => None,
        };
        Ok(Verified {
            user: claims.sub,
            from: claims.src.into(),
            key_fingerprint: claims.kfp,
            scopes,
            limits,
            id: claims.jti,
            expires_at: claims.exp,
        })
    }

    /// A token for `identity` with at most `grants`, as `request` asks; `key_fingerprint` is
    /// that of the key of a key's user.
    pub fn mint(
        &self,
        identity: &Identity,
        grants: &Grants,
        key_fingerprint: Option<String>,
        request: &TokenRequest,
    ) -> Result<TokenResponse, ApiError> {
        let from = match identity.via {
            IdentitySource::ApiKey => MintedFrom::ApiKey,
            IdentitySource::Jwt => MintedFrom::Jwt,
            IdentitySource::Token(from) => from,
            IdentitySource::Anonymous => {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "a token is minted for an authenticated caller: send `Authorization: \
                     Bearer <API key or token>`",
                ));
            }
        };
        let now = unix_now();
        let ttl = match request.ttl_seconds {
            Some(0) => return Err(ApiError::bad_request("ttl_seconds must be at least 1")),
            Some(ttl) => ttl.min(self.max_ttl),
            None => self.default_ttl,
        };
        let mut expires_at = now.saturating_add(ttl);
        if let Some(minted) = &grants.minted {
            // A token never outlives the token it was minted with.
            expires_at = expires_at.min(minted.expires_at);
        }
        if expires_at <= now {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the token used to mint has expired",
            ));
        }
        let scopes = Scopes::parse(
            request
                .models
                .as_deref()
                .unwrap_or(&grants.scopes.model_patterns()),
            request
                .mcp
                .as_deref()
                .unwrap_or(&grants.scopes.tool_patterns()),
        )
        .map_err(ApiError::bad_request)?;
        if let Some(outside) = grants.scopes.first_outside(&scopes) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the scope \"{}\" is not within this caller's scopes; a token gets at most \
                     the scopes of the caller that mints it",
                    truncate(outside, 200)
                ),
            ));
        }
        let current = grants.effective_limits();
        let limits = match &request.limits {
            Some(asked) => Some(narrower_limits(&current, asked)?),
            // A token minted by a token keeps that token's own limits.
            None => grants.minted.as_ref().and_then(|m| m.limits),
        };
        let lim = limits.map(|l| token_limits(&l));
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: ISSUER.to_owned(),
            sub: identity.user.to_string(),
            src: from.into(),
            iat: now,
            exp: expires_at,
            jti: random_id()?,
            models: scopes.model_patterns(),
            mcp: scopes.tool_patterns(),
            lim,
            kfp: key_fingerprint,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(KID.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|_| ApiError::internal("the token could not be signed"))?;
        Ok(TokenResponse {
            token,
            expires_at,
            scopes: TokenScopes {
                models: claims.models,
                mcp: claims.mcp,
            },
            limits: token_limits(&limits.unwrap_or(current)),
        })
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// 128 random bits, base64url.
fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness for a token id"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// `asked` over `current`: each value given must be at most the current one (`403` otherwise);
/// a value not given stays the current one.
fn narrower_limits(current: &Limits, asked: &TokenLimits) -> Result<Limits, ApiError> {
    let asked = limits_of(asked).map_err(ApiError::bad_request)?;
    fn pick<T: Ord + Copy + std::fmt::Display>(
        name: &str,
        current: Option<T>,
        asked: Option<T>,
    ) -> Result<Option<T>, ApiError> {
        match (current, asked) {
            (Some(c), Some(a)) if a > c => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("limits.{name} {a} is above this caller's {c}"),
            )),
            (_, Some(a)) => Ok(Some(a)),
            (c, None) => Ok(c),
        }
    }
    Ok(Limits {
        requests_per_minute: pick(
            "requests_per_minute",
            current.requests_per_minute,
            asked.requests_per_minute,
        )?,
        concurrent_streams: pick(
            "concurrent_streams",
            current.concurrent_streams,
            asked.concurrent_streams,
        )?,
        tokens_per_minute: pick(
            "tokens_per_minute",
            current.tokens_per_minute,
            asked.tokens_per_minute,
        )?,
    })
}

/// The limits a request or a claim names; zero is not a limit.
fn limits_of(l: &TokenLimits) -> Result<Limits, String> {
    let zero = |name: &str| format!("limits.{name} must be at least 1");
    Ok(Limits {
        requests_per_minute: l
            .requests_per_minute
            .map(|n| NonZeroU32::new(n).ok_or_else(|| zero("requests_per_minute")))
            .transpose()?,
        concurrent_streams: l
            .concurrent_streams
            .map(|n| NonZeroU32::new(n).ok_or_else(|| zero("concurrent_streams")))
            .transpose()?,
        tokens_per_minute: l
            .tokens_per_minute
            .map(|n| NonZeroU64::new(n).ok_or_else(|| zero("tokens_per_minute")))
            .transpose()?,
    })
}

fn token_limits(l: &Limits) -> TokenLimits {
    TokenLimits {
        requests_per_minute: l.requests_per_minute.map(NonZeroU32::get),
        concurrent_streams: l.concurrent_streams.map(NonZeroU32::get),
        tokens_per_minute: l.tokens_per_minute.map(NonZeroU64::get),
    }
}
