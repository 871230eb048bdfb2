-- Multi-replica runs (issue 5): durable cancel requests, the run queue, the replica registry.

-- A cancel asked for on a replica that does not execute the run ('interrupt' | 'rollback');
-- the owner polls its runs for it.
ALTER TABLE runs ADD COLUMN cancel_requested VARCHAR(32) NULL;

-- The queue: pending runs, oldest first (claimed FOR UPDATE SKIP LOCKED).
CREATE INDEX ix_runs_queue ON runs (status, worker_id, created_at, run_id);

-- Server processes sharing this database, refreshed by their heartbeat.
CREATE TABLE replicas (
    replica_id   VARCHAR(255) NOT NULL PRIMARY KEY,
    started_at   DATETIME(6) NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    host         VARCHAR(255) NOT NULL,
    pid          BIGINT NOT NULL,
    database_kind VARCHAR(32) NOT NULL,
    bridge_kind  VARCHAR(32) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
