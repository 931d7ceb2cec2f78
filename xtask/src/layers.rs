//! Layer definitions under `layers/<name>.toml`: directories and files with explicit modes and
//! owners, and optionally Debian packages pinned by `layers/debian.lock` ([`crate::debian`]),
//! turned into a [`Layer`] for one architecture. File contents come from `layers/`, from
//! built-in generators or from locked packages; nothing is taken from the build host's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine;
use serde::Deserialize;

use crate::layer::{Entry, Layer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    dirs: BTreeMap<String, Meta>,
    #[serde(default)]
    files: BTreeMap<String, FileDef>,
    /// Debian packages, with their dependencies, pinned by `layers/debian.lock`.
    #[serde(default)]
    debian: Option<crate::debian::Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    mode: String,
    #[serde(default)]
    owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    mode: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    generate: Option<String>,
}

/// The files a definition reads, for the plan's input digests.
pub fn inputs(dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let path = dir.join(format!("{name}.toml"));
    let def = read(&path)?;
    let mut out = vec![path];
    out.extend(def.files.values().filter_map(|f| f.source.as_ref()).map(|s| dir.join(s)));
    if def.debian.is_some() {
        out.push(crate::debian::Lock::path(dir));
    }
    Ok(out)
}

/// The `[debian]` section of every layer definition under `dir` that has one, by layer name.
pub fn debian_specs(dir: &Path) -> anyhow::Result<BTreeMap<String, crate::debian::Spec>> {
    let mut out = BTreeMap::new();
    let listing = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in listing {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".toml")) else {
            continue;
        };
        if let Some(spec) = read(&path)?.debian {
            out.insert(name.to_string(), spec);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> anyhow::Result<Definition> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading layer definition {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map(|s| crate::catalog::line_col(&text, s.start)).unwrap_or((1, 1));
        anyhow::anyhow!("{}:{line}:{col}: {}", path.display(), e.message().trim())
    })
}

/// Reads `layers/<name>.toml` into a layer for `architecture` (`amd64`, `arm64`).
pub fn load(dir: &Path, name: &str, architecture: &str) -> anyhow::Result<Layer> {
    let path = dir.join(format!("{name}.toml"));
    if !path.exists() {
        bail!("layer `{name}`: {} does not exist (layers are defined under {})", path.display(), dir.display());
    }
    let def = read(&path)?;
    let file = path.display();
    let (mut entries, packages) = match &def.debian {
        Some(spec) => crate::debian::layer(dir, name, spec, architecture)?,
        None => (Vec::new(), Vec::new()),
    };
    for (p, meta) in &def.dirs {
        let (uid, gid) = owner(meta.owner.as_deref()).with_context(|| format!("{file}: dirs.\"{p}\".owner"))?;
        entries.push(
            Entry::dir(p, mode(&meta.mode).with_context(|| format!("{file}: dirs.\"{p}\".mode"))?).owned(uid, gid),
        );
    }
    for (p, f) in &def.files {
        let data = match (&f.source, &f.generate) {
            (Some(source), None) => std::fs::read(dir.join(source))
                .with_context(|| format!("{file}: files.\"{p}\".source: reading {}", dir.join(source).display()))?,
            (None, Some(generator)) => {
                generate(generator).with_context(|| format!("{file}: files.\"{p}\".generate"))?
            }
            _ => bail!("{file}: files.\"{p}\": give exactly one of `source` or `generate`"),
        };
        let (uid, gid) = owner(f.owner.as_deref()).with_context(|| format!("{file}: files.\"{p}\".owner"))?;
        entries.push(
            Entry::file(p, mode(&f.mode).with_context(|| format!("{file}: files.\"{p}\".mode"))?, data).owned(uid, gid),
        );
    }
    Ok(Layer { name: name.to_string(), entries, packages, memo: None })
}

