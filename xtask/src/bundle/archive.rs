//! The bundle archive: a tar with fixed metadata (mtime = the build's source epoch, uid/gid 0, no
//! owner names, mode 0644 or 0755), compressed with zstd at a fixed level on one thread with the
//! frame's content checksum, so the same inputs give the same `.tar.zst`, byte for byte.
//! Order: the top directory, then the head the unpacker authenticates before it writes anything
//! else (`stella_distribution::bundle::HEAD`: checksums.txt, bundle.sig, cosign.pub, sizes.txt),
//! then every other entry sorted by path.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where an entry's bytes come from.
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

pub struct Entry {
    /// Path inside the bundle's top directory, `/`-separated.
    pub path: String,
    pub source: Source,
    pub executable: bool,
}

/// zstd level: the bundle is mostly gzip layers, which do not compress further; a higher level
/// costs minutes and saves well under 1 %.
pub const LEVEL: i32 = 6;

fn header(size: u64, mode: u32, epoch: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(epoch);
    h.set_uid(0);
    h.set_gid(0);
    // Owner names stay empty: a name would be the builder's.
    h
}

/// Writes `top/` with every entry (and its parent directories) into `out`, through a
/// temporary file renamed at the end.
pub fn write(out: &Path, top: &str, mut entries: Vec<Entry>, epoch: u64) -> anyhow::Result<()> {
    let head = |e: &Entry| stella_distribution::bundle::HEAD.iter().position(|h| *h == e.path).unwrap_or(usize::MAX);
    entries.sort_by(|a, b| (head(a), &a.path).cmp(&(head(b), &b.path)));
    let tmp = out.with_extension("zst.tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut encoder = zstd::stream::Encoder::new(std::io::BufWriter::new(file), LEVEL)?;
    encoder.include_checksum(true)?;
    {
        let mut tar = tar::Builder::new(&mut encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        let mut dirs = std::collections::BTreeSet::new();
        let add_dir = |tar: &mut tar::Builder<_>, dir: String| -> anyhow::Result<()> {
            let mut h = header(0, 0o755, epoch, tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
            Ok(())
        };
        add_dir(&mut tar, top.to_string())?;
        for e in &entries {
            // Parent directories, each once, before their first file (paths are sorted).
            let mut parent = String::new();
            for part in e.path.split('/').collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default()
            {
                parent = if parent.is_empty() { part.to_string() } else { format!("{parent}/{part}") };
                if dirs.insert(parent.clone()) {
                    add_dir(&mut tar, format!("{top}/{parent}"))?;
                }
            }
            let mode = if e.executable { 0o755 } else { 0o644 };
            let name = format!("{top}/{}", e.path);
            match &e.source {
                Source::Bytes(b) => {
                    let mut h = header(b.len() as u64, mode, epoch, tar::EntryType::Regular);
                    tar.append_data(&mut h, &name, b.as_slice())?;
                }
                Source::File(p) => {
                    let f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
                    let size = f.metadata()?.len();
                    let mut h = header(size, mode, epoch, tar::EntryType::Regular);
                    tar.append_data(&mut h, &name, f)?;
                }
            }
        }
        tar.finish()?;
    }
    let mut inner = encoder.finish()?;
    inner.flush()?;
    drop(inner);
    std::fs::rename(&tmp, out).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(())
}
