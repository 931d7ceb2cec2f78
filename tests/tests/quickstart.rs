//! The Compose quickstart, end to end on the Docker engine here: `deploy/compose` (as generated
//! by `cargo xtask deploy` for this build) is copied to a temporary directory and started with
//! `quickstart.sh --layout target/oci`, which pushes the images into a local registry and pulls
//! them by digest. Then every container is checked (healthy, hardened, JSON logs, no secret in
//! them), every service answers `/version` with the built version, the aggregators refuse to
//! merge, the seed data is in PostgreSQL, a second run changes nothing, and `down` stops every
//! container with exit code 0 inside its grace period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stella_e2e::http::call;
use stella_e2e::{output, run};
use xtask::assemble::Built;

/// The stack of one test: its directory, project name and ports; torn down when dropped.
struct Stack {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Stack {
    fn new() -> Stack {
        let dir = tempfile::Builder::new().prefix("stella-quickstart-").tempdir().unwrap();
        let src = stella_e2e::root().join("deploy/compose");
        stella_e2e::copy_dir(&src, dir.path());
        // One project per stack: the tests of this binary run at once.
        static STACKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STACKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let project = format!("stellatest{}n{n}", std::process::id());
        let mut env = vec![
            ("COMPOSE_PROJECT_NAME".to_string(), project.clone()),
            ("STELLA_WORKSPACE".to_string(), stella_e2e::root().display().to_string()),
        ];
        // Free host ports, so a stack of the developer's own is left alone.
        let example = std::fs::read_to_string(dir.path().join(".env.example")).unwrap();
        for line in example.lines().filter(|l| l.starts_with("STELLA_") && l.contains("_PORT=")) {
            let name = line.split('=').next().unwrap();
            env.push((name.to_string(), stella_e2e::free_port().to_string()));
        }
        Stack { dir, env }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.args(args).current_dir(self.path()).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn quickstart(&self, registry_port: u16) -> (Output, Duration) {
        self.quickstart_with(registry_port, &[])
    }

    /// `quickstart.sh --layout`, with no `cargo` on its PATH: it pushes with the loader the build
    /// wrote beside the layout, and compiles nothing (issue 21).
    fn quickstart_with(&self, registry_port: u16, args: &[&str]) -> (Output, Duration) {
        let path = std::env::var("PATH").unwrap_or_default();
        let without_cargo: Vec<&str> = path.split(':').filter(|d| !Path::new(d).join("cargo").exists()).collect();
        let start = Instant::now();
        let out = output(
            self.script("quickstart.sh")
                .env("PATH", without_cargo.join(":"))
                .args(args)
                .args(["--layout", &xtask::images::default_out().display().to_string()])
                .args(["--registry-port", &registry_port.to_string(), "--timeout", "180"]),
        );
        (out, start.elapsed())
    }

    /// One of the stack's scripts (`backup.sh`, `restore.sh`, ...), run in its directory with its
    /// project and ports.
    fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(self.path().join(name)).current_dir(self.path()).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn port(&self, var: &str) -> String {
        self.env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {var}"))
    }

    /// Container id by compose service.
    fn containers(&self) -> BTreeMap<String, String> {
        let ids = run(&mut self.compose(&["ps", "-q"]));
        ids.lines()
            .map(|id| {
                let service = run(Command::new("docker").args([
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"com.docker.compose.service\"}}",
                    id,
                ]));
                (service.trim().to_string(), id.to_string())
            })
            .collect()
    }

    fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(".secrets").join(name)).unwrap().trim().to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = output(&mut self.compose(&["down", "-v", "--timeout", "5"]));
        if let Ok(pid) = std::fs::read_to_string(self.path().join(".registry/pid")) {
            let _ = Command::new("kill").arg(pid.trim()).output();
        }
    }
}

fn inspect(id: &str, format: &str) -> String {
    run(Command::new("docker").args(["inspect", "-f", format, id])).trim().to_string()
}

