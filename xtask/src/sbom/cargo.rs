//! The crate side of the SBOMs: the resolved dependency graph of a target (`cargo metadata
//! --filter-platform`, with `Cargo.lock`'s checksums) and, per package, the closure `cargo tree`
//! resolves for the packages built together. Both are cached by the content of `Cargo.lock` and
//! every workspace manifest, which is all they read.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::Context;
use serde_json::Value;

use super::license;
use crate::shell;

/// One crate of the resolved graph.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Crate {
    pub name: String,
    pub version: String,
    pub source: Option<String>,
    /// The declared license as a normalized SPDX expression, or NOASSERTION.
    pub license: String,
    pub authors: Vec<String>,
    pub repository: Option<String>,
    pub checksum: Option<String>,
    /// (dependency id, is a build dependency)
    pub deps: Vec<(String, bool)>,
}

/// The resolved dependency graph for one target triple.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub crates: BTreeMap<String, Crate>,
}

/// Reads the graph with `cargo metadata --filter-platform <triple>` and the checksums of
/// `Cargo.lock`.
pub fn graph(triple: &str) -> anyhow::Result<Graph> {
    cached(&format!("graph-v1 {triple}"), || graph_uncached(triple))
}

/// `make()`'s result, cached under `target/stella-cache/sbom` by `what` and the content of
/// Cargo.lock and every workspace manifest (all that `cargo metadata` and `cargo tree` read).
fn cached<T: serde::Serialize + serde::de::DeserializeOwned>(
    what: &str,
    make: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let root = shell::root();
    let mut key = what.as_bytes().to_vec();
    key.extend(std::fs::read(root.join("Cargo.lock"))?);
    for (_, dir, _) in crate::workspace::packages()? {
        key.extend(std::fs::read(dir.join("Cargo.toml")).unwrap_or_default());
    }
    let cache = crate::workspace::target_dir().join("stella-cache/sbom");
    let path = cache.join(&crate::layer::sha256(&key)[7..]);
    if let Some(found) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        return Ok(found);
    }
    let made = make()?;
    std::fs::create_dir_all(&cache)?;
    crate::oci::write_atomic(&path, &serde_json::to_vec(&made)?)?;
    Ok(made)
}

fn graph_uncached(triple: &str) -> anyhow::Result<Graph> {
    let root = shell::root();
    let text = shell::output(
        shell::cargo()
            .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", triple])
            .current_dir(&root),
    )?;
    let meta: Value = serde_json::from_str(&text).context("parsing cargo metadata")?;
    let lock: toml::Table = std::fs::read_to_string(root.join("Cargo.lock"))?.parse().context("parsing Cargo.lock")?;
    let mut checksums = BTreeMap::new();
    for p in lock.get("package").and_then(|p| p.as_array()).into_iter().flatten() {
        if let (Some(n), Some(v), Some(c)) = (p.get("name"), p.get("version"), p.get("checksum")) {
            checksums.insert(
                (n.as_str().unwrap_or_default(), v.as_str().unwrap_or_default()),
                c.as_str().unwrap_or_default(),
            );
        }
    }
    let mut crates = BTreeMap::new();
    for p in meta["packages"].as_array().context("no packages")? {
        let (name, version) = (p["name"].as_str().unwrap_or_default(), p["version"].as_str().unwrap_or_default());
        crates.insert(
            p["id"].as_str().unwrap_or_default().to_string(),
            Crate {
                name: name.into(),
                version: version.into(),
                source: p["source"].as_str().map(str::to_string),
                license: license(p["license"].as_str()),
                authors: p["authors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect(),
                repository: p["repository"].as_str().map(str::to_string),
                checksum: checksums.get(&(name, version)).map(|c| c.to_string()),
                deps: vec![],
            },
        );
    }
    for node in meta["resolve"]["nodes"].as_array().context("no resolve graph")? {
        let id = node["id"].as_str().unwrap_or_default();
        let mut deps = Vec::new();
        for d in node["deps"].as_array().into_iter().flatten() {
            let kinds: Vec<&str> = d["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k["kind"].as_str().unwrap_or("normal"))
                .collect();
            let dep = d["pkg"].as_str().unwrap_or_default().to_string();
            if kinds.contains(&"normal") {
                deps.push((dep.clone(), false));
            }
            if kinds.contains(&"build") {
                deps.push((dep, true));
            }
        }
        if let Some(c) = crates.get_mut(id) {
            c.deps = deps;
        }
    }
    Ok(Graph { crates })
}

/// Crates by (name, version).
pub type Set = BTreeSet<(String, String)>;

/// Per package: (crates of its normal-dependency tree, crates needed only to build them), as
/// `cargo tree` resolves them for all the plan's packages built together (the features the
/// image build unifies). Cached by the content of Cargo.lock and every manifest.
pub fn closures(triple: &str, packages: &[String]) -> anyhow::Result<BTreeMap<String, (Set, Set)>> {
    // The key's first part is the one closures used before the graph was cached too, so
    // existing cache entries stay valid.
    cached(&format!("{triple} {packages:?}"), || closures_uncached(triple, packages))
}

fn closures_uncached(triple: &str, packages: &[String]) -> anyhow::Result<BTreeMap<String, (Set, Set)>> {
    let root = shell::root();
    let tree = |edges: &str| -> anyhow::Result<BTreeMap<String, Set>> {
        let mut cmd = shell::cargo();
        cmd.args(["tree", "--locked", "--offline", "-e", edges, "--target", triple, "--no-dedupe"]);
        cmd.args(["--prefix", "depth", "--format", "{p}"]).current_dir(&root);
        for p in packages {
            cmd.args(["-p", p]);
        }
        let mut out: BTreeMap<String, Set> = BTreeMap::new();
        let mut current = String::new();
        for line in shell::output(&mut cmd)?.lines() {
            let rest = line.trim_start_matches(|c: char| c.is_ascii_digit());
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(version)) = (parts.next(), parts.next()) else { continue };
            if line.starts_with("0") && !line.starts_with("0.") {
                current = name.to_string();
            }
            out.entry(current.clone())
                .or_default()
                .insert((name.to_string(), version.trim_start_matches('v').to_string()));
        }
        Ok(out)
    };
    let normal = tree("normal")?;
    let all = tree("normal,build")?;
    Ok(normal
        .into_iter()
        .map(|(p, linked)| {
            let build = all.get(&p).map(|a| a.difference(&linked).cloned().collect()).unwrap_or_default();
            (p, (linked, build))
        })
        .collect())
}

/// `cargo tree -e normal --target <triple> -p <package>` as (name, version) pairs: what the
/// SBOM is checked against.
pub fn cargo_tree(package: &str, triple: &str) -> anyhow::Result<BTreeSet<(String, String)>> {
    let out = shell::output(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["tree", "-e", "normal", "--target", triple, "-p", package, "--prefix", "none", "--format", "{p}"])
            .current_dir(shell::root()),
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.trim_start_matches('v').to_string()))
        })
        .collect())
}
