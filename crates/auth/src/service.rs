//! [`Auth`]: the account service. Authenticates credentials into an [`Actor`] and performs
//! the account operations (initialize, register, login, change password, API keys). Owns the
//! ids and timestamps of what it creates; the store only persists.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq as _;
use tokio::sync::OnceCell;

use crate::apikey;
use crate::config::{AuthConfig, AuthMode};
use crate::error::{AuthError, AuthResult};
use crate::lockout::LoginLimiter;
use crate::memory::MemoryAuthStore;
use crate::model::{Actor, ApiKey, AuthSource, Role, User, now};
use crate::password::{self, HashCost};
use crate::store::AuthStore;
use crate::token::TokenKeys;

/// The account service; cheap to share behind an `Arc`.
pub struct Auth {
    config: AuthConfig,
    store: Arc<dyn AuthStore>,
    tokens: TokenKeys,
    limiter: LoginLimiter,
    cost: HashCost,
    /// A hash verified against when the user does not exist, so that a login for an unknown
    /// name takes as long as one with a wrong password (no user enumeration by timing).
    dummy_hash: OnceCell<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish()
    }
}

impl Auth {
    /// The service over `store`. The session-token secret is `config.jwt_secret`, or a random
    /// one for this process (tokens then die with it; the binary persists one instead).
    pub fn new(config: AuthConfig, store: Arc<dyn AuthStore>) -> AuthResult<Self> {
        config.validate().map_err(AuthError::InvalidInput)?;
        let secret = match &config.jwt_secret {
            Some(s) => s.clone(),
            None => apikey::random_token(32),
        };
        let limiter = LoginLimiter::new(
            config.lockout_threshold,
            config.lockout_duration,
            config.lockout_max_clients,
        );
        Ok(Self {
            tokens: TokenKeys::new(secret.as_bytes()),
            config,
            store,
            limiter,
            cost: HashCost::default(),
            dummy_hash: OnceCell::new(),
        })
    }

    /// `mode: none` over an in-memory store.
    pub fn disabled() -> Self {
        let store: Arc<dyn AuthStore> = Arc::new(MemoryAuthStore::new());
        let config = AuthConfig::default();
        Self {
            tokens: TokenKeys::new(apikey::random_token(32).as_bytes()),
            limiter: LoginLimiter::new(
                config.lockout_threshold,
                config.lockout_duration,
                config.lockout_max_clients,
            ),
            config,
            store,
            cost: HashCost::default(),
            dummy_hash: OnceCell::new(),
        }
    }

    /// Sets the argon2id cost (tests use [`HashCost::minimal`]).
    pub fn with_hash_cost(mut self, cost: HashCost) -> Self {
        self.cost = cost;
        self
    }

    /// The configured mode.
    pub fn mode(&self) -> AuthMode {
        self.config.mode
    }

