//! The orchestrator's schedules: a job of a kind every interval, enqueued by stella-orchestrator
//! when due (see `0005_schedules.sql`). Feed polls are system schedules that Conseiller and
//! Excitator register at start-up from `STELLA_SOURCES_INTERVAL`; a tenant schedules task packs
//! and exports through the API.
//!
//! A schedule whose previous job is still queued or running is not enqueued again (it runs as soon
//! as that job ends), so a slow feed or a stopped worker never piles jobs up. Ticks from several
//! orchestrator replicas are safe: the due schedules are locked `FOR UPDATE SKIP LOCKED`.

use std::ops::ControlFlow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::Error;
use crate::authority::Caller;

pub const TICK: Setting = s(
    "STELLA_SCHEDULER_TICK",
    SettingKind::Duration,
    Fallback::Value("30s"),
    "The longest the orchestrator waits before it looks for due schedules again. It wakes when the \
     next schedule is due, and at once when a schedule is created or changed or a scheduled job ends \
     (a PostgreSQL notification); this is the fallback for a lost notification.",
);

/// Registers (or updates) a system schedule, due at once.
pub async fn register_system(
    db: &PgPool,
    name: &str,
    kind: &str,
    every: Duration,
    max_attempts: i32,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO stella.schedules (name, kind, payload, every, max_attempts, created_by)
         VALUES ($1, $2, '{}', make_interval(secs => $3), $4, 'system')
         ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, every = EXCLUDED.every,
                max_attempts = EXCLUDED.max_attempts, next_run_at = least(stella.schedules.next_run_at, now())",
    )
    .bind(name)
    .bind(kind)
    .bind(every.as_secs_f64().max(1.0))
    .bind(max_attempts)
    .execute(db)
    .await?;
    Ok(())
}

/// Enqueues the job of every due schedule that has none pending; returns the jobs enqueued.
pub async fn tick(db: &PgPool) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(
        "WITH due AS (
             SELECT s.name FROM stella.schedules s
             WHERE s.next_run_at <= now()
               AND NOT EXISTS (SELECT 1 FROM stella.jobs j WHERE j.schedule = s.name AND j.status IN ('queued', 'running'))
             FOR UPDATE SKIP LOCKED),
         advanced AS (
             UPDATE stella.schedules s SET next_run_at = now() + s.every FROM due WHERE s.name = due.name
             RETURNING s.name, s.tenant_id, s.kind, s.payload, s.max_attempts)
         INSERT INTO stella.jobs (tenant_id, kind, payload, status, max_attempts, created_by, schedule)
         SELECT tenant_id, kind, payload, 'queued', max_attempts, 'orchestrator', name FROM advanced
         RETURNING schedule, id",
    )
    .fetch_all(db)
    .await?)
}

/// Starts the scheduler (stella-orchestrator).
pub fn spawn(ctx: &stella_runtime::Context) {
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no schedules are run");
        return;
    };
    let every = ctx.config.duration(TICK.name).unwrap_or(Duration::from_secs(30)).max(Duration::from_millis(100));
    let wake = crate::wake::start(ctx).topic("schedule");
    ctx.repeat_or_woken("scheduler", wake, move || {
        let db = db.clone();
        async move {
            match tick(&db).await {
                Ok(jobs) => {
                    for (schedule, job) in jobs {
                        info!(schedule = %schedule, job, "scheduled job enqueued");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "checking the schedules failed; retrying");
                    return ControlFlow::Continue(every.min(Duration::from_secs(2)));
                }
            }
            ControlFlow::Continue(next_due(&db).await.map_or(every, |due| due.clamp(Duration::from_millis(100), every)))
        }
    });
}

/// Time until the next schedule is due, if any is due later (one that is due now but waits for
/// its pending job is woken by that job's end).
async fn next_due(db: &PgPool) -> Option<Duration> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(next_run_at) - now())::float8 FROM stella.schedules WHERE next_run_at > now()",
    )
    .fetch_one(db)
    .await
    .ok()
    .flatten();
    secs.map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// A tenant's schedule, as the API takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    pub name: String,
    /// `task-run` (payload `{"pack", "version"?}`) or `export` (payload `{"formats", "scan"?}`).
    pub kind: String,
    /// `30s`, `15m`, `1h`, `24h` ...
    pub every: String,
    pub payload: Value,
}

/// Schedules one tenant may have.
pub const MAX_PER_TENANT: i64 = 50;

/// The payload of a scheduled task run.
#[derive(serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduledRun {
    pack: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

