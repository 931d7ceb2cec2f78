//! The support images (PostgreSQL, Redis, NATS: built from pinned Debian packages), started in
//! the Docker engine here as the quickstart runs them (read-only root, uid 65532, no
//! capabilities, only the data volume writable) and used for real with clients we did not
//! write: `psql`, `redis-cli`, the `nats-py` client.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use stella_e2e::output;
use xtask::assemble::Built;

fn layout() -> PathBuf {
    xtask::images::default_out()
}

/// The images of the support package, by catalog, loaded into Docker once per test binary.
fn support_images() -> Vec<String> {
    static LOADED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let root = stella_e2e::root();
            let bins = xtask::workspace::package_binaries().unwrap();
            let catalog = xtask::catalog::load(&root.join("images.toml"), &bins).unwrap();
            let names: Vec<String> = catalog
                .images
                .iter()
                .filter(|(_, i)| i.kind == xtask::catalog::Kind::Support)
                .map(|(n, _)| n.clone())
                .collect();
            let mut built = Built::read(&layout()).expect("the images are built (cargo xtask test builds them)");
            built.images.retain(|i| names.contains(&i.name));
            assert_eq!(built.images.len(), names.len(), "not every support image was built");
            let refs = xtask::load::load(&layout(), &built).expect("docker load");
            assert_eq!(refs.len(), names.len() * built.tags.len());
            built.images.iter().map(|i| format!("{}:{}", i.repository, built.tags[0])).collect()
        })
        .clone()
}

fn reference(name: &str) -> String {
    support_images()
        .into_iter()
        .find(|r| r.rsplit('/').next().is_some_and(|n| n.starts_with(&format!("{name}:"))))
        .unwrap_or_else(|| panic!("no support image {name}"))
}

/// The command's standard output, trimmed; it must succeed.
fn run(cmd: &mut Command) -> String {
    stella_e2e::run(cmd).trim().to_string()
}

/// A container and its named volume, removed when dropped.
struct Container {
    id: String,
    volume: String,
}

impl Container {
    /// `docker run` hardened as the quickstart runs it, with `port` published on loopback.
    fn start(image: &str, volume: &str, mount: &str, port: u16, extra: &[&str]) -> Container {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--read-only", "--user", "65532:65532", "--cap-drop", "ALL"]);
        cmd.args(["--security-opt", "no-new-privileges:true", "--health-interval", "1s"]);
        cmd.args(["-v", &format!("{volume}:{mount}"), "-p", &format!("127.0.0.1::{port}")]);
        cmd.args(extra).arg(image);
        Container { id: run(&mut cmd), volume: volume.to_string() }
    }

    fn host_port(&self, port: u16) -> u16 {
        let text = run(Command::new("docker").args(["port", &self.id, &format!("{port}/tcp")]));
        let line = text.lines().find(|l| l.starts_with("127.0.0.1:")).unwrap_or_else(|| panic!("no port: {text}"));
        line.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn logs(&self) -> String {
        let out = output(Command::new("docker").args(["logs", &self.id]));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Waits until Docker reports the image's own HEALTHCHECK healthy.
    fn wait_healthy(&self) {
        for _ in 0..120 {
            let s = run(Command::new("docker").args([
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Health.Status}}",
                &self.id,
            ]));
            if s == "running healthy" {
                return;
            }
            assert!(s.starts_with("running"), "container stopped ({s}); logs:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("not healthy after 60 s; logs:\n{}", self.logs());
    }

    fn exec(&self, args: &[&str]) -> Output {
        output(Command::new("docker").arg("exec").arg(&self.id).args(args))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.id]).output();
        let _ = Command::new("docker").args(["volume", "rm", "-f", &self.volume]).output();
    }
}

/// A secret file the container's user can read, under `dir`.
fn secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

#[test]
fn every_support_image_is_tested_here() {
    let mut names: Vec<String> =
        support_images().iter().map(|r| r.rsplit('/').next().unwrap().split(':').next().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["stella-nats", "stella-postgres", "stella-redis"], "a support image this file does not test");
}

fn psql(port: u16, password: &str, sql: &str) -> Output {
    output(
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "stella", "-tAX", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5"),
    )
}

