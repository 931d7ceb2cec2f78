//! The operational contract, proven for every service of the workspace as a real process:
//! every endpoint, configuration from env, file and `*_FILE` secrets, exit 78 on a bad value,
//! secret redaction in logs and config discovery, the healthcheck subcommand, and SIGTERM drain
//! under concurrent requests.

use std::time::{Duration, Instant};

use stella_e2e::pg::Postgres;
use stella_e2e::{BinPath, Proc, ServiceInfo, free_port, get, services, wait_status};

const DRAIN_REQUESTS: usize = 8;
const DRAIN_DELAY_MS: u64 = 2500;
const GRACE: Duration = Duration::from_secs(6);

#[test]
fn every_service_is_discovered_and_described() {
    let services = services();
    let names: Vec<_> = services.iter().map(|s| s.service.as_str()).collect();
    for expected in [
        "ai",
        "api",
        "conseiller",
        "console",
        "excitator",
        "export",
        "ledger",
        "migrator",
        "notify",
        "orchestrator",
        "policy",
        "task-runner",
    ] {
        assert!(names.contains(&expected), "service {expected} missing from the workspace: {names:?}");
    }
    let mut ports: Vec<_> = services.iter().filter_map(|s| s.default_port).collect();
    ports.sort_unstable();
    let before = ports.len();
    ports.dedup();
    assert_eq!(before, ports.len(), "two services share a default port");
    let console = services.iter().find(|s| s.service == "console").unwrap();
    let api = services.iter().find(|s| s.service == "api").unwrap();
    assert_eq!((console.default_port, api.default_port), (Some(8080), Some(8081)));
    for s in &services {
        assert_eq!(s.kind == "job", s.default_port.is_none(), "{}: jobs and only jobs have no port", s.binary);
        assert_eq!(s.aggregation_only, s.service == "conseiller" || s.service == "excitator", "{}", s.binary);
    }
}

#[test]
fn every_server_honours_the_contract() {
    let pg = Postgres::start();
    let secrets = tempfile::tempdir().unwrap();
    let services: Vec<_> = services().into_iter().filter(|s| s.kind == "server").collect();
    assert!(services.len() >= 11, "expected the eleven long-running services, found {}", services.len());
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = services
            .iter()
            .map(|s| {
                let pg = &pg;
                let dir = secrets.path();
                scope.spawn(move || check_service(s, pg, dir).err().map(|e| format!("{}: {e}", s.binary)))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().unwrap_or_else(|_| Some("test thread panicked".into()))).collect()
    });
    assert!(failures.is_empty(), "contract failures:\n{}", failures.join("\n"));
}

/// A URL with a password and a signature in a setting that is not marked secret.
const URL_WITH_CREDENTIALS: &str = "https://minio:s3cr3t-pw@s3.internal:9000/?X-Amz-Signature=0ddf00d&region=eu";

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

fn json(body: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))
}

