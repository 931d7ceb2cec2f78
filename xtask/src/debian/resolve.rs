//! `cargo xtask layers lock`: the closure of every Debian layer computed by apt itself, in a
//! private apt state per architecture (the machine's sources and keys, an empty package
//! database), so the result depends on the archive and the definitions only, never on what the
//! build host has installed. Hashes come from the signed `Packages` indexes apt verified.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Deb, Lock, LockedLayer, Spec};
use crate::shell;

/// A private apt root for one architecture.
pub struct Apt {
    dir: PathBuf,
    arch: String,
}

/// One `Key: value` stanza of apt's output.
pub type Stanza = BTreeMap<String, String>;

impl Apt {
    /// Creates the root under `dir` and downloads the package indexes (`apt-get update`).
    pub fn new(dir: &Path, arch: &str) -> anyhow::Result<Apt> {
        let dir = dir.join(arch);
        for d in ["state/lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d)).with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        let apt = Apt { dir, arch: arch.to_string() };
        apt.write_status("empty", &[])?;
        shell::run(apt.cmd("apt-get", "empty").arg("update").arg("-qq"))
            .with_context(|| format!("apt-get update for {arch}: is apt configured and the archive reachable?"))?;
        Ok(apt)
    }

    fn cmd(&self, program: &str, status: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = self.dir.display();
        for o in [
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures::={}", self.arch),
            format!("Dir::State={d}/state"),
            format!("Dir::State::status={d}/{status}.status"),
            format!("Dir::Cache={d}/cache"),
            "Debug::NoLocking=1".into(),
            "APT::Install-Recommends=false".into(),
        ] {
            cmd.arg("-o").arg(o);
        }
        cmd.env("LC_ALL", "C");
        cmd
    }

    /// A dpkg status file in which `installed` count as installed.
    fn write_status(&self, name: &str, installed: &[Stanza]) -> anyhow::Result<()> {
        let mut text = String::new();
        for s in installed {
            text.push_str(&format!("Package: {}\nStatus: install ok installed\n", s["Package"]));
            for key in ["Version", "Architecture", "Multi-Arch", "Provides", "Essential"] {
                if let Some(v) = s.get(key) {
                    text.push_str(&format!("{key}: {v}\n"));
                }
            }
            text.push('\n');
        }
        let path = self.dir.join(format!("{name}.status"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The candidate stanzas of `packages` (`name` or `name=version`).
    pub fn show(&self, packages: &[String]) -> anyhow::Result<Vec<Stanza>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let text = shell::output(self.cmd("apt-cache", "empty").args(["show", "--no-all-versions"]).args(packages))
            .with_context(|| {
                format!("apt-cache show for {}: is every name a {} package?", packages.join(" "), self.arch)
            })?;
        Ok(stanzas(&text))
    }

    /// The packages apt would install for `packages`, with `installed` already present.
    pub fn closure(&self, packages: &[String], installed: &[Stanza]) -> anyhow::Result<Vec<(String, String)>> {
        self.write_status("layer", installed)?;
        let text = shell::output(self.cmd("apt-get", "layer").args(["install", "-s", "-y", "-qq"]).args(packages))
            .with_context(|| format!("resolving {} for {}", packages.join(" "), self.arch))?;
        let mut out = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("Inst ") else { continue };
            let (name, rest) = rest.split_once(' ').context("an `Inst` line without a version")?;
            let version = rest.trim_start_matches('(').split_whitespace().next().unwrap_or_default();
            out.push((name.to_string(), version.to_string()));
        }
        Ok(out)
    }

    /// The download URL of each package file apt would fetch for `packages`, by pool path.
    pub fn uris(&self, packages: &[String]) -> anyhow::Result<Vec<String>> {
        let text =
            shell::output(self.cmd("apt-get", "layer").args(["install", "--print-uris", "-y", "-qq"]).args(packages))?;
        Ok(text.lines().filter_map(|l| l.strip_prefix('\'')?.split('\'').next().map(str::to_string)).collect())
    }
}

/// Parses `Key: value` stanzas separated by blank lines (continuation lines are joined).
pub fn stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut s = Stanza::new();
        let mut last = None;
        for line in block.lines() {
            if line.starts_with(' ') {
                if let Some(k) = &last {
                    s.entry(String::clone(k)).and_modify(|v: &mut String| {
                        v.push('\n');
                        v.push_str(line);
                    });
                }
            } else if let Some((k, v)) = line.split_once(':') {
                s.insert(k.to_string(), v.trim().to_string());
                last = Some(k.to_string());
            }
        }
        if s.contains_key("Package") {
            out.push(s);
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Computes the lock for `definitions` (layer name → its `[debian]` section) on `architectures`.
pub fn lock(
    work: &Path,
    suite: &str,
    definitions: &BTreeMap<String, Spec>,
    architectures: &[String],
    say: &dyn Fn(&str),
) -> anyhow::Result<Lock> {
    let order = order(definitions)?;
    let mut layers = Vec::new();
    let mut debs: BTreeMap<String, Deb> = BTreeMap::new();
    for arch in architectures {
        say(&format!("apt-get update ({arch})"));
        let apt = Apt::new(work, arch)?;
        let mut resolved: BTreeMap<String, Vec<Stanza>> = BTreeMap::new();
        for name in &order {
            let spec = &definitions[name];
            let mut installed: Vec<Stanza> = spec.requires.iter().flat_map(|r| resolved[r].clone()).collect();
            installed.extend(apt.show(&spec.exclude).with_context(|| format!("layer `{name}`: its `exclude` list"))?);
            let closure = apt.closure(&spec.packages, &installed).with_context(|| format!("layer `{name}`"))?;
            if closure.is_empty() {
                bail!("layer `{name}` ({arch}): apt resolved no packages: are they all excluded or required below?");
            }
            let pinned: Vec<String> = closure.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let shown = apt.show(&pinned)?;
            let uris = apt.uris(&spec.packages)?;
            let mut files = BTreeSet::new();
            for s in &shown {
                let filename = s.get("Filename").context("a package without Filename")?;
                let url = uris
                    .iter()
                    .find(|u| percent_decode(u).ends_with(filename.as_str()))
                    .with_context(|| format!("apt printed no URL for {filename}"))?;
                let file = filename.rsplit('/').next().unwrap_or(filename).to_string();
                let source = s.get("Source").map(|v| v.split_whitespace().next().unwrap_or_default().to_string());
                let deb = Deb {
                    file: file.clone(),
                    name: s["Package"].clone(),
                    version: s.get("Version").cloned().unwrap_or_default(),
                    architecture: s.get("Architecture").cloned().unwrap_or_default(),
                    source: source.unwrap_or_else(|| s["Package"].clone()),
                    maintainer: s.get("Maintainer").cloned().unwrap_or_default(),
                    url: url.clone(),
                    size: s.get("Size").and_then(|v| v.parse().ok()).unwrap_or_default(),
                    sha256: s.get("SHA256").cloned().context("a package without SHA256")?,
                };
                debs.insert(file.clone(), deb);
                files.insert(file);
            }
            say(&format!("{name} ({arch}): {} packages", files.len()));
            layers.push(LockedLayer {
                name: name.clone(),
                architecture: arch.clone(),
                packages: files.into_iter().collect(),
            });
            resolved.insert(name.clone(), shown.into_iter().chain(installed).collect());
        }
    }
    layers.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    Ok(Lock { suite: suite.to_string(), layers, debs: debs.into_values().collect() })
}

/// Layers in an order where every layer comes after the ones it requires.
fn order(definitions: &BTreeMap<String, Spec>) -> anyhow::Result<Vec<String>> {
    let mut done: Vec<String> = Vec::new();
    while done.len() < definitions.len() {
        let before = done.len();
        for (name, spec) in definitions {
            if done.contains(name) {
                continue;
            }
            for r in &spec.requires {
                if !definitions.contains_key(r) {
                    bail!("layers/{name}.toml: debian.requires names `{r}`, which is not a Debian layer definition");
                }
            }
            if spec.requires.iter().all(|r| done.contains(r)) {
                done.push(name.clone());
            }
        }
        if done.len() == before {
            bail!("the Debian layers' `requires` form a cycle");
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stanzas_and_urls() {
        let s = super::stanzas("Package: a\nVersion: 1\nDescription: x\n more\n\nPackage: b\nVersion: 2\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["Description"], "x\n more");
        assert_eq!(
            super::percent_decode("libstdc%2b%2b6_12.2.0-14%2bdeb12u1_arm64.deb"),
            "libstdc++6_12.2.0-14+deb12u1_arm64.deb"
        );
    }
}
