//! `cargo xtask`: the StellaOps distribution pipeline's command line.
//!
//! A thin dispatch: flags are parsed in [`flags`], each command lives in its own module and
//! does its work through library code.

mod flags;

use clap::Parser;
use xtask::{bench, images, setup, test};

fn main() -> std::process::ExitCode {
    let flags = flags::Xtask::parse();
    // Asked from anywhere (by `reproduce`): what this binary was built from, checked by the caller.
    if let flags::Command::SourceDigest = flags.command {
        println!("{}", env!("XTASK_SOURCE_DIGEST"));
        return std::process::ExitCode::SUCCESS;
    }
    // The root is found at run time: this binary must be the code of the checkout it acts on.
    if let Err(e) = xtask::shell::check_tree(&xtask::shell::root()) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let result = match flags.command {
        flags::Command::Setup(f) => setup::run(&setup::Options { test: f.test, dry_run: f.dry_run }),
        flags::Command::Test(f) => {
            test::run(&test::Options { setup: !f.no_setup, cargo_test_args: f.cargo_test_args, jobs: f.jobs })
        }
        flags::Command::Bench(f) => match f.suite {
            flags::Suite::Services => bench::services::run(&bench::Options { json: f.json, runs: f.runs }),
            flags::Suite::Images => bench::images::run(&bench::Options { json: f.json, runs: f.runs }),
            flags::Suite::Bundle => bench::bundle::run(&bench::Options { json: f.json, runs: f.runs }),
            flags::Suite::Stack => bench::stack::run(&bench::stack::Options { json: f.json, seconds: f.seconds }),
        },
        flags::Command::Images(f) => {
            images::run(&images::Options { request: f.select.request(), json: f.json, load: f.load, force: f.force })
        }
        flags::Command::Plan(f) => images::print_plan(&f.select.request(), f.json),
        flags::Command::Reproduce(f) => reproduce(f),
        flags::Command::Rebuild(f) => reproduce(flags::Reproduce {
            against: Some(f.compare),
            work: f.work,
            platforms: f.platforms,
            images: f.images,
            reuse: false,
            json: f.json,
        }),
        flags::Command::Bundle(f) => bundle(f),
        flags::Command::Keygen(f) => xtask::sign::keygen(&images::absolute(f.out)),
        flags::Command::Verify(f) => verify(f),
        flags::Command::Schema(f) => xtask::schema::run(f.check),
        flags::Command::Publish(f) => publish(f),
        flags::Command::Chart(f) => chart(f),
        flags::Command::SourceDigest => unreachable!("answered before the checkout is checked"),
        flags::Command::Deploy(f) => deploy(f),
        flags::Command::Layers(f) => match f.command {
            flags::LayersCommand::Lock(f) => lock(f),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bundle(f: flags::BundleFlags) -> anyhow::Result<()> {
    match f.command {
        Some(flags::BundleCommand::Verify(v)) => {
            let trust = match (v.key, v.fingerprint) {
                (Some(k), _) => xtask::bundle::Trust::Key(xtask::sign::read_public(&images::absolute(k))?),
                (None, Some(fp)) => xtask::bundle::Trust::Fingerprint(fp),
                (None, None) => {
                    anyhow::bail!("give the trusted key (--key FILE) or its fingerprint (--fingerprint sha256:...)")
                }
            };
            let v = xtask::bundle::verify(&images::absolute(v.file), &trust)?;
            println!("{}", v.summary("the bundle"));
            Ok(())
        }
        Some(flags::BundleCommand::Split(s)) => {
            for part in xtask::bundle::split(&images::absolute(s.file), xtask::bundle::parse_size(&s.size)?)? {
                println!("wrote {}", part.display());
            }
            Ok(())
        }
        None => {
            let options = xtask::bundle::Options {
                layout: f.layout.map(images::absolute).unwrap_or_else(images::default_out),
                out: f.out.map(images::absolute).unwrap_or_else(xtask::bundle::default_out),
                key: f.key.map(images::absolute),
                since: f.since.map(images::absolute),
            };
            let b = xtask::bundle::build(&options)?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                println!("{}  {} files, {}", b.path.display(), b.files, images::human(b.size));
                println!("sha256 {}", b.sha256);
                println!("signed by {}", b.fingerprint);
                if let Some(base) = &b.base {
                    println!("a delta on top of {base}: {} blobs are taken from it", b.blobs_from_base);
                }
                for f in &b.beside {
                    println!("beside it: {}", f.display());
                }
            }
            Ok(())
        }
    }
}

fn reproduce(f: flags::Reproduce) -> anyhow::Result<()> {
    let options = xtask::reproduce::Options {
        against: f.against.map(images::absolute).unwrap_or_else(images::default_out),
        work: f.work.map(images::absolute),
        platforms: f.platforms,
        images: f.images,
        reuse: f.reuse,
    };
    let report = xtask::reproduce::reproduce(&options)?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("rebuilt {} images of {} in {}", report.images, report.revision, report.rebuilt.display());
        let p = &report.pinned;
        println!(
            "pinned from the record: revision {} and source epoch {}; {} input files checked ({})",
            p.revision, p.epoch, p.inputs_checked, p.source
        );
        let yes = |b: bool| if b { "match" } else { "DIFFERS" };
        for r in &report.results {
            let platforms: Vec<String> = r.platforms.iter().map(|(p, m)| format!("{p} {}", yes(*m))).collect();
            let index = r.index.map(yes).unwrap_or("-");
            println!("  {:<22} index {:<8} {}", r.image, index, platforms.join(", "));
        }
        println!("{} blobs compared; index.json identical: {}", report.blobs_compared, report.index_identical);
        for d in &report.differences {
            println!("  differs: {d}");
        }
    }
    if !report.identical() {
        anyhow::bail!("the rebuild differs from {}", report.original.display());
    }
    Ok(())
}

fn deploy(f: flags::DeployFlags) -> anyhow::Result<()> {
    let options = xtask::deploy::Options {
        layout: f.layout.map(images::absolute).unwrap_or_else(images::default_out),
        out: f.out.map(images::absolute).unwrap_or_else(|| xtask::shell::root().join("deploy")),
        docs: None,
        check: f.check,
    };
    let written = xtask::deploy::run(&options)?;
    if options.check {
        println!("deploy files are current for {}", options.layout.display());
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn chart(f: flags::ChartFlags) -> anyhow::Result<()> {
    let root = xtask::shell::root();
    let layout = f.layout.map(images::absolute).unwrap_or_else(images::default_out);
    let out = f.out.map(images::absolute).unwrap_or_else(|| root.join("target/chart"));
    // The chart must pin this build's digests: the check `deploy --check` runs.
    xtask::deploy::run(&xtask::deploy::Options {
        layout: layout.clone(),
        out: root.join("deploy"),
        docs: None,
        check: true,
    })?;
    let key_file = f.key.or_else(|| std::env::var_os(xtask::sign::KEY_ENV).map(std::path::PathBuf::from));
    let key = key_file.as_deref().map(xtask::sign::read_key).transpose()?;
    let written = xtask::chart::write(&xtask::chart::default_dir(&root), &layout, &out, key.as_ref())?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&written)?);
    } else {
        println!(
            "{}:{}@{} ({} bytes packaged) in {}",
            written.repository,
            written.tag,
            written.digest,
            written.archive.size,
            out.display()
        );
        match &written.signed_by {
            Some(fp) => println!("signed by key {fp}"),
            None => println!("UNSIGNED: no key given (--key FILE or ${})", xtask::sign::KEY_ENV),
        }
        println!("push it: cargo xtask publish --layout {}", out.display());
    }
    Ok(())
}

