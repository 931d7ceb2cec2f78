//! The Helm chart `deploy/helm/stella`, checked by tools someone else wrote: Helm itself (its Go
//! SDK, through helm-python-sdk) lints it strictly and renders it for every scenario, and
//! kubernetes-validate checks every rendered document against the oldest and the newest
//! Kubernetes version the chart supports. Then the rendered objects are checked for every
//! component of `images.toml`, not for one example. `helm/fit.rs`: what fits the chart to a
//! cluster (OpenShift's assigned uid, the site's CA bundle and extras, scheduling defaults, the
//! `helm test` pods, alerts and dashboard), rendered, and run where it can be.

#[path = "helm/fit.rs"]
mod fit;
#[path = "helm/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use stella_e2e::{output, root, run};

const KUBE_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn chart() -> PathBuf {
    root().join("deploy/helm/stella")
}

fn helper() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(root().join("tests/fixtures/helm_chart.py"));
    cmd
}

/// The scenarios CI renders: values files, relative to the chart, merged in order.
fn scenarios() -> Vec<(&'static str, Vec<String>)> {
    let mut s = vec![
        ("default", vec![]),
        ("production", vec!["values-prod.yaml".to_string()]),
        ("airgap", vec!["values-prod.yaml".to_string(), "values-airgap.yaml".to_string()]),
        ("openshift", vec!["values-prod.yaml".to_string(), "values-openshift.yaml".to_string()]),
    ];
    let mut ci: Vec<String> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| format!("ci/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    ci.sort();
    assert!(ci.iter().any(|f| f.contains("bundled")), "a bundled-mode scenario exists: {ci:?}");
    for f in ci {
        s.push((Box::leak(f.clone().into_boxed_str()), vec![f]));
    }
    s
}

fn values_args(files: &[String]) -> Vec<String> {
    files.iter().flat_map(|f| ["-f".to_string(), chart().join(f).display().to_string()]).collect()
}

/// Renders a scenario into `out` and returns the parsed documents as (template, object).
fn render(files: &[String], out: &Path) -> Vec<(String, Value)> {
    let text = run(helper().arg("render").arg(chart()).arg(out).args(values_args(files)));
    let docs: Vec<Value> = serde_json::from_str(&text).unwrap();
    docs.into_iter().map(|d| (d["template"].as_str().unwrap().to_string(), d["object"].clone())).collect()
}

/// A values file as JSON (PyYAML reads it, as for the renders).
fn yaml_file(path: &Path) -> Value {
    let text = run(Command::new("python3")
        .args(["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])) or {}))"])
        .arg(path));
    serde_json::from_str(&text).unwrap()
}

/// The chart's default values.
fn defaults() -> Value {
    yaml_file(&chart().join("values.yaml"))
}

/// Every component of the catalog, read from images.toml directly (not through the chart's
/// generator): services with a port, by values key, with that port.
fn components() -> BTreeMap<String, (String, u64)> {
    let catalog: toml::Table = toml::from_str(&std::fs::read_to_string(root().join("images.toml")).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for (name, image) in catalog["images"].as_table().unwrap() {
        let support = image.get("kind").and_then(|k| k.as_str()) == Some("support");
        let Some(port) = image.get("ports").and_then(|p| p.as_array()).and_then(|p| p.first()) else { continue };
        if support {
            continue;
        }
        let short = name.trim_start_matches("stella-");
        let mut key = String::new();
        let mut upper = false;
        for c in short.chars() {
            if c == '-' {
                upper = true;
            } else {
                key.extend(if upper { c.to_uppercase().collect::<Vec<_>>() } else { vec![c] });
                upper = false;
            }
        }
        out.insert(key, (name.clone(), port.as_integer().unwrap() as u64));
    }
    assert!(out.len() >= 11, "{out:?}");
    out
}

fn kind<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|(_, d)| d["kind"] == kind).map(|(_, d)| d).collect()
}

fn named<'a>(docs: &'a [(String, Value)], k: &str, name: &str) -> Option<&'a Value> {
    kind(docs, k).into_iter().find(|d| d["metadata"]["name"] == name)
}

