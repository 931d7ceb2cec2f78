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
}
