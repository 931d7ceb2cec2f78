-- Task packs and their runs (stella-task-runner). Owned by stella-migrator.
CREATE TABLE stella.task_packs (
    tenant_id  BIGINT NOT NULL REFERENCES stella.tenants (id),
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    document   JSONB NOT NULL,
    sha256     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE stella.task_runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES stella.tenants (id),
    pack_name    TEXT NOT NULL,
    pack_version TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    reason       TEXT,
    -- One entry per step run so far: {"id", "status", "detail"}.
    steps        JSONB NOT NULL DEFAULT '[]',
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    FOREIGN KEY (tenant_id, pack_name, pack_version) REFERENCES stella.task_packs (tenant_id, name, version)
);
CREATE INDEX task_runs_queued ON stella.task_runs (id) WHERE status = 'queued';
