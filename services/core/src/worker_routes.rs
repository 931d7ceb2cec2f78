//! The HTTP routes of the worker services: the orchestrator's job history, the export center,
//! the notification deliveries and the AI assistant. Like [`crate::routes`], every route needs a
//! token; the contract routes stay the runtime's.

use std::sync::Arc;

use object_store::ObjectStore;
use serde::Deserialize;
use serde_json::Value;
use stella_runtime::axum::body::Bytes;
use stella_runtime::axum::extract::{FromRef, Path, Query, State};
use stella_runtime::axum::http::{StatusCode, header};
use stella_runtime::axum::response::IntoResponse;
use stella_runtime::axum::routing::{delete, get, post};
use stella_runtime::axum::{Json, Router};

use crate::authority::Caller;
use crate::routes::json_body;
use crate::{Core, Error, ai, exports, jobs, notify, schedules};

#[derive(Deserialize)]
struct JobFilter {
    kind: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `stella-orchestrator`: the tenant's jobs and each job's attempts, and its schedules.
pub fn orchestrator(core: Core) -> Router {
    Router::new()
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/schedules", get(list_schedules).post(create_schedule))
        .route("/api/v1/schedules/{name}", delete(delete_schedule))
        .with_state(core)
}

async fn list_schedules(State(core): State<Core>, caller: Caller) -> Result<Json<Value>, Error> {
    Ok(Json(schedules::list(core.db()?, &caller).await?))
}

async fn create_schedule(State(core): State<Core>, caller: Caller, body: Bytes) -> Result<impl IntoResponse, Error> {
    let s: schedules::NewSchedule = json_body(&body)?;
    Ok((StatusCode::CREATED, Json(schedules::create(core.db()?, &caller, s, core.attempts).await?)))
}

async fn delete_schedule(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    schedules::delete(core.db()?, &caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_jobs(State(core): State<Core>, caller: Caller, Query(f): Query<JobFilter>) -> Result<Json<Value>, Error> {
    let (limit, offset) = (f.limit.unwrap_or(50), f.offset.unwrap_or(0));
    if !(1..=500).contains(&limit) || offset < 0 {
        return Err(Error::bad("limit", "limit is 1 to 500 and offset not negative"));
    }
    let page = crate::aggregation::Page { limit, offset };
    Ok(Json(jobs::list(core.db()?, &caller, f.kind.as_deref(), f.status.as_deref(), page).await?))
}

async fn get_job(State(core): State<Core>, caller: Caller, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    jobs::show(core.db()?, &caller, id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("job {id} in tenant {}", caller.tenant)))
}

/// What the artifact route shares.
#[derive(Clone)]
pub struct ArtifactState {
    pub core: Core,
    pub store: Arc<dyn ObjectStore>,
}

impl FromRef<ArtifactState> for Core {
    fn from_ref(s: &ArtifactState) -> Core {
        s.core.clone()
    }
}

/// `stella-task-runner`: a run's artifacts (beside [`crate::routes::task_runner`]).
pub fn artifacts(state: ArtifactState) -> Router {
    Router::new().route("/api/v1/runs/{id}/artifacts/{step}", get(artifact)).with_state(state)
}

async fn artifact(
    State(s): State<ArtifactState>,
    caller: Caller,
    Path((id, step)): Path<(i64, String)>,
) -> Result<impl IntoResponse, Error> {
    let bytes = crate::taskrunner::artifact(s.core.db()?, &*s.store, &caller, id, &step).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

/// What the export routes share.
#[derive(Clone)]
pub struct ExportState {
    pub core: Core,
    pub store: Arc<dyn ObjectStore>,
    pub formats: Vec<String>,
    pub max_pending: i64,
}

impl FromRef<ExportState> for Core {
    fn from_ref(s: &ExportState) -> Core {
        s.core.clone()
    }
}

/// `stella-export`: queue an export, follow it, download its files.
pub fn export(state: ExportState) -> Router {
    Router::new()
        .route("/api/v1/exports", post(create_export))
        .route("/api/v1/exports/formats", get(export_formats))
        .route("/api/v1/exports/{id}", get(get_export))
        .route("/api/v1/exports/{id}/files/{name}", get(export_file))
        .with_state(state)
}

async fn create_export(State(s): State<ExportState>, caller: Caller, body: Bytes) -> Result<impl IntoResponse, Error> {
    let request: exports::Request = json_body(&body)?;
    let export = exports::create(s.core.db()?, &caller, request, &s.formats, s.max_pending, s.core.attempts).await?;
    Ok((StatusCode::ACCEPTED, Json(export)))
}

async fn export_formats(State(s): State<ExportState>, _caller: Caller) -> Json<Value> {
    Json(serde_json::json!({"formats": s.formats}))
}

async fn get_export(State(s): State<ExportState>, caller: Caller, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    Ok(Json(exports::show(s.core.db()?, &caller, id).await?))
}

async fn export_file(
    State(s): State<ExportState>,
    caller: Caller,
    Path((id, name)): Path<(i64, String)>,
) -> Result<impl IntoResponse, Error> {
    let (media_type, bytes) = exports::file(s.core.db()?, &*s.store, &caller, id, &name).await?;
    Ok(([(header::CONTENT_TYPE, media_type)], bytes))
}

/// Routes that answer every export request with 503 and `why` (no object store to write to).
pub fn unavailable(why: String) -> Router {
    let refuse = move || {
        let why = why.clone();
        async move { Error::Unavailable(why) }
    };
    Router::new().route("/api/v1/exports", post(refuse.clone())).route("/api/v1/exports/{*rest}", get(refuse))
}

#[derive(Deserialize)]
struct DeliveryFilter {
    status: Option<String>,
}

/// `stella-notify`: the tenant's notifications and their delivery state (`?status=dead`: the
/// dead letters).
pub fn notify(core: Core) -> Router {
    Router::new().route("/api/v1/notifications", get(deliveries)).with_state(core)
}

async fn deliveries(
    State(core): State<Core>,
    caller: Caller,
    Query(f): Query<DeliveryFilter>,
) -> Result<Json<Value>, Error> {
    if let Some(s) = &f.status
        && !["pending", "delivered", "dead"].contains(&s.as_str())
    {
        return Err(Error::bad("status", format!("`{s}` is not one of pending, delivered, dead")));
    }
    Ok(Json(notify::list(core.db()?, caller.tenant_id, f.status.as_deref()).await?))
}

/// `stella-ai`: whether the assistant is on, and questions about an advisory linkset.
pub fn ai(core: Core, assistant: ai::Assistant) -> Router {
    Router::new()
        .route("/api/v1/ai/status", get(ai_status))
        .route("/api/v1/ai/linksets/{key}/ask", post(ask))
        .with_state(AiState { core, assistant })
}

#[derive(Clone)]
struct AiState {
    core: Core,
    assistant: ai::Assistant,
}

impl FromRef<AiState> for Core {
    fn from_ref(s: &AiState) -> Core {
        s.core.clone()
    }
}

async fn ai_status(State(AiState { assistant, .. }): State<AiState>, _caller: Caller) -> Json<Value> {
    Json(assistant.status())
}

#[derive(Deserialize)]
struct Question {
    question: String,
}

async fn ask(
    State(AiState { core, assistant }): State<AiState>,
    _caller: Caller,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let q: Question = json_body(&body)?;
    // Off means off: the answer says so before the database is even needed.
    if assistant.endpoint.is_none() {
        return Err(ai::off());
    }
    Ok(Json(assistant.ask(core.db()?, &key, &q.question).await?))
}
