//! The settings every service shares, and the ones a service kind adds.
//!
//! Service crates add their own with [`crate::Service::setting`]; this table holds what the
//! operational contract needs everywhere.

use crate::config::{Default, Kind, Setting};

/// A setting that is not secret (add [`Setting::secret`] for one that is): the setting tables,
/// here and in the services, read better without the field names of a struct literal.
pub const fn s(name: &'static str, kind: Kind, default: Default, description: &'static str) -> Setting {
    Setting { name, kind, default, secret: false, description }
}

const LOG_LEVELS: Kind = Kind::OneOf(&["trace", "debug", "info", "warn", "error"]);

pub const LOG_LEVEL: Setting =
    s("STELLA_LOG_LEVEL", LOG_LEVELS, Default::Value("info"), "Least severe log level written to stdout.");
pub const LOG_FORMAT: Setting = s(
    "STELLA_LOG_FORMAT",
    Kind::OneOf(&["json", "text"]),
    Default::Value("json"),
    "Log format: one JSON object per line, or text for a terminal.",
);
pub const DATABASE_URL: Setting = s(
    "STELLA_DATABASE_URL",
    Kind::Url { schemes: &["postgres", "postgresql"] },
    Default::None,
    "PostgreSQL connection URL; when set, readiness checks it (the migrator requires it). \
                  Prefer STELLA_DATABASE_URL_FILE.",
)
.secret();
pub const DATABASE_POOL_SIZE: Setting = s(
    "STELLA_DATABASE_POOL_SIZE",
    Kind::Count { min: 1, max: 200 },
    Default::Value("5"),
    "Maximum number of PostgreSQL connections this service opens.",
);
pub const QUICKSTART_MODE: Setting = s(
    "STELLA_QUICKSTART_MODE",
    Kind::Bool,
    Default::Value("false"),
    "Quickstart mode: seeded demo data and credentials. Never enable in production.",
);

/// The external dependencies besides PostgreSQL, wired by Compose and the Helm chart. They are
/// checked at start-up (a malformed URL exits 78 like any other setting); the services that use
/// them (issues 9 and 11) read them from here.
pub const DEPENDENCIES: &[Setting] = &[
    s(
        "STELLA_REDIS_URL",
        Kind::Url { schemes: &["redis", "rediss"] },
        Default::None,
        "Redis URL (cache and rate limits), e.g. rediss://:password@redis:6379. Prefer STELLA_REDIS_URL_FILE.",
    )
    .secret(),
    s(
        "STELLA_QUEUE_URL",
        Kind::Url { schemes: &["nats", "tls"] },
        Default::None,
        "NATS URL of the job queue (JetStream), e.g. nats://user:password@nats:4222. Prefer STELLA_QUEUE_URL_FILE.",
    )
    .secret(),
    s(
        "STELLA_OBJECT_STORE_URL",
        Kind::Url { schemes: &["s3", "file"] },
        Default::None,
        "Object store of exports and artifacts: s3://bucket[/prefix], or file:///var/lib/stella/objects for a volume.",
    ),
    s("STELLA_OBJECT_STORE_REGION", Kind::Text, Default::None, "S3 region (s3:// object stores)."),
    s(
        "STELLA_OBJECT_STORE_ENDPOINT",
        Kind::Url { schemes: &["http", "https"] },
        Default::None,
        "S3 endpoint of a compatible store (MinIO, Ceph); unset: AWS.",
    ),
];

/// Settings of every long-running service.
pub const COMMON: &[Setting] = &[
    s("STELLA_LISTEN_ADDR", Kind::IpAddr, Default::Value("0.0.0.0"), "Address the HTTP server binds to."),
    s("STELLA_PORT", Kind::Port, Default::ServicePort, "Port of the HTTP server (API, health, metrics)."),
    LOG_LEVEL,
    LOG_FORMAT,
    s(
        "STELLA_SHUTDOWN_GRACE",
        Kind::Duration,
        Default::Value("25s"),
        "After SIGTERM, how long in-flight requests and background work may take before the process exits.",
    ),
    s(
        "STELLA_READINESS_TIMEOUT",
        Kind::Duration,
        Default::Value("2s"),
        "How long each dependency check of /health/readiness may take before it counts as failed.",
    ),
    s("STELLA_METRICS_ENABLED", Kind::Bool, Default::Value("true"), "Serve Prometheus metrics at /metrics."),
    DATABASE_URL,
    DATABASE_POOL_SIZE,
    QUICKSTART_MODE,
    s(
        "STELLA_DIAGNOSTICS",
        Kind::Bool,
        Default::Value("false"),
        "Serve the /debug/delay diagnostic route used by drain tests; off in every shipped configuration.",
    ),
    s(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        Kind::Url { schemes: &["http", "https"] },
        Default::None,
        "OpenTelemetry collector (OTLP/HTTP); traces are exported only when set.",
    ),
];

/// Settings of a one-shot job (the migrator): no server, but logs and a database.
pub const JOB: &[Setting] = &[LOG_LEVEL, LOG_FORMAT, DATABASE_URL, DATABASE_POOL_SIZE, QUICKSTART_MODE];

/// Added to Conseiller and Excitator: the merge path does not exist, and asking for it is refused.
pub const AGGREGATION_ONLY: &[Setting] = &[s(
    "STELLA_DISABLE_MERGE",
    Kind::Bool,
    Default::Value("true"),
    "Aggregation-only guard: must stay true; false is refused at start-up because no merge path exists.",
)];
