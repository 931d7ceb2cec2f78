//! How the task runner executes each kind of step of a pack: `wait`, `http` (through the egress
//! policy of [`crate::egress`]; its answer kept as an artifact when the step asks), and `export`
//! (an export job of the run's tenant, awaited).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tokio;

use crate::Error;
use object_store::ObjectStore;

use crate::egress::{self, Egress};
use crate::packs::Step;

/// Runs one step; `Ok` carries a short description of what happened.
/// Where a run executes: what its internal steps (export) need.
pub struct Place<'a> {
    pub db: &'a PgPool,
    pub tenant_id: i64,
    /// The tenant's slug: artifacts are kept under `tenants/<slug>/runs/<run>/`.
    pub tenant: &'a str,
    pub run: i64,
    /// The run's attempt (fences its writes) and the attempts of the jobs it enqueues.
    pub attempt: i32,
    pub attempts: i32,
    pub store: Option<&'a dyn ObjectStore>,
    /// `STELLA_EXPORT_MAX_PENDING` of the task runner.
    pub max_pending: i64,
}

/// The largest answer an `http` step keeps.
pub const KEEP_LIMIT: u64 = 1 << 20;

pub async fn execute(step: &Step, egress: &Arc<Egress>, place: &Place<'_>) -> Result<String, String> {
    match step {
        Step::Export { formats, scan, timeout_seconds, .. } => {
            export(place, formats, *scan, Duration::from_secs(*timeout_seconds)).await.map_err(|e| e.to_string())?
        }
        Step::Wait { seconds, .. } => {
            tokio::time::sleep(Duration::from_secs(*seconds)).await;
            Ok(format!("waited {seconds} s"))
        }
        Step::Http { id, method, url, expect_status, keep } => {
            // Parsed once: this `Uri` is what the offline check reads and what is requested.
            let uri = egress.uri(url)?;
            if *keep && place.store.is_none() {
                return Err("`keep` needs an object store: set STELLA_OBJECT_STORE_URL on the task runner".into());
            }
            let (detail, body) = request(egress, method, uri, *expect_status, *keep).await?;
            match (body, place.store) {
                (Some(body), Some(store)) => {
                    keep_artifact(place, store, id, body).await.map(|kept| format!("{detail}, {kept}"))
                }
                _ => Ok(detail),
            }
        }
    }
}

/// One HTTP request; the detail line and, when `keep`, the body.
async fn request(
    egress: &Arc<Egress>,
    method: &str,
    uri: ureq::http::Uri,
    expect: Option<u16>,
    keep: bool,
) -> Result<(String, Option<Vec<u8>>), String> {
    let (method, egress) = (method.to_string(), egress.clone());
    tokio::task::spawn_blocking(move || {
        // No redirects, no proxy, and every address checked as it is connected to.
        let agent = egress.agent(Duration::from_secs(30));
        let url = uri.to_string();
        let request = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(uri)
            .body(())
            .map_err(|e| format!("{url}: {e}"))?;
        let mut reply =
            agent.run(request).map_err(|e| egress::message(&e).unwrap_or(format!("{method} {url}: {e}")))?;
        let status = reply.status().as_u16();
        if !expect.map_or((200..300).contains(&status), |want| want == status) {
            return Err(format!("{method} {url}: status {status}"));
        }
        let body = if keep {
            let bytes =
                reply.body_mut().with_config().limit(KEEP_LIMIT).read_to_vec().map_err(|e| {
                    format!("{method} {url}: the answer cannot be kept ({e}; at most {KEEP_LIMIT} bytes)")
                })?;
            Some(bytes)
        } else {
            None
        };
        Ok((format!("{method} {url}: {status}"), body))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Writes a step's answer to the store and lists it on the run (for this attempt only).
async fn keep_artifact(
    place: &Place<'_>,
    store: &dyn ObjectStore,
    step: &str,
    body: Vec<u8>,
) -> Result<String, String> {
    let key = format!("tenants/{}/runs/{}/{step}", place.tenant, place.run);
    let (bytes, sha) = (body.len(), crate::sha256_hex(&body));
    store
        .put(&object_store::path::Path::from(key.as_str()), body.into())
        .await
        .map_err(|e| format!("keeping {key}: {e}"))?;
    sqlx::query("UPDATE stella.task_runs SET artifacts = artifacts || $2 WHERE id = $1 AND attempt = $3")
        .bind(place.run)
        .bind(serde_json::json!([{"step": step, "key": key, "bytes": bytes, "sha256": sha, "expired": false}]))
        .bind(place.attempt)
        .execute(place.db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("kept {bytes} bytes"))
}

/// An export step: an export job for the run's tenant, then its outcome. The outer error is the
/// database's; the inner one is the step's.
async fn export(
    place: &Place<'_>,
    formats: &[String],
    scan: Option<i64>,
    timeout: Duration,
) -> Result<Result<String, String>, Error> {
    let mut tx = place.db.begin().await?;
    // The checks of an export asked for through the API: the scan is the run's tenant's, and
    // the tenant's limit of pending exports holds (the task runner's own STELLA_EXPORT_MAX_PENDING).
    if let Err(refused) = crate::exports::admit(&mut tx, place.tenant_id, scan, place.max_pending).await {
        return Ok(Err(format!("export refused: {refused}")));
    }
    let by = format!("task run {}", place.run);
    let (export, job) = crate::exports::enqueue(&mut tx, place.tenant_id, formats, scan, &by, place.attempts).await?;
    tx.commit().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, error, files): (String, Option<String>, Value) = sqlx::query_as(
            "SELECT j.status, j.error, e.files FROM stella.jobs j JOIN stella.exports e ON e.job_id = j.id WHERE j.id = $1",
        )
        .bind(job)
        .fetch_one(place.db)
        .await?;
        match status.as_str() {
            "succeeded" => {
                let n = files.as_array().map_or(0, Vec::len);
                return Ok(Ok(format!("export {export}: {n} files")));
            }
            "failed" => return Ok(Err(format!("export {export} failed: {}", error.unwrap_or_default()))),
            _ if tokio::time::Instant::now() >= deadline => {
                return Ok(Err(format!(
                    "export {export} did not finish within {} s (is stella-export running?)",
                    timeout.as_secs()
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
