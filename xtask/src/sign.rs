//! Signatures: cosign-compatible "simple signing" signatures over every image index and every
//! platform manifest, with ECDSA P-256 / SHA-256 and deterministic nonces (RFC 6979), so the
//! same key signs the same image to the same bytes.
//!
//! Each signature is written twice into the layout, both pointing at the same payload blob:
//! - cosign's tag scheme: a manifest named `<image>:sha256-<hex>.sig` in `index.json`, whose
//!   layer is the payload (`application/vnd.dev.cosign.simplesigning.v1+json`) annotated with
//!   `dev.cosignproject.cosign/signature` (base64 DER);
//! - an OCI 1.1 referrer: the same layer in a manifest with `subject` = the signed manifest and
//!   `artifactType` = `application/vnd.dev.cosign.artifact.sig.v1+json`.
//!
//! Signatures never change an image digest: they are separate manifests that refer to it.

use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;

use crate::oci::{self, Blob, Layout};

pub const PAYLOAD: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The environment variable naming the private key file.
pub const KEY_ENV: &str = "STELLA_SIGNING_KEY_FILE";

/// Writes a new key pair as `dir/cosign.key` (PKCS#8 PEM, mode 0600) and `dir/cosign.pub`.
pub fn keygen(dir: &Path) -> anyhow::Result<()> {
    use p256::elliptic_curve::Generate;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = SigningKey::try_generate().map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    let private = key.to_pkcs8_pem(LineEnding::LF).context("encoding the private key")?;
    let public = key.verifying_key().to_public_key_pem(LineEnding::LF).context("encoding the public key")?;
    let key_path = dir.join("cosign.key");
    if key_path.exists() {
        bail!("{} exists: refusing to overwrite a private key", key_path.display());
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("creating {}", key_path.display()))?;
        f.write_all(private.as_bytes())?;
    }
    oci::write_atomic(&dir.join("cosign.pub"), public.as_bytes())
}

/// Reads a PKCS#8 PEM private key; the error names the file, never its content.
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the signing key {}", path.display()))?;
    if text.contains("ENCRYPTED") {
        bail!(
            "{}: encrypted keys are not read yet; export an unencrypted PKCS#8 key (`openssl pkcs8 -topk8 -nocrypt`)",
            path.display()
        );
    }
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|_| anyhow::anyhow!("{}: not a PKCS#8 PEM P-256 private key", path.display()))
}

pub fn read_public(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the public key {}", path.display()))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|_| anyhow::anyhow!("{}: not a PEM P-256 public key (SubjectPublicKeyInfo)", path.display()))
}

/// `sha256:<hex>` of the public key's DER encoding: how notes, images.json and bundles name a key.
pub fn fingerprint(key: &SigningKey) -> String {
    public_fingerprint(key.verifying_key())
}

pub fn public_fingerprint(key: &VerifyingKey) -> String {
    stella_distribution::signature::fingerprint(key)
}

/// cosign's simple-signing payload for `digest` of `repository`, in canonical JSON.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    oci::canonical(&json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
}

/// DER ECDSA P-256 / SHA-256 signature (RFC 6979 nonce).
pub fn sign_bytes(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    let sig: Signature = key.sign(message);
    sig.to_der().as_bytes().to_vec()
}

/// A signature as stored in the layout.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The tag-scheme manifest (`sha256-<hex>.sig`).
    pub tag_manifest: Blob,
    /// The OCI 1.1 referrer manifest.
    pub referrer: Blob,
    pub tag: String,
}

/// Signs `subject` (a manifest or index of `repository`) and stores both forms.
pub fn sign_manifest(
    layout: &Layout,
    key: &SigningKey,
    repository: &str,
    subject: &Blob,
    subject_media_type: &str,
) -> anyhow::Result<Stored> {
    let payload = payload(repository, &subject.digest);
    let signature = base64::engine::general_purpose::STANDARD.encode(sign_bytes(key, &payload));
    let payload_blob = layout.put(&payload)?;
    let layer = json!({
        "mediaType": PAYLOAD,
        "digest": payload_blob.digest,
        "size": payload_blob.size,
        "annotations": { SIG_ANNOTATION: signature },
    });
    let config = legacy_config(layout, &[&payload_blob.digest])?;
    let (tag_manifest, _) = layout.put_json(&json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": { "mediaType": oci::CONFIG, "digest": config.digest, "size": config.size },
        "layers": [layer.clone()],
    }))?;
    let empty = layout.put(b"{}")?;
    let (referrer, _) = layout.put_json(&json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "artifactType": SIG_ARTIFACT,
        "config": { "mediaType": EMPTY, "digest": empty.digest, "size": empty.size },
        "layers": [layer],
        "subject": { "mediaType": subject_media_type, "digest": subject.digest, "size": subject.size },
    }))?;
    Ok(Stored { tag_manifest, referrer, tag: tag_for(&subject.digest, "sig") })
}

/// cosign's config for its legacy signature and attestation images, over their layers' digests;
/// its dates are Go's zero time, not a clock.
pub fn legacy_config(layout: &Layout, diff_ids: &[&str]) -> anyhow::Result<Blob> {
    let (config, _) = layout.put_json(&json!({
        "architecture": "",
        "os": "",
        "created": "0001-01-01T00:00:00Z",
        "history": diff_ids.iter().map(|_| json!({ "created": "0001-01-01T00:00:00Z" })).collect::<Vec<_>>(),
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "config": {},
    }))?;
    Ok(config)
}

/// cosign's tag for an attachment of `digest`: `sha256-<hex>.<suffix>`.
pub fn tag_for(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replace(':', "-"))
}