#[test]
fn the_quickstart_runs_the_whole_stack_hardened_and_healthy() {
    let built = Built::read(&xtask::images::default_out()).expect("the images are built");
    let stack = Stack::new();
    let registry_port = stella_e2e::free_port();
    let (out, elapsed) = stack.quickstart(registry_port);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "quickstart.sh failed:\n{text}");
    eprintln!("quickstart.sh, start to all healthy: {:.1} s", elapsed.as_secs_f64());
    assert!(text.contains("StellaOps is running"), "{text}");
    let admin = stack.secret("admin-password");
    assert!(text.contains(&admin), "the first run shows the admin's credentials once");

    // Every catalog image runs, from the registry, by the digest of this build.
    let containers = stack.containers();
    let deployed = stella_e2e::deployed(&built);
    assert_eq!(containers.len(), deployed.len(), "{containers:?}");
    let secrets = ["postgres-password", "redis-password", "admin-password"].map(|s| stack.secret(s));
    for (service, id) in &containers {
        let image = built.images.iter().find(|i| &i.name == service).unwrap_or_else(|| panic!("{service}"));
        let reference = inspect(id, "{{.Config.Image}}");
        assert!(reference.ends_with(&format!("@{}", image.digest)), "{service} runs {reference}");
        assert!(reference.starts_with(&format!("127.0.0.1:{registry_port}/stella/")), "{service} runs {reference}");
        // Hardened as the compose file says.
        assert_eq!(inspect(id, "{{.Config.User}}"), "65532:65532", "{service}");
        assert_eq!(inspect(id, "{{.HostConfig.ReadonlyRootfs}}"), "true", "{service}");
        assert_eq!(inspect(id, "{{.HostConfig.CapDrop}}"), "[ALL]", "{service}");
        assert_eq!(inspect(id, "{{.HostConfig.SecurityOpt}}"), "[no-new-privileges:true]", "{service}");
        let state =
            inspect(id, "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} {{.State.ExitCode}}");
        assert!(state == "running healthy 0" || state == "exited  0", "{service}: {state}");
        // Logs: JSON lines for the StellaOps services, and no secret anywhere.
        let logs = output(Command::new("docker").args(["logs", id]));
        let logs = format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
        for s in &secrets {
            assert!(!logs.contains(s.as_str()), "{service} logged a secret");
        }
        if !service.ends_with("postgres") && !service.ends_with("redis") && !service.ends_with("nats") {
            for line in logs.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{service}: not JSON ({e}): {line}"));
                assert!(v["level"].is_string() && v["message"].is_string(), "{service}: {line}");
            }
        }
    }

    // Every service answers /version with the built version; the aggregators do not merge.
    let example = std::fs::read_to_string(stack.path().join(".env.example")).unwrap();
    for line in example.lines().filter(|l| l.starts_with("STELLA_") && l.contains("_PORT=")) {
        let var = line.split('=').next().unwrap();
        let url = format!("http://127.0.0.1:{}", stack.port(var));
        let (code, body) = stella_e2e::get(&format!("{url}/version")).unwrap_or_else(|| panic!("{var}: no answer"));
        assert_eq!(code, 200, "{var}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["version"], built.version.as_str(), "{var}");
        assert_eq!(v["gitCommit"], built.revision.as_str(), "{var}");
        if var.contains("CONSEILLER") || var.contains("EXCITATOR") {
            let (_, caps) = stella_e2e::get(&format!("{url}/capabilities")).unwrap();
            assert_eq!(serde_json::from_str::<serde_json::Value>(&caps).unwrap()["merge"], false, "{var}");
        }
    }

    // The quickstart seed is in the database (migrator --seed ran to completion first).
    let pg = &containers["stella-postgres"];
    let tenants = run(Command::new("docker").args(["exec", "-e", &format!("PGPASSWORD={}", secrets[0]), pg]).args([
        "/usr/lib/postgresql/15/bin/psql",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "stella",
        "-tAc",
        "SELECT slug FROM stella.tenants ORDER BY slug",
    ]));
    assert!(tenants.lines().any(|l| l == "default"), "seed tenant missing: {tenants}");
    // ... and visible through the API with the admin's first-login credentials: the demo scans'
    // findings, and the advisory linkset where two sources disagree, both originals linked.
    let api = format!("http://127.0.0.1:{}", stack.port("STELLA_API_PORT"));
    let conseiller = format!("http://127.0.0.1:{}", stack.port("STELLA_CONSEILLER_PORT"));
    let login = |password: &str| {
        let body = serde_json::json!({"username": "admin", "password": password}).to_string();
        let r = call("POST", &format!("{api}/api/v1/auth/login"), None, Some(body.as_bytes()), &[]);
        assert_eq!(r.status, 201, "login: {}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    };
    let token = login(&admin);
    let findings = call("GET", &format!("{api}/api/v1/findings"), Some(&token), None, &[]).json();
    assert_eq!(findings["total"], 4, "seeded findings: {findings}");
    let linkset =
        call("GET", &format!("{conseiller}/api/v1/advisories/linksets/CVE-2020-26235"), Some(&token), None, &[]);
    assert_eq!(linkset.json()["links"].as_array().map(Vec::len), Some(2), "{}", linkset.text());
    // The seeded task pack runs inside the stack: the task runner reaches every service it names.
    let runner = format!("http://127.0.0.1:{}", stack.port("STELLA_TASK_RUNNER_PORT"));
    let run_pack = |pack: &str, token: &str| {
        let started = call("POST", &format!("{runner}/api/v1/packs/{pack}/runs"), Some(token), None, &[]);
        assert_eq!(started.status, 202, "{}", started.text());
        let run_url = format!("{runner}/api/v1/runs/{}", started.json()["id"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = call("GET", &run_url, Some(token), None, &[]).json();
            if r["status"] == "succeeded" || r["status"] == "failed" || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let pack_run = run_pack("stack-health", &token);
    assert_eq!(pack_run["status"], "succeeded", "the stack-health pack: {pack_run}");
    // The seeded export pack: the task runner asks stella-export, which writes every format to
    // the object store on the stella-state volume (as uid 65532, on a read-only root).
    let pack_run = run_pack("export-to-production", &token);
    assert_eq!(pack_run["status"], "succeeded", "the export-to-production pack: {pack_run}");
    let export_api = format!("http://127.0.0.1:{}/api/v1/exports/1", stack.port("STELLA_EXPORT_PORT"));
    let export = call("GET", &export_api, Some(&token), None, &[]).json();
    assert_eq!(export["files"].as_array().map(Vec::len), Some(3 + 2 * 2), "two seeded scans: {export}");
    let csv = call("GET", &format!("{export_api}/files/findings.csv"), Some(&token), None, &[]);
    assert_eq!(csv.status, 200, "{}", csv.text());
    assert_eq!(csv.text().lines().count(), 1 + 4, "a header and the four seeded findings: {}", csv.text());
    // The console, in headless Chromium: the whole Welcome walk, then the same through the CLI.
    console_and_cli_agree(&stack, &admin, &built, &secrets);

    // A scan imported now must survive backup, reset and restore.
    let sbom = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"purl":"pkg:npm/lodash@4.17.15"}]}"#;
    let imported = call("POST", &format!("{api}/api/v1/scans?name=before-backup"), Some(&token), Some(sbom), &[]);
    assert_eq!(imported.status, 201, "{}", imported.text());
    let before_backup = call("GET", &format!("{api}/api/v1/findings"), Some(&token), None, &[]).json()["total"].clone();

    // A second run keeps the secrets and the running containers.
    let (again, _) = stack.quickstart(registry_port);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(stack.secret("admin-password"), admin, "the second run replaced a secret");
    assert!(!String::from_utf8_lossy(&again.stdout).contains(&admin), "the second run showed the password again");
    assert_eq!(stack.containers(), containers, "the second run replaced containers");

    // A secret that disappears is never made again behind the operator's back: the run stops,
    // names the file and the two ways out, and changes nothing.
    let admin_file = stack.path().join(".secrets/admin-password");
    std::fs::remove_file(&admin_file).unwrap();
    let (refused, _) = stack.quickstart(registry_port);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a rerun without the admin password went on");
    for part in
        [".secrets/admin-password is missing or empty", "already has data", "./restore.sh", "--rotate admin-password"]
    {
        assert!(stderr.contains(part), "the refusal does not say {part:?}: {stderr}");
    }
    assert!(!admin_file.exists(), "the refused run wrote a new admin password");
    assert_eq!(stack.containers(), containers, "the refused run changed containers");
    // Rotated on purpose: the new password works, the old one does not, and it is shown once.
    let (rotated, _) = stack.quickstart_with(registry_port, &["--rotate", "admin-password"]);
    let text = String::from_utf8_lossy(&rotated.stdout);
    assert!(rotated.status.success(), "{text}{}", String::from_utf8_lossy(&rotated.stderr));
    let new_admin = stack.secret("admin-password");
    assert_ne!(new_admin, admin);
    assert!(text.contains("rotated admin-password") && text.contains(&new_admin), "{text}");
    let old_login = serde_json::json!({"username": "admin", "password": admin}).to_string();
    let refused_login = call("POST", &format!("{api}/api/v1/auth/login"), None, Some(old_login.as_bytes()), &[]);
    assert_eq!(refused_login.status, 401, "the old admin password still works");
    let revoked = call("GET", &format!("{api}/api/v1/findings"), Some(&token), None, &[]);
    assert_eq!(revoked.status, 401, "the admin's session outlived the rotation");
    let admin = new_admin;
    let token = login(&admin);
    // The database superuser's password, rotated: the role, the migrator's URL and every later
    // backup take the new one (a silently regenerated one used to break backup.sh).
    let old_pg = stack.secret("postgres-password");
    let (rotated, _) = stack.quickstart_with(registry_port, &["--rotate", "postgres-password"]);
    let text = String::from_utf8_lossy(&rotated.stdout);
    assert!(rotated.status.success(), "{text}{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(text.contains("rotated postgres-password"), "{text}");
    let new_pg = stack.secret("postgres-password");
    assert_ne!(new_pg, old_pg);
    assert!(!text.contains(&new_pg), "the rotation printed the database password");
    assert!(
        stack.secret("migrator-database-url").contains(&format!(":{new_pg}@")),
        "the migrator's URL kept the old password"
    );
    // The services' role and Redis: each rotated everywhere it is used, so the stack comes back
    // healthy (quickstart.sh waits for it) and answers with data; nothing prints the new value.
    for (secret, url) in [("db-service-password", "database-url"), ("redis-password", "redis-url")] {
        let old = stack.secret(secret);
        let (rotated, _) = stack.quickstart_with(registry_port, &["--rotate", secret]);
        let text = String::from_utf8_lossy(&rotated.stdout);
        assert!(rotated.status.success(), "--rotate {secret}: {text}{}", String::from_utf8_lossy(&rotated.stderr));
        assert!(text.contains(&format!("rotated {secret}")), "{text}");
        let new = stack.secret(secret);
        assert_ne!(new, old, "{secret} did not change");
        assert!(!text.contains(&new), "the rotation printed {secret}");
        assert!(stack.secret(url).contains(&format!(":{new}@")), "{url} kept the old {secret}");
        let scans = call("GET", &format!("{api}/api/v1/scans"), Some(&login(&admin)), None, &[]);
        assert_eq!(scans.status, 200, "after --rotate {secret}: {}", scans.text());
    }
    let redis = &stack.containers()["stella-redis"];
    let ping = |password: &str| {
        let auth = format!("REDISCLI_AUTH={password}");
        output(Command::new("docker").args(["exec", "-e", &auth, redis, "redis-cli", "PING"]))
    };
    assert!(String::from_utf8_lossy(&ping(&stack.secret("redis-password")).stdout).contains("PONG"));
    assert!(!String::from_utf8_lossy(&ping("not-the-password").stdout).contains("PONG"));

    // backup.sh, reset.sh --yes, restore.sh: what was written before the backup is back.
    let psql = |sql: &str| {
        let pg = &stack.containers()["stella-postgres"];
        run(Command::new("docker")
            .args(["exec", "-e", &format!("PGPASSWORD={}", stack.secret("postgres-password")), pg])
            .args([
                "/usr/lib/postgresql/15/bin/psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "stella",
                "-tAc",
                sql,
            ]))
    };
    let redis_cli = |args: &[&str]| {
        let redis = &stack.containers()["stella-redis"];
        let auth = format!("REDISCLI_AUTH={}", stack.secret("redis-password"));
        run(Command::new("docker").args(["exec", "-e", &auth, redis, "redis-cli"]).args(args)).trim().to_string()
    };
    // What lives on the stella-state volume, not in the database: an export's files and a task
    // run's artifact. Each must come back byte for byte.
    let export_files = |token: &str| -> Vec<(String, Vec<u8>)> {
        let export = call("GET", &export_api, Some(token), None, &[]).json();
        let names: Vec<String> =
            export["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
        names
            .into_iter()
            .map(|name| {
                let r = call("GET", &format!("{export_api}/files/{name}"), Some(token), None, &[]);
                assert_eq!(r.status, 200, "export file {name}: {}", r.text());
                (name, r.body)
            })
            .collect()
    };
    let exported = export_files(&token);
    assert_eq!(exported.len(), 3 + 2 * 2);
    let keeper = br#"{"apiVersion":"stella-ops.org/v1","kind":"TaskPack","name":"keep-version","version":"1.0.0",
        "description":"Keeps the API's version answer as an artifact.",
        "steps":[{"id":"version","type":"http","url":"http://stella-api:8081/version","keep":true}]}"#;
    let registered = call("POST", &format!("{runner}/api/v1/packs"), Some(&token), Some(keeper), &[]);
    assert_eq!(registered.status, 201, "{}", registered.text());
    let kept_run = run_pack("keep-version", &token);
    assert_eq!(kept_run["status"], "succeeded", "{kept_run}");
    let artifact_url = format!("{runner}/api/v1/runs/{}/artifacts/version", kept_run["id"]);
    let artifact = call("GET", &artifact_url, Some(&token), None, &[]);
    assert_eq!(artifact.status, 200, "{}", artifact.text());
    assert!(artifact.text().contains("version"), "{}", artifact.text());
    psql("CREATE TABLE backup_marker (v text); INSERT INTO backup_marker VALUES ('kept')");
    assert_eq!(redis_cli(&["SET", "backup:marker", "kept"]), "OK");
    let backup = run(&mut stack.script("backup.sh"));
    let backup = stack.path().join(backup.trim());
    assert!(backup.is_file(), "backup.sh wrote no file: {}", backup.display());
    let listing = run(Command::new("tar").arg("-tzf").arg(&backup));
    for part in [
        "./stella.pgdump",
        "./stella-state.tar",
        "./redis-data.tar",
        "./nats-data.tar",
        "./env",
        "./secrets/postgres-password",
        "./IMAGES",
        "./MANIFEST",
    ] {
        assert!(listing.lines().any(|l| l == part), "{part} is not in the backup:\n{listing}");
    }
    refused_restores(&stack, &backup);
    run(stack.script("reset.sh").arg("--yes"));
    let volumes = run(Command::new("docker").args([
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.env[0].1),
    ]));
    assert!(volumes.trim().is_empty(), "reset.sh left volumes: {volumes}");
    let restored = output(stack.script("restore.sh").arg("--yes").arg(&backup));
    assert!(
        restored.status.success(),
        "restore.sh failed:\n{}{}",
        String::from_utf8_lossy(&restored.stdout),
        String::from_utf8_lossy(&restored.stderr)
    );
    assert_eq!(psql("SELECT v FROM backup_marker").trim(), "kept");
    assert!(psql("SELECT slug FROM stella.tenants").lines().any(|l| l == "default"));
    assert!(
        stella_e2e::wait_status(&format!("{api}/health/readiness"), 200, Duration::from_secs(60)).is_some(),
        "the API is not ready after the restore"
    );
    let token = login(&admin);
    let scans = call("GET", &format!("{api}/api/v1/scans"), Some(&token), None, &[]).json();
    let names: Vec<&str> = scans.as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(names.contains(&"before-backup") && names.contains(&"demo-web"), "after the restore: {names:?}");
    assert_eq!(call("GET", &format!("{api}/api/v1/findings"), Some(&token), None, &[]).json()["total"], before_backup);
    assert_eq!(redis_cli(&["GET", "backup:marker"]), "kept");
    assert_eq!(export_files(&token), exported, "an export's files differ after the restore");
    let artifact_again = call("GET", &artifact_url, Some(&token), None, &[]);
    assert_eq!((artifact_again.status, artifact_again.body), (200, artifact.body), "the task artifact differs");
    let containers = stack.containers();
    assert_eq!(containers.len(), deployed.len());
    database_outage(&stack, &token);

    // `stop`: every container exits 0 within its grace period.
    let start = Instant::now();
    run(&mut stack.compose(&["stop"]));
    let stopped_in = start.elapsed();
    for (service, id) in &containers {
        assert_eq!(inspect(id, "{{.State.ExitCode}}"), "0", "{service} did not exit cleanly");
    }
    assert!(stopped_in < Duration::from_secs(30), "stopping took {stopped_in:?}");
}

/// The committed deploy files are what `cargo xtask deploy` writes for this build, docker-compose
/// accepts them, and every image is pinned by the digest the build recorded.
#[test]
fn the_committed_compose_file_is_current_valid_and_pinned_by_digest() {
    let layout = xtask::images::default_out();
    let options = xtask::deploy::Options {
        layout: layout.clone(),
        out: stella_e2e::root().join("deploy"),
        docs: None,
        check: true,
    };
    xtask::deploy::run(&options).expect("deploy/compose is current (run `cargo xtask deploy` and commit)");
    let built = Built::read(&layout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compose: PathBuf = stella_e2e::root().join("deploy/compose/docker-compose.yml");
    std::fs::copy(&compose, dir.path().join("docker-compose.yml")).unwrap();
    std::fs::create_dir(dir.path().join(".secrets")).unwrap();
    for (s, _) in xtask::deploy::compose::SECRETS {
        std::fs::write(dir.path().join(".secrets").join(s), "x").unwrap();
    }
    let config = run(Command::new("docker-compose").args(["config"]).current_dir(dir.path()));
    let images: Vec<&str> = config.lines().filter_map(|l| l.trim().strip_prefix("image: ")).collect();
    let deployed = stella_e2e::deployed(&built);
    assert_eq!(images.len(), deployed.len(), "{config}");
    for image in deployed {
        let pinned = format!("/{}:{}@{}", image.name, built.tags[0], image.digest);
        assert!(images.iter().any(|i| i.ends_with(&pinned)), "{} is not pinned to {}", image.name, image.digest);
    }
}

/// Issue 10's walk through the console (see `stella_e2e::console`), then its steps again through
/// the `stella` CLI: the copyable `docker run` line exactly as the console shows it, and the
/// local binary. Both must list the findings the console listed for the sample scan. No secret
/// but the token created in the wizard may appear in any page the browser saw.
fn console_and_cli_agree(stack: &Stack, admin: &str, built: &Built, secrets: &[String]) {
    let at = |var: &str| format!("http://127.0.0.1:{}", stack.port(var));
    let services = stella_e2e::services().into_iter().filter(|s| s.kind == "server").map(|s| s.service).collect();
    let walk = stella_e2e::console::Walk {
        console: at("STELLA_CONSOLE_PORT"),
        api: at("STELLA_API_PORT"),
        conseiller: at("STELLA_CONSEILLER_PORT"),
        password: admin,
        services,
        version: &built.version,
    };
    let walked = stella_e2e::console::walk(&walk);
    let session =
        walked.browser.cookies().into_iter().find(|(k, _)| k == "stella_session").expect("a session cookie").1;
    for (url, html) in &walked.browser.pages {
        for secret in secrets.iter().chain([&session]) {
            assert!(!html.contains(secret.as_str()), "{url} shows a secret");
        }
        if html.contains(&walked.token) {
            assert!(url.ends_with("/welcome/token"), "{url} shows the API token; only its creation page may");
        }
    }

    // The console's copyable CLI line, run as shown: the stella-cli image, by digest, from the
    // quickstart's registry, with the token in the environment.
    let shown = format!("{}\n{} --scan {} --json", walked.cli_env, walked.cli_docker, walked.scan);
    let docker = output(Command::new("bash").args(["-euc", &shown]).envs(stack.env.iter().map(|(k, v)| (k, v))));
    assert!(
        docker.status.success(),
        "the console's CLI line failed:\n{shown}\n{}",
        String::from_utf8_lossy(&docker.stderr)
    );
    let ids = |stdout: &[u8]| -> std::collections::BTreeSet<i64> {
        let v: serde_json::Value =
            serde_json::from_slice(stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(stdout)));
        v["items"].as_array().unwrap().iter().filter_map(|f| f["id"].as_i64()).collect()
    };
    assert_eq!(ids(&docker.stdout), walked.findings, "the stella-cli image and the console disagree");

    // The local binary: sign in, import the same sample (the same scan comes back), list, export.
    let stella = |args: &[&str], token: Option<&str>| {
        let mut cmd = Command::new(stella_e2e::bin_path("stella"));
        cmd.args(["--url", &at("STELLA_API_PORT"), "--export-url", &at("STELLA_EXPORT_PORT")]);
        cmd.args(["--task-runner-url", &at("STELLA_TASK_RUNNER_PORT")]).args(args).env_remove("STELLA_TOKEN");
        if let Some(t) = token {
            cmd.env("STELLA_TOKEN", t);
        }
        let out = output(&mut cmd);
        assert!(out.status.success(), "stella {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let password = stack.path().join(".secrets/admin-password");
    let token =
        String::from_utf8(stella(&["login", "--password-file", &password.display().to_string()], None)).unwrap();
    let token = token.trim();
    let sample = stella_e2e::root().join("services/core/seed/sboms/sample-checkout.cdx.json");
    let scan: serde_json::Value =
        serde_json::from_slice(&stella(&["import", &sample.display().to_string(), "--wait", "--json"], Some(token)))
            .unwrap();
    assert_eq!(scan["id"], walked.scan, "the same SBOM must give back the console's scan");
    // The CI gate: --require-pass exits 3 unless the verdict is pass; a usage error exits 2.
    let gate = |args: &[&str]| {
        let mut cmd = Command::new(stella_e2e::bin_path("stella"));
        cmd.args(["--url", &at("STELLA_API_PORT")]).args(args).env("STELLA_TOKEN", token);
        output(&mut cmd).status.code()
    };
    let outcome = scan["verdict"]["outcome"].as_str().expect("a verdict after --wait");
    let sample_arg = sample.display().to_string();
    let expected = if outcome == "pass" { 0 } else { 3 };
    assert_eq!(gate(&["import", &sample_arg, "--wait", "--require-pass"]), Some(expected), "verdict {outcome}");
    assert_eq!(gate(&["import", &sample_arg, "--require-pass"]), Some(2), "--require-pass without --wait");
    let listed = stella(&["findings", "--scan", &walked.scan.to_string(), "--json"], Some(token));
    assert_eq!(ids(&listed), walked.findings, "the stella CLI and the console disagree");
    let files = tempfile::tempdir().unwrap();
    let export = stella(
        &["export", "--format", "csv", "--wait", "--download", &files.path().display().to_string()],
        Some(&walked.token),
    );
    assert!(String::from_utf8_lossy(&export).contains("succeeded"), "{}", String::from_utf8_lossy(&export));
    let csv = std::fs::read_to_string(files.path().join("findings.csv")).unwrap();
    let api = at("STELLA_API_PORT");
    let total = call("GET", &format!("{api}/api/v1/findings"), Some(&walked.token), None, &[]).json()["total"].as_u64();
    assert_eq!(Some(csv.lines().count() as u64), total.map(|t| t + 1), "a header and every finding: {csv}");
    // A token the API refuses: a clear error, not a panic.
    let mut cmd = Command::new(stella_e2e::bin_path("stella"));
    let bad = output(cmd.args(["--url", &at("STELLA_API_PORT"), "--token", "stella_nope", "whoami"]));
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HTTP 401"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// One data route of every server of the stack (the console: its home page). Each needs the
/// database: the caller's token is looked up there before anything else.
const DATA_ROUTES: &[(&str, &str)] = &[
    ("STELLA_AI_PORT", "/api/v1/ai/status"),
    ("STELLA_API_PORT", "/api/v1/scans"),
    ("STELLA_CONSEILLER_PORT", "/api/v1/advisories/linksets"),
    ("STELLA_CONSOLE_PORT", "/"),
    ("STELLA_EXCITATOR_PORT", "/api/v1/vex/linksets"),
    ("STELLA_EXPORT_PORT", "/api/v1/exports/1"),
    ("STELLA_LEDGER_PORT", "/api/v1/ledger/events"),
    ("STELLA_NOTIFY_PORT", "/api/v1/notifications"),
    ("STELLA_ORCHESTRATOR_PORT", "/api/v1/jobs"),
    ("STELLA_POLICY_PORT", "/api/v1/policies"),
    ("STELLA_TASK_RUNNER_PORT", "/api/v1/packs"),
];

/// Issue 21's honest outage: with PostgreSQL stopped, every server answers its data route 503
/// with the JSON error naming the database (the console: a "Database unavailable" page), and
/// Docker marks each of them unhealthy within 10 s; once PostgreSQL is back, each is healthy
/// again within 10 s and answers 200.
fn database_outage(stack: &Stack, token: &str) {
    let example = std::fs::read_to_string(stack.path().join(".env.example")).unwrap();
    let servers: Vec<&str> = example
        .lines()
        .filter(|l| l.starts_with("STELLA_") && l.contains("_PORT="))
        .map(|l| l.split('=').next().unwrap())
        .collect();
    let listed: Vec<&str> = DATA_ROUTES.iter().map(|(v, _)| *v).collect();
    assert_eq!(listed, servers, "DATA_ROUTES must name one data route of every server in .env.example");
    let cookie = format!("stella_session={token}");
    let ask = |var: &str, path: &str| {
        let url = format!("http://127.0.0.1:{}{path}", stack.port(var));
        let headers: &[(&str, &str)] = if var == "STELLA_CONSOLE_PORT" { &[("cookie", cookie.as_str())] } else { &[] };
        call("GET", &url, Some(token), None, headers)
    };
    // Up: an answer from the data (the console's home may redirect into its wizard; export 1 may
    // not exist), never a refusal.
    let up = |when: &str| {
        for (var, path) in DATA_ROUTES {
            let r = ask(var, path);
            assert!(matches!(r.status, 200 | 303 | 404), "{var} {path} {when}: {} {}", r.status, r.text());
        }
    };
    up("before the outage");
    let containers = stack.containers();
    // The StellaOps servers (Redis and NATS need no database and stay healthy).
    let has_health = |id: &String| inspect(id, "{{if .State.Health}}yes{{end}}") == "yes";
    let support = ["stella-postgres", "stella-redis", "stella-nats"];
    let watched: Vec<(&String, &String)> =
        containers.iter().filter(|(name, id)| !support.contains(&name.as_str()) && has_health(id)).collect();
    assert_eq!(watched.len(), DATA_ROUTES.len(), "a healthcheck for every server: {watched:?}");
    let health_all = |want: &str, limit: Duration| {
        let start = Instant::now();
        loop {
            let states: Vec<(String, String)> =
                watched.iter().map(|(name, id)| (name.to_string(), inspect(id, "{{.State.Health.Status}}"))).collect();
            if states.iter().all(|(_, s)| s == want) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "not all {want} within {limit:?}: {states:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    run(&mut stack.compose(&["stop", "stella-postgres"]));
    for (var, path) in DATA_ROUTES {
        let r = ask(var, path);
        assert_eq!(r.status, 503, "{var} {path} with the database down: {}", r.text());
        if var == &"STELLA_CONSOLE_PORT" {
            assert!(r.text().contains("Database unavailable"), "the console's outage page: {}", r.text());
        } else {
            let body = r.json();
            assert_eq!(
                (body["error"].as_str(), body["dependency"].as_str()),
                (Some("unavailable"), Some("database")),
                "{var}: {body}"
            );
            assert!(body["message"].as_str().unwrap().contains("PostgreSQL"), "{var}: {body}");
        }
    }
    // Docker's verdict, counted from the moment `stop` returned (PostgreSQL's own shutdown time
    // is not the services' to count).
    let unhealthy = health_all("unhealthy", Duration::from_secs(10));
    eprintln!("database down: every server unhealthy after {:.1} s", unhealthy.as_secs_f64());
    run(&mut stack.compose(&["start", "stella-postgres"]));
    let pg = &containers["stella-postgres"];
    stella_e2e::stack::eventually("PostgreSQL healthy again", Duration::from_secs(60), || {
        (inspect(pg, "{{.State.Health.Status}}") == "healthy").then_some(())
    });
    let healthy = health_all("healthy", Duration::from_secs(10));
    eprintln!("database back: every server healthy after {:.1} s", healthy.as_secs_f64());
    up("after the outage");
}

/// `restore.sh` refuses a damaged, tampered, padded or newer backup with a message naming the
/// problem, before it touches anything: the same containers keep running.
fn refused_restores(stack: &Stack, backup: &Path) {
    let before = stack.containers();
    let work = tempfile::tempdir().unwrap();
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar").arg("-C").arg(&unpacked).arg("-xzf").arg(backup));
    let pack = |name: &str, change: &dyn Fn(&Path)| -> PathBuf {
        let dir = work.path().join(name);
        run(Command::new("cp").arg("-R").arg(&unpacked).arg(&dir));
        change(&dir);
        let out = work.path().join(format!("{name}.tar.gz"));
        run(Command::new("tar").arg("-C").arg(&dir).arg("-czf").arg(&out).arg("."));
        out
    };
    // Rewrites a member and its MANIFEST line, as a careful forger would.
    let rewrite = |dir: &Path, member: &str, text: &str| {
        std::fs::write(dir.join(member), text).unwrap();
        let manifest = std::fs::read_to_string(dir.join("MANIFEST")).unwrap();
        let sum = stella_core::sha256_hex(text.as_bytes());
        let lines: Vec<String> = manifest
            .lines()
            .map(|l| if l.ends_with(&format!("  {member}")) { format!("{sum}  {member}") } else { l.to_string() })
            .collect();
        std::fs::write(dir.join("MANIFEST"), lines.join("\n") + "\n").unwrap();
    };
    let bytes = std::fs::read(backup).unwrap();
    let truncated = work.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let images = std::fs::read_to_string(unpacked.join("IMAGES")).unwrap();
    let newer: String = images
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f[0] == "stella-migrator" { format!("{} v99.0.0 {}\n", f[0], f[2]) } else { format!("{l}\n") }
        })
        .collect();
    let cases: Vec<(PathBuf, &str)> = vec![
        (truncated, "cannot be read as a backup"),
        (
            pack("tampered", &|d| std::fs::write(d.join("env"), "STELLA_BIND=0.0.0.0\n").unwrap()),
            "do not match the MANIFEST",
        ),
        (pack("padded", &|d| std::fs::write(d.join("extra.sh"), "#!/bin/sh\n").unwrap()), "the MANIFEST does not list"),
        (pack("newer", &|d| rewrite(d, "IMAGES", &newer)), "made by StellaOps v99.0.0"),
        (
            pack("foreign", &|d| std::fs::write(d.join("FORMAT"), "something else\n").unwrap()),
            "not a backup written by",
        ),
    ];
    for (archive, message) in cases {
        let refused = output(stack.script("restore.sh").arg("--yes").arg(&archive));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{} was restored", archive.display());
        assert!(stderr.contains(message) && stderr.contains("nothing was changed"), "{}: {stderr}", archive.display());
        assert_eq!(stack.containers(), before, "a refused restore of {} changed the stack", archive.display());
    }
}

/// A port another program holds is named, with its holder, before anything starts.
#[test]
fn a_port_in_use_is_named_with_its_holder_before_anything_starts() {
    let stack = Stack::new();
    let port: u16 = stack.port("STELLA_API_PORT").parse().unwrap();
    let _held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = output(&mut stack.script("quickstart.sh"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let said = format!("port {port} (STELLA_API_PORT) is in use by");
    assert!(stderr.contains(&said), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", std::process::id())), "the holder is not named: {stderr}");
    assert!(stack.containers().is_empty(), "containers were started");
}

/// A service that refuses its configuration (exit 78) is named with its exit code and its own
/// error line, the troubleshooting section and what is left running.
#[test]
fn a_service_that_refuses_its_configuration_is_named_with_its_error_line() {
    let stack = Stack::new();
    let secrets = stack.path().join(".secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("migrator-database-url"), "not a url\n").unwrap();
    let (out, _) = stack.quickstart(stella_e2e::free_port());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in [
        "stella-migrator: exit code 78 (a setting is wrong",
        "STELLA_DATABASE_URL",
        "troubleshooting: docs/operations/troubleshooting.md",
        "still running: ",
        "stella-postgres",
    ] {
        assert!(stderr.contains(part), "the failure does not say {part:?}:\n{stderr}");
    }
}