/// Every pod template of the rendered objects, with the owning object's kind and name.
fn pod_specs(docs: &[(String, Value)]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (_, d) in docs {
        let spec = match d["kind"].as_str().unwrap() {
            "Deployment" | "StatefulSet" | "Job" => &d["spec"]["template"]["spec"],
            "CronJob" => &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "Pod" => &d["spec"],
            _ => continue,
        };
        out.push((format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap()), spec));
    }
    out
}

#[test]
fn helm_lint_strict_passes_for_every_values_file() {
    for (name, files) in scenarios() {
        let out = output(helper().arg("lint").arg(chart()).args(values_args(&files)));
        assert!(
            out.status.success(),
            "helm lint --strict ({name}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["total_charts_linted"], 1, "{name}: {report}");
    }
}

#[test]
fn every_scenario_renders_and_passes_kubernetes_validate_strict() {
    let comps = components();
    let defaults = defaults();
    for (name, files) in scenarios() {
        let dir = tempfile::tempdir().unwrap();
        let docs = render(&files, dir.path());
        assert!(!docs.is_empty(), "{name}: nothing rendered");
        // kubernetes-validate, oldest and newest supported version. CRD kinds it has no schema
        // for (ServiceMonitor, PrometheusRule) are only warned about; every other object must pass.
        let mut manifests: Vec<PathBuf> = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() { stack.push(p) } else { manifests.push(p) }
            }
        }
        manifests.sort();
        for version in KUBE_VERSIONS {
            let out = output(Command::new("kubernetes-validate").args(["--strict", "-k", version]).args(&manifests));
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "kubernetes-validate {version} ({name}):\n{text}");
            for line in text.lines().filter(|l| l.starts_with("WARN")) {
                assert!(
                    line.contains("kind ServiceMonitor") || line.contains("kind PrometheusRule"),
                    "{name}, {version}: {line}"
                );
            }
            let passed = text.lines().filter(|l| l.contains(" passed for resource ")).count();
            let crds = kind(&docs, "ServiceMonitor").len() + kind(&docs, "PrometheusRule").len();
            assert_eq!(passed + crds, docs.len(), "{name}, {version}: every document validated:\n{text}");
        }
        check_scenario(name, &files, &docs, &comps, &defaults);
        fit::check(name, &values_of(&files, &defaults), &docs, &comps);
    }
}

