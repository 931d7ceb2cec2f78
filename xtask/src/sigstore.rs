//! Signatures and attestations in the format today's cosign (v3, 2025) writes and reads by
//! default: Sigstore bundles (protobuf-specs v0.3 JSON), each one an OCI 1.1 referrer of the
//! manifest or index it is about. And, beside them, cosign's legacy `sha256-<hex>.att` tag, a
//! manifest whose layers are the DSSE envelopes annotated as cosign annotates them, so cosign 2
//! finds the same attestations.
//!
//! Every signed subject (each image index and each platform manifest) gets:
//! - a signature bundle: an in-toto statement with predicate type `https://sigstore.dev/cosign/sign/v1`
//!   and an empty predicate, whose subject is the manifest digest (what `cosign sign` writes);
//! - an SBOM attestation bundle: predicate type `https://spdx.dev/Document`, the subject's SPDX
//!   document as predicate (the platform's SBOM for a manifest, the index SBOM for an index);
//! - for an image index, also a provenance attestation bundle (SLSA v1, [`crate::provenance`]).
//!
//! Offline and keyed: the bundle names the key by a hint (base64 of the SHA-256 of its DER), has
//! no transparency log entry and no timestamp, and is deterministic (RFC 6979 signatures,
//! canonical JSON, the build's date where cosign writes one).

use std::collections::BTreeMap;

use base64::Engine;
use p256::ecdsa::SigningKey;
use serde_json::{Value, json};

use crate::oci::image::Attachment;
use crate::oci::{self, Blob, Layout};

/// The Sigstore bundle v0.3 media type: the artifact type and the layer type of its referrer.
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// cosign v3's predicate type for an image signature.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// cosign's predicate type for an SPDX JSON SBOM (`cosign attest --type spdxjson`).
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The referrer annotations cosign v3 writes, which let a client pick a bundle without reading it.
pub const CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
/// The annotation of a legacy `.att` layer naming its predicate type.
pub const LEGACY_PREDICATE_ANNOTATION: &str = "predicateType";

/// What one subject (an image index or a platform manifest) is signed and attested with.
pub struct Subject<'a> {
    pub repository: &'a str,
    pub blob: &'a Blob,
    pub media_type: &'a str,
    /// The subject's SPDX document.
    pub sbom: &'a [u8],
    /// The SLSA provenance statement, for an image index.
    pub provenance: Option<&'a Value>,
    /// The build's date (RFC 3339, from the source date epoch), written where cosign writes one.
    pub created: &'a str,
}

