//! The task runner: registered task packs (per tenant, immutable per version) and their runs,
//! each executed as an orchestrator job of kind `task-run` (see [`crate::jobs`]): leased, so a
//! run whose runner dies is started over by another, and failed for good after the attempts.
//!
//! Every step's outcome is recorded as it finishes; the first failing step fails the run with
//! its reason. An HTTP step connects only where the egress policy admits (no internal address
//! unless allowed; in offline mode only the allowed hosts): see [`crate::egress`].

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::authority::Caller;
use crate::egress::Egress;
use crate::packs::{self, Pack};
use crate::{Error, jobs, sha256_hex, steps};

/// Registers a pack for the caller's tenant: 201 new, 200 the same content again, 409 other
/// content under an existing version.
pub async fn register(db: &PgPool, caller: &Caller, body: &[u8]) -> Result<(bool, Value), Error> {
    caller.require("operator")?;
    let pack = packs::parse(body).map_err(|problem| Error::bad("task pack", problem))?;
    let document = serde_json::to_value(&pack).map_err(|e| Error::Internal(e.to_string()))?;
    let sha = sha256_hex(&serde_json::to_vec(&document).map_err(|e| Error::Internal(e.to_string()))?);
    let inserted = sqlx::query(
        "INSERT INTO stella.task_packs (tenant_id, name, version, document, sha256) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, name, version) DO NOTHING",
    )
    .bind(caller.tenant_id)
    .bind(&pack.name)
    .bind(&pack.version)
    .bind(&document)
    .bind(&sha)
    .execute(db)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        let existing: String = sqlx::query_scalar(
            "SELECT sha256 FROM stella.task_packs WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(caller.tenant_id)
        .bind(&pack.name)
        .bind(&pack.version)
        .fetch_one(db)
        .await?;
        if existing != sha {
            return Err(Error::Conflict(format!(
                "task pack {} {} exists with other content: publish the change under a new version",
                pack.name, pack.version
            )));
        }
    }
    Ok((inserted, json!({"name": pack.name, "version": pack.version, "sha256": sha, "steps": pack.steps.len()})))
}

/// The tenant's packs, every version.
pub async fn list(db: &PgPool, caller: &Caller) -> Result<Value, Error> {
    let rows: Vec<(String, String, Value, String)> = sqlx::query_as(
        "SELECT name, version, document, sha256 FROM stella.task_packs WHERE tenant_id = $1 ORDER BY name, version",
    )
    .bind(caller.tenant_id)
    .fetch_all(db)
    .await?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|(name, version, document, sha)| json!({"name": name, "version": version, "sha256": sha, "document": document}))
            .collect(),
    ))
}

/// Queues a run of `name` (the newest version unless `version` is given).
pub async fn start(
    db: &PgPool,
    caller: &Caller,
    name: &str,
    version: Option<&str>,
    max_attempts: i32,
) -> Result<Value, Error> {
    caller.require("operator")?;
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT version FROM stella.task_packs WHERE tenant_id = $1 AND name = $2")
            .bind(caller.tenant_id)
            .bind(name)
            .fetch_all(db)
            .await?;
    let chosen = match version {
        Some(v) => versions.iter().find(|x| *x == v).cloned(),
        None => newest(&versions),
    };
    let version = chosen.ok_or_else(|| {
        Error::NotFound(format!(
            "task pack {name}{} in tenant {}",
            version.map(|v| format!(" {v}")).unwrap_or_default(),
            caller.tenant
        ))
    })?;
    // The run and the orchestrator job that executes it exist together or not at all.
    let mut tx = db.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO stella.task_runs (tenant_id, pack_name, pack_version, status, created_by) VALUES ($1, $2, $3, 'queued', $4)
         RETURNING id",
    )
    .bind(caller.tenant_id)
    .bind(name)
    .bind(&version)
    .bind(&caller.username)
    .fetch_one(&mut *tx)
    .await?;
    let job = jobs::enqueue(
        &mut tx,
        jobs::NewJob {
            tenant_id: Some(caller.tenant_id),
            kind: KIND,
            payload: json!({"run": id}),
            max_attempts,
            created_by: &caller.username,
        },
    )
    .await?;
    sqlx::query("UPDATE stella.task_runs SET job_id = $2 WHERE id = $1").bind(id).bind(job).execute(&mut *tx).await?;
    tx.commit().await?;
    run(db, caller, id).await
}

