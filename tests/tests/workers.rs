//! The workers on a real PostgreSQL, through the real service binaries: the orchestrator's job
//! leases (a runner killed mid-run, concurrency limits across replicas, a failure the service
//! cannot record), the export center
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
        ("STELLA_JOBS_POLL", "1h".to_string()),
        ("STELLA_JOBS_CONCURRENCY", concurrency.to_string()),
        // The listeners of these tests are on loopback, which the egress policy refuses unless allowed.
        ("STELLA_TASK_EGRESS_ALLOW", "127.0.0.1".to_string()),
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

/// A job whose service cannot record its failure still ends failed, once. Here the database
/// refuses to mark the run failed (a trigger): the run's own update fails, the job is retried,
/// then fails for good, and the task runner's failure hook fails as well. Before, that rolled
/// the whole outcome back, and the job was claimed again at every lease for ever.
#[test]
fn a_job_whose_failure_cannot_be_recorded_still_ends_failed_once() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    stack.start("orchestrator", &[]);
    let mut env = runner_env("2s", 1);
    env.push(("STELLA_JOBS_ATTEMPTS", "2".to_string()));
    stack.start("task-runner", &env);
    let token = stack.admin_token();
    stack.pg.query(
        "CREATE FUNCTION stella.refuse_failed_runs() RETURNS trigger LANGUAGE plpgsql
           AS $$ BEGIN RAISE EXCEPTION 'the test refuses to mark a run failed'; END $$;
         CREATE TRIGGER refuse_failed_runs BEFORE UPDATE ON stella.task_runs FOR EACH ROW
           WHEN (NEW.status = 'failed') EXECUTE FUNCTION stella.refuse_failed_runs();",
    );
    // Nothing listens on the port: the HTTP step fails.
    let (closed, _held) = stella_e2e::closed_port();
    register(&stack, &token, &pack("refused", 0, &format!("http://127.0.0.1:{closed}/")));
    let job = start_run(&stack, &token, "refused")["job"].as_i64().unwrap();
    let path = format!("/api/v1/jobs/{job}");
    let history = eventually("the job fails for good", Duration::from_secs(30), || {
        let h = stack.get("orchestrator", &path, &token).json();
        (h["status"] == "failed").then_some(h)
    });
    assert!(history["error"].as_str().unwrap_or_default().contains("recording the failure failed"), "{history}");
    // Past two more leases, nobody claimed it again.
    std::thread::sleep(Duration::from_secs(5));
    let after = stack.get("orchestrator", &path, &token).json();
    assert_eq!(after["status"], "failed", "{after}");
    let outcomes: Vec<&str> =
        after["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap_or("none")).collect();
    assert_eq!(outcomes, ["retry", "failed"], "{after}");
}