#[test]
fn postgres_initialises_with_the_secret_password_and_keeps_its_data_across_a_restart() {
    let image = reference("stella-postgres");
    let dir = tempfile::tempdir().unwrap();
    let volume = format!("stella-test-pgdata-{}", std::process::id());

    // Without a password file, an empty volume is not initialised: exit 78 naming the variable.
    let refused = output(Command::new("docker").args(["run", "--rm", "--read-only", "--user", "65532:65532"]).args([
        "-v",
        &format!("{volume}-empty:/var/lib/postgresql/data"),
        &image,
    ]));
    let _ = Command::new("docker").args(["volume", "rm", "-f", &format!("{volume}-empty")]).output();
    assert_eq!(refused.status.code(), Some(78), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("POSTGRES_PASSWORD_FILE"), "{refused:?}");

    let password = format!("pg-{}-secret", std::process::id());
    let file = secret(dir.path(), "pg-password", &password);
    let mount = format!("{}:/run/secrets/postgres-password:ro", file.display());
    let pg = Container::start(
        &image,
        &volume,
        "/var/lib/postgresql/data",
        5432,
        &["-v", &mount, "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password", "-e", "POSTGRES_DB=stella"],
    );
    pg.wait_healthy();
    let port = pg.host_port(5432);
    let created =
        psql(port, &password, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives'); SELECT current_user");
    assert!(created.status.success(), "{created:?}\n{}", pg.logs());
    assert_eq!(String::from_utf8_lossy(&created.stdout).lines().last(), Some("postgres"));
    let wrong = psql(port, "not-the-password", "SELECT 1");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"), "{wrong:?}");

    run(Command::new("docker").args(["restart", "-t", "20", &pg.id]));
    pg.wait_healthy();
    let port = pg.host_port(5432);
    let read = psql(port, &password, "SELECT v FROM kept");
    assert!(read.status.success(), "{read:?}\n{}", pg.logs());
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "survives");
    let logs = pg.logs();
    assert_eq!(logs.matches("initialising a new cluster").count(), 1, "initialised twice:\n{logs}");
    assert!(!logs.contains(&password), "the password appears in the logs");
}

#[test]
fn redis_answers_ping_and_set_get_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let password = format!("redis-{}-secret", std::process::id());
    let file = secret(dir.path(), "redis-password", &password);
    let mount = format!("{}:/run/secrets/redis-password:ro", file.display());
    let redis = Container::start(
        &reference("stella-redis"),
        &format!("stella-test-redis-{}", std::process::id()),
        "/data",
        6379,
        &["-v", &mount, "-e", "REDIS_PASSWORD_FILE=/run/secrets/redis-password"],
    );
    redis.wait_healthy();
    let cli = |args: &[&str]| {
        let mut all = vec!["redis-cli", "--no-auth-warning", "-a", &password];
        all.extend_from_slice(args);
        let out = redis.exec(&all);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "stella:test", "value-1"]), "OK");
    assert_eq!(cli(&["GET", "stella:test"]), "value-1");
    assert_eq!(cli(&["CONFIG", "GET", "appendonly"]), "appendonly\nyes");
    let anonymous = redis.exec(&["redis-cli", "PING"]);
    assert!(String::from_utf8_lossy(&anonymous.stdout).contains("NOAUTH"), "{anonymous:?}");
    // The password reached Redis through standard input: not in its command line.
    let pid = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &redis.id]));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).starts_with("/usr/bin/redis-server"), "{cmdline:?}");
    assert!(!String::from_utf8_lossy(&cmdline).contains(&password));
}

#[test]
fn nats_round_trips_core_and_jetstream_messages() {
    let nats = Container::start(
        &reference("stella-nats"),
        &format!("stella-test-nats-{}", std::process::id()),
        "/data",
        4222,
        &[],
    );
    nats.wait_healthy();
    let script = stella_e2e::root().join("tests/fixtures/nats_roundtrip.py");
    let url = format!("nats://127.0.0.1:{}", nats.host_port(4222));
    let out = output(Command::new("python3").arg(&script).arg(&url));
    assert!(out.status.success(), "{out:?}\n{}", nats.logs());
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["core"], "core-hello");
    assert_eq!(reply["stream"], "STELLA_TEST");
    assert_eq!(reply["jetstream"], serde_json::json!(["js-hello"]));
    assert_eq!(reply["stored"], 1);
    assert!(nats.logs().contains("Starting JetStream"), "JetStream is not enabled");
}
