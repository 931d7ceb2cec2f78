-- The StellaOps core: authority, aggregation-only source documents, scans and findings,
-- policies and verdicts, and the findings ledger. Owned by stella-migrator; the services only
-- read and write rows. Timestamps are rendered by stella.rfc3339 so no service needs a date type.

CREATE FUNCTION stella.rfc3339(t TIMESTAMPTZ) RETURNS TEXT
    LANGUAGE sql IMMUTABLE
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- Tables whose rows may only be added: the originals of Conseiller and Excitator and the
-- ledger. The trigger makes "never modified, never deleted" a property of the database, not
-- only of the code.
CREATE FUNCTION stella.refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on stella.% is refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Authority -------------------------------------------------------------------------------
CREATE TABLE stella.users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES stella.tenants (id),
    username      TEXT NOT NULL CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, username)
);

CREATE TABLE stella.api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES stella.tenants (id),
    user_id      BIGINT NOT NULL REFERENCES stella.users (id),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    kind         TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    -- SHA-256 of the token: the token itself is shown once and never stored.
    token_sha256 TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);

-- Conseiller and Excitator: originals, exactly as received ----------------------------------
CREATE TABLE stella.source_documents (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('advisory', 'vex')),
    source     TEXT NOT NULL,
    -- Where in the source: a file name, or the URL.
    locator    TEXT NOT NULL,
    sha256     TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    body       BYTEA NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Re-ingesting the same bytes from the same place is a no-op; changed bytes are a new row.
    UNIQUE (kind, source, locator, sha256)
);
CREATE TRIGGER source_documents_append_only BEFORE UPDATE OR DELETE ON stella.source_documents
    FOR EACH ROW EXECUTE FUNCTION stella.refuse_change();
CREATE TRIGGER source_documents_no_truncate BEFORE TRUNCATE ON stella.source_documents
    FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_change();

-- The newest original of each (source, locator): older ones are kept, matching uses these.
CREATE VIEW stella.current_documents AS
    SELECT DISTINCT ON (kind, source, locator) id, kind, source, locator
    FROM stella.source_documents ORDER BY kind, source, locator, id DESC;

-- Documents that failed to parse: kept with the source and the reason, out of every linkset.
CREATE TABLE stella.rejected_documents (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('advisory', 'vex')),
    source      TEXT NOT NULL,
    locator     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    problem     TEXT NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kind, source, locator, sha256)
);

-- Facts read from one original (one row per document: nothing here spans two documents).
CREATE TABLE stella.advisories (
    document_id BIGINT PRIMARY KEY REFERENCES stella.source_documents (id),
    advisory_id TEXT NOT NULL,
    linkset     TEXT NOT NULL,
    aliases     TEXT[] NOT NULL,
    summary     TEXT NOT NULL,
    severity    TEXT NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low', 'unknown')),
    modified    TEXT NOT NULL
);
CREATE INDEX advisories_linkset ON stella.advisories (linkset);
CREATE INDEX advisories_aliases ON stella.advisories USING gin (aliases);

CREATE TABLE stella.advisory_affected (
    document_id BIGINT NOT NULL REFERENCES stella.source_documents (id),
    position    INT NOT NULL,
    purl        TEXT NOT NULL,
    ranges      JSONB NOT NULL,
    versions    TEXT[] NOT NULL,
    PRIMARY KEY (document_id, position)
);
CREATE INDEX advisory_affected_purl ON stella.advisory_affected (purl);

CREATE TABLE stella.vex_statements (
    document_id    BIGINT NOT NULL REFERENCES stella.source_documents (id),
    position       INT NOT NULL,
    statement      INT NOT NULL,
    vex_id         TEXT NOT NULL,
    vulnerability  TEXT NOT NULL,
    aliases        TEXT[] NOT NULL,
    product        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('not_affected', 'affected', 'fixed', 'under_investigation')),
    justification  TEXT,
    PRIMARY KEY (document_id, position)
);
CREATE INDEX vex_statements_vulnerability ON stella.vex_statements (vulnerability);

-- Scans and findings (per tenant) -----------------------------------------------------------
CREATE TABLE stella.scans (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    BIGINT NOT NULL REFERENCES stella.tenants (id),
    name         TEXT NOT NULL,
    format       TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    components   INT NOT NULL,
    unidentified INT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, sha256)
);

CREATE TABLE stella.scan_components (
    scan_id BIGINT NOT NULL REFERENCES stella.scans (id),
    purl    TEXT NOT NULL,
    PRIMARY KEY (scan_id, purl)
);

CREATE TABLE stella.findings (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      BIGINT NOT NULL REFERENCES stella.tenants (id),
    scan_id        BIGINT NOT NULL REFERENCES stella.scans (id),
    purl           TEXT NOT NULL,
    package        TEXT NOT NULL,
    version        TEXT NOT NULL,
    linkset        TEXT NOT NULL,
    aliases        TEXT[] NOT NULL,
    severity       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('not_affected', 'affected', 'fixed', 'under_investigation')),
    -- Links, not copies: the originals that name the vulnerability for this package, and the
    -- VEX statements applied ([{document, statement, status}]).
    advisory_documents BIGINT[] NOT NULL,
    vex            JSONB NOT NULL,
    UNIQUE (scan_id, purl, linkset)
);
CREATE INDEX findings_tenant ON stella.findings (tenant_id, id);

-- Policy ----------------------------------------------------------------------------------
CREATE TABLE stella.policies (
    version    INT PRIMARY KEY,
    name       TEXT NOT NULL,
    body       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE stella.verdicts (
    scan_id        BIGINT NOT NULL REFERENCES stella.scans (id),
    policy_version INT NOT NULL REFERENCES stella.policies (version),
    tenant_id      BIGINT NOT NULL REFERENCES stella.tenants (id),
    outcome        TEXT NOT NULL CHECK (outcome IN ('pass', 'fail')),
    violations     JSONB NOT NULL,
    evaluated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scan_id, policy_version)
);

-- The baseline policy ships with the schema: every installation has version 1.
INSERT INTO stella.policies (version, name, body) VALUES (1, 'baseline', '{
  "name": "baseline",
  "description": "Fail a scan that has a critical or high finding which no VEX statement marks not_affected or fixed.",
  "rules": [{"id": "no-unresolved-critical-or-high", "severities": ["critical", "high"], "unlessStatus": ["not_affected", "fixed"]}]
}');

-- Findings ledger -------------------------------------------------------------------------
CREATE TABLE stella.ledger_events (
    seq         BIGINT PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES stella.tenants (id),
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    recorded_at TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE
);
CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE ON stella.ledger_events
    FOR EACH ROW EXECUTE FUNCTION stella.refuse_change();
CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON stella.ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_change();
