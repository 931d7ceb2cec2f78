//! SBOMs: one SPDX 2.3 JSON document per image and platform, made while assembling.
//!
//! It describes the image; the application package and every crate linked into it for that
//! target (the normal-dependency closure from `cargo metadata --filter-platform`), with purl,
//! download location, the SHA-256 of `Cargo.lock`, the declared license as a normalized SPDX
//! expression and the supplier; build-time crates related as `BUILD_DEPENDENCY_OF`; and the
//! files of every layer with SHA-1 and SHA-256. `created` is the source epoch and the
//! namespace is derived from the content, so the same build gives the same bytes.
//!
//! Typed serde structs were not needed: the document is built as JSON values and written
//! compactly with sorted keys ([`encode`]); `spdx-rs` writes SPDX 2.2 with random namespaces
//! and the clock (see CRATES.md). Not OLPC canonical JSON, as the OCI documents are: that form
//! leaves control characters unescaped, and license texts from Debian hold newlines.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sha1::Digest as _;

mod cargo;

pub use cargo::{Crate, Graph, Set, cargo_tree, closures, graph};

use crate::layer::{Kind, Layer};
use crate::plan::{ImagePlan, Plan};

/// Where the SBOM is baked into every image.
pub const PATH: &str = "app/sbom.spdx.json";
pub const MEDIA_TYPE: &str = "application/spdx+json";

fn spdx_id(kind: &str, name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    format!("SPDXRef-{kind}-{clean}")
}

pub(crate) fn license(raw: Option<&str>) -> String {
    match raw.map(|l| spdx::Expression::canonicalize(l).map(|c| c.unwrap_or_else(|| l.to_string()))) {
        Some(Ok(l)) if spdx::Expression::parse(&l).is_ok() => l,
        _ => "NOASSERTION".into(),
    }
}

/// `Person: Name (email)` from a cargo author, else the repository's owner, else NOASSERTION.
fn supplier(c: &Crate) -> String {
    if let Some(author) = c.authors.first() {
        let (name, email) = match author.split_once('<') {
            Some((n, e)) => (n.trim(), e.trim_end_matches('>').trim()),
            None => (author.trim(), ""),
        };
        let name = name.replace(['(', ')'], "");
        if !name.is_empty() {
            return if email.is_empty() { format!("Person: {name}") } else { format!("Person: {name} ({email})") };
        }
    }
    match c.repository.as_deref().and_then(|r| r.trim_end_matches('/').rsplit('/').nth(1)) {
        Some(owner) if !owner.is_empty() => format!("Organization: {owner}"),
        _ => "NOASSERTION".into(),
    }
}

