//! `cargo xtask reproduce` (alias `rebuild --compare`): an auditor's rebuild. Puts the source of
//! the record's revision in a fresh directory elsewhere, builds it there with another umask,
//! time zone and target directory, and compares every digest with the original: a layout
//! (every blob too), or only its published `images.json` (the digests, image by image).
//!
//! The revision and source epoch are pinned from the record, never found again, so a shallow
//! clone or a source archive rebuilds as well as a full clone. What makes that safe is the
//! record's input digests: the source must hold exactly those files, or nothing is built.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::assemble::Built;
use crate::plan::source;
use crate::shell;

pub struct Options {
    /// The layout to compare with (default target/oci), or an `images.json` file.
    pub against: PathBuf,
    /// Where to clone and build (default: a new temporary directory).
    pub work: Option<PathBuf>,
    /// Platforms to rebuild (default: all of the original's).
    pub platforms: Vec<String>,
    /// Images to rebuild (default: every image of the original).
    pub images: Vec<String>,
    /// Keep `work`'s clone and target directory from an earlier rebuild of the same revision:
    /// a second partial rebuild (another platform, other images) then compiles only what the
    /// first did not. Each rebuild writes its own layout (`oci`, `oci-2`, ...).
    pub reuse: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub revision: String,
    pub original: PathBuf,
    pub rebuilt: PathBuf,
    pub images: usize,
    /// Image by image: whether the index digest and each platform's manifest digest match.
    pub results: Vec<ImageResult>,
    /// The revision and source epoch taken from the record, and where the source came from.
    pub pinned: Pinned,
    pub blobs_compared: usize,
    pub index_identical: bool,
    /// Human-readable differences; empty when the rebuild is identical.
    pub differences: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pinned {
    pub revision: String,
    pub epoch: u64,
    /// `clone` (git holds the revision) or `copy` (a shallow clone without it, or no git).
    pub source: &'static str,
    /// How many input files were checked against the record's digests (0: an old record
    /// without them, trusted to its commit).
    pub inputs_checked: usize,
}

#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub image: String,
    /// `None` when only some platforms were rebuilt (the index cannot match then).
    pub index: Option<bool>,
    pub platforms: std::collections::BTreeMap<String, bool>,
}

impl Report {
    pub fn identical(&self) -> bool {
        self.index_identical && self.differences.is_empty()
    }
}

pub fn reproduce(options: &Options) -> anyhow::Result<Report> {
    // A file is a published images.json: digests only. A directory is a layout: blobs too.
    let (original, layout) = if options.against.is_file() {
        let text = std::fs::read(&options.against).with_context(|| format!("reading {}", options.against.display()))?;
        let built: Built = serde_json::from_slice(&text).with_context(|| {
            format!("{}: not an images.json written by `cargo xtask images`", options.against.display())
        })?;
        (built, None)
    } else {
        (Built::read(&options.against)?, Some(options.against.as_path()))
    };
    let work = match &options.work {
        Some(w) => w.clone(),
        None => std::env::temp_dir().join(format!("stella-reproduce-{}", std::process::id())),
    };
    if !options.reuse {
        let _ = std::fs::remove_dir_all(&work);
    }
    let src = work.join("a/different/path/stella");
    let pinned = prepare(&original, &options.against, &shell::root(), &src, options.reuse)?;
    let out = (1..)
        .map(|n| if n == 1 { work.join("oci") } else { work.join(format!("oci-{n}")) })
        .find(|p| !p.exists())
        .expect("a free layout name");
    let mut flags = vec!["--out".to_string(), out.display().to_string()];
    for t in &original.tags {
        flags.push(tag_flag(t, &original.version)?);
    }
    for p in &options.platforms {
        flags.extend(["--platform".to_string(), p.clone()]);
    }
    for i in &options.images {
        flags.extend(["--image".to_string(), i.clone()]);
    }
    // umask and TZ differ from any usual build; the target directory is fresh and elsewhere.
    // An xtask built from the same xtask source as the clone's builds it without compiling xtask
    // and its dependencies again (minutes on two cores): the images are what is rebuilt and
    // compared, and xtask's output does not depend on where it was compiled.
    let xtask: Vec<std::ffi::OsString> = match prebuilt_xtask(&shell::root(), &src) {
        Some(binary) => {
            eprintln!("building the clone with {} (built from the same source)", binary.display());
            vec![binary.into()]
        }
        None => vec!["cargo".into(), "xtask".into()],
    };
    // The command and its arguments are the shell's positional parameters, never script text:
    // tags come from a published record, paths from the user.
    shell::run(
        Command::new("sh")
            .args(["-c", "umask 0077 && exec \"$@\"", "sh"])
            .args(&xtask)
            .arg("images")
            .args(&flags)
            .current_dir(&src)
            .env("TZ", "Pacific/Chatham")
            .env("CARGO_TARGET_DIR", work.join("target"))
            .env("SOURCE_DATE_EPOCH", original.epoch.to_string())
            .env("STELLA_GIT_COMMIT", &original.revision),
    )
    .context("rebuilding in the clone")?;
    compare(&original, &options.against, layout, &out, &options.platforms, pinned)
}

