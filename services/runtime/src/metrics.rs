//! `/metrics` in the Prometheus text format: requests by route, latencies, requests in flight,
//! process metrics.
//!
//! Routes are labelled by their matched pattern (`/v1/findings/{id}`), never the raw path, so a
//! client cannot blow up the label set.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::build_info::BuildInfo;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
}

impl Metrics {
    pub fn new(service: &str, build: &BuildInfo) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("stella_http_requests_total", "HTTP requests served, by method, route and status."),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("stella_http_request_duration_seconds", "HTTP request latency, by method and route.")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method", "route"],
        )
        .expect("valid metric");
        // What a drain waits for, and what a test waits on before it signals: evidence, not time.
        let in_flight = IntGauge::with_opts(Opts::new(
            "stella_http_requests_in_flight",
            "HTTP requests received and not yet answered, this scrape included.",
        ))
        .expect("valid metric");
        let info = IntGauge::with_opts(
            Opts::new("stella_build_info", "Build metadata of this service; always 1.")
                .const_label("service", service)
                .const_label("version", build.version)
                .const_label("revision", build.git_commit),
        )
        .expect("valid metric");
        info.set(1);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(info),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector).expect("metric registered once");
        }
        Metrics { registry, requests, latency, in_flight }
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.latency.with_label_values(&[method, route]).observe(seconds);
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding of metrics");
        out
    }
}

/// Counts and times every routed request, and writes the request log line.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    // Decremented when dropped, so a request whose client goes away is not counted forever.
    struct InFlight(IntGauge);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    metrics.in_flight.inc();
    let _in_flight = InFlight(metrics.in_flight.clone());
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let path = request.uri().path().to_string();
    let response = if crate::telemetry::enabled() {
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!(
            "request",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = method.as_str(),
            http.route = route.as_str(),
            url.path = path.as_str(),
            http.response.status_code = tracing::field::Empty,
        );
        let _ = span.set_parent(crate::telemetry::parent(request.headers()));
        let response = next.run(request).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        response
    } else {
        next.run(request).await
    };
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    metrics.observe(&method, &route, status, elapsed.as_secs_f64());
    crate::telemetry::record(&method, &route, status, elapsed.as_secs_f64());
    let ms = elapsed.as_secs_f64() * 1000.0;
    // Probes and scrapes arrive every few seconds; they are logged only at debug.
    if route.starts_with("/health/") || route == "/metrics" {
        tracing::debug!(method, route, path, status, duration_ms = ms, "request");
    } else {
        tracing::info!(method, route, path, status, duration_ms = ms, "request");
    }
    response
}

pub async fn handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], metrics.render())
}
