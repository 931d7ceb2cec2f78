-- Tenants: every StellaOps record belongs to one. Owned by stella-migrator.
CREATE SCHEMA IF NOT EXISTS stella;

CREATE TABLE stella.tenants (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    display_name TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
