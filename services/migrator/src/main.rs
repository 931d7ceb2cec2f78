//! `stella-migrator`: the one-shot job that applies database migrations and, with `--seed`,
//! creates the default tenant and its admin (when `STELLA_ADMIN_PASSWORD` is set) and in
//! quickstart mode loads the demonstration data (`stella_core::seed`); it exits 0 when done.
//!
//! Migrations are embedded at compile time and applied by sqlx's migrator, which takes a
//! PostgreSQL advisory lock (two migrators started at once cannot race), records a checksum per
//! migration (an edited, already-applied migration is refused) and skips what is applied, so a
//! second run is a no-op.

mod roles;

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use stella_runtime::config::{Default, Kind, Setting};
use stella_runtime::s;
use stella_runtime::tracing::info;

/// The migration history lives in our own schema, named in full. Unqualified, it would
/// follow `search_path`, whose `"$user"` entry starts to resolve once the first migration
/// creates the `stella` schema for a `stella` login: the second run would then find an empty
/// history in another schema and apply everything again.
const HISTORY: &str = "stella._sqlx_migrations";

fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.create_schema("stella");
    m.dangerous_set_table_name(HISTORY);
    // A rollback runs the previous release's migrator on a schema that already has this
    // release's migrations. Migrations only ever add (expand, never contract: see
    // docs/release/compatibility.md), so the older code runs on the newer schema; its migrator
    // must apply what it knows and leave alone what it does not, instead of refusing to start.
    m.set_ignore_missing(true);
    m
}

/// Versions recorded in the history that this binary does not know: a newer release applied
/// them (this is a rollback).
async fn newer_than_this(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    let known: Vec<i64> = migrator().iter().map(|m| m.version).collect();
    let recorded: Vec<i64> = sqlx::query_scalar("SELECT version FROM stella._sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .context("reading the migration history")?;
    Ok(recorded.into_iter().filter(|v| !known.contains(v)).collect())
}

const ADMIN_PASSWORD: Setting = s(
    "STELLA_ADMIN_PASSWORD",
    Kind::Text,
    Default::None,
    "With --seed: the password of the `admin` user of the default tenant, set when the user is created \
     (an existing admin keeps its password). Required in quickstart mode. Prefer STELLA_ADMIN_PASSWORD_FILE.",
)
.secret();

const ADMIN_PASSWORD_RESET: Setting = s(
    "STELLA_ADMIN_PASSWORD_RESET",
    Kind::Bool,
    Default::Value("false"),
    "With --seed: give an existing `admin` the password of STELLA_ADMIN_PASSWORD and end its sessions (a \
     deliberate rotation; `quickstart.sh --rotate admin-password` sets it for one run). Its API tokens stay.",
);

const WAIT: Setting = s(
    "STELLA_MIGRATOR_WAIT",
    Kind::Duration,
    Default::Value("60s"),
    "How long the migrator waits for PostgreSQL to accept connections before it fails.",
);

fn main() -> std::process::ExitCode {
    stella_runtime::Service::job("migrator", |ctx, args| async move {
        let pool = ctx.db.clone().expect("the runtime requires STELLA_DATABASE_URL for jobs");
        let wait = ctx.config.duration(WAIT.name).unwrap_or(Duration::from_secs(60));
        wait_for_database(&pool, wait).await?;
        let before = applied(&pool).await?;
        migrator().run(&pool).await.context("applying migrations")?;
        let after = applied(&pool).await?;
        let newer = newer_than_this(&pool).await?;
        if newer.is_empty() {
            info!(applied = after - before, total = after, "database schema is current");
        } else {
            stella_runtime::tracing::warn!(
                applied = after - before,
                newer = ?newer,
                "the database has migrations of a newer release (a rollback): they are kept, and this release runs on them"
            );
        }
        if let Some(password) = ctx.config.text(roles::SERVICE_PASSWORD.name) {
            let role = ctx.config.text(roles::SERVICE_ROLE.name).unwrap_or("stella_service");
            roles::ensure(&pool, role, password).await.context("the services' database role")?;
            info!(role, "the services' least-privilege database role is current");
        }
        if args.seed {
            let quickstart = ctx.config.bool("STELLA_QUICKSTART_MODE");
            let reset = ctx.config.bool(ADMIN_PASSWORD_RESET.name);
            stella_core::seed::run(&pool, ctx.config.text(ADMIN_PASSWORD.name), reset, quickstart)
                .await
                .context("loading seed data")?;
        }
        Ok(())
    })
    .setting(WAIT)
    .setting(ADMIN_PASSWORD)
    .setting(ADMIN_PASSWORD_RESET)
    .setting(roles::SERVICE_PASSWORD)
    .setting(roles::SERVICE_ROLE)
    .main()
}

/// Retries until PostgreSQL answers or `limit` passes: in Compose and Kubernetes the database
/// may still be starting when the job starts.
async fn wait_for_database(pool: &PgPool, limit: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(100);
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                info!(error = %e, retry_in_ms = delay.as_millis() as u64, "waiting for the database");
                stella_runtime::tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(e).context(format!("the database did not answer within {}s", limit.as_secs()));
            }
        }
    }
}

/// How many migrations are recorded as applied (0 before the first run).
async fn applied(pool: &PgPool) -> anyhow::Result<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(HISTORY)
        .fetch_one(pool)
        .await
        .context("reading the migration history")?;
    if !exists {
        return Ok(0);
    }
    // Schema-qualified like the history itself: unqualified, it resolved only for a login named
    // `stella` (search_path's "$user"), and the quickstart logs in as `postgres`.
    Ok(sqlx::query_scalar("SELECT count(*) FROM stella._sqlx_migrations WHERE success").fetch_one(pool).await?)
}
