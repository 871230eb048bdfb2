-- One running run per thread, across processes: the database refuses a second one.
-- (Runs left running by a crashed process keep their row; recovery resumes or fails them.)
CREATE UNIQUE INDEX ux_runs_one_running ON runs (thread_id) WHERE status = 'running';
