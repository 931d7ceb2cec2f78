//! Build metadata for `/version`: the revision and the source epoch, never the clock.
//!
//! `cargo xtask images` sets `STELLA_GIT_COMMIT` and `SOURCE_DATE_EPOCH` from the plan; a plain
//! `cargo build` asks git the same question the plan does (the last commit that changed an input
//! of the images: everything but `deploy/`, `docs/`, `tests/`, `xtask/tests/`, the deployment generator,
//! benchmarks, test runner and chart packaging of xtask, the release key, CI files and Markdown), and falls back to
//! `unknown` and 0 outside a checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Keep in step with `xtask::plan::NOT_INPUTS`.
const INPUTS: &[&str] = &[
    "--",
    ".",
    ":(exclude)deploy",
    ":(exclude)docs",
    ":(exclude).github",
    ":(exclude).ci",
    ":(exclude)*.md",
    ":(exclude)tests",
    ":(exclude)xtask/tests",
    ":(exclude)xtask/src/deploy",
    ":(exclude)xtask/src/bench",
    ":(exclude)xtask/src/test",
    ":(exclude)xtask/src/chart.rs",
    ":(exclude)release",
];

fn last_input_commit(format: &str) -> Option<String> {
    let mut args = vec!["log", "-1", format];
    args.extend_from_slice(INPUTS);
    git(&args).filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=STELLA_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Only a plain `cargo build` asks git, so only it watches HEAD. Under `cargo xtask images`
    // the two variables say everything, and watching HEAD would recompile every service for
    // both platforms on each commit, even one that changes no input (measured: 137 s).
    let pinned = std::env::var_os("STELLA_GIT_COMMIT").is_some() && std::env::var_os("SOURCE_DATE_EPOCH").is_some();
    if !pinned && let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
        if let Some(path) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("STELLA_GIT_COMMIT")
        .ok()
        .or_else(|| last_input_commit("--format=%H"))
        .unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| last_input_commit("--format=%ct"))
        .and_then(|e| e.parse::<u64>().ok())
        .unwrap_or(0);
    println!("cargo:rustc-env=STELLA_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=STELLA_BUILD_EPOCH={epoch}");
}