/// The newest of a pack's versions (semantic versioning order).
fn newest(versions: &[String]) -> Option<String> {
    versions.iter().filter_map(|v| semver::Version::parse(v).ok()).max().map(|v| v.to_string())
}

/// One of the tenant's runs.
pub async fn run(db: &PgPool, caller: &Caller, id: i64) -> Result<Value, Error> {
    type Row = (String, String, String, Option<String>, Value, String, String, Option<String>, Option<i64>, i32, Value);
    let row: Option<Row> = sqlx::query_as(
        "SELECT pack_name, pack_version, status, reason, steps, created_by, stella.rfc3339(created_at),
                stella.rfc3339(finished_at), job_id, attempt, artifacts
         FROM stella.task_runs WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(caller.tenant_id)
    .fetch_optional(db)
    .await?;
    let (name, version, status, reason, steps, by, created, finished, job, attempt, artifacts) =
        row.ok_or_else(|| Error::NotFound(format!("task run {id} in tenant {}", caller.tenant)))?;
    Ok(json!({"id": id, "pack": name, "version": version, "status": status, "reason": reason, "steps": steps,
              "createdBy": by, "createdAt": created, "finishedAt": finished, "job": job, "attempt": attempt,
              "artifacts": artifacts}))
}

/// The orchestrator job kind of a task run.
pub const KIND: &str = "task-run";

/// Starts the workers that execute queued runs (task-runner service): orchestrator jobs of
/// kind `task-run`, leased so a run whose runner dies is started again by another; and the
/// artifact retention sweeper. Returns the object store of the artifacts, if one is usable.
pub fn spawn(ctx: &stella_runtime::Context) -> Option<Arc<dyn ObjectStore>> {
    let egress = Arc::new(Egress::from_config(&ctx.config));
    let max_pending = crate::exports::max_pending(&ctx.config);
    info!(policy = egress.summary(), "task runner egress policy");
    let store = match crate::exports::store(&crate::exports::StoreConfig::from(&ctx.config)) {
        Ok(store) => Some(store),
        Err(e) => {
            warn!(problem = %e, "no object store: steps that keep their answer will fail");
            None
        }
    };
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no task runs are executed");
        return store;
    };
    let retention = ctx.config.duration(ARTIFACT_RETENTION.name).unwrap_or(Duration::from_secs(7 * 24 * 3600));
    if let Some(store) = &store {
        spawn_sweeper(ctx, db.clone(), store.clone(), retention);
    }
    jobs::spawn(ctx, jobs::Worker::new(ctx, KIND), Runs { db, egress, store: store.clone(), max_pending });
    store
}

pub const ARTIFACT_RETENTION: Setting = s(
    "STELLA_TASKS_ARTIFACT_RETENTION",
    SettingKind::Duration,
    Fallback::Value("168h"),
    "How long the artifacts of a finished task run are kept in the object store.",
);

/// Deletes the artifacts of runs finished longer ago than `retention`, every `retention` (at
/// most every minute), and marks them expired on the run.
fn spawn_sweeper(ctx: &stella_runtime::Context, db: PgPool, store: Arc<dyn ObjectStore>, retention: Duration) {
    let every = retention.min(Duration::from_secs(60));
    ctx.every("artifact-retention", every, move || {
        let (db, store) = (db.clone(), store.clone());
        async move {
            match sweep(&db, &*store, retention).await {
                Ok(0) => {}
                Ok(n) => info!(artifacts = n, "expired task run artifacts deleted"),
                Err(e) => warn!(error = %e, "deleting expired artifacts failed; retrying"),
            }
        }
    });
}

