-- Failed password logins, counted per account and per source address by every replica of the
-- API and the console (stella_core::throttle). Rows older than the window are purged.
CREATE TABLE stella.login_failures (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account TEXT NOT NULL,
    source TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_account ON stella.login_failures (account, at);
CREATE INDEX login_failures_source ON stella.login_failures (source, at);