/// The limit holds across replicas: with a limit of 2, a first runner takes two runs of a pack
/// that pauses for 3 s; a second runner started then holds back while those two leases are live
/// (its debug log says so, with the count it found), although four runs are queued; all six
/// finish, and no moment had more than two attempts running (computed from the attempts' start
/// and end times, which are taken when each claim really happened).
#[test]
fn concurrency_limits_hold_across_replicas() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    stack.start("task-runner", &runner_env("10s", 2));
    let token = stack.admin_token();
    let listener = Listener::start();
    register(&stack, &token, &pack("pause", 3, &format!("http://127.0.0.1:{}/", listener.port)));
    let runs: Vec<i64> = (0..6).map(|_| start_run(&stack, &token, "pause")["id"].as_i64().unwrap()).collect();
    let running = "SELECT count(*) FROM stella.jobs WHERE kind = 'task-run' AND status = 'running'";
    eventually("the first runner takes two runs", Duration::from_secs(10), || {
        (count(&stack, running) == 2).then_some(())
    });
    let mut replica = stella_e2e::Proc::spawn(
        &stella_e2e::bin_path("stella-task-runner"),
        &[],
        &[
            ("STELLA_PORT", stella_e2e::free_port().to_string()),
            ("STELLA_LISTEN_ADDR", "127.0.0.1".to_string()),
            ("STELLA_DATABASE_URL", stack.pg.url()),
            ("STELLA_JOBS_LEASE", "10s".to_string()),
            ("STELLA_JOBS_POLL", "1h".to_string()),
            ("STELLA_JOBS_CONCURRENCY", "2".to_string()),
            ("STELLA_TASK_EGRESS_ALLOW", "127.0.0.1".to_string()),
            ("STELLA_LOG_LEVEL", "debug".to_string()),
        ],
    );
    // Evidence that the replica tried and held back: its loops log the limit they found, with
    // the count of live leases (the first runner's two).
    let refusals = eventually("the second runner finds the limit reached", Duration::from_secs(20), || {
        let log = replica.stdout();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("not claiming: the concurrency limit is reached"))
            .map(String::from)
            .collect();
        (!lines.is_empty()).then_some(lines)
    });
    assert!(refusals.iter().all(|l| l.contains("\"running\":2") && l.contains("\"limit\":2")), "{refusals:#?}");
    eventually("all six runs finish", Duration::from_secs(40), || {
        let done = count(&stack, "SELECT count(*) FROM stella.task_runs WHERE status = 'succeeded'");
        (done == runs.len()).then_some(())
    });
    // The most attempts running at one instant: at each start, the attempts started before and
    // not yet ended.
    let overlap = count(
        &stack,
        "SELECT max((SELECT count(*) FROM stella.job_attempts b
                     WHERE b.started_at <= a.started_at AND (b.ended_at IS NULL OR b.ended_at > a.started_at)))
         FROM stella.job_attempts a",
    );
    assert_eq!(overlap, 2, "at most two runs at once, and the limit reached");
    assert_eq!(listener.connections(), 6);
    replica.signal(libc::SIGTERM);
    assert!(replica.wait_for(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", replica.stdout());
}

fn export_env(store: &std::path::Path, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STELLA_OBJECT_STORE_URL", format!("file://{}", store.display())),
        ("STELLA_JOBS_POLL", "1h".to_string()),
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

    // The seeded pack's export step: an export job of the run's tenant, awaited by the run.
    stack.start("task-runner", &[("STELLA_JOBS_POLL", "1h".into())]);
    let run = start_run(&stack, &token, "export-to-production");
    let id = run["id"].as_i64().unwrap();
    let run = eventually("the export pack's run finishes", Duration::from_secs(30), || {
        let run = stack.get("task-runner", &format!("/api/v1/runs/{id}"), &token).json();
        (run["status"] == "succeeded" || run["status"] == "failed").then_some(run)
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    let detail = run["steps"][0]["detail"].as_str().unwrap();
    assert!(detail.ends_with(&format!(": {} files", 3 + 2 * (2 * scans))), "the re-imported scans too: {detail}");

    // Formats not enabled, unknown fields, and the pending limit.
    let r = call("POST", &exports, Some(&token), Some(br#"{"formats": ["xlsx"]}"#), &[]);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("`xlsx` is not enabled"), "{}", r.text());
    stack.services.remove("export");
    stack.start("export", &export_env(store.path(), &[("STELLA_EXPORT_MAX_PENDING", "1".into())]));
    let exports = stack.url("export", "/api/v1/exports");
    // The worker claims under this advisory lock (`jobs::claim`): while the test holds it, the
    // first export stays queued however fast the worker polls, so the second meets the limit.
    let held = stack.pg.hold_advisory_lock("stella.jobs/export");
    assert_eq!(call("POST", &exports, Some(&token), Some(br#"{"formats": ["csv"]}"#), &[]).status, 202);
    let r = call("POST", &exports, Some(&token), Some(br#"{"formats": ["csv"]}"#), &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("30"));
    drop(held);
}

/// An object store the service cannot use (credentials in an s3:// URL, or none set) does not
/// stop the service (its contract and readiness stay up), but every export request is answered
/// 503 with what to set, and no word of the credentials.
#[test]
fn export_refuses_a_store_it_cannot_use() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    let token = stack.admin_token();
    for (url, expected) in
        [(Some("s3://AKIAEXAMPLE:s3cr3t@bucket/exports"), "no credentials in the URL"), (None, "not set")]
    {
        let env: Vec<(&'static str, String)> =
            url.map(|u| ("STELLA_OBJECT_STORE_URL", u.to_string())).into_iter().collect();
        stack.start("export", &env);
        let r =
            call("POST", &stack.url("export", "/api/v1/exports"), Some(&token), Some(br#"{"formats": ["csv"]}"#), &[]);
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("STELLA_OBJECT_STORE_URL") && r.text().contains(expected), "{}", r.text());
        assert!(!r.text().contains("s3cr3t") && !stack.log("export").contains("s3cr3t"), "{}", stack.log("export"));
        stack.services.remove("export");
    }
}

/// Exports into an S3 store: `moto_server` (from PyPI; the only S3 implementation that runs on
/// this machine) on loopback, a bucket with a prefix, credentials from the `AWS_*` variables as
/// the chart gives them. Each file read back from the bucket with boto3 (not our client) is the
/// file the API serves; the secret key is not in the log.
#[test]
fn exports_land_in_an_s3_store() {
    let mut stack = Stack::new(Some(&quickstart()));
    let port = stella_e2e::free_port();
    let moto = stella_e2e::Proc::spawn(
        std::path::Path::new("moto_server"),
        &["-H", "127.0.0.1", "-p", &port.to_string()],
        &[("PATH", std::env::var("PATH").unwrap_or_default()), ("HOME", std::env::var("HOME").unwrap_or_default())],
    );
    let s3 = format!("http://127.0.0.1:{port}");
    eventually("moto_server listens", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
    let bucket = call("PUT", &format!("{s3}/stella-exports"), None, None, &[]);
    assert_eq!(bucket.status, 200, "creating the bucket: {}", bucket.text());
    stack.start("api", &[]);
    stack.start(
        "export",
        &[
            ("STELLA_OBJECT_STORE_URL", "s3://stella-exports/prod".into()),
            ("STELLA_OBJECT_STORE_ENDPOINT", s3.clone()),
            ("STELLA_OBJECT_STORE_REGION", "eu-west-1".into()),
            ("AWS_ACCESS_KEY_ID", "AKIDSTELLATEST".into()),
            ("AWS_SECRET_ACCESS_KEY", "s3-secret-key-never-logged".into()),
            ("STELLA_JOBS_POLL", "1h".into()),
        ],
    );
    let token = stack.admin_token();
    let r = call(
        "POST",
        &stack.url("export", "/api/v1/exports"),
        Some(&token),
        Some(br#"{"formats": ["csv", "spdx"]}"#),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_i64().unwrap();
    let export = eventually("the export is written to S3", Duration::from_secs(30), || {
        let e = stack.get("export", &format!("/api/v1/exports/{id}"), &token).json();
        (e["status"] == "succeeded" || e["status"] == "failed").then_some(e)
    });
    assert_eq!(export["status"], "succeeded", "{export}");
    for f in export["files"].as_array().unwrap() {
        let (name, key) = (f["name"].as_str().unwrap(), f["key"].as_str().unwrap());
        let served = stack.get("export", &format!("/api/v1/exports/{id}/files/{name}"), &token);
        // Read back with boto3 (installed with moto): another S3 client than ours.
        let script = format!(
            "import boto3,sys; c=boto3.client('s3',endpoint_url='{s3}',region_name='eu-west-1',\
             aws_access_key_id='AKIDSTELLATEST',aws_secret_access_key='x'); \
             sys.stdout.buffer.write(c.get_object(Bucket='stella-exports',Key='prod/{key}')['Body'].read())"
        );
        let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{name} is not in the bucket under prod/{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, served.body, "{name}");
        assert_eq!(stella_core::sha256_hex(&out.stdout), f["sha256"].as_str().unwrap());
    }
    assert!(!stack.log("export").contains("s3-secret-key-never-logged"));
    moto.signal(libc::SIGTERM);
}

/// A webhook and an SMTP relay receive the seed's critical finding and a job that failed for
/// good; a sink that is down is retried and then dead-lettered with its error, while the working
/// sinks are unaffected.
#[test]
fn notifications_reach_a_webhook_and_dead_letter_when_it_is_down() {
    let mut stack = Stack::new(Some(&quickstart()));
    let hook = Listener::start();
    let (closed, _held) = stella_e2e::closed_port();
    // An SMTP relay: aiosmtpd (from PyPI) writing every mail it accepts into a maildir.
    let maildir = tempfile::tempdir().unwrap();
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir(maildir.path().join(sub)).unwrap();
    }
    let smtp_port = stella_e2e::free_port();
    let _relay = stella_e2e::Proc::spawn(
        std::path::Path::new("python3"),
        &[
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{smtp_port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
            &maildir.path().display().to_string(),
        ],
        &[("PATH", std::env::var("PATH").unwrap_or_default()), ("HOME", std::env::var("HOME").unwrap_or_default())],
    );
    eventually("the SMTP relay listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", smtp_port)).ok().map(|_| ())
    });
    let sinks = format!(
        "hook=webhook:http://127.0.0.1:{}/notify?token=t0k3n,down=webhook:http://127.0.0.1:{closed}/,log=log,\
         mail=smtp:smtp://127.0.0.1:{smtp_port}?from=stella@example.org&to=ops@example.org;security@example.org",
        hook.port
    );
    stack.start("api", &[]);
    stack.start(
        "task-runner",
        &[("STELLA_OFFLINE", "true".into()), ("STELLA_JOBS_POLL", "1h".into()), ("STELLA_JOBS_ATTEMPTS", "1".into())],
    );
    // A mounted template directory replaces the built-in text of one event; the other keeps its own.
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(templates.path().join("finding.critical.txt"), "CRITICAL {{linkset}} in {{scanName}} ({{purl}})\n")
        .unwrap();
    stack.start(
        "notify",
        &[
            ("STELLA_NOTIFY_SINKS", sinks),
            ("STELLA_NOTIFY_WINDOW", "300ms".into()),
            ("STELLA_NOTIFY_ATTEMPTS", "3".into()),
            ("STELLA_NOTIFY_TEMPLATES", templates.path().display().to_string()),
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
    assert_eq!(
        critical[0]["text"],
        "CRITICAL CVE-2021-44228 in demo-web (pkg:maven/org.apache.logging.log4j/log4j-core@2.12.1)",
        "{:#}",
        critical[0]
    );
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
    assert_eq!(delivered["deliveries"].as_array().unwrap().len(), 6, "hook, log and mail got both: {delivered}");
    let mails: Vec<String> = std::fs::read_dir(maildir.path().join("new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let all = mails.join("\n");
    assert!(all.contains("CVE-2021-44228") && all.contains("egress blocked"), "{all}");
    assert!(
        mails.iter().all(|m| m.contains("From: stella@example.org") && m.contains("security@example.org")),
        "{all}"
    );
    assert!(mails.iter().all(|m| m.contains("Subject: StellaOps: ")), "{all}");
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

fn count(stack: &Stack, sql: &str) -> usize {
    stack.pg.query(sql).trim().parse().unwrap()
}

/// The orchestrator's schedules. Conseiller registers its feed poll schedule; the orchestrator
/// enqueues a poll every interval, and a changed advisory file is picked up by a scheduled poll
/// (the platform admin sees those system jobs). A tenant's task pack scheduled every second runs
/// again and again, never with two of its jobs pending, and stops when the schedule is deleted;
/// a scheduled export is written like an asked-for one. Bad schedules are refused by name.
#[test]
fn schedules_drive_feed_polls_task_packs_and_exports() {
    let mut stack = Stack::new(Some(&admin_only()));
    let feed = tempfile::tempdir().unwrap();
    let advisory = |fixed: &str| {
        format!(
            r#"{{"schema_version": "1.4.0", "id": "GHSA-sched-0000-0001", "modified": "2026-01-01T00:00:00Z",
                "aliases": ["CVE-2099-0100"], "database_specific": {{"severity": "HIGH"}},
                "affected": [{{"package": {{"ecosystem": "crates.io", "name": "sched"}},
                               "ranges": [{{"type": "SEMVER", "events": [{{"introduced": "0"}}, {{"fixed": "{fixed}"}}]}}]}}]}}"#
        )
    };
    std::fs::write(feed.path().join("a.json"), advisory("1.0.0")).unwrap();
    let store = tempfile::tempdir().unwrap();
    stack.start("api", &[]);
    stack.start("orchestrator", &[("STELLA_SCHEDULER_TICK", "1h".into())]);
    let sources = format!("mirror={}", feed.path().display());
    stack.start(
        "conseiller",
        &[("STELLA_SOURCES", sources), ("STELLA_SOURCES_INTERVAL", "1s".into()), ("STELLA_JOBS_POLL", "1h".into())],
    );
    stack.start("export", &export_env(store.path(), &[]));
    let token = stack.admin_token();
    let links = |stack: &Stack| {
        let r = stack.get("conseiller", "/api/v1/advisories/linksets/CVE-2099-0100", &token);
        if r.status == 200 { r.json()["links"].as_array().unwrap().len() } else { 0 }
    };
    eventually("a scheduled poll stores the advisory", Duration::from_secs(20), || (links(&stack) == 1).then_some(()));
    std::fs::write(feed.path().join("a.json"), advisory("1.0.1")).unwrap();
    eventually("a later scheduled poll stores the changed file", Duration::from_secs(20), || {
        (links(&stack) == 2).then_some(())
    });
    let polls = stack.get("orchestrator", "/api/v1/jobs?kind=feed.advisory", &token).json();
    let polls = polls["jobs"].as_array().unwrap();
    assert!(polls.len() >= 2, "{polls:#?}");
    assert!(polls.iter().all(|j| j["schedule"] == "feed.advisory"), "{polls:#?}");
    assert!(polls.iter().any(|j| j["result"]["mirror"]["stored"] == 1), "{polls:#?}");
    let schedules = stack.get("orchestrator", "/api/v1/schedules", &token).json();
    let feed_schedule =
        schedules["schedules"].as_array().unwrap().iter().find(|s| s["name"] == "feed.advisory").cloned();
    assert_eq!(feed_schedule.as_ref().map(|s| s["system"].clone()), Some(Value::Bool(true)), "{schedules}");

    // A tenant's task pack every second.
    stack.start("task-runner", &runner_env("10s", 2));
    let listener = Listener::start();
    register(&stack, &token, &pack("tick", 0, &format!("http://127.0.0.1:{}/", listener.port)));
    let create = |body: &str| {
        call("POST", &stack.url("orchestrator", "/api/v1/schedules"), Some(&token), Some(body.as_bytes()), &[])
    };
    let tick = r#"{"name": "tick", "kind": "task-run", "every": "1s", "payload": {"pack": "tick"}}"#;
    assert_eq!(create(tick).status, 201);
    assert_eq!(create(tick).status, 409, "the same name again");
    let pending_sql =
        "SELECT count(*) FROM stella.jobs WHERE schedule = 'default/tick' AND status IN ('queued', 'running')";
    let mut most_pending = 0;
    eventually("the scheduled pack runs three times", Duration::from_secs(20), || {
        most_pending = most_pending.max(count(&stack, pending_sql));
        (listener.connections() >= 3).then_some(())
    });
    assert!(most_pending <= 1, "{most_pending} jobs of one schedule were pending at once");
    let runs = count(
        &stack,
        "SELECT count(*) FROM stella.task_runs WHERE created_by = 'orchestrator' AND status = 'succeeded'",
    );
    assert!(runs >= 3, "{runs} scheduled runs succeeded");
    let r = call("DELETE", &stack.url("orchestrator", "/api/v1/schedules/tick"), Some(&token), None, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    std::thread::sleep(Duration::from_millis(2500));
    let after = listener.connections();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(listener.connections(), after, "the deleted schedule still runs");

    // A scheduled export.
    let nightly = r#"{"name": "nightly", "kind": "export", "every": "1h", "payload": {"formats": ["csv"]}}"#;
    assert_eq!(create(nightly).status, 201);
    eventually("the scheduled export is written", Duration::from_secs(20), || {
        let done = count(
            &stack,
            "SELECT count(*) FROM stella.exports e JOIN stella.jobs j ON j.id = e.job_id
             WHERE e.created_by = 'orchestrator' AND j.status = 'succeeded' AND jsonb_array_length(e.files) = 1",
        );
        (done == 1).then_some(())
    });

    for (body, status, says) in [
        (r#"{"name": "x", "kind": "reboot", "every": "1s", "payload": {}}"#, 422, "`reboot` is not one of"),
        (r#"{"name": "x", "kind": "task-run", "every": "0s", "payload": {"pack": "tick"}}"#, 422, "at least 1s"),
        (r#"{"name": "x", "kind": "task-run", "every": "1m", "payload": {"pack": "nope"}}"#, 404, "task pack nope"),
        (r#"{"name": "X Y", "kind": "task-run", "every": "1m", "payload": {"pack": "tick"}}"#, 422, "lower-case"),
        (r#"{"name": "x", "kind": "export", "every": "1m", "payload": {"formats": ["xlsx"]}}"#, 422, "`xlsx`"),
        // A job carries only what its worker expects: no run id of another tenant rides along.
        (
            r#"{"name": "x", "kind": "task-run", "every": "1m", "payload": {"pack": "tick", "run": 1}}"#,
            422,
            "unknown field `run`",
        ),
        (
            r#"{"name": "x", "kind": "export", "every": "1m", "payload": {"formats": ["csv"], "scan": 999}}"#,
            404,
            "scan 999",
        ),
    ] {
        let r = create(body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{body}: {}", r.text());
    }
}

/// An `http` step with `"keep": true`: its answer is written to the object store and served by
/// the task runner byte for byte; once the run is older than the retention period the object is
/// deleted and the artifact answers 410. An answer over the 1 MiB limit fails the step, saying so.
#[test]
fn task_run_artifacts_are_kept_then_expire() {
    let mut stack = Stack::new(Some(&admin_only()));
    let store = tempfile::tempdir().unwrap();
    stack.start("api", &[]);
    stack.start(
        "task-runner",
        &export_env(
            store.path(),
            &[("STELLA_TASKS_ARTIFACT_RETENTION", "3s".into()), ("STELLA_TASK_EGRESS_ALLOW", "127.0.0.1".into())],
        ),
    );
    let token = stack.admin_token();
    let answer = r#"{"mirror": "ok", "documents": 42}"#;
    let small = Listener::json(answer);
    let big = Listener::json(&format!(r#"{{"padding": "{}"}}"#, "x".repeat(3 << 19)));
    for (name, port) in [("keeper", small.port), ("hoarder", big.port)] {
        let body = format!(
            r#"{{"apiVersion": "stella-ops.org/v1", "kind": "TaskPack", "name": "{name}", "version": "1.0.0",
                "steps": [{{"id": "index", "type": "http", "url": "http://127.0.0.1:{port}/index.json", "keep": true}}]}}"#
        );
        register(&stack, &token, &body);
    }
    let finish = |pack: &str| {
        let id = start_run(&stack, &token, pack)["id"].as_i64().unwrap();
        let run = eventually("the run finishes", Duration::from_secs(20), || {
            let run = stack.get("task-runner", &format!("/api/v1/runs/{id}"), &token).json();
            (run["status"] == "succeeded" || run["status"] == "failed").then_some(run)
        });
        (id, run)
    };
    let (id, run) = finish("keeper");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["artifacts"][0]["step"], "index", "{run}");
    assert_eq!(run["artifacts"][0]["bytes"], answer.len(), "{run}");
    let artifact = format!("/api/v1/runs/{id}/artifacts/index");
    assert_eq!(stack.get("task-runner", &artifact, &token).body, answer.as_bytes());
    let stored = store.path().join(format!("tenants/default/runs/{id}/index"));
    assert_eq!(std::fs::read(&stored).unwrap(), answer.as_bytes(), "not in the object store");
    assert_eq!(stack.get("task-runner", &format!("/api/v1/runs/{id}/artifacts/nope"), &token).status, 404);
    let gone = eventually("retention deletes the artifact", Duration::from_secs(20), || {
        let r = stack.get("task-runner", &artifact, &token);
        (r.status == 410).then_some(r)
    });
    assert!(gone.text().contains("expired"), "{}", gone.text());
    assert!(!stored.exists(), "the object is still in the store");
    let run = stack.get("task-runner", &format!("/api/v1/runs/{id}"), &token).json();
    assert_eq!(run["artifacts"][0]["expired"], true, "{run}");

    let (_, run) = finish("hoarder");
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["reason"].as_str().unwrap().contains("cannot be kept"), "{run}");
}
