//! Password policy and argon2id hashing. Hashing and verification are CPU-heavy by design, so
//! they run on tokio's blocking pool, never on a runtime worker.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore as _;

use crate::error::{AuthError, AuthResult};

/// Minimum password length (DeerFlow: 8).
pub const MIN_LENGTH: usize = 8;

/// A small blocklist of passwords that are always rejected.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "12345678",
    "123456789",
    "1234567890",
    "qwerty123",
    "qwertyuiop",
    "11111111",
    "00000000",
    "iloveyou",
    "abc12345",
    "letmein1",
    "admin123",
    "welcome1",
    "changeme",
    "sunshine",
    "football",
    "baseball",
    "trustno1",
];

/// Checks a new password against the policy.
pub fn check_policy(password: &str) -> AuthResult<()> {
    if password.chars().count() < MIN_LENGTH {
        return Err(AuthError::WeakPassword(format!(
            "Password must be at least {MIN_LENGTH} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(AuthError::WeakPassword("Password is too long".to_owned()));
    }
    if COMMON.contains(&password.to_lowercase().as_str()) {
        return Err(AuthError::WeakPassword("Password is too common".to_owned()));
    }
    Ok(())
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
}

impl Default for HashCost {
    /// OWASP's argon2id recommendation (19 MiB, 2 iterations, 1 lane).
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl HashCost {
    /// The cheapest parameters argon2 accepts: for tests only.
    pub fn minimal() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
        }
    }

    fn hasher(self) -> AuthResult<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| AuthError::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes a password (argon2id PHC string) on the blocking pool.
pub async fn hash(password: &str, cost: HashCost) -> AuthResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_sync(&password, cost))
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))?
}

fn hash_sync(password: &str, cost: HashCost) -> AuthResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| AuthError::Internal(format!("salt: {e}")))?;
    cost.hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing failed: {e}")))
}

/// Verifies a password against a stored PHC string on the blocking pool. A malformed stored
/// hash verifies as false (never an error that would tell the caller more).
pub async fn verify(password: &str, stored: &str) -> AuthResult<bool> {
    let password = password.to_owned();
    let stored = stored.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        // Parameters come from the PHC string itself.
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|e| AuthError::Internal(format!("verification task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery", HashCost::minimal())
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h).await.unwrap());
        assert!(!verify("wrong horse battery", &h).await.unwrap());
        assert!(!verify("x", "not a phc string").await.unwrap());
        let h2 = hash("correct horse battery", HashCost::minimal())
            .await
            .unwrap();
        assert_ne!(h, h2, "salted");
    }

    #[test]
    fn policy_rejects_short_and_common() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("Password123").is_err());
        assert!(check_policy("a much better passphrase").is_ok());
    }
}
