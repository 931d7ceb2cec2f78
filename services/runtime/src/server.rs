//! The HTTP server of a long-running service: the contract routes, the service's own routes,
//! the drain gate, and shutdown within the grace period.
//!
//! Contract routes:
//! - `GET /health/liveness`  200 while the process answers
//! - `GET /health/readiness` 200 when every dependency answers; 503 naming the failing ones, or draining
//! - `GET /version`          `{version, gitCommit, buildDate}`
//! - `GET /metrics`          Prometheus text (when `STELLA_METRICS_ENABLED`)
//! - `GET /config`           effective configuration, secrets redacted (console config discovery)
//! - `GET /capabilities`     Conseiller and Excitator only: `{"merge": false}`
//! - `GET /debug/delay?ms=N` only with `STELLA_DIAGNOSTICS=true`: a request that takes N ms

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::Context;
use crate::metrics::{self, Metrics};
use crate::readiness::Readiness;
use crate::shutdown::Drain;

#[derive(Clone)]
struct Shared {
    ctx: Context,
    readiness: Readiness,
    aggregation_only: bool,
}

/// The full router: contract routes, then the service's own.
pub(crate) fn app(ctx: &Context, own: Router, readiness: Readiness, drain: Drain, aggregation_only: bool) -> Router {
    let metrics = Metrics::new(ctx.config.service(), &ctx.build);
    let shared = Shared { ctx: ctx.clone(), readiness, aggregation_only };
    let mut contract = Router::new()
        .route("/health/liveness", get(liveness))
        .route("/health/readiness", get(readiness_handler))
        .route("/version", get(version))
        .route("/config", get(config));
    if aggregation_only {
        contract = contract.route("/capabilities", get(capabilities));
    }
    if ctx.config.bool("STELLA_METRICS_ENABLED") {
        contract = contract.route("/metrics", get(metrics::handler).with_state(metrics.clone()));
    }
    if ctx.config.bool("STELLA_DIAGNOSTICS") {
        contract = contract.route("/debug/delay", get(delay));
    }
    contract
        .with_state(shared)
        .merge(own)
        .route_layer(middleware::from_fn_with_state(metrics, metrics::track))
        .layer(middleware::from_fn_with_state(drain, gate))
        .layer(middleware::from_fn(json_errors))
}

/// Every error answer is the documented JSON body, `{"error": "<code>", "message": "..."}`: the
/// framework's own refusals (a query that does not parse, a body over the limit, an unknown
/// route or method) are plain text or empty, so they are rewritten here, once for every service.
/// HTML error pages (the console's) and JSON answers pass unchanged.
async fn json_errors(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t.to_str().is_ok_and(|t| t.starts_with("text/plain")));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "bad_input",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::NOT_FOUND) => format!("no route {path}"),
        (true, StatusCode::METHOD_NOT_ALLOWED) => format!("{path} does not take {method}"),
        (true, s) => s.canonical_reason().unwrap_or("error").to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let body = Json(json!({"error": code, "message": message}));
    (parts, body).into_response()
}

/// Refuses new work once draining; liveness and readiness still answer so probes see the state.
async fn gate(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health/liveness" || path == "/health/readiness" {
        return next.run(request).await;
    }
    match drain.admit() {
        Some(_in_flight) => next.run(request).await,
        None => {
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "shutting down" }))).into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn liveness() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

async fn readiness_handler(State(s): State<Shared>) -> Response {
    let (ready, body) = s.readiness.evaluate().await;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn version(State(s): State<Shared>) -> Json<crate::BuildInfo> {
    Json(s.ctx.build.clone())
}

async fn config(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({
        "service": s.ctx.config.service(),
        "version": s.ctx.build.version,
        "aggregationOnly": s.aggregation_only,
        "settings": s.ctx.config.redacted(),
    }))
}

async fn capabilities() -> Json<serde_json::Value> {
    Json(json!({ "merge": false }))
}

#[derive(Deserialize)]
struct Delay {
    ms: u64,
}

async fn delay(Query(d): Query<Delay>) -> Json<serde_json::Value> {
    let ms = d.ms.min(60_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "delayedMs": ms }))
}

/// Serves until SIGTERM, then drains; returns whether everything finished within the grace period.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    drain: Drain,
    grace: Duration,
    workers: crate::Workers,
) -> bool {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(async {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(async move { server.await });

    crate::shutdown::signal().await;
    let deadline = tokio::time::Instant::now() + grace;
    drain.start();
    tracing::info!(in_flight = drain.in_flight(), grace = %crate::config::format_duration(grace), "draining");
    let idle = drain.wait_idle(grace).await;
    let _ = stop_tx.send(());
    let closed = tokio::time::timeout_at(deadline, server).await.is_ok();
    drain.stop_workers();
    let flushed = workers.join_until(deadline).await;
    let clean = idle && closed && flushed;
    if clean {
        tracing::info!("shutdown complete");
    } else {
        tracing::error!(
            in_flight = drain.in_flight(),
            requests_finished = idle,
            connections_closed = closed,
            workers_flushed = flushed,
            "grace period ran out before shutdown completed"
        );
    }
    clean
}