/// A built xtask that can build `src` as `src`'s own would: this process when it is xtask, else
/// the checkout's optimized build (what `cargo xtask` runs), whichever was built from xtask's
/// source as it is in both `root` and `src` (asked for its source digest), and only when what
/// else xtask is compiled from is the same in both: the lock file, the workspace manifest, the
/// toolchain pin and the workspace crates it links.
fn prebuilt_xtask(root: &Path, src: &Path) -> Option<PathBuf> {
    let same_file =
        |rel: &str| std::fs::read(root.join(rel)).ok().is_some_and(|a| std::fs::read(src.join(rel)).ok() == Some(a));
    let same_crate = |rel: &str| {
        let (a, b) = (crate::tree::digest(&root.join(rel)).ok(), crate::tree::digest(&src.join(rel)).ok());
        a.is_some() && a == b
    };
    let same = ["Cargo.lock", "Cargo.toml", "rust-toolchain.toml", "xtask/build.rs"].iter().all(|f| same_file(f))
        && ["xtask", "crates/distribution", "crates/epoch"].iter().all(|c| same_crate(c));
    if !same {
        return None;
    }
    let wanted = format!("{:016x}", crate::tree::digest(&src.join("xtask")).ok()?);
    let this = std::env::current_exe().ok().filter(|p| p.file_stem().is_some_and(|n| n == "xtask"));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| shell::root().join("target"));
    [this, Some(target.join("release/xtask"))].into_iter().flatten().find(|binary| {
        Command::new(binary)
            .arg("source-digest")
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == wanted)
    })
}

/// Puts the source of `original`'s revision at `src` (a clone checked out at it where the git of
/// the checkout at `root` holds the commit, else a copy of that checkout's files), checks it
/// against the record's input digests and returns the values to pin. `reuse` keeps an earlier
/// `src`.
pub fn prepare(original: &Built, against: &Path, root: &Path, src: &Path, reuse: bool) -> anyhow::Result<Pinned> {
    let cloned = source::holds_commit(root, &original.revision);
    if !(reuse && src.is_dir()) {
        let _ = std::fs::remove_dir_all(src);
        std::fs::create_dir_all(src.parent().expect("has a parent"))?;
        if cloned {
            shell::run(Command::new("git").args(["clone", "--quiet", "--no-local"]).arg(root).arg(src))?;
        } else {
            copy_files(root, src)?;
        }
    }
    if cloned {
        shell::run(
            Command::new("git")
                .args(["-c", "advice.detachedHead=false", "checkout", "--quiet", &original.revision])
                .current_dir(src),
        )
        .with_context(|| format!("checking out {}", original.revision))?;
    }
    let pinned = check_inputs(original, against, src, cloned)?;
    eprintln!(
        "pinned from {}: STELLA_GIT_COMMIT={} SOURCE_DATE_EPOCH={} ({} input files match the record; source: {})",
        against.display(),
        pinned.revision,
        pinned.epoch,
        pinned.inputs_checked,
        pinned.source
    );
    Ok(pinned)
}

