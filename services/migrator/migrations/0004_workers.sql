-- The workers: the orchestrator's job queue (leases with a timeout, retries, history), the
-- export center's exports and the notification outbox. Owned by stella-migrator.

-- One row per job; a worker leases it by setting lease_owner and lease_expires_at and keeps
-- the lease alive while it works. A lease that expires (the worker died) makes the job
-- claimable again; `attempt` fences a worker that lost its lease from finishing the job.
CREATE TABLE stella.jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        BIGINT REFERENCES stella.tenants (id),
    kind             TEXT NOT NULL,
    payload          JSONB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempt          INT NOT NULL DEFAULT 0,
    max_attempts     INT NOT NULL CHECK (max_attempts > 0),
    run_after        TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    result           JSONB,
    error            TEXT,
    created_by       TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);
CREATE INDEX jobs_claimable ON stella.jobs (kind, id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_tenant ON stella.jobs (tenant_id, id);

-- Every attempt of every job: who ran it, when, and how it ended (the job history).
CREATE TABLE stella.job_attempts (
    job_id      BIGINT NOT NULL REFERENCES stella.jobs (id),
    attempt     INT NOT NULL,
    worker      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at    TIMESTAMPTZ,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'retry', 'lease expired')),
    detail      TEXT,
    PRIMARY KEY (job_id, attempt)
);

ALTER TABLE stella.task_runs ADD COLUMN job_id BIGINT REFERENCES stella.jobs (id);
ALTER TABLE stella.task_runs ADD COLUMN attempt INT NOT NULL DEFAULT 0;

-- Export center ---------------------------------------------------------------------------
CREATE TABLE stella.exports (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES stella.tenants (id),
    job_id      BIGINT NOT NULL REFERENCES stella.jobs (id),
    formats     TEXT[] NOT NULL,
    scan_id     BIGINT REFERENCES stella.scans (id),
    -- [{name, format, key, bytes, sha256}] once the export is written.
    files       JSONB NOT NULL DEFAULT '[]',
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Notifications ---------------------------------------------------------------------------
-- The outbox: events are written in the transaction that causes them (a critical finding, a
-- job that failed for good); stella-notify delivers them in batches, retries, and records the
-- ones it gives up on (status 'dead') with the last error.
CREATE TABLE stella.notifications (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   BIGINT REFERENCES stella.tenants (id),
    event       TEXT NOT NULL CHECK (event IN ('finding.critical', 'job.failed')),
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per notification and sink: its delivery state.
CREATE TABLE stella.deliveries (
    notification_id BIGINT NOT NULL REFERENCES stella.notifications (id),
    sink            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    PRIMARY KEY (notification_id, sink)
);
CREATE INDEX deliveries_pending ON stella.deliveries (sink, next_attempt_at) WHERE status = 'pending';
