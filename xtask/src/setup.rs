//! `cargo xtask setup`: installs what a fresh machine lacks, and nothing it already has.
//!
//! The toolchain and its targets come from `rust-toolchain.toml` through rustup. Where rustup
//! cannot download a target, Debian's `rustc-web` with `libstd-rust-web-dev:arm64` is the
//! documented fallback (see README), which this command does not switch to by itself: a
//! different compiler gives different binary digests, and that must be a conscious choice.

use std::process::Command;

use anyhow::{Context, bail};

use crate::shell;

pub struct Options {
    /// Also the tools the test suite runs.
    pub test: bool,
    pub dry_run: bool,
}

/// Debian packages the build needs: the cross linker for arm64 and musl's C toolchain for
/// crates that compile C.
pub const BUILD_PACKAGES: &[&str] = &["musl-tools", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];

/// Debian packages the tests run: a real PostgreSQL, the independent OCI checkers, qemu for
/// arm64 binaries.
pub const TEST_PACKAGES: &[&str] = &[
    "postgresql",
    "skopeo",
    "umoci",
    "oci-image-tool",
    "qemu-user-static",
    "docker-registry",
    "git",
    "zstd",
    "file",
    "apache2-utils",
    // The quickstart page's commands.
    "jq",
    "curl",
    // The console's browser test: headless Chromium driven over WebDriver.
    "chromium",
    "chromium-driver",
    "fonts-dejavu-core",
    // The shipped shell scripts are checked with it.
    "shellcheck",
];

/// Python tools the tests run, by the command (or `import:<module>`) they provide and the
/// pinned package.
pub const TEST_PIP: &[(&str, &str)] = &[
    ("pyspdxtools", "spdx-tools==0.8.5"),
    ("ntia-checker", "ntia-conformance-checker==6.0.0"),
    ("import:securesystemslib.dsse", "securesystemslib[crypto]==1.6.0"),
    // A strict parser of Sigstore bundles (protobuf-specs JSON): cosign v3's format.
    ("import:sigstore_models.bundle.v1", "sigstore-models==0.0.6"),
    ("import:nats.js", "nats-py==2.9.0"),
    ("import:helm_python", "helm-python-sdk==0.2.2"),
    ("kubernetes-validate", "kubernetes-validate==1.37.0"),
    ("zizmor", "zizmor==1.32.0"),
    ("check-jsonschema", "check-jsonschema==0.39.0"),
    // An S3 server on loopback for the export center's S3 store (no other runs here).
    ("moto_server", "moto[server]==5.2.1"),
    // An SMTP relay on loopback for the notification service's mail sink.
    ("import:aiosmtpd", "aiosmtpd==1.4.6"),
];

fn python_has(check: &str) -> bool {
    match check.strip_prefix("import:") {
        Some(module) => {
            Command::new("python3").args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success())
        }
        None => shell::have(check),
    }
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    toolchain(options.dry_run)?;
    if options.test {
        pip(options.dry_run)?;
    }
    let mut wanted: Vec<&str> = BUILD_PACKAGES.to_vec();
    if options.test {
        wanted.extend_from_slice(TEST_PACKAGES);
    }
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    if options.dry_run {
        return Ok(());
    }
    // As root, apt-get directly; otherwise through sudo when it needs no password (CI runners).
    // SAFETY: geteuid has no preconditions and no side effects.
    let root = unsafe { libc::geteuid() } == 0;
    let sudo = !root && Command::new("sudo").args(["-n", "true"]).output().is_ok_and(|o| o.status.success());
    if !root && !sudo {
        bail!(
            "these packages are missing and setup is neither root nor allowed sudo without a password: sudo apt-get install {}",
            missing.join(" ")
        );
    }
    let apt = || {
        let mut cmd = Command::new(if root { "apt-get" } else { "sudo" });
        if !root {
            cmd.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    shell::run(apt().args(["update", "-q"]))?;
    shell::run(apt().args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing))
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Makes sure the pinned toolchain and its targets are installed.
fn toolchain(dry_run: bool) -> anyhow::Result<()> {
    if !shell::have("rustup") {
        eprintln!("setup: rustup not found; using the cargo on PATH (see README for the Debian rustc-web fallback)");
        return Ok(());
    }
    let pinned =
        std::fs::read_to_string(shell::root().join("rust-toolchain.toml")).context("reading rust-toolchain.toml")?;
    let targets: Vec<String> = pinned
        .lines()
        .find(|l| l.trim_start().starts_with("targets"))
        .map(|l| l.split('"').skip(1).step_by(2).map(str::to_string).collect())
        .unwrap_or_default();
    let installed =
        shell::output(Command::new("rustup").args(["target", "list", "--installed"]).current_dir(shell::root()))
            .unwrap_or_default();
    let missing: Vec<&String> = targets.iter().filter(|t| !installed.lines().any(|l| l == t.as_str())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing the pinned toolchain and targets {missing:?}");
    if dry_run {
        return Ok(());
    }
    shell::run(Command::new("rustup").args(["toolchain", "install"])).context(
        "rustup could not install the pinned toolchain; see README, section `Offline toolchain`, for Debian's rustc-web",
    )
}

/// Installs the pinned Python checkers whose commands are missing.
fn pip(dry_run: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = TEST_PIP.iter().filter(|(check, _)| !python_has(check)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    if dry_run {
        return Ok(());
    }
    shell::run(
        Command::new("python3").args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(&missing),
    )
}
