//! The workers on a real PostgreSQL, through the real service binaries: the orchestrator's job
//! leases (a runner killed mid-run, concurrency limits across replicas), the export center
//! (every format, into the object store, checked by pyspdxtools and by our own importers), the
//! notifications (a webhook receives the critical finding and the failed job; a sink that is
//! down is retried, then dead-lettered) and the AI assistant (off by default; with a model
//! endpoint, only the linkset's facts and a scrubbed question reach it).

use std::time::Duration;

use serde_json::Value;
use stella_e2e::http::call;
use stella_e2e::stack::{Listener, Stack, admin_only, eventually, quickstart};

fn pack(name: &str, seconds: u64, url: &str) -> String {
    format!(
        r#"{{"apiVersion": "stella-ops.org/v1", "kind": "TaskPack", "name": "{name}", "version": "1.0.0",
            "steps": [{{"id": "pause", "type": "wait", "seconds": {seconds}}},
                      {{"id": "fetch", "type": "http", "url": "{url}"}}]}}"#
    )
}

fn start_run(stack: &Stack, token: &str, pack: &str) -> Value {
    let r = call("POST", &stack.url("task-runner", &format!("/api/v1/packs/{pack}/runs")), Some(token), None, &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()
}

fn register(stack: &Stack, token: &str, body: &str) {
    let r = call("POST", &stack.url("task-runner", "/api/v1/packs"), Some(token), Some(body.as_bytes()), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
}

fn runner_env(lease: &str, concurrency: u32) -> Vec<(&'static str, String)> {
    vec![
        ("STELLA_JOBS_LEASE", lease.to_string()),
        ("STELLA_JOBS_POLL", "100ms".to_string()),
        ("STELLA_JOBS_CONCURRENCY", concurrency.to_string()),
    ]
}

/// A task runner killed (SIGKILL) in the middle of a run: its lease expires, a second runner
/// claims the job, runs the pack from the start, and the run completes exactly once (the HTTP
/// step, after the pause, reaches the listener once). The orchestrator's history shows both
/// attempts.
#[test]
fn a_job_whose_worker_is_killed_is_retried_and_completes_once() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    stack.start("orchestrator", &[]);
    stack.start("task-runner", &runner_env("2s", 1));
    let token = stack.admin_token();
    let listener = Listener::start();
    register(&stack, &token, &pack("slow", 3, &format!("http://127.0.0.1:{}/ping", listener.port)));
    let run = start_run(&stack, &token, "slow");
    let (id, job) = (run["id"].as_i64().unwrap(), run["job"].as_i64().unwrap());
    eventually("the first runner starts the run", Duration::from_secs(10), || {
        (stack.get("task-runner", &format!("/api/v1/runs/{id}"), &token).json()["status"] == "running").then_some(())
    });
    stack.services.get("task-runner").unwrap().0.signal(libc::SIGKILL);
    stack.services.remove("task-runner");
    stack.start("task-runner", &runner_env("2s", 1));
    let run = eventually("the second runner finishes the run", Duration::from_secs(30), || {
        let run = stack.get("task-runner", &format!("/api/v1/runs/{id}"), &token).json();
        (run["status"] == "succeeded" || run["status"] == "failed").then_some(run)
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    assert_eq!(run["steps"].as_array().unwrap().len(), 2, "the retried run starts over, once: {run}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listener.connections(), 1, "the HTTP step ran more than once");

    let history = stack.get("orchestrator", &format!("/api/v1/jobs/{job}"), &token);
    assert_eq!(history.status, 200, "{}", history.text());
    let history = history.json();
    assert_eq!(history["status"], "succeeded", "{history}");
    let outcomes: Vec<&str> =
        history["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["lease expired", "succeeded"], "{history}");
    assert_ne!(history["attempts"][0]["worker"], history["attempts"][1]["worker"], "{history}");
    let listed = stack.get("orchestrator", "/api/v1/jobs?kind=task-run&status=succeeded", &token).json();
    assert!(listed["jobs"].as_array().unwrap().iter().any(|j| j["id"] == job), "{listed}");
    // Another tenant's token sees nothing of it; no token is a 401.
    assert_eq!(call("GET", &stack.url("orchestrator", "/api/v1/jobs"), None, None, &[]).status, 401);
}

/// Two task runner replicas with a limit of 2: six runs of a pack that pauses for a second never
/// have more than two jobs running at once, and all six finish.
#[test]
fn concurrency_limits_hold_across_replicas() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    stack.start("task-runner", &runner_env("10s", 2));
    let token = stack.admin_token();
    let second = stack.services["task-runner"].1;
    let mut replica = stella_e2e::Proc::spawn(
        &stella_e2e::bin_path("stella-task-runner"),
        &[],
        &[
            ("STELLA_PORT", stella_e2e::free_port().to_string()),
            ("STELLA_LISTEN_ADDR", "127.0.0.1".to_string()),
            ("STELLA_DATABASE_URL", stack.pg.url()),
            ("STELLA_JOBS_LEASE", "10s".to_string()),
            ("STELLA_JOBS_POLL", "100ms".to_string()),
            ("STELLA_JOBS_CONCURRENCY", "2".to_string()),
        ],
    );
    let listener = Listener::start();
    register(&stack, &token, &pack("pause", 1, &format!("http://127.0.0.1:{}/", listener.port)));
    let runs: Vec<i64> = (0..6).map(|_| start_run(&stack, &token, "pause")["id"].as_i64().unwrap()).collect();
    let mut most = 0;
    eventually("all six runs finish", Duration::from_secs(40), || {
        let running: usize = stack
            .pg
            .query("SELECT count(*) FROM stella.jobs WHERE kind = 'task-run' AND status = 'running' AND lease_expires_at > now()")
            .trim()
            .parse()
            .unwrap();
        most = most.max(running);
        let done: usize =
            stack.pg.query("SELECT count(*) FROM stella.task_runs WHERE status = 'succeeded'").trim().parse().unwrap();
        (done == runs.len()).then_some(())
    });
    assert!(most <= 2, "{most} jobs ran at once with a limit of 2");
    assert_eq!(most, 2, "the limit was never reached: the replicas did not share the work");
    let workers = stack.pg.query("SELECT count(DISTINCT worker) FROM stella.job_attempts");
    assert_eq!(workers.trim(), "2", "both replicas should have run jobs (port {second})");
    assert_eq!(listener.connections(), 6);
    replica.signal(libc::SIGTERM);
    assert!(replica.wait_for(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", replica.stdout());
}

fn export_env(store: &std::path::Path, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STELLA_OBJECT_STORE_URL", format!("file://{}", store.display())),
        ("STELLA_JOBS_POLL", "100ms".to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

/// An export of everything in every format: it lands in the object store (the bytes served are
/// the bytes stored), the CSV has one row per finding, the SPDX documents validate with
/// pyspdxtools, the CycloneDX BOMs import back as scans with the same findings, and the OpenVEX
/// document is accepted by Excitator's own parser. A format not enabled is a 422; more pending
/// exports than the limit a 429.
#[test]
fn export_round_trip() {
    let mut stack = Stack::new(Some(&quickstart()));
    let store = tempfile::tempdir().unwrap();
    stack.start("api", &[]);
    stack.start("excitator", &[]);
    stack.start(
        "export",
        &export_env(store.path(), &[("STELLA_EXPORT_FORMATS", "json,csv,spdx,cyclonedx,openvex".into())]),
    );
    let token = stack.admin_token();
    let exports = stack.url("export", "/api/v1/exports");
    let body = br#"{"formats": ["json", "csv", "spdx", "cyclonedx", "openvex"]}"#;
    let r = call("POST", &exports, Some(&token), Some(body), &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_i64().unwrap();
    let export = eventually("the export is written", Duration::from_secs(30), || {
        let e = stack.get("export", &format!("/api/v1/exports/{id}"), &token).json();
        (e["status"] == "succeeded" || e["status"] == "failed").then_some(e)
    });
    assert_eq!(export["status"], "succeeded", "{export}");
    let files = export["files"].as_array().unwrap();
    let scans: usize = stack.pg.query("SELECT count(*) FROM stella.scans").trim().parse().unwrap();
    assert_eq!(files.len(), 3 + 2 * scans, "{export}");
    let mut fetched = std::collections::BTreeMap::new();
    for f in files {
        let name = f["name"].as_str().unwrap();
        let r = stack.get("export", &format!("/api/v1/exports/{id}/files/{name}"), &token);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let stored =
            std::fs::read(store.path().join(f["key"].as_str().unwrap())).expect("the file is in the object store");
        assert_eq!(r.body, stored, "{name}: served bytes differ from the stored ones");
        assert_eq!(stella_core::sha256_hex(&stored), f["sha256"].as_str().unwrap(), "{name}");
        fetched.insert(name.to_string(), r.body);
    }

    let findings: usize = stack.pg.query("SELECT count(*) FROM stella.findings").trim().parse().unwrap();
    assert!(findings >= 4);
    let csv = String::from_utf8(fetched["findings.csv"].clone()).unwrap();
    assert_eq!(csv.lines().count(), findings + 1, "one row per finding and a header:\n{csv}");
    let json: Value = serde_json::from_slice(&fetched["findings.json"]).unwrap();
    assert_eq!(json["findings"].as_array().unwrap().len(), findings);

    for (name, bytes) in fetched.iter().filter(|(n, _)| n.ends_with(".spdx.json")) {
        let path = store.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("pyspdxtools").arg("-i").arg(&path).output().expect("pyspdxtools");
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each CycloneDX BOM imports back (into a second scan) with the findings of its scan.
    for (name, bytes) in fetched.iter().filter(|(n, _)| n.ends_with(".cdx.json")) {
        let scan: i64 = name.trim_start_matches("scan-").trim_end_matches(".cdx.json").parse().unwrap();
        let r = call("POST", &stack.url("api", "/api/v1/scans?name=reimported"), Some(&token), Some(bytes), &[]);
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        let again = r.json()["id"].as_i64().unwrap();
        let purls = |s: i64| {
            stack.pg.query(&format!("SELECT string_agg(purl || ' ' || linkset, ',' ORDER BY purl, linkset) FROM stella.findings WHERE scan_id = {s}"))
        };
        assert_eq!(purls(again), purls(scan), "{name}");
    }
    let vex = call(
        "POST",
        &stack.url("excitator", "/api/v1/vex/documents?name=export.openvex.json"),
        Some(&token),
        Some(&fetched["findings.openvex.json"]),
        &[],
    );
    assert!(vex.status == 201 || vex.status == 200, "Excitator refused the exported OpenVEX: {}", vex.text());

    // Formats not enabled, unknown fields, and the pending limit.
    let r = call("POST", &exports, Some(&token), Some(br#"{"formats": ["xlsx"]}"#), &[]);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("`xlsx` is not enabled"), "{}", r.text());
    stack.services.remove("export");
    stack.start(
        "export",
        &export_env(store.path(), &[("STELLA_EXPORT_MAX_PENDING", "1".into()), ("STELLA_JOBS_POLL", "5s".into())]),
    );
    let exports = stack.url("export", "/api/v1/exports");
    assert_eq!(call("POST", &exports, Some(&token), Some(br#"{"formats": ["csv"]}"#), &[]).status, 202);
    let r = call("POST", &exports, Some(&token), Some(br#"{"formats": ["csv"]}"#), &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("30"));
}

/// An object store this release cannot write to (s3://, or none) does not stop the service (the
/// chart's external mode gives every component its S3 store), but every export request is
/// answered 503 with what to set, and no word of the store's credentials.
#[test]
fn export_refuses_a_store_it_cannot_write() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    let token = stack.admin_token();
    for (url, expected) in [(Some("s3://AKIAEXAMPLE:s3cr3t@bucket/exports"), "not built in"), (None, "not set")] {
        let env: Vec<(&'static str, String)> =
            url.map(|u| ("STELLA_OBJECT_STORE_URL", u.to_string())).into_iter().collect();
        stack.start("export", &env);
        let r =
            call("POST", &stack.url("export", "/api/v1/exports"), Some(&token), Some(br#"{"formats": ["csv"]}"#), &[]);
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("STELLA_OBJECT_STORE_URL") && r.text().contains(expected), "{}", r.text());
        assert!(r.text().contains("file:///"), "{}", r.text());
        assert!(!r.text().contains("s3cr3t") && !stack.log("export").contains("s3cr3t"), "{}", stack.log("export"));
        stack.services.remove("export");
    }
}

/// A webhook receives the seed's critical finding and a job that failed for good; a sink that is
/// down is retried and then dead-lettered with its error, while the working sink is unaffected.
#[test]
fn notifications_reach_a_webhook_and_dead_letter_when_it_is_down() {
    let mut stack = Stack::new(Some(&quickstart()));
    let hook = Listener::start();
    let closed = stella_e2e::free_port();
    let sinks = format!(
        "hook=webhook:http://127.0.0.1:{}/notify?token=t0k3n,down=webhook:http://127.0.0.1:{closed}/,log=log",
        hook.port
    );
    stack.start("api", &[]);
    stack.start(
        "task-runner",
        &[
            ("STELLA_OFFLINE", "true".into()),
            ("STELLA_JOBS_POLL", "100ms".into()),
            ("STELLA_JOBS_ATTEMPTS", "1".into()),
        ],
    );
    stack.start(
        "notify",
        &[
            ("STELLA_NOTIFY_SINKS", sinks),
            ("STELLA_NOTIFY_WINDOW", "300ms".into()),
            ("STELLA_NOTIFY_ATTEMPTS", "3".into()),
        ],
    );
    let token = stack.admin_token();
    register(&stack, &token, &pack("blocked", 0, "http://192.0.2.1/"));
    start_run(&stack, &token, "blocked");

    let events = |hook: &Listener| -> Vec<Value> {
        hook.bodies()
            .iter()
            .flat_map(|b| serde_json::from_str::<Value>(b).unwrap()["notifications"].as_array().unwrap().clone())
            .collect()
    };
    let got =
        eventually("the webhook hears of the critical finding and the failed job", Duration::from_secs(20), || {
            let got = events(&hook);
            (got.iter().any(|n| n["event"] == "finding.critical") && got.iter().any(|n| n["event"] == "job.failed"))
                .then_some(got)
        });
    let critical: Vec<&Value> = got.iter().filter(|n| n["event"] == "finding.critical").collect();
    assert_eq!(critical.len(), 1, "the seed has one critical finding that affects: {got:#?}");
    assert!(critical[0]["text"].as_str().unwrap().contains("CVE-2021-44228"), "{:#}", critical[0]);
    let failed = got.iter().find(|n| n["event"] == "job.failed").unwrap();
    assert!(failed["text"].as_str().unwrap().contains("egress blocked: 192.0.2.1"), "{failed:#}");
    assert_eq!(failed["tenant"], "default");

    // The dead sink: three attempts (backoff 2 s, 4 s), then dead with the error, per notification.
    let dead = eventually("the down sink's deliveries are dead-lettered", Duration::from_secs(30), || {
        let d = stack.get("notify", "/api/v1/notifications?status=dead", &token).json();
        let rows = d["deliveries"].as_array().unwrap().clone();
        (rows.len() == 2).then_some(rows)
    });
    for d in &dead {
        assert_eq!(d["sink"], "down", "{d}");
        assert_eq!(d["attempts"], 3, "{d}");
        assert!(d["lastError"].as_str().unwrap().contains(&format!("127.0.0.1:{closed}")), "{d}");
    }
    let delivered = stack.get("notify", "/api/v1/notifications?status=delivered", &token).json();
    assert_eq!(delivered["deliveries"].as_array().unwrap().len(), 4, "hook and log got both: {delivered}");
    assert_eq!(events(&hook).len(), 2, "each notification reached the webhook once");
    let log = stack.log("notify");
    assert!(!log.contains("t0k3n"), "the webhook's token leaked into the log");
    assert_eq!(stack.get("notify", "/api/v1/notifications?status=lost", &token).status, 422);
}

/// Off by default: 503 naming the setting. With a model endpoint (a loopback server speaking
/// the OpenAI chat completions API), the answer comes back, and what the endpoint received holds
/// the linkset's facts from both sources, the token limit, and no secret or tenant data.
#[test]
fn the_ai_assistant_is_off_by_default_and_guarded_when_on() {
    let mut stack = Stack::new(Some(&quickstart()));
    stack.start("api", &[]);
    stack.start("ai", &[]);
    let token = stack.admin_token();
    let ask = |stack: &Stack, question: &str| {
        let body = serde_json::json!({"question": question}).to_string();
        call(
            "POST",
            &stack.url("ai", "/api/v1/ai/linksets/CVE-2020-26235/ask"),
            Some(&token),
            Some(body.as_bytes()),
            &[],
        )
    };
    let r = ask(&stack, "Which versions are fixed?");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("STELLA_AI_ENDPOINT"), "{}", r.text());
    assert_eq!(stack.get("ai", "/api/v1/ai/status", &token).json()["enabled"], false);

    let model = Listener::json(
        r#"{"id":"c1","object":"chat.completion","model":"tiny","choices":[{"index":0,"message":{"role":"assistant","content":"The sources disagree."},"finish_reason":"stop"}],"usage":{"prompt_tokens":90,"completion_tokens":4}}"#,
    );
    stack.services.remove("ai");
    let endpoint = format!("http://127.0.0.1:{}/v1", model.port);
    stack.start(
        "ai",
        &[
            ("STELLA_AI_ENDPOINT", endpoint),
            ("STELLA_AI_API_KEY", "sk-model-key".into()),
            ("STELLA_AI_MAX_TOKENS", "64".into()),
        ],
    );
    let secret = token.clone();
    let r = ask(&stack, &format!("Is it fixed? my token is {secret} and password=hunter2"));
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["answer"], "The sources disagree.");
    assert_eq!(answer["redacted"], 2, "{answer}");
    let sent = model.bodies();
    assert_eq!(sent.len(), 1);
    let request: Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(request["max_tokens"], 64);
    let prompt = request["messages"].to_string();
    assert!(prompt.contains("CVE-2020-26235") && prompt.contains("osv-a") && prompt.contains("osv-b"), "{prompt}");
    for leaked in [secret.as_str(), "hunter2", "demo-payments", "demo-web", "admin"] {
        assert!(!prompt.contains(leaked), "`{leaked}` reached the model: {prompt}");
    }
    assert!(!stack.log("ai").contains("sk-model-key"));
    let r = ask(&stack, &"x".repeat(2001));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(model.bodies().len(), 1, "a refused question reached the model");
}
