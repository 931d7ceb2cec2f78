//! Assembly: the plan's layers encoded (in parallel, through the content cache), written as
//! blobs, and bound into configs, manifests, image indexes and the layout's `index.json`.
//!
//! The layout is written into a fresh directory beside the output and swapped in at the end,
//! so a failed run never leaves a half-written layout and stale blobs never accumulate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::compile::Binaries;
use crate::layer::{self, Encoded, Entry, Layer};
use crate::layers;
use crate::oci::image::{self as img, LayerRef};
use crate::oci::{Blob, Layout};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::sigstore::Subject;

/// What a build produced: the record `deploy` and `bundle` read (`<out>/images.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Built {
    pub version: String,
    pub revision: String,
    /// The source epoch (seconds), and the same as RFC 3339.
    pub epoch: u64,
    pub created: String,
    pub tags: Vec<String>,
    /// SHA-256 of the signing public key (DER), when the images are signed.
    #[serde(default)]
    pub signed_by: Option<String>,
    pub images: Vec<BuiltImage>,
    /// Every input file and its SHA-256 (see `plan::source`): what `rebuild --compare` checks a
    /// checkout against before it pins this record's revision and epoch. Absent in records
    /// written before it was added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuiltImage {
    pub name: String,
    pub repository: String,
    pub tags: Vec<String>,
    /// The image index (all platforms).
    pub digest: String,
    pub platforms: BTreeMap<String, BuiltPlatform>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltPlatform {
    pub manifest: String,
    pub config: String,
    /// Sum of the compressed layers.
    pub compressed_size: u64,
    /// The application layer alone, compressed.
    pub app_layer_size: u64,
    pub binary_size: u64,
}

/// A layer to encode, keyed so that identical content is encoded once.
struct Job {
    created_by: String,
    layer: Layer,
}

