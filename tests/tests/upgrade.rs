//! Upgrade and rollback, on real binaries and a real PostgreSQL: the previous release of main
//! ([`PREVIOUS`], six migrations) runs with the quickstart seed and data of its own; it is
//! switched to this checkout (migrations first: this release adds `0007_console.sql`), then back.
//! After each step every server is ready, nothing written before is lost, the ledger's hash
//! chain verifies, and the running version writes.
//!
//! The images hold exactly these binaries (`images.rs` runs each image's entrypoint), so the
//! binaries stand for the images here: building every image of the previous release would cost
//! CI about seven minutes for no other check.
//!
//! The way back found this: the previous release's migrator refuses a schema that has a
//! migration it does not know (sqlx's `VersionMissing`), so a rollback to it must skip its
//! migrator. This release's migrator accepts newer migrations and says so; the last step shows
//! it, for the next rollback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stella_e2e::http::call;
use stella_e2e::pg::Postgres;
use stella_e2e::stack::{self, eventually};
use stella_e2e::{Proc, free_port, output, wait_status};

/// The commit of the previous release: main as it landed before this release.
const PREVIOUS: &str = "9d597b5c9438ea263ed2fee60c177f7ff80ae0ad";

/// Builds the previous release's binaries in a clone of it, in the workspace's own target
/// directory (third-party crates compiled once, for the test binaries, serve both), as a debug
/// build into `target/debug`, and keeps copies of them. The other tests run the images' static
/// binaries (`stella_e2e::bin_dir`), never `target/debug`, so replacing those disturbs no one.
///
/// Cargo names a workspace crate's artifacts by a hash of its name, version and path relative to
/// the workspace root, not of where the checkout is. Built as it stands, the clone would overwrite
/// this checkout's `libstella_runtime-….rlib` and the rest with the previous release's, and every
/// later compilation against them (the doc tests of CI's last step) fails with "can't find crate".
/// So the clone's workspace version gets build metadata (`+previous`): its crates hash apart,
/// the third-party ones do not, and semver requirements ignore build metadata.
fn previous_binaries(keep: &Path) -> PathBuf {
    let root = stella_e2e::root();
    let src = keep.join("previous");
    let git = |args: &[&str], dir: &Path| {
        let out = output(Command::new("git").args(args).current_dir(dir));
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["clone", "--quiet", "--no-checkout", root.to_str().unwrap(), src.to_str().unwrap()], keep);
    git(&["-c", "advice.detachedHead=false", "checkout", "--quiet", PREVIOUS], &src);
    set_workspace_version(&src, "+previous");
    let previous = keep.join("previous-bin");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    assert_ne!(
        stella_e2e::bin_dir(),
        target.join("debug"),
        "the previous release would replace the binaries under test"
    );
    // Only the services (every server and the migrator, as the workspace lists them): not xtask,
    // the loader or the support entrypoints, which the test does not run.
    let packages: Vec<String> = stella_e2e::services().into_iter().flat_map(|s| ["-p".to_string(), s.binary]).collect();
    assert!(packages.contains(&"stella-migrator".to_string()), "{packages:?}");
    // `xtask::shell::cargo`: without this process's `CARGO_MANIFEST_DIR` (the test harness sets
    // it to `tests/`), which would make ring's build script rerun and recompile the third-party
    // crates the test build compiled for this very target directory.
    let built = output(
        xtask::shell::cargo()
            .args(["build", "--bins", "--locked", "--quiet"])
            .args(&packages)
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", &target)
            .env("STELLA_GIT_COMMIT", PREVIOUS),
    );
    assert!(built.status.success(), "building {PREVIOUS}: {}", String::from_utf8_lossy(&built.stderr));
    copy_binaries(&target.join("debug"), &previous);
    previous
}

