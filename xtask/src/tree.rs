//! Which source tree this xtask binary was built from, so that it never works on another.
//!
//! The workspace root is found at run time (`shell::root`), so a binary built in checkout A and
//! run in checkout B (two checkouts sharing one `CARGO_TARGET_DIR`, as CI caches and auditors
//! do) would act on B's files with A's code. The build script records a digest of xtask's own
//! source; at start-up the digest of the checkout's `xtask/` must be the same, or xtask stops.
//! The digest is FNV-1a over every file's path and bytes: it tells trees apart, it is no
//! security boundary (whoever can write the target directory can replace the binary). This
//! file is also the build script's (`build.rs`), so it uses nothing but std; the check itself
//! is `shell::check_tree`.

use std::path::Path;

/// FNV-1a (64-bit) of `xtask/Cargo.toml` and every file under `xtask/src`, in path order.
pub fn digest(xtask_dir: &Path) -> std::io::Result<u64> {
    let mut files = vec![xtask_dir.join("Cargo.toml")];
    collect(&xtask_dir.join("src"), &mut files)?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        let rel = file.strip_prefix(xtask_dir).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        feed(rel.as_bytes());
        feed(&[0]);
        feed(&std::fs::read(&file)?);
        feed(&[0]);
    }
    Ok(hash)
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
