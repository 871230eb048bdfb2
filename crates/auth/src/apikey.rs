//! API keys: `ak_<id>_<secret>` where `id` is 16 hex characters (the public record id) and
//! `secret` is 256 random bits in unpadded base64url. Only the SHA-256 of the whole key is
//! stored; verification looks the record up by id and compares hashes in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// Prefix of every key (lets secret scanners recognise them).
pub const KEY_PREFIX: &str = "ak_";

/// A freshly generated key: its public id and the full secret value (shown once).
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Public id.
    pub id: String,
    /// The full key (`ak_<id>_<secret>`).
    pub key: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Generates a new random key.
pub fn generate() -> NewKey {
    let mut rng = rand::rng();
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let id = hex(&id);
    let key = format!("{KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    NewKey { id, key }
}

/// The record id embedded in a key, if the key is well-formed.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty();
    ok.then_some(id)
}

/// Lowercase hex SHA-256 of a key.
pub fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Whether `key` hashes to `stored_hash`, compared in constant time.
pub fn verify(key: &str, stored_hash: &str) -> bool {
    let h = hash(key);
    h.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A random URL-safe token of `n` random bytes (CSRF tokens, generated secrets).
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        let k = generate();
        assert_eq!(key_id(&k.key), Some(k.id.as_str()));
        let h = hash(&k.key);
        assert_eq!(h.len(), 64);
        assert!(verify(&k.key, &h));
        assert!(!verify(&format!("{}x", k.key), &h));
        assert_ne!(generate().key, k.key);
        assert!(!format!("{k:?}").contains(&k.key));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        for bad in [
            "",
            "ak_",
            "ak_123_x",
            "xx_0123456789abcdef_s",
            "ak_0123456789abcdeg_s",
            "ak_0123456789abcdef_",
        ] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }
}
