//! What fits the chart to a real cluster, checked on every scenario's rendered objects for every
//! component it enables: the pod security identity (65532, or none where the platform assigns
//! one), the site's CA bundle, extra env and volumes, priority classes, the default
//! anti-affinity and zone spread, the `helm test` pods, the alerts and the dashboard. Then run:
//! every server image under an assigned uid, and every `helm test` pod against it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stella_e2e::{output, run};

use super::{kind, named, pod_specs, render};

/// The uid and gid Docker runs the images as where the chart sets none: one of the range
/// OpenShift assigns a namespace, in group 0, as its restricted-v2 SCC does.
const ASSIGNED: &str = "1000770000:0";

pub fn check(name: &str, values: &Value, docs: &[(String, Value)], comps: &BTreeMap<String, (String, u64)>) {
    let g = &values["global"];

    // The identity: 65532 everywhere, or (assignedUid) no uid, gid or fsGroup anywhere, in every
    // pod and container the chart renders; the rest of the hardening holds in both.
    let assigned = g["podSecurity"]["assignedUid"] == true;
    for (owner, spec) in pod_specs(docs) {
        let mut contexts = vec![("pod", &spec["securityContext"])];
        for c in spec["containers"].as_array().unwrap() {
            contexts.push(("container", &c["securityContext"]));
        }
        for (level, sc) in contexts {
            let keys: &[&str] =
                if level == "pod" { &["runAsUser", "runAsGroup", "fsGroup"] } else { &["runAsUser", "runAsGroup"] };
            for key in keys {
                if assigned {
                    assert!(sc.get(*key).is_none(), "{name}: {owner} sets {key} though the platform assigns it: {sc}");
                } else {
                    assert_eq!(sc[*key], 65532, "{name}: {owner}: {level} {key}");
                }
            }
            assert_eq!(sc["runAsNonRoot"], true, "{name}: {owner}: {level}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}: {owner}: {level}");
        }
    }

    let ca = &g["caBundle"];
    let ca_source = [("configMap", "name"), ("secret", "secretName")]
        .into_iter()
        .find(|(k, _)| ca[*k].as_str().is_some_and(|s| !s.is_empty()));
    let global_priority = g["priorityClassName"].as_str().unwrap_or_default();
    let migrator = kind(docs, "Job")
        .into_iter()
        .find(|j| j["metadata"]["name"].as_str().unwrap().ends_with("-migrator"))
        .unwrap_or_else(|| panic!("{name}: no migrator Job"));
    let selectors: Vec<&Value> = kind(docs, "Service").into_iter().map(|s| &s["spec"]["selector"]).collect();
    let mut enabled = BTreeSet::new();

    // Every StellaOps pod (each component and the migrator): the CA bundle and the extras.
    let mut stella_pods: Vec<(String, &Value, &Value)> =
        vec![("migrator".into(), &migrator["spec"]["template"]["spec"], &values["migrator"])];
    for (key, (image, port)) in comps {
        let c = &values[key.as_str()];
        if c["enabled"] != true {
            continue;
        }
        let object = format!("stella-{}", image.trim_start_matches("stella-"));
        enabled.insert(object.clone());
        let d = named(docs, "Deployment", &object).unwrap_or_else(|| panic!("{name}: no Deployment for {key}"));
        let spec = &d["spec"]["template"]["spec"];
        stella_pods.push((key.clone(), spec, c));
        let selector = &d["spec"]["selector"]["matchLabels"];

        // Priority: the component's own, else the global one, else none.
        let own = c["priorityClassName"].as_str().unwrap_or_default();
        let want = if own.is_empty() { global_priority } else { own };
        assert_eq!(spec["priorityClassName"].as_str().unwrap_or_default(), want, "{name}: {key}: priorityClassName");

        // Anti-affinity: the component's own podAntiAffinity, else the soft default on the
        // node, by the component's labels; its other affinity keys as given.
        let affinity = &spec["affinity"];
        let own_affinity = c["affinity"].as_object().unwrap();
        for (k, v) in own_affinity {
            assert_eq!(&affinity[k.as_str()], v, "{name}: {key}: affinity.{k} as given");
        }
        if !own_affinity.contains_key("podAntiAffinity") {
            if g["podAntiAffinity"] == "soft" {
                let terms = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}: {key} has no default anti-affinity: {affinity}"));
                assert_eq!(terms.len(), 1, "{name}: {key}");
                let term = &terms[0]["podAffinityTerm"];
                assert_eq!(term["topologyKey"], "kubernetes.io/hostname", "{name}: {key}");
                assert_eq!(&term["labelSelector"]["matchLabels"], selector, "{name}: {key}: by its own pods' labels");
            } else {
                assert!(affinity.get("podAntiAffinity").is_none(), "{name}: {key}: {affinity}");
            }
        }

        // Topology spread: the component's own list, else the global one; each with its selector.
        let own_spread = c["topologySpreadConstraints"].as_array().unwrap();
        let want = if own_spread.is_empty() { g["topologySpreadConstraints"].as_array().unwrap() } else { own_spread };
        let got = spec["topologySpreadConstraints"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{name}: {key}: topologySpreadConstraints {got:?}");
        for (got, want) in got.iter().zip(want) {
            let mut want = want.clone();
            want["labelSelector"] = json!({"matchLabels": selector});
            assert_eq!(got, &want, "{name}: {key}");
        }

        // The `helm test` pod: the component's image asks its Service's readiness.
        let test = named(docs, "Pod", &format!("{object}-test"));
        if values["helmTests"]["enabled"] != true {
            assert!(test.is_none(), "{name}: {key}: helmTests.enabled is off");
            continue;
        }
        let test = test.unwrap_or_else(|| panic!("{name}: no `helm test` pod for {key}"));
        assert_eq!(test["metadata"]["annotations"]["helm.sh/hook"], "test", "{name}: {key}");
        assert_eq!(test["spec"]["restartPolicy"], "Never", "{name}: {key}");
        assert_eq!(
            test["spec"]["enableServiceLinks"], true,
            "{name}: {key}: the Service's address comes from its links"
        );
        let probe = &test["spec"]["containers"][0];
        assert_eq!(probe["image"], d["spec"]["template"]["spec"]["containers"][0]["image"], "{name}: {key}");
        assert_eq!(probe["args"], json!(["healthcheck"]), "{name}: {key}");
        let env = env_map(probe);
        let service = named(docs, "Service", &object).unwrap();
        let link = format!("$({}_SERVICE_HOST)", object.to_uppercase().replace('-', "_"));
        assert_eq!(env.get("STELLA_LISTEN_ADDR").map(String::as_str), Some(link.as_str()), "{name}: {key}");
        assert_eq!(env.get("STELLA_PORT"), Some(&port.to_string()), "{name}: {key}");
        assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(*port), "{name}: {key}");
        let labels = test["metadata"]["labels"].as_object().unwrap();
        for selector in &selectors {
            let matches = selector.as_object().unwrap().iter().all(|(k, v)| labels.get(k) == Some(v));
            assert!(!matches, "{name}: a Service would send traffic to the test pod of {key}");
        }
    }
    let tests = kind(docs, "Pod").len();
    assert_eq!(tests, if values["helmTests"]["enabled"] == true { enabled.len() } else { 0 }, "{name}: test pods");

    for (key, spec, own) in stella_pods {
        let container = &spec["containers"][0];
        let env = container["env"].as_array().unwrap();
        let mounts = container["volumeMounts"].as_array().unwrap();
        let volumes = spec["volumes"].as_array().unwrap();
        let site_ca = volumes.iter().find(|v| v["name"] == "site-ca");
        let cert_dir = env.iter().find(|e| e["name"] == "SSL_CERT_DIR");
        match ca_source {
            Some((source, field)) => {
                let v = site_ca.unwrap_or_else(|| panic!("{name}: {key} does not mount the CA bundle"));
                assert_eq!(v[source][field], ca[source], "{name}: {key}");
                assert_eq!(v[source]["items"], json!([{"key": ca["key"], "path": "site-ca.crt"}]), "{name}: {key}");
                let mount = mounts
                    .iter()
                    .find(|m| m["name"] == "site-ca")
                    .unwrap_or_else(|| panic!("{name}: {key}'s container does not mount the CA bundle"));
                assert_eq!(mount["readOnly"], true, "{name}: {key}");
                let dir = cert_dir.unwrap_or_else(|| panic!("{name}: {key} has no SSL_CERT_DIR"));
                assert_eq!(dir["value"], mount["mountPath"], "{name}: {key}: SSL_CERT_DIR names the bundle's mount");
                assert!(env.iter().all(|e| e["name"] != "SSL_CERT_FILE"), "{name}: {key}: the Mozilla roots stay");
            }
            None => assert!(site_ca.is_none() && cert_dir.is_none(), "{name}: {key}: no CA bundle was given"),
        }
        // The extras: global ones first, then the pod's own, each as given.
        for (list, have) in [("extraEnv", env), ("extraVolumeMounts", mounts), ("extraVolumes", volumes)] {
            let wanted: Vec<&Value> = g[list].as_array().unwrap().iter().chain(own[list].as_array().unwrap()).collect();
            let at: Vec<usize> = wanted
                .iter()
                .map(|w| have.iter().position(|h| h == *w).unwrap_or_else(|| panic!("{name}: {key}: {list} lacks {w}")))
                .collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "{name}: {key}: {list} in order, global first");
        }
    }
    // The migrator, the bundled StatefulSets and the backups take the global priority.
    for (owner, spec) in pod_specs(docs) {
        if owner.starts_with("StatefulSet/") || owner.starts_with("Job/") || owner.starts_with("CronJob/") {
            assert_eq!(spec["priorityClassName"].as_str().unwrap_or_default(), global_priority, "{name}: {owner}");
        }
    }

    // The alerts: one rule group over the enabled components' jobs.
    let rules = kind(docs, "PrometheusRule");
    if values["metrics"]["prometheusRule"]["enabled"] == true {
        assert_eq!(rules.len(), 1, "{name}");
        let alerts: BTreeSet<&str> = super::promql::rules(rules[0]).iter().map(|(a, _)| *a).collect();
        let mut want = BTreeSet::from(["StellaReadinessFailing", "StellaErrorRate"]);
        for (component, alert) in [
            ("stella-export", "StellaQueueBacklog"),
            ("stella-conseiller", "StellaFeedsNotPolled"),
            ("stella-ledger", "StellaLedgerVerifyErrors"),
        ] {
            if enabled.contains(component) {
                want.insert(alert);
            }
        }
        assert_eq!(alerts, want, "{name}");
        for (alert, expr) in super::promql::rules(rules[0]) {
            for job in super::promql::label_values(expr, "job") {
                assert!(enabled.contains(job.as_str()), "{name}: {alert} watches {job}, which is not deployed");
            }
        }
        let readiness =
            super::promql::rules(rules[0]).into_iter().find(|(a, _)| *a == "StellaReadinessFailing").unwrap().1;
        let watched = super::promql::label_values(readiness, "job");
        assert_eq!(
            watched.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            enabled.iter().map(String::as_str).collect(),
            "{name}: every component's readiness is watched"
        );
    } else {
        assert!(rules.is_empty(), "{name}");
    }

    // The dashboard: a ConfigMap the Grafana sidecar finds, holding one valid dashboard.
    let dashboards: Vec<&Value> = kind(docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["name"].as_str().unwrap().ends_with("-dashboard"))
        .collect();
    if values["metrics"]["grafanaDashboard"]["enabled"] == true {
        assert_eq!(dashboards.len(), 1, "{name}");
        for (k, v) in values["metrics"]["grafanaDashboard"]["labels"].as_object().unwrap() {
            assert_eq!(&dashboards[0]["metadata"]["labels"][k.as_str()], v, "{name}: label {k}");
        }
        assert_eq!(dashboards[0]["metadata"]["labels"]["grafana_dashboard"], "1", "{name}");
        let text = dashboards[0]["data"]["stellaops.json"].as_str().unwrap();
        let dashboard: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: the dashboard: {e}"));
        assert!(!super::promql::dashboard_queries(&dashboard).is_empty(), "{name}");
    } else {
        assert!(dashboards.is_empty(), "{name}");
    }
}

