//! The HTTP routes of the core, one router per service. Every route needs a token (see
//! [`crate::authority::Caller`]) except the login itself; the contract routes (health, version,
//! metrics) are the runtime's and stay open.

use serde::Deserialize;
use serde_json::{Value, json};
use stella_runtime::axum::body::Bytes;
use stella_runtime::axum::extract::{DefaultBodyLimit, Path, Query, State};
use stella_runtime::axum::http::{StatusCode, header};
use stella_runtime::axum::response::IntoResponse;
use stella_runtime::axum::routing::{delete, get, post};
use stella_runtime::axum::{Json, Router};

use crate::aggregation::{self, Kind, Outcome, Page};
use crate::authority::{self, Caller};
use crate::{Core, Error, ledger, policy, scans, taskrunner};

/// Largest SBOM or source document accepted by upload.
const UPLOAD_LIMIT: usize = 32 << 20;

#[derive(Deserialize)]
struct Paging {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Paging {
    fn page(&self) -> Result<Page, Error> {
        let limit = self.limit.unwrap_or(50);
        let offset = self.offset.unwrap_or(0);
        if !(1..=500).contains(&limit) {
            return Err(Error::bad("limit", format!("{limit} is not between 1 and 500")));
        }
        if offset < 0 {
            return Err(Error::bad("offset", "must not be negative"));
        }
        Ok(Page { limit, offset })
    }
}

/// `stella-api`: authority, scans and the Vulnerability Explorer.
pub fn api(core: Core) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/scans", get(list_scans).post(import_scan))
        .route("/api/v1/scans/{id}", get(get_scan))
        .route("/api/v1/findings", get(findings))
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
        .with_state(core)
}

#[derive(Deserialize)]
struct Login {
    #[serde(default = "default_tenant")]
    tenant: String,
    username: String,
    password: String,
}

fn default_tenant() -> String {
    "default".into()
}

/// A JSON request body, whatever its Content-Type says (curl users forget it); the error names
/// the field that is wrong.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::bad("request body", e.to_string()))
}

/// An answer that carries a credential: never stored by a browser or a proxy.
const NO_STORE: [(&str, &str); 1] = [("cache-control", "no-store")];

async fn login(
    State(core): State<Core>,
    authority::Source(source): authority::Source,
    body: Bytes,
) -> Result<impl IntoResponse, Error> {
    let l: Login = json_body(&body)?;
    let issued = authority::login(core.db()?, &core.authority, &l.tenant, &l.username, &l.password, source).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(issued)))
}

async fn whoami(caller: Caller) -> Json<Caller> {
    Json(caller)
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    #[serde(default = "viewer")]
    role: String,
    /// A lifetime such as `90d` or `12h`; the default is `STELLA_TOKEN_TTL`.
    ttl: Option<String>,
}

fn viewer() -> String {
    "viewer".into()
}

async fn create_token(State(core): State<Core>, caller: Caller, body: Bytes) -> Result<impl IntoResponse, Error> {
    let t: NewToken = json_body(&body)?;
    let ttl = match t.ttl.as_deref().map(|raw| (raw, stella_runtime::config::parse_duration(raw.trim()))) {
        None => None,
        Some((_, Some(ttl))) => Some(ttl),
        Some((raw, None)) => return Err(Error::bad("ttl", format!("`{raw}` is not a duration such as 90d or 12h"))),
    };
    let issued = authority::create_token(core.db()?, &core.authority, &caller, &t.name, &t.role, ttl).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(issued)))
}

async fn list_tokens(State(core): State<Core>, caller: Caller) -> Result<Json<Value>, Error> {
    caller.require("operator")?;
    Ok(Json(authority::list_tokens(core.db()?, &caller).await?))
}

