//! `cargo xtask test`: the README's test command. Formatting, the images (whose static binaries
//! the end-to-end tests start as processes) beside the test build with clippy's lints, then every
//! test of the workspace: the test binaries side by side ([`binaries`]), then the doc tests.
//! Each step's time is printed.

mod binaries;

use anyhow::Context;

use crate::shell::{self, cargo};

pub struct Options {
    pub setup: bool,
    pub cargo_test_args: Vec<String>,
    /// How many test binaries run at once.
    pub jobs: usize,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let steps = Steps::new();
    steps.time("fmt", || {
        shell::run(cargo().args(["fmt", "--all", "--", "--check"])).context("formatting differs: run `cargo fmt --all`")
    })?;
    // A throwaway key made for this run signs the images, so the image tests verify real
    // signatures and the reproducibility test compares them too. Never a release key.
    let keys = crate::workspace::target_dir().join("test-signing-key");
    if !keys.join("cosign.key").exists() {
        crate::sign::keygen(&keys)?;
    }
    let key = keys.join("cosign.key");
    // The images take their revision from the last commit that changed an input, which a
    // shallow clone may not hold (the build then refuses): a CI checkout gets its history first.
    let shallow = shell::output(std::process::Command::new("git").args(["rev-parse", "--is-shallow-repository"]));
    if shallow.is_ok_and(|s| s.trim() == "true") {
        eprintln!("this checkout is a shallow clone: fetching its history, which the image revision needs");
        if let Err(e) = shell::run(std::process::Command::new("git").args(["fetch", "--quiet", "--unshallow"])) {
            eprintln!("warning: {e:#}; the images step will say what to do");
        }
    }
    let env = [(crate::sign::KEY_ENV, key.clone())];
    let lints = clippy()?;
    // The end-to-end tests run the services as real processes, the static binaries the images
    // ship (`stella_e2e::bin_dir`), and check the real images: build every image (the README's
    // main command). No debug build of the binaries: nothing runs it.
    //
    // The test build, which applies clippy's lints as it compiles ([`clippy`]), runs alongside
    // the setup and then the images: it needs nothing either makes (the host's C compiler is all
    // its build scripts use), and its cargo lock (`target/debug`) is not the images'
    // (`target/release`, `target/<triple>/release`). On a fresh machine the setup spends minutes
    // downloading and unpacking Debian and Python packages with the CPU idle, and a release build
    // of two platforms leaves a core idle in its serial stretches (single crates, links): both
    // are filled. Its output is kept and printed
    // when it ends, so the setup's and the images' progress stay readable.
    let (tests, images) = std::thread::scope(|scope| {
        let images = scope.spawn(|| {
            if options.setup {
                steps.time("setup", || {
                    crate::setup::run(&crate::setup::Options { test: true, dry_run: false })
                        .context("setting up this machine")
                })?;
            }
            steps.time("images", || shell::run(cargo().args(["xtask", "images"]).env(crate::sign::KEY_ENV, &key)))
        });
        let tests = steps.time("clippy+build", || binaries::build(&env, &lints));
        (tests, images.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the images step panicked"))))
    });
    images?;
    let tests = tests?;
    let count = tests.len();
    let outcomes = steps.time("test run", || {
        eprintln!("running {count} test binaries, {} at a time", options.jobs);
        Ok(binaries::run(tests, options.jobs, &options.cargo_test_args, &env))
    })?;
    let doc = steps.time("doc tests", || {
        let mut doc = cargo();
        // The same compiler as the test build, or the workspace's crates would compile again.
        doc.args(["test", "--workspace", "--locked", "--doc", "--"]).args(&options.cargo_test_args);
        doc.envs(lints.iter().map(|(k, v)| (k, v)));
        run_counting(&mut doc)
    })?;
    let mut slowest: Vec<&binaries::Outcome> = outcomes.iter().collect();
    slowest.sort_by_key(|o| std::cmp::Reverse(o.took));
    println!("test binaries, slowest first:");
    for o in &slowest {
        let mark = if o.ok { "" } else { "  FAILED" };
        println!(
            "  {:>7.1} s  {:>7.1} s CPU  {:<32} {:>4} passed{mark}",
            o.took.as_secs_f64(),
            o.cpu.as_secs_f64(),
            o.name,
            o.passed
        );
    }
    let failed_binaries: Vec<&str> = outcomes.iter().filter(|o| !o.ok).map(|o| o.name.as_str()).collect();
    let passed = outcomes.iter().map(|o| o.passed).sum::<u64>() + doc.0;
    let failed = outcomes.iter().map(|o| o.failed).sum::<u64>() + doc.1;
    let ok = failed_binaries.is_empty() && doc.2;
    // One closing line for the whole run: cargo prints one per test binary, the last of which
    // is usually a doc-test run with nothing in it.
    println!("summary: {passed} passed, {failed} failed");
    steps.print();
    if !ok {
        anyhow::bail!(
            "tests failed in: {}",
            if failed_binaries.is_empty() { "the doc tests".into() } else { failed_binaries.join(", ") }
        );
    }
    Ok(())
}

/// Clippy's lints (`-D warnings`, as `cargo clippy --all-targets -- -D warnings` checks them),
/// applied by the build of the tests itself: cargo compiles the workspace's own crates with
/// `clippy-driver` (rustc with clippy's lints registered, which compiles as rustc does) as
/// `RUSTC_WORKSPACE_WRAPPER`, the way `cargo clippy` runs it, and the third-party crates with
/// rustc. A separate `cargo clippy` is a check build of every dependency besides the test build's
/// full one: measured, 340 s of two cores' time per CI run, for the same lints. `cargo test`
/// compiles every target `--all-targets` names here (libraries, binaries in test mode, tests; the
/// workspace has no benches or examples), so no code goes unlinted.
fn clippy() -> anyhow::Result<Vec<(&'static str, std::ffi::OsString)>> {
    let cargo = std::path::PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let beside = cargo.with_file_name("clippy-driver");
    let driver = if beside.is_file() {
        beside
    } else {
        let which = shell::output(std::process::Command::new("rustup").args(["which", "clippy-driver"]))
            .context("finding clippy-driver: install clippy (`rustup component add clippy`)")?;
        std::path::PathBuf::from(which.trim())
    };
    Ok(vec![
        ("RUSTC_WORKSPACE_WRAPPER", driver.into_os_string()),
        // How cargo-clippy hands its arguments to the driver (`-D warnings`).
        ("CLIPPY_ARGS", "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__".into()),
    ])
}

/// Wall-clock time of each step, printed as each ends and again as a table at the end, so a
/// CI log says where its minutes went. Steps may overlap (clippy and the test build run
/// alongside the images), so each is shown with the time it began, and the total is the run's
/// wall clock, not the sum.
struct Steps {
    start: std::time::Instant,
    done: std::sync::Mutex<Vec<(&'static str, std::time::Duration, std::time::Duration)>>,
}

impl Steps {
    fn new() -> Self {
        Steps { start: std::time::Instant::now(), done: Default::default() }
    }

