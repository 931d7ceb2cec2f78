//! Checking a bundle: the signature over `checksums.txt` first (so that a changed checksum list
//! is caught), then every file against it. The key is a trusted copy, or the bundle's own
//! `cosign.pub` accepted only when its fingerprint is the trusted one, or (`Embedded`) the
//! bundle's own key taken as it is, which proves the bundle whole but says nothing of who made it.

use std::path::Path;

use p256::ecdsa::VerifyingKey;

use crate::{Result, checksums, invalid, io, signature};

/// What the signature is checked against.
pub enum Trust {
    /// A trusted copy of the public key.
    Key(VerifyingKey),
    /// The fingerprint (`sha256:<hex>`) the bundle's `cosign.pub` must have.
    Fingerprint(String),
    /// The bundle's own `cosign.pub`: integrity, not origin.
    Embedded,
}

impl Trust {
    /// Whether a verification against this proves who signed the bundle.
    pub fn proves_origin(&self) -> bool {
        !matches!(self, Trust::Embedded)
    }
}

/// In a delta bundle only: the base bundle it needs, and the blobs it takes from there.
pub const BASE: &str = "base.json";

/// The public key's file name inside a bundle.
pub const PUBLIC_KEY: &str = "cosign.pub";

/// The files a bundle archive starts with, in this order, right after its top directory: the
/// unpacker authenticates them before it writes any other entry, and takes its byte budget
/// from `sizes.txt`.
pub const HEAD: [&str; 4] = [checksums::FILE, checksums::SIGNATURE, PUBLIC_KEY, checksums::SIZES];

/// A verified bundle: the key's fingerprint, the number of files checked, and whether the key
/// was trusted by the caller (`false`: only the bundle's own key vouches for it).
#[derive(Debug)]
pub struct Verified {
    pub fingerprint: String,
    pub files: usize,
    pub origin_known: bool,
}

impl Verified {
    /// One line for a person: "verified" only when the origin is known.
    pub fn summary(&self, what: &str) -> String {
        if self.origin_known {
            format!("verified: {what} signed by {}; {} files match checksums.txt", self.fingerprint, self.files)
        } else {
            format!(
                "intact, origin unknown: {what} is whole ({} files match checksums.txt) and signed by the key it \
                 carries, {}, but no trusted key or fingerprint was given to say who that is",
                self.files, self.fingerprint
            )
        }
    }
}

/// Checks `sig` over `sums` with the key `trust` names; `public` is the bundle's own
/// `cosign.pub` text (needed unless `trust` is a key), `origin` names the bundle in errors.
/// Returns the key's fingerprint.
pub fn check_signature(sums: &str, sig: &str, public: Option<&str>, trust: &Trust, origin: &Path) -> Result<String> {
    let embedded = || -> Result<VerifyingKey> {
        let path = origin.join(PUBLIC_KEY);
        let text = public.ok_or_else(|| invalid(path.display(), "is missing"))?;
        signature::public_key(text, &path.display().to_string())
    };
    let key = match trust {
        Trust::Key(k) => *k,
        Trust::Embedded => embedded()?,
        Trust::Fingerprint(want) => {
            let key = embedded()?;
            let got = signature::fingerprint(&key);
            if &got != want {
                return Err(invalid(
                    origin.join(PUBLIC_KEY).display(),
                    format!("its fingerprint is {got}, not the trusted {want}: this bundle was not signed by that key"),
                ));
            }
            key
        }
    };
    signature::verify(&key, sums.as_bytes(), sig, &origin.join(checksums::SIGNATURE).display().to_string())?;
    Ok(signature::fingerprint(&key))
}

/// Verifies the unpacked bundle at `dir`.
pub fn verify(dir: &Path, trust: &Trust) -> Result<Verified> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(io(&path))
    };
    let sums = read(checksums::FILE)?;
    let sig = read(checksums::SIGNATURE)?;
    let public = match trust {
        Trust::Key(_) => None,
        _ => Some(read(PUBLIC_KEY)?),
    };
    let fingerprint = check_signature(&sums, &sig, public.as_deref(), trust, dir)?;
    let files = checksums::verify(dir, &sums)?;
    Ok(Verified { fingerprint, files, origin_known: trust.proves_origin() })
}
