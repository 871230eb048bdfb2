-- Antler accounts in the deployment's shared PostgreSQL database (every replica sees the same
-- users, API keys and session secret). Applied by the auth crate's own migrator, recorded in
-- `_antler_auth_migrations` so it never meets the stores' migrator.
CREATE TABLE IF NOT EXISTS auth_users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    system_role   TEXT NOT NULL DEFAULT 'user',
    token_version BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS auth_api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    name        TEXT,
    key_hash    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE INDEX IF NOT EXISTS idx_auth_api_keys_user ON auth_api_keys (user_id, created_at);

-- Deployment-wide settings: the generated session-token secret, and the row that serializes
-- the creation of the first admin.
CREATE TABLE IF NOT EXISTS auth_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

INSERT INTO auth_settings (name, value) VALUES ('initialized_lock', '') ON CONFLICT DO NOTHING;
