//! Running the workspace's test binaries side by side instead of one after another.
//!
//! `cargo test` runs its test binaries in sequence, so a binary that waits on Docker, a
//! PostgreSQL start or a second clone's compile leaves the machine idle while the next waits
//! its turn. Here every test binary is built once (`cargo test --no-run`), then up to `jobs` of
//! them run at once, the longest first; each one's output is kept whole and printed when it
//! ends, with its time, so a log reads binary by binary and says where the minutes went.
//! The binaries are safe to overlap: their ports come from per-process blocks, their Compose
//! projects, clusters and temporary directories are named by process.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::shell;

/// One test binary: what cargo built and where its package lives (the directory cargo test
/// runs it in).
#[derive(Clone, Debug)]
pub struct Binary {
    /// `package::target`, e.g. `stella-e2e::quickstart`.
    pub name: String,
    pub executable: PathBuf,
    pub package_dir: PathBuf,
}

/// What one binary did.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub passed: u64,
    pub failed: u64,
    pub ok: bool,
    pub took: Duration,
    /// User plus system CPU time of the binary and every process it waited for (servers,
    /// PostgreSQL, tools); not Docker's containers, which are the engine's children.
    pub cpu: Duration,
}

/// Binaries known to run longest, started first so they overlap the rest (the others keep
/// cargo's order). A name missing here costs only some overlap. Figures of a
/// measured run (clean clone, 2 cores, 3 at a time; wall / CPU seconds): reproducible 707 / 665
/// (a cold release build in a second clone), upgrade 245 / 172, bundle 148 / 110, docs 135 / 22,
/// quickstart 198 / 47, sbom 84 / 47, security 31 / 16, signing 53 / 37, helm 54 / 28, workers
/// 43 / 11. The first runs at full priority; the others yield to it ([`YIELD`]).
const LONGEST_FIRST: &[&str] = &[
    "stella-e2e::reproducible",
    "stella-e2e::bundle",
    "stella-e2e::docs",
    "stella-e2e::quickstart",
    "stella-e2e::upgrade",
    "stella-e2e::sbom",
    "stella-e2e::security",
    "xtask::signing",
    "stella-e2e::helm",
    "stella-e2e::workers",
];

/// Builds every test target of the workspace without running it, with clippy's lints
/// (`lints`, see [`super::clippy`]); returns the binaries.
pub fn build(env: &[(&str, PathBuf)], lints: &[(&str, std::ffi::OsString)]) -> anyhow::Result<Vec<Binary>> {
    let mut cmd = shell::cargo();
    cmd.args(["test", "--workspace", "--locked", "--no-run", "--message-format=json-render-diagnostics"])
        .current_dir(shell::root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.envs(lints.iter().map(|(k, v)| (k, v)));
    eprintln!("$ cargo test --workspace --locked --no-run   (clippy-driver compiles the workspace's crates)");
    // Its compile log is printed when it ends: it runs alongside the images' build.
    let out = cmd.output().context("starting cargo test --no-run")?;
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim_end());
    if !out.status.success() {
        anyhow::bail!("building the tests failed (`cargo test --workspace --no-run`)");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else { continue };
        let package = msg["package_id"].as_str().unwrap_or_default();
        let manifest = PathBuf::from(msg["manifest_path"].as_str().unwrap_or_default());
        let target = msg["target"]["name"].as_str().unwrap_or_default();
        binaries.push(Binary {
            name: format!("{}::{target}", package_name(package, &manifest)),
            executable: executable.into(),
            package_dir: manifest.parent().map(PathBuf::from).unwrap_or_else(shell::root),
        });
    }
    binaries.sort_by_key(|b| LONGEST_FIRST.iter().position(|n| *n == b.name).unwrap_or(LONGEST_FIRST.len()));
    Ok(binaries)
}

/// The package name: the manifest's directory's `name` from the package id
/// (`path+file:///…/tests#stella-e2e@0.1.0`, or `…/xtask#0.1.0` where the name is the directory).
fn package_name(id: &str, manifest: &std::path::Path) -> String {
    let fragment = id.rsplit_once('#').map(|(_, f)| f).unwrap_or(id);
    match fragment.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => {
            manifest.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        }
    }
}

