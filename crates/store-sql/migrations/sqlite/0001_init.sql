-- Antler schema, SQLite dialect.
-- Conventions (shared with the PostgreSQL / MySQL migrations to come):
--   * ids are TEXT; JSON is TEXT (JSONB / JSON on the other backends);
--   * timestamps are bound from Rust as fixed-width RFC 3339 UTC text with microseconds
--     ("2026-11-21T22:38:01.758930+00:00"), so they sort as text; no SQL-side time defaults;
--   * every user-data table has an `owner` column that every query filters on.

CREATE TABLE assistants (
    assistant_id TEXT PRIMARY KEY NOT NULL,
    owner        TEXT NOT NULL,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,
    context      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX ix_assistants_owner_created ON assistants (owner, created_at);
CREATE INDEX ix_assistants_graph ON assistants (graph_id, created_at);

CREATE TABLE assistant_versions (
    assistant_id TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    graph_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    config       TEXT NOT NULL,
    context      TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

CREATE TABLE threads (
    thread_id        TEXT PRIMARY KEY NOT NULL,
    owner            TEXT NOT NULL,
    status           TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    config           TEXT NOT NULL,
    -- JSON text of values / error / interrupts; SQL NULL = key absent on the wire
    state_values     TEXT,
    error            TEXT,
    interrupts       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    state_updated_at TEXT NOT NULL
);
CREATE INDEX ix_threads_owner_created ON threads (owner, created_at);
CREATE INDEX ix_threads_owner_updated ON threads (owner, updated_at);
CREATE INDEX ix_threads_owner_status_updated ON threads (owner, status, updated_at);
CREATE INDEX ix_threads_owner_graph ON threads (owner, json_extract(metadata, '$.graph_id'));
CREATE INDEX ix_threads_owner_assistant ON threads (owner, json_extract(metadata, '$.assistant_id'));
CREATE INDEX ix_threads_owner_user ON threads (owner, json_extract(metadata, '$.user_id'));

CREATE TABLE runs (
    run_id              TEXT PRIMARY KEY NOT NULL,
    thread_id           TEXT NOT NULL,
    assistant_id        TEXT NOT NULL,
    owner               TEXT NOT NULL,
    status              TEXT NOT NULL,
    multitask_strategy  TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    kwargs              TEXT NOT NULL,
    model_name          TEXT,
    error               TEXT,
    total_input_tokens  INTEGER NOT NULL DEFAULT 0,
    total_output_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens        INTEGER NOT NULL DEFAULT 0,
    llm_call_count      INTEGER NOT NULL DEFAULT 0,
    lead_agent_tokens   INTEGER NOT NULL DEFAULT 0,
    subagent_tokens     INTEGER NOT NULL DEFAULT 0,
    middleware_tokens   INTEGER NOT NULL DEFAULT 0,
    message_count       INTEGER NOT NULL DEFAULT 0,
    last_ai_message     TEXT,
    first_human_message TEXT,
    temporary           INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    -- run ownership / lease (multi-process recovery)
    worker_id           TEXT,
    lease_expires_at    TEXT
);
CREATE INDEX ix_runs_thread_created ON runs (thread_id, created_at);
CREATE INDEX ix_runs_thread_status ON runs (thread_id, status, created_at);
CREATE INDEX ix_runs_status_created ON runs (status, created_at);
CREATE INDEX ix_runs_owner_thread ON runs (owner, thread_id, created_at);
CREATE INDEX ix_runs_lease ON runs (lease_expires_at);

CREATE TABLE run_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    category   TEXT NOT NULL,
    content    TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CONSTRAINT uq_run_events_thread_seq UNIQUE (thread_id, seq)
);
CREATE INDEX ix_run_events_run ON run_events (thread_id, run_id, seq);
CREATE INDEX ix_run_events_category ON run_events (thread_id, category, seq);

-- last seq handed out per thread: seqs never repeat, even after deletes
CREATE TABLE run_event_seqs (
    thread_id TEXT PRIMARY KEY NOT NULL,
    last_seq  INTEGER NOT NULL
);

CREATE TABLE feedback (
    feedback_id TEXT PRIMARY KEY NOT NULL,
    run_id      TEXT NOT NULL,
    thread_id   TEXT NOT NULL,
    owner       TEXT NOT NULL,
    message_id  TEXT,
    rating      INTEGER NOT NULL,
    comment     TEXT,
    metadata    TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX ix_feedback_run ON feedback (thread_id, run_id, owner);

CREATE TABLE store_items (
    owner      TEXT NOT NULL,
    -- labels joined with '.' (labels never contain '.')
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (owner, namespace, key)
);
CREATE INDEX ix_store_items_updated ON store_items (owner, updated_at);

-- LangGraph's checkpoint layout: checkpoints reference channel versions; each channel value
-- is stored once per (thread, ns, channel, version), so unchanged channels are not rewritten.
CREATE TABLE checkpoints (
    thread_id            TEXT NOT NULL,
    checkpoint_ns        TEXT NOT NULL,
    checkpoint_id        TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    run_id               TEXT,
    checkpoint           TEXT NOT NULL,
    metadata             TEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX ix_checkpoints_run ON checkpoints (thread_id, run_id);

CREATE TABLE checkpoint_blobs (
    thread_id     TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    channel       TEXT NOT NULL,
    version       INTEGER NOT NULL,
    -- NULL = empty channel
    value         TEXT,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);

CREATE TABLE checkpoint_writes (
    thread_id     TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
