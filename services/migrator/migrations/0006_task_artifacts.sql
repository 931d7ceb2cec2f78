-- Artifacts of task runs: what an `http` step with `"keep": true` received, in the object store.
-- Entries are {step, key, bytes, sha256, expired}; the task runner deletes the objects of runs
-- that finished longer ago than STELLA_TASKS_ARTIFACT_RETENTION and marks them expired.
ALTER TABLE stella.task_runs ADD COLUMN artifacts JSONB NOT NULL DEFAULT '[]';
CREATE INDEX task_runs_finished ON stella.task_runs (finished_at) WHERE finished_at IS NOT NULL;
