//! `inspect`: the inventory of an unpacked bundle, for an operator deciding what to load and an
//! auditor comparing releases: every image with its tags, index digest, and per platform the
//! manifest digest, compressed size and the number of packages its SPDX SBOM lists; the
//! revision, the file count and size, and the fingerprint of the key the bundle carries. It
//! reads and reports; `verify` is what says whether to trust any of it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Result, bundle, checksums, invalid, io, signature};

#[derive(Debug, serde::Serialize)]
pub struct Inventory {
    pub version: String,
    pub revision: String,
    /// Fingerprint of the bundle's own cosign.pub: what it claims, not a verification.
    pub carried_key: String,
    pub files: usize,
    pub bytes: u64,
    pub images: Vec<Image>,
}

#[derive(Debug, serde::Serialize)]
pub struct Image {
    pub name: String,
    pub tags: Vec<String>,
    pub digest: String,
    pub platforms: Vec<Platform>,
}

#[derive(Debug, serde::Serialize)]
pub struct Platform {
    pub platform: String,
    pub manifest: String,
    pub compressed_size: u64,
    /// Packages in the SPDX SBOM attached to this platform's manifest; None when none is.
    pub sbom_packages: Option<usize>,
}

/// The subset of `oci/images.json` (the build record) the inventory reads.
#[derive(serde::Deserialize)]
struct Built {
    version: String,
    revision: String,
    images: Vec<BuiltImage>,
}

#[derive(serde::Deserialize)]
struct BuiltImage {
    name: String,
    tags: Vec<String>,
    digest: String,
    platforms: BTreeMap<String, BuiltPlatform>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuiltPlatform {
    manifest: String,
    compressed_size: u64,
}

const SPDX: &str = "application/spdx+json";

fn json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path.display(), format!("not JSON: {e}")))
}

pub fn inspect(dir: &Path) -> Result<Inventory> {
    let record = dir.join("oci/images.json");
    let built: Built = serde_json::from_slice(&std::fs::read(&record).map_err(io(&record))?)
        .map_err(|e| invalid(record.display(), format!("not a build record: {e}")))?;
    // SBOMs are referrers: manifests of artifact type SPDX whose subject is a platform manifest.
    let index_path = dir.join("oci/index.json");
    let index = json(&index_path)?;
    let mut sboms: BTreeMap<String, usize> = BTreeMap::new();
    for entry in index["manifests"].as_array().into_iter().flatten() {
        if entry["artifactType"] != SPDX {
            continue;
        }
        let Some(digest) = entry["digest"].as_str() else { continue };
        let manifest = json(&crate::push::blob_path(&dir.join("oci"), digest)?)?;
        let (Some(subject), Some(layer)) =
            (manifest["subject"]["digest"].as_str(), manifest["layers"][0]["digest"].as_str())
        else {
            continue;
        };
        let path = crate::push::blob_path(&dir.join("oci"), layer)?;
        if !path.exists() {
            continue; // a delta bundle takes it from its base
        }
        let doc = json(&path)?;
        sboms.insert(subject.to_string(), doc["packages"].as_array().map_or(0, Vec::len));
    }
    let images = built
        .images
        .into_iter()
        .map(|i| Image {
            platforms: i
                .platforms
                .into_iter()
                .map(|(platform, p)| Platform {
                    sbom_packages: sboms.get(&p.manifest).copied(),
                    platform,
                    manifest: p.manifest,
                    compressed_size: p.compressed_size,
                })
                .collect(),
            name: i.name,
            tags: i.tags,
            digest: i.digest,
        })
        .collect();
    let sizes_path = dir.join(checksums::SIZES);
    let sizes = std::fs::read_to_string(&sizes_path).map_err(io(&sizes_path))?;
    let sizes = checksums::parse_sizes(&sizes, &sizes_path.display().to_string())?;
    let key_path = dir.join(bundle::PUBLIC_KEY);
    let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key = signature::public_key(&key, &key_path.display().to_string())?;
    Ok(Inventory {
        version: built.version,
        revision: built.revision,
        carried_key: signature::fingerprint(&key),
        files: sizes.len() + bundle::HEAD.len(),
        bytes: sizes.values().sum(),
        images,
    })
}

impl Inventory {
    /// The inventory as a table for a person.
    pub fn table(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1 << 20));
        let mut out = format!(
            "StellaOps {} (revision {}): {} files, {}\ncarries the key {} (not verified here: run `verify --key` or `--fingerprint`)\n\n",
            self.version,
            self.revision,
            self.files,
            mib(self.bytes),
            self.carried_key
        );
        out.push_str(&format!(
            "{:<22} {:<10} {:<19} {:<12} {:<19} {:>10} {:>6}\n",
            "image", "tags", "index", "platform", "manifest", "size", "SBOM"
        ));
        for i in &self.images {
            for (n, p) in i.platforms.iter().enumerate() {
                let (name, tags, digest) =
                    if n == 0 { (i.name.as_str(), i.tags.join(","), &i.digest[..19]) } else { ("", String::new(), "") };
                let sbom = p.sbom_packages.map_or("none".to_string(), |n| n.to_string());
                out.push_str(&format!(
                    "{name:<22} {tags:<10} {digest:<19} {:<12} {:<19} {:>10} {sbom:>6}\n",
                    p.platform,
                    &p.manifest[..19.min(p.manifest.len())],
                    mib(p.compressed_size)
                ));
            }
        }
        out
    }
}
