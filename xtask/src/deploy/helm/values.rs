//! What the chart's values are: one definition per concern (images, components, dependencies,
//! network, telemetry, the migrator, the bundled mode), built from the catalog and the build
//! record so that every component gets the same keys and its image is pinned by the digest
//! that was built.

use anyhow::Context;
use serde_json::json;

use super::tree::{Node, boolean, integer, leaf, list, map, object, one_of, pattern, string};
use crate::assemble::{Built, BuiltImage};
use crate::catalog::{Catalog, Kind};
use crate::workspace::ServiceInfo;

/// A long-running StellaOps service: a Deployment, Service, ServiceAccount and the rest.
pub struct Component {
    /// The values key: `taskRunner` for `stella-task-runner`.
    pub key: String,
    pub image: String,
    pub port: u16,
    /// Conseiller and Excitator: `STELLA_DISABLE_MERGE=true` is forced, with no value to undo it.
    pub aggregation_only: bool,
}

/// A support image as the bundled mode's StatefulSet, wired like in Compose.
pub struct Bundled {
    pub key: String,
    pub image: String,
    pub binary: String,
    pub ports: Vec<u16>,
    pub support: crate::deploy::compose::Support,
}

/// What the chart deploys, from the catalog: services with a port are components, the service
/// without one is the migrator job, support images are the bundled mode's StatefulSets.
pub struct Parts {
    pub components: Vec<Component>,
    pub migrator: String,
    pub bundled: Vec<Bundled>,
    /// Tool images (the `stella` CLI): not deployed, but pinned in the values so the console's
    /// copyable lines name them by digest.
    pub tools: Vec<String>,
}

pub fn parts(catalog: &Catalog) -> anyhow::Result<Parts> {
    let mut components = Vec::new();
    let mut migrator = None;
    let mut bundled = Vec::new();
    let mut tools = Vec::new();
    for (name, image) in &catalog.images {
        let short = name.strip_prefix("stella-").unwrap_or(name);
        match (image.kind, image.ports.first()) {
            (Kind::Support, _) => bundled.push(Bundled {
                key: camel(short),
                image: name.clone(),
                binary: image.binary().to_string(),
                ports: image.ports.clone(),
                support: crate::deploy::compose::support(name)?,
            }),
            (Kind::Tool, _) => tools.push(name.clone()),
            (_, None) => migrator = Some(name.clone()),
            (_, Some(port)) => components.push(Component {
                key: camel(short),
                image: name.clone(),
                port: *port,
                aggregation_only: image.env.get("STELLA_DISABLE_MERGE").is_some_and(|v| v == "true"),
            }),
        }
    }
    let migrator = migrator.context("images.toml has no job image (a service without ports) to run as the migrator")?;
    Ok(Parts { components, migrator, bundled, tools })
}

/// `task-runner` → `taskRunner`.
pub fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in s.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

const DIGEST: &str = "^sha256:[0-9a-f]{64}$";

/// Settings the chart sets itself (from other values), that hold secrets, or that no deployment
/// may change: never accepted in a component's `config`.
pub const RESERVED: &[&str] = &[
    "STELLA_DATABASE_URL",
    "STELLA_REDIS_URL",
    "STELLA_QUEUE_URL",
    "STELLA_DISABLE_MERGE",
    "STELLA_QUICKSTART_MODE",
    "STELLA_PORT",
    "STELLA_LISTEN_ADDR",
    "STELLA_LOG_FORMAT",
    "STELLA_LOG_LEVEL",
    "STELLA_DATABASE_POOL_SIZE",
    "STELLA_OBJECT_STORE_URL",
    "STELLA_OBJECT_STORE_REGION",
    "STELLA_OBJECT_STORE_ENDPOINT",
    "STELLA_DIAGNOSTICS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_RESOURCE_ATTRIBUTES",
];

