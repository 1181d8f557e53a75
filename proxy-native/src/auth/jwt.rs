//! JWT bearer tokens (`[auth.jwt]`): signature by a key of the configured JWKS, `iss`, `aud`,
//! `exp` (and `nbf` when present) within the leeway, an accepted algorithm, and a `sub`, which
//! becomes the user id.
//!
//! The JWKS comes from a file (read at start-up) or a URL (fetched at start-up, then again every
//! `jwks_refresh_s`). A failed refresh is logged and the last good set is kept, so an identity
//! provider that is briefly down does not lock everyone out. A token whose `kid` the set lacks
//! (the provider has just rotated its keys) makes the proxy fetch the set at once, at most once
//! per [`EARLY_REFRESH_COOLDOWN`], so made-up `kid`s cannot turn it against the provider. A fetch is bounded in time and size
//! and follows no redirect. This module and `config/embedded.rs` are the only code that reaches
//! a network address outside the upstreams, and only this one after start-up.

use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::config::JwtConfig;
use crate::identity::{Identity, IdentitySource};

/// The longest wait for a JWKS answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted; real ones are a few kilobytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// After a failed refresh, the next try comes this soon (or at the refresh interval if shorter).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// The shortest time between two fetches made for unknown `kid`s.
pub const EARLY_REFRESH_COOLDOWN: Duration = Duration::from_secs(30);
/// The longest `sub` taken as a user id.
const MAX_SUB_LEN: usize = 256;

/// The keys a token may be signed with: the usable keys of a JWKS.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: the key is then used for that algorithm only.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only ids: an `oct` key is a shared secret.
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| k.kid.as_deref().unwrap_or("(no kid)")),
            )
            .finish()
    }
}

impl KeySet {
    /// The keys of a JWKS document usable with one of `algorithms`. Keys of other types, keys
    /// for encryption and keys this crate cannot read are skipped; a set with none left is an
    /// error, since no token could ever be accepted.
    pub fn parse(json: &[u8], algorithms: &[Algorithm]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(json)
            .map_err(|e| format!("not a JWKS (a JSON object with \"keys\"): {e}"))?;
        let keys: Vec<VerifyKey> = document
            .keys
            .into_iter()
            // One unreadable entry (a new key type, say) must not discard the others.
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| usable_key(&jwk, algorithms))
            .collect();
        if keys.is_empty() {
            let names: Vec<String> = algorithms.iter().map(|a| format!("{a:?}")).collect();
            return Err(format!(
                "the JWKS has no signing key usable with the accepted algorithms ({})",
                names.join(", ")
            ));
        }
        Ok(KeySet { keys })
    }

    /// Reads and parses a JWKS file.
    pub fn from_file(path: &Path, algorithms: &[Algorithm]) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&bytes, algorithms).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether a key has this id.
    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn usable_key(jwk: &Jwk, algorithms: &[Algorithm]) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        // A shared secret is a signing key only where HMAC is accepted.
        if !algorithms
            .iter()
            .any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return None;
        }
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        // `KeyAlgorithm` prints as its JOSE name; encryption algorithms are not `Algorithm`s.
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let family = key.family();
    let fits = match alg {
        Some(alg) => algorithms.contains(&alg) && family.algorithms().contains(&alg),
        None => algorithms.iter().any(|a| family.algorithms().contains(a)),
    };
    fits.then(|| VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// Why a token was refused; the message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not among `[auth.jwt] algorithms`.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No key of the JWKS fits the token's `kid` and algorithm.
    #[error("no key of the configured JWKS matches the token")]
    NoKey,
    /// The signature does not verify.
    #[error("the token's signature is not valid")]
    Signature,
    /// `exp` is in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not name the configured audience.
    #[error("the token's audience is not accepted")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// A claim the proxy needs is absent.
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    /// `sub` is empty, too long or has control characters.
    #[error("the token's `sub` cannot be used as a user id")]
    Subject,
    /// Anything else the library refused (claims of the wrong type, say).
    #[error("the token is not valid")]
    Invalid,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                TokenError::Malformed
            }
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::Algorithm,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
            _ => TokenError::Invalid,
        }
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum JwksSource {
    File,
    Url(reqwest::Url),
}

