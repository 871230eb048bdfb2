//! `antler-auth`: who is calling, and proving it.
//!
//! Owns the identity side of Antler: users and their roles, API keys (stored as SHA-256
//! hashes, compared in constant time, listable and revocable), argon2id password hashes
//! (computed on the blocking pool), signed session tokens (HS256 JWT carrying a token version
//! that a password change bumps), the login lockout (5 failures per client, 300 s), and the
//! [`AuthStore`] boundary with an in-memory and a SQLite implementation (its own database
//! file, `auth.db`, with its own migrations), and PostgreSQL / MySQL implementations in the
//! deployment's shared database (features `postgres`, `mysql`), so replicas share accounts.
//!
//! The HTTP side (extracting credentials, cookies, CSRF) lives in the gateway; this crate
//! answers "which [`Actor`] is this?" and performs the account operations. It never logs or
//! returns a secret: errors name what failed, not the value.

pub mod apikey;
pub mod config;
pub mod error;
pub mod lockout;
pub mod memory;
pub mod model;
pub mod password;
pub mod service;
pub mod shared;
pub mod sqlite;
pub mod store;
pub mod token;

pub use config::{AuthConfig, AuthMode};
pub use error::{AuthError, AuthResult};
pub use lockout::LoginLimiter;
pub use memory::MemoryAuthStore;
pub use model::{Actor, ApiKey, AuthSource, DEFAULT_USER_ID, Role, User};
pub use service::Auth;
#[cfg(feature = "mysql")]
pub use shared::MysqlAuthStore;
#[cfg(feature = "postgres")]
pub use shared::PgAuthStore;
pub use sqlite::SqliteAuthStore;
pub use store::AuthStore;