fn mode(text: &str) -> anyhow::Result<u32> {
    match u32::from_str_radix(text, 8) {
        Ok(m) if m <= 0o7777 && m & 0o6000 == 0 => Ok(m),
        Ok(_) => bail!("`{text}`: setuid and setgid bits are not allowed in a StellaOps image"),
        Err(_) => bail!("`{text}` is not an octal mode such as \"0644\""),
    }
}

fn owner(text: Option<&str>) -> anyhow::Result<(u32, u32)> {
    let Some(text) = text else { return Ok((0, 0)) };
    match text.split_once(':').map(|(u, g)| (u.parse(), g.parse())) {
        Some((Ok(u), Ok(g))) => Ok((u, g)),
        _ => bail!("`{text}` is not a numeric `uid:gid`"),
    }
}

/// Built-in file contents.
fn generate(name: &str) -> anyhow::Result<Vec<u8>> {
    match name {
        "mozilla-ca-bundle" => Ok(ca_bundle()),
        other => bail!("unknown generator `{other}`: the only one is `mozilla-ca-bundle`"),
    }
}

/// Mozilla's root certificates from the `webpki-root-certs` crate, as a PEM bundle in the
/// crate's order (which is fixed by its version, itself pinned by Cargo.lock).
pub fn ca_bundle() -> Vec<u8> {
    let mut out = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

/// Every layer definition the plan's images use, loaded for every platform it is used on,
/// keyed by (layer name, platform); in parallel, since Debian layers download and decompress.
/// With `cache` (the content cache assembly will use), a Debian layer whose extraction is
/// remembered and whose blob is in that cache comes back without entries (see
/// [`crate::debian::Memo`]); without it, every layer is loaded in full.
pub fn load_for(plan: &crate::plan::Plan, cache: Option<&Path>) -> anyhow::Result<BTreeMap<(String, String), Layer>> {
    use rayon::prelude::*;
    let specs = debian_specs(&plan.layers_dir)?;
    for image in &plan.images {
        for (i, layer) in image.layers.iter().enumerate() {
            for required in specs.get(layer).map(|s| &s.requires[..]).unwrap_or_default() {
                if !image.layers[..i].contains(required) {
                    bail!(
                        "images.{}: layer `{layer}` sits on Debian layer `{required}` (layers/{layer}.toml, debian.requires): \
                         list `{required}` before `{layer}` in the image's `layers`",
                        image.name
                    );
                }
            }
        }
    }
    let wanted: std::collections::BTreeSet<(String, String)> = plan
        .images
        .iter()
        .flat_map(|i| i.layers.iter().flat_map(move |l| i.platforms.iter().map(move |p| (l.clone(), p.clone()))))
        .collect();
    wanted
        .into_par_iter()
        .map(|(name, platform)| {
            let arch = crate::plan::Plan::platform(&platform).architecture;
            let layer = if let (true, Some(cache)) = (specs.contains_key(&name), cache) {
                memoized(&plan.layers_dir, &name, arch, cache)
            } else {
                load(&plan.layers_dir, &name, arch)
            };
            Ok(((name.clone(), platform.clone()), layer.with_context(|| format!("layer `{name}` for {platform}"))?))
        })
        .collect()
}

/// A Debian layer from its memo when its blob is still in the content cache (no entries, its
/// packages and tar digest only), else loaded in full with the memo to record.
fn memoized(dir: &Path, name: &str, architecture: &str, cache: &Path) -> anyhow::Result<Layer> {
    let memo = crate::debian::memo(dir, name, architecture)?;
    if let Some(known) = &memo.known
        && cache.join(known.tar_digest.trim_start_matches("sha256:")).exists()
    {
        return Ok(Layer {
            name: name.to_string(),
            entries: Vec::new(),
            packages: known.packages.clone(),
            memo: Some(memo),
        });
    }
    let mut layer = load(dir, name, architecture)?;
    layer.memo = Some(crate::debian::Memo { known: None, ..memo });
    Ok(layer)
}
