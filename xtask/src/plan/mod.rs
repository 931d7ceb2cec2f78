//! The plan: everything `cargo xtask images` will do, resolved before any work and printable
//! as data (`cargo xtask plan --json`).
//!
//! Reproducibility is decided here: the revision and source epoch are found once ([`source`]:
//! the last commit that changed an input, or pins, or a refusal) and every later step takes
//! dates from the plan, never the clock.

pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::catalog::{self, Catalog, Platform};
use crate::{layers, shell, workspace};

/// Which tags to write (the epic's tagging scheme).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tag {
    /// `vX.Y.Z`, from the workspace version.
    Release,
    /// `vX.Y.Z-rc.N`.
    Rc(u32),
    /// `edge`: the latest main.
    Edge,
    /// `nightly-YYYYMMDD`, the date of the source epoch.
    Nightly,
}

/// What the caller asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub catalog: PathBuf,
    pub out: PathBuf,
    /// Only these platforms (`linux/amd64`); empty means each image's own.
    pub platforms: Vec<String>,
    /// Only these images; empty means all.
    pub images: Vec<String>,
    pub tags: Vec<Tag>,
    /// Small fixed files instead of compiled binaries: the whole pipeline, fast, for tests.
    pub fake_binaries: bool,
    /// Where layer definitions live (default `layers/`).
    pub layers_dir: PathBuf,
    /// Fixed metadata, for golden tests: the version, revision and epoch otherwise come from
    /// Cargo.toml, git and `SOURCE_DATE_EPOCH`.
    pub pin: Option<Pin>,
    /// The private key that signs every image (PKCS#8 PEM); none: the images are unsigned.
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Pin {
    pub version: String,
    pub revision: String,
    pub epoch: u64,
}

