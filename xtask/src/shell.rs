//! Running other programs: every command is echoed before it runs, and a failure names it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The workspace root: the nearest directory at or above the current one that holds
/// `images.toml` and `xtask/Cargo.toml`, else the one this xtask was built from. Found at run
/// time, so an xtask binary run in another checkout (an auditor's clone, a source archive, a
/// test's copy) works on that checkout's files, not on the ones it was compiled from.
pub fn root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let here = std::env::current_dir().ok();
        let is_root =
            |dir: &std::path::Path| dir.join("images.toml").is_file() && dir.join("xtask/Cargo.toml").is_file();
        here.as_deref()
            .and_then(|cwd| cwd.ancestors().find(|dir| is_root(dir)))
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ has a parent").to_path_buf()
            })
    })
    .clone()
}

/// Runs `cmd` (in the workspace root unless it names another directory), echoing it; fails
/// with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    eprintln!("$ {}", display(cmd));
    let status = cmd.status().with_context(|| format!("starting `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; fails with its stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", display(cmd), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `cargo` that runs xtask (`$CARGO`), without the variables cargo sets for the package it
/// runs (see [`is_per_package_cargo_var`]):
/// build scripts such as ring's and cc's rerun when one of them changes, so an xtask started
/// by `cargo xtask`, by a test, or as `target/release/xtask` would otherwise recompile every
/// static binary that links them (measured: 9 min for both platforms) although nothing changed.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    without_package_vars(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment the variables of [`is_per_package_cargo_var`] this process
/// has: for any command that may run cargo (a shell line, a test binary).
pub fn without_package_vars(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_per_package_cargo_var) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Whether `name` is one of the variables cargo sets for the one package it builds, runs or
/// tests (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, `OUT_DIR`, ...): they describe how this process
/// was started, not what it should build.
pub fn is_per_package_cargo_var(name: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_CFG_"].iter().any(|p| name.starts_with(p))
        || ["OUT_DIR", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR"].contains(&name)
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Stops when the checkout at `root` holds other xtask code than this binary was built from.
pub fn check_tree(root: &std::path::Path) -> anyhow::Result<()> {
    let built = env!("XTASK_SOURCE_DIGEST");
    let here = format!(
        "{:016x}",
        crate::tree::digest(&root.join("xtask")).with_context(|| format!("reading {}/xtask", root.display()))?
    );
    if here != built {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(std::path::Path::new("?"))
            .display()
            .to_string();
        anyhow::bail!(
            "this xtask binary was built from {from}, and {}/xtask holds other code: it would act on this checkout with \
             another checkout's code. Run `cargo xtask` here (cargo rebuilds it), or give this checkout its own \
             CARGO_TARGET_DIR",
            root.display()
        );
    }
    Ok(())
}
