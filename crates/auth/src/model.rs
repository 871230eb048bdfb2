//! Records: users, API keys, and the [`Actor`] a request acts as.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The owner every request acts as when auth is off (DeerFlow's `DEFAULT_USER_ID`).
pub const DEFAULT_USER_ID: &str = "default";

/// A user's system role. Admins see other users' data only through explicit admin routes;
/// on every ordinary route an admin is just its own owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Operations: may list users and manage everyone's API keys.
    Admin,
    /// Everyone else.
    User,
}

impl Role {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }

    /// Parses the stored name (unknown values are plain users).
    pub fn parse(s: &str) -> Self {
        if s == "admin" {
            Self::Admin
        } else {
            Self::User
        }
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id; it is the `owner` of everything the user creates.
    pub id: String,
    /// Login name (DeerFlow's `email`; any non-blank name for API-key-only users).
    pub email: String,
    /// argon2id PHC string; `None` for users that only use API keys.
    pub password_hash: Option<String>,
    /// System role.
    pub role: Role,
    /// Bumped by every password change; session tokens carrying another value are revoked.
    pub token_version: i64,
    /// Creation time (UTC).
    pub created_at: DateTime<Utc>,
}

/// An API key record. The key itself is never stored: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Public id (also embedded in the key, so lookups need no secret comparison in SQL).
    pub id: String,
    /// The owner the key acts as.
    pub user_id: String,
    /// Free label.
    pub name: Option<String>,
    /// Lowercase hex SHA-256 of the full key.
    #[serde(skip)]
    pub key_hash: String,
    /// Creation time (UTC).
    pub created_at: DateTime<Utc>,
    /// When revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// How the actor proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthSource {
    /// Auth is off (`mode: none`).
    AuthDisabled,
    /// An `x-api-key`.
    ApiKey,
    /// A session token (cookie or bearer).
    Session,
    /// A reverse proxy's trusted header.
    TrustedHeader,
}

/// Who a request acts as. Passed explicitly to every store call as `owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The owner id.
    pub user_id: String,
    /// Role (admin routes check it).
    pub role: Role,
    /// How it authenticated.
    pub source: AuthSource,
}

impl Actor {
    /// The owner string every store call takes.
    pub fn owner(&self) -> &str {
        &self.user_id
    }

    /// Whether this actor may use the admin routes.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The actor of `mode: none`.
    pub fn anonymous_default() -> Self {
        Self {
            user_id: DEFAULT_USER_ID.to_owned(),
            role: Role::Admin,
            source: AuthSource::AuthDisabled,
        }
    }
}

/// Current time truncated to microseconds (what every store keeps).
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}
