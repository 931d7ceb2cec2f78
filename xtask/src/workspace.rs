//! The services of the workspace: every `stella-*` binary of a package under `services/`,
//! described by the binary itself (`describe --json`), so nothing lists them by hand.

use std::collections::{BTreeMap, BTreeSet};
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

/// Every workspace package with the binaries it provides, with the directory of its manifest.
pub fn packages() -> anyhow::Result<Vec<(String, PathBuf, BTreeSet<String>)>> {
    let root = shell::root();
    let text = shell::output(
        shell::cargo().args(["metadata", "--no-deps", "--format-version", "1", "--offline"]).current_dir(&root),
    )?;
    let meta: serde_json::Value = serde_json::from_str(&text).context("parsing cargo metadata")?;
    let mut out = Vec::new();
    for package in meta["packages"].as_array().context("cargo metadata has no packages")? {
        let name = package["name"].as_str().unwrap_or_default().to_string();
        let dir = Path::new(package["manifest_path"].as_str().unwrap_or_default()).parent().map(Path::to_path_buf);
        let bins = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["kind"].as_array().into_iter().flatten().any(|k| k == "bin"))
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        out.push((name, dir.unwrap_or_default(), bins));
    }
    out.sort();
    Ok(out)
}

/// Binaries by package, for validating `images.toml`.
pub fn package_binaries() -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    Ok(packages()?.into_iter().map(|(name, _, bins)| (name, bins)).collect())
}

/// The names of every `stella-*` binary of a package under `services/`, sorted.
pub fn service_binaries() -> anyhow::Result<Vec<String>> {
    let services = shell::root().join("services");
    let mut bins: Vec<String> = packages()?
        .into_iter()
        .filter(|(_, dir, _)| dir.starts_with(&services))
        .flat_map(|(_, _, bins)| bins)
        .filter(|b| b.starts_with("stella-"))
        .collect();
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
