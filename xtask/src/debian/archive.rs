//! A `.deb` read without dpkg: the `ar` archive's `data.tar.{xz,zst,gz}` turned into layer
//! entries. Maintainer scripts are never run; what a runtime image does not need (documentation,
//! manual pages, translations, init scripts) is dropped, except each package's `copyright`
//! file, which licenses require us to ship and from which the SBOM reads the license.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, bail};

use crate::layer::{Entry, Kind};

/// Path prefixes no runtime image needs.
const DROPPED: &[&str] = &[
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/locale/",
    "usr/share/bug/",
    "usr/share/doc-base/",
    "usr/share/bash-completion/",
    "usr/share/zsh/",
    "usr/share/menu/",
    "etc/init.d/",
    "etc/logrotate.d/",
    "etc/systemd/",
    "lib/systemd/",
    "usr/lib/systemd/",
    "usr/lib/tmpfiles.d/",
    "usr/lib/sysusers.d/",
];

/// The files of one package, as layer entries, with its `copyright` file's text if any.
pub struct Extracted {
    pub entries: Vec<Entry>,
    pub copyright: Option<String>,
}

/// Whether `path` is kept: not under a dropped prefix (or one of `extra`), except copyrights.
pub fn kept(path: &str, extra: &[String]) -> bool {
    if path.starts_with("usr/share/doc/") && path.ends_with("/copyright") && path.matches('/').count() == 4 {
        return true;
    }
    !DROPPED.iter().any(|p| path.starts_with(p) || path == p.trim_end_matches('/'))
        && !extra
            .iter()
            .any(|p| path == p.trim_end_matches('/') || path.starts_with(&format!("{}/", p.trim_end_matches('/'))))
}

/// Reads the `.deb` bytes of package `name`.
pub fn extract(name: &str, deb: &[u8], drop: &[String]) -> anyhow::Result<Extracted> {
    let mut archive = ar::Archive::new(deb);
    while let Some(member) = archive.next_entry() {
        let mut member = member.with_context(|| format!("{name}: reading the ar archive"))?;
        let id = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let Some(compression) = id.strip_prefix("data.tar") else { continue };
        let mut compressed = Vec::new();
        member.read_to_end(&mut compressed).with_context(|| format!("{name}: reading {id}"))?;
        let tar = decompress(compression, &compressed).with_context(|| format!("{name}: decompressing {id}"))?;
        return entries(name, &tar, drop);
    }
    bail!("{name}: the package has no data.tar member: is it a .deb?")
}

fn decompress(suffix: &str, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    match suffix {
        ".xz" => liblzma::read::XzDecoder::new(data).read_to_end(&mut out)?,
        ".zst" => zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?,
        ".gz" => flate2::read::GzDecoder::new(data).read_to_end(&mut out)?,
        "" => return Ok(data.to_vec()),
        other => bail!("data.tar{other} is not a compression this reader knows (xz, zst, gz)"),
    };
    Ok(out)
}

/// The tar's entries: paths without `./`, modes without setuid/setgid (no StellaOps image has
/// them), the package's numeric owners, hard links turned into copies of their target.
fn entries(name: &str, tar: &[u8], drop: &[String]) -> anyhow::Result<Extracted> {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut copyright = None;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().with_context(|| format!("{name}: reading data.tar"))? {
        let mut entry = entry.with_context(|| format!("{name}: reading data.tar"))?;
        let raw = entry.path().with_context(|| format!("{name}: an entry's path"))?.to_string_lossy().into_owned();
        let path = raw.trim_start_matches("./").trim_matches('/').to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        if path.split('/').any(|c| c == "..") {
            bail!("{name}: entry {raw:?} leaves the root");
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o1777;
        let (uid, gid) = (header.uid().unwrap_or(0) as u32, header.gid().unwrap_or(0) as u32);
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).with_context(|| format!("{name}: reading {path}"))?;
                if path == format!("usr/share/doc/{name}/copyright") {
                    copyright = Some(String::from_utf8_lossy(&data).into_owned());
                }
                Kind::File(data.into())
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.with_context(|| format!("{name}: symlink {path} has no target"))?;
                Kind::Symlink(target.to_string_lossy().into_owned())
            }
            tar::EntryType::Link => {
                let target = entry.link_name()?.with_context(|| format!("{name}: hard link {path} has no target"))?;
                let target = target.to_string_lossy().trim_start_matches("./").trim_matches('/').to_string();
                match out.get(&target) {
                    Some(Entry { kind: k @ Kind::File(_), .. }) => k.clone(),
                    _ => bail!("{name}: hard link {path} points at {target}, which is not an earlier file"),
                }
            }
            other => bail!("{name}: entry {path} has type {other:?}, which an image layer does not hold"),
        };
        out.insert(path.clone(), Entry { path, mode, uid, gid, kind });
    }
    let entries = out.into_values().filter(|e| kept(&e.path, drop)).collect();
    Ok(Extracted { entries, copyright })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_is_dropped_but_copyright_kept() {
        assert!(!kept("usr/share/doc/libc6/changelog.Debian.gz", &[]));
        assert!(kept("usr/share/doc/libc6/copyright", &[]));
        assert!(!kept("usr/share/man/man1/redis-cli.1.gz", &[]));
        assert!(!kept("usr/share/doc", &[]));
        assert!(kept("usr/lib/postgresql/15/bin/postgres", &[]));
        let extra = vec!["usr/lib/postgresql/15/lib/bitcode".to_string()];
        assert!(!kept("usr/lib/postgresql/15/lib/bitcode/x.bc", &extra));
        assert!(!kept("usr/lib/postgresql/15/lib/bitcode", &extra));
        assert!(kept("usr/lib/postgresql/15/lib/bitcodes", &extra));
    }
}
