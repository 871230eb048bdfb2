//! The one error type at this crate's public edge. Messages never contain a secret (no key,
//! password or token value), so they are safe to log and to return to clients.

/// Everything that can go wrong while authenticating or managing accounts.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials were presented.
    #[error("Authentication required")]
    NotAuthenticated,
    /// Wrong user name / password, or an unknown / revoked API key.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// The session token's `exp` is in the past.
    #[error("Token expired")]
    TokenExpired,
    /// The session token is malformed or its signature does not verify.
    #[error("Invalid token")]
    TokenInvalid,
    /// The session token was issued before the last password change.
    #[error("Token revoked (password changed)")]
    TokenRevoked,
    /// The token names a user that no longer exists.
    #[error("User not found")]
    UserNotFound,
    /// Too many failed logins from this client.
    #[error("Too many failed login attempts. Try again in {retry_after} seconds.")]
    LockedOut {
        /// Seconds until the client may try again.
        retry_after: u64,
    },
    /// `allow_registration` is off.
    #[error("Registration is disabled")]
    RegistrationDisabled,
    /// The e-mail / user name is taken.
    #[error("Email already registered")]
    EmailExists,
    /// `initialize` after the first admin exists.
    #[error("System already initialized")]
    AlreadyInitialized,
    /// The new password does not meet the policy.
    #[error("{0}")]
    WeakPassword(String),
    /// A malformed request value (never contains a secret).
    #[error("{0}")]
    InvalidInput(String),
    /// The record (user, API key) does not exist for this caller.
    #[error("Not found")]
    NotFound,
    /// The operation is not available in the configured auth mode.
    #[error("{0}")]
    Unsupported(String),
    /// The auth database failed.
    #[error("auth storage error: {0}")]
    Storage(String),
    /// Anything else (a hashing task panicked, the clock is broken...).
    #[error("internal auth error: {0}")]
    Internal(String),
}

impl AuthError {
    /// A short stable machine code (DeerFlow's `detail.code` values where they exist).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAuthenticated => "not_authenticated",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TokenExpired => "token_expired",
            Self::TokenInvalid | Self::TokenRevoked => "token_invalid",
            Self::UserNotFound => "user_not_found",
            Self::LockedOut { .. } => "too_many_attempts",
            Self::RegistrationDisabled => "registration_disabled",
            Self::EmailExists => "email_already_exists",
            Self::AlreadyInitialized => "system_already_initialized",
            Self::WeakPassword(_) => "weak_password",
            Self::InvalidInput(_) => "invalid_input",
            Self::NotFound => "not_found",
            Self::Unsupported(_) => "unsupported",
            Self::Storage(_) => "storage_error",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// Result alias of this crate.
pub type AuthResult<T> = Result<T, AuthError>;

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
