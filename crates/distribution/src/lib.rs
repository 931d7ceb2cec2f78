//! What `cargo xtask` and the air-gap loader (`stella-load`, shipped static in every bundle)
//! share, so that the code that verifies and pushes a bundle on a disconnected site is the code
//! CI runs every day:
//!
//! - [`registry`]: pushing an OCI image layout over the distribution API;
//! - [`checksums`] and [`signature`]: a bundle's `checksums.txt` and its signature;
//! - [`unpack`]: extracting a `.tar.zst` bundle without trusting its entries;
//! - [`inspect`]: the inventory of an unpacked bundle;
//! - [`serve`]: a read-only registry over a layout, on loopback, for hosts without one.

pub mod auth;
pub mod bundle;
pub mod checksums;
pub mod inspect;
pub mod push;
pub mod registry;
pub mod serve;
pub mod signature;
pub mod unpack;

use std::path::Path;

/// Every failure of this crate names the object it is about: a file, an archive entry, a URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{url}: {message}")]
    Registry { url: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{entry}: {message}")]
    Unpack { entry: String, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

pub(crate) fn invalid(path: impl std::fmt::Display, message: impl Into<String>) -> Error {
    Error::Invalid { path: path.to_string(), message: message.into() }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `sha256:<hex>` of a file, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}
