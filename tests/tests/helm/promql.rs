//! The chart's alerts and dashboard ask only for metrics the services export: every metric name
//! in a PrometheusRule expression or a dashboard query must be in the `/metrics` of a running
//! service binary (each server component's, started here), and every `route` label they name
//! must be a route the code declares.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::{kind, render, root};

/// The alerts of a PrometheusRule, as (name, expression).
pub fn rules(rule: &Value) -> Vec<(&str, &str)> {
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| (r["alert"].as_str().unwrap(), r["expr"].as_str().unwrap()))
        .collect()
}

/// Every query of a Grafana dashboard: the panels' expressions, and the series selector of each
/// `label_values(selector, label)` variable.
pub fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap_or(q);
            out.push(inner.rsplit_once(',').map_or(inner, |(selector, _)| selector).to_string());
        }
    }
    out
}

/// The values an expression gives a label: `label="v"`, and each alternative of `label=~"a|b"`.
pub fn label_values(expr: &str, label: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (op, split) in [("=\"", false), ("=~\"", true)] {
        let needle = format!("{label}{op}");
        let mut rest = expr;
        while let Some(at) = rest.find(&needle) {
            let boundary = rest[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let tail = &rest[at + needle.len()..];
            let end = tail.find('"').unwrap();
            if boundary {
                if split {
                    out.extend(tail[..end].split('|').map(String::from));
                } else {
                    out.push(tail[..end].to_string());
                }
            }
            rest = &tail[end..];
        }
    }
    out
}

const KEYWORDS: &[&str] =
    &["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"];

/// The metric names of a PromQL expression: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{}` or a grouping clause), durations, numbers, strings or
/// Grafana variables.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings, label matchers and ranges out; grouping clauses' label lists out.
    let mut flat = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
            }
            '[' => {
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
            }
            c => flat.push(c),
        }
    }
    // Grouping clauses out with their label lists: `sum by (job) (x)` is `sum (x)`.
    let mut tokens: Vec<String> = Vec::new();
    let mut all = tokenize(&flat).into_iter().peekable();
    while let Some(token) = all.next() {
        if KEYWORDS[..6].contains(&token.as_str()) && all.peek().is_some_and(|t| t == "(") {
            for t in all.by_ref() {
                if t == ")" {
                    break;
                }
            }
        } else {
            tokens.push(token);
        }
    }
    let mut out = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let function = tokens.get(i + 1).is_some_and(|t| t == "(");
        if is_identifier(token) && !function && !KEYWORDS.contains(&token.as_str()) {
            out.insert(token.clone());
        }
    }
    out
}

fn is_identifier(token: &str) -> bool {
    token.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
}

/// Identifiers (with the `$` of a variable and the digits of a number kept on them, so neither
/// passes for a name), and every other character as its own token.
fn tokenize(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' || c == '.' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[test]
fn metric_names_finds_every_metric_of_an_expression_and_nothing_else() {
    let expr = r#"sum by (job, le) (rate(up{job=~"a|b", route!~"/x"}[5m])) / on (job) group_left kube_pod_info
        > 0.5 and bool rec:rule:sum or absent_over_time(foo_total{x="by (y)"}[$__rate_interval]) * 1e3"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from(["up", "kube_pod_info", "rec:rule:sum", "foo_total"].map(String::from))
    );
    assert_eq!(label_values(expr, "job"), ["a", "b"]);
}

/// Every metric each server component's binary exports, from its own `/metrics`: the names of
/// its `# TYPE` lines, with the `_bucket`, `_sum` and `_count` series of histograms. Each is
/// started with the image's settings (no dependency), asked for readiness once so that the
/// request counters have a series, then scraped.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (image, _) in super::components().values() {
        let port = stella_e2e::free_port();
        let env = [("STELLA_PORT", port.to_string()), ("STELLA_LOG_FORMAT", "json".to_string())];
        let mut proc = stella_e2e::Proc::spawn(&stella_e2e::bin_path(image), &[], &env);
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            stella_e2e::wait_status(&format!("{base}/health/readiness"), 200, Duration::from_secs(10)).is_some(),
            "{image} did not become ready: {:?}\n{}",
            proc.wait_for(Duration::from_millis(100)),
            proc.stderr()
        );
        let (_, text) = stella_e2e::get(&format!("{base}/metrics")).unwrap();
        let mut seen = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let mut parts = line.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            seen += 1;
        }
        assert!(seen > 0 && text.contains("stella_http_requests_total{"), "{image}: /metrics:\n{text}");
    }
    names
}

/// The routes the services declare (`.route("/path", ...)` in their source), which a `route`
/// label can take.
fn declared_routes() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    let mut stack = vec![root().join("services")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split(".route(\"").skip(1) {
                    routes.insert(part.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    assert!(routes.contains("/health/readiness") && routes.contains("/api/v1/exports"), "{routes:?}");
    routes
}

#[test]
fn alerts_and_dashboard_use_only_metrics_the_services_export() {
    let dir = tempfile::tempdir().unwrap();
    let docs = render(&["ci/everything-values.yaml".to_string()], dir.path());
    let rule = kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1, "ci/everything-values.yaml turns the alerts on");
    let dashboard = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str().unwrap().ends_with("-dashboard"))
        .expect("ci/everything-values.yaml turns the dashboard on");
    let dashboard: Value = serde_json::from_str(dashboard["data"]["stellaops.json"].as_str().unwrap()).unwrap();
    let mut queries: Vec<(String, String)> =
        rules(rule[0]).into_iter().map(|(alert, expr)| (alert.to_string(), expr.to_string())).collect();
    queries.extend(dashboard_queries(&dashboard).into_iter().map(|q| ("the dashboard".to_string(), q)));

    let exported = exported();
    let routes = declared_routes();
    let mut used = BTreeSet::new();
    for (owner, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{owner}: no metric in {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{owner} uses {name}, which no service exports; they export: {exported:?}\n{expr}"
            );
            used.insert(name);
        }
        for route in label_values(expr, "route") {
            assert!(routes.contains(&route), "{owner} names route {route}, which no service declares\n{expr}");
        }
    }
    eprintln!("metrics used by the alerts and the dashboard: {used:?}");
}
