//! `cargo xtask images` and `cargo xtask plan`: plan, compile, assemble, report.

use std::path::PathBuf;

use anyhow::Context;

use crate::assemble::{self, Built};
use crate::plan::{self, Plan, Request};
use crate::{compile, shell};

pub struct Options {
    pub request: Request,
    pub json: bool,
    /// Load the host platform's images into the local Docker engine afterwards.
    pub load: bool,
    /// Build even when the layout's stamp says nothing changed.
    pub force: bool,
}

/// The default output directory, `target/oci`.
pub fn default_out() -> PathBuf {
    crate::workspace::target_dir().join("oci")
}

/// Plans, builds and assembles; returns the record written to `<out>/images.json`.
pub fn build(request: &Request, quiet: bool) -> anyhow::Result<(Plan, Built)> {
    let plan = plan::plan(request)?;
    // Two builds into one layout would share its staging directory: the second waits.
    let _lock = lock(&plan.out, quiet)?;
    if plan.dirty && !quiet {
        eprintln!(
            "warning: the working tree has uncommitted changes; revision {} does not describe them",
            plan.revision
        );
    }
    if !plan.fake_binaries {
        // A fresh machine needs the targets and cross linkers; on a set-up one this is a check.
        crate::setup::run(&crate::setup::Options { test: false, dry_run: false })
            .context("installing what the build needs (see `cargo xtask setup --help`)")?;
    }
    let binaries = compile::compile(&plan)?;
    let built = assemble::assemble(&plan, &binaries, quiet)?;
    // Only a build of the whole catalog: what the quickstart and the bundle use. A partial one
    // (an auditor's one-platform rebuild, a developer's one image) need not compile the loader.
    if !plan.fake_binaries && request.platforms.is_empty() && request.images.is_empty() {
        write_loaders(&plan)?;
    }
    Ok((plan, built))
}

/// `<out>/bin/stella-load-<arch>`: the static loader beside the layout it can push, so that
/// `quickstart.sh --layout` pushes the images with it and compiles nothing (the air-gap bundle
/// carries the same binaries). Outside the OCI layout proper, like `images.json`: tools that read
/// the layout look only at `oci-layout`, `index.json` and `blobs/`.
fn write_loaders(plan: &Plan) -> anyhow::Result<()> {
    let dir = plan.out.join("bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for target in &plan.targets {
        let bin = compile::loader(plan, target)?;
        let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        let path = dir.join(format!("stella-load-{}", compile::arch(&target.platform)));
        crate::oci::write_atomic(&path, &bytes)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
    }
    Ok(())
}

/// An exclusive lock on `<out>.lock`, held until the guard drops (the OS releases it if the
/// process dies, so a crashed build never leaves a stale lock).
fn lock(out: &std::path::Path, quiet: bool) -> anyhow::Result<std::fs::File> {
    let path = out.with_extension("lock");
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        if !quiet {
            eprintln!("waiting for another build that writes {} (lock {})", out.display(), path.display());
        }
        file.lock().with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let request = &options.request;
    let root = shell::root();
    // Nothing changed since the last build of this layout: answer from its record
    // (`crate::fresh`), without planning, hashing, compiling or assembling again.
    let fresh = !options.force && crate::fresh::is_fresh(request, &root);
    let (out, built) = if fresh {
        let built = Built::read(&request.out)?;
        if !options.json {
            eprintln!(
                "up to date: nothing this build reads changed since {} was written (--force rebuilds)",
                crate::fresh::path(&request.out).display()
            );
        }
        (request.out.clone(), built)
    } else {
        crate::fresh::forget(&request.out)?;
        let (plan, built) = build(request, options.json)?;
        crate::fresh::record(&plan, request, &root)?;
        (plan.out, built)
    };
    if options.load {
        crate::load::load(&out, &built)?;
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&built)?);
        return Ok(());
    }
    println!("{} images in {} ({:.1} s)", built.images.len(), out.display(), started.elapsed().as_secs_f64());
    for image in &built.images {
        println!("  {}@{}", image.repository, image.digest);
        for (platform, p) in &image.platforms {
            println!(
                "    {platform:<12} {}  {:>9} compressed, binary {:>9}",
                &p.manifest[..19],
                human(p.compressed_size),
                human(p.binary_size)
            );
        }
    }
    println!("tags: {}", built.tags.join(", "));
    match &built.signed_by {
        Some(fp) => println!("signed by key {fp} (cosign tags and OCI referrers)"),
        None => {
            println!("UNSIGNED: no key given (--key FILE or ${}); `cargo xtask keygen` makes one", crate::sign::KEY_ENV)
        }
    }
    Ok(())
}

/// `cargo xtask plan`.
pub fn print_plan(request: &Request, json: bool) -> anyhow::Result<()> {
    let plan = plan::plan(request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("version {} revision {} epoch {} ({})", plan.version, plan.revision, plan.epoch, plan.created);
        println!("tags: {}", plan.tags.join(", "));
        for t in &plan.targets {
            println!("build {} ({}): {}", t.platform, t.triple, t.packages.join(" "));
        }
        for i in &plan.images {
            println!("image {} [{}] layers {} + app", i.repository, i.platforms.join(", "), i.layers.join(" + "));
        }
        println!("out: {}", plan.out.display());
    }
    Ok(())
}

pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// Relative paths are taken from the current directory, as a user expects.
pub fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { std::env::current_dir().unwrap_or_else(|_| shell::root()).join(path) }
}

#[cfg(test)]
mod lock_tests {
    #[test]
    fn a_second_build_of_the_same_layout_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("oci");
        let held = super::lock(&out, true).unwrap();
        let other = std::fs::File::create(out.with_extension("lock")).unwrap();
        assert!(other.try_lock().is_err(), "the lock is not exclusive");
        drop(held);
        assert!(other.try_lock().is_ok(), "the lock outlived its guard");
    }
}
