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
//! The object store is `object_store`'s local file system under `STELLA_OBJECT_STORE_URL`
//! (`file:///...`); `s3://` is refused at start-up in this release (the crate's S3 client is not
//! compiled in yet), with a message saying so. Unset, the export routes answer 503 saying what
//! to set (the service still serves its contract).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::authority::Caller;
use crate::{Error, jobs, sha256_hex};

pub const FORMATS: Setting = Setting {
    name: "STELLA_EXPORT_FORMATS",
    kind: SettingKind::Text,
    default: Fallback::Value("json,csv,spdx,cyclonedx,openvex"),
    secret: false,
    description: "Export formats enabled, comma-separated: json, csv, spdx, cyclonedx, openvex.",
};

pub const MAX_PENDING: Setting = Setting {
    name: "STELLA_EXPORT_MAX_PENDING",
    kind: SettingKind::Count { min: 1, max: 1000 },
    default: Fallback::Value("4"),
    secret: false,
    description: "Exports a tenant may have queued or running at once; more are refused with 429.",
};

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

/// The object store named by `STELLA_OBJECT_STORE_URL`; the error says what to set.
pub fn store(url: Option<&str>) -> Result<Arc<dyn ObjectStore>, String> {
    let Some(url) = url else {
        return Err("STELLA_OBJECT_STORE_URL is not set: set it to file:///var/lib/stella/objects (a volume) \
                    to keep exports"
            .into());
    };
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| format!("STELLA_OBJECT_STORE_URL: creating {path}: {e}"))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| format!("STELLA_OBJECT_STORE_URL: {path}: {e}"))?;
        return Ok(Arc::new(fs));
    }
    Err(format!(
        "STELLA_OBJECT_STORE_URL: `{}` is not supported by this release of the export center: \
         use file:///path (a volume); s3:// stores are not built in yet",
        crate::sources::public_url(url)
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
    if request.formats.is_empty() {
        return Err(Error::bad("formats", format!("name at least one of {}", enabled.join(", "))));
    }
    for f in &request.formats {
        if !enabled.contains(f) {
            return Err(Error::bad("formats", format!("`{f}` is not enabled here (enabled: {})", enabled.join(", "))));
        }
    }
    let mut tx = db.begin().await?;
    // Serialize a tenant's requests so two at once cannot both pass the limit.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('stella.exports/' || $1::text))")
        .bind(caller.tenant_id)
        .execute(&mut *tx)
        .await?;
    if let Some(scan) = request.scan {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM stella.scans WHERE id = $1 AND tenant_id = $2")
            .bind(scan)
            .bind(caller.tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        found.ok_or_else(|| Error::NotFound(format!("scan {scan} in tenant {}", caller.tenant)))?;
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stella.exports e JOIN stella.jobs j ON j.id = e.job_id
         WHERE e.tenant_id = $1 AND j.status IN ('queued', 'running')",
    )
    .bind(caller.tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    if pending >= max_pending {
        return Err(Error::TooMany(format!(
            "tenant {} has {pending} exports queued or running (at most {max_pending}); retry when one has finished",
            caller.tenant
        )));
    }
    let export: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('stella.exports', 'id'))")
        .fetch_one(&mut *tx)
        .await?;
    let job = jobs::enqueue(
        &mut tx,
        jobs::NewJob {
            tenant_id: Some(caller.tenant_id),
            kind: KIND,
            payload: json!({"export": export}),
            max_attempts: attempts,
            created_by: &caller.username,
        },
    )
    .await?;
    sqlx::query(
        "INSERT INTO stella.exports (id, tenant_id, job_id, formats, scan_id, created_by)
         OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(export)
    .bind(caller.tenant_id)
    .bind(job)
    .bind(&request.formats)
    .bind(request.scan)
    .bind(&caller.username)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    show(db, caller, export).await
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
pub fn spawn(ctx: &stella_runtime::Context, store: Arc<dyn ObjectStore>) {
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no exports are written");
        return;
    };
    jobs::spawn(ctx, jobs::Worker::new(ctx, KIND), Exports { db, store });
}

struct Exports {
    db: PgPool,
    store: Arc<dyn ObjectStore>,
}

impl jobs::Handler for Exports {
    async fn run(&self, job: &jobs::Leased) -> jobs::Outcome {
        let id = job.payload["export"].as_i64().unwrap_or_default();
        match self.write(id).await {
            Ok(files) => {
                info!(export = id, files = files.len(), "export written");
                jobs::Outcome::Done(json!({"export": id, "files": files.len()}))
            }
            Err(Error::Internal(e)) => jobs::Outcome::Retry(e),
            Err(e) => jobs::Outcome::Failed(e.to_string()),
        }
    }
}

impl Exports {
    async fn write(&self, id: i64) -> Result<Vec<Value>, Error> {
        let row: Option<(i64, String, Vec<String>, Option<i64>)> = sqlx::query_as(
            "SELECT e.tenant_id, t.slug, e.formats, e.scan_id FROM stella.exports e
             JOIN stella.tenants t ON t.id = e.tenant_id WHERE e.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db)
        .await?;
        let (tenant_id, tenant, formats, scan) = row.ok_or_else(|| Error::NotFound(format!("export {id}")))?;
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
    fn s3_is_refused_with_what_to_do_and_no_credentials() {
        let e = store(Some("s3://key:secret@bucket/prefix")).err().unwrap();
        assert!(e.contains("file:///") && !e.contains("secret"), "{e}");
    }
}
