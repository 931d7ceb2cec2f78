//! Layers: a sorted list of entries turned into a deterministic tar, then a deterministic gzip.
//!
//! Determinism is decided here and nowhere else: entries sorted by path, parents implied,
//! fixed owners, modes from the definition (never the file system, so umask cannot leak),
//! mtime [`LAYER_MTIME`] (a constant, not the release epoch, so an unchanged layer keeps its
//! digest from release to release), no xattrs, no user or group names, gzip with no name, no
//! timestamp, OS byte 3, level 6 of one pinned backend (zlib-rs), fed in fixed 1 MiB writes
//! because its output depends on how the input is split.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The mtime of every layer entry.
pub const LAYER_MTIME: u64 = 0;
const GZIP_CHUNK: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Arc<[u8]>),
    Symlink(String),
}

/// One entry of a layer; `path` is relative, without a leading `/` or `./`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub kind: Kind,
}

impl Entry {
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry { path: path.trim_matches('/').into(), mode, uid: 0, gid: 0, kind: Kind::Dir }
    }
    pub fn file(path: &str, mode: u32, data: impl Into<Arc<[u8]>>) -> Entry {
        Entry { path: path.trim_matches('/').into(), mode, uid: 0, gid: 0, kind: Kind::File(data.into()) }
    }
    pub fn owned(mut self, uid: u32, gid: u32) -> Entry {
        (self.uid, self.gid) = (uid, gid);
        self
    }
}

/// A layer's content, before encoding.
#[derive(Clone, Debug)]
pub struct Layer {
    /// A name for progress and history (`base`, `app stella-api`).
    pub name: String,
    pub entries: Vec<Entry>,
    /// The Debian packages the entries come from, for the SBOM (empty for other layers).
    pub packages: Vec<crate::debian::Package>,
    /// For Debian layers: where the tar digest of this exact input is remembered, and, when it
    /// was, that digest; the entries are then left empty and the cached blob is used.
    pub memo: Option<crate::debian::Memo>,
}

/// A layer encoded as tar and gzip.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub tar_digest: String,
    pub tar_size: u64,
    pub gz: Arc<[u8]>,
    pub gz_digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Layer {
    /// The entries sorted by path, with every missing parent directory added (0755, root).
    pub fn normalized(&self) -> Vec<Entry> {
        let mut by_path: BTreeMap<String, Entry> = BTreeMap::new();
        for e in &self.entries {
            by_path.insert(e.path.clone(), e.clone());
        }
        let paths: Vec<String> = by_path.keys().cloned().collect();
        for path in paths {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                by_path.entry(p.to_string()).or_insert_with(|| Entry::dir(p, 0o755));
                parent = p;
            }
        }
        by_path.into_values().collect()
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        for e in self.normalized() {
            let mut header = tar::Header::new_ustar();
            header.set_mode(e.mode);
            header.set_uid(e.uid.into());
            header.set_gid(e.gid.into());
            header.set_mtime(LAYER_MTIME);
            match &e.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{}/", e.path), std::io::empty())?;
                }
                Kind::File(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, &e.path, &data[..])?;
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, &e.path, target)?;
                }
            }
        }
        builder.into_inner()
    }
}

/// gzip of `data`, deterministic (see the module header).
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::with_capacity(data.len() / 2), flate2::Compression::new(6));
    for chunk in data.chunks(GZIP_CHUNK) {
        encoder.write_all(chunk)?;
    }
    encoder.finish()
}

/// Encodes a tar whose digest is known; `gz` may come from the cache.
pub fn encode(tar: &[u8]) -> std::io::Result<Encoded> {
    let gz = gzip(tar)?;
    Ok(Encoded { tar_digest: sha256(tar), tar_size: tar.len() as u64, gz_digest: sha256(&gz), gz: gz.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_definition_does_not_matter_and_parents_are_implied() {
        let a = Layer {
            name: "a".into(),
            entries: vec![Entry::file("app/x", 0o755, b"x".to_vec()), Entry::file("etc/passwd", 0o644, b"p".to_vec())],
            packages: Vec::new(),
            memo: None,
        };
        let b = Layer {
            name: "b".into(),
            entries: a.entries.iter().rev().cloned().collect(),
            packages: Vec::new(),
            memo: None,
        };
        assert_eq!(a.tar().unwrap(), b.tar().unwrap());
        let paths: Vec<_> = a.normalized().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["app", "app/x", "etc", "etc/passwd"]);
    }

    #[test]
    fn gzip_is_stable_and_has_no_timestamp() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&data).unwrap();
        assert_eq!(gz, gzip(&data).unwrap());
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime must be zero");
        assert_eq!(gz[9], 3, "OS byte must be Unix");
    }
}
