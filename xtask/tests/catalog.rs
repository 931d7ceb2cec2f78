//! `images.toml` validation: every kind of bad input gives one error naming the file, line and
//! column, the key and the fix; no input makes the parser panic.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use xtask::catalog::{CatalogError, parse};

const GOOD: &str = r#"
[defaults]
registry = "r.example"
repository = "stella"
platforms = ["linux/amd64", "linux/arm64"]
user = "65532:65532"
base_layers = ["base"]
source = "https://example.org/src"
licenses = "Apache-2.0"
vendor = "StellaOps"

[images.stella-api]
description = "API"
package = "stella-api"
ports = [8081]

[images.stella-console]
description = "Console"
package = "stella-console"
ports = [8080]
"#;

fn binaries() -> BTreeMap<String, BTreeSet<String>> {
    ["stella-api", "stella-console"].iter().map(|p| (p.to_string(), BTreeSet::from([p.to_string()]))).collect()
}

fn error(text: &str) -> CatalogError {
    parse("images.toml", text, &binaries()).expect_err("this catalog must be refused")
}

/// Asserts the error's location and that its text names `needle` and has a fix.
fn check(text: &str, line: usize, needle: &str) {
    let e = error(text);
    let shown = e.to_string();
    assert_eq!(e.line, line, "wrong line in: {shown}");
    assert!(shown.starts_with(&format!("images.toml:{line}:{}: ", e.column)), "{shown}");
    assert!(shown.contains(needle), "`{needle}` missing from: {shown}");
    assert!(shown.contains("help: ") && e.help.len() > 10, "no fix in: {shown}");
}

#[test]
fn the_committed_catalog_is_valid_and_covers_every_service() {
    let root = xtask::shell::root();
    let binaries = xtask::workspace::package_binaries().unwrap();
    let catalog = xtask::catalog::load(&root.join("images.toml"), &binaries).unwrap();
    for bin in xtask::workspace::service_binaries().unwrap() {
        assert!(catalog.images.contains_key(&bin), "service {bin} has no image in images.toml");
    }
}

#[test]
fn a_good_catalog_parses() {
    let c = parse("images.toml", GOOD, &binaries()).unwrap();
    assert_eq!(c.images.len(), 2);
    assert_eq!(c.images["stella-api"].binary(), "stella-api");
}

#[test]
fn unknown_key() {
    check(&GOOD.replace("ports = [8081]", "prots = [8081]"), 15, "unknown field `prots`");
}

#[test]
fn wrong_type() {
    check(&GOOD.replace("ports = [8081]", "ports = \"8081\""), 15, "invalid type");
}

#[test]
fn duplicate_image_name() {
    let text = format!("{GOOD}\n[images.stella-api]\ndescription = \"again\"\npackage = \"stella-api\"\n");
    check(&text, 22, "duplicate key `stella-api`");
}

#[test]
fn binary_no_package_provides() {
    check(
        &GOOD.replace("package = \"stella-api\"", "package = \"stella-nope\""),
        14,
        "no workspace package is named `stella-nope`",
    );
    let text = GOOD.replace("package = \"stella-api\"", "package = \"stella-api\"\nbinary = \"other\"");
    check(&text, 15, "provides no binary `other`");
}

#[test]
fn port_clash() {
    check(&GOOD.replace("ports = [8080]", "ports = [8081]"), 20, "port 8081 is already used by image `stella-api`");
}

#[test]
fn unknown_platform() {
    check(&GOOD.replace("\"linux/arm64\"]", "\"linux/s390x\"]"), 5, "unknown platform `linux/s390x`");
    let text = GOOD.replace("ports = [8080]", "ports = [8080]\nplatforms = [\"windows/amd64\"]");
    check(&text, 21, "unknown platform `windows/amd64`");
}

#[test]
fn root_user_and_bad_names() {
    check(&GOOD.replace("65532:65532", "0:0"), 6, "non-root");
    check(&GOOD.replace("[images.stella-console]", "[images.Stella_Console]"), 17, "not a valid repository name");
}

#[test]
fn missing_key() {
    check(&GOOD.replace("vendor = \"StellaOps\"\n", ""), 2, "missing field `vendor`");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary text never panics the parser.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse("images.toml", &text, &binaries());
    }

    /// A valid catalog with one byte replaced or removed either parses or gives a located error.
    #[test]
    fn mutated_catalog_never_panics(pos in 0usize..GOOD.len(), byte in 0u8..128, remove in any::<bool>()) {
        let mut bytes = GOOD.as_bytes().to_vec();
        if remove { bytes.remove(pos); } else { bytes[pos] = byte; }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse("images.toml", &text, &binaries()) {
            prop_assert!(e.line >= 1 && e.column >= 1);
            prop_assert!(!e.help.is_empty());
        }
    }
}

#[test]
fn the_committed_json_schema_is_current() {
    xtask::schema::run(true).expect("docs/images.schema.json is stale: run `cargo xtask schema`");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(xtask::shell::root().join("docs/images.schema.json")).unwrap())
            .unwrap();
    let image = &schema["$defs"]["Image"];
    assert_eq!(image["additionalProperties"], false, "unknown keys must be refused by the schema too");
    assert!(image["properties"]["ports"]["description"].is_string(), "fields carry their documentation");
}
