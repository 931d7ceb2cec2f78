//! Checking an unpacked bundle: the signature over `checksums.txt` first (so that a changed
//! checksum list is caught), then every file against it. The key is either a trusted copy, or
//! the bundle's own `cosign.pub` accepted only when its fingerprint is the trusted one.

use std::path::Path;

use p256::ecdsa::VerifyingKey;

use crate::{Result, checksums, invalid, io, signature};

/// What the signature is checked against.
pub enum Trust {
    /// A trusted copy of the public key.
    Key(VerifyingKey),
    /// The fingerprint (`sha256:<hex>`) the bundle's `cosign.pub` must have.
    Fingerprint(String),
}

/// The public key's file name inside a bundle.
pub const PUBLIC_KEY: &str = "cosign.pub";

/// A verified bundle: the key's fingerprint and the number of files checked.
pub struct Verified {
    pub fingerprint: String,
    pub files: usize,
}

pub fn verify(dir: &Path, trust: &Trust) -> Result<Verified> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(io(&path))
    };
    let sums = read(checksums::FILE)?;
    let sig = read(checksums::SIGNATURE)?;
    let key = match trust {
        Trust::Key(k) => *k,
        Trust::Fingerprint(want) => {
            let path = dir.join(PUBLIC_KEY);
            let key = signature::public_key(&read(PUBLIC_KEY)?, &path.display().to_string())?;
            let got = signature::fingerprint(&key);
            if &got != want {
                return Err(invalid(
                    path.display(),
                    format!("its fingerprint is {got}, not the trusted {want}: this bundle was not signed by that key"),
                ));
            }
            key
        }
    };
    signature::verify(&key, sums.as_bytes(), &sig, &dir.join(checksums::SIGNATURE).display().to_string())?;
    let files = checksums::verify(dir, &sums)?;
    Ok(Verified { fingerprint: signature::fingerprint(&key), files })
}
