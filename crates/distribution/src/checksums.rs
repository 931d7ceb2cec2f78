//! `checksums.txt`: the SHA-256 of every file of a bundle, in `sha256sum` format (so that
//! `sha256sum -c checksums.txt` is an independent check), sorted by path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Result, invalid, io, sha256_file};

pub const FILE: &str = "checksums.txt";
pub const SIGNATURE: &str = "bundle.sig";
/// The size in bytes of every listed file but itself (`<bytes>  <path>`, sorted by path), listed
/// in `checksums.txt` like any file: what bounds an unpack before any byte is written.
pub const SIZES: &str = "sizes.txt";
/// Where `stella-load` writes what it produced after a load; not part of the bundle.
pub const LOADED: &str = "loaded";
/// The only files `loaded/` may hold (and their temporary names while being written).
pub const LOADED_FILES: &[&str] = &["compose.env", "values-registry.yaml"];

/// Every regular file under `dir` (relative, `/`-separated, sorted), except the checksum file,
/// its signature and `loaded/`. Links and other special files are errors: a bundle has none.
pub fn files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in std::fs::read_dir(&abs).map_err(io(&abs))? {
            let entry = entry.map_err(io(&abs))?;
            let name = rel.join(entry.file_name());
            let path = dir.join(&name);
            let text =
                name.to_str().ok_or_else(|| invalid(path.display(), "a file name that is not UTF-8"))?.to_string();
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                if text == LOADED {
                    check_loaded(&path)?;
                } else {
                    stack.push(name);
                }
            } else if kind.is_file() {
                if text != FILE && text != SIGNATURE {
                    out.push(text);
                }
            } else {
                return Err(invalid(
                    path.display(),
                    "a link or special file; a bundle holds only files and directories",
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `loaded/` is not signed, so it may hold only the loader's own regular files: a link there
/// would make the loader write wherever it points.
fn check_loaded(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let regular = entry.file_type().map_err(io(&path))?.is_file();
        if !regular || !LOADED_FILES.contains(&name.as_str()) {
            return Err(invalid(
                path.display(),
                "is not a file stella-load writes: loaded/ may hold only compose.env and values-registry.yaml (remove it)",
            ));
        }
    }
    Ok(())
}

/// The text of `checksums.txt` for the files of `dir`.
pub fn write(dir: &Path) -> Result<String> {
    let mut text = String::new();
    for f in files(dir)? {
        let digest = sha256_file(&dir.join(&f))?;
        text.push_str(&format!("{}  {f}\n", digest.trim_start_matches("sha256:")));
    }
    Ok(text)
}

/// Parses `checksums.txt`: path → `sha256:<hex>`.
pub fn parse(text: &str, origin: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || invalid(format!("{origin}:{}", i + 1), "expected `<64 hex digits>  <path>`");
        let (hex, path) = line.split_once("  ").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || path.is_empty() {
            return Err(bad());
        }
        if out.insert(path.to_string(), format!("sha256:{hex}")).is_some() {
            return Err(invalid(format!("{origin}:{}", i + 1), format!("{path} is listed twice")));
        }
    }
    Ok(out)
}

/// Parses `sizes.txt`: path → bytes.
pub fn parse_sizes(text: &str, origin: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || invalid(format!("{origin}:{}", i + 1), "expected `<bytes>  <path>`");
        let (n, path) = line.split_once("  ").ok_or_else(bad)?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        if path.is_empty() {
            return Err(bad());
        }
        if out.insert(path.to_string(), n).is_some() {
            return Err(invalid(format!("{origin}:{}", i + 1), format!("{path} is listed twice")));
        }
    }
    Ok(out)
}

/// The text of `sizes.txt` for `(path, bytes)` pairs.
pub fn write_sizes<'a>(sizes: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut sorted: Vec<_> = sizes.into_iter().collect();
    sorted.sort();
    sorted.iter().map(|(p, n)| format!("{n}  {p}\n")).collect()
}

/// Checks every file of `dir` against `checksums.txt`, in path order, and that no file is
/// missing or unlisted. The error names the first bad file.
pub fn verify(dir: &Path, text: &str) -> Result<usize> {
    let listed = parse(text, FILE)?;
    let present = files(dir)?;
    for f in &present {
        if !listed.contains_key(f) {
            return Err(invalid(dir.join(f).display(), "is not listed in checksums.txt: the bundle was changed"));
        }
    }
    for (f, want) in &listed {
        let path = dir.join(f);
        if !present.contains(f) {
            return Err(invalid(path.display(), "is listed in checksums.txt but missing"));
        }
        let got = sha256_file(&path)?;
        if &got != want {
            return Err(invalid(
                path.display(),
                format!("has SHA-256 {got}, checksums.txt says {want}: the file is damaged or was changed"),
            ));
        }
    }
    Ok(listed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_checksums_verify_and_a_changed_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("oci/blobs")).unwrap();
        std::fs::write(dir.path().join("oci/blobs/a"), b"alpha").unwrap();
        std::fs::write(dir.path().join("load.sh"), b"#!/bin/sh\n").unwrap();
        let text = write(dir.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().next().unwrap().ends_with("  load.sh"), "{text}");
        assert_eq!(verify(dir.path(), &text).unwrap(), 2);
        std::fs::write(dir.path().join("oci/blobs/a"), b"alphA").unwrap();
        let err = verify(dir.path(), &text).unwrap_err().to_string();
        assert!(err.contains("oci/blobs/a") && err.contains("damaged"), "{err}");
        std::fs::write(dir.path().join("oci/blobs/a"), b"alpha").unwrap();
        std::fs::write(dir.path().join("extra"), b"x").unwrap();
        assert!(verify(dir.path(), &text).unwrap_err().to_string().contains("not listed"));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line_number() {
        let err = parse("abc  x\n", "checksums.txt").unwrap_err().to_string();
        assert!(err.starts_with("checksums.txt:1"), "{err}");
    }
}
