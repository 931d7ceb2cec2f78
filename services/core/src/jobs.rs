//! The orchestrator's job queue in PostgreSQL: jobs are enqueued by any service, leased by the
//! workers of their kind with a timeout, kept alive by a heartbeat, retried with backoff when an
//! attempt fails or its worker dies, and failed for good after `max_attempts`.
//!
//! Why leases and not `FOR UPDATE` held for the whole run: a worker that dies while holding a
//! row lock frees it only when PostgreSQL notices the broken connection, and a long job would
//! hold a transaction open for its whole run. A lease is a timestamp: a dead worker stops
//! renewing it and the job is claimable again once it expires. Every claim increments
//! `attempt`, and a worker may only renew, finish or fail the attempt it claimed (fencing), so a
//! worker that was merely slow cannot finish a job another worker has taken over.
//!
//! Concurrency limits: a claim takes a transaction-scoped advisory lock for its kind, counts the
//! kind's live leases, and claims only below the limit, so the limit holds across replicas.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tokio;
use stella_runtime::tracing::{debug, info, warn};

use crate::Error;

pub const LEASE: Setting = s(
    "STELLA_JOBS_LEASE",
    SettingKind::Duration,
    Fallback::Value("30s"),
    "How long a worker's claim on a job lasts without a heartbeat; a job whose worker died is retried after it.",
);

pub const CONCURRENCY: Setting = s(
    "STELLA_JOBS_CONCURRENCY",
    SettingKind::Count { min: 1, max: 64 },
    Fallback::Value("2"),
    "Jobs of this worker's kind running at once, across every replica of the service.",
);

pub const POLL: Setting = s(
    "STELLA_JOBS_POLL",
    SettingKind::Duration,
    Fallback::Value("30s"),
    "The longest an idle worker waits before it looks for a job again. A new job wakes it at once \
     (a PostgreSQL notification); a retry or an expired lease wakes it when due. This poll is the \
     fallback for a lost notification.",
);

pub const ATTEMPTS: Setting = s(
    "STELLA_JOBS_ATTEMPTS",
    SettingKind::Count { min: 1, max: 100 },
    Fallback::Value("3"),
    "Attempts of a job (a failed attempt or a dead worker counts) before it fails for good.",
);

/// Declares the worker settings on a service that runs jobs.
pub fn settings(service: stella_runtime::Service) -> stella_runtime::Service {
    service.setting(LEASE).setting(CONCURRENCY).setting(ATTEMPTS).setting(POLL)
}

/// A job to enqueue.
pub struct NewJob<'a> {
    pub tenant_id: Option<i64>,
    pub kind: &'a str,
    pub payload: Value,
    pub max_attempts: i32,
    pub created_by: &'a str,
}

/// Enqueues a job inside the caller's transaction (so the job exists exactly when the row that
/// asked for it does) and returns its id.
pub async fn enqueue(tx: &mut sqlx::PgConnection, job: NewJob<'_>) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "INSERT INTO stella.jobs (tenant_id, kind, payload, status, max_attempts, created_by)
         VALUES ($1, $2, $3, 'queued', $4, $5) RETURNING id",
    )
    .bind(job.tenant_id)
    .bind(job.kind)
    .bind(&job.payload)
    .bind(job.max_attempts)
    .bind(job.created_by)
    .fetch_one(tx)
    .await?)
}

/// A job leased by this worker: `attempt` is the fencing token.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: i64,
    pub tenant_id: Option<i64>,
    pub payload: Value,
    pub attempt: i32,
    pub max_attempts: i32,
}

/// How an attempt ended, as the handler sees it.
pub enum Outcome {
    /// The work is done; the value is kept as the job's result.
    Done(Value),
    /// The work cannot succeed (bad input, a refused step): fail now, no retry.
    Failed(String),
    /// Something transient went wrong: retry with backoff while attempts remain.
    Retry(String),
}

impl Outcome {
    /// The database or the store failing is worth a retry; bad input is not.
    pub fn from_error(e: Error) -> Outcome {
        match e {
            // The job's error is shown to its tenant: the database's own text stays in the log.
            Error::Database(e) => {
                warn!(error = %e, "a job attempt failed on the database");
                Outcome::Retry("the database failed; see the worker's log".into())
            }
            Error::DatabaseUnavailable(e) => {
                warn!(error = %e, "a job attempt could not reach the database");
                Outcome::Retry("the database was unavailable; see the worker's log".into())
            }
            Error::Internal(_) | Error::Unavailable(_) => Outcome::Retry(e.to_string()),
            other => Outcome::Failed(other.to_string()),
        }
    }
}

