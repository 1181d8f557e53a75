//! Sealed session ids: what the gateway hands a client as its `Mcp-Session-Id` is the session's
//! state (whose it is, the client's `initialize` and an expiry) encrypted and authenticated with
//! the configured key. Any instance with that key can therefore resume a session another
//! instance opened, or one this instance closed when it went idle, with no shared session store
//! and no sticky routing; and nobody without the key can make one up, read one, or use another
//! caller's.
//!
//! rmcp keeps its own, random id for the session it serves locally; the id is sealed inside,
//! and the gateway's middleware swaps one for the other on the way in and out. rmcp restores a
//! session it does not know from a [`SessionStore`]; [`Handshakes`] is that store, fed by the
//! middleware with the state it unsealed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use serde::{Deserialize, Serialize};

use crate::config::SessionKey;
use crate::identity::{Identity, IdentitySource};

/// Marks the format, so that a later one can be told apart.
const PREFIX: &str = "sy1.";
/// Bound into every seal: a sealed id is only ever read back as one.
const CONTEXT: &[u8] = b"switchyard mcp gateway session v1";
const NONCE_LEN: usize = 24;
/// The longest sealed id: it grows with the client's `initialize` (a few hundred bytes for the
/// usual clients), and a response header must fit a reverse proxy's header buffer (nginx's is
/// 4 KiB by default). Longer ids are neither made nor decoded.
const MAX_SEALED_LEN: usize = 3 * 1024;
/// The most ended sessions remembered at once; past it, those whose ids expire soonest are
/// forgotten first.
const MAX_ENDED: usize = 100_000;

/// Seals and opens session ids with one key.
pub(super) struct Sealer {
    cipher: XChaCha20Poly1305,
    max_age: Duration,
}

/// What a sealed id holds.
#[derive(Serialize, Deserialize)]
struct Contents {
    /// rmcp's id of the session.
    sid: String,
    user: String,
    via: Via,
    /// Milliseconds since the Unix epoch after which the id is refused.
    exp: u64,
    init: InitializeRequestParams,
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Via {
    Anonymous,
    Key,
    Jwt,
}

impl From<IdentitySource> for Via {
    fn from(source: IdentitySource) -> Self {
        // A minted token resumes the sessions of the credential it was minted for.
        match source.principal() {
            IdentitySource::Anonymous => Via::Anonymous,
            IdentitySource::ApiKey | IdentitySource::Token(_) => Via::Key,
            IdentitySource::Jwt => Via::Jwt,
        }
    }
}

/// A sealed id that opened: still valid, and the state inside it.
pub(super) struct Opened {
    /// rmcp's id of the session.
    pub inner: String,
    /// Milliseconds since the Unix epoch after which the id is refused.
    pub expires: u64,
    /// The client's `initialize`, which a restore replays.
    pub init: InitializeRequestParams,
    user: String,
    via: Via,
}

impl Opened {
    /// How long the id stays valid.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.expires.saturating_sub(now()))
    }

    /// Whether `identity` is the caller that opened the session.
    pub fn belongs_to(&self, identity: &Identity) -> bool {
        *self.user == *identity.user && self.via == Via::from(identity.via)
    }
}

/// Milliseconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Sealer {
    /// A sealer with the configured key, or with a random one (ids then open only in this
    /// process).
    pub fn new(key: Option<&SessionKey>, max_age: Duration) -> std::io::Result<Sealer> {
        let key = match key {
            Some(key) => key.0,
            None => {
                let mut random = [0u8; 32];
                getrandom::fill(&mut random).map_err(std::io::Error::other)?;
                random
            }
        };
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
            max_age,
        })
    }

    /// The id a client is given for rmcp's session `inner`, opened by `owner` with `init`; an
    /// error of kind `InvalidInput` when the `initialize` is too large to travel in a header.
    pub fn seal(
        &self,
        inner: &str,
        owner: &Identity,
        mut init: InitializeRequestParams,
    ) -> std::io::Result<String> {
        // Request metadata (a progress token, say) belongs to that one request, not the session.
        init.meta = None;
        let sealed = self.seal_contents(&Contents {
            sid: inner.to_owned(),
            user: owner.user.to_string(),
            via: owner.via.into(),
            exp: now().saturating_add(u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)),
            init,
        })?;
        if sealed.len() > MAX_SEALED_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the client's initialize is too large for a session id",
            ));
        }
        Ok(sealed)
    }

    fn seal_contents(&self, contents: &Contents) -> std::io::Result<String> {
        let plain = serde_json::to_vec(contents).map_err(std::io::Error::other)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: CONTEXT,
                },
            )
            .map_err(|_| std::io::Error::other("sealing a session id failed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The state in `sealed`, if it was sealed with this key and has not expired.
    pub fn open(&self, sealed: &str) -> Option<Opened> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: CONTEXT,
                },
            )
            .ok()?;
        let contents: Contents = serde_json::from_slice(&plain).ok()?;
        (contents.exp > now()).then_some(Opened {
            inner: contents.sid,
            expires: contents.exp,
            init: contents.init,
            user: contents.user,
            via: contents.via,
        })
    }
}

/// rmcp's session store: it hands over the `initialize` of each new session (to be sealed) and
/// takes back the state of a session to restore (just unsealed). Entries live for the length
/// of one request.
#[derive(Default)]
pub(super) struct Handshakes {
    opened: Mutex<HashMap<String, InitializeRequestParams>>,
    restoring: Mutex<HashMap<String, InitializeRequestParams>>,
    /// Sessions their clients ended (`DELETE`), until their ids would have expired anyway.
    ended: Mutex<Ended>,
}