async fn sweep(db: &PgPool, store: &dyn ObjectStore, retention: Duration) -> Result<usize, Error> {
    let runs: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT id, artifacts FROM stella.task_runs
         WHERE finished_at < now() - make_interval(secs => $1) AND artifacts @> '[{\"expired\": false}]'",
    )
    .bind(retention.as_secs_f64())
    .fetch_all(db)
    .await?;
    let mut deleted = 0;
    for (id, artifacts) in runs {
        let mut entries = artifacts.as_array().cloned().unwrap_or_default();
        for entry in entries.iter_mut().filter(|e| e["expired"] == false) {
            let key = entry["key"].as_str().unwrap_or_default().to_string();
            match store.delete(&object_store::path::Path::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::Internal(format!("deleting {key}: {e}"))),
            }
            entry["expired"] = Value::Bool(true);
            deleted += 1;
        }
        sqlx::query("UPDATE stella.task_runs SET artifacts = $2 WHERE id = $1")
            .bind(id)
            .bind(Value::Array(entries))
            .execute(db)
            .await?;
    }
    Ok(deleted)
}

/// The bytes of a run's artifact; 410 once retention has deleted it.
pub async fn artifact(
    db: &PgPool,
    store: &dyn ObjectStore,
    caller: &Caller,
    id: i64,
    step: &str,
) -> Result<Vec<u8>, Error> {
    let run = run(db, caller, id).await?;
    let entry = run["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["step"] == step))
        .ok_or_else(|| Error::NotFound(format!("artifact of step {step} of task run {id}")))?;
    if entry["expired"] == true {
        return Err(Error::Gone(format!("the artifact of step {step} of task run {id} has expired (retention)")));
    }
    let key = entry["key"].as_str().unwrap_or_default();
    let got =
        store.get(&object_store::path::Path::from(key)).await.map_err(|e| Error::Internal(format!("{key}: {e}")))?;
    Ok(got.bytes().await.map_err(|e| Error::Internal(format!("{key}: {e}")))?.to_vec())
}

struct Runs {
    db: PgPool,
    egress: Arc<Egress>,
    store: Option<Arc<dyn ObjectStore>>,
    max_pending: i64,
}

impl jobs::Handler for Runs {
    async fn run(&self, job: &jobs::Leased) -> jobs::Outcome {
        match self.execute(job).await {
            Ok(Ok(())) => jobs::Outcome::Done(json!({"run": job.payload["run"]})),
            Ok(Err(reason)) => jobs::Outcome::Failed(reason),
            Err(e) => jobs::Outcome::Retry(e.to_string()),
        }
    }

    async fn failed(&self, tx: &mut sqlx::PgConnection, job: &jobs::Leased, reason: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE stella.task_runs SET status = 'failed', reason = $2, finished_at = now()
             WHERE (id = $1 OR job_id = $3) AND tenant_id = $4 AND status IN ('queued', 'running')",
        )
        .bind(job.payload["run"].as_i64())
        .bind(reason)
        .bind(job.id)
        .bind(job.tenant_id)
        .execute(tx)
        .await?;
        Ok(())
    }
}