/// Appends `suffix` to the version of the workspace (`[workspace.package]`) and of its own
/// packages in `Cargo.lock` (the entries without a `source`), so that `--locked` still holds.
fn set_workspace_version(src: &Path, suffix: &str) {
    let manifest = src.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let (head, tail) = text.split_once("[workspace.package]").expect("the previous release has [workspace.package]");
    let (line, _) =
        tail.split_once("\nversion = \"").and_then(|(_, v)| v.split_once('"')).expect("a workspace version");
    let version = line.to_string();
    let tail = tail.replacen(&format!("version = \"{version}\""), &format!("version = \"{version}{suffix}\""), 1);
    std::fs::write(&manifest, format!("{head}[workspace.package]{tail}")).unwrap();

    let lock = src.join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    let mut renamed = 0;
    let blocks: Vec<String> = text
        .split("\n[[package]]\n")
        .map(|block| {
            if block.starts_with("name = \"") && !block.contains("\nsource = ") {
                renamed += 1;
                block.replacen(
                    &format!("\nversion = \"{version}\"\n"),
                    &format!("\nversion = \"{version}{suffix}\"\n"),
                    1,
                )
            } else {
                block.to_string()
            }
        })
        .collect();
    assert!(renamed >= stella_e2e::services().len(), "only {renamed} workspace packages in {}", lock.display());
    std::fs::write(&lock, blocks.join("\n[[package]]\n")).unwrap();
}