/// Runs `binaries`, `jobs` at a time, each with `args` and `env`; prints each one's output as
/// it ends.
pub fn run(binaries: Vec<Binary>, jobs: usize, args: &[String], env: &[(&str, PathBuf)]) -> Vec<Outcome> {
    let queue = Mutex::new(binaries.into_iter().collect::<VecDeque<_>>());
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    // The guard must be dropped before the binary runs: in `while let` the
                    // scrutinee's temporary guard lives through the body, and held the queue
                    // while each binary ran, so "3 at a time" ran one at a time.
                    let next = queue.lock().expect("queue").pop_front();
                    let Some(binary) = next else { break };
                    let outcome = run_one(&binary, args, env);
                    outcomes.lock().expect("outcomes").push(outcome);
                }
            });
        }
    });
    outcomes.into_inner().expect("outcomes")
}

fn run_one(binary: &Binary, args: &[String], env: &[(&str, PathBuf)]) -> Outcome {
    let start = Instant::now();
    eprintln!("start {}", binary.name);
    let mut cmd = Command::new(&binary.executable);
    // In the package's directory, as `cargo test` runs it, but without the variables cargo sets
    // for one package (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`; no test reads them at run time): a
    // test that runs `cargo xtask` would otherwise give ring's build script other values than
    // the images step did, and cargo would rebuild xtask (and back, for the next test).
    shell::without_package_vars(cmd.args(args).current_dir(&binary.package_dir));
    for (k, v) in env {
        cmd.env(k, v);
    }
    if binary.name != LONGEST_FIRST[0] {
        yield_to_the_longest(&mut cmd);
    }
    // Both streams into one buffer, in the order written: a panic's message stays beside the
    // test that printed it.
    let (text, ok, cpu) = match capture(&mut cmd) {
        Ok(done) => done,
        Err(e) => (format!("could not run {}: {e:#}\n", binary.executable.display()), false, Duration::ZERO),
    };
    let took = start.elapsed();
    let (passed, failed) = text.lines().map(super::tally).fold((0, 0), |(p, f), (a, b)| (p + a, f + b));
    // One call, so two binaries that end together do not interleave.
    println!(
        "==== {} ({:.1} s, {:.1} s of CPU)\n{}",
        binary.name,
        took.as_secs_f64(),
        cpu.as_secs_f64(),
        text.trim_end()
    );
    Outcome { name: binary.name.clone(), passed, failed, ok, took, cpu }
}

/// How much lower the other binaries' CPU priority is than the longest one's.
const YIELD: libc::c_int = 5;

/// Lowers the priority of `cmd` (and of everything it starts: servers, PostgreSQL, tools) by
/// [`YIELD`]. The test run is CPU-bound on two cores and ends when the longest binary does (the
/// reproducibility rebuild, a cold release compile); the others mostly wait on Docker and
/// PostgreSQL, so they take the cycles it leaves rather than stretch it. Docker's containers are
/// the engine's children and keep their priority, so timing checks on containers are unchanged.
fn yield_to_the_longest(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: `nice` is async-signal-safe, and the closure touches nothing else of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // The result is not checked: raising one's own niceness needs no privilege, and a
            // binary left at normal priority would only be slower, not wrong.
            libc::nice(YIELD);
            Ok(())
        });
    }
}

/// Runs `cmd` with stdout and stderr into one temporary file; returns the text, success and
/// the CPU time it used. The child is reaped with `wait4`, which alone gives one child's
/// resource use while other binaries run alongside (`getrusage` sums all children).
fn capture(cmd: &mut Command) -> anyhow::Result<(String, bool, Duration)> {
    use std::io::{Read, Seek};
    use std::os::unix::process::ExitStatusExt;
    let file = tempfile::tempfile().context("a temporary file for the output")?;
    cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file.try_clone()?);
    let child = cmd.spawn().context("starting the test binary")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value, and `wait4` writes only into the two
    // pointers it is given, which outlive the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        // SAFETY: as above; `pid` is our own child, not yet waited for.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    if reaped != pid {
        anyhow::bail!("waiting for the test binary: {}", std::io::Error::last_os_error());
    }
    // Reaped here: dropping the handle neither waits nor kills.
    drop(child);
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    let mut file = file;
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), std::process::ExitStatus::from_raw(status).success(), cpu))
}

#[cfg(test)]
mod tests {
    #[test]
    fn package_names_come_from_the_id_or_the_directory() {
        let m = std::path::Path::new("/w/tests/Cargo.toml");
        assert_eq!(super::package_name("path+file:///w/tests#stella-e2e@0.1.0", m), "stella-e2e");
        assert_eq!(
            super::package_name("path+file:///w/xtask#0.1.0", std::path::Path::new("/w/xtask/Cargo.toml")),
            "xtask"
        );
    }
}
