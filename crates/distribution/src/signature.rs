//! The bundle's signature: ECDSA P-256 / SHA-256 over `checksums.txt`, base64 of the DER
//! signature, as `cosign sign-blob` writes it (so `cosign verify-blob --key cosign.pub
//! --signature bundle.sig checksums.txt` and `openssl dgst -sha256 -verify` check it too).

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

use crate::{Result, invalid, sha256};

/// Reads a PEM public key (SubjectPublicKeyInfo, as `cosign.pub`).
pub fn public_key(pem: &str, origin: &str) -> Result<VerifyingKey> {
    VerifyingKey::from_public_key_pem(pem)
        .map_err(|_| invalid(origin, "not a PEM P-256 public key (SubjectPublicKeyInfo)"))
}

/// `sha256:<hex>` of the key's DER encoding: how notes, images.json and bundles name a key.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let der = key.to_public_key_der().expect("a P-256 key encodes");
    sha256(der.as_bytes())
}

/// Checks `signature` (base64 DER, with at most one final newline) over `message`. Nothing else
/// is tolerated, so that any change to the file is noticed.
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &str, origin: &str) -> Result<()> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature.strip_suffix('\n').unwrap_or(signature))
        .map_err(|_| invalid(origin, "not base64"))?;
    let sig = DerSignature::try_from(der.as_slice()).map_err(|_| invalid(origin, "not a DER ECDSA signature"))?;
    key.verify(message, &sig).map_err(|_| invalid(origin, "the signature does not match checksums.txt and this key"))
}
