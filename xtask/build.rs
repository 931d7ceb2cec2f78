//! Records the digest of xtask's own source (`src/tree.rs`), checked at start-up against the
//! checkout xtask runs in.

#[path = "src/tree.rs"]
mod tree;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let digest = tree::digest(&dir).expect("reading xtask's source");
    println!("cargo:rustc-env=XTASK_SOURCE_DIGEST={digest:016x}");
}
