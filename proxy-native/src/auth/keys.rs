//! API keys: made by `switchyard keys new`, shown once, and stored in the configuration only as a
//! hash (`hash = "sha256:<hex>"`), so that a leaked configuration file gives no usable key.
//!
//! A key is 32 random bytes from the operating system, written in base64url after the prefix
//! `sy_` (so that it is recognizable in a secret scanner or a shell history). Because a key has
//! 256 bits of entropy, a fast hash is the right one: slow password hashes (argon2, bcrypt) exist
//! to protect low-entropy secrets from guessing, and nobody can guess 2^256 values however fast
//! each try is. A fast hash also keeps every authenticated request cheap.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key made by `switchyard keys new` starts with.
pub const KEY_PREFIX: &str = "sy_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// How a hash is written in the configuration, before its hex digits.
const HASH_PREFIX: &str = "sha256:";

/// A new random key and its hash.
pub fn generate() -> Result<(String, KeyHash), getrandom::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)?;
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = KeyHash::of(&key);
    Ok((key, hash))
}

/// The SHA-256 hash of a key, as the configuration stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of `key` (the whole presented string, prefix included).
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// Whether `self` and `other` are equal, taking the same time whatever their contents.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Reads `sha256:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let problem = || {
            format!(
                "expected \"{HASH_PREFIX}\" and 64 hex digits, as `switchyard keys new` prints \
                 (the configuration holds a key's hash, never the key)"
            )
        };
        let hex = text.strip_prefix(HASH_PREFIX).ok_or_else(problem)?;
        // Checked digit by digit: `from_str_radix` alone would also take a sign.
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(problem());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).map_err(|_| problem())?;
            *byte = u8::from_str_radix(digits, 16).map_err(|_| problem())?;
        }
        Ok(KeyHash(bytes))
    }
}

impl KeyHash {
    /// A short digest of this hash: what a minted token records of the key it was minted with,
    /// so that replacing the key ends its tokens too.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.0);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HASH_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        KeyHash::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `name` may name a key: it becomes the user id in logs, metrics and audit lines, so it
/// is short and plain.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_long_and_distinct() {
        let (a, hash_a) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert!(a.starts_with(KEY_PREFIX), "{a}");
        // 32 bytes in unpadded base64 are 43 characters.
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert!(
            a[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{a}"
        );
        assert_ne!(a, b);
        assert!(hash_a.ct_eq(&KeyHash::of(&a)));
        assert!(!hash_a.ct_eq(&KeyHash::of(&b)));
    }

    #[test]
    fn hashes_round_trip_through_their_text() {
        let hash = KeyHash::of("sy_example");
        let text = hash.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.len(), "sha256:".len() + 64);
        assert_eq!(KeyHash::parse(&text).unwrap(), hash);
        // Known answer: SHA-256 of "abc".
        assert_eq!(
            KeyHash::of("abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            KeyHash::parse(
                "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
            )
            .unwrap(),
            KeyHash::of("abc")
        );
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for text in [
            "",
            "sy_abc",
            "sha256:",
            "sha256:abc",
            "md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad00",
            "sha256:+a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:é7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
        ] {
            let problem = KeyHash::parse(text).unwrap_err();
            assert!(problem.contains("keys new"), "{text}: {problem}");
        }
    }

    #[test]
    fn key_names_are_plain() {
        for name in ["ci", "team-a.prod", "alice@example.com", "a_b"] {
            assert!(is_key_name(name), "{name}");
        }
        for name in ["", "a b", "a/b", "a\nb", &"x".repeat(65)] {
            assert!(!is_key_name(name), "{name:?}");
        }
    }
}