fn copy_binaries(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("stella-") && path.is_file() && !name.contains('.') {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// One version's servers, each on its own port, on the database.
struct Running {
    procs: Vec<(String, Proc, u16)>,
}

impl Running {
    fn start(bins: &Path, pg: &Postgres, objects: &Path) -> Running {
        let servers: Vec<String> =
            stella_e2e::services().into_iter().filter(|s| s.kind == "server").map(|s| s.service).collect();
        let mut procs = Vec::new();
        for service in servers {
            let port = free_port();
            let env = vec![
                ("STELLA_PORT", port.to_string()),
                ("STELLA_LISTEN_ADDR", "127.0.0.1".to_string()),
                ("STELLA_DATABASE_URL", pg.url()),
                ("STELLA_QUICKSTART_MODE", "true".to_string()),
                ("STELLA_OBJECT_STORE_URL", format!("file://{}", objects.display())),
            ];
            let proc = Proc::spawn(&bins.join(format!("stella-{service}")), &[], &env);
            procs.push((service, proc, port));
        }
        for (service, proc, port) in &procs {
            assert!(
                wait_status(&format!("http://127.0.0.1:{port}/health/readiness"), 200, Duration::from_secs(30))
                    .is_some(),
                "stella-{service} is not ready: {}",
                proc.stdout()
            );
        }
        Running { procs }
    }

    fn url(&self, service: &str) -> String {
        let port = self.procs.iter().find(|(s, _, _)| s == service).unwrap_or_else(|| panic!("no {service}")).2;
        format!("http://127.0.0.1:{port}")
    }

    /// `/version`'s commit of every server.
    fn commits(&self) -> Vec<String> {
        self.procs
            .iter()
            .map(|(_, _, port)| {
                let (_, body) = stella_e2e::get(&format!("http://127.0.0.1:{port}/version")).unwrap();
                serde_json::from_str::<serde_json::Value>(&body).unwrap()["gitCommit"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn stop(self) {
        for (service, mut proc, _) in self.procs {
            proc.signal(libc::SIGTERM);
            let status =
                proc.wait_for(Duration::from_secs(30)).unwrap_or_else(|| panic!("stella-{service} did not stop"));
            assert!(status.success(), "stella-{service} exited {status:?}");
        }
    }
}

fn migrate(bins: &Path, pg: &Postgres) -> (i32, String) {
    pg.migrate_with(&bins.join("stella-migrator"), &["--seed"], &stack::quickstart())
}

/// What must survive every step: the scans, the findings, and a ledger whose chain verifies.
#[derive(Debug, PartialEq)]
struct State {
    scans: Vec<String>,
    findings: serde_json::Value,
    ledger_valid: bool,
}

fn login(run: &Running) -> String {
    let body = serde_json::json!({"username": "admin", "password": stack::PASSWORD}).to_string();
    let r = call("POST", &format!("{}/api/v1/auth/login", run.url("api")), None, Some(body.as_bytes()), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

fn state(run: &Running, token: &str) -> (State, i64) {
    let scans = call("GET", &format!("{}/api/v1/scans?limit=500", run.url("api")), Some(token), None, &[]).json();
    let mut names: Vec<String> =
        scans.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    let findings = call("GET", &format!("{}/api/v1/findings?limit=500", run.url("api")), Some(token), None, &[]).json();
    let ledger = call("GET", &format!("{}/api/v1/ledger/verify", run.url("ledger")), Some(token), None, &[]).json();
    let events = ledger["events"].as_i64().unwrap();
    (State { scans: names, findings: findings["items"].clone(), ledger_valid: ledger["valid"] == true }, events)
}

/// Imports a small SBOM and waits for its verdict: the running version writes.
fn write(run: &Running, token: &str, name: &str) {
    let sbom = format!(
        r#"{{"bomFormat":"CycloneDX","specVersion":"1.5","metadata":{{"component":{{"name":"{name}"}}}},"components":[{{"purl":"pkg:npm/lodash@4.17.20"}}]}}"#
    );
    let url = format!("{}/api/v1/scans?name={name}", run.url("api"));
    let r = call("POST", &url, Some(token), Some(sbom.as_bytes()), &[]);
    assert_eq!(r.status, 201, "{name}: {}", r.text());
    let id = r.json()["id"].as_i64().unwrap();
    eventually(&format!("the verdict of {name}"), Duration::from_secs(30), || {
        let s = call("GET", &format!("{}/api/v1/scans/{id}", run.url("api")), Some(token), None, &[]).json();
        (!s["verdict"].is_null()).then_some(())
    });
}

#[test]
fn upgrade_to_this_release_and_back_keeps_every_record() {
    let keep = tempfile::Builder::new().prefix("stella-upgrade-").tempdir().unwrap();
    let previous = previous_binaries(keep.path());
    let current = stella_e2e::bin_dir();
    let objects = keep.path().join("objects");
    let pg = Postgres::start();

    // The previous release, seeded, with a scan of its own.
    let (code, log) = migrate(&previous, &pg);
    assert_eq!(code, 0, "the previous migrator: {log}");
    let run = Running::start(&previous, &pg, &objects);
    assert!(run.commits().iter().all(|c| c == PREVIOUS), "not the previous release: {:?}", run.commits());
    let token = login(&run);
    write(&run, &token, "before-upgrade");
    let (before, events) = state(&run, &token);
    assert!(before.ledger_valid && before.scans.contains(&"before-upgrade".to_string()), "{before:?}");
    run.stop();

    // Upgrade: migrations first (the new ones), then every server of this release.
    let (code, log) = migrate(&current, &pg);
    assert_eq!(code, 0, "this release's migrator: {log}");
    // The previous release had six migrations; this one applies the rest.
    let new = std::fs::read_dir(stella_e2e::root().join("services/migrator/migrations")).unwrap().count() - 6;
    assert!(log.contains(&format!("\"applied\":{new}")), "{new} migrations to apply: {log}");
    let run = Running::start(&current, &pg, &objects);
    let head = run.commits();
    assert!(head.iter().all(|c| c != PREVIOUS && c == &head[0]), "{head:?}");
    assert_eq!(
        call("GET", &format!("{}/api/v1/whoami", run.url("api")), Some(&token), None, &[]).status,
        200,
        "a session of the previous release must survive the upgrade"
    );
    let (after, events_after) = state(&run, &token);
    assert_eq!(after, before, "the upgrade changed what was there");
    assert_eq!(events_after, events);
    // The new release's own feature on the migrated schema: the console's sign-in and wizard.
    let form = "tenant=default&username=admin&password=".to_string() + stack::PASSWORD;
    let signed_in = call(
        "POST",
        &format!("{}/login", run.url("console")),
        None,
        Some(form.as_bytes()),
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let cookie = signed_in.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let home = call("GET", &format!("{}/", run.url("console")), None, None, &[("cookie", &cookie)]);
    assert_eq!(home.header("location"), Some("/welcome"));
    write(&run, &token, "after-upgrade");
    let (upgraded, _) = state(&run, &token);
    run.stop();

    // Back to the previous release. Its migrator refuses the newer schema (it predates this
    // release's tolerance), so the rollback skips it: its servers run on the newer schema.
    let (code, log) = migrate(&previous, &pg);
    assert_ne!(code, 0, "the previous migrator accepted a newer schema: {log}");
    assert!(log.contains("migration 7"), "{log}");
    let run = Running::start(&previous, &pg, &objects);
    let (back, _) = state(&run, &token);
    assert_eq!(back, upgraded, "the rollback lost or changed records");
    write(&run, &token, "after-rollback");
    assert!(state(&run, &token).0.ledger_valid);
    run.stop();

    // This release's migrator on a schema with a migration of a release after it (the next
    // rollback): it applies nothing, says so, and the seed still runs.
    pg.query(
        "INSERT INTO stella._sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from a newer release', true, '\\x00', 0)",
    );
    let (code, log) = migrate(&current, &pg);
    assert_eq!(code, 0, "this release's migrator refuses a newer schema: {log}");
    assert!(log.contains("a newer release") && log.contains("99990101000000"), "{log}");
}