fn env_map(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The Docker network and containers a test made, removed when it ends, a panic included.
struct Docker {
    network: String,
    containers: Vec<String>,
}

impl Drop for Docker {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

/// `docker run` flags for a rendered container's security context: the uid it names, else the
/// one a platform would assign; a read-only root, no capabilities, no privilege escalation.
fn hardening(pod: &Value, container: &Value) -> Vec<String> {
    let sc = &container["securityContext"];
    let uid = sc["runAsUser"].as_u64().or(pod["securityContext"]["runAsUser"].as_u64());
    let mut args = vec!["--user".to_string(), uid.map_or(ASSIGNED.to_string(), |u| format!("{u}:{u}"))];
    if sc["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if sc["capabilities"]["drop"] == json!(["ALL"]) {
        args.extend(["--cap-drop".into(), "ALL".into()]);
    }
    if sc["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges:true".into()]);
    }
    args
}

/// The image as `docker load` tagged it: the rendered reference without its index digest.
fn loaded_reference(container: &Value) -> String {
    container["image"].as_str().unwrap().split('@').next().unwrap().to_string()
}

/// OpenShift mode, run. Every server component's Deployment, rendered with values-prod.yaml and
/// values-openshift.yaml (and the assistant on, so none is missing), is run in Docker with its
/// image and its container's security context, under the uid OpenShift would assign
/// (1000770000, group 0: no such user exists in the image), read-only with no capabilities; each
/// must become ready (its image's HEALTHCHECK, which asks /health/readiness) as that uid. Then
/// each component's `helm test` pod runs as rendered, its `$(…_SERVICE_HOST)` expanded as the
/// kubelet would, to the address of that component's container: each passes, and the API's
/// fails once the API is stopped.
#[test]
fn under_an_assigned_uid_every_server_image_becomes_ready_and_passes_its_helm_test() {
    let started = Instant::now();
    let comps = super::components();
    let dir = tempfile::tempdir().unwrap();
    let ai = dir.path().join("ai.yaml");
    std::fs::write(&ai, "ai:\n  enabled: true\n").unwrap();
    let files = vec!["values-prod.yaml".to_string(), "values-openshift.yaml".to_string(), ai.display().to_string()];
    let docs = render(&files, &dir.path().join("out"));
    let deployments = kind(&docs, "Deployment");
    let images: BTreeSet<String> = deployments
        .iter()
        .map(|d| {
            loaded_reference(&d["spec"]["template"]["spec"]["containers"][0])
                .rsplit('/')
                .next()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let servers: BTreeSet<String> = comps.values().map(|(image, _)| image.clone()).collect();
    assert_eq!(images, servers, "every server component is run");

    let layout = xtask::images::default_out();
    let built = xtask::assemble::Built::read(&layout).expect("the images are built (target/oci)");
    let loaded = xtask::load::load(&layout, &built).expect("docker load");
    let mut docker = Docker { network: format!("stella-helm-{}", std::process::id()), containers: Vec::new() };
    run(Command::new("docker").args(["network", "create", &docker.network]));

    // Each component, by its Service's name (what a test pod's service link names).
    let mut started_by_service: BTreeMap<String, String> = BTreeMap::new();
    for d in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let reference = loaded_reference(container);
        assert!(loaded.contains(&reference), "{reference} was not loaded");
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--network".into(), docker.network.clone()];
        args.extend(hardening(pod, container));
        args.extend(["--health-interval", "1s", "--health-start-period", "1s"].map(String::from));
        args.push(reference);
        let id = run(Command::new("docker").args(&args)).trim().to_string();
        docker.containers.push(id.clone());
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let service = kind(&docs, "Service")
            .into_iter()
            .find(|s| s["spec"]["selector"].as_object().unwrap().iter().all(|(k, v)| &labels[k.as_str()] == v))
            .unwrap_or_else(|| panic!("no Service selects {}", d["metadata"]["name"]));
        started_by_service.insert(service["metadata"]["name"].as_str().unwrap().to_string(), id);
    }

    // Ready, as the assigned uid in group 0: waited on the image's own readiness check.
    let mut failures = Vec::new();
    for (service, id) in &started_by_service {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let state =
                run(Command::new("docker").args(["inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", id]));
            let state = state.trim().to_string();
            if state == "running healthy" || !state.starts_with("running") || Instant::now() > deadline {
                break state;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let pid = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", id])).trim().to_string();
        let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |f: &str| {
            proc_status
                .lines()
                .find(|l| l.starts_with(f))
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string()
        };
        if status != "running healthy" || field("Uid:") != "1000770000" || field("Gid:") != "0" {
            let logs = output(Command::new("docker").args(["logs", "--tail", "5", id]));
            failures.push(format!(
                "{service}: {status}, uid {} gid {}; last lines of its log:\n{}{}",
                field("Uid:"),
                field("Gid:"),
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "under an assigned uid:\n{}", failures.join("\n"));

    // The `helm test` pods, as rendered, against the running components.
    let links: BTreeMap<String, String> = started_by_service
        .iter()
        .map(|(service, id)| {
            let ip = run(Command::new("docker").args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                id,
            ]));
            (format!("{}_SERVICE_HOST", service.to_uppercase().replace('-', "_")), ip.trim().to_string())
        })
        .collect();
    let test_pod = |pod: &Value| -> std::process::Output {
        let container = &pod["spec"]["containers"][0];
        let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--network".into(), docker.network.clone()];
        args.extend(hardening(&pod["spec"], container));
        for (k, v) in env_map(container) {
            args.extend(["--env".into(), format!("{k}={}", expand(&v, &links))]);
        }
        args.push(loaded_reference(container));
        args.extend(container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
        output(Command::new("docker").args(&args))
    };
    let tests = kind(&docs, "Pod");
    assert_eq!(tests.len(), deployments.len(), "a `helm test` pod per component");
    for pod in &tests {
        let out = test_pod(pod);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() || !text.contains(" 200 ") {
            failures.push(format!("{}: {:?}: {text}", pod["metadata"]["name"], out.status.code()));
        }
    }
    assert!(failures.is_empty(), "`helm test` pods:\n{}", failures.join("\n"));

    // With its component stopped, a test fails.
    run(Command::new("docker").args(["stop", &started_by_service["stella-api"]]));
    let api_test = tests.iter().find(|p| p["metadata"]["name"] == "stella-api-test").unwrap();
    let out = test_pod(api_test);
    assert!(
        !out.status.success(),
        "the API's test passed with the API stopped: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(docker);
    eprintln!("assigned uid and helm tests: {:.1?}", started.elapsed());
}

/// Kubernetes' `$(VAR)` expansion of an env value, from the service links; an unknown name
/// fails the test (the kubelet would leave it as it is, and the check would ask no address).
fn expand(value: &str, links: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(')').expect("a closed $(") + start;
        let name = &rest[start + 2..end];
        out.push_str(links.get(name).unwrap_or_else(|| panic!("{name} is not a service link: {links:?}")));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// OpenShift mode, the backup CronJob run as rendered: its container (the stella-postgres image,
/// `backup /backup`, pg_dump inside) under the uid OpenShift would assign, read-only, dumps a
/// real PostgreSQL onto a volume writable by group 0 (as a claim the platform's fsGroup owns).
#[test]
fn under_an_assigned_uid_the_backup_cronjob_dumps_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("backup.yaml");
    std::fs::write(&extra, "backup:\n  enabled: true\n").unwrap();
    let files = vec!["values-prod.yaml".to_string(), "values-openshift.yaml".to_string(), extra.display().to_string()];
    let docs = render(&files, &dir.path().join("out"));
    let job = kind(&docs, "CronJob").into_iter().find(|j| j["metadata"]["name"].as_str().unwrap().ends_with("-backup"));
    let pod = &job.expect("backup.enabled renders the CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    let layout = xtask::images::default_out();
    let built = xtask::assemble::Built::read(&layout).expect("the images are built (target/oci)");
    let loaded = xtask::load::load(&layout, &built).expect("docker load");
    let reference = loaded_reference(container);
    assert!(loaded.contains(&reference), "{reference} was not loaded");

    let pg = stella_e2e::pg::Postgres::start();
    pg.query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('dumped under an assigned uid')");
    let work = tempfile::tempdir().unwrap();
    let (secrets, dumps) = (work.path().join("secrets"), work.path().join("backup"));
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::create_dir_all(&dumps).unwrap();
    std::fs::write(secrets.join("database-url"), pg.url()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(secrets.join("database-url"), std::fs::Permissions::from_mode(0o440)).unwrap();
    std::fs::set_permissions(&dumps, std::fs::Permissions::from_mode(0o770)).unwrap();
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--network".into(), "host".into()];
    args.extend(hardening(pod, container));
    args.extend(["-v".into(), format!("{}:/run/secrets/stella:ro", secrets.display())]);
    args.extend(["-v".into(), format!("{}:/backup", dumps.display())]);
    for (k, v) in env_map(container) {
        args.extend(["--env".into(), format!("{k}={v}")]);
    }
    args.push(reference);
    args.extend(container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
    let out = output(Command::new("docker").args(&args));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the backup under an assigned uid failed:\n{text}");
    let dumped: Vec<_> = std::fs::read_dir(&dumps).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dumped.len(), 1, "{dumped:?}\n{text}");
    let listed = output(Command::new("pg_restore").arg("--list").arg(&dumped[0]));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE public kept"), "{listed:?}");
}
