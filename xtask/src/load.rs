//! `--load`: gets the host platform's images into the local Docker engine, by `docker load` of
//! an archive holding only that platform's manifest, config and layers.
//!
//! The archive is an OCI layout that also carries Docker's `manifest.json`, as `docker save`
//! writes it since Docker 25: Docker's classic image store reads only `manifest.json`, the
//! containerd store reads `index.json`. The blobs are ours, unchanged, so the loaded image's ID
//! is our config digest.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use std::path::Path;

use crate::assemble::Built;

/// The platform of this machine, as named in the catalog.
pub fn host_platform() -> &'static str {
    if cfg!(target_arch = "aarch64") { "linux/arm64" } else { "linux/amd64" }
}

/// Loads the host platform of every image of the layout at `out` into Docker; returns the
/// references loaded (`<repository>:<tag>`).
pub fn load(out: &Path, built: &Built) -> anyhow::Result<Vec<String>> {
    let platform = host_platform();
    let mut loaded = Vec::new();
    for image in &built.images {
        let Some(p) = image.platforms.get(platform) else { continue };
        let archive = archive(out, &p.manifest, &image.repository, &built.tags)?;
        let mut child = Command::new("docker")
            .args(["load"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting `docker load` (is Docker installed?)")?;
        child.stdin.take().expect("piped").write_all(&archive)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("docker load of {} failed", image.repository);
        }
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        loaded.extend(built.tags.iter().map(|t| format!("{}:{t}", image.repository)));
    }
    Ok(loaded)
}

/// A tar of an OCI layout with one platform manifest of one image, named by each tag.
fn archive(out: &Path, manifest: &str, repository: &str, tags: &[String]) -> anyhow::Result<Vec<u8>> {
    let layout = crate::oci::Layout { dir: out.to_path_buf() };
    let manifest_bytes = std::fs::read(layout.blob_path(manifest))?;
    let doc: serde_json::Value = serde_json::from_slice(&manifest_bytes)?;
    let mut digests = vec![manifest.to_string(), doc["config"]["digest"].as_str().unwrap_or_default().to_string()];
    digests
        .extend(doc["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str().map(String::from)));
    let entries: Vec<_> = tags
        .iter()
        .map(|t| {
            serde_json::json!({
                "mediaType": crate::oci::MANIFEST,
                "digest": manifest,
                "size": manifest_bytes.len(),
                "annotations": {
                    "io.containerd.image.name": format!("{repository}:{t}"),
                    "org.opencontainers.image.ref.name": t,
                },
            })
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": crate::oci::INDEX, "manifests": entries });
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker = serde_json::json!([{
        "Config": blob(&digests[1]),
        "RepoTags": tags.iter().map(|t| format!("{repository}:{t}")).collect::<Vec<_>>(),
        "Layers": digests[2..].iter().map(|d| blob(d)).collect::<Vec<_>>(),
    }]);
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &crate::oci::canonical(&index))?;
    add("manifest.json", &crate::oci::canonical(&docker))?;
    for d in digests {
        let bytes = std::fs::read(layout.blob_path(&d)).with_context(|| format!("reading blob {d}"))?;
        add(&format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), &bytes)?;
    }
    Ok(tar.into_inner()?)
}