/// What a worker of one kind runs for each job.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, job: &Leased) -> impl Future<Output = Outcome> + Send;
    /// Called when the job fails for good (also when its workers kept dying), in the
    /// transaction that marks it failed, so the handler's own rows say so too.
    fn failed(
        &self,
        _tx: &mut sqlx::PgConnection,
        _job: &Leased,
        _reason: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }
}

/// A worker's settings.
#[derive(Clone)]
pub struct Worker {
    pub kind: &'static str,
    /// Unique per process: service, host and process id.
    pub name: String,
    pub lease: Duration,
    pub concurrency: i64,
    pub idle: Duration,
}

impl Worker {
    pub fn new(ctx: &stella_runtime::Context, kind: &'static str) -> Worker {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        Worker {
            kind,
            name: format!("{}@{}#{}", ctx.config.service(), host.trim(), std::process::id()),
            // Floors: a zero lease would panic the heartbeat, a zero poll spin on the database.
            lease: ctx.config.duration(LEASE.name).unwrap_or(Duration::from_secs(30)).max(Duration::from_secs(1)),
            concurrency: ctx.config.int(CONCURRENCY.name).unwrap_or(2).max(1) as i64,
            idle: ctx.config.duration(POLL.name).unwrap_or(Duration::from_secs(30)).max(Duration::from_millis(10)),
        }
    }
}

/// Claims the oldest claimable job of `worker.kind` if fewer than `worker.concurrency` of its
/// kind hold a live lease. A job whose lease expired is claimable again (its attempt is
/// recorded as `lease expired`).
pub async fn claim(db: &PgPool, worker: &Worker) -> Result<Option<Leased>, Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('stella.jobs/' || $1))")
        .bind(worker.kind)
        .execute(&mut *tx)
        .await?;
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stella.jobs WHERE kind = $1 AND status = 'running' AND lease_expires_at > now()",
    )
    .bind(worker.kind)
    .fetch_one(&mut *tx)
    .await?;
    if running >= worker.concurrency {
        debug!(
            kind = worker.kind,
            running,
            limit = worker.concurrency,
            "not claiming: the concurrency limit is reached"
        );
        return Ok(None);
    }
    type Row = (i64, Option<i64>, Value, i32, i32);
    let row: Option<Row> = sqlx::query_as(
        "UPDATE stella.jobs SET status = 'running', attempt = attempt + 1, lease_owner = $2,
                lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = (SELECT id FROM stella.jobs
                     WHERE kind = $1 AND ((status = 'queued' AND run_after <= now())
                                          OR (status = 'running' AND lease_expires_at <= now()))
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id, tenant_id, payload, attempt, max_attempts",
    )
    .bind(worker.kind)
    .bind(&worker.name)
    .bind(worker.lease.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, tenant_id, payload, attempt, max_attempts)) = row else { return Ok(None) };
    sqlx::query(
        "UPDATE stella.job_attempts SET outcome = 'lease expired', ended_at = now()
         WHERE job_id = $1 AND attempt < $2 AND outcome IS NULL",
    )
    .bind(id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    // The attempt starts now, not when this transaction began: a claim may have waited on the
    // advisory lock while another attempt of the kind ended, and `now()` (the transaction's
    // start) would date it before that end, as if the limit had been exceeded.
    sqlx::query(
        "INSERT INTO stella.job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, clock_timestamp())",
    )
    .bind(id)
    .bind(attempt)
    .bind(&worker.name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Leased { id, tenant_id, payload, attempt, max_attempts }))
}

