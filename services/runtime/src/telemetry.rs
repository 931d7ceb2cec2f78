//! OpenTelemetry: traces and request metrics exported over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; when it is not, nothing is created and requests pay
//! for nothing but one relaxed atomic load.
//!
//! Each request becomes a server span named after its route, joined to the caller's trace when a
//! W3C `traceparent` header arrives. Spans are batched on the SDK's own thread; metrics are
//! pushed every `OTEL_METRIC_EXPORT_INTERVAL` (SDK default 60 s). Shutdown flushes both.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::build_info::BuildInfo;

static ENABLED: AtomicBool = AtomicBool::new(false);
static DURATION: OnceLock<Histogram<f64>> = OnceLock::new();

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporters when dropped.
pub struct Guard {
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.traces.shutdown() {
            eprintln!("flushing traces: {e}");
        }
        if let Err(e) = self.metrics.shutdown() {
            eprintln!("flushing metrics: {e}");
        }
    }
}

/// The tracing layer that turns spans into OTLP spans, and the guard that flushes them.
/// Must be called outside the async runtime: the exporter's blocking HTTP client refuses to be
/// built inside one.
pub fn init<S>(
    service: &str,
    build: &BuildInfo,
    endpoint: &str,
) -> Result<(tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, Guard), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let endpoint = endpoint.trim_end_matches('/');
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes([
            KeyValue::new("service.version", build.version),
            KeyValue::new("vcs.revision", build.git_commit),
        ])
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .map_err(|e| format!("OTLP trace exporter for {endpoint}: {e}"))?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/metrics"))
        .build()
        .map_err(|e| format!("OTLP metric exporter for {endpoint}: {e}"))?;
    let traces = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
    let meters = SdkMeterProvider::builder().with_periodic_exporter(metrics).with_resource(resource).build();
    let meter = opentelemetry::metrics::MeterProvider::meter(&meters, "stella-runtime");
    let _ = DURATION.set(
        meter
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests.")
            .build(),
    );
    ENABLED.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer().with_tracer(traces.tracer("stella-runtime"));
    Ok((layer, Guard { traces, metrics: meters }))
}

/// Records one request in the OTLP request-duration histogram.
pub fn record(method: &str, route: &str, status: u16, seconds: f64) {
    if let Some(h) = DURATION.get() {
        h.record(
            seconds,
            &[
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("http.route", route.to_string()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }
}

/// The caller's trace context from `traceparent`/`tracestate`, if any.
pub fn parent(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
