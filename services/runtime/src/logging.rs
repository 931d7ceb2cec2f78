//! Structured logs: one JSON object per line on stdout, carrying service, version and revision.
//!
//! Every line passes through [`crate::redact`] before it is written.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::build_info::BuildInfo;
use crate::redact::RedactingStdout;

/// Installs the global logger, and the OpenTelemetry layer when `otlp` names a collector.
/// `format` is `json` or `text`, `level` a tracing level name. Returns the guard that flushes
/// telemetry at exit.
pub fn init(
    service: &str,
    build: &BuildInfo,
    level: &str,
    format: &str,
    otlp: Option<&str>,
) -> Result<Option<crate::telemetry::Guard>, String> {
    let filter = tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn,hyper=warn,opentelemetry=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| RedactingStdout);
    let fmt = if format == "text" {
        fmt.with_target(false).boxed()
    } else {
        let json = JsonLines {
            service: service.to_string(),
            version: build.version.to_string(),
            revision: build.git_commit.to_string(),
        };
        fmt.event_format(json).boxed()
    };
    let (otel, guard) = match otlp {
        Some(endpoint) => {
            let (layer, guard) = crate::telemetry::init(service, build, endpoint)?;
            // Only our request spans: the exporter's own HTTP client must not trace itself.
            let spans = tracing_subscriber::filter::Targets::new().with_target("stella_runtime", tracing::Level::INFO);
            (Some(layer.with_filter(spans)), Some(guard))
        }
        None => (None, None),
    };
    // A second init (tests) keeps the first logger.
    let _ = tracing_subscriber::registry().with(otel).with(fmt.with_filter(filter)).try_init();
    Ok(guard)
}

struct JsonLines {
    service: String,
    version: String,
    revision: String,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = FieldMap(serde_json::Map::new());
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), stella_epoch::rfc3339_now().into());
        line.insert("level".into(), meta.level().as_str().to_ascii_lowercase().into());
        line.insert("service".into(), self.service.clone().into());
        line.insert("version".into(), self.version.clone().into());
        line.insert("revision".into(), self.revision.clone().into());
        line.insert("target".into(), meta.target().into());
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        line.extend(fields.0);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct FieldMap(serde_json::Map<String, serde_json::Value>);

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}
