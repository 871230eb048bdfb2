-- Every query of a thread's runs also names the owner, so (owner, thread_id, created_at) serves
-- them all and (thread_id, created_at) was only written, never read: one B-tree entry less per
-- run (issue 15, docs/BENCHMARKS.md §5).
ALTER TABLE runs DROP INDEX ix_runs_thread_created;
