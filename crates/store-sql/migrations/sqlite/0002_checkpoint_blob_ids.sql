-- Checkpoint blobs get their own ids, and list channels may be stored as deltas.
--
-- * A checkpoint's head (checkpoints.checkpoint) maps every channel to the blob_id holding its
--   value, so a fork that reuses a (channel, version) number never overwrites the value another
--   branch still references; blobs are immutable once written.
-- * A blob with base_id is a delta: `value` holds the items appended to the list of blob
--   base_id (same thread + namespace). depth counts deltas since the last full value and is
--   bounded by the writer, so reads follow a short chain while a step of a long thread only
--   writes its new messages.
-- Pre-release databases only held development data: the checkpoint tables are recreated.

DROP TABLE IF EXISTS checkpoint_blobs;
DROP TABLE IF EXISTS checkpoint_writes;
DROP TABLE IF EXISTS checkpoints;

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
    blob_id       INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    version       INTEGER NOT NULL,
    base_id       INTEGER,
    depth         INTEGER NOT NULL,
    -- NULL = empty channel
    value         TEXT,
    PRIMARY KEY (thread_id, checkpoint_ns, blob_id)
);
CREATE INDEX ix_checkpoint_blobs_channel ON checkpoint_blobs (thread_id, checkpoint_ns, channel, version);

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