/// What must hold in every scenario, for every component it enables.
fn check_scenario(
    name: &str,
    files: &[String],
    docs: &[(String, Value)],
    comps: &BTreeMap<String, (String, u64)>,
    defaults: &Value,
) {
    let values = values_of(files, defaults);
    let bundled = values["mode"] == "bundled";
    let policies = values["networkPolicy"]["enabled"] == true;

    // Images: every container pinned by the digest of its values, under the configured registry.
    let registry = values["global"]["imageRegistry"].as_str().unwrap();
    for (owner, spec) in pod_specs(docs) {
        for c in spec["containers"].as_array().unwrap() {
            let image = c["image"].as_str().unwrap();
            let (reference, digest) =
                image.split_once('@').unwrap_or_else(|| panic!("{name}: {owner} runs {image} without a digest"));
            assert!(digest.starts_with("sha256:") && digest.len() == 71, "{name}: {owner}: {image}");
            assert!(
                reference.starts_with(&format!("{registry}/")) && reference.contains(':'),
                "{name}: {owner}: {image}"
            );
            // Hardening: the same for every pod and container.
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}: {owner}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}: {owner}");
            assert_eq!(sc["runAsNonRoot"], true, "{name}: {owner}");
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}: {owner}");
            assert!(
                c.get("resources").is_some_and(|r| r["limits"]["memory"].is_string()),
                "{name}: {owner} has a memory limit"
            );
        }
        let psc = &spec["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}: {owner}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}: {owner}");
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}: {owner} mounts no API token");
    }

    // No secret in any ConfigMap: no secret setting, no *_FILE, no credentials in a URL.
    for cm in kind(docs, "ConfigMap") {
        for (k, v) in cm["data"].as_object().unwrap() {
            let v = v.as_str().unwrap();
            assert!(
                !["STELLA_DATABASE_URL", "STELLA_REDIS_URL", "STELLA_QUEUE_URL"].contains(&k.as_str())
                    && !k.ends_with("_FILE")
                    && !k.contains("PASSWORD")
                    && !k.contains("SECRET"),
                "{name}: ConfigMap {} holds {k}",
                cm["metadata"]["name"]
            );
            let creds = v.split_once("://").is_some_and(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'));
            assert!(!creds, "{name}: ConfigMap {} has credentials in {k}={v}", cm["metadata"]["name"]);
        }
    }

    // Every component: enabled ones have all their objects, disabled ones none.
    for (key, (image, port)) in comps {
        let c = &values[key.as_str()];
        let object = format!("stella-{}", image.trim_start_matches("stella-"));
        let deployment = named(docs, "Deployment", &object);
        if c["enabled"] != true {
            assert!(deployment.is_none(), "{name}: {key} is disabled but rendered");
            continue;
        }
        let d = deployment.unwrap_or_else(|| panic!("{name}: no Deployment {object} for {key}"));
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        let digest = c["image"]["digest"].as_str().unwrap();
        assert!(
            container["image"].as_str().unwrap().ends_with(&format!(
                "/{}:{}@{digest}",
                c["image"]["repository"].as_str().unwrap(),
                c["image"]["tag"].as_str().unwrap()
            )),
            "{name}: {key}: {}",
            container["image"]
        );
        assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(*port), "{name}: {key}");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health/liveness", "{name}: {key}");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health/readiness", "{name}: {key}");
        assert!(d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap() > 25, "{name}: {key}");
        let sa =
            named(docs, "ServiceAccount", &object).unwrap_or_else(|| panic!("{name}: no ServiceAccount for {key}"));
        assert_eq!(sa["automountServiceAccountToken"], false, "{name}: {key}");
        assert_eq!(d["spec"]["template"]["spec"]["serviceAccountName"], object.as_str(), "{name}: {key}");
        let svc = named(docs, "Service", &object).unwrap_or_else(|| panic!("{name}: no Service for {key}"));
        assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(*port), "{name}: {key}");
        assert!(named(docs, "ConfigMap", &object).is_some(), "{name}: no ConfigMap for {key}");
        let env: BTreeMap<&str, &Value> =
            container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), &e["value"])).collect();
        assert_eq!(
            env.get("STELLA_DATABASE_URL_FILE").copied(),
            Some(&Value::from("/run/secrets/stella/database-url")),
            "{name}: {key}"
        );
        let aggregation_only = ["conseiller", "excitator"].contains(&key.as_str());
        if aggregation_only {
            assert_eq!(
                env.get("STELLA_DISABLE_MERGE").copied(),
                Some(&Value::from("true")),
                "{name}: {key} must refuse to merge"
            );
        }
        assert_eq!(
            named(docs, "HorizontalPodAutoscaler", &object).is_some(),
            c["autoscaling"]["enabled"] == true,
            "{name}: {key}: an HPA exactly when autoscaling is on"
        );
        if c["autoscaling"]["enabled"] == true {
            assert!(d["spec"].get("replicas").is_none(), "{name}: {key}: the HPA owns the replica count");
        }
        assert_eq!(
            named(docs, "PodDisruptionBudget", &object).is_some(),
            c["podDisruptionBudget"]["enabled"] == true,
            "{name}: {key}: a PDB exactly when enabled"
        );
        if policies {
            let np =
                named(docs, "NetworkPolicy", &object).unwrap_or_else(|| panic!("{name}: no NetworkPolicy for {key}"));
            let ports: Vec<u64> = np["spec"]["ingress"][0]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_u64().unwrap())
                .collect();
            assert_eq!(ports, vec![*port], "{name}: {key} is reachable on its port only");
            assert_eq!(
                np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
                d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
                "{name}: {key}"
            );
        }
    }
    if policies {
        let deny = kind(docs, "NetworkPolicy")
            .into_iter()
            .find(|p| p["metadata"]["name"].as_str().unwrap().ends_with("-default-deny"))
            .unwrap_or_else(|| panic!("{name}: no default-deny policy"));
        assert_eq!(deny["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]), "{name}");
        assert!(
            deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none(),
            "{name}: default deny has no rules"
        );
    } else {
        assert!(kind(docs, "NetworkPolicy").is_empty(), "{name}");
    }

    // The migrator: a hook Job before upgrades (and installs, where the database is external),
    // running before the services; no other object is a hook but the `helm test` pods
    // (fit::check checks those).
    let hooks: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["metadata"]["annotations"].get("helm.sh/hook").is_some_and(|h| h != "test"))
        .collect();
    assert_eq!(hooks.len(), 1, "{name}: exactly the migration job is a hook");
    let job = hooks[0];
    assert_eq!(job["kind"], "Job", "{name}");
    let when: BTreeSet<&str> = job["metadata"]["annotations"]["helm.sh/hook"].as_str().unwrap().split(',').collect();
    let install = if bundled { "post-install" } else { "pre-install" };
    assert_eq!(when, BTreeSet::from([install, "pre-upgrade"]), "{name}");
    assert!(
        job["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().contains("/stella-migrator:"),
        "{name}"
    );
    // The air-gap values turn on the task runner's offline mode.
    if name == "airgap" {
        let offline = kind(docs, "ConfigMap").into_iter().any(|c| {
            c["metadata"]["name"].as_str().unwrap().contains("task-runner") && c["data"]["STELLA_OFFLINE"] == "true"
        });
        assert!(offline, "{name}: the task runner is not in offline mode");
    }
    // The first admin: only from a Secret the operator names; otherwise no account and no --seed.
    let migrator = &job["spec"]["template"]["spec"]["containers"][0];
    let admin_secret = values["migrator"]["admin"]["existingSecret"].as_str().unwrap_or_default();
    let env: Vec<&str> = migrator["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(env.contains(&"STELLA_ADMIN_PASSWORD_FILE"), !admin_secret.is_empty(), "{name}");
    assert_eq!(
        migrator["args"].as_array().is_some_and(|a| a.contains(&"--seed".into())),
        !admin_secret.is_empty(),
        "{name}"
    );
    if !admin_secret.is_empty() {
        let volumes = job["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["secret"]["secretName"] == admin_secret), "{name}");
    }

    // Least privilege (bundled mode): the migrator alone connects as the owner and manages the
    // services' role, whose password and URL the bundled Secret holds.
    assert_eq!(env.contains(&"STELLA_DATABASE_SERVICE_PASSWORD_FILE"), bundled, "{name}");
    if bundled {
        let volumes = job["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        let keys: BTreeSet<&str> = volumes
            .iter()
            .filter_map(|v| v["secret"]["items"].as_array())
            .flatten()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains("migrator-database-url") && keys.contains("db-service-password"), "{name}: {keys:?}");
        if values["bundled"]["existingSecret"].as_str().unwrap_or_default().is_empty() {
            let secret = kind(docs, "Secret").into_iter().find(|s| s["data"].get("db-service-password").is_some());
            let data = &secret.unwrap_or_else(|| panic!("{name}: no bundled Secret with db-service-password"))["data"];
            assert!(data.get("migrator-database-url").is_some() && data.get("database-url").is_some(), "{name}");
        }
    }

    // Bundled mode: the support images as StatefulSets; external mode: none of them.
    let statefulsets = kind(docs, "StatefulSet");
    if bundled {
        let names: BTreeSet<&str> = statefulsets.iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["stella-nats", "stella-postgres", "stella-redis"]), "{name}");
    } else {
        assert!(statefulsets.is_empty(), "{name}");
    }
    let ingresses = kind(docs, "Ingress");
    if values["ingress"]["enabled"] == true && values["ingress"]["tls"]["enabled"] == true {
        for i in &ingresses {
            let hosts: Vec<&Value> = i["spec"]["rules"].as_array().unwrap().iter().map(|r| &r["host"]).collect();
            assert_eq!(
                i["spec"]["tls"][0]["hosts"].as_array().unwrap().iter().collect::<Vec<_>>(),
                hosts,
                "{name}: TLS covers every host"
            );
        }
    }
    if values["profile"] == "production" {
        assert!(!ingresses.is_empty(), "{name}: production has an ingress");
    }
}

/// The values a scenario renders with: the defaults, then its files in order.
fn values_of(files: &[String], defaults: &Value) -> Value {
    let mut values = defaults.clone();
    for f in files {
        merge(&mut values, yaml_file(&chart().join(f)));
    }
    values
}

fn merge(into: &mut Value, new: Value) {
    match (into, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A values file with the given YAML, merged after `values-prod.yaml` when `prod`.
fn refused(yaml: &str, prod: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = helper();
    cmd.arg("render").arg(chart()).arg(dir.path().join("out"));
    if prod {
        cmd.arg("-f").arg(chart().join("values-prod.yaml"));
    }
    let out = output(cmd.arg("-f").arg(&file));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{yaml} must be refused:\n{stderr}{}", String::from_utf8_lossy(&out.stdout));
    stderr
}

#[test]
fn bad_values_are_refused_with_a_message_that_names_them() {
    let cases: &[(&str, bool, &[&str])] = &[
        ("api:\n  replicas: two\n", false, &["replicas", "integer"]),
        ("api:\n  replica: 2\n", false, &["replica", "additional"]),
        ("ingress:\n  tls:\n    enabled: false\n", true, &["tls", "enabled"]),
        ("networkPolicy:\n  enabled: false\n", true, &["networkPolicy", "enabled"]),
        ("conseiller:\n  config:\n    STELLA_DISABLE_MERGE: \"false\"\n", false, &["STELLA_DISABLE_MERGE"]),
        ("api:\n  config:\n    STELLA_ADMIN_PASSWORD: \"hunter2\"\n", false, &["STELLA_ADMIN_PASSWORD"]),
        ("api:\n  config:\n    STELLA_LOG_LEVEL: \"debug\"\n", false, &["STELLA_LOG_LEVEL"]),
        ("networkPolicy:\n  dnsNamespace: \"\"\n", false, &["dnsNamespace"]),
        ("api:\n  image:\n    digest: \"\"\n", false, &["digest"]),
        ("mode: external\ndatabase:\n  existingSecret: \"\"\n", false, &["existingSecret"]),
        ("policy:\n  image:\n    tag: v9.4.0\n", false, &["policy.image.tag", "version-skew"]),
        ("ledger:\n  image:\n    tag: edge\n", false, &["ledger.image.tag", "release version"]),
        // Only the component's own secret settings, each from a named Secret and key.
        ("api:\n  secrets:\n    STELLA_NOTIFY_SINKS: {existingSecret: s, key: k}\n", false, &["STELLA_NOTIFY_SINKS"]),
        ("notify:\n  secrets:\n    STELLA_NOTIFY_SINKS: {existingSecret: s}\n", false, &["key"]),
        // Fitting a cluster: the bundled PostgreSQL needs its fixed uid; one CA source; the
        // alerts need the ServiceMonitors; extras may not replace what the chart sets.
        ("mode: bundled\nglobal:\n  podSecurity:\n    assignedUid: true\n", false, &["assignedUid", "initdb"]),
        ("global:\n  podSecurity:\n    runAsUser: 1000\n", false, &["runAsUser", "additional"]),
        ("global:\n  caBundle:\n    configMap: a\n    secret: b\n", false, &["caBundle/secret"]),
        ("metrics:\n  prometheusRule:\n    enabled: true\n", false, &["serviceMonitor/enabled"]),
        ("api:\n  extraEnv:\n    - {name: STELLA_LOG_LEVEL, value: debug}\n", false, &["api/extraEnv/0/name"]),
        ("global:\n  extraEnv:\n    - {name: SSL_CERT_FILE, value: /x}\n", false, &["global/extraEnv/0/name"]),
        ("policy:\n  extraVolumes:\n    - {name: secrets, emptyDir: {}}\n", false, &["policy/extraVolumes/0/name"]),
        ("ledger:\n  extraVolumeMounts:\n    - {name: x}\n", false, &["ledger/extraVolumeMounts/0", "mountPath"]),
        ("global:\n  podAntiAffinity: hard\n", false, &["podAntiAffinity"]),
    ];
    for (yaml, prod, wanted) in cases {
        let message = refused(yaml, *prod);
        for w in *wanted {
            assert!(message.contains(w), "refusing {yaml:?}, Helm's message names {w}:\n{message}");
        }
    }
}

#[test]
fn compose_and_helm_pin_the_same_images_and_digests() {
    let compose = std::fs::read_to_string(root().join("deploy/compose/docker-compose.yml")).unwrap();
    let mut from_compose = BTreeMap::new();
    for line in compose.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
        let reference = line.trim_matches('"');
        let (name, digest) = reference.rsplit_once('@').unwrap();
        let image = name.rsplit('/').next().unwrap().split(':').next().unwrap();
        from_compose.insert(image.to_string(), digest.to_string());
    }
    let mut from_helm = BTreeMap::new();
    for (_, files) in [
        ("external", vec![]),
        ("bundled", vec!["ci/bundled-values.yaml".to_string(), "ci/everything-values.yaml".to_string()]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for (owner, spec) in pod_specs(&render(&files, dir.path())) {
            for c in spec["containers"].as_array().unwrap() {
                let (name, digest) = c["image"].as_str().unwrap().rsplit_once('@').unwrap();
                let image = name.rsplit('/').next().unwrap().split(':').next().unwrap();
                if let Some(old) = from_helm.insert(image.to_string(), digest.to_string()) {
                    assert_eq!(old, digest, "{owner}");
                }
            }
        }
    }
    assert_eq!(from_helm, from_compose, "Compose and the chart run the same images at the same digests");
}

/// The configuration the chart renders is what the services accept: each enabled component's
/// binary is started with its ConfigMap and the Deployment's environment (the Secrets' files
/// made with URLs of the right shape), and must come up live, for the external and the bundled
/// mode. A setting the runtime refused would exit 78 naming it.
#[test]
fn every_component_starts_with_the_configuration_the_chart_renders() {
    let secrets = tempfile::tempdir().unwrap();
    let urls = [
        ("database-url", "postgres://stella:pw@127.0.0.1:9/stella"),
        ("redis-url", "rediss://:pw@redis.internal:6379"),
        ("queue-url", "nats://stella:pw@nats.internal:4222"),
    ];
    // Secret settings given through `<component>.secrets` (ci/everything-values.yaml).
    let settings = [("STELLA_NOTIFY_SINKS", "ops=log"), ("STELLA_AI_API_KEY", "sk-from-a-secret")];
    for (file, value) in urls.into_iter().chain(settings) {
        std::fs::write(secrets.path().join(file), value).unwrap();
    }
    let mut read_from_files = Vec::new();
    for files in [vec![], vec!["ci/bundled-values.yaml".to_string(), "ci/everything-values.yaml".to_string()]] {
        let dir = tempfile::tempdir().unwrap();
        let docs = render(&files, dir.path());
        let deployments = kind(&docs, "Deployment");
        assert!(!deployments.is_empty());
        for d in deployments {
            let name = d["metadata"]["name"].as_str().unwrap();
            let container = &d["spec"]["template"]["spec"]["containers"][0];
            let cm =
                named(&docs, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"].as_str().unwrap()).unwrap();
            let mut env: Vec<(String, String)> = cm["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            for e in container["env"].as_array().unwrap() {
                let value = match e["value"].as_str() {
                    // The Secrets are mounted at /run/secrets/stella; here they are in a tempdir.
                    Some(v) => v.replace("/run/secrets/stella", &secrets.path().display().to_string()),
                    None => "from-a-secret".to_string(),
                };
                env.push((e["name"].as_str().unwrap().to_string(), value));
            }
            let port = stella_e2e::free_port();
            env.push(("STELLA_PORT".into(), port.to_string()));
            let binary =
                container["image"].as_str().unwrap().rsplit('/').next().unwrap().split(':').next().unwrap().to_string();
            let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let mut proc = stella_e2e::Proc::spawn(&stella_e2e::bin_path(&binary), &[], &env);
            let live = stella_e2e::wait_status(
                &format!("http://127.0.0.1:{port}/health/liveness"),
                200,
                std::time::Duration::from_secs(10),
            );
            assert!(
                live.is_some(),
                "{name} ({files:?}) did not come up with the chart's configuration: exit {:?}\n{}",
                proc.wait_for(std::time::Duration::from_millis(100)),
                proc.stdout() + &proc.stderr()
            );
            // A secret setting given through `<component>.secrets` is read from its file.
            let (_, config) = stella_e2e::get(&format!("http://127.0.0.1:{port}/config")).unwrap();
            let config: Value = serde_json::from_str(&config).unwrap();
            for (setting, _) in settings {
                if env.iter().any(|(k, _)| *k == format!("{setting}_FILE")) {
                    let seen = &config["settings"][setting];
                    assert_eq!(seen["source"], "secretfile", "{name}: {setting}: {seen}");
                    assert_eq!(seen["value"], "<redacted>", "{name}: {setting}: {seen}");
                    read_from_files.push(setting);
                }
            }
        }
    }
    read_from_files.sort_unstable();
    assert_eq!(
        read_from_files,
        ["STELLA_AI_API_KEY", "STELLA_NOTIFY_SINKS"],
        "secret settings from `<component>.secrets`"
    );
}

/// The chart's backup CronJob, run as rendered: its container's arguments and environment (the
/// mounted URL file replaced by one of a real PostgreSQL) run the stella-postgres binary the
/// image ships. The dump is restored into a new database with `pg_restore`, the restore
/// procedure of helm-prod.md, and the rows come back; `keep` is honoured.
#[test]
fn the_backup_cronjob_dumps_a_database_that_restores() {
    for files in [vec!["ci/everything-values.yaml".to_string()], vec!["ci/bundled-values.yaml".to_string()]] {
        let dir = tempfile::tempdir().unwrap();
        let docs = render(&files, dir.path());
        let jobs = kind(&docs, "CronJob");
        let job = jobs
            .iter()
            .find(|j| j["metadata"]["name"].as_str().unwrap().ends_with("-backup"))
            .unwrap_or_else(|| panic!("{files:?} enables backup.enabled: no backup CronJob rendered"));
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert!(container["image"].as_str().unwrap().contains("/stella-postgres:"), "{container}");
        let claim =
            pod["volumes"].as_array().unwrap().iter().find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str());
        assert!(
            claim.is_some_and(|c| named(&docs, "PersistentVolumeClaim", c).is_some()),
            "the claim it writes to: {pod}"
        );
        let secret = &pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "secrets").unwrap()["secret"];
        let key = secret["items"][0]["key"].as_str().unwrap();
        if files[0].contains("bundled") {
            assert_eq!(key, "migrator-database-url", "the owner's URL: pg_dump reads every table");
        }

        let pg = stella_e2e::pg::Postgres::start();
        pg.query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the backup')");
        let work = tempfile::tempdir().unwrap();
        let secrets = work.path().join("secrets");
        let dumps = work.path().join("backup");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::create_dir_all(&dumps).unwrap();
        std::fs::write(secrets.join("database-url"), pg.url()).unwrap();
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let v = e["value"].as_str().unwrap().replace("/run/secrets/stella", secrets.to_str().unwrap());
                (e["name"].as_str().unwrap().to_string(), v)
            })
            .collect();
        let keep: usize = env.iter().find(|(k, _)| k == "STELLA_BACKUP_KEEP").unwrap().1.parse().unwrap();
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("/backup", dumps.to_str().unwrap()))
            .collect();
        let backup = || {
            let out = output(Command::new(stella_e2e::bin_path("stella-postgres")).args(&args).envs(env.clone()));
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{files:?}: the backup job failed:\n{text}");
            assert!(!text.contains(&pg.url()), "the job printed the database URL:\n{text}");
            text
        };
        // Older dumps than `keep` allows, as earlier runs would have left them.
        for n in 0..keep {
            std::fs::write(dumps.join(format!("stella-2000010{}T000000Z.pgdump", n % 9 + 1)), "old").unwrap();
        }
        let printed = backup();
        let mut listed: Vec<String> =
            std::fs::read_dir(&dumps).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        listed.sort();
        assert_eq!(listed.len(), keep, "{printed}\n{listed:?}");
        let newest = dumps.join(listed.last().unwrap());
        assert!(!listed.last().unwrap().starts_with("stella-2000"), "{listed:?}");

        // Restore, as helm-prod.md says: pg_restore into an empty database.
        pg.query("CREATE DATABASE restored");
        let url = format!("{}/restored", pg.url().rsplit_once('/').unwrap().0);
        let restored =
            output(Command::new("pg_restore").args(["--no-owner", "--exit-on-error", "-d", &url]).arg(&newest));
        assert!(restored.status.success(), "pg_restore: {}", String::from_utf8_lossy(&restored.stderr));
        let rows = output(Command::new("psql").args([&url, "-Atc", "SELECT v FROM kept"]));
        assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "before the backup", "{files:?}");

        // A database that cannot be reached: the job fails, names it, and keeps every old dump.
        pg.stop();
        let out = output(Command::new(stella_e2e::bin_path("stella-postgres")).args(&args).envs(env.clone()));
        assert!(!out.status.success(), "a backup of a stopped database succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no dump was kept"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after: usize = std::fs::read_dir(&dumps).unwrap().count();
        assert_eq!(after, keep, "a failed backup removed or left files");
    }
}
