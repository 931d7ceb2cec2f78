//! The OCI image layout: a directory of content-addressed blobs, `oci-layout` and `index.json`.
//!
//! Every blob goes through [`Layout::put`], which writes a temporary file and renames it to
//! `blobs/sha256/<hex>`, so a reader never sees a partial blob. JSON documents are written in
//! one canonical form ([`canonical`]): oci-spec keeps annotations, labels and ports in hash
//! maps, and only a canonical serializer makes their digests repeat.

pub mod image;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// OCI media types used here.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Canonical JSON (OLPC): sorted keys, no insignificant whitespace.
pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    value.serialize(&mut ser).expect("OCI documents serialize to JSON");
    out
}

/// A blob's descriptor fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// Creates the directory structure and `oci-layout`.
    pub fn create(dir: &Path) -> anyhow::Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Layout { dir: dir.to_path_buf() })
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    /// Stores `bytes` whose digest is `digest` (computed by the caller, who usually needs it).
    pub fn put_known(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<Blob> {
        let path = self.blob_path(digest);
        if !path.metadata().is_ok_and(|m| m.len() == bytes.len() as u64) {
            write_atomic(&path, bytes)?;
        }
        Ok(Blob { digest: digest.to_string(), size: bytes.len() as u64 })
    }

    /// Stores `bytes` and returns their descriptor fields.
    pub fn put(&self, bytes: &[u8]) -> anyhow::Result<Blob> {
        self.put_known(&crate::layer::sha256(bytes), bytes)
    }

    /// Stores a JSON document in canonical form.
    pub fn put_json<T: Serialize>(&self, value: &T) -> anyhow::Result<(Blob, Vec<u8>)> {
        let bytes = canonical(value);
        Ok((self.put(&bytes)?, bytes))
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    let name = path.file_name().context("a file path has a name")?.to_string_lossy();
    // Unique per process and call: threads may write the same content-addressed file at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