/// Creates a schedule for the caller's tenant: the payload is checked now, not at the first run.
pub async fn create(db: &PgPool, caller: &Caller, s: NewSchedule, max_attempts: i32) -> Result<Value, Error> {
    caller.require("operator")?;
    let valid_name = !s.name.is_empty()
        && s.name.len() <= 63
        && s.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err(Error::bad("name", "use 1 to 63 lower-case letters, digits and -"));
    }
    let every = stella_runtime::config::parse_duration(&s.every)
        .filter(|d| *d >= Duration::from_secs(1))
        .ok_or_else(|| Error::bad("every", format!("`{}` is not a duration of at least 1s (30s, 15m, 1h)", s.every)))?;
    // The payload is parsed strictly and stored as parsed: a job carries nothing its kind's
    // worker does not expect (a `run` id of another tenant, say).
    let payload = match s.kind.as_str() {
        crate::taskrunner::KIND => {
            let run: ScheduledRun = serde_json::from_value(s.payload.clone())
                .map_err(|e| Error::bad("payload", format!("a task run: {e}")))?;
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM stella.task_packs WHERE tenant_id = $1 AND name = $2 LIMIT 1")
                    .bind(caller.tenant_id)
                    .bind(&run.pack)
                    .fetch_optional(db)
                    .await?;
            found.ok_or_else(|| Error::NotFound(format!("task pack {} in tenant {}", run.pack, caller.tenant)))?;
            serde_json::to_value(&run).map_err(|e| Error::Internal(e.to_string()))?
        }
        crate::exports::KIND => {
            let request: crate::exports::Request = serde_json::from_value(s.payload.clone())
                .map_err(|e| Error::bad("payload", format!("an export request: {e}")))?;
            crate::exports::check_formats(&request.formats, &crate::exports::ALL_FORMATS.map(String::from))?;
            if let Some(scan) = request.scan {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM stella.scans WHERE id = $1 AND tenant_id = $2")
                        .bind(scan)
                        .bind(caller.tenant_id)
                        .fetch_optional(db)
                        .await?;
                found.ok_or_else(|| Error::NotFound(format!("scan {scan} in tenant {}", caller.tenant)))?;
            }
            json!({"formats": request.formats, "scan": request.scan})
        }
        other => {
            return Err(Error::bad(
                "kind",
                format!("`{other}` is not one of {}, {}", crate::taskrunner::KIND, crate::exports::KIND),
            ));
        }
    };
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM stella.schedules WHERE tenant_id = $1")
        .bind(caller.tenant_id)
        .fetch_one(db)
        .await?;
    if existing >= MAX_PER_TENANT {
        return Err(Error::TooMany(format!(
            "tenant {} has {existing} schedules, the most allowed: delete one first",
            caller.tenant
        )));
    }
    let name = format!("{}/{}", caller.tenant, s.name);
    let inserted = sqlx::query(
        "INSERT INTO stella.schedules (name, tenant_id, kind, payload, every, max_attempts, created_by)
         VALUES ($1, $2, $3, $4, make_interval(secs => $5), $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&name)
    .bind(caller.tenant_id)
    .bind(&s.kind)
    .bind(&payload)
    .bind(every.as_secs_f64())
    .bind(max_attempts)
    .bind(&caller.username)
    .execute(db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(Error::Conflict(format!("schedule {} exists: delete it first to change it", s.name)));
    }
    Ok(json!({"name": s.name, "kind": s.kind, "every": s.every, "payload": payload}))
}

/// The caller's schedules; an admin of the platform tenant also sees the system ones.
pub async fn list(db: &PgPool, caller: &Caller) -> Result<Value, Error> {
    let system = caller.tenant == crate::seed::TENANT && caller.require("admin").is_ok();
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('name', s.name, 'system', s.tenant_id IS NULL, 'kind', s.kind, 'payload', s.payload,
                'everySeconds', extract(epoch FROM s.every), 'nextRunAt', stella.rfc3339(s.next_run_at),
                'lastJob', (SELECT max(j.id) FROM stella.jobs j WHERE j.schedule = s.name))
         FROM stella.schedules s WHERE s.tenant_id = $1 OR ($2 AND s.tenant_id IS NULL) ORDER BY s.name",
    )
    .bind(caller.tenant_id)
    .bind(system)
    .fetch_all(db)
    .await?;
    Ok(json!({"schedules": rows}))
}

/// Deletes one of the caller's schedules (jobs already enqueued still run).
pub async fn delete(db: &PgPool, caller: &Caller, name: &str) -> Result<(), Error> {
    caller.require("operator")?;
    let gone = sqlx::query("DELETE FROM stella.schedules WHERE name = $1 AND tenant_id = $2")
        .bind(format!("{}/{name}", caller.tenant))
        .bind(caller.tenant_id)
        .execute(db)
        .await?
        .rows_affected();
    if gone == 0 {
        return Err(Error::NotFound(format!("schedule {name} in tenant {}", caller.tenant)));
    }
    Ok(())
}