/// Copies the files of the checkout at `root` (tracked ones, or without git all that
/// `.gitignore` keeps) to `to`: the source of a rebuild when git does not hold the revision.
pub fn copy_files(root: &Path, to: &Path) -> anyhow::Result<()> {
    for rel in source::files(root)? {
        let (from, dest) = (root.join(&rel), to.join(&rel));
        std::fs::create_dir_all(dest.parent().expect("a file has a parent"))?;
        let meta = match std::fs::symlink_metadata(&from) {
            Ok(meta) => meta,
            // Tracked but deleted in the working tree: the input check names it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
        };
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &dest)?;
        } else {
            std::fs::copy(&from, &dest).with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        }
    }
    Ok(())
}

/// Checks that `src` holds the record's inputs, file by file, and returns what is pinned.
pub fn check_inputs(original: &Built, against: &Path, src: &Path, cloned: bool) -> anyhow::Result<Pinned> {
    let source = if cloned { "clone" } else { "copy" };
    let pinned =
        |inputs_checked| Pinned { revision: original.revision.clone(), epoch: original.epoch, source, inputs_checked };
    if original.sources.is_empty() {
        if cloned {
            return Ok(pinned(0));
        }
        bail!(
            "{} records no input digests (it predates them), so a checkout without revision {} in its history \
             cannot be checked against it: rebuild from a full clone that holds that commit",
            against.display(),
            original.revision
        );
    }
    let here = source::input_digests(src)?;
    let differences = source::differences(&original.sources, &here);
    if !differences.is_empty() {
        let shown = differences.iter().take(20).map(|d| format!("\n  {d}")).collect::<String>();
        let more = differences.len().saturating_sub(20);
        bail!(
            "this checkout does not hold the inputs of revision {} that {} records ({} files differ):{shown}{}\n  \
             help: check out that revision (or unpack its source archive) with no local changes, then rebuild",
            original.revision,
            against.display(),
            differences.len(),
            if more > 0 { format!("\n  and {more} more") } else { String::new() }
        );
    }
    Ok(pinned(here.len()))
}

/// Compares the rebuild at `out` with `original` (read from `against`; `layout` when it is a
/// layout directory, whose blobs are then compared too).
pub fn compare(
    original: &Built,
    against: &Path,
    layout: Option<&Path>,
    out: &Path,
    platforms: &[String],
    pinned: Pinned,
) -> anyhow::Result<Report> {
    let rebuilt = Built::read(out)?;
    let mut differences = Vec::new();
    let mut results = Vec::new();
    for image in &rebuilt.images {
        let Some(o) = original.images.iter().find(|i| i.name == image.name) else {
            differences.push(format!("{}: not in the original", image.name));
            continue;
        };
        let mut result = ImageResult { image: image.name.clone(), index: None, platforms: Default::default() };
        for (platform, p) in &image.platforms {
            let same = o.platforms.get(platform).map(|op| op.manifest == p.manifest);
            result.platforms.insert(platform.clone(), same == Some(true));
            match (same, o.platforms.get(platform)) {
                (Some(false), Some(op)) => {
                    differences.push(format!("{} {platform}: manifest {} != {}", image.name, p.manifest, op.manifest));
                    match layout {
                        Some(dir) => differences.extend(first_differing_blob(dir, &op.manifest, out, &p.manifest)),
                        None => differences.push(format!(
                            "  to find the first differing blob with diffoscope, compare against the original layout: \
                             cargo xtask reproduce --against <layout of {}>",
                            original.revision
                        )),
                    }
                }
                (None, _) => differences.push(format!("{} {platform}: not in the original", image.name)),
                _ => {}
            }
        }
        if platforms.is_empty() {
            result.index = Some(o.digest == image.digest);
            if o.digest != image.digest {
                differences.push(format!("{}: index {} != {}", image.name, image.digest, o.digest));
            }
        }
        results.push(result);
    }
    // A partial rebuild (some platforms or some images) has its own image indexes, and with them
    // index signatures and attestations the original cannot have: only the blobs of the rebuilt
    // platform manifests (manifest, config, layers) are compared then.
    let partial = !platforms.is_empty() || rebuilt.images.len() != original.images.len();
    let (compared, index_identical) = match layout {
        Some(dir) => {
            let only = if partial { Some(platform_blobs(&rebuilt, out)?) } else { None };
            let (compared, blob_diffs) = compare_blobs(dir, out, only.as_ref())?;
            differences.extend(blob_diffs);
            let same = std::fs::read(dir.join("index.json"))? == std::fs::read(out.join("index.json"))?;
            (compared, same || partial)
        }
        // Without a layout, the digests above are the comparison.
        None => (0, true),
    };
    Ok(Report {
        revision: original.revision.clone(),
        original: against.to_path_buf(),
        rebuilt: out.to_path_buf(),
        images: rebuilt.images.len(),
        results,
        pinned,
        blobs_compared: compared,
        index_identical,
        differences,
    })
}