impl Built {
    /// Reads `<out>/images.json`.
    pub fn read(out: &Path) -> anyhow::Result<Built> {
        let path = out.join("images.json");
        let text = std::fs::read(&path)
            .with_context(|| format!("reading {}: build the images first (`cargo xtask images`)", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Where compressed layers are kept between runs, by the digest of their tar.
pub fn cache_dir() -> PathBuf {
    // The encoder settings are part of the key: change them, change this name.
    crate::workspace::target_dir().join("stella-cache/gzip-zlibrs-6-v1")
}

pub fn assemble(plan: &Plan, binaries: &Binaries, quiet: bool) -> anyhow::Result<Built> {
    assemble_with(plan, binaries, quiet, &cache_dir())
}

/// [`assemble`] with another cache directory (an empty one measures cold assembly).
pub fn assemble_with(plan: &Plan, binaries: &Binaries, quiet: bool, cache: &Path) -> anyhow::Result<Built> {
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    for ((name, platform), layer) in layers::load_for(plan, Some(cache))? {
        // A layer without Debian packages is the same on every platform: one job, one blob.
        let key = if layer.packages.is_empty() { format!("layer {name}") } else { format!("layer {name} {platform}") };
        jobs.entry(key).or_insert(Job { created_by: format!("layer {name}"), layer });
    }
    let per_platform: std::collections::BTreeSet<String> = jobs.keys().cloned().collect();
    let layer_key = move |name: &str, platform: &str| {
        let specific = format!("layer {name} {platform}");
        if per_platform.contains(&specific) { specific } else { format!("layer {name}") }
    };
    type Deps = (crate::sbom::Graph, BTreeMap<String, (crate::sbom::Set, crate::sbom::Set)>);
    let graphs: BTreeMap<&str, Deps> = plan
        .targets
        .par_iter()
        .map(|t| {
            let graph = crate::sbom::graph(&t.triple)?;
            Ok((t.platform.as_str(), (graph, crate::sbom::closures(&t.triple, &t.packages)?)))
        })
        .collect::<anyhow::Result<_>>()
        .context("reading the dependency graph for the SBOMs")?;
    // Each image's SBOM is baked into its application layer and attached as a referrer.
    // Documents are independent (each hashes its binary and every base file): made in parallel.
    let pairs: Vec<(&crate::plan::ImagePlan, &String)> =
        plan.images.iter().flat_map(|i| i.platforms.iter().map(move |p| (i, p))).collect();
    let sboms: BTreeMap<(String, String), Vec<u8>> = pairs
        .par_iter()
        .map(|(image, p)| {
            let base: Vec<&Layer> = image.layers.iter().map(|n| &jobs[&layer_key(n, p)].layer).collect();
            let bin = binaries.get(&((*p).clone(), image.binary.clone())).context("a planned binary was not built")?;
            let (graph, sets) = &graphs[p.as_str()];
            let sets = sets.get(&image.package).context("cargo tree did not list a planned package")?;
            let sbom = crate::sbom::document(plan, image, p, graph, sets, &base, bin);
            Ok(((image.name.clone(), (*p).clone()), sbom))
        })
        .collect::<anyhow::Result<_>>()?;
    for image in &plan.images {
        for p in &image.platforms {
            let bin = binaries[&(p.clone(), image.binary.clone())].clone();
            let key = app_key(&image.name, p);
            let sbom = sboms[&(image.name.clone(), p.clone())].clone();
            let entries = vec![
                Entry::file(&format!("app/{}", image.binary), 0o755, bin),
                Entry::file(crate::sbom::PATH, 0o644, sbom),
            ];
            let layer = Layer { name: key.clone(), entries, packages: Vec::new(), memo: None };
            jobs.insert(key, Job { created_by: format!("app {} ({p})", image.binary), layer });
        }
    }
    let progress = Progress::new("layers", jobs.len(), quiet);
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let encoded: BTreeMap<String, (Encoded, PathBuf)> = jobs
        .par_iter()
        .map(|(key, job)| {
            let result = encode_cached(&job.layer, cache).with_context(|| format!("encoding layer {key}"));
            progress.step(&job.created_by);
            result.map(|e| (key.clone(), e))
        })
        .collect::<anyhow::Result<_>>()?;
    progress.finish();

    let staging = sibling(&plan.out, "new");
    let _ = std::fs::remove_dir_all(&staging);
    let layout = Layout::create(&staging)?;
    for (encoded, cached) in encoded.values() {
        link_or_copy(cached, &layout.blob_path(&encoded.gz_digest))?;
    }
    let layer_ref = |key: &str| {
        let (e, _) = &encoded[key];
        LayerRef {
            created_by: jobs[key].created_by.clone(),
            diff_id: e.tar_digest.clone(),
            blob: Blob { digest: e.gz_digest.clone(), size: e.gz.len() as u64 },
        }
    };
    let key = plan.key.as_deref().map(crate::sign::read_key).transpose()?;
    let toolchain = key.as_ref().map(|_| crate::provenance::Toolchain::read()).transpose()?;
    let mut signatures = Vec::new();
    let mut attachments = Vec::new();
    let mut built = Vec::new();
    let mut indexes = Vec::new();
    for image in &plan.images {
        let mut written = Vec::new();
        let mut platforms = BTreeMap::new();
        for p in &image.platforms {
            let mut refs: Vec<LayerRef> = image.layers.iter().map(|n| layer_ref(&layer_key(n, p))).collect();
            let app = layer_ref(&app_key(&image.name, p));
            refs.push(app.clone());
            let w = img::write_manifest(&layout, plan, image, Plan::platform(p), &refs)?;
            let sbom = &sboms[&(image.name.clone(), p.clone())];
            attachments.push(img::attach(&layout, &w.manifest, crate::oci::MANIFEST, crate::sbom::MEDIA_TYPE, sbom)?);
            platforms.insert(
                p.clone(),
                BuiltPlatform {
                    manifest: w.manifest.digest.clone(),
                    config: w.config.digest.clone(),
                    compressed_size: refs.iter().map(|r| r.blob.size).sum(),
                    app_layer_size: app.blob.size,
                    binary_size: binaries[&(p.clone(), image.binary.clone())].len() as u64,
                },
            );
            if let Some(key) = &key {
                signatures.push((
                    image.name.clone(),
                    crate::sign::sign_manifest(&layout, key, &image.repository, &w.manifest, crate::oci::MANIFEST)?,
                ));
                let subject = Subject {
                    repository: &image.repository,
                    blob: &w.manifest,
                    media_type: crate::oci::MANIFEST,
                    sbom,
                    provenance: None,
                    created: &plan.created,
                };
                attachments.extend(crate::sigstore::attest(&layout, key, &image.name, &subject)?);
            }
            written.push(w);
        }
        let index = img::write_index(&layout, plan, image, &written)?;
        let platforms_sboms: Vec<(String, String)> =
            written.iter().map(|w| (w.platform.name(), w.manifest.digest.clone())).collect();
        let index_sbom = crate::sbom::index_document(plan, image, &index.digest, &platforms_sboms);
        attachments.push(img::attach(&layout, &index, crate::oci::INDEX, crate::sbom::MEDIA_TYPE, &index_sbom)?);
        if let (Some(key), Some(tool)) = (&key, &toolchain) {
            let signed = crate::sign::sign_manifest(&layout, key, &image.repository, &index, crate::oci::INDEX)?;
            signatures.push((image.name.clone(), signed));
            let mut subjects = vec![(image.repository.clone(), index.digest.clone())];
            for w in &written {
                subjects.push((format!("{}@{}", image.repository, w.platform.name()), w.manifest.digest.clone()));
            }
            let statement = crate::provenance::statement(plan, image, &image.entry, tool, &subjects);
            let subject = Subject {
                repository: &image.repository,
                blob: &index,
                media_type: crate::oci::INDEX,
                sbom: &index_sbom,
                provenance: Some(&statement),
                created: &plan.created,
            };
            attachments.extend(crate::sigstore::attest(&layout, key, &image.name, &subject)?);
        }
        built.push(BuiltImage {
            name: image.name.clone(),
            repository: image.repository.clone(),
            tags: plan.tags.clone(),
            digest: index.digest.clone(),
            platforms,
        });
        indexes.push((image, index));
    }
    img::write_top_index(&layout, plan, &indexes, &signatures, &attachments)?;
    let record = Built {
        version: plan.version.clone(),
        revision: plan.revision.clone(),
        epoch: plan.epoch,
        created: plan.created.clone(),
        tags: plan.tags.clone(),
        signed_by: key.as_ref().map(crate::sign::fingerprint),
        images: built,
        sources: plan.sources.clone(),
    };
    let json = serde_json::to_vec_pretty(&record)?;
    crate::oci::write_atomic(&staging.join("images.json"), &json)?;
    swap_in(&staging, &plan.out)?;
    Ok(record)
}

fn app_key(image: &str, platform: &str) -> String {
    format!("app {image} {platform}")
}

/// Encodes a layer, or takes its compressed form from the cache when its tar is unchanged.
fn encode_cached(layer: &Layer, cache: &Path) -> anyhow::Result<(Encoded, PathBuf)> {
    if let Some(known) = layer.memo.as_ref().and_then(|m| m.known.as_ref()) {
        let path = cache.join(known.tar_digest.trim_start_matches("sha256:"));
        let gz: Arc<[u8]> = std::fs::read(&path)
            .with_context(|| format!("reading {} (remembered for layer {}): run again", path.display(), layer.name))?
            .into();
        let e = Encoded {
            tar_size: known.tar_size,
            gz_digest: layer::sha256(&gz),
            gz,
            tar_digest: known.tar_digest.clone(),
        };
        return Ok((e, path));
    }
    let (e, path) = encode_tar(layer, cache)?;
    if let Some(memo) = &layer.memo {
        let known = crate::debian::Known {
            tar_digest: e.tar_digest.clone(),
            tar_size: e.tar_size,
            packages: layer.packages.clone(),
        };
        memo.record(&known)?;
    }
    Ok((e, path))
}

fn encode_tar(layer: &Layer, cache: &Path) -> anyhow::Result<(Encoded, PathBuf)> {
    let tar = layer.tar()?;
    let tar_digest = layer::sha256(&tar);
    let path = cache.join(tar_digest.trim_start_matches("sha256:"));
    if let Ok(gz) = std::fs::read(&path) {
        let gz: Arc<[u8]> = gz.into();
        let e = Encoded { tar_size: tar.len() as u64, gz_digest: layer::sha256(&gz), gz, tar_digest };
        return Ok((e, path));
    }
    let e = layer::encode(&tar)?;
    crate::oci::write_atomic(&path, &e.gz)?;
    Ok((e, path))
}

fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        return Ok(());
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "oci".into());
    out.with_file_name(format!(".{name}.{suffix}"))
}

/// Replaces `out` with `staging` (two renames; the old layout is removed afterwards).
fn swap_in(staging: &Path, out: &Path) -> anyhow::Result<()> {
    let old = sibling(out, "old");
    let _ = std::fs::remove_dir_all(&old);
    if out.exists() {
        std::fs::rename(out, &old).with_context(|| format!("moving the previous {} aside", out.display()))?;
    }
    std::fs::rename(staging, out).with_context(|| format!("moving the new layout to {}", out.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
