//! One conformance suite for every `AuthStore` implementation, plus the service's account
//! flows over each of them.

use std::sync::Arc;
use std::time::Duration;

use antler_auth::password::HashCost;
use antler_auth::{
    ApiKey, Auth, AuthConfig, AuthError, AuthMode, AuthStore, MemoryAuthStore, Role,
    SqliteAuthStore, User,
};
use chrono::Utc;

fn user(id: &str, email: &str, role: Role) -> User {
    User {
        id: id.into(),
        email: email.into(),
        password_hash: Some("$argon2id$fake".into()),
        role,
        token_version: 0,
        created_at: Utc::now(),
    }
}

async fn conformance(store: Arc<dyn AuthStore>) {
    assert!(!store.has_admin().await.unwrap());
    store
        .create_user(&user("u1", "a@x", Role::User))
        .await
        .unwrap();
    assert_eq!(
        store.create_user(&user("u2", "a@x", Role::User)).await,
        Err(AuthError::EmailExists)
    );
    assert_eq!(
        store.create_user(&user("u1", "b@x", Role::User)).await,
        Err(AuthError::EmailExists)
    );
    assert!(!store.has_admin().await.unwrap());
    store
        .create_first_admin(&user("admin", "root@x", Role::Admin))
        .await
        .unwrap();
    assert!(store.has_admin().await.unwrap());
    assert_eq!(
        store
            .create_first_admin(&user("admin2", "root2@x", Role::Admin))
            .await,
        Err(AuthError::AlreadyInitialized)
    );
    let got = store.get_user("u1").await.unwrap().unwrap();
    assert_eq!((got.email.as_str(), got.role), ("a@x", Role::User));
    assert_eq!(
        store.get_user_by_email("root@x").await.unwrap().unwrap().id,
        "admin"
    );
    assert!(store.get_user("nope").await.unwrap().is_none());
    assert_eq!(store.list_users().await.unwrap().len(), 2);

    let updated = store
        .update_credentials("u1", "new@x", "$h2")
        .await
        .unwrap();
    assert_eq!(updated.token_version, 1);
    assert_eq!(updated.email, "new@x");
    assert_eq!(updated.password_hash.as_deref(), Some("$h2"));
    assert_eq!(
        store.update_credentials("u1", "root@x", "$h3").await,
        Err(AuthError::EmailExists)
    );
    assert_eq!(
        store.update_credentials("ghost", "g@x", "$h").await,
        Err(AuthError::NotFound)
    );

    store.set_role("u1", Role::Admin).await.unwrap();
    assert_eq!(
        store.get_user("u1").await.unwrap().unwrap().role,
        Role::Admin
    );
    store.set_role("u1", Role::User).await.unwrap();
    assert_eq!(
        store.set_role("ghost", Role::Admin).await,
        Err(AuthError::NotFound)
    );

    let key = ApiKey {
        id: "0123456789abcdef".into(),
        user_id: "u1".into(),
        name: Some("ci".into()),
        key_hash: "ab".repeat(32),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store.create_api_key(&key).await.unwrap();
    let other = ApiKey {
        id: "fedcba9876543210".into(),
        user_id: "admin".into(),
        ..key.clone()
    };
    store.create_api_key(&other).await.unwrap();
    assert!(store.create_api_key(&key).await.is_err());
    let got = store.get_api_key(&key.id).await.unwrap().unwrap();
    assert_eq!(got.key_hash, key.key_hash);
    assert_eq!(got.name.as_deref(), Some("ci"));
    assert_eq!(store.list_api_keys(Some("u1")).await.unwrap().len(), 1);
    assert_eq!(store.list_api_keys(None).await.unwrap().len(), 2);
    assert!(store.revoke_api_key(&key.id, Utc::now()).await.unwrap());
    assert!(!store.revoke_api_key(&key.id, Utc::now()).await.unwrap());
    assert!(!store.revoke_api_key("missing", Utc::now()).await.unwrap());
    assert!(
        store
            .get_api_key(&key.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(Arc::new(MemoryAuthStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    conformance(Arc::new(SqliteAuthStore::open_in_memory().await.unwrap())).await;
}

#[tokio::test]
async fn sqlite_store_persists_in_auth_db() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SqliteAuthStore::open(dir.path()).await.unwrap();
        s.create_user(&user("u1", "a@x", Role::User)).await.unwrap();
    }
    assert!(dir.path().join("auth.db").exists());
    let s = SqliteAuthStore::open(dir.path()).await.unwrap();
    assert!(s.get_user("u1").await.unwrap().is_some());
}

fn service(store: Arc<dyn AuthStore>, registration: bool) -> Auth {
    let cfg = AuthConfig {
        mode: AuthMode::Local,
        jwt_secret: Some("a test secret of enough length".into()),
        allow_registration: registration,
        ..AuthConfig::default()
    };
    Auth::new(cfg, store)
        .unwrap()
        .with_hash_cost(HashCost::minimal())
}

async fn account_flows(store: Arc<dyn AuthStore>) {
    let auth = service(store, true);
    assert!(auth.needs_setup().await.unwrap());
    let admin = auth
        .initialize("Admin@Example.com", "a long admin password")
        .await
        .unwrap();
    assert_eq!(admin.email, "admin@example.com");
    assert_eq!(admin.role, Role::Admin);
    assert!(!auth.needs_setup().await.unwrap());
    assert_eq!(
        auth.initialize("x@example.com", "a long admin password")
            .await,
        Err(AuthError::AlreadyInitialized)
    );
    assert!(matches!(
        auth.register("bob@example.com", "short").await,
        Err(AuthError::WeakPassword(_))
    ));
    let bob = auth
        .register("bob@example.com", "bobs long password")
        .await
        .unwrap();
    assert_eq!(
        auth.register("BOB@example.com", "bobs long password").await,
        Err(AuthError::EmailExists)
    );

    let (_, token) = auth
        .login("1.1.1.1", "bob@example.com", "bobs long password")
        .await
        .unwrap();
    let (actor, _) = auth.authenticate_session(&token).await.unwrap();
    assert_eq!(actor.owner(), bob.id);
    assert!(!actor.is_admin());
    assert_eq!(
        auth.login("1.1.1.1", "bob@example.com", "wrong password!")
            .await
            .map(|_| ()),
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        auth.login("1.1.1.1", "nobody@example.com", "whatever pw")
            .await
            .map(|_| ()),
        Err(AuthError::InvalidCredentials)
    );

    let (_, fresh) = auth
        .change_password(&bob.id, "bobs long password", "bobs newer password", None)
        .await
        .unwrap();
    assert_eq!(
        auth.authenticate_session(&token).await.map(|_| ()),
        Err(AuthError::TokenRevoked)
    );
    assert!(auth.authenticate_session(&fresh).await.is_ok());
    assert_eq!(
        auth.change_password(&bob.id, "bobs long password", "x but long enough", None)
            .await
            .map(|_| ()),
        Err(AuthError::InvalidCredentials)
    );

    let (rec, key) = auth.create_api_key(&bob.id, Some("sdk")).await.unwrap();
    assert_eq!(
        auth.authenticate_api_key(&key).await.unwrap().owner(),
        bob.id
    );
    assert_eq!(
        auth.authenticate_api_key(&format!("{key}x")).await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        auth.revoke_api_key(Some(&admin.id), &rec.id).await,
        Err(AuthError::NotFound)
    );
    auth.revoke_api_key(Some(&bob.id), &rec.id).await.unwrap();
    assert_eq!(
        auth.authenticate_api_key(&key).await,
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        auth.revoke_api_key(None, &rec.id).await,
        Err(AuthError::NotFound)
    );

    let carol = auth.ensure_user("carol").await.unwrap();
    assert_eq!(auth.ensure_user("carol").await.unwrap().id, carol.id);
    assert!(auth.ensure_user("bad name!").await.is_err());

    let closed = service(auth.store().clone(), false);
    assert_eq!(
        closed
            .register("dan@example.com", "dans long password")
            .await,
        Err(AuthError::RegistrationDisabled)
    );
}

#[tokio::test]
async fn account_flows_memory() {
    account_flows(Arc::new(MemoryAuthStore::new())).await;
}

#[tokio::test]
async fn account_flows_sqlite() {
    account_flows(Arc::new(SqliteAuthStore::open_in_memory().await.unwrap())).await;
}

#[tokio::test]
async fn lockout_after_five_failures_even_with_the_right_password() {
    let auth = service(Arc::new(MemoryAuthStore::new()), true);
    auth.register("eve@example.com", "eves long password")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            auth.login("9.9.9.9", "eve@example.com", "bad password")
                .await
                .map(|_| ()),
            Err(AuthError::InvalidCredentials)
        );
    }
    assert!(matches!(
        auth.login("9.9.9.9", "eve@example.com", "eves long password").await,
        Err(AuthError::LockedOut { retry_after }) if retry_after <= 300 && retry_after > 290
    ));
    assert!(
        auth.login("8.8.8.8", "eve@example.com", "eves long password")
            .await
            .is_ok()
    );
}

#[test]
fn trusted_header_needs_the_secret() {
    let cfg = AuthConfig {
        mode: AuthMode::TrustedHeader,
        trusted_secret: Some("proxy secret 0123456789".into()),
        token_expiry: Duration::from_secs(86_400),
        ..AuthConfig::default()
    };
    let auth = Auth::new(cfg, Arc::new(MemoryAuthStore::new())).unwrap();
    assert_eq!(
        auth.authenticate_trusted(Some("alice"), Some("proxy secret 0123456789"))
            .unwrap()
            .owner(),
        "alice"
    );
    assert_eq!(
        auth.authenticate_trusted(Some("alice"), None),
        Err(AuthError::NotAuthenticated)
    );
    assert_eq!(
        auth.authenticate_trusted(Some("alice"), Some("wrong")),
        Err(AuthError::InvalidCredentials)
    );
    assert_eq!(
        auth.authenticate_trusted(None, Some("proxy secret 0123456789")),
        Err(AuthError::NotAuthenticated)
    );
    assert!(
        auth.authenticate_trusted(Some("a b"), Some("proxy secret 0123456789"))
            .is_err()
    );
}

// ------------------------------------------------------------- shared databases

/// A database of its own on the server at `base` (PostgreSQL or MySQL URL ending in
/// `/<db>`), dropped when the guard goes; `None` (skip) when the server is unreachable outside
/// CI (with `CI=true` that is a failure).
#[cfg(any(feature = "postgres", feature = "mysql"))]
struct PrivateDb {
    admin: String,
    name: String,
    url: String,
    postgres: bool,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl PrivateDb {
    async fn create(env: &str, default: &str) -> Option<Self> {
        use sqlx::Connection as _;
        let base = std::env::var(env)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| default.to_string());
        let postgres = base.starts_with("postgres");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "antler_auth_t_{}_{}",
            std::process::id(),
            stamp % 1_000_000_000
        );
        let url = format!(
            "{}/{name}",
            base.rsplit_once('/').map_or(base.as_str(), |(b, _)| b)
        );
        let made = if postgres {
            #[cfg(feature = "postgres")]
            {
                match sqlx::PgConnection::connect(&base).await {
                    Ok(mut c) => {
                        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                            .execute(&mut c)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            #[cfg(not(feature = "postgres"))]
            {
                Err("postgres feature off".to_string())
            }
        } else {
            #[cfg(feature = "mysql")]
            {
                match sqlx::MySqlConnection::connect(&base).await {
                    Ok(mut c) => {
                        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                            .execute(&mut c)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            #[cfg(not(feature = "mysql"))]
            {
                Err("mysql feature off".to_string())
            }
        };
        if let Err(e) = made {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{env} ({base}) unusable and CI=true: {e}"
            );
            eprintln!("NOTICE: {base} unusable ({e}); skipping");
            return None;
        }
        Some(Self {
            admin: base,
            name,
            url,
            postgres,
        })
    }

    async fn drop_db(self) {
        use sqlx::Connection as _;
        let sql = if self.postgres {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
        } else {
            format!("DROP DATABASE IF EXISTS {}", self.name)
        };
        #[cfg(feature = "postgres")]
        if self.postgres
            && let Ok(mut c) = sqlx::PgConnection::connect(&self.admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut c)
                .await;
        }
        #[cfg(feature = "mysql")]
        if !self.postgres
            && let Ok(mut c) = sqlx::MySqlConnection::connect(&self.admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
        }
    }
}

/// Conformance, the account flows, and what makes the store shared: a second store on the same
/// database (another replica) sees the accounts and the same session secret, and of two
/// replicas initializing at once exactly one creates the first admin.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn shared_store_suite<S, F, Fut>(db: PrivateDb, connect: F)
where
    S: AuthStore + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = antler_auth::AuthResult<S>>,
{
    conformance(Arc::new(connect(db.url.clone()).await.unwrap())).await;
    db.drop_db().await;
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn shared_replicas_suite<S, F, Fut>(db: PrivateDb, connect: F)
where
    S: AuthStore + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = antler_auth::AuthResult<S>>,
{
    let a: Arc<dyn AuthStore> = Arc::new(connect(db.url.clone()).await.unwrap());
    // migrations are idempotent: a second replica connects to the migrated database
    let b: Arc<dyn AuthStore> = Arc::new(connect(db.url.clone()).await.unwrap());
    account_flows(a.clone()).await;
    let users = b.list_users().await.unwrap();
    assert!(!users.is_empty(), "replica b sees replica a's accounts");
    // one session secret for the deployment: the first stored wins
    let sa = a
        .shared_secret("jwt_secret", "secret-from-a")
        .await
        .unwrap();
    let sb = b
        .shared_secret("jwt_secret", "secret-from-b")
        .await
        .unwrap();
    assert_eq!(sa.as_deref(), Some("secret-from-a"));
    assert_eq!(sb, sa);
    db.drop_db().await;
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn first_admin_race<S, F, Fut>(db: PrivateDb, connect: F)
where
    S: AuthStore + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = antler_auth::AuthResult<S>>,
{
    let a: Arc<dyn AuthStore> = Arc::new(connect(db.url.clone()).await.unwrap());
    let b: Arc<dyn AuthStore> = Arc::new(connect(db.url.clone()).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.create_first_admin(&user(
                &format!("admin{i}"),
                &format!("admin{i}@x"),
                Role::Admin,
            ))
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(AuthError::AlreadyInitialized) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(ok, 1, "exactly one first admin");
    let admins = a
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.role == Role::Admin)
        .count();
    assert_eq!(admins, 1);
    db.drop_db().await;
}

#[cfg(feature = "postgres")]
const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
#[cfg(feature = "mysql")]
const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms_and_is_shared() {
    use antler_auth::PgAuthStore;
    let connect = |u: String| async move { PgAuthStore::connect(&u).await };
    if let Some(db) = PrivateDb::create("ANTLER_TEST_POSTGRES_URL", PG_DEFAULT).await {
        shared_store_suite(db, connect).await;
    }
    if let Some(db) = PrivateDb::create("ANTLER_TEST_POSTGRES_URL", PG_DEFAULT).await {
        shared_replicas_suite(db, connect).await;
    }
    if let Some(db) = PrivateDb::create("ANTLER_TEST_POSTGRES_URL", PG_DEFAULT).await {
        first_admin_race(db, connect).await;
    }
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_conforms_and_is_shared() {
    use antler_auth::MysqlAuthStore;
    let connect = |u: String| async move { MysqlAuthStore::connect(&u).await };
    if let Some(db) = PrivateDb::create("ANTLER_TEST_MYSQL_URL", MYSQL_DEFAULT).await {
        shared_store_suite(db, connect).await;
    }
    if let Some(db) = PrivateDb::create("ANTLER_TEST_MYSQL_URL", MYSQL_DEFAULT).await {
        shared_replicas_suite(db, connect).await;
    }
    if let Some(db) = PrivateDb::create("ANTLER_TEST_MYSQL_URL", MYSQL_DEFAULT).await {
        first_admin_race(db, connect).await;
    }
}
