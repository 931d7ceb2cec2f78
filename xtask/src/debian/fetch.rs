//! Downloading locked `.deb` files into a cache keyed by their SHA-256, and refusing any whose
//! bytes differ from the lock. The cache is shared by every checkout (content-addressed, so a
//! stale or foreign entry cannot be used by mistake: each read is hashed again).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::Deb;

/// `STELLA_DEB_CACHE`, else `$XDG_CACHE_HOME/stella/debs`, else `~/.cache/stella/debs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STELLA_DEB_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| crate::workspace::target_dir().join("stella-cache"));
    base.join("stella/debs")
}

/// The bytes of `deb`, from the cache or downloaded, always checked against the lock.
pub fn fetch(deb: &Deb, cache: &Path) -> anyhow::Result<Vec<u8>> {
    let path = cache.join(format!("{}.deb", deb.sha256));
    if let Ok(bytes) = std::fs::read(&path) {
        check(deb, &bytes, &format!("the cached copy {}", path.display()))?;
        return Ok(bytes);
    }
    let bytes = download(deb)?;
    check(deb, &bytes, &deb.url)?;
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    crate::oci::write_atomic(&path, &bytes)?;
    Ok(bytes)
}

/// Fails, naming the package and both hashes, when `bytes` are not what the lock pins.
pub fn check(deb: &Deb, bytes: &[u8], origin: &str) -> anyhow::Result<()> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != deb.sha256 {
        bail!(
            "{} {} ({}): {origin} has SHA-256 {actual}, but layers/debian.lock expects {}\n  \
             help: delete the cached file if it is corrupt; if the archive really changed, review it and run `cargo xtask layers lock`",
            deb.name,
            deb.version,
            deb.architecture,
            deb.sha256
        );
    }
    Ok(())
}

fn download(deb: &Deb) -> anyhow::Result<Vec<u8>> {
    let missing = |why: String| {
        anyhow::anyhow!(
            "{} {} ({}): cannot download {}: {why}\n  help: expected SHA-256 {}; if Debian has since replaced this \
             version, run `cargo xtask layers lock`; offline, put the file in {} as {}.deb",
            deb.name,
            deb.version,
            deb.architecture,
            deb.url,
            deb.sha256,
            cache_dir().display(),
            deb.sha256
        )
    };
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(300))).build().into();
    let response = agent.get(&deb.url).call().map_err(|e| missing(e.to_string()))?;
    let mut bytes = Vec::with_capacity(deb.size as usize);
    response
        .into_body()
        .into_reader()
        .take(deb.size.saturating_mul(2).max(1 << 20))
        .read_to_end(&mut bytes)
        .map_err(|e| missing(e.to_string()))?;
    Ok(bytes)
}