impl Request {
    /// Every image of the catalog, every platform, tag `vX.Y.Z`, real binaries, into `out`.
    pub fn new(catalog: PathBuf, out: PathBuf) -> Request {
        Request {
            catalog,
            out,
            platforms: vec![],
            images: vec![],
            tags: vec![Tag::Release],
            fake_binaries: false,
            layers_dir: shell::root().join("layers"),
            pin: None,
            key: std::env::var_os(crate::sign::KEY_ENV).map(PathBuf::from),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub version: String,
    pub revision: String,
    /// Whether the working tree had uncommitted changes when planned.
    pub dirty: bool,
    pub epoch: u64,
    /// The epoch in RFC 3339: image `created` and `org.opencontainers.image.created`.
    pub created: String,
    pub tags: Vec<String>,
    pub out: PathBuf,
    pub fake_binaries: bool,
    pub targets: Vec<Target>,
    pub layers_dir: PathBuf,
    /// The signing key's file (its content is read only when signing, and never shown).
    pub key: Option<PathBuf>,
    pub images: Vec<ImagePlan>,
    /// The catalog, lock file, toolchain pin and layer files, with their SHA-256.
    pub inputs: BTreeMap<String, String>,
    /// Every input file of the workspace (see [`NOT_INPUTS`]) and its SHA-256, recorded in
    /// `images.json` so a rebuild can prove a checkout holds the release's inputs.
    pub sources: BTreeMap<String, String>,
}

#[cfg(test)]
impl Plan {
    /// A plan with only what the stamp reads: its layout and input files.
    pub(crate) fn for_stamp_tests(out: PathBuf, sources: BTreeMap<String, String>) -> Plan {
        Plan {
            version: "0.0.0".into(),
            revision: "0".into(),
            dirty: false,
            epoch: 0,
            created: String::new(),
            tags: vec![],
            out,
            fake_binaries: true,
            targets: vec![],
            layers_dir: PathBuf::new(),
            key: None,
            images: vec![],
            inputs: BTreeMap::new(),
            sources,
        }
    }
}

/// One cargo build: a target triple and the packages built for it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub platform: String,
    pub triple: String,
    pub packages: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImagePlan {
    pub name: String,
    /// `<registry>/<repository>/<name>`.
    pub repository: String,
    pub package: String,
    pub binary: String,
    pub platforms: Vec<String>,
    pub user: String,
    pub env: Vec<String>,
    pub ports: Vec<u16>,
    pub volumes: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub healthcheck: bool,
    pub kind: crate::catalog::Kind,
    pub stop_signal: String,
    /// Layer definitions under `layers/`, bottom first; the application layer comes last.
    pub layers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// This image's entry of `images.toml`, as the provenance's external parameters.
    pub entry: serde_json::Value,
}

impl Plan {
    pub fn platform(name: &str) -> Platform {
        Platform::parse(name).expect("platforms are validated when planning")
    }
}

/// Resolves a request into a plan; reads files and git, builds nothing.
pub fn plan(req: &Request) -> anyhow::Result<Plan> {
    let root = shell::root();
    let binaries = workspace::package_binaries()?;
    let catalog: Catalog = catalog::load(&req.catalog, &binaries)?;
    let (version, revision, dirty, epoch) = match &req.pin {
        Some(pin) => (pin.version.clone(), pin.revision.clone(), false, pin.epoch),
        None => {
            let found = source::find(&root)?;
            (workspace_version(&root)?, found.revision, found.dirty, found.epoch)
        }
    };
    let tags = req
        .tags
        .iter()
        .map(|t| match t {
            Tag::Release => format!("v{version}"),
            Tag::Rc(n) => format!("v{version}-rc.{n}"),
            Tag::Edge => "edge".into(),
            Tag::Nightly => format!("nightly-{}", stella_epoch::yyyymmdd(epoch)),
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for p in &req.platforms {
        if Platform::parse(p).is_none() {
            bail!("--platform {p}: unknown platform; use linux/amd64 or linux/arm64");
        }
    }
    for i in &req.images {
        if !catalog.images.contains_key(i) {
            let known = catalog.images.keys().cloned().collect::<Vec<_>>().join(", ");
            bail!("--image {i}: no such image in {}; known: {known}", req.catalog.display());
        }
    }
    let d = &catalog.defaults;
    let mut images = Vec::new();
    for (name, image) in &catalog.images {
        if !req.images.is_empty() && !req.images.contains(name) {
            continue;
        }
        let platforms: Vec<String> = image
            .platforms
            .clone()
            .unwrap_or_else(|| d.platforms.clone())
            .into_iter()
            .map(|p| Platform::parse(&p).expect("validated").name())
            .filter(|p| {
                req.platforms.is_empty()
                    || req.platforms.iter().any(|r| Platform::parse(r).map(|x| x.name()).as_ref() == Some(p))
            })
            .collect();
        if platforms.is_empty() {
            continue;
        }
        let mut env: BTreeMap<String, String> = d.env.clone();
        env.extend(image.env.clone());
        let mut labels = d.labels.clone();
        labels.extend(image.labels.clone());
        let binary = image.binary().to_string();
        images.push(ImagePlan {
            name: name.clone(),
            repository: format!("{}/{}/{}", d.registry, d.repository, name),
            package: image.package.clone(),
            entrypoint: image.entrypoint.clone().unwrap_or_else(|| vec![format!("/app/{binary}")]),
            binary,
            platforms,
            user: d.user.clone(),
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ports: image.ports.clone(),
            volumes: image.volumes.clone(),
            cmd: image.cmd.clone(),
            healthcheck: image.healthcheck.unwrap_or(!image.ports.is_empty()),
            kind: image.kind,
            stop_signal: image.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            layers: d.base_layers.iter().chain(&image.layers).cloned().collect(),
            entry: serde_json::to_value(image).context("the catalog entry serializes")?,
            labels: image_labels(
                &labels,
                name,
                &image.description,
                &d.source,
                image.licenses.as_deref().unwrap_or(&d.licenses),
                &d.vendor,
                &version,
                &revision,
                &image.ports,
                image.kind,
            ),
        });
    }
    if images.is_empty() {
        bail!("nothing to build: no image matches the --image and --platform filters");
    }
    // Each platform builds the packages of every catalog image on it, not only the selected
    // ones: cargo unifies dependency features across the packages of one build, so building a
    // subset (`--image stella-nats`) would otherwise give different binaries, and digests, than
    // the full build (measured: stella-redis built alone was 4 KiB smaller than in the full build).
    let mut targets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for image in &images {
        for p in &image.platforms {
            let all = catalog.images.values().filter(|i| {
                i.platforms
                    .as_ref()
                    .unwrap_or(&d.platforms)
                    .iter()
                    .any(|q| Platform::parse(q).map(|x| x.name()).as_ref() == Some(p))
            });
            targets.entry(p.clone()).or_default().extend(all.map(|i| i.package.clone()));
        }
    }
    let targets = targets
        .into_iter()
        .map(|(platform, packages)| Target {
            triple: Plan::platform(&platform).triple.to_string(),
            platform,
            packages: packages.into_iter().collect(),
        })
        .collect();
    let inputs = inputs(&root, &req.catalog, &req.layers_dir, &images)?;
    let sources = source::input_digests(&root)?;
    Ok(Plan {
        version,
        revision,
        dirty,
        created: stella_epoch::rfc3339(epoch),
        epoch,
        tags,
        out: req.out.clone(),
        fake_binaries: req.fake_binaries,
        targets,
        layers_dir: req.layers_dir.clone(),
        key: req.key.clone(),
        images,
        inputs,
        sources,
    })
}

/// The OCI labels of one image (also used as manifest and index annotations).
#[allow(clippy::too_many_arguments)]
fn image_labels(
    base: &BTreeMap<String, String>,
    name: &str,
    description: &str,
    source: &str,
    licenses: &str,
    vendor: &str,
    version: &str,
    revision: &str,
    ports: &[u16],
    kind: crate::catalog::Kind,
) -> BTreeMap<String, String> {
    let mut labels = base.clone();
    let oci = |k: &str| format!("org.opencontainers.image.{k}");
    labels.insert(oci("title"), name.into());
    labels.insert(oci("description"), description.into());
    labels.insert(oci("source"), source.into());
    labels.insert(oci("url"), source.into());
    labels.insert(oci("licenses"), licenses.into());
    labels.insert(oci("vendor"), vendor.into());
    labels.insert(oci("version"), version.into());
    labels.insert(oci("revision"), revision.into());
    labels.insert("io.stellaops.kind".into(), kind.as_str().into());
    if !ports.is_empty() {
        let list = ports.iter().map(|p| format!("{p}/tcp")).collect::<Vec<_>>().join(",");
        labels.insert("io.stellaops.ports".into(), list);
    }
    // The runtime's HTTP contract; support images answer their own protocols instead.
    if !ports.is_empty() && kind == crate::catalog::Kind::Service {
        labels.insert("io.stellaops.health.liveness".into(), "/health/liveness".into());
        labels.insert("io.stellaops.health.readiness".into(), "/health/readiness".into());
        labels.insert("io.stellaops.metrics".into(), "/metrics".into());
    }
    labels
}

fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let doc: toml::Table = text.parse().context("parsing Cargo.toml")?;
    doc.get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .context("Cargo.toml has no [workspace.package] version")
}

/// What is not an input of the images: the generated deployment files (which pin the images'
/// digests, so they cannot be inputs of them), documentation, the end-to-end tests and xtask's
/// own tests (no image holds their code; their dependencies are in Cargo.lock, which is an
/// input) and CI configuration. The revision
/// and the source epoch of a build are those of the last commit that changed anything else, so
/// committing `deploy/` or a documentation fix leaves every image digest as it was.
pub const NOT_INPUTS: &[&str] = &[
    ":(exclude)deploy",
    ":(exclude)docs",
    ":(exclude).github",
    ":(exclude).ci",
    ":(exclude)*.md",
    ":(exclude)tests",
    ":(exclude)xtask/tests",
    // What is written from the images, never into them: the deployment files and the benchmarks.
    ":(exclude)xtask/src/deploy",
    ":(exclude)xtask/src/bench",
    // The test runner (`cargo xtask test`) only runs what the rest builds.
    ":(exclude)xtask/src/test",
    // The chart's OCI packaging and the release key sign and ship what was built.
    ":(exclude)xtask/src/chart.rs",
    ":(exclude)release",
];

pub(crate) fn input_pathspec() -> Vec<&'static str> {
    std::iter::once("--").chain(std::iter::once(".")).chain(NOT_INPUTS.iter().copied()).collect()
}

/// Inputs and their digests: the catalog, the lock file, the toolchain pin, layer definitions.
fn inputs(
    root: &Path,
    catalog: &Path,
    layers_dir: &Path,
    images: &[ImagePlan],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = vec![catalog.to_path_buf(), root.join("Cargo.lock"), root.join("rust-toolchain.toml")];
    let layer_names: BTreeSet<&String> = images.iter().flat_map(|i| &i.layers).collect();
    for name in layer_names {
        files.extend(layers::inputs(layers_dir, name)?);
    }
    let mut out = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(&f).with_context(|| format!("reading input {}", f.display()))?;
        let shown = f.strip_prefix(root).unwrap_or(&f).display().to_string();
        out.insert(shown, crate::layer::sha256(&bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// `services/runtime/build.rs` asks git the same question for a plain `cargo build`.
    #[test]
    fn the_runtime_build_script_excludes_the_same_paths() {
        let build = std::fs::read_to_string(crate::shell::root().join("services/runtime/build.rs")).unwrap();
        for spec in super::NOT_INPUTS {
            assert!(build.contains(&format!("\"{spec}\"")), "services/runtime/build.rs lacks {spec}");
        }
    }
}