    /// The options.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.store
    }

    /// Session token lifetime.
    pub fn token_expiry(&self) -> Duration {
        self.config.token_expiry
    }

    // ---- authentication -------------------------------------------------------------------

    /// The actor of an `x-api-key`. Unknown, malformed and revoked keys are all
    /// `InvalidCredentials`.
    pub async fn authenticate_api_key(&self, key: &str) -> AuthResult<Actor> {
        let id = apikey::key_id(key.trim()).ok_or(AuthError::InvalidCredentials)?;
        let record = self
            .store
            .get_api_key(id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if !apikey::verify(key.trim(), &record.key_hash) || record.revoked_at.is_some() {
            return Err(AuthError::InvalidCredentials);
        }
        let role = match self.store.get_user(&record.user_id).await? {
            Some(u) => u.role,
            None => Role::User,
        };
        Ok(Actor {
            user_id: record.user_id,
            role,
            source: AuthSource::ApiKey,
        })
    }

    /// The actor (and user) of a session token: signature, expiry, user existence and token
    /// version are all checked.
    pub async fn authenticate_session(&self, token: &str) -> AuthResult<(Actor, User)> {
        let claims = self.tokens.verify(token.trim())?;
        let user = self
            .store
            .get_user(&claims.sub)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        if user.token_version != claims.ver {
            return Err(AuthError::TokenRevoked);
        }
        Ok((
            Actor {
                user_id: user.id.clone(),
                role: user.role,
                source: AuthSource::Session,
            },
            user,
        ))
    }

    /// The actor named by a reverse proxy. The shared secret must be present and equal
    /// (constant-time); the user header must be a plausible id.
    pub fn authenticate_trusted(
        &self,
        user: Option<&str>,
        secret: Option<&str>,
    ) -> AuthResult<Actor> {
        let expected = self
            .config
            .trusted_secret
            .as_deref()
            .ok_or(AuthError::NotAuthenticated)?;
        let given = secret.ok_or(AuthError::NotAuthenticated)?;
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(AuthError::InvalidCredentials);
        }
        let user = user.map(str::trim).ok_or(AuthError::NotAuthenticated)?;
        validate_user_id(user)?;
        Ok(Actor {
            user_id: user.to_owned(),
            role: Role::User,
            source: AuthSource::TrustedHeader,
        })
    }

    // ---- local accounts -------------------------------------------------------------------

    /// Whether no admin exists yet (`setup-status`).
    pub async fn needs_setup(&self) -> AuthResult<bool> {
        Ok(!self.store.has_admin().await?)
    }

    /// Creates the first admin; `AlreadyInitialized` once one exists.
    pub async fn initialize(&self, email: &str, password: &str) -> AuthResult<User> {
        let user = self.new_user(email, Some(password), Role::Admin).await?;
        self.store.create_first_admin(&user).await?;
        Ok(user)
    }

    /// Registers a user (when `allow_registration`).
    pub async fn register(&self, email: &str, password: &str) -> AuthResult<User> {
        if !self.config.allow_registration {
            return Err(AuthError::RegistrationDisabled);
        }
        let user = self.new_user(email, Some(password), Role::User).await?;
        self.store.create_user(&user).await?;
        Ok(user)
    }

    /// Logs in with email + password from `client` (its IP): lockout first, then the
    /// password. Returns the user and a fresh session token.
    pub async fn login(
        &self,
        client: &str,
        email: &str,
        password: &str,
    ) -> AuthResult<(User, String)> {
        self.limiter.check(client)?;
        let email = normalize_email(email);
        let user = self.store.get_user_by_email(&email).await?;
        let ok = match user.as_ref().and_then(|u| u.password_hash.as_deref()) {
            Some(h) => password::verify(password, h).await?,
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| password::hash("antler-dummy-password", self.cost))
                    .await?;
                let _ = password::verify(password, dummy).await?;
                false
            }
        };
        match (ok, user) {
            (true, Some(user)) => {
                self.limiter.record_success(client);
                let token = self.issue_token(&user)?;
                Ok((user, token))
            }
            _ => {
                self.limiter.record_failure(client);
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// A session token for `user` at its current token version.
    pub fn issue_token(&self, user: &User) -> AuthResult<String> {
        self.tokens
            .issue(&user.id, user.token_version, self.config.token_expiry)
    }

    /// Changes password (and optionally email); bumps the token version, which revokes every
    /// older session token. Returns the user and a fresh token.
    pub async fn change_password(
        &self,
        user_id: &str,
        current: &str,
        new_password: &str,
        new_email: Option<&str>,
    ) -> AuthResult<(User, String)> {
        let user = self
            .store
            .get_user(user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let ok = match user.password_hash.as_deref() {
            Some(h) => password::verify(current, h).await?,
            None => false,
        };
        if !ok {
            return Err(AuthError::InvalidCredentials);
        }
        password::check_policy(new_password)?;
        let email = match new_email {
            Some(e) => checked_email(e)?,
            None => user.email.clone(),
        };
        let hash = password::hash(new_password, self.cost).await?;
        let user = self
            .store
            .update_credentials(user_id, &email, &hash)
            .await?;
        let token = self.issue_token(&user)?;
        Ok((user, token))
    }

    /// Every user (admin routes, CLI).
    pub async fn list_users(&self) -> AuthResult<Vec<User>> {
        self.store.list_users().await
    }

    /// The user with id or login name `name`, created (role user, no password) if neither
    /// exists: what `antler keys create --user NAME` attaches a key to.
    pub async fn ensure_user(&self, name: &str) -> AuthResult<User> {
        let name = name.trim();
        validate_user_id(name)?;
        if let Some(u) = self.store.get_user(name).await? {
            return Ok(u);
        }
        if let Some(u) = self.store.get_user_by_email(&normalize_email(name)).await? {
            return Ok(u);
        }
        let user = User {
            id: name.to_owned(),
            email: normalize_email(name),
            password_hash: None,
            role: Role::User,
            token_version: 0,
            created_at: now(),
        };
        match self.store.create_user(&user).await {
            Ok(()) => Ok(user),
            // Lost a race with another creator: read theirs.
            Err(AuthError::EmailExists) => self
                .store
                .get_user(name)
                .await?
                .ok_or(AuthError::EmailExists),
            Err(e) => Err(e),
        }
    }

    /// Gives `user_id` the role `role` (the CLI's `keys create --admin`).
    pub async fn set_role(&self, user_id: &str, role: Role) -> AuthResult<User> {
        self.store.set_role(user_id, role).await?;
        self.store
            .get_user(user_id)
            .await?
            .ok_or(AuthError::NotFound)
    }

    // ---- API keys -------------------------------------------------------------------------

    /// Creates a key acting as `user_id` (a user record with that id is created when none
    /// exists, so listing users shows every key holder); returns the record and the key
    /// (shown once).
    pub async fn create_api_key(
        &self,
        user_id: &str,
        name: Option<&str>,
    ) -> AuthResult<(ApiKey, String)> {
        validate_user_id(user_id)?;
        if self.store.get_user(user_id).await?.is_none() {
            let user = User {
                id: user_id.to_owned(),
                email: normalize_email(user_id),
                password_hash: None,
                role: Role::User,
                token_version: 0,
                created_at: now(),
            };
            match self.store.create_user(&user).await {
                // Taken meanwhile, or the name is another user's login: the key still acts
                // as `user_id`.
                Ok(()) | Err(AuthError::EmailExists) => {}
                Err(e) => return Err(e),
            }
        }
        let new = apikey::generate();
        let record = ApiKey {
            id: new.id.clone(),
            user_id: user_id.to_owned(),
            name: name.map(str::to_owned),
            key_hash: apikey::hash(&new.key),
            created_at: now(),
            revoked_at: None,
        };
        self.store.create_api_key(&record).await?;
        Ok((record, new.key))
    }

    /// Keys of one user, or of everyone.
    pub async fn list_api_keys(&self, user_id: Option<&str>) -> AuthResult<Vec<ApiKey>> {
        self.store.list_api_keys(user_id).await
    }

    /// Revokes a key. With `owner`, a key of someone else is `NotFound` (never "forbidden").
    pub async fn revoke_api_key(&self, owner: Option<&str>, id: &str) -> AuthResult<()> {
        let key = self
            .store
            .get_api_key(id)
            .await?
            .ok_or(AuthError::NotFound)?;
        if owner.is_some_and(|o| o != key.user_id) || key.revoked_at.is_some() {
            return Err(AuthError::NotFound);
        }
        if self.store.revoke_api_key(id, now()).await? {
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    async fn new_user(&self, email: &str, password: Option<&str>, role: Role) -> AuthResult<User> {
        let email = checked_email(email)?;
        let password_hash = match password {
            Some(p) => {
                password::check_policy(p)?;
                Some(password::hash(p, self.cost).await?)
            }
            None => None,
        };
        Ok(User {
            id: uuid::Uuid::now_v7().to_string(),
            email,
            password_hash,
            role,
            token_version: 0,
            created_at: now(),
        })
    }
}

/// Login names compare case-insensitively: they are stored trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn checked_email(email: &str) -> AuthResult<String> {
    let e = normalize_email(email);
    if e.is_empty() || e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AuthError::InvalidInput("Invalid email".to_owned()));
    }
    Ok(e)
}

/// A user id usable as an owner: 1..=128 of `[A-Za-z0-9_.@+-]`.
pub fn validate_user_id(id: &str) -> AuthResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidInput(
            "Invalid user id: use 1-128 characters of A-Z a-z 0-9 _ . @ + -".to_owned(),
        ))
    }
}
