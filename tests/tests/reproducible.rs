//! Reproducibility: the commit of target/oci, cloned into another directory and rebuilt there
//! with another umask, time zone and target directory, gives the same bytes: the same
//! `index.json`, and every blob of the rebuild present and identical in the original.

#[test]
fn a_rebuild_from_another_clone_is_bit_for_bit_identical() {
    let work = tempfile::Builder::new().prefix("stella-rebuild-").tempdir().unwrap();
    let options = xtask::reproduce::Options {
        against: xtask::images::default_out(),
        work: Some(work.path().to_path_buf()),
        platforms: vec![],
    };
    let head = || {
        let out =
            std::process::Command::new("git").args(["rev-parse", "--symbolic-full-name", "HEAD"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = head();
    let report = xtask::reproduce::reproduce(&options).expect("the rebuild runs");
    assert_eq!(head(), before, "the rebuild touched the workspace's own checkout");
    assert!(report.rebuilt.starts_with(work.path()), "the rebuild was not written under {}", work.path().display());
    let clone_target = work.path().join("target");
    assert!(
        clone_target.join("x86_64-unknown-linux-musl/release").is_dir(),
        "the clone did not compile in its own target dir"
    );
    assert!(report.images >= 12, "only {} images rebuilt", report.images);
    assert!(report.blobs_compared > 3 * report.images, "too few blobs compared: {}", report.blobs_compared);
    assert!(report.identical(), "the rebuild differs:\n{}", report.differences.join("\n"));
    assert_eq!(report.results.len(), report.images);
    assert!(report.results.iter().all(|r| r.index == Some(true) && r.platforms.values().all(|m| *m)), "{report:#?}");

    // The air-gap bundle of the rebuilt layout is the bundle of the original, byte for byte
    // (the bundle test builds the original's twice, with other umasks and directories).
    if std::env::var_os(xtask::sign::KEY_ENV).is_some() {
        let bundle = |layout: &std::path::Path, out: &std::path::Path| {
            xtask::bundle::build(&xtask::bundle::Options {
                layout: layout.to_path_buf(),
                out: out.to_path_buf(),
                key: None,
            })
            .expect("bundling")
            .sha256
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert_eq!(bundle(&xtask::images::default_out(), a.path()), bundle(&report.rebuilt, b.path()));
    }

    // The auditor's other path, `rebuild --compare images.json`: only the published digests.
    let published = xtask::images::default_out().join("images.json");
    let original: xtask::assemble::Built = serde_json::from_slice(&std::fs::read(&published).unwrap()).unwrap();
    let by_digest = xtask::reproduce::compare(&original, &published, None, &report.rebuilt, &[]).unwrap();
    assert!(by_digest.identical(), "{:#?}", by_digest.differences);
    assert_eq!(by_digest.results.len(), report.images);
    // A published digest that differs is reported for that image and platform only.
    let mut altered = original.clone();
    let victim = altered.images[0].name.clone();
    altered.images[0].platforms.get_mut("linux/arm64").unwrap().manifest = format!("sha256:{}", "0".repeat(64));
    let mismatch = xtask::reproduce::compare(&altered, &published, None, &report.rebuilt, &[]).unwrap();
    assert!(!mismatch.identical());
    let bad: Vec<_> = mismatch.results.iter().filter(|r| r.platforms.values().any(|m| !m)).collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].image, victim);
    assert!(bad[0].platforms["linux/amd64"], "the other platform of {victim} still matches");
    assert!(mismatch.differences.iter().any(|d| d.contains("diffoscope")), "{:#?}", mismatch.differences);
}
