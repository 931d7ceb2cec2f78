//! `cargo xtask publish` against a real registry (Debian's `docker-registry` on loopback): every
//! image and tag arrives with the digests of the build, skopeo reads them back unchanged, Docker
//! pulls by digest, the signatures fetched from the registry verify with openssl, SBOMs are
//! found through the referrers tag, and a second push uploads nothing.

use std::path::{Path, PathBuf};

use stella_e2e::registry::{LocalRegistry, assert_holds};
use xtask::assemble::Built;

fn layout() -> PathBuf {
    xtask::images::default_out()
}

#[test]
fn publish_pushes_every_image_with_its_digests_signatures_and_sboms() {
    let built = Built::read(&layout()).expect("the images are built");
    let registry = LocalRegistry::new();
    let to_prefix = "stella";
    let pushed = xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {})
        .expect("publish");
    assert!(pushed.blobs_uploaded > 0 && pushed.manifests >= built.images.len() * 3, "{pushed:?}");

    // Signed builds (`cargo xtask test` signs): the signatures are checked too.
    let key = std::env::var_os(xtask::sign::KEY_ENV).map(|k| Path::new(&k).with_file_name("cosign.pub"));
    assert_holds(&built, &registry.host, to_prefix, key.as_deref());

    // Pushing again uploads nothing and names the same digests.
    let again =
        xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {}).unwrap();
    assert_eq!(again.blobs_uploaded, 0, "{again:?}");
    assert_eq!(again.tags, pushed.tags);
}
