-- Thread ids are per owner (issue 6): clients choose thread ids, so two users may both have a
-- thread `X`, and a create by one must not reveal that the other's exists.
--
-- * threads are keyed by (owner, thread_id);
-- * one running run per (owner, thread_id); run events are unique per (owner, thread_id, seq)
--   and every owner's thread has its own sequence;
-- * checkpoints are stored under the thread key `owner || chr(31) || thread_id` (the
--   checkpointer API has no owner: `antler_graph::thread_key` builds the same key), so the
--   existing rows move under their thread's owner.

-- checkpoints of existing threads move under their owner's key (thread ids were unique until now)
UPDATE checkpoints c SET thread_id = t.owner || chr(31) || c.thread_id FROM threads t WHERE t.thread_id = c.thread_id;
UPDATE checkpoint_blobs c SET thread_id = t.owner || chr(31) || c.thread_id FROM threads t WHERE t.thread_id = c.thread_id;
UPDATE checkpoint_writes c SET thread_id = t.owner || chr(31) || c.thread_id FROM threads t WHERE t.thread_id = c.thread_id;

ALTER TABLE threads DROP CONSTRAINT threads_pkey, ADD PRIMARY KEY (owner, thread_id);

DROP INDEX ux_runs_one_running;
CREATE UNIQUE INDEX ux_runs_one_running ON runs (owner, thread_id) WHERE status = 'running';

ALTER TABLE run_events DROP CONSTRAINT uq_run_events_thread_seq,
    ADD CONSTRAINT uq_run_events_thread_seq UNIQUE (owner, thread_id, seq);
DROP INDEX ix_run_events_run;
CREATE INDEX ix_run_events_run ON run_events (owner, thread_id, run_id, seq);
DROP INDEX ix_run_events_category;
CREATE INDEX ix_run_events_category ON run_events (owner, thread_id, category, seq);

-- the last seq handed out, per owner's thread: every owner that has the thread or events on it
-- keeps the thread's last seq, so no seq is ever handed out twice
CREATE TABLE run_event_seqs_new (
    owner     TEXT COLLATE "C" NOT NULL,
    thread_id TEXT COLLATE "C" NOT NULL,
    last_seq  BIGINT NOT NULL,
    PRIMARY KEY (owner, thread_id)
);
INSERT INTO run_event_seqs_new (owner, thread_id, last_seq)
SELECT o.owner, s.thread_id, s.last_seq
  FROM run_event_seqs s
  JOIN (SELECT owner, thread_id FROM threads UNION SELECT owner, thread_id FROM run_events) o
    ON o.thread_id = s.thread_id;
DROP TABLE run_event_seqs;
ALTER TABLE run_event_seqs_new RENAME TO run_event_seqs;
