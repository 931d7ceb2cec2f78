//! `cargo xtask chart`: the Helm chart `deploy/helm/stella` as an OCI artifact, the form Helm 3.8+
//! pulls with `helm install oci://<registry>/<prefix>/charts/stella --version X`, written into its
//! own OCI image layout (default `target/chart`) that `cargo xtask publish --layout` pushes.
//!
//! The artifact is what `helm push` would upload, made reproducibly: a manifest whose config is
//! the chart's metadata as JSON (`application/vnd.cncf.helm.config.v1+json`) and whose one layer
//! is the packaged chart (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`), a tar of the
//! chart's files under `stella/`, sorted, owned by 0:0, dated at the build's source epoch, then
//! gzip without a name or time. `helm package` writes the files' own dates, so two packagings
//! of one chart differ; ours do not. Signed like the images: cosign's `.sig` tag and referrer,
//! and a Sigstore bundle referrer ([`crate::sigstore`]).
//!
//! The chart is packaged only when it is current for the build (`deploy --check`), so the
//! artifact pins exactly the image digests of that build.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use p256::ecdsa::SigningKey;
use serde::Serialize;
use serde_json::json;

use crate::assemble::Built;
use crate::oci::{self, Blob, Layout};

pub const CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const CONTENT: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The chart's repository under the registry prefix: `<registry>/<prefix>/charts/stella`.
pub const NAME: &str = "charts/stella";

/// What `chart` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    /// `<registry>/<prefix>/charts/stella`, as `images.toml` names the images' registry.
    pub repository: String,
    /// The OCI tag: the chart version, with `+` written `_` as Helm does.
    pub tag: String,
    /// The digest of the chart's manifest: what `helm install ... @<digest>` pins.
    pub digest: String,
    /// The packaged chart (the `.tgz` Helm pulls).
    pub archive: Blob,
    pub signed_by: Option<String>,
}

/// The chart's directory in a checkout.
pub fn default_dir(root: &Path) -> PathBuf {
    root.join("deploy/helm/stella")
}

/// Packages `chart_dir` (current for the build in `images`) into the layout `out`.
pub fn write(chart_dir: &Path, images: &Path, out: &Path, key: Option<&SigningKey>) -> anyhow::Result<Written> {
    let built = Built::read(images)?;
    let first = built.images.first().with_context(|| format!("{}: the build has no image", images.display()))?;
    let repository = match first.repository.rsplit_once('/') {
        Some((prefix, _)) => format!("{prefix}/{NAME}"),
        None => NAME.to_string(),
    };
    let archive = package(chart_dir, "stella", built.epoch)?;
    let metadata = crate::deploy::helm::chart_metadata(&built);
    let tag = built.version.replace('+', "_");

    // `out` is replaced whole: refuse a directory that is not a layout (`--out .` would be the
    // working directory).
    if out.exists() && !out.join("oci-layout").is_file() {
        bail!(
            "{}: exists and is not an OCI image layout; give --out a new directory or an earlier chart layout",
            out.display()
        );
    }
    let name = out.file_name().with_context(|| format!("{}: --out needs a directory name", out.display()))?;
    let staging = out.with_file_name(format!(".{}.new", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&staging);
    let layout = Layout::create(&staging)?;
    let (config, _) = layout.put_json(&metadata)?;
    let layer = layout.put(&archive)?;
    let (manifest, _) = layout.put_json(&json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": { "mediaType": CONFIG, "digest": config.digest, "size": config.size },
        "layers": [{ "mediaType": CONTENT, "digest": layer.digest, "size": layer.size }],
        "annotations": {
            "org.opencontainers.image.title": metadata["name"],
            "org.opencontainers.image.version": metadata["version"],
            "org.opencontainers.image.description": metadata["description"],
            "org.opencontainers.image.source": metadata["home"],
            "org.opencontainers.image.revision": built.revision,
            "org.opencontainers.image.created": built.created,
        },
    }))?;
    let mut entries = vec![entry(&manifest, Some(&format!("{NAME}:{tag}")), None)];
    if let Some(key) = key {
        let signed = crate::sign::sign_manifest(&layout, key, &repository, &manifest, oci::MANIFEST)?;
        entries.push(entry(&signed.tag_manifest, Some(&format!("{NAME}:{}", signed.tag)), None));
        entries.push(entry(&signed.referrer, None, Some(crate::sign::SIG_ARTIFACT)));
        let bundle = crate::sigstore::sign(&layout, key, &repository, &manifest, oci::MANIFEST, &built.created)?;
        entries.push(entry(&bundle.manifest, None, Some(crate::sigstore::BUNDLE)));
    }
    let index = json!({ "schemaVersion": 2, "mediaType": oci::INDEX, "manifests": entries });
    oci::write_atomic(&staging.join("index.json"), &oci::canonical(&index))?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&staging, out).with_context(|| format!("moving the chart layout to {}", out.display()))?;
    Ok(Written {
        repository,
        tag,
        digest: manifest.digest,
        archive: layer,
        signed_by: key.map(crate::sign::fingerprint),
    })
}

fn entry(blob: &Blob, name: Option<&str>, artifact_type: Option<&str>) -> serde_json::Value {
    let mut e = json!({ "mediaType": oci::MANIFEST, "digest": blob.digest, "size": blob.size });
    if let Some(name) = name {
        e["annotations"] = json!({ "org.opencontainers.image.ref.name": name });
    }
    if let Some(t) = artifact_type {
        e["artifactType"] = json!(t);
    }
    e
}

/// The chart's files as Helm packages them (`<top>/<path>`, without what `.helmignore` names),
/// reproducibly: regular files only, in path order, mode 0644, owner 0:0, dated `epoch`; gzip
/// without name or time.
pub fn package(dir: &Path, top: &str, epoch: u64) -> anyhow::Result<Vec<u8>> {
    let mut rules = ignore::gitignore::GitignoreBuilder::new(dir);
    if let Some(e) = rules.add(dir.join(".helmignore")).filter(|_| dir.join(".helmignore").is_file()) {
        bail!("{}/.helmignore: {e}", dir.display());
    }
    let rules = rules.build().with_context(|| format!("reading {}/.helmignore", dir.display()))?;
    let mut files = BTreeMap::new();
    collect(dir, dir, &rules, &mut files)?;
    if !files.contains_key("Chart.yaml") {
        bail!("{}: no Chart.yaml; is this a Helm chart? (run `cargo xtask deploy` to write it)", dir.display());
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (rel, path) in &files {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch);
        tar.append_data(&mut header, format!("{top}/{rel}"), data.as_slice())
            .with_context(|| format!("adding {rel} to the chart archive"))?;
    }
    let tar = tar.into_inner().context("finishing the chart archive")?;
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar)?;
    Ok(gz.finish()?)
}

fn collect(
    root: &Path,
    dir: &Path,
    rules: &ignore::gitignore::Gitignore,
    out: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if rules.matched(&path, meta.is_dir()).is_ignore() {
            continue;
        }
        if meta.is_dir() {
            collect(root, &path, rules, out)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned();
            out.insert(rel, path);
        } else {
            bail!("{}: not a regular file or directory; a chart holds neither links nor devices", path.display());
        }
    }
    Ok(())
}
