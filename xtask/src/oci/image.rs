//! The JSON documents of one image: the configuration and manifest per platform, and the
//! image index that binds the platforms together.
//!
//! Built with oci-spec's types, serialized through [`super::canonical`].

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use anyhow::Context;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};

use super::{Blob, Layout};
use crate::catalog::Platform;
use crate::plan::{ImagePlan, Plan};

/// A layer as the image documents refer to it.
#[derive(Clone, Debug)]
pub struct LayerRef {
    /// Shown in the config's history.
    pub created_by: String,
    /// The uncompressed tar's digest (`rootfs.diff_ids`).
    pub diff_id: String,
    /// The compressed blob.
    pub blob: Blob,
}

/// A written manifest and its platform.
#[derive(Clone, Debug)]
pub struct Written {
    pub platform: Platform,
    pub manifest: Blob,
    pub config: Blob,
}

fn descriptor(media_type: MediaType, blob: &Blob) -> anyhow::Result<Descriptor> {
    let digest = Digest::from_str(&blob.digest).with_context(|| format!("digest {}", blob.digest))?;
    Ok(Descriptor::new(media_type, blob.size, digest))
}

fn hash_map(map: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Annotations of manifests and indexes: the labels plus `created`.
pub fn annotations(plan: &Plan, image: &ImagePlan) -> HashMap<String, String> {
    let mut a = hash_map(&image.labels);
    a.insert("org.opencontainers.image.created".into(), plan.created.clone());
    a
}

/// Writes the configuration and manifest of one platform of `image`.
pub fn write_manifest(
    layout: &Layout,
    plan: &Plan,
    image: &ImagePlan,
    platform: Platform,
    layers: &[LayerRef],
) -> anyhow::Result<Written> {
    let mut labels = image.labels.clone();
    labels.insert("org.opencontainers.image.created".into(), plan.created.clone());
    let mut config = ConfigBuilder::default()
        .user(image.user.clone())
        .env(image.env.clone())
        .entrypoint(image.entrypoint.clone())
        .working_dir("/app")
        .labels(hash_map(&labels))
        .stop_signal(image.stop_signal.clone());
    if !image.cmd.is_empty() {
        config = config.cmd(image.cmd.clone());
    }
    if !image.ports.is_empty() {
        config = config.exposed_ports(image.ports.iter().map(|p| format!("{p}/tcp")).collect::<Vec<_>>());
    }
    if !image.volumes.is_empty() {
        config = config.volumes(image.volumes.clone());
    }
    let history = layers
        .iter()
        .map(|l| {
            HistoryBuilder::default()
                .created(plan.created.clone())
                .created_by(l.created_by.clone())
                .comment("stella-dist")
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = ImageConfigurationBuilder::default()
        .created(plan.created.clone())
        .architecture(Arch::from(platform.architecture))
        .os(Os::from(platform.os))
        .config(config.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
                .build()?,
        )
        .history(history);
    if let Some(variant) = platform.variant {
        builder = builder.variant(variant);
    }
    let mut doc = serde_json::to_value(builder.build()?)?;
    if image.healthcheck {
        // Docker's HEALTHCHECK lives in the image config as a Docker extension that OCI tools
        // ignore; durations are nanoseconds. The binary checks its own readiness: no shell.
        doc["config"]["Healthcheck"] = serde_json::json!({
            "Test": ["CMD", image.entrypoint[0], "healthcheck"],
            "Interval": 10_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "StartPeriod": 10_000_000_000u64,
            "Retries": 3,
        });
    }
    let (config_blob, _) = layout.put_json(&doc)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_blob)?)
        .layers(layers.iter().map(|l| descriptor(MediaType::ImageLayerGzip, &l.blob)).collect::<Result<Vec<_>, _>>()?)
        .annotations(annotations(plan, image))
        .build()?;
    let (manifest_blob, _) = layout.put_json(&manifest)?;
    Ok(Written { platform, manifest: manifest_blob, config: config_blob })
}

/// Writes the image index of `image` over its platform manifests.
pub fn write_index(layout: &Layout, plan: &Plan, image: &ImagePlan, manifests: &[Written]) -> anyhow::Result<Blob> {
    let mut entries = Vec::new();
    for w in manifests {
        let mut platform =
            PlatformBuilder::default().architecture(Arch::from(w.platform.architecture)).os(Os::from(w.platform.os));
        if let Some(v) = w.platform.variant {
            platform = platform.variant(v);
        }
        let mut d = descriptor(MediaType::ImageManifest, &w.manifest)?;
        d.set_platform(Some(platform.build()?));
        entries.push(d);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .annotations(annotations(plan, image))
        .build()?;
    Ok(layout.put_json(&index)?.0)
}

/// Writes the layout's `index.json`: one entry per image and tag, named `<image>:<tag>`
/// (`org.opencontainers.image.ref.name`) with the full reference for containerd and Docker
/// (`io.containerd.image.name`).
pub fn write_top_index(
    layout: &Layout,
    plan: &Plan,
    images: &[(&ImagePlan, Blob)],
    signatures: &[(String, crate::sign::Stored)],
    attachments: &[Attachment],
) -> anyhow::Result<Vec<u8>> {
    let mut entries = Vec::new();
    for (image, blob) in images {
        for tag in &plan.tags {
            let mut d = descriptor(MediaType::ImageIndex, blob)?;
            d.set_annotations(Some(HashMap::from([
                ("org.opencontainers.image.ref.name".to_string(), format!("{}:{tag}", image.name)),
                ("io.containerd.image.name".to_string(), format!("{}:{tag}", image.repository)),
            ])));
            entries.push(d);
        }
    }
    // Signatures: cosign's `<image>:sha256-<hex>.sig` tags, and the OCI 1.1 referrers, listed
    // without a name so that layout readers keep them.
    for (image, s) in signatures {
        let mut d = descriptor(MediaType::ImageManifest, &s.tag_manifest)?;
        d.set_annotations(Some(HashMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            format!("{image}:{}", s.tag),
        )])));
        entries.push(d);
        let mut r = descriptor(MediaType::ImageManifest, &s.referrer)?;
        r.set_artifact_type(Some(MediaType::Other(crate::sign::SIG_ARTIFACT.into())));
        entries.push(r);
    }
    for a in attachments {
        let mut d = descriptor(MediaType::ImageManifest, &a.manifest)?;
        d.set_artifact_type(a.artifact_type.clone().map(MediaType::Other));
        if let Some(name) = &a.name {
            d.set_annotations(Some(HashMap::from([("org.opencontainers.image.ref.name".to_string(), name.clone())])));
        }
        entries.push(d);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .build()?;
    let bytes = super::canonical(&index);
    super::write_atomic(&layout.dir.join("index.json"), &bytes)?;
    Ok(bytes)
}