/// Renews the lease; `false` when this worker no longer holds it.
pub async fn heartbeat(db: &PgPool, worker: &Worker, job: &Leased) -> Result<bool, Error> {
    Ok(sqlx::query(
        "UPDATE stella.jobs SET lease_expires_at = now() + make_interval(secs => $4)
         WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND status = 'running'",
    )
    .bind(job.id)
    .bind(job.attempt)
    .bind(&worker.name)
    .bind(worker.lease.as_secs_f64())
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Records how the attempt ended; `false` when the lease was lost first (nothing is written).
async fn finish<H: Handler>(
    db: &PgPool,
    worker: &Worker,
    handler: &H,
    job: &Leased,
    outcome: Outcome,
) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    let (status, result, error, attempt_outcome) = match &outcome {
        Outcome::Done(v) => ("succeeded", Some(v.clone()), None, "succeeded"),
        Outcome::Retry(e) if job.attempt < job.max_attempts => ("queued", None, Some(e.clone()), "retry"),
        Outcome::Retry(e) | Outcome::Failed(e) => ("failed", None, Some(e.clone()), "failed"),
    };
    // Backoff before a retry: 2, 4, 8, 16, then 32 seconds.
    let backoff = 2f64.powi(job.attempt.clamp(1, 5));
    let updated = sqlx::query(
        "UPDATE stella.jobs SET status = $4, result = $5, error = $6, lease_owner = NULL, lease_expires_at = NULL,
                run_after = CASE WHEN $4 = 'queued' THEN now() + make_interval(secs => $7) ELSE run_after END,
                finished_at = CASE WHEN $4 = 'queued' THEN NULL ELSE now() END
         WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND status = 'running'",
    )
    .bind(job.id)
    .bind(job.attempt)
    .bind(&worker.name)
    .bind(status)
    .bind(&result)
    .bind(&error)
    .bind(backoff)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !updated {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE stella.job_attempts SET outcome = $3, detail = $4, ended_at = now() WHERE job_id = $1 AND attempt = $2",
    )
    .bind(job.id)
    .bind(job.attempt)
    .bind(attempt_outcome)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    if status == "failed" {
        let mut reason = error.unwrap_or_default();
        // The handler's own rows (its run or export marked failed) in a savepoint. When that
        // fails too, the job still ends failed here: rolled back instead, it would stay leased,
        // expire and be claimed again at every lease, for ever.
        let mut hook = sqlx::Connection::begin(&mut *tx).await?;
        match handler.failed(&mut hook, job, &reason).await {
            Ok(()) => hook.commit().await?,
            Err(e) => {
                hook.rollback().await?;
                warn!(job = job.id, kind = worker.kind, error = %e, "the service could not record the job's failure");
                reason = format!("{reason}; recording the failure failed too (see the worker's log)");
                sqlx::query("UPDATE stella.jobs SET error = $2 WHERE id = $1")
                    .bind(job.id)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        crate::notify::record(
            &mut tx,
            job.tenant_id,
            "job.failed",
            json!({"job": job.id, "kind": worker.kind, "attempts": job.attempt, "reason": reason}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Starts `worker.concurrency` loops that claim and run jobs of `worker.kind` until shutdown.
pub fn spawn<H: Handler>(ctx: &stella_runtime::Context, worker: Worker, handler: H) {
    let Some(db) = ctx.db.clone() else {
        warn!(kind = worker.kind, "STELLA_DATABASE_URL is not set: no jobs are run");
        return;
    };
    info!(kind = worker.kind, worker = %worker.name, concurrency = worker.concurrency,
          lease = ?worker.lease, "job worker started");
    let (worker, handler) = (Arc::new(worker), Arc::new(handler));
    let wakes = crate::wake::start(ctx);
    let topic = format!("job:{}", worker.kind);
    for _ in 0..worker.concurrency {
        let (db, worker, handler) = (db.clone(), worker.clone(), handler.clone());
        ctx.repeat_or_woken("jobs", wakes.topic(&topic), move || {
            let (db, worker, handler) = (db.clone(), worker.clone(), handler.clone());
            async move {
                // No pause after a job: another may be waiting.
                ControlFlow::Continue(match step(&db, &worker, &*handler).await {
                    Ok(true) => Duration::ZERO,
                    Ok(false) => idle_pause(&db, &worker).await,
                    Err(e) => {
                        warn!(kind = worker.kind, error = %e, "claiming a job failed; retrying");
                        worker.idle.min(RETRY_PAUSE)
                    }
                })
            }
        });
    }
}

/// How long a worker waits after a failed claim (the database down, say) before it tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// An idle worker's pause: until the next thing of its kind that no notification announces
/// (a retry whose backoff ends, a lease that expires), at most its poll.
async fn idle_pause(db: &PgPool, worker: &Worker) -> Duration {
    let due: Result<Option<f64>, _> = sqlx::query_scalar(
        "SELECT extract(epoch FROM least(
             (SELECT min(run_after) FROM stella.jobs WHERE kind = $1 AND status = 'queued' AND run_after > now()),
             (SELECT min(lease_expires_at) FROM stella.jobs WHERE kind = $1 AND status = 'running')) - now())::float8",
    )
    .bind(worker.kind)
    .fetch_one(db)
    .await;
    match due {
        Ok(Some(secs)) => Duration::from_secs_f64(secs.max(0.0)).clamp(Duration::from_millis(100), worker.idle),
        _ => worker.idle,
    }
}

/// One claim and run; `false` when there was nothing to do.
async fn step<H: Handler>(db: &PgPool, worker: &Worker, handler: &H) -> Result<bool, Error> {
    let Some(job) = claim(db, worker).await? else { return Ok(false) };
    let outcome = if job.attempt > job.max_attempts {
        // Its workers kept dying: the attempt just claimed is one too many.
        Outcome::Failed(format!("the job's worker stopped {} times without finishing it", job.max_attempts))
    } else {
        info!(job = job.id, kind = worker.kind, attempt = job.attempt, "job started");
        match run_with_heartbeat(db, worker, handler, &job).await {
            Some(outcome) => outcome,
            None => {
                warn!(job = job.id, "lost the job's lease while running it; another worker has it");
                return Ok(true);
            }
        }
    };
    let label = match &outcome {
        Outcome::Done(_) => "succeeded".to_string(),
        Outcome::Failed(e) => format!("failed: {e}"),
        Outcome::Retry(e) => format!("attempt failed: {e}"),
    };
    if finish(db, worker, handler, &job, outcome).await? {
        info!(job = job.id, kind = worker.kind, attempt = job.attempt, outcome = %label, "job attempt ended");
    } else {
        warn!(job = job.id, "the job's lease was lost before its outcome was recorded");
    }
    Ok(true)
}

/// Runs the handler while renewing the lease every third of its length; `None` when the lease
/// was lost (the handler's future is dropped then).
async fn run_with_heartbeat<H: Handler>(db: &PgPool, worker: &Worker, handler: &H, job: &Leased) -> Option<Outcome> {
    let work = handler.run(job);
    tokio::pin!(work);
    let mut beat = tokio::time::interval(worker.lease / 3);
    beat.tick().await;
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            outcome = &mut work => return Some(outcome),
            _ = beat.tick() => match heartbeat(db, worker, job).await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => return None,
                // Past the lease without a renewal, another worker may hold the job: stop, so
                // its side effects do not happen twice at once.
                Err(e) if renewed.elapsed() >= worker.lease => {
                    warn!(job = job.id, error = %e, "the lease could not be renewed in time; giving the job up");
                    return None;
                }
                Err(e) => warn!(job = job.id, error = %e, "renewing the lease failed; trying again"),
            },
        }
    }
}

/// A job as the API shows it, with its attempts: one of the caller's tenant, or a system job
/// (a feed poll) for an admin of the platform tenant.
pub async fn show(db: &PgPool, caller: &crate::authority::Caller, id: i64) -> Result<Option<Value>, Error> {
    let job: Option<Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_JSON} FROM stella.jobs j WHERE id = $1 AND (tenant_id = $2 OR ($3 AND tenant_id IS NULL))"
    )))
    .bind(id)
    .bind(caller.tenant_id)
    .bind(sees_system(caller))
    .fetch_optional(db)
    .await?;
    let Some(mut job) = job else { return Ok(None) };
    let attempts: Vec<Value> = sqlx::query_scalar(
        "SELECT json_build_object('attempt', attempt, 'worker', worker, 'startedAt', stella.rfc3339(started_at),
                'endedAt', stella.rfc3339(ended_at), 'outcome', outcome, 'detail', detail)
         FROM stella.job_attempts WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    job["attempts"] = Value::Array(attempts);
    Ok(Some(job))
}

