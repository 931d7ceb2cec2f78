//! Reproducibility: the commit of target/oci, cloned into another directory and rebuilt there
//! with another umask, time zone and target directory, gives the same bytes: the same manifest
//! digests, and every blob of the rebuild present and identical in the original. Every image is
//! rebuilt for linux/amd64 (see the test for why not linux/arm64).

#[test]
fn a_rebuild_from_another_clone_is_bit_for_bit_identical() {
    let head = || {
        let out =
            std::process::Command::new("git").args(["rev-parse", "--symbolic-full-name", "HEAD"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = head();
    let original: xtask::assemble::Built = xtask::assemble::Built::read(&xtask::images::default_out()).unwrap();
    // Every image for linux/amd64: every binary compiled again, every layer (the Debian ones
    // included) assembled again. Not linux/arm64: a platform always compiles every package of
    // the catalog (features unify across one build), so even one arm64 image costs CI the whole
    // arm64 graph again, about six minutes (923 s for both passes at stop 19). arm64 images are
    // run under qemu by images.rs; the full rebuild of both platforms is `cargo xtask
    // reproduce`, the auditor's command.
    let work = tempfile::Builder::new().prefix("stella-rebuild-").tempdir().unwrap();
    let amd64 = rebuild(&work, &["linux/amd64"], &[]);
    assert_eq!(head(), before, "the rebuild touched the workspace's own checkout");
    assert!(
        work.path().join("target/x86_64-unknown-linux-musl/release").is_dir(),
        "the clone did not compile in its own target dir"
    );
    let report = &amd64.report;
    assert_eq!(report.images, original.images.len(), "not every image was rebuilt");
    assert!(report.images >= 12, "only {} images rebuilt", report.images);
    assert!(report.blobs_compared > 3 * report.images, "too few blobs compared: {}", report.blobs_compared);
    assert!(report.identical(), "the amd64 rebuild differs:\n{}", report.differences.join("\n"));
    assert!(report.results.iter().all(|r| r.platforms.len() == 1 && r.platforms["linux/amd64"]), "{report:#?}");

    let report = &amd64.report;
    // The full clone holds the revision: the rebuild checked it out and pinned the record's
    // values, after checking every input file against the record's digests.
    assert_eq!(report.pinned.source, "clone");
    assert_eq!((report.pinned.revision.as_str(), report.pinned.epoch), (original.revision.as_str(), original.epoch));
    assert!(report.pinned.inputs_checked > 100, "{:?}", report.pinned);

    // The auditor's other path, `rebuild --compare images.json`: only the published digests.
    let published = xtask::images::default_out().join("images.json");
    let amd64_only = ["linux/amd64".to_string()];
    let by_digest =
        xtask::reproduce::compare(&original, &published, None, &report.rebuilt, &amd64_only, report.pinned.clone())
            .unwrap();
    assert!(by_digest.identical(), "{:#?}", by_digest.differences);
    assert_eq!(by_digest.results.len(), report.images);
    // A published digest that differs is reported for that image and platform only.
    let mut altered = original.clone();
    let victim = altered.images[0].name.clone();
    altered.images[0].platforms.get_mut("linux/amd64").unwrap().manifest = format!("sha256:{}", "0".repeat(64));
    let mismatch =
        xtask::reproduce::compare(&altered, &published, None, &report.rebuilt, &amd64_only, report.pinned.clone())
            .unwrap();
    assert!(!mismatch.identical());
    let bad: Vec<_> = mismatch.results.iter().filter(|r| r.platforms.values().any(|m| !m)).collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].image, victim);
    let second = &mismatch.results[1];
    assert!(second.platforms["linux/amd64"], "{} still matches", second.image);
    assert!(mismatch.differences.iter().any(|d| d.contains("diffoscope")), "{:#?}", mismatch.differences);
}

struct Rebuild {
    report: xtask::reproduce::Report,
}

fn rebuild(work: &tempfile::TempDir, platforms: &[&str], images: &[&str]) -> Rebuild {
    let options = xtask::reproduce::Options {
        against: xtask::images::default_out(),
        work: Some(work.path().to_path_buf()),
        platforms: platforms.iter().map(|p| p.to_string()).collect(),
        images: images.iter().map(|i| i.to_string()).collect(),
        reuse: true,
    };
    let report = xtask::reproduce::reproduce(&options).expect("the rebuild runs");
    assert!(report.rebuilt.starts_with(work.path()), "the rebuild was not written under {}", work.path().display());
    Rebuild { report }
}