/// An artifact attached to a manifest (an SBOM, an attestation, a Sigstore bundle): an OCI 1.1
/// referrer, or a manifest found by its cosign tag name.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub manifest: Blob,
    /// A name in `index.json` besides the referrer link (cosign's `<image>:sha256-<hex>.att`).
    pub name: Option<String>,
    /// `None` for cosign's legacy tag manifests, which are not referrers.
    pub artifact_type: Option<String>,
    pub blob: Blob,
}

/// Stores `content` as an artifact of `artifact_type` whose `subject` is `subject`.
pub fn attach(
    layout: &Layout,
    subject: &Blob,
    subject_media_type: &str,
    artifact_type: &str,
    content: &[u8],
) -> anyhow::Result<Attachment> {
    attach_with(layout, subject, subject_media_type, artifact_type, content, &BTreeMap::new())
}

/// [`attach`] with annotations on the referrer manifest (what a client reads from the
/// referrers list without fetching the artifact).
pub fn attach_with(
    layout: &Layout,
    subject: &Blob,
    subject_media_type: &str,
    artifact_type: &str,
    content: &[u8],
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<Attachment> {
    let blob = layout.put(content)?;
    let empty = layout.put(b"{}")?;
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": super::MANIFEST,
        "artifactType": artifact_type,
        "config": { "mediaType": crate::sign::EMPTY, "digest": empty.digest, "size": empty.size },
        "layers": [{ "mediaType": artifact_type, "digest": blob.digest, "size": blob.size }],
        "subject": { "mediaType": subject_media_type, "digest": subject.digest, "size": subject.size },
    });
    if !annotations.is_empty() {
        manifest["annotations"] = serde_json::json!(annotations);
    }
    let (manifest, _) = layout.put_json(&manifest)?;
    Ok(Attachment { manifest, name: None, artifact_type: Some(artifact_type.to_string()), blob })
}
