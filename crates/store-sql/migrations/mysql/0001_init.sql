-- Antler schema, MySQL / MariaDB dialect (MariaDB 10.11 tested; MySQL 8 compatible).
-- Same tables and columns as the SQLite schema (migrations/sqlite), natively typed:
--   * InnoDB, utf8mb4 with the binary collation: ids, keys and names compare and sort
--     byte-wise, like SQLite's default collation;
--   * ids/keys that are indexed are VARCHAR (255, shorter inside wide composite keys so an
--     index stays within InnoDB's 3072-byte limit); too-long values are refused, not cut;
--   * JSON is stored as LONGTEXT holding serde_json's text (MariaDB's JSON type is LONGTEXT
--     anyway; MySQL 8's JSON type would reorder object keys) and queried with JSON_EXTRACT;
--   * timestamps are DATETIME(6) holding UTC, bound from Rust (microseconds, no SQL-side
--     time defaults);
--   * every user-data table has an `owner` column that every query filters on.

CREATE TABLE assistants (
    assistant_id VARCHAR(255) NOT NULL PRIMARY KEY,
    owner        VARCHAR(255) NOT NULL,
    graph_id     VARCHAR(255) NOT NULL,
    name         VARCHAR(1024) NOT NULL,
    description  TEXT,
    config       LONGTEXT NOT NULL,
    context      LONGTEXT NOT NULL,
    metadata     LONGTEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   DATETIME(6) NOT NULL,
    updated_at   DATETIME(6) NOT NULL,
    KEY ix_assistants_owner_created (owner, created_at),
    KEY ix_assistants_graph (graph_id, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE assistant_versions (
    assistant_id VARCHAR(255) NOT NULL,
    version      BIGINT NOT NULL,
    graph_id     VARCHAR(255) NOT NULL,
    name         VARCHAR(1024) NOT NULL,
    description  TEXT,
    config       LONGTEXT NOT NULL,
    context      LONGTEXT NOT NULL,
    metadata     LONGTEXT NOT NULL,
    created_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (assistant_id, version),
    CONSTRAINT fk_assistant_versions_assistant FOREIGN KEY (assistant_id)
        REFERENCES assistants (assistant_id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE threads (
    thread_id        VARCHAR(255) NOT NULL PRIMARY KEY,
    owner            VARCHAR(255) NOT NULL,
    status           VARCHAR(32) NOT NULL,
    metadata         LONGTEXT NOT NULL,
    config           LONGTEXT NOT NULL,
    -- JSON text of values / error / interrupts; SQL NULL = key absent on the wire
    state_values     LONGTEXT,
    error            LONGTEXT,
    interrupts       LONGTEXT,
    created_at       DATETIME(6) NOT NULL,
    updated_at       DATETIME(6) NOT NULL,
    state_updated_at DATETIME(6) NOT NULL,
    -- the metadata keys the API filters on most, as indexable generated columns (a prefix of
    -- the unquoted value: they only narrow a search, the JSON comparison decides)
    md_graph_id      VARCHAR(128) AS (LEFT(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.graph_id')), 128)) VIRTUAL,
    md_assistant_id  VARCHAR(128) AS (LEFT(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.assistant_id')), 128)) VIRTUAL,
    md_user_id       VARCHAR(128) AS (LEFT(JSON_UNQUOTE(JSON_EXTRACT(metadata, '$.user_id')), 128)) VIRTUAL,
    KEY ix_threads_owner_created (owner, created_at),
    KEY ix_threads_owner_updated (owner, updated_at),
    KEY ix_threads_owner_status_updated (owner, status, updated_at),
    KEY ix_threads_owner_graph (owner, md_graph_id),
    KEY ix_threads_owner_assistant (owner, md_assistant_id),
    KEY ix_threads_owner_user (owner, md_user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE runs (
    run_id              VARCHAR(255) NOT NULL PRIMARY KEY,
    thread_id           VARCHAR(255) NOT NULL,
    assistant_id        VARCHAR(255) NOT NULL,
    owner               VARCHAR(255) NOT NULL,
    status              VARCHAR(32) NOT NULL,
    multitask_strategy  VARCHAR(64) NOT NULL,
    metadata            LONGTEXT NOT NULL,
    kwargs              LONGTEXT NOT NULL,
    model_name          TEXT,
    error               LONGTEXT,
    total_input_tokens  BIGINT NOT NULL DEFAULT 0,
    total_output_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens        BIGINT NOT NULL DEFAULT 0,
    llm_call_count      BIGINT NOT NULL DEFAULT 0,
    lead_agent_tokens   BIGINT NOT NULL DEFAULT 0,
    subagent_tokens     BIGINT NOT NULL DEFAULT 0,
    middleware_tokens   BIGINT NOT NULL DEFAULT 0,
    message_count       BIGINT NOT NULL DEFAULT 0,
    last_ai_message     LONGTEXT,
    first_human_message LONGTEXT,
    temporary           TINYINT NOT NULL DEFAULT 0,
    created_at          DATETIME(6) NOT NULL,
    updated_at          DATETIME(6) NOT NULL,
    started_at          DATETIME(6),
    finished_at         DATETIME(6),
    -- run ownership / lease (multi-process recovery)
    worker_id           VARCHAR(255),
    lease_expires_at    DATETIME(6),
    -- One running run per thread, across processes: the database refuses a second one.
    running_thread      VARCHAR(255) AS (IF(status = 'running', thread_id, NULL)) STORED,
    UNIQUE KEY ux_runs_one_running (running_thread),
    KEY ix_runs_thread_created (thread_id, created_at),
    KEY ix_runs_thread_status (thread_id, status, created_at),
    KEY ix_runs_status_created (status, created_at),
    KEY ix_runs_owner_thread (owner, thread_id, created_at),
    KEY ix_runs_lease (lease_expires_at),
    KEY ix_runs_worker (worker_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE run_events (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    thread_id  VARCHAR(255) NOT NULL,
    run_id     VARCHAR(255) NOT NULL,
    owner      VARCHAR(255) NOT NULL,
    seq        BIGINT NOT NULL,
    event_type VARCHAR(255) NOT NULL,
    category   VARCHAR(255) NOT NULL,
    content    LONGTEXT NOT NULL,
    metadata   LONGTEXT NOT NULL,
    created_at DATETIME(6) NOT NULL,
    UNIQUE KEY uq_run_events_thread_seq (thread_id, seq),
    KEY ix_run_events_run (thread_id, run_id, seq),
    KEY ix_run_events_category (thread_id, category, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- last seq handed out per thread: seqs never repeat, even after deletes
CREATE TABLE run_event_seqs (
    thread_id VARCHAR(255) NOT NULL PRIMARY KEY,
    last_seq  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE feedback (
    feedback_id VARCHAR(255) NOT NULL PRIMARY KEY,
    run_id      VARCHAR(255) NOT NULL,
    thread_id   VARCHAR(255) NOT NULL,
    owner       VARCHAR(255) NOT NULL,
    message_id  TEXT,
    rating      BIGINT NOT NULL,
    comment     LONGTEXT,
    metadata    LONGTEXT NOT NULL,
    created_at  DATETIME(6) NOT NULL,
    KEY ix_feedback_run (thread_id, run_id, owner)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE store_items (
    owner      VARCHAR(255) NOT NULL,
    -- labels joined with '.' (labels never contain '.')
    namespace  VARCHAR(255) NOT NULL,
    `key`      VARCHAR(255) NOT NULL,
    value      LONGTEXT NOT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    PRIMARY KEY (owner, namespace, `key`),
    KEY ix_store_items_updated (owner, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Checkpoints, as in the SQLite schema (see its 0002 migration): a checkpoint's head maps
-- every channel to the id of the immutable blob holding its value; list channels may be
-- stored as deltas (base_id + depth).
CREATE TABLE checkpoints (
    thread_id            VARCHAR(255) NOT NULL,
    checkpoint_ns        VARCHAR(255) NOT NULL,
    checkpoint_id        VARCHAR(64) NOT NULL,
    parent_checkpoint_id VARCHAR(64),
    run_id               VARCHAR(255),
    checkpoint           LONGTEXT NOT NULL,
    metadata             LONGTEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id),
    KEY ix_checkpoints_run (thread_id, run_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE checkpoint_blobs (
    thread_id     VARCHAR(255) NOT NULL,
    checkpoint_ns VARCHAR(255) NOT NULL,
    blob_id       BIGINT NOT NULL,
    -- insertion order (SQLite's rowid)
    seq           BIGINT NOT NULL AUTO_INCREMENT,
    channel       VARCHAR(255) NOT NULL,
    version       BIGINT NOT NULL,
    base_id       BIGINT,
    depth         BIGINT NOT NULL,
    -- NULL = empty channel
    value         LONGTEXT,
    PRIMARY KEY (thread_id, checkpoint_ns, blob_id),
    UNIQUE KEY ux_checkpoint_blobs_seq (seq),
    KEY ix_checkpoint_blobs_channel (thread_id, checkpoint_ns, channel, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE checkpoint_writes (
    thread_id     VARCHAR(255) NOT NULL,
    checkpoint_ns VARCHAR(255) NOT NULL,
    checkpoint_id VARCHAR(64) NOT NULL,
    task_id       VARCHAR(128) NOT NULL,
    idx           BIGINT NOT NULL,
    -- insertion order (SQLite's rowid); kept by upserts
    seq           BIGINT NOT NULL AUTO_INCREMENT,
    channel       VARCHAR(255) NOT NULL,
    value         LONGTEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx),
    UNIQUE KEY ux_checkpoint_writes_seq (seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