fn check_service(s: &ServiceInfo, pg: &Postgres, secrets: &std::path::Path) -> Result<(), String> {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // The secret reaches the service through a file mount, the listen address through the
    // config file, everything else through the environment: all three sources are exercised.
    let secret_file = secrets.join(format!("{}.db", s.service));
    std::fs::write(&secret_file, format!("{}\n", pg.url())).unwrap();
    let config_dir = secrets.join(&s.service);
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join(format!("{}.toml", s.service)), "listen_addr = \"127.0.0.1\"\n").unwrap();
    let env = vec![
        ("STELLA_PORT", port.to_string()),
        ("STELLA_CONFIG_DIR", config_dir.display().to_string()),
        ("STELLA_DATABASE_URL_FILE", secret_file.display().to_string()),
        ("STELLA_DIAGNOSTICS", "true".into()),
        ("STELLA_SHUTDOWN_GRACE", format!("{}s", GRACE.as_secs())),
        // Credentials inside a setting that is not secret: /config must not show them.
        ("STELLA_OBJECT_STORE_ENDPOINT", URL_WITH_CREDENTIALS.into()),
    ];
    let mut proc = Proc::spawn(&s.path(), &[], &env);
    let ready = wait_status(&format!("{base}/health/readiness"), 200, Duration::from_secs(15));
    ensure(ready.is_some(), || format!("never ready; stdout: {}\nstderr: {}", proc.stdout(), proc.stderr()))?;

    let (status, body) = get(&format!("{base}/health/liveness")).ok_or("liveness: no answer")?;
    ensure(status == 200, || format!("liveness answered {status}"))?;
    let (_, body_r) = get(&format!("{base}/health/readiness")).ok_or("readiness: no answer")?;
    let r = json(&body_r)?;
    ensure(r["checks"]["database"]["status"] == "up", || format!("readiness does not check the database: {body_r}"))?;
    drop(body);

    let (status, body) = get(&format!("{base}/version")).ok_or("version: no answer")?;
    let v = json(&body)?;
    ensure(status == 200 && v["version"] == env!("CARGO_PKG_VERSION"), || format!("version: {status} {body}"))?;
    let commit = v["gitCommit"].as_str().unwrap_or_default();
    ensure(commit == "unknown" || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())), || {
        format!("gitCommit is neither a commit id nor `unknown`: {body}")
    })?;
    let date = v["buildDate"].as_str().unwrap_or_default();
    ensure(date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T', || format!("buildDate: {body}"))?;

    let (status, body) = get(&format!("{base}/config")).ok_or("config: no answer")?;
    let c = json(&body)?;
    let db = &c["settings"]["STELLA_DATABASE_URL"];
    ensure(status == 200 && db["value"] == "<redacted>" && db["source"] == "secretfile", || format!("config: {body}"))?;
    ensure(c["settings"]["STELLA_LISTEN_ADDR"]["source"] == "file", || format!("config file not read: {body}"))?;
    ensure(!body.contains(&pg.password), || "config discovery leaks the database password".into())?;
    let endpoint = &c["settings"]["STELLA_OBJECT_STORE_ENDPOINT"]["value"];
    ensure(endpoint == "https://<redacted>@s3.internal:9000/?X-Amz-Signature=<redacted>&region=eu", || {
        format!("a URL's credentials are shown: {endpoint}")
    })?;

    let (status, body) = get(&format!("{base}/capabilities")).ok_or("capabilities: no answer")?;
    if s.aggregation_only {
        ensure(status == 200 && json(&body)? == serde_json::json!({"merge": false}), || {
            format!("capabilities: {body}")
        })?;
    } else {
        ensure(status == 404, || format!("capabilities should not exist here: {status}"))?;
        // The framework's own refusals answer the documented JSON error body too.
        ensure(json(&body)?["error"] == "not_found", || format!("an unknown route answers: {body}"))?;
    }
    let (status, body) = get(&format!("{base}/debug/delay?ms=soon")).ok_or("delay: no answer")?;
    let e = json(&body)?;
    ensure(
        status == 400 && e["error"] == "bad_request" && e["message"].as_str().is_some_and(|m| m.contains("ms")),
        || format!("a query that does not parse answers {status}: {body}"),
    )?;

    let (status, body) = get(&format!("{base}/metrics")).ok_or("metrics: no answer")?;
    ensure(status == 200, || format!("metrics answered {status}"))?;
    for needle in [
        "stella_http_requests_total{method=\"GET\",route=\"/version\",status=\"200\"} 1",
        "stella_http_request_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "stella_build_info{",
    ] {
        ensure(body.contains(needle), || format!("metrics lack `{needle}`"))?;
    }

    let hc = std::process::Command::new(s.path())
        .arg("healthcheck")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .output()
        .map_err(|e| e.to_string())?;
    ensure(hc.status.success(), || format!("healthcheck failed: {}", String::from_utf8_lossy(&hc.stdout)))?;

    drain_under_load(&mut proc, &base)?;
    check_logs(s, &proc, pg)?;
    check_bad_config(s)
}

/// SIGTERM with requests in flight: all of them finish, readiness and new requests get 503
/// meanwhile, and the process exits 0 within the grace period. The signal goes only once the
/// service's own gauge counts every slow request in flight, and readiness is read once the
/// service has begun draining: evidence, never a pause.
fn drain_under_load(proc: &mut Proc, base: &str) -> Result<(), String> {
    let slow = format!("{base}/debug/delay?ms={DRAIN_DELAY_MS}");
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..DRAIN_REQUESTS).map(|_| scope.spawn(|| get(&slow))).collect();
        // The scrape is in flight too while it reads the gauge.
        let all_in = in_flight_reaches(base, DRAIN_REQUESTS + 1, DRAIN_DELAY_MS);
        proc.signal(libc::SIGTERM);
        let signalled = Instant::now();
        let draining = wait_until(Duration::from_millis(DRAIN_DELAY_MS), || {
            get(&format!("{base}/health/readiness")).filter(|(s, _)| *s == 503)
        });
        let readiness = draining.or_else(|| get(&format!("{base}/health/readiness")));
        let fresh = get(&format!("{base}/version"));
        let answers: Vec<_> = workers.into_iter().map(|w| w.join().ok().flatten()).collect();
        let status = proc.wait_for(GRACE + Duration::from_secs(2));
        (all_in, readiness, fresh, answers, status, signalled.elapsed())
    });
    let (all_in, readiness, fresh, answers, status, took) = results;
    all_in?;
    ensure(readiness.as_ref().is_some_and(|(s, _)| *s == 503), || format!("readiness during drain: {readiness:?}"))?;
    ensure(fresh.as_ref().is_some_and(|(s, _)| *s == 503), || format!("new request during drain: {fresh:?}"))?;
    let failed = answers.iter().filter(|a| a.as_ref().is_none_or(|(s, _)| *s != 200)).count();
    ensure(failed == 0, || format!("{failed} of {DRAIN_REQUESTS} in-flight requests failed: {answers:?}"))?;
    ensure(status.is_some_and(|s| s.success()), || format!("exit after SIGTERM: {status:?}"))?;
    ensure(took < GRACE, || format!("drain took {took:?}, longer than the grace period"))
}

