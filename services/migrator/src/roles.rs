//! The least-privilege role the services connect with. The migrator connects as the schema's
//! owner (it alone changes the schema); when `STELLA_DATABASE_SERVICE_PASSWORD` is given it also
//! creates, or updates the password of, the login role `STELLA_DATABASE_SERVICE_ROLE` and sets
//! its privileges, at every run so that tables of new migrations are covered:
//! - `USAGE` on the schema and its sequences, and `SELECT, INSERT, UPDATE, DELETE` on its tables;
//! - no `UPDATE`, `DELETE` or `TRUNCATE` on the append-only tables (originals, the facts derived
//!   from them, both ledgers), nothing on the migration history;
//! - not the owner of anything, so it cannot `ALTER` a table, disable a trigger or drop one.
//!
//! Why the migrator and not a migration: the role's password is a secret of the deployment, and
//! a migration is fixed SQL embedded in the binary.

use anyhow::{Context as _, bail};
use sqlx::{AssertSqlSafe, PgPool};
use stella_runtime::config::{Default, Kind, Setting};
use stella_runtime::s;

pub const SERVICE_PASSWORD: Setting = s(
    "STELLA_DATABASE_SERVICE_PASSWORD",
    Kind::Text,
    Default::None,
    "Password of the least-privilege login role the services use (STELLA_DATABASE_SERVICE_ROLE): the migrator \
     creates the role, or sets this password, and grants it only the data access the services need. Unset: \
     no role is managed. Prefer STELLA_DATABASE_SERVICE_PASSWORD_FILE.",
)
.secret();

pub const SERVICE_ROLE: Setting = s(
    "STELLA_DATABASE_SERVICE_ROLE",
    Kind::Text,
    Default::Value("stella_service"),
    "Name of the services' least-privilege login role (lower-case letters, digits and `_`).",
);

/// Tables the services only ever read and append to.
pub const APPEND_ONLY: &[&str] =
    &["source_documents", "advisories", "advisory_affected", "vex_statements", "ledger_events", "tenant_ledger"];

/// Creates or updates the role and sets its privileges, in one transaction.
pub async fn ensure(pool: &PgPool, role: &str, password: &str) -> anyhow::Result<()> {
    let valid = !role.is_empty()
        && role.len() <= 63
        && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && role.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        bail!("STELLA_DATABASE_SERVICE_ROLE=`{role}` is not a role name: use lower-case letters, digits and `_`");
    }
    if password.len() < 16 {
        bail!("STELLA_DATABASE_SERVICE_PASSWORD is too short: give at least 16 characters");
    }
    let mut tx = pool.begin().await.context("starting the role transaction")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut *tx)
        .await?;
    // DDL takes no bind parameters: PostgreSQL's own format() quotes the name (%I) and the
    // password (%L), so neither can break out of its place.
    let verb = if exists { "ALTER" } else { "CREATE" };
    let role_sql = format!("{verb} ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD %L");
    let statement: String = sqlx::query_scalar("SELECT format($1, $2, $3)")
        .bind(role_sql)
        .bind(role)
        .bind(password)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut *tx).await.context("creating the service role")?;
    let connect: String =
        sqlx::query_scalar("SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), $1)")
            .bind(role)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::raw_sql(AssertSqlSafe(connect)).execute(&mut *tx).await.context("granting CONNECT to the service role")?;
    let append_only = APPEND_ONLY.iter().map(|t| format!("stella.{t}")).collect::<Vec<_>>().join(", ");
    let grants = [
        "REVOKE ALL ON ALL TABLES IN SCHEMA stella FROM %I".to_string(),
        "GRANT USAGE ON SCHEMA stella TO %I".to_string(),
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA stella TO %I".to_string(),
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA stella TO %I".to_string(),
        format!("REVOKE UPDATE, DELETE, TRUNCATE ON {append_only} FROM %I"),
        "REVOKE ALL ON stella._sqlx_migrations FROM %I".to_string(),
    ];
    for grant in grants {
        let statement: String =
            sqlx::query_scalar("SELECT format($1, $2)").bind(&grant).bind(role).fetch_one(&mut *tx).await?;
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut *tx).await.with_context(|| format!("{grant} ({role})"))?;
    }
    tx.commit().await.context("committing the service role")?;
    Ok(())
}