/// The caller's jobs (and, for an admin of the platform tenant, the system jobs), newest first,
/// optionally of one kind or status.
pub async fn list(
    db: &PgPool,
    caller: &crate::authority::Caller,
    kind: Option<&str>,
    status: Option<&str>,
    page: crate::aggregation::Page,
) -> Result<Value, Error> {
    let jobs: Vec<Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_JSON} FROM stella.jobs j
         WHERE (tenant_id = $1 OR ($6 AND tenant_id IS NULL))
           AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR status = $3)
         ORDER BY id DESC LIMIT $4 OFFSET $5"
    )))
    .bind(caller.tenant_id)
    .bind(kind)
    .bind(status)
    .bind(page.limit)
    .bind(page.offset)
    .bind(sees_system(caller))
    .fetch_all(db)
    .await?;
    Ok(json!({"jobs": jobs}))
}

/// System jobs (no tenant) are the platform's: shown to the platform tenant's admins only.
fn sees_system(caller: &crate::authority::Caller) -> bool {
    caller.tenant == crate::seed::TENANT && caller.require("admin").is_ok()
}

const JOB_JSON: &str = "json_build_object('id', j.id, 'kind', j.kind, 'status', j.status, 'payload', j.payload,
    'attempt', j.attempt, 'maxAttempts', j.max_attempts, 'leaseOwner', j.lease_owner,
    'leaseExpiresAt', stella.rfc3339(j.lease_expires_at), 'result', j.result, 'error', j.error,
    'schedule', j.schedule, 'createdBy', j.created_by, 'createdAt', stella.rfc3339(j.created_at), 'finishedAt', stella.rfc3339(j.finished_at))";
