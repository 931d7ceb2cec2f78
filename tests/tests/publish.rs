//! `cargo xtask publish` against a real registry (Debian's `docker-registry` on loopback): every
//! image and tag arrives with the digests of the build, skopeo reads them back unchanged, Docker
//! pulls by digest, the signatures fetched from the registry verify with openssl, SBOMs are
//! found through the referrers tag, and a second push uploads nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use xtask::assemble::Built;

/// A registry serving a temporary directory, stopped when dropped.
struct LocalRegistry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = stella_e2e::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry").arg("serve").arg(&config).spawn().expect("docker-registry");
        let host = format!("127.0.0.1:{port}");
        assert!(
            stella_e2e::wait_status(&format!("http://{host}/v2/"), 200, Duration::from_secs(20)).is_some(),
            "the registry did not start"
        );
        LocalRegistry { child, host, _dir: dir }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn layout() -> PathBuf {
    xtask::images::default_out()
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
        .expect("openssl");
    out.status.success()
}

#[test]
fn publish_pushes_every_image_with_its_digests_signatures_and_sboms() {
    let built = Built::read(&layout()).expect("the images are built");
    let registry = LocalRegistry::start();
    let to_prefix = "stella";
    let pushed = xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {})
        .expect("publish");
    assert!(pushed.blobs_uploaded > 0 && pushed.manifests >= built.images.len() * 3, "{pushed:?}");

    for image in &built.images {
        let repo = format!("docker://{}/{to_prefix}/{}", registry.host, image.name);
        for tag in &built.tags {
            let inspect: serde_json::Value =
                serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("{repo}:{tag}")])).unwrap();
            assert_eq!(inspect["Digest"], image.digest.as_str(), "{} {tag}", image.name);
        }
        // Every platform manifest is there by digest, byte for byte what the build wrote.
        for (platform, p) in &image.platforms {
            let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("{repo}@{}", p.manifest)]);
            assert_eq!(xtask::layer::sha256(raw.as_bytes()), p.manifest, "{} {platform}", image.name);
            // SBOMs: the referrers tag of the platform manifest lists an SPDX artifact.
            let tag = p.manifest.replace(':', "-");
            let referrers: serde_json::Value =
                serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("{repo}:{tag}")]))
                    .unwrap();
            let types: Vec<&str> =
                referrers["manifests"].as_array().unwrap().iter().filter_map(|m| m["artifactType"].as_str()).collect();
            assert!(types.contains(&xtask::sbom::MEDIA_TYPE), "{} {platform}: referrers {types:?}", image.name);
        }
    }

    // Signed builds (`cargo xtask test` signs): the cosign signature tag of every index, fetched
    // from the registry with skopeo, verifies with openssl against the public key.
    if let Some(key) = std::env::var_os(xtask::sign::KEY_ENV) {
        let public = Path::new(&key).with_file_name("cosign.pub");
        for image in &built.images {
            let sig_ref = format!(
                "docker://{}/{to_prefix}/{}:{}",
                registry.host,
                image.name,
                xtask::sign::tag_for(&image.digest, "sig")
            );
            let out = tempfile::tempdir().unwrap();
            let dest = format!("oci:{}:sig", out.path().display());
            skopeo(&["copy", "--quiet", "--src-tls-verify=false", &sig_ref, &dest]);
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
            let blob = |d: &str| std::fs::read(out.path().join("blobs/sha256").join(&d[7..])).unwrap();
            let manifest: serde_json::Value =
                serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
            let layer = &manifest["layers"][0];
            let payload = blob(layer["digest"].as_str().unwrap());
            let sig = base64::engine::general_purpose::STANDARD
                .decode(layer["annotations"][xtask::sign::SIG_ANNOTATION].as_str().unwrap())
                .unwrap();
            assert!(openssl_verifies(&public, &payload, &sig), "{}: the pulled signature does not verify", image.name);
            let claimed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(claimed["critical"]["image"]["docker-manifest-digest"], image.digest.as_str());
        }
    }

    // Docker pulls an image by digest from the registry.
    let api = built.images.iter().find(|i| i.name == "stella-api").unwrap();
    let reference = format!("{}/{to_prefix}/stella-api@{}", registry.host, api.digest);
    let pull = Command::new("docker").args(["pull", "-q", &reference]).output().unwrap();
    assert!(pull.status.success(), "docker pull {reference}: {}", String::from_utf8_lossy(&pull.stderr));
    let _ = Command::new("docker").args(["rmi", &reference]).output();

    // Pushing again uploads nothing and names the same digests.
    let again =
        xtask::registry::push_layout(&layout(), &registry.host, to_prefix, Default::default(), &|_| {}).unwrap();
    assert_eq!(again.blobs_uploaded, 0, "{again:?}");
    assert_eq!(again.tags, pushed.tags);
}
