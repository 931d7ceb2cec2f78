//! Extracting a bundle archive (`.tar.zst`) without trusting it, so that it is the first thing an
//! operator runs on an air-gapped host, as any user, instead of `tar` as root:
//!
//! - every entry must be a plain file or a directory with a relative path inside the bundle's
//!   one top directory (no absolute paths, no `..`, no links, devices or FIFOs);
//! - the archive starts with [`HEAD`]: `checksums.txt`, `bundle.sig`, `cosign.pub`, `sizes.txt`.
//!   Nothing else is written before the signature over `checksums.txt` checks out against the
//!   caller's [`Trust`];
//! - every later file must be listed there, with the size `sizes.txt` gives (checked from its
//!   tar header, before a byte of it is written) and the SHA-256 `checksums.txt` gives (checked
//!   as it is written); none may be missing;
//! - the whole decompressed stream is bounded by an absolute budget: the signed sizes plus room
//!   for tar headers, so a decompression bomb stops at once, whatever the archive's own size;
//! - the zstd frame's content checksum must match, and nothing may follow the frame.
//!
//! Extraction goes to `<dir>.partial`, renamed into place at the end: a refused or interrupted
//! unpack leaves nothing behind. zstd is decoded by `ruzstd` (pure Rust), so the static loader
//! needs no C library.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use sha2::Digest;

use crate::bundle::{HEAD, Trust, Verified, check_signature};
use crate::{Error, Result, checksums, io};

/// Bounds on what an archive may hold before and beyond its signed lists.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes each head file may have before the signature is checked.
    pub head_bytes: u64,
    /// Entries (files and directories) at most.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { head_bytes: 8 << 20, max_entries: 100_000 }
    }
}

/// Decompressed bytes allowed per entry beyond its contents: a header, a GNU long-name header
/// and its block, and padding.
const PER_ENTRY: u64 = 4 << 10;
/// Decompressed bytes allowed beyond the entries: the tar end blocks and record padding.
const MARGIN: u64 = 1 << 20;

fn refuse(entry: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Unpack { entry: entry.into(), message: message.into() }
}

/// The path an archive entry may be written to, relative to the target: `None` for the root.
fn safe_path(name: &str) -> Result<Option<PathBuf>> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(refuse(name, "has a `..` component: refusing to write outside the bundle"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(name, "is an absolute path: refusing to write outside the bundle"));
            }
        }
    }
    Ok(if out.as_os_str().is_empty() { None } else { Some(out) })
}