/// Marks `package` as containing `files` (SPDX requires `filesAnalyzed` and a verification
/// code, the SHA-1 of the files' sorted SHA-1s, for a package that lists its files).
fn own_files(package: &mut Value, files: &[(String, Vec<u8>)]) {
    let mut sha1s: Vec<String> = files.iter().map(|(_, d)| hex::encode(sha1::Sha1::digest(d))).collect();
    sha1s.sort();
    package["filesAnalyzed"] = json!(true);
    package["packageVerificationCode"] =
        json!({ "packageVerificationCodeValue": hex::encode(sha1::Sha1::digest(sha1s.concat())) });
    package["hasFiles"] = json!(files.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    package["licenseInfoFromFiles"] = json!(["NOASSERTION"]);
}

fn file_entry(id: &str, path: &str, data: &[u8]) -> Value {
    json!({
        "SPDXID": id,
        "fileName": format!("./{path}"),
        "checksums": [
            { "algorithm": "SHA1", "checksumValue": hex::encode(sha1::Sha1::digest(data)) },
            { "algorithm": "SHA256", "checksumValue": hex::encode(sha2::Sha256::digest(data)) },
        ],
        "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })
}

/// A Debian package: purl `pkg:deb/debian/...`, the archive URL, the `.deb`'s SHA-256, its
/// maintainer as supplier, the license read from its copyright file (or NOASSERTION).
fn deb_package(id: &str, p: &crate::debian::Package) -> Value {
    let d = &p.deb;
    let supplier = match d.maintainer.split_once('<') {
        Some((name, mail)) => format!("Organization: {} ({})", name.trim(), mail.trim_end_matches('>').trim()),
        None if !d.maintainer.is_empty() => format!("Organization: {}", d.maintainer),
        None => "NOASSERTION".into(),
    };
    json!({
        "SPDXID": id,
        "name": d.name,
        "versionInfo": d.version,
        "supplier": supplier,
        "downloadLocation": d.url,
        "sourceInfo": format!("built from the Debian source package {}", d.source),
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": d.sha256 }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": p.license.as_ref().map(|l| l.expression.clone()).unwrap_or_else(|| "NOASSERTION".into()),
        "copyrightText": "NOASSERTION",
        "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": d.purl() }],
    })
}

/// The SBOM of one image and platform. `layers` are the base layers; `binary` the application.
pub fn document(
    plan: &Plan,
    image: &ImagePlan,
    platform: &str,
    graph: &Graph,
    sets: &(Set, Set),
    layers: &[&Layer],
    binary: &[u8],
) -> Vec<u8> {
    let image_id = "SPDXRef-Image";
    let app_id = spdx_id("Package", &image.package);
    let vendor = image.labels.get("org.opencontainers.image.vendor").cloned().unwrap_or_default();
    let source = image.labels.get("org.opencontainers.image.source").cloned().unwrap_or_default();
    let mut packages = vec![
        json!({
            "SPDXID": image_id,
            "name": image.name,
            "versionInfo": plan.version,
            "primaryPackagePurpose": "CONTAINER",
            "supplier": format!("Organization: {vendor}"),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license(image.labels.get("org.opencontainers.image.licenses").map(String::as_str)),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:oci/{}?repository_url={}&tag=v{}&arch={}", image.name, image.repository.replace('/', "%2F"), plan.version, platform.rsplit('/').next().unwrap_or_default()),
            }],
        }),
        json!({
            "SPDXID": app_id,
            "name": image.package,
            "versionInfo": plan.version,
            "primaryPackagePurpose": "APPLICATION",
            "supplier": format!("Organization: {vendor}"),
            "downloadLocation": format!("git+{source}@{}", plan.revision),
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license(image.labels.get("org.opencontainers.image.licenses").map(String::as_str)),
            "copyrightText": "NOASSERTION",
        }),
    ];
    let mut relationships = vec![
        json!({ "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id }),
    ];
    let rel = |a: &str, t: &str, b: &str| json!({ "spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b });
    relationships.push(rel(image_id, "CONTAINS", &app_id));

    let key = |id: &String| (graph.crates[id].name.clone(), graph.crates[id].version.clone());
    let linked: BTreeSet<String> = graph.crates.keys().filter(|id| sets.0.contains(&key(id))).cloned().collect();
    let build: BTreeSet<String> =
        graph.crates.keys().filter(|id| !linked.contains(*id) && sets.1.contains(&key(id))).cloned().collect();
    let crate_id = |id: &str| {
        let c = &graph.crates[id];
        spdx_id("Crate", &format!("{}-{}", c.name, c.version))
    };
    for id in linked.iter().chain(&build) {
        let c = &graph.crates[id];
        if c.source.is_none() {
            continue; // workspace crates are part of the application package
        }
        let mut p = json!({
            "SPDXID": crate_id(id),
            "name": c.name,
            "versionInfo": c.version,
            "primaryPackagePurpose": "LIBRARY",
            "supplier": supplier(c),
            "downloadLocation": format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version),
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": c.license,
            "copyrightText": "NOASSERTION",
            "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": format!("pkg:cargo/{}@{}", c.name, c.version) }],
        });
        if let Some(sum) = &c.checksum {
            p["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sum }]);
        }
        packages.push(p);
    }
    // Workspace crates (the runtime) are inside the application package: their edges start there.
    let node = |id: &str| if graph.crates[id].source.is_none() { app_id.clone() } else { crate_id(id) };
    let mut edges = BTreeSet::new();
    for id in linked.iter().chain(&build) {
        for (dep, is_build) in &graph.crates[id].deps {
            let (from, to) = (node(id), node(dep));
            if from == to || !(linked.contains(dep) || build.contains(dep)) {
                continue;
            }
            if *is_build || build.contains(id) {
                edges.insert((to, "BUILD_DEPENDENCY_OF", from));
            } else {
                edges.insert((from, "DEPENDS_ON", to));
            }
        }
    }
    relationships.extend(edges.iter().map(|(a, t, b)| rel(a, t, b)));

    let mut files = Vec::new();
    for layer in layers {
        let layer_id = spdx_id("Layer", &layer.name);
        let mut package = json!({
            "SPDXID": layer_id,
            "name": format!("layer {}", layer.name),
            "versionInfo": plan.version,
            "supplier": format!("Organization: {vendor}"),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        relationships.push(rel(image_id, "CONTAINS", &layer_id));
        if !layer.packages.is_empty() {
            // A Debian layer: its packages, each pinned by the .deb's SHA-256 (thousands of
            // files are not listed one by one; Debian's own md5sums cover them).
            for p in &layer.packages {
                let id = spdx_id("Deb", &format!("{}-{}-{}", p.deb.name, p.deb.version, p.deb.architecture));
                packages.push(deb_package(&id, p));
                relationships.push(rel(&layer_id, "CONTAINS", &id));
            }
            packages.push(package);
            continue;
        }
        let mut owned = Vec::new();
        for e in layer.normalized() {
            if let Kind::File(data) = &e.kind {
                let id = spdx_id("File", &e.path);
                files.push(file_entry(&id, &e.path, data));
                owned.push((id, data.to_vec()));
            }
        }
        own_files(&mut package, &owned);
        packages.push(package);
    }
    let bin_path = format!("app/{}", image.binary);
    let bin_id = spdx_id("File", &bin_path);
    files.push(file_entry(&bin_id, &bin_path, binary));
    own_files(&mut packages[1], &[(bin_id, binary.to_vec())]);

    // Debian licenses without an SPDX identifier, defined once for the document.
    let extracted: BTreeMap<&str, &str> = layers
        .iter()
        .flat_map(|l| &l.packages)
        .filter_map(|p| p.license.as_ref())
        .flat_map(|l| l.extracted.iter().map(|(id, text)| (id.as_str(), text.as_str())))
        .collect();
    let mut doc = header(plan, &vendor, format!("{} {platform}", image.name));
    doc["packages"] = json!(packages);
    doc["files"] = json!(files);
    doc["relationships"] = json!(relationships);
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = extracted
            .iter()
            .map(|(id, text)| json!({ "licenseId": id, "name": id.trim_start_matches("LicenseRef-"), "extractedText": text }))
            .collect();
    }
    finish(doc, &format!("{}/{}", image.name, platform.replace('/', "-")))
}

/// What every SPDX document here starts with: version, data license, name, creation info.
fn header(plan: &Plan, vendor: &str, name: String) -> Value {
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "creationInfo": {
            "created": plan.created,
            "creators": [format!("Tool: stella-xtask-{}", env!("CARGO_PKG_VERSION")), format!("Organization: {vendor}")],
        },
    })
}

