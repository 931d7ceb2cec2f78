//! The task runner: registered task packs (per tenant, immutable per version) and their runs,
//! each executed as an orchestrator job of kind `task-run` (see [`crate::jobs`]): leased, so a
//! run whose runner dies is started over by another, and failed for good after the attempts.
//!
//! Every step's outcome is recorded as it finishes; the first failing step fails the run with
//! its reason. In offline mode an HTTP step to a host outside the allow-list fails before any
//! connection is attempted (see [`crate::packs::Egress`]).

use std::time::Duration;

use serde_json::{Value, json};
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tokio;
use stella_runtime::tracing::{info, warn};

use crate::authority::Caller;
use crate::packs::{self, Egress, Pack, Step};
use crate::{Error, jobs, sha256_hex};

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
        None => versions.iter().filter_map(|v| semver::Version::parse(v).ok()).max().map(|v| v.to_string()),
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

/// One of the tenant's runs.
pub async fn run(db: &PgPool, caller: &Caller, id: i64) -> Result<Value, Error> {
    type Row = (String, String, String, Option<String>, Value, String, String, Option<String>, Option<i64>, i32);
    let row: Option<Row> = sqlx::query_as(
        "SELECT pack_name, pack_version, status, reason, steps, created_by, stella.rfc3339(created_at),
                stella.rfc3339(finished_at), job_id, attempt
         FROM stella.task_runs WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(caller.tenant_id)
    .fetch_optional(db)
    .await?;
    let (name, version, status, reason, steps, by, created, finished, job, attempt) =
        row.ok_or_else(|| Error::NotFound(format!("task run {id} in tenant {}", caller.tenant)))?;
    Ok(json!({"id": id, "pack": name, "version": version, "status": status, "reason": reason, "steps": steps,
              "createdBy": by, "createdAt": created, "finishedAt": finished, "job": job, "attempt": attempt}))
}

/// The orchestrator job kind of a task run.
pub const KIND: &str = "task-run";

/// Starts the workers that execute queued runs (task-runner service): orchestrator jobs of
/// kind `task-run`, leased so a run whose runner dies is started again by another.
pub fn spawn(ctx: &stella_runtime::Context) {
    let egress = Egress::new(ctx.config.bool(packs::OFFLINE.name), ctx.config.text(packs::EGRESS_ALLOW.name));
    info!(offline = egress.offline, allowed = egress.allow.join(","), "task runner egress policy");
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no task runs are executed");
        return;
    };
    jobs::spawn(ctx, jobs::Worker::new(ctx, KIND), Runs { db, egress });
}

struct Runs {
    db: PgPool,
    egress: Egress,
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
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(job.payload["run"].as_i64())
        .bind(reason)
        .execute(tx)
        .await?;
        Ok(())
    }
}

impl Runs {
    /// Runs the pack from its first step (a retried run starts over: its steps so far are
    /// cleared). Every write names the attempt, so a runner that lost its lease writes nothing.
    /// The outer error is the database's (retry); the inner one is the run's own failure.
    async fn execute(&self, job: &jobs::Leased) -> Result<Result<(), String>, Error> {
        let (db, id) = (&self.db, job.payload["run"].as_i64().unwrap_or_default());
        let document: Option<Value> = sqlx::query_scalar(
            "UPDATE stella.task_runs r SET status = 'running', steps = '[]', attempt = $2
             FROM stella.task_packs p
             WHERE r.id = $1 AND p.tenant_id = r.tenant_id AND p.name = r.pack_name AND p.version = r.pack_version
             RETURNING p.document",
        )
        .bind(id)
        .bind(job.attempt)
        .fetch_optional(db)
        .await?;
        let Some(document) = document else { return Ok(Err(format!("task run {id} does not exist"))) };
        let pack: Pack = serde_json::from_value(document).map_err(|e| Error::Internal(format!("run {id}: {e}")))?;
        info!(run = id, pack = %pack.name, version = %pack.version, attempt = job.attempt, "task run started");
        let mut outcome: Result<(), String> = Ok(());
        for step in &pack.steps {
            let result = execute(step, &self.egress).await;
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

/// Runs one step; `Ok` carries a short description of what happened.
async fn execute(step: &Step, egress: &Egress) -> Result<String, String> {
    match step {
        Step::Wait { seconds, .. } => {
            tokio::time::sleep(Duration::from_secs(*seconds)).await;
            Ok(format!("waited {seconds} s"))
        }
        Step::Http { method, url, expect_status, .. } => {
            // Before any socket is opened: offline mode refuses the host here.
            egress.check(url)?;
            let (method, url, expect) = (method.clone(), url.clone(), *expect_status);
            tokio::task::spawn_blocking(move || {
                // No redirects: the egress check saw only this URL, and a redirect could lead
                // anywhere (the step fails on a 3xx instead).
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .max_redirects(0)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let request = ureq::http::Request::builder()
                    .method(method.as_str())
                    .uri(&url)
                    .body(())
                    .map_err(|e| format!("{url}: {e}"))?;
                let status = agent.run(request).map_err(|e| format!("{method} {url}: {e}"))?.status().as_u16();
                let ok = expect.map_or((200..300).contains(&status), |want| want == status);
                if ok {
                    Ok(format!("{method} {url}: {status}"))
                } else {
                    Err(format!("{method} {url}: status {status}"))
                }
            })
            .await
            .map_err(|e| e.to_string())?
        }
    }
}
