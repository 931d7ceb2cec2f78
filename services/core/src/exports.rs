//! The export center (stella-export): a tenant's findings, SBOMs and VEX written to the object
//! store as files, by an orchestrator job of kind `export` (leased, retried; see [`crate::jobs`]).
//!
//! Formats: `json` and `csv` (findings, one row per finding), `spdx` (SPDX 2.3 JSON) and
//! `cyclonedx` (CycloneDX 1.5 JSON), one SBOM per scan from its components, and `openvex`
//! (OpenVEX 0.2.0, one statement per finding with its status). Which formats are enabled is
//! configuration (`STELLA_EXPORT_FORMATS`); a tenant may have at most
//! `STELLA_EXPORT_MAX_PENDING` exports queued or running (429 beyond: the rate limit), and the
//! worker's job concurrency bounds the load on the database.
//!
//! The object store is `STELLA_OBJECT_STORE_URL` through the `object_store` crate: a directory
//! (`file:///...`, a volume) or S3 and compatible stores (`s3://bucket/prefix`). Unset or
//! unusable, the export routes answer 503 saying what to set (the service still serves its
//! contract, so a chart install does not crash-loop on it).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::authority::Caller;
use crate::{Error, jobs, sha256_hex};

pub const FORMATS: Setting = s(
    "STELLA_EXPORT_FORMATS",
    SettingKind::Text,
    Fallback::Value("json,csv,spdx,cyclonedx,openvex"),
    "Export formats enabled, comma-separated: json, csv, spdx, cyclonedx, openvex.",
);

pub const MAX_PENDING: Setting = s(
    "STELLA_EXPORT_MAX_PENDING",
    SettingKind::Count { min: 1, max: 1000 },
    Fallback::Value("4"),
    "Exports a tenant may have queued or running at once; more are refused with 429.",
);

/// `STELLA_EXPORT_MAX_PENDING` of a service that declares it (the default where it does not).
pub fn max_pending(config: &stella_runtime::config::Config) -> i64 {
    config.int(MAX_PENDING.name).unwrap_or(4) as i64
}

pub const ALL_FORMATS: [&str; 5] = ["json", "csv", "spdx", "cyclonedx", "openvex"];

/// The runtime's common setting naming the object store.
pub const STORE_URL: &str = "STELLA_OBJECT_STORE_URL";

/// The orchestrator job kind of an export.
pub const KIND: &str = "export";

/// Parses `STELLA_EXPORT_FORMATS`; the error names the unknown format.
pub fn parse_formats(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !ALL_FORMATS.contains(&f) {
            return Err(format!("`{f}` is not one of {}", ALL_FORMATS.join(", ")));
        }
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    if out.is_empty() {
        return Err("no format is enabled".into());
    }
    Ok(out)
}

/// Where exports are written: `STELLA_OBJECT_STORE_URL` and, for `s3://`, the region and
/// endpoint settings.
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    pub url: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

impl StoreConfig {
    pub fn from(config: &stella_runtime::config::Config) -> StoreConfig {
        let text = |name: &str| config.text(name).map(str::to_string);
        StoreConfig {
            url: text(STORE_URL),
            region: text("STELLA_OBJECT_STORE_REGION"),
            endpoint: text("STELLA_OBJECT_STORE_ENDPOINT"),
        }
    }
}

/// The object store of `config`; the error says what to set.
///
/// `file:///dir`: `object_store`'s local file system (writes go to a temporary file, then a
/// rename). `s3://bucket[/prefix]`: its S3 client, credentials from the standard `AWS_*`
/// environment (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, as the chart sets them from
/// `objectStore.existingSecret`, or a web identity), region and endpoint from the settings (an
/// `http://` endpoint, such as a MinIO in the same cluster, is allowed).
pub fn store(config: &StoreConfig) -> Result<Arc<dyn ObjectStore>, String> {
    let Some(url) = config.url.as_deref() else {
        return Err("STELLA_OBJECT_STORE_URL is not set: set it to file:///var/lib/stella/objects (a volume) \
                    or s3://bucket/prefix to keep exports"
            .into());
    };
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| format!("STELLA_OBJECT_STORE_URL: creating {path}: {e}"))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| format!("STELLA_OBJECT_STORE_URL: {path}: {e}"))?;
        return Ok(Arc::new(fs));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err("STELLA_OBJECT_STORE_URL: put no credentials in the URL; give them as \
                        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the chart's objectStore.existingSecret)"
                .into());
        }
        if bucket.is_empty() {
            return Err("STELLA_OBJECT_STORE_URL: s3:// needs a bucket: s3://bucket[/prefix]".into());
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let s3 = builder.build().map_err(|e| format!("STELLA_OBJECT_STORE_URL: s3://{bucket}: {e}"))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        });
    }
    Err(format!(
        "STELLA_OBJECT_STORE_URL: `{}` is neither file:///path nor s3://bucket[/prefix]",
        crate::urls::public_url(url)
    ))
}

/// A request for an export.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub formats: Vec<String>,
    /// Only this scan (default: every scan of the tenant).
    pub scan: Option<i64>,
}