fn publish(f: flags::Publish) -> anyhow::Result<()> {
    let layout = f.layout.map(images::absolute).unwrap_or_else(images::default_out);
    let to = match f.to {
        Some(to) => to,
        None => xtask::catalog::default_destination(&xtask::catalog::default_path())?,
    };
    let (host, prefix) = to.split_once('/').unwrap_or((to.as_str(), ""));
    let credentials = stella_distribution::auth::Credentials::from_env().map_err(anyhow::Error::msg)?;
    let options = xtask::registry::Options { insecure: f.insecure, credentials, ..Default::default() };
    let quiet = f.json;
    let pushed = xtask::registry::push_layout(&layout, host, prefix, options, &|line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&pushed)?);
    } else {
        for (reference, digest) in &pushed.tags {
            println!("{reference}@{digest}");
        }
        println!(
            "{} manifests put, {} already there; blobs: {} uploaded ({:.1} MiB), {} mounted, {} already there",
            pushed.manifests,
            pushed.manifests_present,
            pushed.blobs_uploaded,
            pushed.bytes_uploaded as f64 / 1048576.0,
            pushed.blobs_mounted,
            pushed.blobs_present
        );
    }
    Ok(())
}

fn lock(f: flags::LockFlags) -> anyhow::Result<()> {
    let architectures = if f.architectures.is_empty() { vec!["amd64".into(), "arm64".into()] } else { f.architectures };
    let quiet = f.json;
    let summary = xtask::debian::relock(&architectures, &|line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for s in &summary {
            println!(
                "{:<16} {:<6} {:>4} packages {:>8.1} MiB",
                s.layer,
                s.architecture,
                s.packages,
                s.bytes as f64 / 1048576.0
            );
        }
    }
    Ok(())
}

fn verify(f: flags::VerifyFlags) -> anyhow::Result<()> {
    let layout = f.layout.map(images::absolute).unwrap_or_else(images::default_out);
    let key = xtask::sign::read_public(&f.key)?;
    let report = xtask::verify::verify(&layout, &key)?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} blobs checked, {} altered", report.blobs, report.blob_problems.len());
        println!(
            "{:<22} {:>9} {:>17} {:>16} {:>13} {:>11}  result",
            "image", "subjects", "legacy signatures", "sigstore bundles", ".att layers", "provenance"
        );
        for r in &report.images {
            let result = if r.problems.is_empty() { "ok".to_string() } else { r.problems.join("; ") };
            println!(
                "{:<22} {:>9} {:>17} {:>16} {:>13} {:>11}  {result}",
                r.image, r.subjects, r.valid, r.bundles, r.attestations, r.provenance
            );
        }
        for p in &report.blob_problems {
            println!("  {p}");
        }
    }
    if !report.ok() {
        anyhow::bail!("verification failed for {}", layout.display());
    }
    Ok(())
}