/// An in-toto Statement v1 about `digest` of `repository`.
pub fn statement(repository: &str, digest: &str, predicate_type: &str, predicate: Value) -> Value {
    json!({
        "_type": crate::provenance::STATEMENT,
        "subject": [{ "name": repository, "digest": { "sha256": digest.trim_start_matches("sha256:") } }],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// The key hint of a keyed bundle: base64 of the SHA-256 of the public key's DER, as cosign writes it.
pub fn key_hint(key: &SigningKey) -> String {
    let fingerprint = crate::sign::fingerprint(key);
    let raw = hex::decode(fingerprint.trim_start_matches("sha256:")).expect("a fingerprint is hex");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A Sigstore bundle v0.3 holding a DSSE envelope over `statement`, in canonical JSON.
pub fn bundle(key: &SigningKey, statement: &Value) -> Vec<u8> {
    let payload = crate::provenance::payload(statement);
    let sig = crate::sign::sign_bytes(key, &crate::provenance::pae(crate::provenance::PAYLOAD_TYPE, &payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    oci::canonical(&json!({
        "mediaType": BUNDLE,
        "verificationMaterial": { "publicKey": { "hint": key_hint(key) }, "tlogEntries": [] },
        "dsseEnvelope": {
            "payload": b64.encode(&payload),
            "payloadType": crate::provenance::PAYLOAD_TYPE,
            "signatures": [{ "sig": b64.encode(sig) }],
        },
    }))
}

/// Signs and attests one subject: its bundles as referrers, and its legacy `.att` tag.
pub fn attest(layout: &Layout, key: &SigningKey, image: &str, s: &Subject) -> anyhow::Result<Vec<Attachment>> {
    let sbom: Value = serde_json::from_slice(s.sbom)?;
    let mut statements = vec![
        (SIGN_PREDICATE, statement(s.repository, &s.blob.digest, SIGN_PREDICATE, json!({}))),
        (SPDX_PREDICATE, statement(s.repository, &s.blob.digest, SPDX_PREDICATE, sbom)),
    ];
    if let Some(provenance) = s.provenance {
        statements.push((crate::provenance::PREDICATE, provenance.clone()));
    }
    let mut out = Vec::new();
    let mut legacy = Vec::new();
    for (predicate_type, statement) in &statements {
        out.push(attach(layout, key, s.blob, s.media_type, predicate_type, statement, s.created)?);
        // cosign 2 reads attestations, not signatures, from the `.att` tag.
        if *predicate_type != SIGN_PREDICATE {
            legacy.push((*predicate_type, crate::provenance::envelope(key, statement)));
        }
    }
    out.push(legacy_att(layout, image, &s.blob.digest, &legacy)?);
    Ok(out)
}

/// A signature bundle alone (no attestation): for artifacts without an SBOM, such as the chart.
pub fn sign(
    layout: &Layout,
    key: &SigningKey,
    repository: &str,
    subject: &Blob,
    media_type: &str,
    created: &str,
) -> anyhow::Result<Attachment> {
    let statement = statement(repository, &subject.digest, SIGN_PREDICATE, json!({}));
    attach(layout, key, subject, media_type, SIGN_PREDICATE, &statement, created)
}

/// Stores the bundle of `statement` as a referrer of `subject`, annotated as cosign v3 does.
fn attach(
    layout: &Layout,
    key: &SigningKey,
    subject: &Blob,
    media_type: &str,
    predicate_type: &str,
    statement: &Value,
    created: &str,
) -> anyhow::Result<Attachment> {
    let annotations = BTreeMap::from([
        (CONTENT_ANNOTATION.to_string(), "dsse-envelope".to_string()),
        (PREDICATE_ANNOTATION.to_string(), predicate_type.to_string()),
        ("org.opencontainers.image.created".to_string(), created.to_string()),
    ]);
    crate::oci::image::attach_with(layout, subject, media_type, BUNDLE, &bundle(key, statement), &annotations)
}

/// cosign's legacy attestation tag `<image>:sha256-<hex>.att`: a manifest with one DSSE layer per
/// attestation, annotated with its predicate type and an empty signature annotation, as cosign does.
fn legacy_att(
    layout: &Layout,
    image: &str,
    subject: &str,
    envelopes: &[(&str, Vec<u8>)],
) -> anyhow::Result<Attachment> {
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for (predicate_type, envelope) in envelopes {
        let blob = layout.put(envelope)?;
        layers.push(json!({
            "mediaType": crate::provenance::ENVELOPE,
            "digest": blob.digest,
            "size": blob.size,
            "annotations": { crate::sign::SIG_ANNOTATION: "", LEGACY_PREDICATE_ANNOTATION: predicate_type },
        }));
        blobs.push(blob);
    }
    let diff_ids: Vec<&str> = blobs.iter().map(|b| b.digest.as_str()).collect();
    let config = crate::sign::legacy_config(layout, &diff_ids)?;
    let (manifest, _) = layout.put_json(&json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": { "mediaType": oci::CONFIG, "digest": config.digest, "size": config.size },
        "layers": layers,
    }))?;
    Ok(Attachment {
        manifest,
        name: Some(format!("{image}:{}", crate::sign::tag_for(subject, "att"))),
        artifact_type: None,
        blob: blobs.first().cloned().unwrap_or_else(|| config.clone()),
    })
}