/// Every requested format is enabled (422 naming the first that is not).
pub fn check_formats(requested: &[String], enabled: &[String]) -> Result<(), Error> {
    if requested.is_empty() {
        return Err(Error::bad("formats", format!("name at least one of {}", enabled.join(", "))));
    }
    for f in requested {
        if !enabled.contains(f) {
            return Err(Error::bad("formats", format!("`{f}` is not enabled here (enabled: {})", enabled.join(", "))));
        }
    }
    Ok(())
}

/// Queues an export: 202 with the export, 422 for a format not enabled, 429 over the limit.
pub async fn create(
    db: &PgPool,
    caller: &Caller,
    request: Request,
    enabled: &[String],
    max_pending: i64,
    attempts: i32,
) -> Result<Value, Error> {
    caller.require("operator")?;
    check_formats(&request.formats, enabled)?;
    let mut tx = db.begin().await?;
    admit(&mut tx, caller.tenant_id, request.scan, max_pending).await?;
    let (export, _job) =
        enqueue(&mut tx, caller.tenant_id, &request.formats, request.scan, &caller.username, attempts).await?;
    tx.commit().await?;
    show(db, caller, export).await
}

/// The checks every export passes, whoever asks for it (the API, a task pack's step, a
/// schedule), in the transaction that records it: the scan is the tenant's own, and the tenant
/// has fewer than `max_pending` other exports queued or running. A tenant's requests are
/// serialized so two at once cannot both pass the limit.
pub async fn admit(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    scan: Option<i64>,
    max_pending: i64,
) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('stella.exports/' || $1::text))")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    if let Some(scan) = scan {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM stella.scans WHERE id = $1 AND tenant_id = $2")
            .bind(scan)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        found.ok_or_else(|| Error::NotFound(format!("scan {scan} in this tenant")))?;
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stella.exports e JOIN stella.jobs j ON j.id = e.job_id
         WHERE e.tenant_id = $1 AND j.status IN ('queued', 'running')",
    )
    .bind(tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    if pending >= max_pending {
        return Err(Error::TooMany(format!(
            "the tenant has {pending} exports queued or running (at most {max_pending}); retry when one has finished"
        )));
    }
    Ok(())
}

/// Writes an export row and its job in the caller's transaction: `(export, job)`. The checks
/// are the caller's: role and formats, then [`admit`].
pub async fn enqueue(
    tx: &mut sqlx::PgConnection,
    tenant_id: i64,
    formats: &[String],
    scan: Option<i64>,
    created_by: &str,
    attempts: i32,
) -> Result<(i64, i64), Error> {
    let export: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('stella.exports', 'id'))")
        .fetch_one(&mut *tx)
        .await?;
    let job = jobs::enqueue(
        &mut *tx,
        jobs::NewJob {
            tenant_id: Some(tenant_id),
            kind: KIND,
            payload: json!({"export": export}),
            max_attempts: attempts,
            created_by,
        },
    )
    .await?;
    sqlx::query(
        "INSERT INTO stella.exports (id, tenant_id, job_id, formats, scan_id, created_by)
         OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(export)
    .bind(tenant_id)
    .bind(job)
    .bind(formats)
    .bind(scan)
    .bind(created_by)
    .execute(&mut *tx)
    .await?;
    Ok((export, job))
}

/// One of the tenant's exports with its job's status and, once written, its files.
pub async fn show(db: &PgPool, caller: &Caller, id: i64) -> Result<Value, Error> {
    let row: Option<Value> = sqlx::query_scalar(
        "SELECT json_build_object('id', e.id, 'formats', e.formats, 'scan', e.scan_id, 'files', e.files,
                'job', e.job_id, 'status', j.status, 'attempt', j.attempt, 'error', j.error,
                'createdBy', e.created_by, 'createdAt', stella.rfc3339(e.created_at),
                'finishedAt', stella.rfc3339(j.finished_at))
         FROM stella.exports e JOIN stella.jobs j ON j.id = e.job_id WHERE e.id = $1 AND e.tenant_id = $2",
    )
    .bind(id)
    .bind(caller.tenant_id)
    .fetch_optional(db)
    .await?;
    row.ok_or_else(|| Error::NotFound(format!("export {id} in tenant {}", caller.tenant)))
}

/// The bytes of one file of an export, from the object store.
pub async fn file(
    db: &PgPool,
    store: &dyn ObjectStore,
    caller: &Caller,
    id: i64,
    name: &str,
) -> Result<(String, Vec<u8>), Error> {
    let export = show(db, caller, id).await?;
    let entry = export["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["name"] == name))
        .ok_or_else(|| Error::NotFound(format!("file {name} of export {id}")))?;
    let key = entry["key"].as_str().unwrap_or_default();
    let bytes = store
        .get(&StorePath::from(key))
        .await
        .map_err(|e| Error::Internal(format!("reading {key}: {e}")))?
        .bytes()
        .await
        .map_err(|e| Error::Internal(format!("reading {key}: {e}")))?;
    Ok((entry["mediaType"].as_str().unwrap_or("application/octet-stream").to_string(), bytes.to_vec()))
}

/// Starts the export workers (stella-export).
pub fn spawn(ctx: &stella_runtime::Context, store: Arc<dyn ObjectStore>, formats: Vec<String>) {
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no exports are written");
        return;
    };
    let max_pending = max_pending(&ctx.config);
    jobs::spawn(ctx, jobs::Worker::new(ctx, KIND), Exports { db, store, formats, max_pending });
}

