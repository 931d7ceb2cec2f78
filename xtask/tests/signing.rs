//! Signatures: every image index and manifest is signed and attested in cosign's legacy form
//! (`.sig` and `.att` tags, a signature referrer) and in cosign v3's (Sigstore bundle referrers
//! for the signature, the SBOM and the provenance); the signatures verify with openssl,
//! securesystemslib and sigstore-models, tampering is caught by our verifier and by theirs, the
//! same key gives the same bytes, and signing leaves every image digest unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use xtask::assemble::Built;
use xtask::plan::{Pin, Request};

fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    xtask::sign::keygen(dir).unwrap();
    (dir.join("cosign.key"), dir.join("cosign.pub"))
}

fn build(out: &Path, key: Option<&Path>) -> Built {
    let request = Request {
        fake_binaries: true,
        pin: Some(Pin { version: "1.2.3".into(), revision: "a".repeat(40), epoch: 1_700_000_000 }),
        key: key.map(Path::to_path_buf),
        ..Request::new(xtask::catalog::default_path(), out.to_path_buf())
    };
    xtask::images::build(&request, true).unwrap().1
}

/// Every (payload, DER signature) of the layout's cosign signature tags.
fn signatures(layout: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let (index, blob) = layout_reader(layout);
    let mut out = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or_default();
        if !name.ends_with(".sig") {
            continue;
        }
        let doc: serde_json::Value = serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
        let layer = &doc["layers"][0];
        let sig = base64::engine::general_purpose::STANDARD
            .decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap())
            .unwrap();
        out.push((name.to_string(), blob(layer["digest"].as_str().unwrap()), sig));
    }
    out
}

fn openssl_verifies(public: &Path, payload: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload"), payload).unwrap();
    std::fs::write(dir.path().join("sig"), sig).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("payload"))
        .output()
        .expect("running openssl");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

#[test]
fn every_index_and_manifest_is_signed_and_openssl_agrees() {
    let work = tempfile::tempdir().unwrap();
    let (private, public) = keys(&work.path().join("keys"));
    let layout = work.path().join("oci");
    let built = build(&layout, Some(&private));
    assert!(built.signed_by.is_some());
    let key = xtask::sign::read_public(&public).unwrap();
    let report = xtask::verify::verify(&layout, &key).unwrap();
    assert!(report.ok(), "{report:#?}");
    let subjects: usize = built.images.iter().map(|i| 1 + i.platforms.len()).sum();
    assert_eq!(report.images.iter().map(|r| r.valid).sum::<usize>(), 2 * subjects, "tag + referrer for each");
    let sigs = signatures(&layout);
    assert_eq!(sigs.len(), subjects);
    for (name, payload, sig) in &sigs {
        assert!(openssl_verifies(&public, payload, sig), "openssl rejects {name}");
        let claims: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let digest = claims["critical"]["image"]["docker-manifest-digest"].as_str().unwrap();
        assert!(name.ends_with(&format!("{}.sig", digest.replace(':', "-"))), "{name} signs {digest}");
    }
    // Another key is refused by both.
    let (_, other) = keys(&work.path().join("other"));
    assert!(!xtask::verify::verify(&layout, &xtask::sign::read_public(&other).unwrap()).unwrap().ok());
    assert!(!openssl_verifies(&other, &sigs[0].1, &sigs[0].2));
}

