//! Golden test: a small fixed catalog built with fake binaries and pinned metadata must give
//! the same `index.json`, byte for byte, as when this digest was recorded. An accidental change
//! to tar headers, gzip settings or JSON encoding shows up here first.
//!
//! If a change to the encoding is intended, replace GOLDEN with the digest printed on failure
//! and say why in the commit message: every image digest changes with it. The baked SBOM lists
//! the crates of `Cargo.lock`, so a dependency update changes this digest too.

use xtask::plan::{Pin, Request};

const GOLDEN: &str = "sha256:3c604e9f83f91b8dcd1fae2212de58126be416b3e92e3e3fe117fb85205f6a58";

fn build(out: &std::path::Path) -> (Vec<u8>, xtask::assemble::Built) {
    let fixtures = xtask::shell::root().join("tests/fixtures/golden");
    let request = Request {
        fake_binaries: true,
        layers_dir: fixtures.join("layers"),
        pin: Some(Pin { version: "1.2.3".into(), revision: "0".repeat(40), epoch: 1_700_000_000 }),
        // Unsigned whatever the environment: `cargo xtask test` sets STELLA_SIGNING_KEY_FILE.
        key: None,
        ..Request::new(fixtures.join("images.toml"), out.to_path_buf())
    };
    let (_, built) = xtask::images::build(&request, true).expect("golden build");
    (std::fs::read(out.join("index.json")).unwrap(), built)
}

#[test]
fn golden_layout_digest() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (index_a, built_a) = build(&a.path().join("oci"));
    let (index_b, _) = build(&b.path().join("nested/dir/oci"));
    assert_eq!(index_a, index_b, "two builds of the same inputs differ");
    let digest = xtask::layer::sha256(&index_a);
    assert_eq!(
        digest,
        GOLDEN,
        "the golden layout changed: index.json is now {digest}; images: {}",
        serde_json::to_string_pretty(&built_a).unwrap()
    );
}
