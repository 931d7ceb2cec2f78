//! The values that fit the chart to a real cluster: the platform's pod security (a fixed uid, or
//! the one OpenShift assigns), the site's extra environment, volumes and CA bundle, the
//! scheduling defaults (anti-affinity, zone spread, priority), the alerts and dashboard, and the
//! `helm test` pods. The same keys for every component; `values.rs` places them in the tree.

use serde_json::{Value, json};

use super::tree::{Node, boolean, leaf, list, map, object, one_of};

/// Where the site's CA bundle is mounted; `SSL_CERT_DIR` names it (see [`global`]).
pub const CA_DIR: &str = "/etc/ssl/site-ca";

/// Volume names the templates use themselves: an extra volume may not take one.
const VOLUMES: &[&str] = &["secrets", "state", "site-ca", "admin", "data", "dumps"];

const NAME: &str = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

fn env_list(description: &str) -> Node {
    list(
        description,
        json!([]),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": "^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                    "not": {"anyOf": [{"pattern": "^(STELLA|OTEL)_"}, {"enum": ["SSL_CERT_FILE", "SSL_CERT_DIR"]}]}
                }
            }
        }),
    )
}

fn volume_list(description: &str) -> Node {
    list(
        description,
        json!([]),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": NAME, "not": {"enum": VOLUMES}}}
        }),
    )
}

fn mount_list(description: &str) -> Node {
    list(
        description,
        json!([]),
        json!({
            "type": "object",
            "required": ["name", "mountPath"],
            "properties": {"name": {"type": "string"}, "mountPath": {"type": "string", "pattern": "^/"}}
        }),
    )
}

const EXTRA_ENV: &str = "Environment variables added to the container, as Kubernetes EnvVar objects (value or \
                         valueFrom): proxies, a time zone, a cloud SDK's variables. StellaOps settings (STELLA_*, \
                         OTEL_*) are refused here: they go in `config` or `secrets`, where they are checked; \
                         SSL_CERT_* too: use global.caBundle.";

/// The keys of `global` this module adds.
pub fn global() -> Vec<(&'static str, Node)> {
    vec![
        (
            "podSecurity",
            map(
                "Pod security identity.",
                vec![(
                    "assignedUid",
                    boolean(
                        "The platform assigns the uid (OpenShift's restricted-v2 SCC: a uid from the namespace's \
                         range, in group 0): no runAsUser, runAsGroup or fsGroup is set. runAsNonRoot, the \
                         read-only root, no capabilities and the RuntimeDefault seccomp profile stay. Every server \
                         image runs under such a uid; the bundled stella-postgres does not (initdb needs a passwd \
                         entry), so this needs mode: external. false: every pod runs as 65532, the images' user.",
                        false,
                    ),
                )],
            ),
        ),
        (
            "caBundle",
            map(
                &format!(
                    "The site's private CA certificates (PEM), from a ConfigMap or a Secret, mounted in every \
                     StellaOps pod at {CA_DIR} and named by SSL_CERT_DIR, beside the images' Mozilla roots \
                     (SSL_CERT_FILE). Trusted by the export center's S3 client, webhooks, feed URLs, task steps \
                     and the model endpoint; SMTP still trusts only the compiled-in Mozilla roots \
                     (docs/install/helm-prod.md)."
                ),
                vec![
                    ("configMap", leaf("ConfigMap holding the bundle; empty: none.", json!(""), name_or_empty())),
                    (
                        "secret",
                        leaf(
                            "Secret holding the bundle (instead of a ConfigMap); empty: none.",
                            json!(""),
                            name_or_empty(),
                        ),
                    ),
                    (
                        "key",
                        leaf(
                            "Key of that ConfigMap or Secret.",
                            json!("ca.crt"),
                            json!({"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"}),
                        ),
                    ),
                ],
            ),
        ),
        ("extraEnv", env_list(&format!("{EXTRA_ENV} Added to every StellaOps pod (the components and the migrator)."))),
        (
            "extraVolumes",
            volume_list(
                "Volumes added to every StellaOps pod (the components and the migrator), as Kubernetes Volume objects.",
            ),
        ),
        (
            "extraVolumeMounts",
            mount_list(
                "Mounts added to every StellaOps container (the components and the migrator), as Kubernetes VolumeMount objects.",
            ),
        ),
        (
            "priorityClassName",
            leaf(
                "PriorityClass of every pod (components, migrator, bundled StatefulSets, backups); a component's \
                 own priorityClassName wins. Empty: the cluster's default.",
                json!(""),
                name_or_empty(),
            ),
        ),
        (
            "podAntiAffinity",
            one_of(
                "`soft`: each component's pods prefer different nodes (preferred anti-affinity on \
                 kubernetes.io/hostname, by the component's labels), merged under the component's own \
                 `affinity`. `none`: no default.",
                "soft",
                &["soft", "none"],
            ),
        ),
        (
            "topologySpreadConstraints",
            list(
                "Topology spread of every component whose own list is empty (the chart adds the pod selector); \
                 [] turns the default off.",
                json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]),
                json!({"type": "object", "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"]}),
            ),
        ),
    ]
}

