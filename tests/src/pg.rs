//! A real PostgreSQL server for one test: its own cluster in a temporary directory, on a free
//! loopback port, with password authentication, stoppable and restartable.
//!
//! PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` user
//! (Debian's `postgresql` package creates it) and its commands run through `runuser`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    pub password: String,
}

/// The directory holding `initdb` and `pg_ctl` (Debian keeps them out of PATH).
fn pg_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates.into_iter().rev().find(|p| p.join("initdb").exists()).expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: install the `postgresql` package \
         (.ci/run does)",
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and no side effects.
    unsafe { libc::geteuid() == 0 }
}

impl Postgres {
    /// Creates and starts a cluster; user `stella`, database `stella`, a random password.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("stella-pg-").tempdir().expect("tempdir");
        let bin = pg_bin();
        let password = format!("pw-{:x}", rand_u64());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).expect("writing pwfile");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let pg = Postgres { dir, bin, port: crate::free_port(), password };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "stella",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        pg.resume();
        let status = Command::new("psql")
            .args(["-h", pg.dir.path().to_str().unwrap(), "-p", &pg.port.to_string(), "-U", "stella", "-d", "postgres"])
            .args(["-qc", "CREATE DATABASE stella"])
            .status()
            .expect("running psql");
        assert!(status.success(), "creating database stella");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server tool, run as `postgres` when we are root.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://stella:<password>@127.0.0.1:<port>/stella`
    pub fn url(&self) -> String {
        format!("postgres://stella:{}@127.0.0.1:{}/stella", self.password, self.port)
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server again on the same port.
    pub fn resume(&self) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"],
        );
    }

    /// Runs SQL as the `stella` user and returns psql's unaligned output.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Like [`Postgres::query`], but a failing statement is an `Err` with psql's message.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        self.try_query_as("stella", sql)
    }

    /// [`Postgres::try_query`] as another role (over the local socket).
    pub fn try_query_as(&self, role: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h", self.dir.path().to_str().unwrap(), "-p", &self.port.to_string(), "-U", role, "-d", "stella"])
            .args(["-v", "ON_ERROR_STOP=1", "-Atqc", sql])
            .output()
            .expect("running psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Holds PostgreSQL's advisory lock on `hashtext(key)` in a session of its own until the
    /// guard drops. Returns once the lock is held: the server said so.
    pub fn hold_advisory_lock(&self, key: &str) -> HeldLock {
        use std::io::{BufRead, Write};
        let mut child = Command::new("psql")
            .args([
                "-h",
                self.dir.path().to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "stella",
                "-d",
                "stella",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-Atq"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running psql");
        let sql = format!("SELECT pg_advisory_lock(hashtext('{key}')), 'held';\n");
        child.stdin.as_mut().unwrap().write_all(sql.as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.trim_end().ends_with("|held"), "the advisory lock on {key} was not taken: {line}");
        HeldLock(child)
    }

    /// Runs `stella-migrator` against this database with `args` and `env` (besides the URL);
    /// returns its exit code and everything it printed.
    pub fn migrate(&self, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
        self.migrate_with(&crate::bin_path("stella-migrator"), args, env)
    }

    /// [`Postgres::migrate`] with another build's migrator (the upgrade test's previous release).
    pub fn migrate_with(&self, migrator: &Path, args: &[&str], env: &[(&str, String)]) -> (i32, String) {
        let mut all = vec![("STELLA_DATABASE_URL", self.url())];
        all.extend(env.iter().cloned());
        let mut proc = crate::Proc::spawn(migrator, args, &all);
        let status = proc.wait_for(std::time::Duration::from_secs(60)).expect("the migrator finishes");
        (status.code().unwrap_or(-1), proc.stdout() + &proc.stderr())
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A password that differs between test runs; not for cryptography.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

/// A psql session holding an advisory lock; ending it releases the lock.
pub struct HeldLock(std::process::Child);

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
