//! Extracting a `.tar.zst` bundle without trusting it: every entry must be a plain file or a
//! directory with a relative path that stays inside the target (no absolute paths, no `..`, no
//! links, no devices), and the expansion is bounded both in bytes and against the archive's own
//! size, so a decompression bomb stops early. Extraction goes to `<dir>.partial` and is renamed
//! into place at the end: a refused or interrupted unpack leaves no half-written bundle.
//!
//! zstd is decoded by `ruzstd` (pure Rust), so the static loader needs no C library.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result, io};

/// Bounds on what an archive may expand to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of file content at most.
    pub max_bytes: u64,
    /// Content bytes per archive byte at most (a bundle of gzip layers expands about 1:1).
    pub max_ratio: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: 64 << 30, max_ratio: 50, max_entries: 100_000 }
    }
}

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

/// Extracts `archive` (a zstd-compressed tar) into `dir`, which must not exist yet.
/// Returns the number of files written.
pub fn unpack(archive: &Path, dir: &Path, limits: Limits) -> Result<u64> {
    if dir.exists() {
        return Err(refuse(dir.display().to_string(), "already exists: unpack into a new directory"));
    }
    let compressed = std::fs::metadata(archive).map_err(io(archive))?.len();
    let partial = PathBuf::from(format!("{}.partial", dir.display()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let result = extract(archive, &partial, compressed, limits);
    match result {
        Ok(n) => {
            std::fs::rename(&partial, dir).map_err(io(dir))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn extract(archive: &Path, into: &Path, compressed: u64, limits: Limits) -> Result<u64> {
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| refuse(archive.display().to_string(), format!("not a zstd archive: {e}")))?;
    let budget = limits.max_bytes.min(compressed.saturating_mul(limits.max_ratio).max(1 << 20));
    // The whole decompressed stream is bounded, headers included: the tar reader holds GNU
    // long names and PAX headers in memory, so a bound on file contents alone would not stop a
    // header that claims gigabytes. Headers and padding get 1 MiB per thousand entries.
    let slack = 1 << 20 | (limits.max_entries / 1000 + 1) << 20;
    let mut tar = tar::Archive::new(Bounded { inner: decoder, left: budget.saturating_add(slack), budget });
    let (mut bytes, mut entries, mut files) = (0u64, 0u64, 0u64);
    let origin = archive.display().to_string();
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
        let target = into.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(
                name,
                format!("is a {kind:?} entry: a bundle holds only files and directories (no links or devices)"),
            ));
        }
        // The size as a reader of PAX headers sees it (GNU tar honours a PAX `size` too).
        let size = entry.size();
        bytes = bytes.saturating_add(size);
        if bytes > budget {
            return Err(refuse(
                name,
                format!(
                    "the archive expands beyond {budget} bytes ({}x its size or {} bytes): refusing a possible decompression bomb",
                    limits.max_ratio, limits.max_bytes
                ),
            ));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let executable = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                refuse(name.clone(), "appears twice in the archive")
            } else {
                io(&target)(e)
            }
        })?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(io(&target))?;
        if copied != size {
            return Err(refuse(name, "is truncated"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(io(&target))?;
        }
        files += 1;
    }
    Ok(files)
}

/// A reader that fails once more than its budget has been read.
struct Bounded<R> {
    inner: R,
    left: u64,
    budget: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "the archive expands beyond {} bytes: refusing a possible decompression bomb",
                self.budget
            ))
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_target_are_refused() {
        assert!(safe_path("a/../../etc/passwd").unwrap_err().to_string().contains(".."));
        assert!(safe_path("/etc/passwd").unwrap_err().to_string().contains("absolute"));
        assert_eq!(safe_path("./oci/index.json").unwrap(), Some(PathBuf::from("oci/index.json")));
        assert_eq!(safe_path("./").unwrap(), None);
    }
}
