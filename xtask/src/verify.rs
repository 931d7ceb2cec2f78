//! `cargo xtask verify --key cosign.pub [LAYOUT]`: what an auditor or a release gate runs.
//!
//! Checks that every blob's bytes match its digest, and that every image index and platform
//! manifest of `images.json` is signed and attested by the given key in both of cosign's forms:
//! - legacy: the simple-signing `sha256-<hex>.sig` tag and its referrer, and the `sha256-<hex>.att`
//!   tag holding the SBOM (and, for an index, SLSA provenance) attestations;
//! - cosign v3: Sigstore bundle referrers for the signature, the SBOM and the provenance;
//!
//! each naming the right digest and announcing the predicate type its statement has.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use serde::Serialize;

use crate::assemble::Built;
use crate::{sign, sigstore};

#[derive(Debug, Serialize)]
pub struct Row {
    pub image: String,
    /// Manifests and indexes that must be signed.
    pub subjects: usize,
    /// Valid legacy signatures found (cosign's `.sig` tags + their referrers).
    pub valid: usize,
    /// Valid Sigstore bundles (signatures and attestations) referring to the subjects.
    pub bundles: usize,
    /// Valid attestations in cosign's legacy `.att` tags.
    pub attestations: usize,
    /// Valid SLSA v1 provenance statements over the image index (bundle and `.att`: 2).
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
    // A digest from the layout under audit names a file: only 64 hex digits may.
    let hex = digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let hex = hex.with_context(|| format!("{digest:?} is not a sha256 digest"))?;
    let path = layout.join("blobs/sha256").join(hex);
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

/// Checks a DSSE envelope (`payload`, `payloadType`, `signatures`): its signature over the PAE
/// with `key`, and that its in-toto statement is about `subject`. Returns the predicate type.
fn check_envelope(env: &serde_json::Value, key: &VerifyingKey, subject: &str) -> anyhow::Result<String> {
    anyhow::ensure!(env["payloadType"] == crate::provenance::PAYLOAD_TYPE, "not an in-toto envelope");
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(env["payload"].as_str().context("no payload")?).context("payload is not base64")?;
    let sig = b64.decode(env["signatures"][0]["sig"].as_str().context("no signature")?).context("sig is not base64")?;
    let sig = DerSignature::try_from(sig.as_slice()).map_err(|_| anyhow::anyhow!("signature is not DER ECDSA"))?;
    let pae = crate::provenance::pae(crate::provenance::PAYLOAD_TYPE, &payload);
    key.verify(&pae, &sig).map_err(|_| anyhow::anyhow!("envelope signature does not verify with this key"))?;
    let statement: serde_json::Value = serde_json::from_slice(&payload).context("statement is not JSON")?;
    anyhow::ensure!(statement["_type"] == crate::provenance::STATEMENT, "not an in-toto Statement v1");
    let hex = subject.trim_start_matches("sha256:");
    let covered = statement["subject"].as_array().into_iter().flatten().any(|s| s["digest"]["sha256"] == hex);
    anyhow::ensure!(covered, "the statement does not name {subject}");
    Ok(statement["predicateType"].as_str().unwrap_or_default().to_string())
}

/// Checks a Sigstore bundle referrer: a v0.3 bundle naming this key, whose DSSE envelope
/// verifies and whose predicate type is the one the referrer's annotation announces.
fn check_bundle(layout: &Path, key: &VerifyingKey, manifest: &str, subject: &str) -> anyhow::Result<String> {
    let doc = read_json(layout, manifest)?;
    let layer = doc["layers"][0]["digest"].as_str().context("a bundle referrer without a layer")?;
    let bundle = read_json(layout, layer)?;
    anyhow::ensure!(bundle["mediaType"] == sigstore::BUNDLE, "bundle {layer} is not a Sigstore bundle v0.3");
    let hint = bundle["verificationMaterial"]["publicKey"]["hint"].as_str().unwrap_or_default();
    let fingerprint = crate::sign::public_fingerprint(key);
    let expected = base64::engine::general_purpose::STANDARD
        .encode(hex::decode(fingerprint.trim_start_matches("sha256:")).unwrap_or_default());
    anyhow::ensure!(hint == expected, "bundle {layer} names another key ({hint})");
    anyhow::ensure!(
        doc["annotations"][sigstore::CONTENT_ANNOTATION] == "dsse-envelope",
        "bundle referrer {manifest} does not announce a DSSE envelope"
    );
    let predicate = check_envelope(&bundle["dsseEnvelope"], key, subject)?;
    anyhow::ensure!(
        doc["annotations"][sigstore::PREDICATE_ANNOTATION] == predicate.as_str(),
        "bundle {layer}: the referrer announces {} but the statement is {predicate}",
        doc["annotations"][sigstore::PREDICATE_ANNOTATION]
    );
    Ok(predicate)
}

/// Checks cosign's legacy `.att` manifest: every layer a DSSE envelope that verifies, annotated
/// with its statement's predicate type. Returns the predicate types found.
fn check_legacy_att(layout: &Path, key: &VerifyingKey, manifest: &str, subject: &str) -> anyhow::Result<Vec<String>> {
    let doc = read_json(layout, manifest)?;
    let mut found = Vec::new();
    for layer in doc["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"].as_str().context("a layer without digest")?;
        anyhow::ensure!(layer["mediaType"] == crate::provenance::ENVELOPE, "layer {digest} is not a DSSE envelope");
        let predicate = check_envelope(&read_json(layout, digest)?, key, subject)?;
        anyhow::ensure!(
            layer["annotations"][sigstore::LEGACY_PREDICATE_ANNOTATION] == predicate.as_str(),
            "layer {digest}: annotated {} but the statement is {predicate}",
            layer["annotations"][sigstore::LEGACY_PREDICATE_ANNOTATION]
        );
        found.push(predicate);
    }
    Ok(found)
}

