-- Multi-replica runs (issue 5): durable cancel requests, the run queue, the replica registry.

-- A cancel asked for on a replica that does not execute the run ('interrupt' | 'rollback');
-- the owner polls its runs for it.
ALTER TABLE runs ADD COLUMN cancel_requested TEXT;

-- The queue: pending runs owned by no process, oldest first.
CREATE INDEX ix_runs_queue ON runs (created_at, run_id) WHERE status = 'pending' AND worker_id IS NULL;

-- Server processes sharing this database, refreshed by their heartbeat.
CREATE TABLE replicas (
    replica_id   TEXT PRIMARY KEY,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    database_kind TEXT NOT NULL,
    bridge_kind  TEXT NOT NULL
);