impl Runs {
    /// The run of a job enqueued by a schedule (`{"pack", "version"?}`), made on its first
    /// attempt: the newest version unless one is named.
    async fn scheduled(&self, job: &jobs::Leased) -> Result<Result<i64, String>, Error> {
        let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM stella.task_runs WHERE job_id = $1")
            .bind(job.id)
            .fetch_optional(&self.db)
            .await?;
        if let Some(id) = existing {
            return Ok(Ok(id));
        }
        let (Some(tenant), Some(pack)) = (job.tenant_id, job.payload["pack"].as_str()) else {
            return Ok(Err("a scheduled task run names no tenant or pack".into()));
        };
        let versions: Vec<String> =
            sqlx::query_scalar("SELECT version FROM stella.task_packs WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(pack)
                .fetch_all(&self.db)
                .await?;
        let version = match job.payload["version"].as_str() {
            Some(v) => versions.iter().find(|x| *x == v).cloned(),
            None => newest(&versions),
        };
        let Some(version) = version else { return Ok(Err(format!("task pack {pack} is not registered"))) };
        Ok(Ok(sqlx::query_scalar(
            "INSERT INTO stella.task_runs (tenant_id, pack_name, pack_version, status, created_by, job_id)
             VALUES ($1, $2, $3, 'queued', 'orchestrator', $4) RETURNING id",
        )
        .bind(tenant)
        .bind(pack)
        .bind(&version)
        .bind(job.id)
        .fetch_one(&self.db)
        .await?))
    }

    /// Runs the pack from its first step (a retried run starts over: its steps so far are
    /// cleared). Every write names the attempt, so a runner that lost its lease writes nothing.
    /// The outer error is the database's (retry); the inner one is the run's own failure.
    async fn execute(&self, job: &jobs::Leased) -> Result<Result<(), String>, Error> {
        let db = &self.db;
        let id = match job.payload["run"].as_i64() {
            Some(id) => id,
            None => match self.scheduled(job).await? {
                Ok(id) => id,
                Err(reason) => return Ok(Err(reason)),
            },
        };
        let row: Option<(Value, i64, String)> = sqlx::query_as(
            "UPDATE stella.task_runs r SET status = 'running', steps = '[]', artifacts = '[]', attempt = $2,
                    reason = NULL, finished_at = NULL
             FROM stella.task_packs p, stella.tenants t
             WHERE r.id = $1 AND r.tenant_id = $3 AND p.tenant_id = r.tenant_id AND p.name = r.pack_name
               AND p.version = r.pack_version AND t.id = r.tenant_id
             RETURNING p.document, r.tenant_id, t.slug",
        )
        .bind(id)
        .bind(job.attempt)
        .bind(job.tenant_id)
        .fetch_optional(db)
        .await?;
        let Some((document, tenant_id, tenant)) = row else { return Ok(Err(format!("task run {id} does not exist"))) };
        let place = steps::Place {
            db,
            tenant_id,
            tenant: &tenant,
            run: id,
            attempt: job.attempt,
            attempts: job.max_attempts,
            store: self.store.as_deref(),
            max_pending: self.max_pending,
        };
        let pack: Pack = serde_json::from_value(document).map_err(|e| Error::Internal(format!("run {id}: {e}")))?;
        info!(run = id, pack = %pack.name, version = %pack.version, attempt = job.attempt, "task run started");
        let mut outcome: Result<(), String> = Ok(());
        for step in &pack.steps {
            let result = steps::execute(step, &self.egress, &place).await;
            let (status, detail) = match &result {
                Ok(d) => ("succeeded", d.clone()),
                Err(e) => ("failed", e.clone()),
            };
            sqlx::query("UPDATE stella.task_runs SET steps = steps || $2 WHERE id = $1 AND attempt = $3")
                .bind(id)
                .bind(json!([{"id": step.id(), "status": status, "detail": detail}]))
                .bind(job.attempt)
                .execute(db)
                .await?;
            if let Err(e) = result {
                outcome = Err(format!("step {}: {e}", step.id()));
                break;
            }
        }
        let (status, reason) = match &outcome {
            Ok(()) => ("succeeded", None),
            Err(e) => ("failed", Some(e.clone())),
        };
        sqlx::query(
            "UPDATE stella.task_runs SET status = $2, reason = $3, finished_at = now() WHERE id = $1 AND attempt = $4",
        )
        .bind(id)
        .bind(status)
        .bind(&reason)
        .bind(job.attempt)
        .execute(db)
        .await?;
        match &reason {
            None => info!(run = id, "task run succeeded"),
            Some(r) => warn!(run = id, reason = %r, "task run failed"),
        }
        Ok(outcome)
    }
}