struct Exports {
    db: PgPool,
    store: Arc<dyn ObjectStore>,
    /// `STELLA_EXPORT_FORMATS`, checked again here: exports asked for by a schedule or a task
    /// pack step did not pass through this service's API.
    formats: Vec<String>,
    /// `STELLA_EXPORT_MAX_PENDING`, for the exports schedules ask for.
    max_pending: i64,
}

impl jobs::Handler for Exports {
    async fn run(&self, job: &jobs::Leased) -> jobs::Outcome {
        let id = match job.payload["export"].as_i64() {
            Some(id) => id,
            // A scheduled export: its row is made by its job (once, whatever the attempt).
            None => match self.scheduled(job).await {
                Ok(id) => id,
                Err(e) => return jobs::Outcome::from_error(e),
            },
        };
        match self.write(id).await {
            Ok(files) => {
                info!(export = id, files = files.len(), "export written");
                jobs::Outcome::Done(json!({"export": id, "files": files.len()}))
            }
            Err(e) => jobs::Outcome::from_error(e),
        }
    }
}

impl Exports {
    /// The export row of a job enqueued by a schedule, made on its first attempt.
    async fn scheduled(&self, job: &jobs::Leased) -> Result<i64, Error> {
        let request: Request =
            serde_json::from_value(job.payload.clone()).map_err(|e| Error::bad("scheduled export", e.to_string()))?;
        let tenant = job.tenant_id.ok_or_else(|| Error::bad("scheduled export", "has no tenant"))?;
        let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM stella.exports WHERE job_id = $1")
            .bind(job.id)
            .fetch_optional(&self.db)
            .await?;
        if let Some(id) = existing {
            return Ok(id);
        }
        // The same checks as an export asked for through the API; this job is running, so it
        // is one of the pending ones.
        let mut tx = self.db.begin().await?;
        admit(&mut tx, tenant, request.scan, self.max_pending + 1).await?;
        let id = sqlx::query_scalar(
            "INSERT INTO stella.exports (tenant_id, job_id, formats, scan_id, created_by)
             VALUES ($1, $2, $3, $4, 'orchestrator') RETURNING id",
        )
        .bind(tenant)
        .bind(job.id)
        .bind(&request.formats)
        .bind(request.scan)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn write(&self, id: i64) -> Result<Vec<Value>, Error> {
        let row: Option<(i64, String, Vec<String>, Option<i64>)> = sqlx::query_as(
            "SELECT e.tenant_id, t.slug, e.formats, e.scan_id FROM stella.exports e
             JOIN stella.tenants t ON t.id = e.tenant_id WHERE e.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db)
        .await?;
        let (tenant_id, tenant, formats, scan) = row.ok_or_else(|| Error::NotFound(format!("export {id}")))?;
        check_formats(&formats, &self.formats)?;
        let data = crate::export_formats::Data::load(&self.db, tenant_id, &tenant, id, scan).await?;
        let mut files = Vec::new();
        for format in &formats {
            for (name, media_type, bytes) in data.render(format)? {
                let key = format!("tenants/{tenant}/exports/{id}/{name}");
                self.store
                    .put(&StorePath::from(key.as_str()), bytes.clone().into())
                    .await
                    .map_err(|e| Error::Internal(format!("writing {key}: {e}")))?;
                files.push(json!({"name": name, "format": format, "mediaType": media_type, "key": key,
                                  "bytes": bytes.len(), "sha256": sha256_hex(&bytes)}));
            }
        }
        sqlx::query("UPDATE stella.exports SET files = $2 WHERE id = $1")
            .bind(id)
            .bind(Value::Array(files.clone()))
            .execute(&self.db)
            .await?;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_name_the_unknown_one() {
        assert_eq!(parse_formats("csv, json,csv").unwrap(), ["csv", "json"]);
        assert!(parse_formats("csv,xlsx").unwrap_err().contains("`xlsx`"));
        assert!(parse_formats(" ").is_err());
    }

    #[test]
    fn stores_refuse_credentials_in_urls_and_unknown_schemes() {
        let store_of = |url: &str| store(&StoreConfig { url: Some(url.into()), ..Default::default() });
        let e = store_of("s3://key:secret@bucket/prefix").err().unwrap();
        assert!(e.contains("AWS_ACCESS_KEY_ID") && !e.contains("secret@"), "{e}");
        let e = store_of("gs://user:pw@bucket").err().unwrap();
        assert!(e.contains("neither") && !e.contains("pw"), "{e}");
        assert!(store(&StoreConfig::default()).err().unwrap().contains("not set"));
    }
}