/// Ended sessions, by id and by expiry, so that forgetting the expired ones costs nothing on
/// the requests that only ask.
#[derive(Default)]
struct Ended {
    expiry_of: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl Ended {
    fn forget_expired(&mut self, now: u64) {
        while let Some((expires, _)) = self.by_expiry.first()
            && *expires <= now
        {
            self.forget_first();
        }
    }

    fn forget_first(&mut self) {
        if let Some((_, id)) = self.by_expiry.pop_first() {
            self.expiry_of.remove(&id);
        }
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Never held across an await.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Handshakes {
    /// The `initialize` rmcp stored for the session `inner` it just opened.
    pub fn take_opened(&self, inner: &str) -> Option<InitializeRequestParams> {
        locked(&self.opened).remove(inner)
    }

    /// Offers `init` for restoring the session `inner` during the current request.
    pub fn offer(self: &Arc<Self>, inner: &str, init: InitializeRequestParams) -> Offered {
        locked(&self.restoring).insert(inner.to_owned(), init);
        Offered {
            handshakes: Arc::clone(self),
            inner: inner.to_owned(),
        }
    }

    /// Whether the client of session `inner` ended it.
    pub fn ended(&self, inner: &str) -> bool {
        let mut ended = locked(&self.ended);
        ended.forget_expired(now());
        ended.expiry_of.contains_key(inner)
    }

    /// Records that the client ended session `inner`, whose id is valid until `expires`.
    pub fn end(&self, inner: &str, expires: u64) {
        let mut ended = locked(&self.ended);
        ended.forget_expired(now());
        if let Some(earlier) = ended.expiry_of.insert(inner.to_owned(), expires) {
            ended.by_expiry.remove(&(earlier, inner.to_owned()));
        }
        ended.by_expiry.insert((expires, inner.to_owned()));
        while ended.expiry_of.len() > MAX_ENDED {
            ended.forget_first();
        }
    }
}

/// Withdraws an offered state when the request is done, restored or not.
pub(super) struct Offered {
    handshakes: Arc<Handshakes>,
    inner: String,
}

impl Drop for Offered {
    fn drop(&mut self) {
        locked(&self.handshakes.restoring).remove(&self.inner);
    }
}

#[async_trait::async_trait]
impl SessionStore for Handshakes {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(locked(&self.restoring)
            .get(session_id)
            .cloned()
            .map(SessionState::new))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        locked(&self.opened).insert(session_id.to_owned(), state.initialize_params.clone());
        Ok(())
    }

    async fn delete(&self, _session_id: &str) -> Result<(), SessionStoreError> {
        // The middleware records an ended session: it knows when its id expires.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            user: Arc::from("alice"),
            via: IdentitySource::ApiKey,
        }
    }

    fn init() -> InitializeRequestParams {
        serde_json::from_value(serde_json::json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "c", "version": "1"}
        }))
        .unwrap()
    }

    fn sealer(key: u8) -> Sealer {
        Sealer::new(Some(&SessionKey([key; 32])), Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn a_sealed_id_opens_with_its_key_only() {
        let sealed = sealer(1).seal("inner-1", &alice(), init()).unwrap();
        assert!(sealed.starts_with(PREFIX));
        let opened = sealer(1).open(&sealed).unwrap();
        assert_eq!(opened.inner, "inner-1");
        assert_eq!(opened.init.protocol_version.as_str(), "2025-11-25");
        assert!(opened.belongs_to(&alice()));
        assert!(!opened.belongs_to(&Identity {
            user: Arc::from("alice"),
            via: IdentitySource::Jwt,
        }));
        assert!(sealer(2).open(&sealed).is_none());
    }

    #[test]
    fn the_same_session_seals_differently_and_reveals_nothing() {
        let a = sealer(1).seal("inner-1", &alice(), init()).unwrap();
        let b = sealer(1).seal("inner-1", &alice(), init()).unwrap();
        assert_ne!(a, b);
        assert!(!a.contains("alice") && !a.contains("inner"));
    }

    #[test]
    fn tampered_truncated_and_foreign_ids_do_not_open() {
        let sealed = sealer(1).seal("inner-1", &alice(), init()).unwrap();
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            flipped.as_str(),
            &sealed[..sealed.len() - 4],
            "sy1.",
            "sy1.!!!",
            "3f1c2a7e-0000-4000-8000-000000000000",
            &"A".repeat(MAX_SEALED_LEN + 1),
        ] {
            assert!(sealer(1).open(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_expired_id_does_not_open() {
        let sealer = sealer(1);
        let expired = |exp| Contents {
            sid: "s".into(),
            user: "alice".into(),
            via: Via::Key,
            exp,
            init: init(),
        };
        let live = sealer.seal_contents(&expired(now() + 5_000)).unwrap();
        assert!(sealer.open(&live).is_some());
        let dead = sealer
            .seal_contents(&expired(now().saturating_sub(1)))
            .unwrap();
        assert!(sealer.open(&dead).is_none());
    }

    #[test]
    fn an_initialize_too_large_for_a_header_is_refused() {
        let mut big = init();
        big.client_info.name = "x".repeat(MAX_SEALED_LEN);
        let error = sealer(1).seal("s", &alice(), big).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ended_sessions_are_forgotten_when_their_ids_expire() {
        let handshakes = Handshakes::default();
        handshakes.end("gone", now().saturating_sub(1));
        handshakes.end("ended", now() + 60_000);
        assert!(!handshakes.ended("gone"));
        assert!(handshakes.ended("ended"));
        assert!(!handshakes.ended("other"));
        // Ended again with a later expiry: one entry, the later expiry.
        handshakes.end("ended", now() + 120_000);
        let ended = locked(&handshakes.ended);
        assert_eq!((ended.expiry_of.len(), ended.by_expiry.len()), (1, 1));
    }

    #[test]
    fn keys_are_read_as_base64_or_hex() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(SessionKey::parse(&hex).unwrap().0[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(SessionKey::parse(&b64).unwrap().0, [9u8; 32]);
        assert_eq!(
            SessionKey::parse(b64.trim_end_matches('=')).unwrap().0,
            [9u8; 32]
        );
        for bad in ["", "short", &"00".repeat(16), &"zz".repeat(32)] {
            assert!(SessionKey::parse(bad).is_err(), "{bad}");
        }
    }
}
