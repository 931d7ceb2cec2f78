//! The values that fit the chart to a real cluster: the alerts and the dashboard. `values.rs`
//! places them in the tree.

use serde_json::{Value, json};

use super::tree::{Node, boolean, leaf, map, object};

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

/// The schema rules that join these values.
pub fn rules() -> Vec<Value> {
    vec![json!({
        "description": "metrics.prometheusRule needs metrics.serviceMonitor: the alerts select its job labels",
        "if": {"properties": {"metrics": {"properties": {"prometheusRule": {"properties": {"enabled": {"const": true}}}}}}},
        "then": {"properties": {"metrics": {"properties": {"serviceMonitor": {"properties": {"enabled": {"const": true}}}}}}}
    })]
}