#[test]
fn tampering_is_rejected_by_us_and_by_them() {
    let work = tempfile::tempdir().unwrap();
    let (private, public) = keys(&work.path().join("keys"));
    let layout = work.path().join("oci");
    let built = build(&layout, Some(&private));
    let key = xtask::sign::read_public(&public).unwrap();
    let (_, payload, sig) = signatures(&layout).remove(0);

    // A payload naming another digest: openssl and our verifier both refuse it.
    let forged = String::from_utf8(payload.clone()).unwrap().replacen("sha256:", "sha256:0", 1);
    assert!(!openssl_verifies(&public, forged.as_bytes(), &sig));
    let payload_digest = xtask::layer::sha256(&payload);
    let payload_path = layout.join("blobs/sha256").join(&payload_digest[7..]);
    std::fs::write(&payload_path, forged.as_bytes()).unwrap();
    assert!(!xtask::verify::verify(&layout, &key).unwrap().ok(), "a forged payload passed");
    std::fs::write(&payload_path, &payload).unwrap();
    assert!(xtask::verify::verify(&layout, &key).unwrap().ok());

    // A flipped signature bit.
    let mut bad = sig.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(!openssl_verifies(&public, &payload, &bad));

    // An altered layer: our verifier names it, and skopeo refuses to copy the image.
    let image = &built.images[0];
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&image.platforms["linux/amd64"].manifest[7..])).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let layer_path = layout.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 0xff;
    std::fs::remove_file(&layer_path).unwrap(); // a hard link to the cache: replace, not write through
    std::fs::write(&layer_path, &bytes).unwrap();
    let report = xtask::verify::verify(&layout, &key).unwrap();
    assert!(report.blob_problems.iter().any(|p| p.contains(&layer[7..])), "{report:#?}");
    let dest = tempfile::tempdir().unwrap();
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--override-arch", "amd64"])
        .arg(format!("oci:{}:{}:{}", layout.display(), image.name, built.tags[0]))
        .arg(format!("dir:{}", dest.path().display()))
        .output()
        .unwrap();
    assert!(!status.status.success(), "skopeo copied an image with an altered layer");
}

#[test]
fn signing_is_deterministic_and_leaves_image_digests_unchanged() {
    let work = tempfile::tempdir().unwrap();
    let (private, _) = keys(&work.path().join("keys"));
    let a = build(&work.path().join("a"), Some(&private));
    let b = build(&work.path().join("b/c"), Some(&private));
    assert_eq!(a.signed_by, b.signed_by);
    let unsigned = build(&work.path().join("u"), None);
    let index = |d: &str| std::fs::read(work.path().join(d).join("index.json")).unwrap();
    assert_eq!(index("a"), index("b/c"), "the same key must give the same signatures");
    for (s, u) in a.images.iter().zip(&unsigned.images) {
        assert_eq!(s.digest, u.digest, "{}: signing changed the image", s.name);
        for (p, m) in &s.platforms {
            assert_eq!(m.manifest, u.platforms[p].manifest);
        }
    }
}