/// Extracts the bundle `archive` into `dir`, which must not exist yet, checking it against
/// `trust` on the way. `dir` then holds the bundle's top directory, verified.
pub fn unpack(archive: &Path, dir: &Path, trust: &Trust, limits: Limits) -> Result<Verified> {
    if dir.exists() {
        return Err(refuse(dir.display().to_string(), "already exists: unpack into a new directory"));
    }
    let partial = PathBuf::from(format!("{}.partial", dir.display()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    match extract(archive, &partial, trust, limits) {
        Ok(v) => {
            std::fs::rename(&partial, dir).map_err(io(dir))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// What the authenticated head says the rest of the archive holds.
struct Expected {
    /// path → (`sha256:<hex>`, bytes), every listed file but the head's.
    files: BTreeMap<String, (String, u64)>,
    fingerprint: String,
    listed: usize,
}

fn extract(archive: &Path, into: &Path, trust: &Trust, limits: Limits) -> Result<Verified> {
    let origin = archive.display().to_string();
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| refuse(&origin, format!("not a zstd archive: {e}")))?;
    // Until the head is authenticated, only the head may be read.
    let limit = Rc::new(Cell::new(HEAD.len() as u64 * (limits.head_bytes + PER_ENTRY) + MARGIN));
    let read = Rc::new(Cell::new(0));
    let bounded = Bounded { inner: decoder, read: read.clone(), limit: limit.clone() };
    let mut tar = tar::Archive::new(bounded);
    let mut top: Option<PathBuf> = None;
    let mut head: Vec<Vec<u8>> = Vec::new();
    let mut expected: Option<Expected> = None;
    let mut written = BTreeSet::new();
    let mut entries = 0u64;
    for entry in tar.entries().map_err(|e| refuse(&origin, format!("not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| refuse(&origin, format!("a damaged tar entry: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        entries += 1;
        if entries > limits.max_entries {
            return Err(refuse(
                name,
                format!("more than {} entries: refusing a possible archive bomb", limits.max_entries),
            ));
        }
        let Some(rel) = safe_path(&name)? else { continue };
        let kind = entry.header().entry_type();
        if !kind.is_dir() && !kind.is_file() {
            return Err(refuse(
                name,
                format!("is a {kind:?} entry: a bundle holds only files and directories (no links, devices or FIFOs)"),
            ));
        }
        let top = match &top {
            Some(t) => t,
            None if kind.is_dir() && rel.components().count() == 1 => top.insert(rel.clone()),
            None => return Err(refuse(name, "comes before the bundle's top directory (stella-bundle-vX.Y.Z/)")),
        };
        let inner = rel
            .strip_prefix(top)
            .map_err(|_| refuse(&name, format!("is outside the bundle's top directory {}/", top.display())))?;
        let target = into.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
            continue;
        }
        let inner = inner.to_str().ok_or_else(|| refuse(&name, "a file name that is not UTF-8"))?.to_string();
        let size = entry.size();
        let Some(exp) = &expected else {
            let want = HEAD[head.len()];
            if inner != want {
                return Err(refuse(
                    name,
                    format!(
                        "comes where {want} should: a bundle starts with {}, which are checked before anything else \
                         is written",
                        HEAD.join(", ")
                    ),
                ));
            }
            if size > limits.head_bytes {
                return Err(refuse(
                    name,
                    format!("is {size} bytes; at most {} are read before the signature is checked", limits.head_bytes),
                ));
            }
            let mut bytes = Vec::new();
            (&mut entry).take(size).read_to_end(&mut bytes).map_err(|e| refuse(&name, e.to_string()))?;
            head.push(bytes);
            if head.len() == HEAD.len() {
                let exp = authenticate(&head, trust, &into.join(top), archive)?;
                // From here on, the signed sizes bound the stream.
                let body: u64 = exp.files.values().map(|(_, n)| n).sum();
                limit.set(read.get() + body + (2 * exp.files.len() as u64 + 16) * PER_ENTRY + MARGIN);
                for (file, bytes) in HEAD.iter().zip(&head) {
                    let path = into.join(top).join(file);
                    write_new(&path, file, false)?.write_all(bytes).map_err(io(&path))?;
                }
                expected = Some(exp);
            }
            continue;
        };
        let Some((digest, want)) = exp.files.get(&inner) else {
            let why = if HEAD.contains(&inner.as_str()) {
                "appears twice in the archive"
            } else {
                "is not listed in checksums.txt: refusing a file the signature does not cover"
            };
            return Err(refuse(name, why));
        };
        if size != *want {
            return Err(refuse(
                name,
                format!("is {size} bytes in the archive, sizes.txt says {want}: refusing it before writing it"),
            ));
        }
        if !written.insert(inner.clone()) {
            return Err(refuse(name, "appears twice in the archive"));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let executable = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
        let mut out = write_new(&target, &name, executable)?;
        let got = copy_hashing(&mut (&mut entry).take(size), &mut out, &target)?;
        if got.1 != size {
            return Err(refuse(name, "is truncated"));
        }
        if &got.0 != digest {
            return Err(refuse(
                name,
                format!("has SHA-256 {}, checksums.txt says {digest}: the file is damaged or was changed", got.0),
            ));
        }
    }
    let Some(exp) = expected else {
        return Err(refuse(origin, format!("ends before its head ({}): not a complete bundle", HEAD.join(", "))));
    };
    if let Some(missing) = exp.files.keys().find(|f| !written.contains(*f)) {
        return Err(refuse(origin, format!("{missing} is listed in checksums.txt but not in the archive")));
    }
    check_frame(tar.into_inner(), &origin)?;
    Ok(Verified { fingerprint: exp.fingerprint, files: exp.listed, origin_known: trust.proves_origin() })
}

/// Checks the head's signature against `trust`, the hashes of the head files that
/// `checksums.txt` lists, and that `sizes.txt` names exactly the other listed files.
fn authenticate(head: &[Vec<u8>], trust: &Trust, top: &Path, archive: &Path) -> Result<Expected> {
    let text = |i: usize| {
        std::str::from_utf8(&head[i]).map_err(|_| refuse(top.join(HEAD[i]).display().to_string(), "is not UTF-8"))
    };
    let (sums, sig, public, sizes) = (text(0)?, text(1)?, text(2)?, text(3)?);
    let fingerprint = check_signature(sums, sig, Some(public), trust, top)?;
    let mut listed = checksums::parse(sums, checksums::FILE)?;
    let count = listed.len();
    for (i, file) in HEAD.iter().enumerate().skip(2) {
        let got = crate::sha256(&head[i]);
        match listed.remove(*file) {
            Some(want) if want == got => {}
            Some(want) => {
                return Err(refuse(
                    top.join(file).display().to_string(),
                    format!("has SHA-256 {got}, checksums.txt says {want}: the file is damaged or was changed"),
                ));
            }
            None => return Err(refuse(top.join(file).display().to_string(), "is not listed in checksums.txt")),
        }
    }
    let mut sizes = checksums::parse_sizes(sizes, checksums::SIZES)?;
    let mut files = BTreeMap::new();
    for (path, digest) in listed {
        let n = sizes.remove(&path).ok_or_else(|| {
            refuse(archive.display().to_string(), format!("{path} is listed in checksums.txt but not in sizes.txt"))
        })?;
        files.insert(path, (digest, n));
    }
    if let Some(extra) = sizes.keys().next() {
        return Err(refuse(archive.display().to_string(), format!("{extra} is in sizes.txt but not in checksums.txt")));
    }
    Ok(Expected { files, fingerprint, listed: count })
}

/// Reads what the tar reader left of the frame (end blocks and padding, still bounded), then
/// checks the frame's content checksum and that nothing follows the frame.
fn check_frame<R: Read>(
    mut rest: Bounded<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
    origin: &str,
) -> Result<()> {
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| refuse(origin, e.to_string()))?;
    let (mut after, frame) = rest.inner.into_parts();
    match (frame.get_checksum_from_data(), frame.get_calculated_checksum()) {
        (Some(want), Some(got)) if want == got => {}
        (None, _) => return Err(refuse(origin, "its zstd frame has no content checksum: not a bundle archive")),
        _ => return Err(refuse(origin, "fails its zstd content checksum: the archive is damaged")),
    }
    let mut byte = [0u8; 1];
    if after.read(&mut byte).map_err(|e| refuse(origin, e.to_string()))? != 0 {
        return Err(refuse(origin, "has bytes after its zstd frame: the archive was changed"));
    }
    Ok(())
}

/// A new file (never one that exists, never through a link), mode 0755 or 0644.
fn write_new(path: &Path, name: &str, executable: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                refuse(name, "appears twice in the archive")
            } else {
                io(path)(e)
            }
        })
}

/// Copies `from` into `to` and returns (`sha256:<hex>`, bytes).
fn copy_hashing(from: &mut impl Read, to: &mut std::fs::File, path: &Path) -> Result<(String, u64)> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| refuse(path.display().to_string(), e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(io(path))?;
        total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total))
}

/// A reader that fails once more than its limit has been read; the limit is raised once the
/// head is authenticated, from outside the tar reader that owns this one.
struct Bounded<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    limit: Rc<Cell<u64>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.read.get() + n as u64;
        if total > self.limit.get() {
            return Err(std::io::Error::other(format!(
                "the archive expands beyond {} bytes, more than its head or its signed sizes allow: \
                 refusing a possible decompression bomb",
                self.limit.get()
            )));
        }
        self.read.set(total);
        Ok(n)
    }
}

#[cfg(test)]
#[path = "unpack/tests.rs"]
mod tests;
