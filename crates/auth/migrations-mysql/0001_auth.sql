-- Antler accounts in the deployment's shared MySQL / MariaDB database (every replica sees the
-- same users, API keys and session secret). Applied by the auth crate's own migrator, recorded
-- in `_antler_auth_migrations` so it never meets the stores' migrator.
CREATE TABLE IF NOT EXISTS auth_users (
    id            VARCHAR(191) NOT NULL PRIMARY KEY,
    email         VARCHAR(320) NOT NULL,
    password_hash TEXT NULL,
    system_role   VARCHAR(32) NOT NULL DEFAULT 'user',
    token_version BIGINT NOT NULL DEFAULT 0,
    created_at    VARCHAR(40) NOT NULL,
    UNIQUE KEY uq_auth_users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS auth_api_keys (
    id          VARCHAR(191) NOT NULL PRIMARY KEY,
    user_id     VARCHAR(191) NOT NULL,
    name        TEXT NULL,
    key_hash    VARCHAR(128) NOT NULL,
    created_at  VARCHAR(40) NOT NULL,
    revoked_at  VARCHAR(40) NULL,
    KEY idx_auth_api_keys_user (user_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Deployment-wide settings: the generated session-token secret, and the row that serializes
-- the creation of the first admin.
CREATE TABLE IF NOT EXISTS auth_settings (
    name  VARCHAR(64) NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO auth_settings (name, value) VALUES ('initialized_lock', '');