/// Checks tokens against `[auth.jwt]`.
#[derive(Debug)]
pub struct JwtVerifier {
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    source: JwksSource,
    refresh: Duration,
    algorithms: Vec<Algorithm>,
    /// The JWKS client, once [`Self::start`] has made it (URL sources only).
    client: OnceLock<reqwest::Client>,
    /// When a fetch for an unknown `kid` last ran; held during one, so that concurrent requests
    /// wait for it instead of fetching again.
    early_refresh: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct Claims {
    /// Optional here so that a token without one is refused by the library's required-claims
    /// check, which names the claim, rather than as unreadable.
    #[serde(default)]
    sub: Option<String>,
}

impl JwtVerifier {
    /// A verifier for `config`; a JWKS file is read now, a JWKS URL is fetched by [`Self::start`].
    pub fn new(config: &JwtConfig) -> Result<Self, String> {
        let (source, keys) = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => (
                JwksSource::File,
                KeySet::from_file(path, &config.algorithms)?,
            ),
            (None, Some(url)) => {
                let url = reqwest::Url::parse(url).map_err(|e| format!("jwks_url: {e}"))?;
                (JwksSource::Url(url), KeySet::default())
            }
            (None, None) => return Err("set jwks_file or jwks_url".to_owned()),
        };
        let first = *config
            .algorithms
            .first()
            .ok_or_else(|| "algorithms must not be empty".to_owned())?;
        let mut validation = Validation::new(first);
        validation.algorithms = config.algorithms.clone();
        validation.leeway = config.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Ok(JwtVerifier {
            validation,
            keys: RwLock::new(Arc::new(keys)),
            source,
            refresh: Duration::from_secs(config.jwks_refresh_s),
            algorithms: config.algorithms.clone(),
            client: OnceLock::new(),
            early_refresh: tokio::sync::Mutex::new(None),
        })
    }

    /// Fetches a JWKS URL (an error if that fails: without keys no token could be accepted) and
    /// keeps it fresh until the verifier is dropped. Nothing to do for a file.
    pub async fn start(self: &Arc<Self>) -> Result<(), String> {
        let JwksSource::Url(url) = &self.source else {
            return Ok(());
        };
        let client = fetch_client().map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        let keys = fetch(&client, url, &self.algorithms)
            .await
            .map_err(|e| format!("cannot fetch the JWKS from {url}: {e}"))?;
        tracing::info!(%url, keys = keys.len(), "JWKS fetched");
        self.replace(keys);
        let client = self.client.get_or_init(|| client).clone();
        tokio::spawn(refresh_loop(
            Arc::downgrade(self),
            client,
            url.clone(),
            self.refresh,
        ));
        Ok(())
    }

    fn replace(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            // A writer never panics while holding the lock; recover the slot if one did.
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The identity a valid token stands for; a `kid` the keys lack first makes the keys be
    /// fetched again (JWKS URL only, at most once per [`EARLY_REFRESH_COOLDOWN`]).
    pub async fn verify_fresh(&self, token: &str) -> Result<Identity, TokenError> {
        let outcome = self.verify(token);
        if outcome != Err(TokenError::NoKey) {
            return outcome;
        }
        let (JwksSource::Url(url), Some(client)) = (&self.source, self.client.get()) else {
            return outcome;
        };
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
            return outcome;
        };
        let mut last = self.early_refresh.lock().await;
        // Another request may have fetched the key while this one waited.
        if !self.current().has_kid(&kid)
            && last.is_none_or(|at| at.elapsed() >= EARLY_REFRESH_COOLDOWN)
        {
            *last = Some(Instant::now());
            match fetch(client, url, &self.algorithms).await {
                Ok(keys) => {
                    tracing::info!(%url, keys = keys.len(), "JWKS fetched for a token with a new key id");
                    self.replace(keys);
                }
                Err(problem) => {
                    tracing::warn!(%url, %problem, "JWKS fetch for a new key id failed; keeping the last good keys");
                }
            }
        }
        drop(last);
        self.verify(token)
    }

