-- Every query of a thread's runs also names the owner, so (owner, thread_id, created_at) serves
-- them all and (thread_id, created_at) was only written, never read: one B-tree entry less per
-- run (issue 15: SQLite stateful c=32 +10-12% in same-run A/Bs, docs/BENCHMARKS.md §5).
DROP INDEX IF EXISTS ix_runs_thread_created;
