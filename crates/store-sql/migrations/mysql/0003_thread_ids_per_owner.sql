-- Thread ids are per owner (issue 6): clients choose thread ids, so two users may both have a
-- thread `X`, and a create by one must not reveal that the other's exists.
--
-- * threads are keyed by (owner, thread_id);
-- * one running run per (owner, thread_id); run events are unique per (owner, thread_id, seq)
--   and every owner's thread has its own sequence;
-- * checkpoints are stored under the thread key CONCAT(owner, CHAR(31), thread_id) (the
--   checkpointer API has no owner: `antler_graph::thread_key` builds the same key; owners are at
--   most 128 characters and thread ids 64, so keys fit the VARCHAR(255) columns), so the
--   existing rows move under their thread's owner.

-- checkpoints of existing threads move under their owner's key (thread ids were unique until now)
UPDATE checkpoints c JOIN threads t ON t.thread_id = c.thread_id
   SET c.thread_id = CONCAT(t.owner, CHAR(31 USING utf8mb4), c.thread_id);
UPDATE checkpoint_blobs c JOIN threads t ON t.thread_id = c.thread_id
   SET c.thread_id = CONCAT(t.owner, CHAR(31 USING utf8mb4), c.thread_id);
UPDATE checkpoint_writes c JOIN threads t ON t.thread_id = c.thread_id
   SET c.thread_id = CONCAT(t.owner, CHAR(31 USING utf8mb4), c.thread_id);

ALTER TABLE threads DROP PRIMARY KEY, ADD PRIMARY KEY (owner, thread_id);

-- one running run per owner's thread (NULLs never collide in a unique key)
ALTER TABLE runs DROP INDEX ux_runs_one_running,
    ADD COLUMN running_owner VARCHAR(255) AS (IF(status = 'running', owner, NULL)) STORED,
    ADD UNIQUE KEY ux_runs_one_running (running_owner, running_thread);

ALTER TABLE run_events DROP INDEX uq_run_events_thread_seq,
    ADD UNIQUE KEY uq_run_events_thread_seq (owner, thread_id, seq);

-- the last seq handed out, per owner's thread: every owner that has the thread or events on it
-- keeps the thread's last seq, so no seq is ever handed out twice
CREATE TABLE run_event_seqs_new (
    owner     VARCHAR(255) NOT NULL,
    thread_id VARCHAR(255) NOT NULL,
    last_seq  BIGINT NOT NULL,
    PRIMARY KEY (owner, thread_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO run_event_seqs_new (owner, thread_id, last_seq)
SELECT o.owner, s.thread_id, s.last_seq
  FROM run_event_seqs s
  JOIN (SELECT owner, thread_id FROM threads UNION SELECT owner, thread_id FROM run_events) o
    ON o.thread_id = s.thread_id;
DROP TABLE run_event_seqs;
RENAME TABLE run_event_seqs_new TO run_event_seqs;