/// Adds the namespace, derived from the content (so it is unique and reproducible), and
/// encodes the document.
fn finish(mut doc: Value, path: &str) -> Vec<u8> {
    let content = crate::layer::sha256(&encode(&doc));
    doc["documentNamespace"] = json!(format!("https://stella-ops.org/spdx/{path}/{}", &content[7..]));
    encode(&doc)
}

/// The SBOM of an image index: the index and its platform images, each named by digest.
pub fn index_document(plan: &Plan, image: &ImagePlan, index: &str, manifests: &[(String, String)]) -> Vec<u8> {
    let vendor = image.labels.get("org.opencontainers.image.vendor").cloned().unwrap_or_default();
    let purl = |digest: &str, arch: Option<&str>| {
        let repo = image.repository.replace('/', "%2F").replace(':', "%3A");
        let mut p = format!("pkg:oci/{}@{}?repository_url={repo}", image.name, digest.replace(':', "%3A"));
        if let Some(a) = arch {
            p.push_str(&format!("&arch={a}"));
        }
        p
    };
    let package = |id: &str, name: String, digest: &str, locator: String| {
        json!({
            "SPDXID": id,
            "name": name,
            "versionInfo": plan.version,
            "primaryPackagePurpose": "CONTAINER",
            "supplier": format!("Organization: {vendor}"),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license(image.labels.get("org.opencontainers.image.licenses").map(String::as_str)),
            "copyrightText": "NOASSERTION",
            "checksums": [{ "algorithm": "SHA256", "checksumValue": digest.trim_start_matches("sha256:") }],
            "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator }],
        })
    };
    let mut packages =
        vec![package("SPDXRef-Index", format!("{} (all platforms)", image.name), index, purl(index, None))];
    let mut relationships = vec![
        json!({ "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Index" }),
    ];
    for (platform, digest) in manifests {
        let arch = platform.rsplit('/').next().unwrap_or_default();
        let id = spdx_id("Image", arch);
        packages.push(package(&id, format!("{} {platform}", image.name), digest, purl(digest, Some(arch))));
        relationships.push(
            json!({ "spdxElementId": "SPDXRef-Index", "relationshipType": "CONTAINS", "relatedSpdxElement": id }),
        );
    }
    let mut doc = header(plan, &vendor, format!("{} index", image.name));
    doc["packages"] = json!(packages);
    doc["relationships"] = json!(relationships);
    finish(doc, &format!("{}/index", image.name))
}

/// Compact JSON, keys sorted (serde_json's map is ordered by key), every control character
/// escaped: the same document always gives the same bytes, and any JSON parser reads them.
pub fn encode(doc: &Value) -> Vec<u8> {
    serde_json::to_vec(doc).expect("a JSON value serializes")
}