    fn time<T>(&self, name: &'static str, step: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let began = self.start.elapsed();
        let start = std::time::Instant::now();
        let result = step();
        let took = start.elapsed();
        eprintln!("step {name}: {:.1} s{}", took.as_secs_f64(), if result.is_err() { " (failed)" } else { "" });
        self.done.lock().expect("steps").push((name, began, took));
        result
    }

    fn print(&self) {
        let mut done = self.done.lock().expect("steps").clone();
        done.sort_by_key(|(_, began, _)| *began);
        for (name, began, took) in &done {
            println!("step {name:<10} {:>7.1} s  (began at {:>6.1} s)", took.as_secs_f64(), began.as_secs_f64());
        }
        println!("step {:<10} {:>7.1} s  (wall clock)", "total", self.start.elapsed().as_secs_f64());
    }
}

/// Runs `cargo test`, echoing its output, and adds up its `test result:` lines.
fn run_counting(cmd: &mut std::process::Command) -> anyhow::Result<(u64, u64, bool)> {
    use std::io::BufRead;
    cmd.current_dir(shell::root()).stdout(std::process::Stdio::piped());
    eprintln!("$ cargo test --workspace --locked");
    let mut child = cmd.spawn().context("starting cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        let (p, f) = tally(&line);
        passed += p;
        failed += f;
    }
    Ok((passed, failed, child.wait()?.success()))
}

/// Passed and failed tests of one line of a test binary's output: its `test result:` line
/// (`ok. 3 passed; 0 failed; ...`), else none.
fn tally(line: &str) -> (u64, u64) {
    match line.strip_prefix("test result: ") {
        Some(rest) => (count(rest, " passed"), count(rest, " failed")),
        None => (0, 0),
    }
}

/// The number before `label` in `ok. 3 passed; 0 failed; ...`.
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
