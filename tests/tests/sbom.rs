//! SBOMs of the last build (target/oci), for every image and platform: attached as an OCI 1.1
//! referrer and baked into the image identically, valid SPDX 2.3 by `pyspdxtools`, conformant
//! to the NTIA minimum elements by `ntia-checker`, and listing exactly the crates that
//! `cargo tree -e normal --target <triple>` lists for the service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::assemble::Built;

fn layout() -> PathBuf {
    xtask::images::default_out()
}

fn blob(digest: &str) -> Vec<u8> {
    std::fs::read(layout().join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// SBOM bytes attached to each manifest, by the manifest's digest.
fn attached() -> BTreeMap<String, Vec<u8>> {
    let index = json(&std::fs::read(layout().join("index.json")).unwrap());
    let mut out = BTreeMap::new();
    for m in index["manifests"].as_array().unwrap() {
        if m["artifactType"] != xtask::sbom::MEDIA_TYPE {
            continue;
        }
        let artifact = json(&blob(m["digest"].as_str().unwrap()));
        let subject = artifact["subject"]["digest"].as_str().unwrap().to_string();
        out.insert(subject, blob(artifact["layers"][0]["digest"].as_str().unwrap()));
    }
    out
}

/// The SBOM baked into the image, read with tar from the last layer.
fn baked(manifest: &str, work: &Path) -> Vec<u8> {
    let doc = json(&blob(manifest));
    let layers = doc["layers"].as_array().unwrap();
    let app = layout().join("blobs/sha256").join(&layers[layers.len() - 1]["digest"].as_str().unwrap()[7..]);
    let out = Command::new("tar").arg("-xzOf").arg(&app).arg(xtask::sbom::PATH).current_dir(work).output().unwrap();
    assert!(out.status.success(), "no {} in the application layer", xtask::sbom::PATH);
    out.stdout
}

fn checked(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

#[test]
fn every_image_has_a_valid_conformant_sbom_attached_and_baked_in() {
    let built = Built::read(&layout()).unwrap();
    let attached = attached();
    let work = tempfile::tempdir().unwrap();
    let jobs: Vec<(String, String)> = built
        .images
        .iter()
        .flat_map(|i| i.platforms.iter().map(move |(p, m)| (format!("{} {p}", i.name), m.manifest.clone())))
        .chain(built.images.iter().map(|i| (format!("{} index", i.name), i.digest.clone())))
        .collect();
    std::thread::scope(|scope| {
        for chunk in jobs.chunks(jobs.len().div_ceil(2)) {
            let (attached, work, created, built_images) = (&attached, work.path(), &built.created, &built.images);
            scope.spawn(move || {
                for (name, manifest) in chunk {
                    let sbom = attached.get(manifest).unwrap_or_else(|| panic!("{name}: no SBOM referrer"));
                    let doc = json(sbom);
                    if name.ends_with(" index") {
                        // The index SBOM names every platform image by digest.
                        let text = String::from_utf8_lossy(sbom);
                        let image = built_images.iter().find(|i| &i.digest == manifest).unwrap();
                        for p in image.platforms.values() {
                            assert!(text.contains(&p.manifest[7..]), "{name} does not name {}", p.manifest);
                        }
                    } else {
                        assert_eq!(
                            &baked(manifest, work),
                            sbom,
                            "{name}: the baked SBOM differs from the attached one"
                        );
                    }
                    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
                    assert_eq!(doc["name"], name.as_str());
                    assert_eq!(&doc["creationInfo"]["created"], created, "{name}: created is not the source epoch");
                    let file = work.join(format!("{}.spdx.json", name.replace([' ', '/'], "-")));
                    std::fs::write(&file, sbom).unwrap();
                    checked(Command::new("pyspdxtools").arg("-i").arg(&file));
                    let report = checked(Command::new("ntia-checker").args(["-r", "json"]).arg(&file));
                    let start = report.find('{').expect("ntia-checker prints JSON");
                    // The JSON report may be followed by warnings on stderr: read the first value.
                    let report: serde_json::Value = serde_json::Deserializer::from_str(&report[start..])
                        .into_iter()
                        .next()
                        .expect("a JSON report")
                        .unwrap();
                    assert_eq!(report["isNtiaConformant"], true, "{name}: {report}");
                }
            });
        }
    });
}

#[test]
fn the_sbom_lists_exactly_what_cargo_tree_lists() {
    let built = Built::read(&layout()).unwrap();
    let attached = attached();
    let image = built.images.iter().find(|i| i.name == "stella-api").expect("the stella-api image");
    for (platform, p) in &image.platforms {
        let triple = xtask::catalog::Platform::parse(platform).unwrap().triple;
        let doc = json(&attached[&p.manifest]);
        // Linked crates are those some linked element DEPENDS_ON; a crate may also be a build
        // dependency of another (libc of jobserver, for a build script), which does not make it
        // build-only.
        let related = |kind: &str, end: &str| -> BTreeSet<&str> {
            doc["relationships"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["relationshipType"] == kind)
                .map(|r| r[end].as_str().unwrap())
                .collect()
        };
        let depended_on = related("DEPENDS_ON", "relatedSpdxElement");
        let build_only: BTreeSet<&str> =
            related("BUILD_DEPENDENCY_OF", "spdxElementId").difference(&depended_on).copied().collect();
        let mut linked = BTreeSet::new();
        for pkg in doc["packages"].as_array().unwrap() {
            let id = pkg["SPDXID"].as_str().unwrap();
            if !id.starts_with("SPDXRef-Crate-") {
                continue;
            }
            let (name, version) = (pkg["name"].as_str().unwrap(), pkg["versionInfo"].as_str().unwrap());
            let purl = &pkg["externalRefs"][0]["referenceLocator"];
            assert_eq!(purl, &format!("pkg:cargo/{name}@{version}"), "{id}");
            assert_eq!(pkg["checksums"][0]["algorithm"], "SHA256", "{id} has no Cargo.lock checksum");
            let declared = pkg["licenseDeclared"].as_str().unwrap();
            assert!(!declared.contains('/'), "{id}: license `{declared}` is not normalized");
            if !build_only.contains(id) {
                linked.insert((name.to_string(), version.to_string()));
            }
        }
        let tree: BTreeSet<(String, String)> = xtask::sbom::cargo_tree("stella-api", triple)
            .unwrap()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("stella-"))
            .collect();
        let missing: Vec<_> = tree.difference(&linked).collect();
        let extra: Vec<_> = linked.difference(&tree).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{platform}: missing {missing:?}, extra {extra:?}");
    }
}

/// Every image with Debian layers lists every package the lock pins for them, with its
/// `pkg:deb` purl and the `.deb`'s SHA-256; licenses come from the packages' copyright files.
#[test]
fn every_locked_debian_package_is_in_the_sbom_of_the_images_that_contain_it() {
    let root = stella_e2e::root();
    let built = Built::read(&layout()).unwrap();
    let bins = xtask::workspace::package_binaries().unwrap();
    let catalog = xtask::catalog::load(&root.join("images.toml"), &bins).unwrap();
    let lock = xtask::debian::Lock::read(&root.join("layers")).unwrap();
    let attached = attached();
    let mut images_with_debs = 0;
    for image in &built.images {
        let entry = &catalog.images[&image.name];
        for (platform, p) in &image.platforms {
            let arch = platform.rsplit('/').next().unwrap();
            let expected: Vec<&xtask::debian::Deb> = entry
                .layers
                .iter()
                .filter(|l| lock.layers.iter().any(|x| &x.name == *l))
                .flat_map(|l| lock.packages(l, arch).unwrap())
                .collect();
            if expected.is_empty() {
                continue;
            }
            images_with_debs += 1;
            let doc = json(&attached[&p.manifest]);
            let packages = doc["packages"].as_array().unwrap();
            let mut licensed = 0;
            for deb in &expected {
                let found = packages
                    .iter()
                    .find(|x| x["externalRefs"][0]["referenceLocator"] == deb.purl())
                    .unwrap_or_else(|| panic!("{} {platform}: {} is not in the SBOM", image.name, deb.purl()));
                assert_eq!(found["checksums"][0]["checksumValue"], deb.sha256.as_str(), "{}", deb.file);
                assert_eq!(found["versionInfo"], deb.version.as_str());
                if found["licenseDeclared"] != "NOASSERTION" {
                    licensed += 1;
                }
            }
            eprintln!(
                "{} {platform}: {} Debian packages, {licensed} with a declared license",
                image.name,
                expected.len()
            );
            assert!(licensed * 2 >= expected.len(), "{}: fewer than half the packages have a license", image.name);
        }
    }
    assert!(images_with_debs >= 6, "only {images_with_debs} image/platform pairs have Debian packages");
}