async fn revoke_token(State(core): State<Core>, caller: Caller, Path(id): Path<i64>) -> Result<StatusCode, Error> {
    caller.require("operator")?;
    authority::revoke(core.db()?, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ScanName {
    name: Option<String>,
}

async fn import_scan(
    State(core): State<Core>,
    caller: Caller,
    Query(q): Query<ScanName>,
    body: Bytes,
) -> Result<impl IntoResponse, Error> {
    caller.require("operator")?;
    let _room = core.imports.admit(body.len()).await?;
    let (created, scan) = scans::import(core.db()?, &caller, q.name.as_deref(), &body).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(scan)))
}

async fn list_scans(State(core): State<Core>, caller: Caller, Query(p): Query<Paging>) -> Result<Json<Value>, Error> {
    Ok(Json(scans::scans(core.db()?, &caller, p.page()?).await?))
}

async fn get_scan(State(core): State<Core>, caller: Caller, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    Ok(Json(scans::scan(core.db()?, &caller, id).await?))
}

async fn findings(
    State(core): State<Core>,
    caller: Caller,
    Query(p): Query<Paging>,
    Query(f): Query<scans::Filters>,
) -> Result<Json<Value>, Error> {
    Ok(Json(scans::findings(core.db()?, &caller, &f, p.page()?).await?))
}

/// `stella-conseiller` (advisories) and `stella-excitator` (VEX): linksets and originals.
pub fn aggregation(core: Core, kind: Kind) -> Router {
    let base = format!("/api/v1/{}", kind.path());
    Router::new()
        .route(&format!("{base}/linksets"), get(move |s, c, q, p| linksets(kind, s, c, q, p)))
        .route(&format!("{base}/linksets/{{key}}"), get(move |s, c, k| linkset(kind, s, c, k)))
        .route(&format!("{base}/documents"), post(move |s, c, q, b| upload(kind, s, c, q, b)))
        .route(&format!("{base}/documents/{{id}}"), get(move |s, c, i| document(kind, s, c, i)))
        .route(&format!("{base}/documents/{{id}}/raw"), get(move |s, c, i| raw(kind, s, c, i)))
        .route(&format!("{base}/rejections"), get(move |s, c, p| rejections(kind, s, c, p)))
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
        .with_state(core)
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn linksets(
    kind: Kind,
    State(core): State<Core>,
    _: Caller,
    Query(s): Query<Search>,
    Query(p): Query<Paging>,
) -> Result<Json<Value>, Error> {
    Ok(Json(aggregation::linksets(core.db()?, kind, s.q.as_deref(), p.page()?).await?))
}

async fn linkset(
    kind: Kind,
    State(core): State<Core>,
    _: Caller,
    Path(key): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(aggregation::linkset(core.db()?, kind, &key).await?))
}

async fn document(kind: Kind, State(core): State<Core>, _: Caller, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    Ok(Json(aggregation::document(core.db()?, kind, id).await?.0))
}

/// The original, byte for byte, with its SHA-256 in a header.
async fn raw(kind: Kind, State(core): State<Core>, _: Caller, Path(id): Path<i64>) -> Result<impl IntoResponse, Error> {
    let (meta, body) = aggregation::document(core.db()?, kind, id).await?;
    let sha = meta["sha256"].as_str().unwrap_or_default().to_string();
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::HeaderName::from_static("x-content-sha256"), sha),
        ],
        body,
    ))
}

async fn rejections(
    kind: Kind,
    State(core): State<Core>,
    _: Caller,
    Query(p): Query<Paging>,
) -> Result<Json<Value>, Error> {
    Ok(Json(aggregation::rejections(core.db()?, kind, p.page()?).await?))
}

#[derive(Deserialize)]
struct UploadName {
    name: String,
}

/// An administrator's upload: ingested like a polled document, from source `upload`.
async fn upload(
    kind: Kind,
    State(core): State<Core>,
    caller: Caller,
    Query(q): Query<UploadName>,
    body: Bytes,
) -> Result<impl IntoResponse, Error> {
    // Advisories and VEX statements are platform-wide: every tenant's findings use them. Only an
    // administrator of the platform tenant may add to them, not any tenant's admin.
    caller.require_platform_admin(&format!("{} documents apply to every tenant", kind.as_str()), "upload them")?;
    match aggregation::ingest(core.db()?, kind, "upload", &q.name, &body).await? {
        o @ Outcome::Stored { .. } => Ok((StatusCode::CREATED, Json(json!(o)))),
        o @ Outcome::Unchanged { .. } => Ok((StatusCode::OK, Json(json!(o)))),
        Outcome::Rejected { problem, .. } => Err(Error::bad(format!("document `{}`", q.name), problem)),
    }
}