/// The predicate types each subject must carry, as bundles (all three less provenance on a
/// platform manifest) and in its legacy `.att` tag (the same without the signature).
fn expected(index: bool) -> Vec<&'static str> {
    let mut out = vec![sigstore::SIGN_PREDICATE, sigstore::SPDX_PREDICATE];
    if index {
        out.push(crate::provenance::PREDICATE);
    }
    out
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
    let mut bundles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let digest = m["digest"].as_str().unwrap_or_default().to_string();
        if let Some(name) = m["annotations"]["org.opencontainers.image.ref.name"].as_str() {
            tags.insert(name.to_string(), digest.clone());
        }
        let kind = m["artifactType"].as_str().unwrap_or_default();
        if kind != sign::SIG_ARTIFACT && kind != sigstore::BUNDLE {
            continue;
        }
        if let Ok(doc) = read_json(layout, &digest) {
            let subject = doc["subject"]["digest"].as_str().unwrap_or_default().to_string();
            let into = if kind == sign::SIG_ARTIFACT { &mut referrers } else { &mut bundles };
            into.entry(subject).or_default().push(digest);
        }
    }
    let mut rows = Vec::new();
    for image in &built.images {
        let subjects: Vec<&String> =
            std::iter::once(&image.digest).chain(image.platforms.values().map(|p| &p.manifest)).collect();
        let mut row = Row {
            image: image.name.clone(),
            subjects: subjects.len(),
            valid: 0,
            bundles: 0,
            attestations: 0,
            provenance: 0,
            problems: vec![],
        };
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
            let wanted = expected(*subject == image.digest);
            let mut seen = Vec::new();
            for m in bundles.get(subject.as_str()).cloned().unwrap_or_default() {
                match check_bundle(layout, key, &m, subject) {
                    Ok(predicate) => {
                        row.bundles += 1;
                        row.provenance += usize::from(predicate == crate::provenance::PREDICATE);
                        seen.push(predicate);
                    }
                    Err(e) => row.problems.push(format!("{subject} (bundle {m}): {e:#}")),
                }
            }
            for w in &wanted {
                if !seen.iter().any(|p| p == w) {
                    row.problems.push(format!("{subject}: no valid Sigstore bundle with predicate type {w}"));
                }
            }
            let att = format!("{}:{}", image.name, sign::tag_for(subject, "att"));
            let found = match tags.get(&att) {
                None => Err(anyhow::anyhow!("no attestation tag {att}")),
                Some(m) => check_legacy_att(layout, key, m, subject),
            };
            match found {
                Ok(found) => {
                    row.attestations += found.len();
                    row.provenance += found.iter().filter(|p| *p == crate::provenance::PREDICATE).count();
                    for w in wanted.iter().filter(|w| **w != sigstore::SIGN_PREDICATE) {
                        if !found.iter().any(|p| p == w) {
                            row.problems.push(format!("{subject} ({att}): no attestation of {w}"));
                        }
                    }
                }
                Err(e) => row.problems.push(format!("{subject} ({att}): {e:#}")),
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