fn check_logs(s: &ServiceInfo, proc: &Proc, pg: &Postgres) -> Result<(), String> {
    let (stdout, stderr) = (proc.stdout(), proc.stderr());
    ensure(!stdout.contains(&pg.password) && !stderr.contains(&pg.password), || {
        "a log line leaks the password".into()
    })?;
    ensure(!stdout.contains(&pg.url()), || "a log line leaks the database URL".into())?;
    let mut messages = Vec::new();
    for line in stdout.lines() {
        let v = json(line)?;
        for key in ["timestamp", "level", "message", "service", "version", "revision"] {
            ensure(v.get(key).is_some(), || format!("log line without `{key}`: {line}"))?;
        }
        ensure(v["service"] == s.binary.as_str(), || format!("log line names another service: {line}"))?;
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
        if v["message"] == "request" {
            for key in ["method", "route", "path", "status", "duration_ms"] {
                ensure(v.get(key).is_some(), || format!("request log without `{key}`: {line}"))?;
            }
        }
    }
    ensure(stdout.contains("<redacted>"), || "the configuration log line does not show the redacted secret".into())?;
    for credential in ["s3cr3t-pw", "0ddf00d"] {
        ensure(!stdout.contains(credential), || format!("the log shows a URL's credential `{credential}`"))?;
    }
    for expected in ["listening", "draining", "shutdown complete", "request"] {
        ensure(messages.iter().any(|m| m == expected), || format!("no `{expected}` log line"))?;
    }
    Ok(())
}

/// A bad value exits 78 with one line naming it, before any port is bound. The evidence: the
/// port is held by this test while the service starts, so a service that bound before checking
/// its configuration would fail on the bind ("address in use"), not with the setting's line.
fn check_bad_config(s: &ServiceInfo) -> Result<(), String> {
    let held = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = held.local_addr().map_err(|e| e.to_string())?.port();
    let env = vec![
        ("STELLA_PORT", port.to_string()),
        ("STELLA_LISTEN_ADDR", "127.0.0.1".to_string()),
        ("STELLA_SHUTDOWN_GRACE", "soon".to_string()),
    ];
    let mut proc = Proc::spawn(&s.path(), &[], &env);
    let status = proc.wait_for(Duration::from_secs(5));
    ensure(status.and_then(|s| s.code()) == Some(78), || format!("bad STELLA_SHUTDOWN_GRACE exited {status:?}"))?;
    let stderr = proc.stderr();
    ensure(stderr.lines().count() == 1, || format!("expected one line on stderr: {stderr}"))?;
    ensure(stderr.contains("STELLA_SHUTDOWN_GRACE=\"soon\"") && stderr.contains("duration"), || stderr.clone())?;
    ensure(!stderr.to_ascii_lowercase().contains("address"), || format!("it tried the port first: {stderr}"))?;
    drop(held);
    if s.aggregation_only {
        let env = vec![("STELLA_DISABLE_MERGE", "false".to_string())];
        let mut proc = Proc::spawn(&s.path(), &[], &env);
        let status = proc.wait_for(Duration::from_secs(5));
        ensure(status.and_then(|s| s.code()) == Some(78), || format!("DISABLE_MERGE=false exited {status:?}"))?;
        ensure(proc.stderr().contains("no merge path"), || proc.stderr())?;
    }
    Ok(())
}

/// Polls `pred` until it gives a value or `limit` passes.
fn wait_until<T>(limit: Duration, mut pred: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = pred() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `stella_http_requests_in_flight` on `base` is at least `n`; fails naming the last
/// value seen if the requests finish (`within_ms`) first.
fn in_flight_reaches(base: &str, n: usize, within_ms: u64) -> Result<(), String> {
    let mut last = None;
    let reached = wait_until(Duration::from_millis(within_ms), || {
        let (_, body) = get(&format!("{base}/metrics"))?;
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix("stella_http_requests_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        last = Some(value);
        (value >= n as f64).then_some(())
    });
    reached.ok_or_else(|| format!("never {n} requests in flight at once (last seen: {last:?})"))
}
