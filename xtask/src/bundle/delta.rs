//! Delta bundles (`cargo xtask bundle --since BASE.tar.zst`): only the blobs the base bundle
//! lacks, for sites that already loaded the base. The base is unpacked with the loader's checks
//! and must be signed by the same key; its `checksums.txt` says which blob files it holds (by
//! path and hash). A delta keeps every manifest (they are small, and the loader plans the push
//! from them) and drops the other blobs the base has; `base.json`, signed like every file,
//! names the base and lists what was dropped, so the loader can tell an operator which bundle
//! to load first when a registry lacks any of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use p256::ecdsa::VerifyingKey;
use stella_distribution::{bundle, checksums, unpack};

/// What the base bundle holds.
pub struct Base {
    /// Its top directory, `stella-bundle-vX.Y.Z`.
    pub name: String,
    /// SHA-256 of its `checksums.txt`: names exactly that bundle.
    pub checksums: String,
    /// `oci/blobs/sha256/<hex>` paths it holds, with their hashes.
    blobs: BTreeMap<String, String>,
}

/// Unpacks and verifies `archive` against `key`, and reads what it holds.
pub fn read_base(archive: &Path, key: &VerifyingKey) -> anyhow::Result<Base> {
    let tmp = tempfile::Builder::new().prefix("stella-bundle-base-").tempdir()?;
    let dir = tmp.path().join("base");
    unpack::unpack(archive, &dir, &bundle::Trust::Key(*key), unpack::Limits::default())
        .with_context(|| format!("--since {}: the base must be a bundle signed by this key", archive.display()))?;
    let top = super::single_top(&dir)?;
    let text = std::fs::read_to_string(top.join(checksums::FILE))?;
    let listed = checksums::parse(&text, checksums::FILE)?;
    Ok(Base {
        name: top.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        checksums: stella_distribution::sha256(text.as_bytes()),
        blobs: listed.into_iter().filter(|(p, _)| p.starts_with("oci/blobs/sha256/")).collect(),
    })
}

impl Base {
    /// The blob digests of `layout` that a delta leaves out: every blob the base holds with the
    /// same bytes, except manifests.
    pub fn omitted(&self, layout: &Path) -> anyhow::Result<BTreeSet<String>> {
        let manifests = stella_distribution::push::manifest_digests(layout)?;
        let mut out = BTreeSet::new();
        for (path, digest) in &self.blobs {
            let hex = path.trim_start_matches("oci/blobs/sha256/");
            if *digest == format!("sha256:{hex}")
                && !manifests.contains(digest)
                && layout.join("blobs/sha256").join(hex).exists()
            {
                out.insert(digest.clone());
            }
        }
        Ok(out)
    }

    /// `base.json`: the base, and the blobs taken from it.
    pub fn record(&self, omitted: &BTreeSet<String>) -> Vec<u8> {
        let doc = serde_json::json!({
            "base": self.name,
            "baseChecksums": self.checksums,
            "blobsFromBase": omitted,
        });
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("JSON serializes");
        bytes.push(b'\n');
        bytes
    }
}
