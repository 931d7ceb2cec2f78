//! Compilation: one `cargo build --release` per target triple, with the settings that make the
//! binaries identical whoever builds them, wherever the checkout is.
//!
//! - paths: the workspace, the target directory and `CARGO_HOME` are remapped to fixed names
//!   (`/stella`, `/stella/target`, `/cargo`), so no build path reaches a binary;
//! - dates and revision: `SOURCE_DATE_EPOCH` and `STELLA_GIT_COMMIT` from the plan feed the
//!   runtime's build script;
//! - static: musl targets, `crt-static`; the profile strips symbols and debug info.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::plan::Plan;
use crate::{shell, workspace};

/// Compiled binaries by (platform, binary name).
pub type Binaries = BTreeMap<(String, String), Arc<[u8]>>;

/// The environment of a reproducible build for one target.
pub fn build_env(plan: &Plan, triple: &str) -> Vec<(String, String)> {
    let root = shell::root();
    let target_dir = workspace::target_dir();
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    // The later prefix wins in rustc, so the more specific target directory comes last.
    let flags = [
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
        format!("--remap-path-prefix={}=/stella", root.display()),
        format!("--remap-path-prefix={}=/stella/target", target_dir.display()),
        "-Ctarget-feature=+crt-static".to_string(),
    ];
    let upper = triple.replace('-', "_").to_uppercase();
    let mut env = vec![
        ("CARGO_ENCODED_RUSTFLAGS".to_string(), flags.join("\u{1f}")),
        ("SOURCE_DATE_EPOCH".to_string(), plan.epoch.to_string()),
        ("STELLA_GIT_COMMIT".to_string(), plan.revision.clone()),
        // Crates that compile C (none today) must use the cross compiler too.
        (format!("CC_{}", triple.replace('-', "_")), cross_cc(triple).to_string()),
        (format!("CARGO_TARGET_{upper}_LINKER"), cross_cc(triple).to_string()),
    ];
    env.retain(|(_, v)| !v.is_empty());
    env
}

fn cross_cc(triple: &str) -> &'static str {
    match triple {
        "aarch64-unknown-linux-musl" => "aarch64-linux-gnu-gcc",
        _ => "",
    }
}

/// Builds every target of the plan (or makes the fake binaries) and reads the binaries.
pub fn compile(plan: &Plan) -> anyhow::Result<Binaries> {
    let mut out = Binaries::new();
    // The SBOMs read `cargo metadata --offline`, which needs every locked crate's source, not
    // only those the build compiles: fetch them first (a no-op when they are all present).
    shell::run(shell::cargo().args(["fetch", "--locked"])).context("fetching the locked crates")?;
    if !plan.fake_binaries {
        check_targets(plan)?;
    }
    for target in &plan.targets {
        let binaries: Vec<&str> =
            plan.images.iter().filter(|i| i.platforms.contains(&target.platform)).map(|i| i.binary.as_str()).collect();
        if plan.fake_binaries {
            for b in binaries {
                let bytes = format!("fake {b} for {}\n", target.platform).into_bytes();
                out.insert((target.platform.clone(), b.to_string()), bytes.into());
            }
            continue;
        }
        let mut cmd = shell::cargo();
        cmd.args(["build", "--release", "--locked", "--target", &target.triple]);
        for p in &target.packages {
            cmd.args(["--package", p]);
        }
        cmd.envs(build_env(plan, &target.triple));
        shell::run(&mut cmd).with_context(|| format!("compiling for {}", target.platform))?;
        let dir = workspace::target_dir().join(&target.triple).join("release");
        for b in binaries {
            let path = dir.join(b);
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.insert((target.platform.clone(), b.to_string()), bytes.into());
        }
    }
    Ok(out)
}

/// Compiles the static air-gap loader `stella-load` for `target` and returns its path. Its own
/// cargo invocation, not one more `--package` of the services' build: that would unify its
/// dependencies' features with theirs and change the services' binaries. The images step and the
/// bundle run the same command, so whichever comes second finds it fresh.
pub fn loader(plan: &Plan, target: &crate::plan::Target) -> anyhow::Result<std::path::PathBuf> {
    let mut cmd = shell::cargo();
    cmd.args(["build", "--release", "--locked", "--target", &target.triple]);
    cmd.args(["--package", "stella-distribution", "--bin", "stella-load"]);
    cmd.envs(build_env(plan, &target.triple));
    shell::run(&mut cmd).with_context(|| format!("compiling stella-load for {}", target.platform))?;
    Ok(workspace::target_dir().join(&target.triple).join("release/stella-load"))
}

/// The architecture part of a platform, as file names use it: `linux/arm64` gives `arm64`.
pub fn arch(platform: &str) -> &str {
    platform.rsplit('/').next().unwrap_or(platform)
}

/// Fails with the fix when a planned target's standard library is not installed (rustc's own
/// error says "can't find crate for `core`" after the build has started).
fn check_targets(plan: &Plan) -> anyhow::Result<()> {
    let sysroot = shell::output(std::process::Command::new("rustc").args(["--print", "sysroot"]))?;
    for target in &plan.targets {
        let dir = std::path::Path::new(sysroot.trim()).join("lib/rustlib").join(&target.triple);
        if !dir.exists() {
            anyhow::bail!(
                "the Rust target {} (for {}) is not installed in {}\n  help: run `rustup toolchain install` at the \
                 workspace root: it installs the toolchain and targets rust-toolchain.toml pins",
                target.triple,
                target.platform,
                sysroot.trim()
            );
        }
    }
    Ok(())
}
