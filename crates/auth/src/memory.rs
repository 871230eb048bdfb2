//! In-memory [`AuthStore`]: for tests and `database.backend: memory`. One mutex over both
//! tables (short critical sections, never across an await) keeps `create_first_admin` atomic.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::error::{AuthError, AuthResult};
use crate::model::{ApiKey, Role, User};
use crate::store::AuthStore;

#[derive(Default)]
struct Tables {
    users: Vec<User>,
    keys: Vec<ApiKey>,
}

/// Users and keys in process memory.
#[derive(Default)]
pub struct MemoryAuthStore {
    tables: Mutex<Tables>,
}

impl MemoryAuthStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn insert_user(t: &mut Tables, user: &User) -> AuthResult<()> {
    if t.users
        .iter()
        .any(|u| u.id == user.id || u.email == user.email)
    {
        return Err(AuthError::EmailExists);
    }
    t.users.push(user.clone());
    Ok(())
}

#[async_trait]
impl AuthStore for MemoryAuthStore {
    async fn create_user(&self, user: &User) -> AuthResult<()> {
        insert_user(&mut self.tables.lock(), user)
    }

    async fn create_first_admin(&self, user: &User) -> AuthResult<()> {
        let mut t = self.tables.lock();
        if t.users.iter().any(|u| u.role == Role::Admin) {
            return Err(AuthError::AlreadyInitialized);
        }
        insert_user(&mut t, user)
    }

    async fn get_user(&self, id: &str) -> AuthResult<Option<User>> {
        Ok(self
            .tables
            .lock()
            .users
            .iter()
            .find(|u| u.id == id)
            .cloned())
    }

    async fn get_user_by_email(&self, email: &str) -> AuthResult<Option<User>> {
        Ok(self
            .tables
            .lock()
            .users
            .iter()
            .find(|u| u.email == email)
            .cloned())
    }

    async fn list_users(&self) -> AuthResult<Vec<User>> {
        Ok(self.tables.lock().users.clone())
    }

    async fn has_admin(&self) -> AuthResult<bool> {
        Ok(self
            .tables
            .lock()
            .users
            .iter()
            .any(|u| u.role == Role::Admin))
    }

    async fn update_credentials(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
    ) -> AuthResult<User> {
        let mut t = self.tables.lock();
        if t.users.iter().any(|u| u.email == email && u.id != id) {
            return Err(AuthError::EmailExists);
        }
        let user = t
            .users
            .iter_mut()
            .find(|u| u.id == id)
            .ok_or(AuthError::NotFound)?;
        user.email = email.to_owned();
        user.password_hash = Some(password_hash.to_owned());
        user.token_version += 1;
        Ok(user.clone())
    }

    async fn set_role(&self, id: &str, role: Role) -> AuthResult<()> {
        let mut t = self.tables.lock();
        let user = t
            .users
            .iter_mut()
            .find(|u| u.id == id)
            .ok_or(AuthError::NotFound)?;
        user.role = role;
        Ok(())
    }

    async fn create_api_key(&self, key: &ApiKey) -> AuthResult<()> {
        let mut t = self.tables.lock();
        if t.keys.iter().any(|k| k.id == key.id) {
            return Err(AuthError::InvalidInput("duplicate API key id".to_owned()));
        }
        t.keys.push(key.clone());
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> AuthResult<Option<ApiKey>> {
        Ok(self.tables.lock().keys.iter().find(|k| k.id == id).cloned())
    }

    async fn list_api_keys(&self, user_id: Option<&str>) -> AuthResult<Vec<ApiKey>> {
        Ok(self
            .tables
            .lock()
            .keys
            .iter()
            .filter(|k| user_id.is_none_or(|u| k.user_id == u))
            .cloned()
            .collect())
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> AuthResult<bool> {
        let mut t = self.tables.lock();
        match t.keys.iter_mut().find(|k| k.id == id) {
            Some(k) if k.revoked_at.is_none() => {
                k.revoked_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
