//! The services of the workspace: every `stella-*` binary of a package under `services/`,
//! described by the binary itself (`describe --json`), so nothing lists them by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::shell;

/// A service binary, as it describes itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInfo {
    pub binary: String,
    pub service: String,
    /// `server` or `job`.
    pub kind: String,
    pub default_port: Option<u16>,
    pub aggregation_only: bool,
    pub settings: Vec<serde_json::Value>,
}

impl ServiceInfo {
    pub fn is_server(&self) -> bool {
        self.kind == "server"
    }
}

/// The names of every `stella-*` binary of a package under `services/`, sorted.
pub fn service_binaries() -> anyhow::Result<Vec<String>> {
    let root = shell::root();
    let text = shell::output(
        shell::cargo().args(["metadata", "--no-deps", "--format-version", "1", "--offline"]).current_dir(&root),
    )?;
    let meta: serde_json::Value = serde_json::from_str(&text).context("parsing cargo metadata")?;
    let services = root.join("services");
    let mut bins = Vec::new();
    for package in meta["packages"].as_array().context("cargo metadata has no packages")? {
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
        if !manifest.starts_with(&services) {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            let name = target["name"].as_str().unwrap_or_default();
            let is_bin = target["kind"].as_array().into_iter().flatten().any(|k| k == "bin");
            if is_bin && name.starts_with("stella-") {
                bins.push(name.to_string());
            }
        }
    }
    bins.sort();
    Ok(bins)
}

/// Every service, described by its binary in `bin_dir`.
pub fn services(bin_dir: &Path) -> anyhow::Result<Vec<ServiceInfo>> {
    service_binaries()?.iter().map(|binary| describe(&bin_dir.join(binary))).collect()
}

/// Runs `<binary> describe --json`.
pub fn describe(binary: &Path) -> anyhow::Result<ServiceInfo> {
    if !binary.exists() {
        bail!("{} is missing: build the services first (`cargo build --workspace --bins`)", binary.display());
    }
    let text = shell::output(Command::new(binary).args(["describe", "--json"]))?;
    serde_json::from_str(&text).with_context(|| format!("parsing `{} describe --json`", binary.display()))
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| shell::root().join("target"))
}