    /// The identity a valid token stands for, by the keys at hand.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        let keys = self.current();
        let candidates = keys.keys.iter().filter(|k| {
            (header.kid.is_none() || k.kid == header.kid)
                && k.alg.is_none_or(|alg| alg == header.alg)
                && k.key.family().algorithms().contains(&header.alg)
        });
        let mut outcome = Err(TokenError::NoKey);
        for candidate in candidates {
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &self.validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                // Without a `kid` several keys may fit: only a signature failure means "try
                // the next one"; any other failure is about the token itself.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    outcome = Err(TokenError::Signature);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let sub = outcome?
            .sub
            .ok_or(TokenError::MissingClaim("sub".to_owned()))?;
        if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
            return Err(TokenError::Subject);
        }
        Ok(Identity {
            user: Arc::from(sub),
            via: IdentitySource::Jwt,
        })
    }
}

fn fetch_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
    algorithms: &[Algorithm],
) -> Result<KeySet, String> {
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !response.status().is_success() {
        return Err(format!("it answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("the answer is larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::parse(&body, algorithms)
}

/// Refreshes the keys until the verifier is gone; a failure keeps the last good set.
async fn refresh_loop(
    verifier: Weak<JwtVerifier>,
    client: reqwest::Client,
    url: reqwest::Url,
    every: Duration,
) {
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let Some(verifier) = verifier.upgrade() else {
            return;
        };
        match fetch(&client, &url, &verifier.algorithms).await {
            Ok(keys) => {
                tracing::debug!(%url, keys = keys.len(), "JWKS refreshed");
                verifier.replace(keys);
                wait = every;
            }
            Err(problem) => {
                tracing::warn!(%url, %problem, "JWKS refresh failed; keeping the last good keys");
                wait = every.min(RETRY_AFTER_FAILURE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwtConfig;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    /// An ES256 key pair: what signs, and its public JWK.
    struct EcKey {
        encoding: EncodingKey,
        jwk: Value,
    }

    impl EcKey {
        fn generate(kid: &str) -> Self {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
            let der = pair.to_pkcs8v1().unwrap();
            // An uncompressed point: 0x04, then x and y, 32 bytes each.
            let point = pair.public_key().as_ref().to_vec();
            assert_eq!((point.len(), point[0]), (65, 4));
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            });
            EcKey {
                encoding: EncodingKey::from_ec_der(der.as_ref()),
                jwk,
            }
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn config(dir: &Path, jwks: &Value, algorithms: &[Algorithm]) -> JwtConfig {
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks.to_string()).unwrap();
        let toml = format!(
            "issuer = \"https://id.test/\"\naudience = \"switchyard\"\njwks_file = {path:?}\n\
             algorithms = [{}]\nleeway_s = 5\nmodels = [\"*\"]\nmcp = [\"*\"]\n",
            algorithms
                .iter()
                .map(|a| format!("\"{a:?}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        toml::from_str(&toml).unwrap()
    }

    fn claims(overrides: Value) -> Value {
        let mut claims = json!({
            "sub": "alice", "iss": "https://id.test/", "aud": "switchyard",
            "exp": now() + 600, "iat": now(),
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    fn es256(key: &EcKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    #[test]
    fn a_valid_es256_token_gives_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (EcKey::generate("a"), EcKey::generate("b"));
        let jwks = json!({"keys": [a.jwk, b.jwk]});
        let verifier = JwtVerifier::new(&config(dir.path(), &jwks, &[Algorithm::ES256])).unwrap();
        for token in [
            es256(&a, Some("a"), &claims(json!({}))),
            es256(&b, Some("b"), &claims(json!({}))),
            // Without a `kid`, every key that fits is tried.
            es256(&b, None, &claims(json!({}))),
            // An audience list that contains ours.
            es256(
                &a,
                Some("a"),
                &claims(json!({"aud": ["other", "switchyard"]})),
            ),
            // Expired, but within the leeway.
            es256(&a, Some("a"), &claims(json!({"exp": now() - 2}))),
        ] {
            let identity = verifier.verify(&token).unwrap();
            assert_eq!(&*identity.user, "alice");
            assert_eq!(identity.via, IdentitySource::Jwt);
        }
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key = EcKey::generate("a");
        let stranger = EcKey::generate("a");
        let jwks = json!({"keys": [key.jwk]});
        let verifier = JwtVerifier::new(&config(dir.path(), &jwks, &[Algorithm::ES256])).unwrap();
        let sign = |c: Value| es256(&key, Some("a"), &claims(c));
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(json!({})),
            &EncodingKey::from_secret(b"guessable"),
        )
        .unwrap();
        let mut tampered = sign(json!({}));
        let claims_start = tampered.find('.').unwrap() + 1;
        let forged = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "root"})).to_string());
        let claims_end = tampered.rfind('.').unwrap();
        tampered.replace_range(claims_start..claims_end, &forged);
        for (token, expected) in [
            (sign(json!({"exp": now() - 60})), TokenError::Expired),
            (sign(json!({"nbf": now() + 60})), TokenError::NotYetValid),
            (sign(json!({"aud": "someone-else"})), TokenError::Audience),
            (
                sign(json!({"iss": "https://evil.test/"})),
                TokenError::Issuer,
            ),
            (
                sign(json!({"exp": null})),
                TokenError::MissingClaim("exp".into()),
            ),
            (
                sign(json!({"sub": null})),
                TokenError::MissingClaim("sub".into()),
            ),
            (sign(json!({"sub": ""})), TokenError::Subject),
            (sign(json!({"sub": "a\nb"})), TokenError::Subject),
            (
                es256(&stranger, Some("a"), &claims(json!({}))),
                TokenError::Signature,
            ),
            (
                es256(&key, Some("unknown"), &claims(json!({}))),
                TokenError::NoKey,
            ),
            (tampered, TokenError::Signature),
            (hs256, TokenError::Algorithm),
            ("not.a.jwt".to_owned(), TokenError::Malformed),
            ("".to_owned(), TokenError::Malformed),
        ] {
            assert_eq!(verifier.verify(&token).unwrap_err(), expected, "{token}");
        }
    }

    #[test]
    fn hmac_keys_are_used_only_where_hmac_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let secret = b"a shared secret of thirty-two b.";
        let jwks = json!({"keys": [
            {"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret), "alg": "HS256", "kid": "h"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "unreadable"},
        ]});
        let verifier = JwtVerifier::new(&config(dir.path(), &jwks, &[Algorithm::HS256])).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("h".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_eq!(&*verifier.verify(&token).unwrap().user, "alice");
        let wrong = jsonwebtoken::encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(b"another secret of thirty-two b.."),
        )
        .unwrap();
        assert_eq!(verifier.verify(&wrong).unwrap_err(), TokenError::Signature);

        // The same set offers no key to a verifier that accepts only ES256.
        let problem = KeySet::parse(jwks.to_string().as_bytes(), &[Algorithm::ES256]).unwrap_err();
        assert!(problem.contains("no signing key"), "{problem}");
        assert!(
            !format!("{verifier:?}").contains(&URL_SAFE_NO_PAD.encode(secret)),
            "a shared secret reached Debug"
        );
    }

    // Multi-threaded: the JWKS server answers while the test waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jwks_url_is_refreshed_and_its_last_good_keys_kept() {
        use std::sync::Mutex;
        let (a, b) = (EcKey::generate("a"), EcKey::generate("b"));
        let served: Arc<Mutex<Option<Value>>> =
            Arc::new(Mutex::new(Some(json!({"keys": [a.jwk]}))));
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get({
                let served = Arc::clone(&served);
                move || {
                    let jwks = served.lock().unwrap().clone();
                    async move {
                        match jwks {
                            Some(jwks) => Ok(axum::Json(jwks)),
                            None => Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let config: JwtConfig = toml::from_str(&format!(
            "issuer = \"https://id.test/\"\naudience = \"switchyard\"\n\
             jwks_url = \"http://{addr}/jwks\"\nalgorithms = [\"ES256\"]\n\
             jwks_refresh_s = 1\nmodels = []\nmcp = []\n"
        ))
        .unwrap();
        let verifier = Arc::new(JwtVerifier::new(&config).unwrap());
        let token_a = es256(&a, Some("a"), &claims(json!({})));
        let token_b = es256(&b, Some("b"), &claims(json!({})));
        // Before the first fetch there is nothing to verify with.
        assert_eq!(verifier.verify(&token_a).unwrap_err(), TokenError::NoKey);
        verifier.start().await.unwrap();
        assert!(verifier.verify(&token_a).is_ok());
        assert_eq!(verifier.verify(&token_b).unwrap_err(), TokenError::NoKey);

        // The provider rotates its keys: the next refresh picks them up.
        *served.lock().unwrap() = Some(json!({"keys": [b.jwk]}));
        let mut rotated = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if verifier.verify(&token_b).is_ok() {
                rotated = true;
                break;
            }
        }
        assert!(rotated, "the rotated key was not fetched");
        assert_eq!(verifier.verify(&token_a).unwrap_err(), TokenError::NoKey);

        // The provider fails: the last good keys stay in use.
        *served.lock().unwrap() = None;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(verifier.verify(&token_b).is_ok());
        server.abort();
    }

    // Multi-threaded: the JWKS server answers while the test waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_key_id_fetches_the_keys_at_once_but_not_again_within_the_cooldown() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (a, b) = (EcKey::generate("a"), EcKey::generate("b"));
        let served = Arc::new(Mutex::new(json!({"keys": [a.jwk]})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get({
                let (served, fetches) = (Arc::clone(&served), Arc::clone(&fetches));
                move || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let jwks = served.lock().unwrap().clone();
                    async move { axum::Json(jwks) }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        // Hours between scheduled refreshes: any fetch below is an early one.
        let config: JwtConfig = toml::from_str(&format!(
            "issuer = \"https://id.test/\"\naudience = \"switchyard\"\n\
             jwks_url = \"http://{addr}/jwks\"\nalgorithms = [\"ES256\"]\n\
             jwks_refresh_s = 36000\nmodels = []\nmcp = []\n"
        ))
        .unwrap();
        let verifier = Arc::new(JwtVerifier::new(&config).unwrap());
        verifier.start().await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let token_a = es256(&a, Some("a"), &claims(json!({})));
        assert!(verifier.verify_fresh(&token_a).await.is_ok());
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "a known kid fetches nothing"
        );

        // The provider rotates in key `b` and signs with it at once.
        *served.lock().unwrap() = json!({"keys": [a.jwk, b.jwk]});
        let token_b = es256(&b, Some("b"), &claims(json!({})));
        assert_eq!(verifier.verify(&token_b).unwrap_err(), TokenError::NoKey);
        let identity = verifier.verify_fresh(&token_b).await.unwrap();
        assert_eq!(&*identity.user, "alice");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        // Made-up key ids, all at once: no further fetch within the cooldown.
        let forged: Vec<String> = (0..20)
            .map(|i| es256(&b, Some(&format!("made-up-{i}")), &claims(json!({}))))
            .collect();
        let outcomes =
            futures::future::join_all(forged.iter().map(|t| verifier.verify_fresh(t))).await;
        assert!(outcomes.iter().all(|o| *o == Err(TokenError::NoKey)));
        // A token without a kid never fetches either.
        let stranger = EcKey::generate("c");
        let no_kid = es256(&stranger, None, &claims(json!({})));
        assert!(verifier.verify_fresh(&no_kid).await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert!(verifier.verify_fresh(&token_a).await.is_ok());
        server.abort();
    }

    #[tokio::test]
    async fn a_jwks_file_is_never_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (EcKey::generate("a"), EcKey::generate("b"));
        let verifier = JwtVerifier::new(&config(
            dir.path(),
            &json!({"keys": [a.jwk]}),
            &[Algorithm::ES256],
        ))
        .unwrap();
        let token_b = es256(&b, Some("b"), &claims(json!({})));
        assert_eq!(
            verifier.verify_fresh(&token_b).await.unwrap_err(),
            TokenError::NoKey
        );
        let token_a = es256(&a, Some("a"), &claims(json!({})));
        assert!(verifier.verify_fresh(&token_a).await.is_ok());
    }

    #[test]
    fn unusable_documents_are_explained() {
        for (text, says) in [
            ("[]", "not a JWKS"),
            ("{\"keys\": []}", "no signing key"),
            (
                "{\"keys\": [{\"kty\": \"EC\", \"use\": \"enc\"}]}",
                "no signing key",
            ),
        ] {
            let problem = KeySet::parse(text.as_bytes(), &[Algorithm::ES256]).unwrap_err();
            assert!(problem.contains(says), "{text}: {problem}");
        }
    }
}