fn name_or_empty() -> Value {
    json!({"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"})
}

/// The keys every component (and the migrator, `priority` false) adds.
pub fn extras(priority: bool) -> Vec<(&'static str, Node)> {
    let mut out = vec![
        ("extraEnv", env_list(&format!("{EXTRA_ENV} After global.extraEnv."))),
        ("extraVolumes", volume_list("Volumes added to the pod, after global.extraVolumes.")),
        ("extraVolumeMounts", mount_list("Mounts added to the container, after global.extraVolumeMounts.")),
    ];
    if priority {
        out.push((
            "priorityClassName",
            leaf(
                "PriorityClass of this component's pods; empty: global.priorityClassName.",
                json!(""),
                name_or_empty(),
            ),
        ));
    }
    out
}

/// `metrics.prometheusRule` and `metrics.grafanaDashboard`.
pub fn monitoring() -> Vec<(&'static str, Node)> {
    vec![
        (
            "prometheusRule",
            map(
                "Alerts as a PrometheusRule (Prometheus Operator): readiness failing, error rate, and the signals \
                 for queue backlog, feed staleness and ledger verification that the services' metrics allow \
                 (each alert's description says what it can and cannot see). The rules select the \
                 ServiceMonitors' job labels, so metrics.serviceMonitor.enabled is required.",
                vec![
                    ("enabled", boolean("Create it (needs the monitoring.coreos.com CRDs).", false)),
                    ("labels", object("Labels the Prometheus selects rules by.", json!({}), json!({"type": "string"}))),
                    (
                        "errorRatio",
                        leaf(
                            "Share of a component's requests answered 5xx (health and metrics excluded) above \
                             which StellaErrorRate fires, over 10 minutes.",
                            json!(0.05),
                            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
                        ),
                    ),
                ],
            ),
        ),
        (
            "grafanaDashboard",
            map(
                "A Grafana dashboard (requests, errors, latency, readiness, memory, CPU, versions per component) \
                 in a ConfigMap for Grafana's dashboard sidecar.",
                vec![
                    ("enabled", boolean("Create the ConfigMap.", false)),
                    (
                        "labels",
                        object(
                            "Labels the sidecar finds dashboards by.",
                            json!({"grafana_dashboard": "1"}),
                            json!({"type": "string"}),
                        ),
                    ),
                    (
                        "annotations",
                        object(
                            "Annotations, e.g. the sidecar's folder (grafana_folder).",
                            json!({}),
                            json!({"type": "string"}),
                        ),
                    ),
                ],
            ),
        ),
    ]
}

/// `helmTests`: the `helm test` pods.
pub fn helm_tests() -> Node {
    map(
        "`helm test` pods: one per component, running the component's own image's `healthcheck` against its \
         Service (GET /health/readiness through the Service's address); the test fails unless every component \
         answers ready.",
        vec![("enabled", boolean("Render the test pods (they run only on `helm test`).", true))],
    )
}

/// The schema rules that join these values.
pub fn rules() -> Vec<Value> {
    vec![
        json!({
            "description": "global.caBundle takes a ConfigMap or a Secret, not both",
            "if": {"properties": {"global": {"properties": {"caBundle": {"properties": {"configMap": {"minLength": 1}}}}}}},
            "then": {"properties": {"global": {"properties": {"caBundle": {"properties": {"secret": {"maxLength": 0}}}}}}}
        }),
        json!({
            "description": "metrics.prometheusRule needs metrics.serviceMonitor: the alerts select its job labels",
            "if": {"properties": {"metrics": {"properties": {"prometheusRule": {"properties": {"enabled": {"const": true}}}}}}},
            "then": {"properties": {"metrics": {"properties": {"serviceMonitor": {"properties": {"enabled": {"const": true}}}}}}}
        }),
    ]
}
