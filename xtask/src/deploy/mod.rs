//! `cargo xtask deploy`: the deployment files written from `images.toml` and the build record
//! (`target/oci/images.json`), so that they pin exactly the digests that were built and cannot
//! drift from the catalog. `--check` compares instead of writing (CI runs it).
//!
//! Generated: `deploy/compose/docker-compose.yml` and `deploy/compose/.env.example` (the scripts
//! beside them, `quickstart.sh`, `backup.sh`, `reset.sh`, are written by hand and read these), and
//! the chart's generated files (see [`helm`]), and under `docs/` the configuration reference
//! (see [`reference`]).

pub mod compose;
pub mod helm;
pub mod image_catalog;
pub mod reference;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::assemble::Built;

pub struct Options {
    /// The build whose digests are pinned (default target/oci).
    pub layout: PathBuf,
    /// Where `compose/` is written (default deploy/ at the workspace root).
    pub out: PathBuf,
    /// Where the generated pages are written (default docs/ at the workspace root).
    pub docs: Option<PathBuf>,
    pub check: bool,
}

/// Where a generated file goes: under the deployment directory or under docs/.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    Deploy,
    Docs,
}

/// The files `deploy` owns, relative to the output directory, with their content.
pub fn generate(root: &Path, layout: &Path) -> anyhow::Result<Vec<(Root, PathBuf, String)>> {
    let catalog = crate::catalog::load(&root.join("images.toml"), &crate::workspace::package_binaries()?)?;
    let built = Built::read(layout)?;
    for (name, image) in &catalog.images {
        let Some(b) = built.images.iter().find(|b| &b.name == name) else {
            bail!("{}: image {name} was not built; run `cargo xtask images` (every image)", layout.display());
        };
        let wanted = image.platforms.as_ref().unwrap_or(&catalog.defaults.platforms);
        if b.platforms.len() < wanted.len() {
            bail!(
                "{}: image {name} was built for {} platform(s) only; run `cargo xtask images` without --platform",
                layout.display(),
                b.platforms.len()
            );
        }
    }
    // The build's own binaries, asked once: the reference lists their settings, the chart's
    // schema offers each component's secret ones.
    let services = reference::described()?;
    let mut files = vec![
        (PathBuf::from("compose/docker-compose.yml"), compose::compose(&catalog, &built)?),
        (PathBuf::from("compose/.env.example"), compose::env_example(&catalog)?),
    ];
    files.extend(helm::files(&catalog, &built, &services)?);
    let mut files: Vec<(Root, PathBuf, String)> = files.into_iter().map(|(p, c)| (Root::Deploy, p, c)).collect();
    let reference_page = reference::page(&catalog, &built, &services)?;
    files.extend(console_docs(root, &reference_page)?.into_iter().map(|(p, c)| (Root::Deploy, p, c)));
    files.push((Root::Docs, PathBuf::from(reference::PATH), reference_page));
    files.push((Root::Docs, PathBuf::from(image_catalog::PATH), image_catalog::page(&catalog, &built)?));
    Ok(files)
}

/// `compose/docs/`: the install pages (`docs/install/*.md`) that stella-console serves offline
/// at /docs, mounted read-only into its container. Copies, not a mount of `docs/` itself, so the
/// quickstart directory (and the bundle's copy of it) is self-contained; `deploy --check` keeps
/// them current. The configuration reference is the one generated in this same run.
fn console_docs(root: &Path, reference_page: &str) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let dir = root.join("docs/install");
    let reference_name = Path::new(reference::PATH).file_name().context("the reference has a file name")?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else { continue };
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let content = if name == reference_name {
            reference_page.to_string()
        } else {
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
        };
        out.push((Path::new("compose/docs").join(name), content));
    }
    out.sort();
    Ok(out)
}

/// Writes (or with `check`, compares) every generated file; returns the paths.
pub fn run(options: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let root = crate::shell::root();
    let files = generate(&root, &options.layout)?;
    let docs = options.docs.clone().unwrap_or_else(|| root.join("docs"));
    let mut stale = Vec::new();
    let mut written = Vec::new();
    for (base, rel, content) in &files {
        let path = match base {
            Root::Deploy => options.out.join(rel),
            Root::Docs => docs.join(rel),
        };
        if options.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                stale.push(path.display().to_string());
            }
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::oci::write_atomic(&path, content.as_bytes())?;
        written.push(path);
    }
    // Pages removed from docs/install leave their copies behind: extra files are stale too.
    let generated: Vec<PathBuf> =
        files.iter().filter(|(b, _, _)| matches!(b, Root::Deploy)).map(|(_, rel, _)| options.out.join(rel)).collect();
    let copies = options.out.join("compose/docs");
    for entry in std::fs::read_dir(&copies).into_iter().flatten().flatten() {
        let path = entry.path();
        if !generated.contains(&path) {
            if options.check {
                stale.push(format!("{} (no such page in docs/install)", path.display()));
            } else {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "{} differ from what `cargo xtask deploy` writes for the build in {}:\n  {}\n  help: run `cargo xtask deploy` and commit the result",
            if stale.len() == 1 { "this file would" } else { "these files would" },
            options.layout.display(),
            stale.join("\n  ")
        );
    }
    Ok(written)
}