fn image(description: &str, built: &BuiltImage, tag: &str) -> Node {
    let repository = built.repository.rsplit('/').next().unwrap_or(&built.name);
    map(
        description,
        vec![
            (
                "repository",
                pattern(
                    "Repository under global.imageRegistry and global.imageRepositoryPrefix.",
                    repository,
                    "^[a-z0-9]+([._/-][a-z0-9]+)*$",
                ),
            ),
            (
                "tag",
                pattern(
                    "Tag, shown for people; the digest decides what runs.",
                    tag,
                    "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                ),
            ),
            (
                "digest",
                pattern("Image index digest from the build (`cargo xtask deploy` writes it).", &built.digest, DIGEST),
            ),
            ("pullPolicy", one_of("Image pull policy.", "IfNotPresent", &["IfNotPresent", "Always", "Never"])),
        ],
    )
}

fn quantities() -> serde_json::Value {
    json!({"type": "object", "additionalProperties": {"type": ["string", "number"]}})
}

fn resources(cpu: &str, memory: &str, limit: &str) -> Node {
    leaf(
        "CPU and memory requests and limits (no CPU limit by default: throttling hurts latency more than it protects).",
        json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": limit}}),
        json!({"type": "object", "additionalProperties": false,
               "properties": {"requests": quantities(), "limits": quantities()}}),
    )
}

fn scheduling() -> Vec<(&'static str, Node)> {
    vec![
        ("podAnnotations", object("Annotations added to each pod.", json!({}), json!({"type": "string"}))),
        ("nodeSelector", object("Node selector.", json!({}), json!({"type": "string"}))),
        ("tolerations", list("Tolerations.", json!([]), json!({"type": "object"}))),
        (
            "affinity",
            object(
                "Affinity rules, merged over the default anti-affinity (global.podAntiAffinity): a key given here \
                 (nodeAffinity, podAntiAffinity, ...) replaces the default's.",
                json!({}),
                json!({}),
            ),
        ),
        (
            "topologySpreadConstraints",
            list(
                "Topology spread constraints (the chart adds the pod selector); empty: \
                 global.topologySpreadConstraints.",
                json!([]),
                json!({"type": "object"}),
            ),
        ),
    ]
}

/// `<component>.secrets`: each secret setting the component declares (its binary's `describe`),
/// from a key of a Secret of your own, mounted as a file beside the dependency URLs and named
/// by `<SETTING>_FILE`. Settings the chart owns (the dependency URLs) are not offered.
fn secrets(secret_settings: &[(String, String)]) -> Node {
    let names: Vec<&str> = secret_settings.iter().map(|(n, _)| n.as_str()).filter(|n| !RESERVED.contains(n)).collect();
    let listed = if names.is_empty() {
        "none for this component".to_string()
    } else {
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    };
    leaf(
        &format!(
            "Secret settings from your own Secrets, as files: `SETTING: {{existingSecret, key}}`. Accepted: {listed}."
        ),
        json!({}),
        json!({
            "type": "object",
            "propertyNames": {"enum": names},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": false,
                "required": ["existingSecret", "key"],
                "properties": {
                    "existingSecret": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                    "key": {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"}
                }
            }
        }),
    )
}

fn component(
    c: &Component,
    built: &BuiltImage,
    tag: &str,
    description: &str,
    secret_settings: &[(String, String)],
) -> Node {
    let enabled = c.key != "ai";
    let mut children = vec![
        ("enabled", boolean(&format!("Deploy {} ({description}).", c.image), enabled)),
        ("replicas", integer("Replicas when autoscaling is off.", 2, 0, 100)),
        ("image", image("The image; the default is the one this chart was generated from.", built, tag)),
        ("resources", resources("50m", "32Mi", "256Mi")),
        (
            "autoscaling",
            map(
                "HorizontalPodAutoscaler (autoscaling/v2) on CPU utilisation.",
                vec![
                    ("enabled", boolean("Create the HPA (replicas is then ignored).", false)),
                    ("minReplicas", integer("Lower bound.", 2, 1, 100)),
                    ("maxReplicas", integer("Upper bound.", 6, 1, 1000)),
                    ("targetCPUUtilizationPercentage", integer("Average CPU utilisation to aim for.", 75, 1, 100)),
                ],
            ),
        ),
        (
            "podDisruptionBudget",
            map(
                "PodDisruptionBudget: voluntary evictions never take more than this many pods at once.",
                vec![
                    ("enabled", boolean("Create the PDB.", true)),
                    ("maxUnavailable", integer("Pods that may be unavailable during a drain.", 1, 1, 100)),
                ],
            ),
        ),
        (
            "terminationGracePeriodSeconds",
            integer("Seconds between SIGTERM and SIGKILL; above the service's drain time (25 s).", 30, 1, 3600),
        ),
        ("secrets", secrets(secret_settings)),
        (
            "config",
            leaf(
                "Further non-secret settings (STELLA_* or OTEL_* variables, see the configuration reference) for this \
                 component's ConfigMap. Secrets and the settings the chart owns are refused.",
                json!({}),
                json!({
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "propertyNames": {
                        "pattern": "^(STELLA|OTEL)_[A-Z0-9_]+$",
                        "not": {"anyOf": [
                            {"enum": RESERVED},
                            {"pattern": "(_FILE|PASSWORD|SECRET|TOKEN|_KEY)$"}
                        ]}
                    }
                }),
            ),
        ),
        (
            "serviceAccount",
            map(
                "The component's ServiceAccount.",
                vec![
                    (
                        "automountToken",
                        boolean(
                            "Mount a Kubernetes API token: no StellaOps service talks to the Kubernetes API.",
                            false,
                        ),
                    ),
                    (
                        "annotations",
                        object("Annotations (for example a workload identity).", json!({}), json!({"type": "string"})),
                    ),
                ],
            ),
        ),
    ];
    children.extend(scheduling());
    children.extend(super::cluster::extras(true));
    map(&format!("{} ({description}), port {}.", c.image, c.port), children)
}

/// The whole values tree.
pub fn tree(catalog: &Catalog, built: &Built, described: &[ServiceInfo]) -> anyhow::Result<Node> {
    // Each component's secret settings, as its own binary (from this build) declares them.
    let secret_settings = |image: &str| -> Vec<(String, String)> {
        described
            .iter()
            .find(|s| s.binary == image)
            .map(|s| {
                s.settings
                    .iter()
                    .filter(|v| v["secret"] == true)
                    .map(|v| {
                        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                        (text("name"), text("description"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let tag = built.tags.first().context("the build has no tag")?;
    let find = |name: &str| {
        built.images.iter().find(|b| b.name == name).with_context(|| format!("images.json has no image {name}"))
    };
    let parts = parts(catalog)?;
    let mut root: Vec<(String, Node)> = vec![
        (
            "global".into(),
            map(
                "Settings every component shares.",
                vec![
                    (
                        "imageRegistry",
                        pattern(
                            "Registry every image is pulled from (an air-gapped site sets its own; digests stay the same).",
                            &catalog.defaults.registry,
                            "^[A-Za-z0-9.-]+(:[0-9]+)?$",
                        ),
                    ),
                    (
                        "imageRepositoryPrefix",
                        pattern(
                            "Path between the registry and each repository (empty: none).",
                            &catalog.defaults.repository,
                            "^([a-z0-9]+([._/-][a-z0-9]+)*)?$",
                        ),
                    ),
                    ("imagePullSecrets", list("Pull secrets, as [{name: ...}].", json!([]), json!({"type": "object"}))),
                ]
                .into_iter()
                .chain(super::cluster::global())
                .collect(),
            ),
        ),
        (
            "profile".into(),
            one_of(
                "`production` makes the schema require the ingress with TLS and the network policies.",
                "standard",
                &["standard", "production"],
            ),
        ),
        (
            "mode".into(),
            one_of(
                "`external`: PostgreSQL, Redis, NATS and S3 are run elsewhere and referenced below. `bundled`: \
                 StatefulSets of stella-postgres, stella-redis and stella-nats for lab clusters.",
                "external",
                &["external", "bundled"],
            ),
        ),
        ("logLevel".into(), one_of("Least severe log level.", "info", &["trace", "debug", "info", "warn", "error"])),
        (
            "versionSkew".into(),
            map(
                "The version-skew policy: every component runs the chart's appVersion major.minor (patches may differ).",
                vec![("enforce", boolean("Refuse to render when a component's tag breaks the policy.", true))],
            ),
        ),
    ];
    root.extend(dependencies());
    root.push(("ingress".into(), ingress()));
    root.push(("networkPolicy".into(), network_policy()));
    root.push(("metrics".into(), metrics()));
    root.push((
        "otel".into(),
        map(
            "OpenTelemetry export (OTLP/HTTP), set by environment.",
            vec![
                (
                    "endpoint",
                    pattern(
                        "Collector URL, e.g. http://otel-collector.observability:4318; empty: off.",
                        "",
                        "^(https?://.+)?$",
                    ),
                ),
                ("resourceAttributes", string("OTEL_RESOURCE_ATTRIBUTES, e.g. deployment.environment=prod.", "")),
            ],
        ),
    ));
    for c in &parts.components {
        let description = catalog.images[&c.image].description.split(':').next().unwrap_or_default().trim().to_string();
        root.push((c.key.clone(), component(c, find(&c.image)?, tag, &description, &secret_settings(&c.image))));
    }
    root.push(("migrator".into(), migrator(find(&parts.migrator)?, tag)));
    root.push(("helmTests".into(), super::cluster::helm_tests()));
    root.push(("backup".into(), backup()));
    if let Some(cli) = parts.tools.iter().find(|t| *t == "stella-cli") {
        root.push((
            "cli".into(),
            map(
                "stella-cli: the `stella` command-line client. Not deployed; the console's copyable `docker run` \
                 lines name this image, pinned by digest.",
                vec![("image", image_node(find(cli)?, tag))],
            ),
        ));
    }
    let mut bundled = vec![(
        "existingSecret".to_string(),
        string(
            "Secret with postgres-password, redis-password, database-url (the services' role, stella_service), \
             migrator-database-url (the owner's), db-service-password, redis-url and queue-url; empty: the \
             chart creates one with random passwords and keeps it across upgrades (with `helm install/upgrade`; \
             GitOps tools that render with `helm template` cannot look it up: give one).",
            "",
        ),
    )];
    for b in &parts.bundled {
        bundled.push((
            b.key.clone(),
            map(
                &format!("{}, ports {:?}.", b.image, b.ports),
                vec![
                    ("image", image_node(find(&b.image)?, tag)),
                    (
                        "storage",
                        map(
                            "The data volume claim.",
                            vec![
                                ("size", pattern("Size.", "10Gi", "^[0-9]+(Mi|Gi|Ti)$")),
                                ("storageClassName", string("Storage class; empty: the cluster's default.", "")),
                            ],
                        ),
                    ),
                    ("resources", resources("100m", "128Mi", "1Gi")),
                ],
            ),
        ));
    }
    root.push((
        "bundled".into(),
        Node::Map {
            description:
                "The bundled mode's StatefulSets (mode: bundled), for lab clusters only: one replica each (backups: see backup)."
                    .into(),
            children: bundled,
        },
    ));
    Ok(Node::Map { description: "StellaOps".into(), children: root })
}

fn image_node(built: &BuiltImage, tag: &str) -> Node {
    image("The image.", built, tag)
}

fn secret_ref(what: &str, secret: &str, key: &str) -> Vec<(&'static str, Node)> {
    vec![
        (
            "existingSecret",
            string(
                &format!("Secret holding {what} (created outside the chart: External Secrets, Sealed Secrets, ...)."),
                secret,
            ),
        ),
        ("secretKey", pattern("Key of that Secret.", key, "^[-._a-zA-Z0-9]+$")),
    ]
}

fn dependencies() -> Vec<(String, Node)> {
    let mut database =
        secret_ref("the PostgreSQL URL (postgres://user:password@host:5432/stella)", "stella-database", "database-url");
    database.push(("poolSize", integer("Connections each pod opens at most.", 5, 1, 200)));
    let mut object_store = vec![
        (
            "url",
            pattern(
                "s3://bucket[/prefix] for S3 or a compatible store.",
                "s3://stella-exports",
                "^s3://[a-z0-9.-]+(/.*)?$",
            ),
        ),
        ("region", string("S3 region.", "us-east-1")),
        ("endpoint", pattern("S3 endpoint for a compatible store (MinIO, Ceph); empty: AWS.", "", "^(https?://.+)?$")),
    ];
    object_store.push((
        "existingSecret",
        string(
            "Secret holding the keys access-key-id and secret-access-key; empty: the pod's own identity.",
            "stella-object-store",
        ),
    ));
    vec![
        ("database".into(), map("External PostgreSQL (mode: external).", database)),
        (
            "redis".into(),
            map(
                "External Redis (mode: external).",
                secret_ref("the Redis URL (rediss://:password@host:6379)", "stella-redis", "redis-url"),
            ),
        ),
        (
            "queue".into(),
            map(
                "External NATS with JetStream (mode: external).",
                secret_ref("the NATS URL (nats://user:password@host:4222)", "stella-queue", "queue-url"),
            ),
        ),
        ("objectStore".into(), map("Object store of the export center (mode: external).", object_store)),
    ]
}

fn ingress() -> Node {
    map(
        "Ingress: one host for the console, one for the API.",
        vec![
            ("enabled", boolean("Create the Ingress object(s).", false)),
            ("className", string("IngressClass; empty: the cluster's default.", "")),
            ("annotations", object("Annotations of every Ingress.", json!({}), json!({"type": "string"}))),
            (
                "console",
                map(
                    "The console's host.",
                    vec![
                        ("host", pattern("Host name.", "stella.example.com", "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")),
                        (
                            "separate",
                            boolean("Serve the console from its own Ingress object (own class or annotations).", false),
                        ),
                        (
                            "annotations",
                            object(
                                "Annotations of the console's own Ingress (separate: true).",
                                json!({}),
                                json!({"type": "string"}),
                            ),
                        ),
                    ],
                ),
            ),
            (
                "api",
                map(
                    "The API's host.",
                    vec![("host", pattern("Host name.", "api.stella.example.com", "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))],
                ),
            ),
            (
                "tls",
                map(
                    "TLS termination at the ingress.",
                    vec![
                        ("enabled", boolean("Serve HTTPS (required by profile: production).", true)),
                        (
                            "secretName",
                            string("TLS Secret covering both hosts (cert-manager can create it).", "stella-tls"),
                        ),
                    ],
                ),
            ),
        ],
    )
}

fn network_policy() -> Node {
    let namespace = |d: &str, v: &str| pattern(d, v, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    map(
        "NetworkPolicies: everything denied, then only the ports each component needs.",
        vec![
            ("enabled", boolean("Create the policies.", true)),
            (
                "ingressNamespace",
                namespace(
                    "Namespace of the ingress controller, allowed to the console and API ports.",
                    "ingress-nginx",
                ),
            ),
            (
                "monitoringNamespace",
                pattern(
                    "Namespace allowed to scrape /metrics; empty: none.",
                    "monitoring",
                    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                ),
            ),
            ("dnsNamespace", namespace("Namespace of the cluster DNS, allowed on dnsPorts.", "kube-system")),
            (
                "dnsPorts",
                list(
                    "Ports of the cluster DNS pods (UDP and TCP); OpenShift's listen on 5353 behind the Service's 53.",
                    json!([53]),
                    json!({"type": "integer", "minimum": 1, "maximum": 65535}),
                ),
            ),
            (
                "egress",
                map(
                    "Egress to the external dependencies (mode: external).",
                    vec![
                        (
                            "ports",
                            list(
                                "Ports of PostgreSQL, Redis, NATS, S3 and the OTel collector.",
                                json!([5432, 6379, 4222, 443, 4318]),
                                json!({"type": "integer", "minimum": 1, "maximum": 65535}),
                            ),
                        ),
                        (
                            "cidrs",
                            list(
                                "Where they are; empty: any address on those ports only.",
                                json!([]),
                                json!({"type": "string", "pattern": "^[0-9a-f.:]+/[0-9]+$"}),
                            ),
                        ),
                    ],
                ),
            ),
        ],
    )
}

fn metrics() -> Node {
    map(
        "Prometheus metrics at /metrics on each component's port.",
        vec![
            ("scrapeAnnotations", boolean("prometheus.io/* annotations on each pod.", true)),
            (
                "serviceMonitor",
                map(
                    "A ServiceMonitor per component (Prometheus Operator).",
                    vec![
                        ("enabled", boolean("Create them (needs the monitoring.coreos.com CRDs).", false)),
                        ("interval", pattern("Scrape interval.", "30s", "^[0-9]+(s|m)$")),
                        (
                            "labels",
                            object(
                                "Labels the Prometheus selects ServiceMonitors by.",
                                json!({}),
                                json!({"type": "string"}),
                            ),
                        ),
                    ],
                ),
            ),
        ]
        .into_iter()
        .chain(super::cluster::monitoring())
        .collect(),
    )
}

fn migrator(built: &BuiltImage, tag: &str) -> Node {
    map(
        "stella-migrator: the schema migrations, a hook Job before every install and upgrade (idempotent).",
        vec![
            ("image", image_node(built, tag)),
            ("resources", resources("50m", "32Mi", "256Mi")),
            ("backoffLimit", integer("Retries of a failed migration before the release fails.", 2, 0, 10)),
            ("activeDeadlineSeconds", integer("Time the migration may take.", 600, 30, 86400)),
            (
                "admin",
                map(
                    "The first administrator. With a Secret named here the migrator creates the `admin` user of the \
                     `default` tenant with that password, once (an existing admin keeps its password). Empty: no \
                     account is created; the chart has no default credentials.",
                    vec![
                        (
                            "existingSecret",
                            string("Secret holding the first admin's password (12 characters or more).", ""),
                        ),
                        ("secretKey", pattern("Key of that Secret.", "admin-password", "^[-._a-zA-Z0-9]+$")),
                    ],
                ),
            ),
            (
                "breakGlass",
                map(
                    "A suspended CronJob an operator starts by hand (kubectl create job --from=cronjob/...).",
                    vec![("enabled", boolean("Create it.", false))],
                ),
            ),
        ]
        .into_iter()
        .chain(super::cluster::extras(false))
        .collect(),
    )
}

/// `templates/backup.yaml`: the scheduled dumps (`stella-postgres backup`, the bundled
/// postgres image) onto a volume claim.
fn backup() -> Node {
    map(
        "Scheduled database dumps: a CronJob runs `stella-postgres backup` (pg_dump of one snapshot, read back with \
         pg_restore --list, then kept) with the stella-postgres image, as the migrator's role, onto a volume claim. \
         For mode external too, beside the provider's point-in-time recovery. Restore: docs/install/helm-prod.md.",
        vec![
            ("enabled", boolean("Create the CronJob (and its claim).", false)),
            ("schedule", pattern("Cron schedule, in the cluster's time zone.", "17 3 * * *", "^\\S+( \\S+){4}$")),
            ("keep", integer("Dumps kept; the oldest is removed only after a new one is in place.", 7, 1, 366)),
            ("activeDeadlineSeconds", integer("Time one backup may take.", 3600, 60, 86400)),
            ("resources", resources("50m", "64Mi", "512Mi")),
            (
                "storage",
                map(
                    "The volume claim the dumps are written to (kept when the release is uninstalled).",
                    vec![
                        ("size", pattern("Size.", "20Gi", "^[0-9]+(Mi|Gi|Ti)$")),
                        ("storageClassName", string("Storage class; empty: the cluster's default.", "")),
                        (
                            "existingClaim",
                            string("A claim of your own to write to instead; empty: the chart creates one.", ""),
                        ),
                    ],
                ),
            ),
        ],
    )
}
