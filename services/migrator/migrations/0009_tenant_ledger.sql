-- Each tenant's ledger events form a chain of their own (stella_core::ledger): a tenant verifies
-- its own chain without seeing another's, and one tenant's import never waits for another's
-- (the append lock is per tenant). Events of earlier releases stay in stella.ledger_events, the
-- platform chain, which a previous release (after a rollback) keeps reading and appending to.
CREATE TABLE stella.tenant_ledger (
    tenant_id   BIGINT NOT NULL REFERENCES stella.tenants (id),
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    recorded_at TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    PRIMARY KEY (tenant_id, seq)
);
CREATE TRIGGER tenant_ledger_append_only BEFORE UPDATE OR DELETE ON stella.tenant_ledger
    FOR EACH ROW EXECUTE FUNCTION stella.refuse_change();
CREATE TRIGGER tenant_ledger_no_truncate BEFORE TRUNCATE ON stella.tenant_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_change();
