//! `cargo xtask schema`: the JSON Schema of `images.toml`, generated from the catalog's types
//! and committed as `docs/images.schema.json`; a test fails when it is stale.

use anyhow::bail;

use crate::{catalog, shell};

pub fn run(check: bool) -> anyhow::Result<()> {
    let path = shell::root().join("docs/images.schema.json");
    let want = catalog::json_schema();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        return Ok(());
    }
    if check {
        bail!("{} is stale: run `cargo xtask schema`", path.display());
    }
    std::fs::create_dir_all(path.parent().expect("docs/"))?;
    crate::oci::write_atomic(&path, want.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
