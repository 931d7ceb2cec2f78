//! `cargo xtask verify --key cosign.pub [LAYOUT]`: what an auditor or a release gate runs.
//!
//! Checks that every blob's bytes match its digest, and that every image index and platform
//! manifest of `images.json` carries a valid signature by the given key, both as cosign's
//! `sha256-<hex>.sig` tag and as an OCI 1.1 referrer, each payload naming the right digest.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use serde::Serialize;

use crate::assemble::Built;
use crate::sign;

#[derive(Debug, Serialize)]
pub struct Row {
    pub image: String,
    /// Manifests and indexes that must be signed.
    pub subjects: usize,
    /// Valid signatures found (tag scheme + referrers).
    pub valid: usize,
    /// Valid provenance attestations (DSSE, SLSA v1) over the image index.
    pub provenance: usize,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub blobs: usize,
    pub blob_problems: Vec<String>,
    pub images: Vec<Row>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.blob_problems.is_empty() && self.images.iter().all(|r| r.problems.is_empty())
    }
}

fn read_json(layout: &Path, digest: &str) -> anyhow::Result<serde_json::Value> {
    let path = layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let bytes = std::fs::read(&path).with_context(|| format!("blob {digest} is missing"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("blob {digest} is not JSON"))
}

/// Checks one signature manifest over `subject`; `Err` says what is wrong.
fn check_signature(
    layout: &Path,
    key: &VerifyingKey,
    manifest: &str,
    repository: &str,
    subject: &str,
) -> anyhow::Result<()> {
    let doc = read_json(layout, manifest)?;
    let layer = &doc["layers"][0];
    anyhow::ensure!(layer["mediaType"] == sign::PAYLOAD, "signature manifest {manifest} has no simple-signing layer");
    let payload_digest = layer["digest"].as_str().context("payload without digest")?;
    let payload = std::fs::read(layout.join("blobs/sha256").join(payload_digest.trim_start_matches("sha256:")))
        .with_context(|| format!("payload {payload_digest} is missing"))?;
    anyhow::ensure!(crate::layer::sha256(&payload) == payload_digest, "payload {payload_digest} was altered");
    let b64 = layer["annotations"][sign::SIG_ANNOTATION].as_str().context("no signature annotation")?;
    let der = base64::engine::general_purpose::STANDARD.decode(b64).context("signature is not base64")?;
    let sig = DerSignature::try_from(der.as_slice()).map_err(|_| anyhow::anyhow!("signature is not DER ECDSA"))?;
    key.verify(&payload, &sig).map_err(|_| anyhow::anyhow!("signature does not verify with this key"))?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).context("payload is not JSON")?;
    anyhow::ensure!(
        claims["critical"]["image"]["docker-manifest-digest"] == subject,
        "payload signs {} instead of {subject}",
        claims["critical"]["image"]["docker-manifest-digest"]
    );
    anyhow::ensure!(
        claims["critical"]["identity"]["docker-reference"] == repository,
        "payload names another repository"
    );
    Ok(())
}

/// Checks a DSSE envelope: its signature over the PAE and that its statement covers `subject`.
fn check_provenance(layout: &Path, key: &VerifyingKey, envelope: &str, subject: &str) -> anyhow::Result<()> {
    let env = read_json(layout, envelope)?;
    anyhow::ensure!(env["payloadType"] == crate::provenance::PAYLOAD_TYPE, "not an in-toto envelope");
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(env["payload"].as_str().context("no payload")?).context("payload is not base64")?;
    let sig = b64.decode(env["signatures"][0]["sig"].as_str().context("no signature")?).context("sig is not base64")?;
    let sig = DerSignature::try_from(sig.as_slice()).map_err(|_| anyhow::anyhow!("signature is not DER ECDSA"))?;
    let pae = crate::provenance::pae(crate::provenance::PAYLOAD_TYPE, &payload);
    key.verify(&pae, &sig).map_err(|_| anyhow::anyhow!("envelope signature does not verify with this key"))?;
    let statement: serde_json::Value = serde_json::from_slice(&payload).context("statement is not JSON")?;
    anyhow::ensure!(statement["predicateType"] == crate::provenance::PREDICATE, "not SLSA provenance v1");
    let hex = subject.trim_start_matches("sha256:");
    let covered = statement["subject"].as_array().into_iter().flatten().any(|s| s["digest"]["sha256"] == hex);
    anyhow::ensure!(covered, "the statement does not name {subject}");
    Ok(())
}