/// `stella-policy`: policy versions and verdicts.
pub fn policy(core: Core) -> Router {
    Router::new()
        .route("/api/v1/policies", get(policies))
        .route("/api/v1/scans/{id}/verdicts", get(verdicts))
        .with_state(core)
}

async fn policies(State(core): State<Core>, _: Caller) -> Result<Json<Value>, Error> {
    Ok(Json(policy::list(core.db()?).await?))
}

async fn verdicts(State(core): State<Core>, caller: Caller, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    Ok(Json(policy::verdicts(core.db()?, &caller, id).await?))
}

/// `stella-ledger`: the tenant's events and the verification of its chain (or, for the
/// platform's admin, of every chain).
pub fn ledger(core: Core) -> Router {
    Router::new()
        .route("/api/v1/ledger/events", get(events))
        .route("/api/v1/ledger/verify", get(verify))
        .with_state(core)
}

#[derive(Deserialize)]
struct After {
    after: Option<i64>,
}

async fn events(
    State(core): State<Core>,
    caller: Caller,
    Query(a): Query<After>,
    Query(p): Query<Paging>,
) -> Result<Json<Value>, Error> {
    Ok(Json(ledger::events(core.db()?, caller.tenant_id, a.after.unwrap_or(0), p.page()?.limit).await?))
}

#[derive(Deserialize)]
struct Scope {
    scope: Option<String>,
}

/// The caller's tenant's chain; `?scope=platform` (an admin of the default tenant): every chain.
async fn verify(State(core): State<Core>, caller: Caller, Query(s): Query<Scope>) -> Result<Json<Value>, Error> {
    match s.scope.as_deref() {
        None | Some("tenant") => Ok(Json(
            serde_json::to_value(ledger::verify(core.db()?, caller.tenant_id, core.checkpoints.as_ref()).await?)
                .map_err(|e| Error::Internal(e.to_string()))?,
        )),
        Some("platform") => {
            caller.require_platform_admin("the platform check covers every tenant", "run it")?;
            Ok(Json(ledger::verify_platform(core.db()?, core.checkpoints.as_ref()).await?))
        }
        Some(other) => Err(Error::bad("scope", format!("`{other}` is not tenant or platform"))),
    }
}

/// `stella-task-runner`: task packs and their runs.
pub fn task_runner(core: Core) -> Router {
    Router::new()
        .route("/api/v1/packs", get(list_packs).post(register_pack))
        .route("/api/v1/packs/{name}/runs", post(start_run))
        .route("/api/v1/runs/{id}", get(get_run))
        .with_state(core)
}

async fn register_pack(State(core): State<Core>, caller: Caller, body: Bytes) -> Result<impl IntoResponse, Error> {
    let (created, pack) = taskrunner::register(core.db()?, &caller, &body).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(pack)))
}

async fn list_packs(State(core): State<Core>, caller: Caller) -> Result<Json<Value>, Error> {
    Ok(Json(taskrunner::list(core.db()?, &caller).await?))
}

#[derive(Deserialize)]
struct PackVersion {
    version: Option<String>,
}

async fn start_run(
    State(core): State<Core>,
    caller: Caller,
    Path(name): Path<String>,
    Query(v): Query<PackVersion>,
) -> Result<impl IntoResponse, Error> {
    Ok((
        StatusCode::ACCEPTED,
        Json(taskrunner::start(core.db()?, &caller, &name, v.version.as_deref(), core.attempts).await?),
    ))
}

async fn get_run(State(core): State<Core>, caller: Caller, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    Ok(Json(taskrunner::run(core.db()?, &caller, id).await?))
}
