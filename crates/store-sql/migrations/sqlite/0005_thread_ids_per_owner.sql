-- Thread ids are per owner (issue 6): clients choose thread ids, so two users may both have a
-- thread `X`, and a create by one must not reveal that the other's exists.
--
-- * threads are keyed by (owner, thread_id);
-- * one running run per (owner, thread_id); run events are unique per (owner, thread_id, seq)
--   and every owner's thread has its own sequence;
-- * checkpoints are stored under the thread key `owner || char(31) || thread_id` (the
--   checkpointer API has no owner: `antler_graph::thread_key` builds the same key), so the
--   existing rows move under their thread's owner.

-- checkpoints of existing threads move under their owner's key (thread ids were unique until now)
UPDATE checkpoints SET thread_id = (SELECT t.owner FROM threads t WHERE t.thread_id = checkpoints.thread_id) || char(31) || thread_id
 WHERE thread_id IN (SELECT thread_id FROM threads);
UPDATE checkpoint_blobs SET thread_id = (SELECT t.owner FROM threads t WHERE t.thread_id = checkpoint_blobs.thread_id) || char(31) || thread_id
 WHERE thread_id IN (SELECT thread_id FROM threads);
UPDATE checkpoint_writes SET thread_id = (SELECT t.owner FROM threads t WHERE t.thread_id = checkpoint_writes.thread_id) || char(31) || thread_id
 WHERE thread_id IN (SELECT thread_id FROM threads);

-- threads: primary key (owner, thread_id)
CREATE TABLE threads_new (
    thread_id        TEXT NOT NULL,
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
    state_updated_at TEXT NOT NULL,
    PRIMARY KEY (owner, thread_id)
);
INSERT INTO threads_new (thread_id, owner, status, metadata, config, state_values, error, interrupts,
                         created_at, updated_at, state_updated_at)
SELECT thread_id, owner, status, metadata, config, state_values, error, interrupts,
       created_at, updated_at, state_updated_at
  FROM threads;
DROP TABLE threads;
ALTER TABLE threads_new RENAME TO threads;
CREATE INDEX ix_threads_owner_created ON threads (owner, created_at);
CREATE INDEX ix_threads_owner_updated ON threads (owner, updated_at);
CREATE INDEX ix_threads_owner_status_updated ON threads (owner, status, updated_at);
CREATE INDEX ix_threads_owner_graph ON threads (owner, json_extract(metadata, '$.graph_id'));
CREATE INDEX ix_threads_owner_assistant ON threads (owner, json_extract(metadata, '$.assistant_id'));
CREATE INDEX ix_threads_owner_user ON threads (owner, json_extract(metadata, '$.user_id'));

-- runs: one running run per owner's thread
DROP INDEX ux_runs_one_running;
CREATE UNIQUE INDEX ux_runs_one_running ON runs (owner, thread_id) WHERE status = 'running';

-- run events: unique per (owner, thread_id, seq)
CREATE TABLE run_events_new (
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
    CONSTRAINT uq_run_events_thread_seq UNIQUE (owner, thread_id, seq)
);
INSERT INTO run_events_new (id, thread_id, run_id, owner, seq, event_type, category, content, metadata, created_at)
SELECT id, thread_id, run_id, owner, seq, event_type, category, content, metadata, created_at
  FROM run_events;
DROP TABLE run_events;
ALTER TABLE run_events_new RENAME TO run_events;
CREATE INDEX ix_run_events_run ON run_events (owner, thread_id, run_id, seq);
CREATE INDEX ix_run_events_category ON run_events (owner, thread_id, category, seq);

-- the last seq handed out, per owner's thread: every owner that has the thread or events on it
-- keeps the thread's last seq, so no seq is ever handed out twice
CREATE TABLE run_event_seqs_new (
    owner     TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (owner, thread_id)
);
INSERT INTO run_event_seqs_new (owner, thread_id, last_seq)
SELECT o.owner, s.thread_id, s.last_seq
  FROM run_event_seqs s
  JOIN (SELECT owner, thread_id FROM threads UNION SELECT owner, thread_id FROM run_events) o
    ON o.thread_id = s.thread_id;
DROP TABLE run_event_seqs;
ALTER TABLE run_event_seqs_new RENAME TO run_event_seqs;