pub fn verify(layout: &Path, key: &VerifyingKey) -> anyhow::Result<Report> {
    let built = Built::read(layout)?;
    let mut blob_problems = Vec::new();
    let mut blobs = 0;
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).context("reading the layout's blobs")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        blobs += 1;
        if crate::layer::sha256(&std::fs::read(entry.path())?) != format!("sha256:{name}") {
            blob_problems.push(format!("blob sha256:{name}: its bytes do not match its digest"));
        }
    }
    let index = read_index(layout)?;
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    let mut referrers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut envelopes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let digest = m["digest"].as_str().unwrap_or_default().to_string();
        if let Some(name) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            tags.insert(name.to_string(), digest.clone());
        }
        let kind = m["artifactType"].as_str().unwrap_or_default();
        if kind != sign::SIG_ARTIFACT && kind != crate::provenance::ENVELOPE {
            continue;
        }
        if let Ok(doc) = read_json(layout, &digest) {
            let subject = doc["subject"]["digest"].as_str().unwrap_or_default().to_string();
            if kind == sign::SIG_ARTIFACT {
                referrers.entry(subject).or_default().push(digest);
            } else {
                let envelope = doc["layers"][0]["digest"].as_str().unwrap_or_default().to_string();
                envelopes.entry(subject).or_default().push(envelope);
            }
        }
    }
    let mut rows = Vec::new();
    for image in &built.images {
        let subjects: Vec<&String> =
            std::iter::once(&image.digest).chain(image.platforms.values().map(|p| &p.manifest)).collect();
        let mut row =
            Row { image: image.name.clone(), subjects: subjects.len(), valid: 0, provenance: 0, problems: vec![] };
        for subject in subjects {
            let tag = format!("{}:{}", image.name, sign::tag_for(subject, "sig"));
            match tags.get(&tag) {
                None => row.problems.push(format!("{subject}: no signature tag {tag}")),
                Some(m) => match check_signature(layout, key, m, &image.repository, subject) {
                    Ok(()) => row.valid += 1,
                    Err(e) => row.problems.push(format!("{subject} ({tag}): {e:#}")),
                },
            }
            let found = referrers.get(subject.as_str()).cloned().unwrap_or_default();
            if found.is_empty() {
                row.problems.push(format!("{subject}: no signature referrer"));
            }
            for m in found {
                match check_signature(layout, key, &m, &image.repository, subject) {
                    Ok(()) => row.valid += 1,
                    Err(e) => row.problems.push(format!("{subject} (referrer {m}): {e:#}")),
                }
            }
        }
        let found = envelopes.get(&image.digest).cloned().unwrap_or_default();
        if found.is_empty() {
            row.problems.push(format!("{}: no provenance attestation", image.digest));
        }
        for envelope in found {
            match check_provenance(layout, key, &envelope, &image.digest) {
                Ok(()) => row.provenance += 1,
                Err(e) => row.problems.push(format!("provenance {envelope}: {e:#}")),
            }
        }
        rows.push(row);
    }
    Ok(Report { blobs, blob_problems, images: rows })
}

fn read_index(layout: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes =
        std::fs::read(layout.join("index.json")).with_context(|| format!("reading {}/index.json", layout.display()))?;
    serde_json::from_slice(&bytes).context("index.json is not JSON")
}
