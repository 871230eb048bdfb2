-- Antler schema, PostgreSQL dialect: the tables and columns of the SQLite schema
-- (migrations/sqlite), in native types.
--   * ids, keys, statuses and names are TEXT COLLATE "C": they sort and compare byte-wise
--     whatever the database's collation, like the in-memory and SQLite stores (checkpoint ids
--     sort by time as text; store namespaces are scanned as the text range ['a.b.', 'a.b/'));
--   * timestamps are TIMESTAMPTZ (microsecond precision: exact round trips of the
--     microsecond-truncated times the services hand in); no SQL-side time defaults;
--   * JSON is JSONB, except checkpoint channel values and pending writes: TEXT holding the
--     serializer's output, an opaque payload never queried by SQL, kept byte for byte
--     (object key order, number spelling, "\u0000" escapes that JSONB rejects);
--   * every user-data table has an `owner` column that every query filters on.

CREATE TABLE assistants (
    assistant_id TEXT COLLATE "C" PRIMARY KEY,
    owner        TEXT COLLATE "C" NOT NULL,
    graph_id     TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    description  TEXT,
    config       JSONB NOT NULL,
    context      JSONB NOT NULL,
    metadata     JSONB NOT NULL,
    version      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_assistants_owner_created ON assistants (owner, created_at);
CREATE INDEX ix_assistants_graph ON assistants (graph_id, created_at);

CREATE TABLE assistant_versions (
    assistant_id TEXT COLLATE "C" NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    graph_id     TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    description  TEXT,
    config       JSONB NOT NULL,
    context      JSONB NOT NULL,
    metadata     JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

CREATE TABLE threads (
    thread_id        TEXT COLLATE "C" PRIMARY KEY,
    owner            TEXT COLLATE "C" NOT NULL,
    status           TEXT COLLATE "C" NOT NULL,
    metadata         JSONB NOT NULL,
    config           JSONB NOT NULL,
    -- values / error / interrupts; SQL NULL = key absent on the wire (JSON null is 'null')
    state_values     JSONB,
    error            JSONB,
    interrupts       JSONB,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    state_updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_threads_owner_created ON threads (owner, created_at);
CREATE INDEX ix_threads_owner_updated ON threads (owner, updated_at);
CREATE INDEX ix_threads_owner_status_updated ON threads (owner, status, updated_at);
-- the metadata keys the platform filters on; filters on plain keys are written
-- `metadata -> 'key'` (inlined, validated), so these expression indexes apply
CREATE INDEX ix_threads_owner_graph ON threads (owner, (metadata -> 'graph_id'));
CREATE INDEX ix_threads_owner_assistant ON threads (owner, (metadata -> 'assistant_id'));
CREATE INDEX ix_threads_owner_user ON threads (owner, (metadata -> 'user_id'));

CREATE TABLE runs (
    run_id              TEXT COLLATE "C" PRIMARY KEY,
    thread_id           TEXT COLLATE "C" NOT NULL,
    assistant_id        TEXT COLLATE "C" NOT NULL,
    owner               TEXT COLLATE "C" NOT NULL,
    status              TEXT COLLATE "C" NOT NULL,
    multitask_strategy  TEXT NOT NULL,
    metadata            JSONB NOT NULL,
    kwargs              JSONB NOT NULL,
    model_name          TEXT,
    error               TEXT,
    total_input_tokens  BIGINT NOT NULL DEFAULT 0,
    total_output_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens        BIGINT NOT NULL DEFAULT 0,
    llm_call_count      BIGINT NOT NULL DEFAULT 0,
    lead_agent_tokens   BIGINT NOT NULL DEFAULT 0,
    subagent_tokens     BIGINT NOT NULL DEFAULT 0,
    middleware_tokens   BIGINT NOT NULL DEFAULT 0,
    message_count       BIGINT NOT NULL DEFAULT 0,
    last_ai_message     TEXT,
    first_human_message TEXT,
    temporary           BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    -- run ownership / lease (multi-process recovery)
    worker_id           TEXT COLLATE "C",
    lease_expires_at    TIMESTAMPTZ
);
CREATE INDEX ix_runs_thread_created ON runs (thread_id, created_at);
CREATE INDEX ix_runs_thread_status ON runs (thread_id, status, created_at);
CREATE INDEX ix_runs_status_created ON runs (status, created_at);
CREATE INDEX ix_runs_owner_thread ON runs (owner, thread_id, created_at);
CREATE INDEX ix_runs_lease ON runs (lease_expires_at) WHERE status IN ('pending', 'running');
CREATE INDEX ix_runs_worker ON runs (worker_id) WHERE status IN ('pending', 'running');
-- One running run per thread, across processes: the database refuses a second one.
CREATE UNIQUE INDEX ux_runs_one_running ON runs (thread_id) WHERE status = 'running';

CREATE TABLE run_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id  TEXT COLLATE "C" NOT NULL,
    run_id     TEXT COLLATE "C" NOT NULL,
    owner      TEXT COLLATE "C" NOT NULL,
    seq        BIGINT NOT NULL,
    event_type TEXT COLLATE "C" NOT NULL,
    category   TEXT COLLATE "C" NOT NULL,
    content    JSONB NOT NULL,
    metadata   JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT uq_run_events_thread_seq UNIQUE (thread_id, seq)
);
CREATE INDEX ix_run_events_run ON run_events (thread_id, run_id, seq);
CREATE INDEX ix_run_events_category ON run_events (thread_id, category, seq);

-- last seq handed out per thread: seqs never repeat, even after deletes
CREATE TABLE run_event_seqs (
    thread_id TEXT COLLATE "C" PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

CREATE TABLE feedback (
    feedback_id TEXT COLLATE "C" PRIMARY KEY,
    run_id      TEXT COLLATE "C" NOT NULL,
    thread_id   TEXT COLLATE "C" NOT NULL,
    owner       TEXT COLLATE "C" NOT NULL,
    message_id  TEXT,
    rating      BIGINT NOT NULL,
    comment     TEXT,
    metadata    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_feedback_run ON feedback (thread_id, run_id, owner);

CREATE TABLE store_items (
    owner      TEXT COLLATE "C" NOT NULL,
    -- labels joined with '.' (labels never contain '.')
    namespace  TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    value      JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, namespace, key)
);
CREATE INDEX ix_store_items_updated ON store_items (owner, updated_at);

-- Checkpoints in LangGraph's layout, with blob ids and list deltas (see
-- migrations/sqlite/0002_checkpoint_blob_ids.sql and src/postgres/checkpointer.rs).
CREATE TABLE checkpoints (
    thread_id            TEXT COLLATE "C" NOT NULL,
    checkpoint_ns        TEXT COLLATE "C" NOT NULL,
    checkpoint_id        TEXT COLLATE "C" NOT NULL,
    parent_checkpoint_id TEXT COLLATE "C",
    run_id               TEXT COLLATE "C",
    -- the head: id, ts, versions, versions seen, updated channels, channel -> blob id
    checkpoint           JSONB NOT NULL,
    metadata             JSONB NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX ix_checkpoints_run ON checkpoints (thread_id, run_id);

CREATE TABLE checkpoint_blobs (
    -- insertion order (SQLite's rowid): the latest blob of a (channel, version)
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    thread_id     TEXT COLLATE "C" NOT NULL,
    checkpoint_ns TEXT COLLATE "C" NOT NULL,
    blob_id       BIGINT NOT NULL,
    channel       TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    -- a delta: `value` holds the items appended to the list of blob base_id
    base_id       BIGINT,
    depth         BIGINT NOT NULL,
    -- serialized JSON; NULL = empty channel
    value         TEXT,
    PRIMARY KEY (thread_id, checkpoint_ns, blob_id)
);
CREATE INDEX ix_checkpoint_blobs_channel ON checkpoint_blobs (thread_id, checkpoint_ns, channel, version);

CREATE TABLE checkpoint_writes (
    -- insertion order of the writes (SQLite's rowid); kept by upserts
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    thread_id     TEXT COLLATE "C" NOT NULL,
    checkpoint_ns TEXT COLLATE "C" NOT NULL,
    checkpoint_id TEXT COLLATE "C" NOT NULL,
    task_id       TEXT COLLATE "C" NOT NULL,
    idx           BIGINT NOT NULL,
    channel       TEXT NOT NULL,
    -- serialized JSON
    value         TEXT NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
