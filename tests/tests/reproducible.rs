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
    let report = xtask::reproduce::reproduce(&options).expect("the rebuild runs");
    assert!(report.images >= 12, "only {} images rebuilt", report.images);
    assert!(report.blobs_compared > 3 * report.images, "too few blobs compared: {}", report.blobs_compared);
    assert!(report.identical(), "the rebuild differs:\n{}", report.differences.join("\n"));
}