#[test]
fn keys_are_never_overwritten_and_bad_keys_are_named() {
    let work = tempfile::tempdir().unwrap();
    keys(work.path());
    assert!(xtask::sign::keygen(work.path()).unwrap_err().to_string().contains("refusing to overwrite"));
    std::fs::write(work.path().join("bad.key"), "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let e = xtask::sign::read_key(&work.path().join("bad.key")).unwrap_err().to_string();
    assert!(e.contains("bad.key") && !e.contains("nope"), "{e}");
}

/// Verifies DSSE envelopes with securesystemslib (Python); returns one verdict per file.
fn securesystemslib_verifies(public: &Path, keyid: &str, envelopes: &[PathBuf]) -> Vec<bool> {
    let script = r#"
import json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
key = SSlibKey(sys.argv[2], "ecdsa", "ecdsa-sha2-nistp256", {"public": open(sys.argv[1]).read()})
for path in sys.argv[3:]:
    try:
        Envelope.from_dict(json.load(open(path))).verify([key], 1)
        print("OK")
    except Exception as e:
        print("FAIL", type(e).__name__)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(public)
        .arg(keyid)
        .args(envelopes)
        .output()
        .expect("python3 with securesystemslib (cargo xtask setup --test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l == "OK").collect()
}

/// The layout's `index.json` and a reader of its blobs.
fn layout_reader(layout: &Path) -> (serde_json::Value, impl Fn(&str) -> Vec<u8> + '_) {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    (index, move |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap())
}

/// Puts `forged` where the layout holds the blob `original`, under the original's digest (a new
/// file: blobs may be hard links into the layer cache).
fn replace_blob(layout: &Path, original: &[u8], forged: &[u8]) {
    let in_layout = layout.join("blobs/sha256").join(&xtask::layer::sha256(original)[7..]);
    std::fs::remove_file(&in_layout).unwrap();
    std::fs::write(&in_layout, forged).unwrap();
}

#[test]
fn provenance_is_slsa_v1_in_dsse_and_securesystemslib_verifies_it() {
    let work = tempfile::tempdir().unwrap();
    let (private, public) = keys(&work.path().join("keys"));
    let layout = work.path().join("oci");
    let built = build(&layout, Some(&private));
    let keyid = built.signed_by.clone().unwrap();
    let (index, blob) = layout_reader(&layout);
    let mut files = Vec::new();
    let mut covered = Vec::new();
    // cosign 2's `.att` tags: one DSSE layer per attestation, annotated as cosign annotates them.
    for m in index["manifests"].as_array().unwrap() {
        let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or_default();
        if !name.ends_with(".att") {
            continue;
        }
        let att: serde_json::Value = serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
        for layer in att["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], xtask::provenance::ENVELOPE, "{name}");
            assert_eq!(layer["annotations"]["dev.cosignproject.cosign/signature"], "", "{name}: cosign's annotation");
            if layer["annotations"]["predicateType"] != xtask::provenance::PREDICATE {
                continue;
            }
            let envelope = blob(layer["digest"].as_str().unwrap());
            let env: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
            let payload = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
            let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
            assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
            let definition = &statement["predicate"]["buildDefinition"];
            assert_eq!(definition["externalParameters"]["source"]["commit"], "a".repeat(40));
            assert!(definition["resolvedDependencies"].as_array().unwrap().iter().any(|d| d["uri"] == "Cargo.lock"));
            let text = String::from_utf8_lossy(&payload);
            for clock in ["startedOn", "finishedOn", "invocationId"] {
                assert!(!text.contains(clock), "provenance carries a wall-clock field {clock}");
            }
            let tag = name.rsplit(':').next().unwrap();
            covered.push(tag.trim_end_matches(".att").replacen('-', ":", 1));
            let file = work.path().join(format!("{}.dsse.json", files.len()));
            std::fs::write(&file, &envelope).unwrap();
            files.push(file);
        }
    }
    let mut indexes: Vec<String> = built.images.iter().map(|i| i.digest.clone()).collect();
    indexes.sort();
    covered.sort();
    assert_eq!(covered, indexes, "one provenance per image index");
    assert!(securesystemslib_verifies(&public, &keyid, &files).iter().all(|ok| *ok));

    // A statement altered after signing is refused by securesystemslib and by us.
    let mut env: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    env["payload"] = serde_json::json!(b64.encode(payload.replace("release", "debug")));
    let forged = work.path().join("forged.dsse.json");
    std::fs::write(&forged, env.to_string()).unwrap();
    assert_eq!(securesystemslib_verifies(&public, &keyid, &[forged]), [false]);
    let key = xtask::sign::read_public(&public).unwrap();
    assert!(xtask::verify::verify(&layout, &key).unwrap().images.iter().all(|r| r.provenance == 2));
    replace_blob(&layout, &std::fs::read(&files[0]).unwrap(), env.to_string().as_bytes());
    let report = xtask::verify::verify(&layout, &key).unwrap();
    assert!(
        !report.ok() && report.images.iter().any(|r| r.provenance == 1),
        "our verifier accepted a forged statement"
    );
}

/// Parses each Sigstore bundle with `sigstore-models` (strict: unknown fields are refused),
/// checks its key hint against the public key's DER hash computed by `cryptography`, and
/// verifies its DSSE envelope with securesystemslib. One line per bundle:
/// `OK <predicateType> <subject digests, comma-separated>` or `FAIL <reason>`.
fn python_checks_bundles(public: &Path, keyid: &str, bundles: &[PathBuf]) -> Vec<String> {
    let script = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from sigstore_models.bundle.v1 import Bundle
pem = open(sys.argv[1]).read()
der = serialization.load_pem_public_key(pem.encode()).public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
hint = base64.b64encode(hashlib.sha256(der).digest()).decode()
key = SSlibKey(sys.argv[2], "ecdsa", "ecdsa-sha2-nistp256", {"public": pem})
for path in sys.argv[3:]:
    try:
        b = Bundle.from_json(open(path, "rb").read())
        assert b.media_type == "application/vnd.dev.sigstore.bundle.v0.3+json", b.media_type
        assert b.verification_material.public_key.hint == hint, "another key's hint"
        assert b.verification_material.tlog_entries == [], "a log entry offline"
        env = b.dsse_envelope
        Envelope.from_dict({
            "payload": base64.b64encode(env.payload).decode(),
            "payloadType": env.payload_type,
            "signatures": [{"keyid": sys.argv[2], "sig": base64.b64encode(s.sig).decode()} for s in env.signatures],
        }).verify([key], 1)
        statement = json.loads(env.payload)
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        subjects = ",".join("sha256:" + s["digest"]["sha256"] for s in statement["subject"])
        print("OK", statement["predicateType"], subjects)
    except Exception as e:
        print("FAIL", type(e).__name__, str(e).replace("\n", " ")[:200])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(public)
        .arg(keyid)
        .args(bundles)
        .output()
        .expect("python3 with sigstore-models and securesystemslib (cargo xtask setup --test installs them)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn cosign_v3_bundles_sign_and_attest_every_subject_and_sigstore_models_accepts_them() {
    let work = tempfile::tempdir().unwrap();
    let (private, public) = keys(&work.path().join("keys"));
    let layout = work.path().join("oci");
    let built = build(&layout, Some(&private));
    let keyid = built.signed_by.clone().unwrap();
    let (index, blob) = layout_reader(&layout);
    let mut files = Vec::new();
    let mut announced = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        if m["artifactType"] != xtask::sigstore::BUNDLE {
            continue;
        }
        let referrer: serde_json::Value = serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
        assert_eq!(referrer["artifactType"], xtask::sigstore::BUNDLE);
        assert_eq!(referrer["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
        assert_eq!(referrer["layers"][0]["mediaType"], xtask::sigstore::BUNDLE);
        assert_eq!(referrer["annotations"]["dev.sigstore.bundle.content"], "dsse-envelope");
        let predicate = referrer["annotations"]["dev.sigstore.bundle.predicateType"].as_str().unwrap().to_string();
        announced.push((predicate, referrer["subject"]["digest"].as_str().unwrap().to_string()));
        let file = work.path().join(format!("{}.sigstore.json", files.len()));
        std::fs::write(&file, blob(referrer["layers"][0]["digest"].as_str().unwrap())).unwrap();
        files.push(file);
    }
    let verdicts = python_checks_bundles(&public, &keyid, &files);
    assert_eq!(verdicts.len(), announced.len());
    // Each bundle verifies, has the predicate type its referrer announces, and is about the
    // referrer's subject (a provenance statement names the index and every platform manifest).
    let mut found = std::collections::BTreeSet::new();
    for (verdict, (predicate, subject)) in verdicts.iter().zip(&announced) {
        let fields: Vec<&str> = verdict.split(' ').collect();
        assert_eq!(fields[..2], ["OK", predicate.as_str()], "{verdict}");
        assert!(fields[2].split(',').any(|d| d == subject), "{verdict} is not about {subject}");
        found.insert((predicate.as_str(), subject.as_str()));
    }
    // Every index carries a signature, an SBOM and a provenance bundle; every platform manifest
    // a signature and an SBOM bundle.
    let (sign, spdx, slsa) =
        ("https://sigstore.dev/cosign/sign/v1", "https://spdx.dev/Document", "https://slsa.dev/provenance/v1");
    for image in &built.images {
        let mut wanted = vec![(sign, &image.digest), (spdx, &image.digest), (slsa, &image.digest)];
        for p in image.platforms.values() {
            wanted.extend([(sign, &p.manifest), (spdx, &p.manifest)]);
        }
        for (predicate, subject) in wanted {
            assert!(
                found.contains(&(predicate, subject.as_str())),
                "{}: no {predicate} bundle for {subject}",
                image.name
            );
        }
    }
    let key = xtask::sign::read_public(&public).unwrap();
    let report = xtask::verify::verify(&layout, &key).unwrap();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.images.iter().map(|r| r.bundles).sum::<usize>(), verdicts.len());

    // An SBOM statement altered after signing: sigstore-models still parses it, securesystemslib
    // and our verifier refuse it.
    let sbom = verdicts.iter().position(|v| v.contains("spdx.dev")).unwrap();
    let mut bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[sbom]).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap()).unwrap();
    assert!(payload.contains("SPDX-2.3"));
    bundle["dsseEnvelope"]["payload"] = serde_json::json!(b64.encode(payload.replacen("SPDX-2.3", "SPDX-2.2", 1)));
    let forged = work.path().join("forged.sigstore.json");
    std::fs::write(&forged, bundle.to_string()).unwrap();
    let verdict = python_checks_bundles(&public, &keyid, std::slice::from_ref(&forged));
    assert!(verdict[0].starts_with("FAIL"), "{verdict:?}");
    replace_blob(&layout, &std::fs::read(&files[sbom]).unwrap(), &std::fs::read(&forged).unwrap());
    let report = xtask::verify::verify(&layout, &key).unwrap();
    assert!(!report.ok(), "our verifier accepted a forged SBOM attestation");
    assert!(report.images.iter().flat_map(|r| &r.problems).any(|p| p.contains("does not verify")), "{report:#?}");
    // Another key's bundles are refused by the hint before any signature is tried.
    let (_, other) = keys(&work.path().join("other"));
    let verdict = python_checks_bundles(&other, &keyid, &files[..1]);
    assert!(verdict[0].starts_with("FAIL") && verdict[0].contains("hint"), "{verdict:?}");
}

/// The release key is committed (`release/cosign.pub`), P-256, and its fingerprint, computed by
/// openssl, is the one `release/README.md` publishes as current; every retired key is kept under
/// its own fingerprint and listed, so old releases stay verifiable.
#[test]
fn the_release_key_is_committed_and_its_fingerprint_published() {
    let release = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../release");
    let fingerprint = |file: &Path| {
        let out = Command::new("openssl")
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(file)
            .output()
            .expect("running openssl");
        assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        let ours = xtask::sign::public_fingerprint(&xtask::sign::read_public(file).unwrap());
        assert_eq!(ours, xtask::layer::sha256(&out.stdout), "{}: we and openssl disagree", file.display());
        ours
    };
    let readme = std::fs::read_to_string(release.join("README.md")).unwrap();
    let rows: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` | "))
        .map(|(fp, rest)| (fp.to_string(), rest.split(" |").next().unwrap().to_string()))
        .collect();
    let current: Vec<&String> = rows.iter().filter(|(_, s)| s == "current").map(|(fp, _)| fp).collect();
    assert_eq!(current, [&fingerprint(&release.join("cosign.pub"))], "the current key in release/README.md: {rows:?}");
    let retired = std::fs::read_dir(release.join("retired")).into_iter().flatten().map(|e| e.unwrap().path());
    let mut kept = Vec::new();
    for file in retired {
        let fp = fingerprint(&file);
        assert_eq!(file.file_stem().unwrap().to_string_lossy(), fp.trim_start_matches("sha256:"), "{}", file.display());
        kept.push(fp);
    }
    for (fp, status) in &rows {
        assert!(status == "current" || kept.contains(fp), "{fp} ({status}) has no file in release/retired");
    }
    assert_eq!(rows.len(), kept.len() + 1, "every retired key is listed: {rows:?}");
}
