//! The [`AuthStore`] boundary: users and API keys. Implementations: [`crate::MemoryAuthStore`],
//! [`crate::SqliteAuthStore`] and the shared-database ones in [`crate::shared`]; all run the
//! same conformance suite (`tests/store.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::AuthResult;
use crate::model::{ApiKey, Role, User};

/// Persistence of accounts. Emails are stored as given (the service lower-cases them).
#[async_trait]
pub trait AuthStore: Send + Sync {
    /// Inserts a user. `EmailExists` when the email or the id is taken.
    async fn create_user(&self, user: &User) -> AuthResult<()>;
    /// Inserts `user` only if no admin exists yet (atomically); `AlreadyInitialized` else.
    async fn create_first_admin(&self, user: &User) -> AuthResult<()>;
    /// A user by id.
    async fn get_user(&self, id: &str) -> AuthResult<Option<User>>;
    /// A user by email / login name.
    async fn get_user_by_email(&self, email: &str) -> AuthResult<Option<User>>;
    /// Every user, oldest first (admin routes and the CLI).
    async fn list_users(&self) -> AuthResult<Vec<User>>;
    /// Whether an admin exists (`setup-status`).
    async fn has_admin(&self) -> AuthResult<bool>;
    /// Sets the email and password hash and bumps the token version, returning the updated
    /// user. `NotFound` for an unknown id, `EmailExists` when the email belongs to another.
    async fn update_credentials(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
    ) -> AuthResult<User>;
    /// Sets a user's role. `NotFound` for an unknown id.
    async fn set_role(&self, id: &str, role: Role) -> AuthResult<()>;
    /// Inserts an API key record.
    async fn create_api_key(&self, key: &ApiKey) -> AuthResult<()>;
    /// An API key record by id (revoked ones included).
    async fn get_api_key(&self, id: &str) -> AuthResult<Option<ApiKey>>;
    /// API keys, oldest first, of one user or of everyone.
    async fn list_api_keys(&self, user_id: Option<&str>) -> AuthResult<Vec<ApiKey>>;
    /// Marks a key revoked (once); false when it does not exist or was already revoked.
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> AuthResult<bool>;
    /// A deployment-wide secret kept by the store: the value stored under `name`, storing
    /// `candidate` first if there is none (the first caller's value wins, for every replica).
    /// `None` when the store is not shared between processes (the caller keeps its own).
    async fn shared_secret(&self, _name: &str, _candidate: &str) -> AuthResult<Option<String>> {
        Ok(None)
    }
}
