-- The orchestrator's schedules: a job of `kind` with `payload` every `every`. The orchestrator
-- enqueues a schedule's job when it is due and none of its jobs is still queued or running
-- (a slow job is not piled up behind). System schedules (feed polls, registered by Conseiller
-- and Excitator) have no tenant; a tenant's schedules (task packs, exports) are named
-- `<tenant>/<name>`. Owned by stella-migrator.
CREATE TABLE stella.schedules (
    name         TEXT PRIMARY KEY,
    tenant_id    BIGINT REFERENCES stella.tenants (id),
    kind         TEXT NOT NULL,
    payload      JSONB NOT NULL,
    every        INTERVAL NOT NULL CHECK (every >= interval '1 second'),
    max_attempts INT NOT NULL CHECK (max_attempts > 0),
    next_run_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE stella.jobs ADD COLUMN schedule TEXT;
CREATE INDEX jobs_schedule_pending ON stella.jobs (schedule) WHERE status IN ('queued', 'running');