/// The first config or layer that differs between two manifests, as a `diffoscope` command.
fn first_differing_blob(original: &Path, a: &str, rebuilt: &Path, b: &str) -> Option<String> {
    let read = |dir: &Path, d: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).ok()?)
            .ok()
    };
    let (ma, mb) = (read(original, a)?, read(rebuilt, b)?);
    let blobs = |m: &serde_json::Value| -> Vec<String> {
        std::iter::once(&m["config"])
            .chain(m["layers"].as_array().into_iter().flatten())
            .filter_map(|d| d["digest"].as_str().map(|s| s.trim_start_matches("sha256:").to_string()))
            .collect()
    };
    let (pa, pb) = (original.join("blobs/sha256"), rebuilt.join("blobs/sha256"));
    blobs(&ma).into_iter().zip(blobs(&mb)).find(|(x, y)| x != y).map(|(x, y)| {
        format!("first differing blob; see why with: diffoscope {} {}", pa.join(x).display(), pb.join(y).display())
    })
}

/// The blob names (hex) of every platform manifest of `built`, with their configs and layers.
fn platform_blobs(built: &Built, layout: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for image in &built.images {
        for p in image.platforms.values() {
            let hex = p.manifest.trim_start_matches("sha256:").to_string();
            let path = layout.join("blobs/sha256").join(&hex);
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
                    .with_context(|| format!("{}: not a manifest", path.display()))?;
            out.insert(hex);
            for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().into_iter().flatten()) {
                if let Some(digest) = d["digest"].as_str() {
                    out.insert(digest.trim_start_matches("sha256:").to_string());
                }
            }
        }
    }
    Ok(out)
}

/// Every blob of the rebuild (or only those of `only`) must exist, byte-identical, in the
/// original.
fn compare_blobs(
    original: &Path,
    rebuilt: &Path,
    only: Option<&BTreeSet<String>>,
) -> anyhow::Result<(usize, Vec<String>)> {
    let names = |dir: &Path| -> anyhow::Result<BTreeSet<String>> {
        Ok(std::fs::read_dir(dir.join("blobs/sha256"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect())
    };
    let (a, mut b) = (names(original)?, names(rebuilt)?);
    if let Some(only) = only {
        b.retain(|name| only.contains(name));
    }
    let mut diffs = Vec::new();
    for missing in b.difference(&a) {
        diffs.push(format!("blob sha256:{missing} of the rebuild is not in the original"));
    }
    for name in b.intersection(&a) {
        let bytes = std::fs::read(rebuilt.join("blobs/sha256").join(name))?;
        if crate::layer::sha256(&bytes) != format!("sha256:{name}") {
            diffs.push(format!("blob sha256:{name} does not match its name"));
        }
    }
    Ok((b.len(), diffs))
}

fn tag_flag(tag: &str, version: &str) -> anyhow::Result<String> {
    if tag == "edge" {
        return Ok("--edge".into());
    }
    if tag.starts_with("nightly-") {
        return Ok("--nightly".into());
    }
    if tag == format!("v{version}") {
        return Ok("--release".into());
    }
    if let Some(n) = tag.strip_prefix(&format!("v{version}-rc.")).filter(|n| n.parse::<u32>().is_ok()) {
        return Ok(format!("--rc={n}"));
    }
    bail!("tag `{tag}` is not one this version ({version}) can produce")
}
